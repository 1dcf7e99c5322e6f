"""kshark-worker: capture (replayed or live) → pipeline → store, and the API, in one nursery.

The packet side is synchronous (capture/); this module is the Trio edge around it. Frames are
handed to the pipeline in batches and the store is written once per batch, because a Trio
checkpoint or a memory-channel hop per packet costs more than the whole packet's processing
(shared/reference/perf-baseline.md).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import capture
from capture.dissectors import parse_decode_as, spec_names
from capture.entries import Identity
from capture.pipeline import Output, Pipeline, PipelineLimits
from capture.protobuf import ProtoDecoder, ProtoDescriptorError
from capture.sources import CaptureFile, CaptureOpenError
from kshark import __version__, cliargs
from kshark.cliargs import CliError
from kshark.live import LiveCaptureError
from kshark.store import PreparedBatch, Store, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import outcome

    from kshark.k8s.config import ClusterConfig
    from kshark.k8s.resolver import Resolver
    from kshark.live import LiveCapture

log = logging.getLogger("kshark.worker")

# Frames fed to the pipeline between two store writes during replay. Large enough that the
# per-batch costs vanish, small enough that API clients are served every few ms.
REPLAY_BATCH_FRAMES = 2048
# Bytes of one store write batch (its entries' JSON and its pcap records). Once the batch being
# built reaches it, it goes to the writer and the next one begins. Ordinary traffic never gets
# near it (2048 frames make 1-3 MB); responses whose bodies decode to megabytes (gzip) reach it
# within a few dozen frames, and would otherwise put hundreds of MB in one batch.
WRITE_BATCH_BYTES = 8 << 20
# Frames parsed in one step: between two Trio checkpoints in replay, and between two looks at
# the size of the batch being built. At most STEP_FRAMES_MAX (~2 ms of parsing). The step adapts
# to what frames make: after each step it is sized so that the next adds about
# WRITE_BATCH_BYTES / STEP_SHARE (judged by the bytes per frame of this one), growing at most
# twofold a step; the first step of a run is STEP_FRAMES_MIN. So a batch passes
# WRITE_BATCH_BYTES by at most one step's worth, which is about an eighth of it unless the
# traffic turns from light to heavy within one step.
STEP_FRAMES_MAX = 256
STEP_FRAMES_MIN = 16
STEP_SHARE = 8
# How often live capture lets idle connections expire when no packet arrives to move time on.
LIVE_TICK_SECONDS = 1.0
# Batches waiting for the StoreWriter besides the one it is writing. One keeps the parser busy
# while a batch's files are written; more would only hold more memory (a batch is ~1-2 MB, at
# most about WRITE_BATCH_BYTES). With the batch being built: three batches at most.
WRITE_QUEUE_BATCHES = 1
# The StoreWriter overlaps file I/O with parsing (helper process) only with at least this many
# CPUs to run on; with one, the helper is pure overhead.
OVERLAP_MIN_CPUS = 1.5
# The token the API requires when neither --token nor --token-file is given.
TOKEN_ENV = "KSHARK_TOKEN"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class StartupError(Exception):
    """The worker cannot start as configured (e.g. the API cannot listen); one line to the user."""


@dataclass
class WorkerConfig:
    pcaps: list[str] = field(default_factory=list)
    ifaces: list[str] = field(default_factory=list)
    bpf: str | None = None
    data_dir: Path = Path("kshark-data")
    host: str = "127.0.0.1"
    port: int = 30001
    advertise: str | None = None
    node_name: str | None = None
    token: str | None = None
    once: bool = False
    storage_limit: int = 1 << 30
    max_body: int = 1 << 20
    # --proto-descriptor: decodes gRPC messages to JSON in entries (capture/protobuf.py)
    protobuf: ProtoDecoder | None = None
    decode_as: dict[int, str] = field(default_factory=dict)  # port → protocol (--decode-as)
    cluster: ClusterConfig | None = None  # name resolution from this cluster (None: off)
    resolve_off: str = "no --kubeconfig, KUBECONFIG or in-cluster service account"


class Worker:
    """One worker's state: the store, the pipeline and the counters the API reports."""

    def __init__(self, cfg: WorkerConfig, api_port: int, resolver: Resolver | None = None) -> None:
        self.cfg = cfg
        self.resolver = resolver
        self.store = Store(cfg.data_dir, storage_limit=cfg.storage_limit)
        host = cfg.advertise or (
            cfg.host if cfg.host not in ("0.0.0.0", "::", "") else _primary_ip()
        )
        self.worker_id = f"{host}:{api_port}"
        identity = Identity(
            worker=self.worker_id,
            node_ip=host,
            node_name=cfg.node_name or socket.gethostname(),
            local_ips=frozenset(_local_ips()) if cfg.ifaces else frozenset(),
            resolver=resolver.index if resolver is not None else None,
        )
        from capture.http1 import HttpLimits
        from capture.http2 import Http2Limits

        limits = PipelineLimits(
            http=HttpLimits(max_body=cfg.max_body),
            http2=Http2Limits(max_body=cfg.max_body),
            protobuf=cfg.protobuf,
        )
        self.pipeline = Pipeline(
            identity, self.store.allocate_stream, limits, decode_as=cfg.decode_as
        )
        self.packets = 0
        self.capture_warnings: list[str] = []
        self.live_stats: dict[str, int] = {}
        # The StoreWriter's counters (StoreWriter.stats), kept by it while it runs.
        self.writer_stats: dict[str, int] = {"batch_bytes_limit": WRITE_BATCH_BYTES}
        self.started = time.time()

    def flush(self) -> None:
        """Write what the pipeline holds now, in this thread (the end of a replay, the final
        flush). A write still outstanding in the store is finished first, so order is kept."""
        out = self.pipeline.pop_output()
        if out.entries or out.packets or out.closed_streams:
            self.store.write(out)

    def feed(self, frames: Iterable[tuple[int, int, bytes]]) -> None:
        """Feed frames to the pipeline; what they produce waits in it (pipeline.pop_output)."""
        self.packets += self.pipeline.feed_many(frames)

    def stats(self) -> dict[str, Any]:
        pipeline = self.pipeline.stats()
        live = self.live_stats
        return {
            "worker": self.worker_id,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 3),
            "packets": self.packets,
            "dropped_kernel": live.get("kernel_drops", 0),
            "dropped_ours": live.get("our_drops", 0) + pipeline.get("held_packets_discarded", 0),
            "connections": pipeline.get("connections_dissected", 0),
            "open_connections": pipeline.get("open_connections", 0),
            "entries": pipeline.get("entries", 0),
            "errors": pipeline.get("entries_with_error", 0),
            "capture_warnings": list(self.capture_warnings),
            # The capture modules run compiled (capture/__init__.py), or as plain Python.
            "compiled": capture.NATIVE_BUILD is not None,
            "pipeline": pipeline,
            "live": dict(live),
            "store": self.store.stats,
            "writer": dict(self.writer_stats),
            "resolver": (
                self.resolver.status()
                if self.resolver is not None
                else {"enabled": False, "reason": self.cfg.resolve_off}
            ),
        }

    def summary_line(self) -> str:
        s = self.pipeline.stats()
        # Gaps are not drops: they are bytes the capture never held, reported on their own.
        dropped = self.live_stats.get("kernel_drops", 0) + self.live_stats.get("our_drops", 0)
        dropped += s.get("held_packets_discarded", 0) + self.store.stats.get("dropped_entries", 0)
        return (
            f"kshark-worker: {self.packets} packets, {s.get('decode_tcp', 0)} tcp, "
            f"{self.pipeline.connections_text()}, {s.get('entries', 0)} entries "
            f"({s.get('entries_with_error', 0)} with errors), {dropped} dropped, "
            f"{s.get('tcp_gap_bytes', 0)} bytes missing from the capture, "
            f"{self.pipeline.undecoded_text()}, {len(self.capture_warnings)} capture warnings"
        )


def _primary_ip() -> str:
    # The address a packet to the outside would leave from; no packet is sent (UDP connect).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _local_ips() -> set[str]:
    ips: set[str] = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            ips.add(str(info[4][0]))
    except OSError:
        pass
    try:
        import fcntl  # noqa: F401  (Linux only; the interface walk below needs /proc)

        with open("/proc/net/fib_trie") as fh:
            lines = fh.read().splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                ips.add(lines[i - 1].split()[-1])
    except OSError:
        pass
    return ips


class StoreWriter:
    """The writer task: stores pipeline batches with their file I/O off the Trio thread.

    `Store.begin_write` (decide names) and `finish_write` (journal, wake readers, retention)
    run here in the Trio thread; `PendingWrite.run_io` (the file system calls) runs in a worker
    thread, which hands them to the store's I/O helper process. So the replay or live loop
    parses batch N+1 on one core while batch N's files are created on the other. Batches are
    written in the order they were put; `drain()` and `Worker.flush` write after the last of
    them (the store finishes an outstanding write before beginning another).

    A batch is built step by step: `stage(out)` serialises what the pipeline produced into the
    batch being built (entries to JSON, packets to pcap records: the part of a store write
    that needs no store state) and says how large it now is, so the caller can hand it over
    at WRITE_BATCH_BYTES; `put()` queues it. The serialising happens while the previous
    batch's files are still being written, and the entry dicts are let go at once.

    The queue holds WRITE_QUEUE_BATCHES batches besides the one being written; `put` waits
    while it is fuller than that. A batch is queued before `put` waits, so a cancelled `put`
    loses nothing: `drain()` writes what is left (synchronously) when the loop ends.

    With fewer than OVERLAP_MIN_CPUS CPUs to run on (affinity, or a container's CPU quota)
    there is no second core to overlap with, and the helper would only add its own cost
    (~10 % more CPU in all): `overlap` is then False and each batch is written in the Trio
    thread, as `Store.write` does.
    """

    def __init__(
        self,
        store: Store,
        capacity: int = WRITE_QUEUE_BATCHES,
        overlap: bool | None = None,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.overlap = usable_cpus() >= OVERLAP_MIN_CPUS if overlap is None else overlap
        self._queue: deque[PreparedBatch] = deque()
        self._building: PreparedBatch | None = None
        self._closed = False
        self._queued = trio.lowlevel.ParkingLot()  # the writer waits here for a batch
        self._taken = trio.lowlevel.ParkingLot()  # producers wait here for room
        # Shown in /status ("writer"): batches put, the largest, the limit.
        self.stats = stats if stats is not None else {}
        for key in ("batches", "batch_bytes_max"):
            self.stats.setdefault(key, 0)  # a writer after another (replay, then live) goes on
        self.stats["batch_bytes_limit"] = WRITE_BATCH_BYTES

    def stage(self, out: Output) -> int:
        """Add what the pipeline produced to the batch being built (nothing for an empty
        output); the bytes that batch holds now."""
        if out.entries or out.packets or out.closed_streams:
            prepared = self.store.prepare_write(out)
            del out  # the entry dicts are not needed once serialised
            if self._building is None:
                self._building = prepared
            else:
                self._building.extend(prepared)
        return self.staged_bytes

    @property
    def staged_bytes(self) -> int:
        """Bytes of the batch being built (0: none)."""
        return self._building.nbytes if self._building is not None else 0

    async def put(self, out: Output | None = None) -> None:
        """Stage `out`, if given, and queue the batch being built (if any); wait while the
        queue is over capacity. Always a checkpoint, so API clients are served between
        batches."""
        if out is not None:
            self.stage(out)
        batch, self._building = self._building, None
        if batch is not None:
            stats = self.stats
            stats["batches"] += 1
            if batch.nbytes > stats["batch_bytes_max"]:
                stats["batch_bytes_max"] = batch.nbytes
            self._queue.append(batch)
            del batch
            self._queued.unpark_all()
            if len(self._queue) > self.capacity:
                while len(self._queue) > self.capacity:
                    await self._taken.park()
                return
        await trio.lowlevel.checkpoint()

    @property
    def queued(self) -> int:
        """Batches waiting (not counting the one being written)."""
        return len(self._queue)

    def close(self) -> None:
        """No more batches: `run` returns once the queue is written."""
        self._closed = True
        self._queued.unpark_all()

    async def run(self) -> None:
        store = self.store
        # The system calls then run in a helper process: a Python thread making them would
        # wait for the GIL after each one while the parser holds it (kshark.store.iohelper).
        overlap = self.overlap and store.start_io_helper()
        queue = self._queue
        while True:
            while not queue:
                if self._closed:
                    return
                await self._queued.park()
            # Cancelled (SIGTERM): stop here, before taking a batch; drain() writes the rest.
            await trio.lowlevel.checkpoint_if_cancelled()
            out = queue.popleft()
            self._taken.unpark_all()
            if not overlap:
                store.write(out)
                continue
            pending = store.begin_write(out)
            try:
                await _in_thread(pending.run_io)
            finally:
                store.finish_write(pending)

    def drain(self) -> None:
        """Write what is still queued or being built, in this thread (after `run` has ended,
        e.g. cancelled)."""
        if self._building is not None:
            self._queue.append(self._building)
            self._building = None
        while self._queue:
            self.store.write(self._queue.popleft())


class Feeder:
    """Frames → the pipeline → the batch the StoreWriter is building, one step at a time.

    `step(frames)` takes the next `size` frames of an iterator, feeds them to the pipeline (its
    loop runs compiled: no Python step per frame) and stages what they produced; then sizes
    the next step (STEP_FRAMES_MAX, STEP_SHARE), so that the caller, looking at the batch's
    size after each step, keeps it near WRITE_BATCH_BYTES whatever the frames make.
    """

    def __init__(self, worker: Worker, writer: StoreWriter) -> None:
        self.worker = worker
        self.writer = writer
        self.size = STEP_FRAMES_MIN

    def step(self, frames: Iterator[tuple[int, int, bytes]]) -> int:
        """Feed the next step of `frames`; how many there were (fewer than a step: the
        iterator is exhausted)."""
        # islice and list are C loops: no Python step per packet on the way in.
        step = list(itertools.islice(frames, self.size))
        if step:
            self.worker.feed(step)
        writer = self.writer
        before = writer.staged_bytes
        added = writer.stage(self.worker.pipeline.pop_output()) - before
        if step:
            target = WRITE_BATCH_BYTES // STEP_SHARE
            fits = len(step) * target // added if added > 0 else STEP_FRAMES_MAX
            self.size = max(1, min(STEP_FRAMES_MAX, fits, 2 * self.size))
        return len(step)


def usable_cpus() -> float:
    """The CPUs this process can run on at once: its affinity, capped by a cgroup CPU quota
    (a container limited to 1 CPU has 1, however many the node has)."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    for quota_file, period_file in (
        ("/sys/fs/cgroup/cpu.max", None),  # cgroup v2: "<quota> <period>" or "max <period>"
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    fields.append(f.read().strip())
            quota, period = float(fields[0]), float(fields[1])
        except (OSError, ValueError, IndexError):
            continue  # absent, or "max": no quota
        if quota > 0 and period > 0:
            cpus = min(cpus, quota / period)
        break
    return cpus


async def _in_thread(fn: Callable[[], object]) -> None:
    """Run `fn` in a worker thread started right now; wait for it, even when cancelled.

    Not `trio.to_thread.run_sync`: it passes a scheduling point before the thread starts, and
    the replay loop then parses a whole batch (tens of ms) before the batch's I/O has even
    begun. Not abandoned on cancellation: the thread always finishes the batch's files and
    finish_write then journals them, so a SIGTERM loses no batch already begun.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[object]] = []

    def deliver(out: outcome.Outcome[object]) -> None:
        result.append(out)
        token.run_sync_soon(done.set)

    trio.lowlevel.start_thread_soon(fn, deliver, name="kshark store I/O")
    with trio.CancelScope(shield=True):
        await done.wait()
    result[0].unwrap()


async def _replay(worker: Worker, paths: list[str]) -> None:
    writer = StoreWriter(worker.store, stats=worker.writer_stats)
    feeder = Feeder(worker, writer)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for path in paths:
                cap = CaptureFile(path)
                records = iter(cap)
                more = True
                while more:
                    fed = 0
                    while fed < REPLAY_BATCH_FRAMES and writer.staged_bytes < WRITE_BATCH_BYTES:
                        size = feeder.size
                        n = feeder.step(records)
                        fed += n
                        if n < size:
                            more = False
                            break
                        # Lets the writer start the next batch's I/O as soon as the last one's
                        # is done, instead of after this whole batch is parsed: the I/O helper
                        # then never waits for the parser, nor the parser for it.
                        await trio.lowlevel.checkpoint()
                    await writer.put()
                for warning in cap.warnings:
                    log.warning("%s", warning)
                    worker.capture_warnings.append(warning)
            writer.close()
    finally:
        writer.drain()  # what a cancellation (SIGTERM) left queued: written before the final flush


async def _live(worker: Worker, cap: LiveCapture) -> None:
    from kshark.live import CHANNEL_BATCHES

    send, receive = trio.open_memory_channel[list[tuple[int, int, bytes]]](CHANNEL_BATCHES)
    # While the writer is behind, `put` waits, this loop stops taking batches from the capture,
    # and once CHANNEL_BATCHES are waiting the capture drops and counts (`our_drops`): the
    # bound on what may wait for the disk is the capture channel plus WRITE_QUEUE_BATCHES.
    writer = StoreWriter(worker.store, stats=worker.writer_stats)
    feeder = Feeder(worker, writer)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cap.run, send)
            nursery.start_soon(writer.run)
            async with receive:
                while True:
                    batch: list[tuple[int, int, bytes]] | None = None
                    with trio.move_on_after(LIVE_TICK_SECONDS):
                        try:
                            batch = await receive.receive()
                        except trio.EndOfChannel:
                            writer.close()
                            return
                    if batch is not None:
                        frames = iter(batch)
                        del batch
                        while True:
                            size = feeder.size
                            if feeder.step(frames) < size:
                                break
                            if writer.staged_bytes >= WRITE_BATCH_BYTES:
                                await writer.put()
                        await writer.put()
                    else:
                        # A quiet link: packet time stands still, so let wall time expire idle
                        # connections.
                        worker.pipeline.advance(time.time_ns())
                        await writer.put(worker.pipeline.pop_output())
                    worker.live_stats = cap.stats()
    finally:
        writer.drain()


async def run_worker(cfg: WorkerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a worker until cancelled (or, with `once`, until the captures are processed)."""
    capture: LiveCapture | None = None
    if cfg.ifaces:
        from kshark.live import LiveCapture

        capture = LiveCapture(cfg.ifaces, bpf_filter=cfg.bpf)
        # Fails here, before the API listens or anything is captured, so a refusal (no
        # privilege, no such interface, bad filter) is the only thing the user sees.
        capture.open()
    try:
        await _run_opened(cfg, capture, task_status)
    finally:
        if capture is not None:
            capture.close()  # idempotent; covers a failure before the worker took it over


async def _run_opened(cfg: WorkerConfig, capture: LiveCapture | None, task_status: Any) -> None:
    async with trio.open_nursery() as nursery:
        worker_box: list[Worker] = []
        port = cfg.port
        if not cfg.once:
            from kshark.api.httpserver import serve
            from kshark.api.worker_app import WorkerApp

            app = WorkerApp(
                lambda: worker_box[0].store,
                stats_provider=lambda: worker_box[0].stats() if worker_box else {},
            )
            try:
                port = await nursery.start(
                    functools.partial(serve, app, cfg.host, cfg.port, token=cfg.token)
                )
            except OSError as exc:
                # trio's text repeats the errno and the address tuple; say it as the flags do.
                where = f"{cfg.host or '*'}:{cfg.port}"
                raise StartupError(f"API on {where}: {exc.strerror or exc}") from None
        resolver = None
        if cfg.cluster is not None:
            from kshark.k8s.resolver import Resolver

            resolver = Resolver(cfg.cluster)
        worker = Worker(cfg, port, resolver)
        worker_box.append(worker)
        try:
            task_status.started(worker)
            if resolver is not None:
                await nursery.start(resolver.run)
                # Entries name what the first lists found (bounded: see SETTLE_WAIT_SECONDS).
                await resolver.wait_settled()
            if cfg.pcaps:
                await _replay(worker, cfg.pcaps)
                if not cfg.ifaces:
                    worker.pipeline.finish()
                    worker.flush()
                    if not cfg.once:
                        log.info("%s", worker.summary_line())
            if capture is not None:
                await _live(worker, capture)
            if cfg.once:
                nursery.cancel_scope.cancel()
            else:
                await trio.sleep_forever()  # replay done: keep serving what it stored
        finally:
            # Synchronous on purpose: cancellation cannot interrupt the final flush.
            if capture is not None:
                capture.close()
                worker.pipeline.finish()
            worker.flush()
            worker.store.close()


def build_parser() -> argparse.ArgumentParser:
    """The flags; each one's value is checked by its `type` (kshark.cliargs): a bad one is one
    line on stderr and exit 2, before anything starts."""
    p = cliargs.OneLineParser(
        prog="kshark-worker",
        description="Capture HTTP/1.x traffic (live or from pcap files) into Kubeshark entries, "
        "and serve them on a filterable websocket API.",
    )
    add = p.add_argument
    add(
        "--pcap",
        action="append",
        default=[],
        metavar="FILE",
        type=cliargs.nonempty("--pcap"),
        help="replay a pcap/pcapng file (gzip allowed); repeat for several, processed in order",
    )
    add(
        "--iface",
        action="append",
        default=[],
        metavar="IFACE",
        type=cliargs.word("an interface name"),
        help="capture live on this interface (repeatable, or 'any'); needs root or CAP_NET_RAW",
    )
    add(
        "--filter",
        dest="bpf",
        metavar="BPF",
        type=cliargs.nonempty("--filter"),
        help="kernel BPF filter for live capture",
    )
    add(
        "--decode-as",
        action="append",
        default=[],
        metavar="PORT=PROTO",
        help="dissect TCP/UDP port PORT as PROTO whatever its content, like tshark's -d "
        f"(repeatable; PROTO one of {', '.join(spec_names())})",
    )
    add(
        "--data-dir",
        default="kshark-data",
        type=cliargs.nonempty("--data-dir"),
        help="where entries and pcaps are kept",
    )
    add(
        "--storage-limit",
        default="1GiB",
        metavar="SIZE",
        type=cliargs.size(minimum=1),
        help="disk budget; oldest connections go first (default 1GiB)",
    )
    add(
        "--max-body",
        default="1MiB",
        metavar="SIZE",
        type=cliargs.size(),
        help="body bytes kept per message (default 1MiB)",
    )
    add(
        "--proto-descriptor",
        metavar="FILE",
        type=cliargs.nonempty("--proto-descriptor"),
        help="a protobuf FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE): "
        "gRPC messages of its services are decoded to JSON in entries",
    )
    add("--host", default="127.0.0.1", help="API listen address (default 127.0.0.1)")
    add("--port", default=30001, type=cliargs.port, help="API port (default 30001; 0: any)")
    add(
        "--advertise",
        metavar="HOST",
        type=cliargs.word("a host name or address"),
        help="host written into entry ids (default: --host)",
    )
    add(
        "--node-name",
        type=cliargs.word("a node name"),
        help="node.name in entries (default: this host's name)",
    )
    cliargs.add_token_flags(
        p, "--token", TOKEN_ENV, "require 'Authorization: Bearer TOKEN' (or ?token=) on the API"
    )
    add(
        "--kubeconfig",
        metavar="PATH",
        type=cliargs.nonempty("--kubeconfig"),
        help="resolve pod/service/node names from this cluster (default: $KUBECONFIG, else the "
        "in-cluster service account when running in a pod)",
    )
    add("--no-resolve", action="store_true", help="do not resolve names from Kubernetes")
    add("--once", action="store_true", help="process the captures, print a summary, exit")
    add(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO (default), WARNING or ERROR",
    )
    add("--version", action="version", version=f"kshark {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The checked flags → WorkerConfig; CliError for what only makes sense together (or
    needs the file system: the captures, the data directory, the token file, a descriptor
    set, a kubeconfig)."""
    if not args.pcap and not args.iface:
        raise CliError("nothing to capture: give --pcap FILE or --iface IFACE")
    if args.once and args.iface:
        raise CliError("--once is for --pcap replay only")
    if args.bpf is not None and not args.iface:
        raise CliError("--filter applies to live capture (--iface) only")
    decode_as: dict[int, str] = {}
    for text in args.decode_as:
        try:
            port, proto = parse_decode_as(text)
        except ValueError as exc:
            raise CliError(f"--decode-as {exc}") from None
        decode_as[port] = proto
    token = cliargs.token_from(args.token, args.token_file, TOKEN_ENV)
    protobuf = None
    if args.proto_descriptor is not None:
        descriptor = Path(args.proto_descriptor)
        try:
            protobuf = ProtoDecoder(descriptor.read_bytes(), str(descriptor))
        except OSError as exc:
            raise CliError(f"{descriptor}: {exc.strerror or exc}") from None
        except ProtoDescriptorError as exc:
            raise CliError(str(exc)) from None
    cluster = None
    resolve_off = "--no-resolve"
    if not args.no_resolve:
        from kshark.k8s.config import KubeConfigError, find_cluster_config

        try:
            cluster = find_cluster_config(args.kubeconfig, os.environ)
        except KubeConfigError as exc:
            raise CliError(str(exc)) from None
        resolve_off = WorkerConfig.resolve_off
    for path in args.pcap:
        try:
            CaptureFile(path)  # opens and checks the header: fail before anything starts
        except CaptureOpenError as exc:
            raise CliError(str(exc)) from None
    data_dir = Path(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise CliError(f"data directory {data_dir}: not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(data_dir, os.W_OK):
            raise PermissionError(f"{data_dir}: not writable")
    except OSError as exc:
        raise CliError(f"data directory {data_dir}: {exc.strerror or exc}") from None
    return WorkerConfig(
        pcaps=list(args.pcap),
        ifaces=list(args.iface),
        bpf=args.bpf,
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        advertise=args.advertise,
        node_name=args.node_name,
        token=token,
        once=args.once,
        storage_limit=args.storage_limit,
        max_body=args.max_body,
        protobuf=protobuf,
        decode_as=decode_as,
        cluster=cluster,
        resolve_off=resolve_off,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = config_from_args(args)
    except CliError as exc:
        return cliargs.fail("kshark-worker", str(exc))
    tune_runtime()
    return trio.run(_main_async, cfg)


# The cyclic collector's generation-0 threshold in a worker (CPython's default is 700). The
# pipeline allocates a few dozen container objects per packet (events, tuples, entry dicts) that
# reference counting frees; almost none are cyclic, but the default threshold still starts a
# collection every 700 of them, and those passes cost 7-13 % of a replay's CPU. Collections
# still run, every 100,000 allocations net, so a cycle's memory comes back within a batch or two.
GC_GEN0_THRESHOLD = 100_000
# How long a thread waiting for the GIL waits before the running one must let go (CPython's
# default is 5 ms). The store's I/O thread makes a few blocking calls per batch (hand the batch
# to the I/O helper process, read its answer) and needs the GIL back after each; behind a parser
# that never blocks, each return waited the full 5 ms, and the helper sat idle meanwhile
# (measured: 0.3-0.5 s of a 2 s replay). At 1 ms the parser pays a few more GIL hand-offs per
# batch, which does not show.
GIL_SWITCH_INTERVAL = 0.001


def tune_runtime() -> None:
    """Freeze what start-up allocated (imports, tables: never garbage) out of the collector's
    sight, collect the young generation less often (GC_GEN0_THRESHOLD), and let the I/O thread
    have the GIL sooner (GIL_SWITCH_INTERVAL)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


async def _main_async(cfg: WorkerConfig) -> int:
    worker: Worker | None = None
    failed = False
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def _stop_on_signal() -> None:
                    async for signum in signals:
                        log.info("%s received: flushing and exiting", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                async def _supervise(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await run_worker(cfg, task_status=task_status)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(_stop_on_signal)
                worker = await nursery.start(_supervise)
    except* (OSError, LiveCaptureError, StoreError, StartupError) as group:
        # Startup and capture failures users can act on (port in use, no privilege, no such
        # interface, a data directory another worker holds): one line each, no traceback.
        for exc in _leaves(group):
            print(f"kshark-worker: {exc}", file=sys.stderr)
        failed = True
    if failed:
        return 2
    if cfg.once and worker is not None:
        print(worker.summary_line())
    return 0


def _leaves(group: BaseExceptionGroup[Exception]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
