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
from kshark import __version__
from kshark.live import LiveCaptureError
from kshark.store import PreparedBatch, Store, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import outcome

    from kshark.k8s.config import ClusterConfig
    from kshark.k8s.resolver import Resolver
    from kshark.live import LiveCapture

log = logging.getLogger("kshark.worker")

# Frames fed to the pipeline between two store writes / Trio checkpoints during replay. Large
# enough that the per-batch costs vanish, small enough that API clients are served every few ms.
REPLAY_BATCH_FRAMES = 2048
# Frames parsed between two Trio checkpoints within a replay batch (~2 ms of parsing).
REPLAY_STEP_FRAMES = 256
# How often live capture lets idle connections expire when no packet arrives to move time on.
LIVE_TICK_SECONDS = 1.0
# Batches waiting for the StoreWriter besides the one it is writing. One keeps the parser busy
# while a batch's files are written; more would only hold more memory (a batch is ~1-2 MB).
WRITE_QUEUE_BATCHES = 1
# The StoreWriter overlaps file I/O with parsing (helper process) only with at least this many
# CPUs to run on; with one, the helper is pure overhead.
OVERLAP_MIN_CPUS = 1.5


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

    def process(self, frames: Iterable[tuple[int, int, bytes]]) -> Output:
        """Feed frames to the pipeline; what they produced, for the StoreWriter."""
        self.packets += self.pipeline.feed_many(frames)
        return self.pipeline.pop_output()

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
            f"{s.get('http_connections', 0)} http connections, {s.get('entries', 0)} entries "
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

    `Store.begin_write` (serialise, decide names) and `finish_write` (journal, wake readers,
    retention) run here in the Trio thread; `PendingWrite.run_io` (the file system calls) runs
    in a worker thread, which hands them to the store's I/O helper process. So the replay or
    live loop parses batch N+1 on one core while batch N's files are created on the other.
    Batches are written in the order they were put; `drain()` and `Worker.flush` write after
    the last of them (the store finishes an outstanding write before beginning another).

    The queue holds WRITE_QUEUE_BATCHES batches besides the one being written; `put` waits
    while it is fuller than that. A batch is queued before `put` waits, so a cancelled `put`
    loses nothing: `drain()` writes what is left (synchronously) when the loop ends.

    With fewer than OVERLAP_MIN_CPUS CPUs to run on (affinity, or a container's CPU quota)
    there is no second core to overlap with, and the helper would only add its own cost
    (~10 % more CPU in all): `overlap` is then False and each batch is written in the Trio
    thread, as `Store.write` does.
    """

    def __init__(
        self, store: Store, capacity: int = WRITE_QUEUE_BATCHES, overlap: bool | None = None
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.overlap = usable_cpus() >= OVERLAP_MIN_CPUS if overlap is None else overlap
        self._queue: deque[PreparedBatch] = deque()
        self._closed = False
        self._queued = trio.lowlevel.ParkingLot()  # the writer waits here for a batch
        self._taken = trio.lowlevel.ParkingLot()  # producers wait here for room

    async def put(self, out: Output) -> None:
        """Queue one batch (nothing is queued for an empty one); wait while the queue is over
        capacity. Always a checkpoint, so API clients are served between batches.

        The batch is prepared here (entries serialised, pcap records framed: the part of a
        store write that needs no store state), while the previous batch's files are still
        being written, so the writer has less to do between two batches' I/O."""
        if out.entries or out.packets or out.closed_streams:
            self._queue.append(self.store.prepare_write(out))
            # The entry dicts are not needed once serialised: let them go before waiting.
            del out
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
        """Write what is still queued, in this thread (after `run` has ended, e.g. cancelled)."""
        while self._queue:
            self.store.write(self._queue.popleft())


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
    writer = StoreWriter(worker.store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for path in paths:
                cap = CaptureFile(path)
                records = iter(cap)
                more = True
                while more:
                    for _ in range(REPLAY_BATCH_FRAMES // REPLAY_STEP_FRAMES):
                        # islice and list are C loops: no Python step per packet on the way in.
                        step = list(itertools.islice(records, REPLAY_STEP_FRAMES))
                        worker.feed(step)
                        if len(step) < REPLAY_STEP_FRAMES:
                            more = False
                            break
                        # Lets the writer start the next batch's I/O as soon as the last one's
                        # is done, instead of after this whole batch is parsed: the I/O helper
                        # then never waits for the parser, nor the parser for it.
                        await trio.lowlevel.checkpoint()
                    await writer.put(worker.pipeline.pop_output())
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
    writer = StoreWriter(worker.store)
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
                        await writer.put(worker.process(batch))
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
            port = await nursery.start(
                functools.partial(serve, app, cfg.host, cfg.port, token=cfg.token)
            )
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
    p = argparse.ArgumentParser(
        prog="kshark-worker",
        description="Capture HTTP/1.x traffic (live or from pcap files) into Kubeshark entries, "
        "and serve them on a filterable websocket API.",
    )
    p.add_argument(
        "--pcap",
        action="append",
        default=[],
        metavar="FILE",
        help="replay a pcap/pcapng file (gzip allowed); repeat for several, processed in order",
    )
    p.add_argument(
        "--iface",
        action="append",
        default=[],
        metavar="IFACE",
        help="capture live on this interface (repeatable, or 'any'); needs root or CAP_NET_RAW",
    )
    p.add_argument("--filter", dest="bpf", metavar="BPF", help="kernel BPF filter for live capture")
    p.add_argument(
        "--decode-as",
        action="append",
        default=[],
        metavar="PORT=PROTO",
        help="dissect TCP/UDP port PORT as PROTO whatever its content, like tshark's -d "
        f"(repeatable; PROTO one of {', '.join(spec_names())})",
    )
    p.add_argument(
        "--data-dir", default="kshark-data", type=Path, help="where entries and pcaps are kept"
    )
    p.add_argument(
        "--storage-limit",
        default="1GiB",
        help="disk budget; oldest connections go first (default 1GiB)",
    )
    p.add_argument("--max-body", default="1MiB", help="body bytes kept per message (default 1MiB)")
    p.add_argument(
        "--proto-descriptor",
        metavar="FILE",
        type=Path,
        help="a protobuf FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE): "
        "gRPC messages of its services are decoded to JSON in entries",
    )
    p.add_argument("--host", default="127.0.0.1", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", default=30001, type=int, help="API port (default 30001)")
    p.add_argument(
        "--advertise", metavar="HOST", help="host written into entry ids (default: --host)"
    )
    p.add_argument("--node-name", help="node.name in entries (default: this host's name)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or ?token=) on the API")
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="resolve pod/service/node names from this cluster (default: $KUBECONFIG, else the "
        "in-cluster service account when running in a pod)",
    )
    p.add_argument("--no-resolve", action="store_true", help="do not resolve names from Kubernetes")
    p.add_argument(
        "--once", action="store_true", help="process the captures, print a summary, exit"
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--version", action="version", version=f"kshark {__version__}")
    return p


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.pcap and not args.iface:
        print(
            "kshark-worker: nothing to capture: give --pcap FILE or --iface IFACE", file=sys.stderr
        )
        return 2
    if args.once and args.iface:
        print("kshark-worker: --once is for --pcap replay only", file=sys.stderr)
        return 2
    decode_as: dict[int, str] = {}
    for text in args.decode_as:
        try:
            port, proto = parse_decode_as(text)
        except ValueError as exc:
            print(f"kshark-worker: --decode-as {exc}", file=sys.stderr)
            return 2
        decode_as[port] = proto
    try:
        storage_limit = parse_size(args.storage_limit)
        max_body = parse_size(args.max_body)
    except ValueError as exc:
        print(f"kshark-worker: bad size: {exc}", file=sys.stderr)
        return 2
    protobuf = None
    if args.proto_descriptor is not None:
        try:
            protobuf = ProtoDecoder(args.proto_descriptor.read_bytes(), str(args.proto_descriptor))
        except OSError as exc:
            print(f"kshark-worker: {args.proto_descriptor}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        except ProtoDescriptorError as exc:
            print(f"kshark-worker: {exc}", file=sys.stderr)
            return 2
    for path in args.pcap:
        try:
            CaptureFile(path)  # opens and checks the header: fail before anything starts
        except CaptureOpenError as exc:
            print(f"kshark-worker: {exc}", file=sys.stderr)
            return 2
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(args.data_dir, os.W_OK):
            raise PermissionError(f"{args.data_dir}: not writable")
    except OSError as exc:
        print(
            f"kshark-worker: data directory {args.data_dir}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    cluster = None
    resolve_off = "--no-resolve"
    if not args.no_resolve:
        from kshark.k8s.config import KubeConfigError, find_cluster_config

        try:
            cluster = find_cluster_config(args.kubeconfig, os.environ)
        except KubeConfigError as exc:
            print(f"kshark-worker: {exc}", file=sys.stderr)
            return 2
        resolve_off = WorkerConfig.resolve_off
    cfg = WorkerConfig(
        pcaps=list(args.pcap),
        ifaces=list(args.iface),
        bpf=args.bpf,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        advertise=args.advertise,
        node_name=args.node_name,
        token=args.token,
        once=args.once,
        storage_limit=storage_limit,
        max_body=max_body,
        protobuf=protobuf,
        decode_as=decode_as,
        cluster=cluster,
        resolve_off=resolve_off,
    )
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
    except* (OSError, LiveCaptureError, StoreError) as group:
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
