"""The worker's store writer: pipeline batches queued for the store, their file I/O off the
Trio thread, and the bounds on what waits for the disk (`BatchLimits`)."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    import outcome

    from capture.pipeline import Output
    from kshark.store import PreparedBatch, Store

# The StoreWriter overlaps file I/O with parsing (helper process) only with at least this many
# CPUs to run on; with one, the helper is pure overhead.
OVERLAP_MIN_CPUS = 1.5


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How frames become store writes (replay and live alike; docs/store.md, "Memory").

    replay_batch_frames: frames fed to the pipeline between two store writes during replay.
        Large enough that the per-batch costs vanish, small enough that API clients are served
        every few ms.
    write_batch_bytes: bytes of one store write batch (its entries' JSON and its pcap records).
        Once the batch being built reaches it, it goes to the writer and the next one begins.
        Ordinary traffic never gets near it; responses whose bodies decode to megabytes (gzip)
        reach it within a few dozen frames, and would otherwise put hundreds of MB in one batch.
    step_frames_max, step_frames_min, step_share: frames parsed in one step, between two Trio
        checkpoints in replay and between two looks at the size of the batch being built. The
        step adapts to what frames make: after each step it is sized so that the next adds
        about write_batch_bytes / step_share (judged by the bytes per frame of this one),
        growing at most twofold a step, never past step_frames_max; the first step of a run is
        step_frames_min. So a batch passes write_batch_bytes by at most one step's worth, about
        an eighth of it unless the traffic turns from light to heavy within one step.
    write_queue_batches: batches waiting for the StoreWriter besides the one it is writing. One
        keeps the parser busy while a batch's files are written; more would only hold more
        memory. With the batch being built: three batches at most.
    """

    replay_batch_frames: int = 2048
    write_batch_bytes: int = 8 << 20
    step_frames_max: int = 256
    step_frames_min: int = 16
    step_share: int = 8
    write_queue_batches: int = 1


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
    at `limits.write_batch_bytes`; `put()` queues it. The serialising happens while the previous
    batch's files are still being written, and the entry dicts are let go at once.

    The queue holds `limits.write_queue_batches` batches besides the one being written; `put`
    waits while it is fuller than that. A batch is queued before `put` waits, so a cancelled `put`
    loses nothing: `drain()` writes what is left (synchronously) when the loop ends.

    With fewer than OVERLAP_MIN_CPUS CPUs to run on (affinity, or a container's CPU quota)
    there is no second core to overlap with, and the helper would only add its own cost (more
    CPU in all, for nothing): `overlap` is then False and each batch is written in the Trio
    thread, as `Store.write` does.
    """

    def __init__(
        self,
        store: Store,
        capacity: int | None = None,
        overlap: bool | None = None,
        stats: dict[str, int] | None = None,
        limits: BatchLimits | None = None,
    ) -> None:
        self.store = store
        self.limits = limits = limits or BatchLimits()
        self.capacity = limits.write_queue_batches if capacity is None else capacity
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
        self.stats["batch_bytes_limit"] = limits.write_batch_bytes

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
                await in_thread(pending.run_io)
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


async def in_thread(fn: Callable[[], object]) -> None:
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
