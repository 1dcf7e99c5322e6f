"""Frames into the store: the replay and live loops, and the Feeder that takes them through the
pipeline a step at a time.

The packet side is synchronous (capture/); frames are handed to the pipeline in batches and the
store is written once per batch, because a Trio checkpoint or a memory-channel hop per packet
costs more than the whole packet's processing (shared/reference/perf-baseline.md).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING

import trio

from capture.sources import CaptureFile
from kshark.worker.writer import StoreWriter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kshark.live import LiveCapture
    from kshark.worker.state import Worker

log = logging.getLogger("kshark.worker")

# How often live capture lets idle connections expire when no packet arrives to move time on.
LIVE_TICK_SECONDS = 1.0


class Feeder:
    """Frames → the pipeline → the batch the StoreWriter is building, one step at a time.

    `step(frames)` takes the next `size` frames of an iterator, feeds them to the pipeline (its
    loop runs compiled: no Python step per frame) and stages what they produced; then sizes
    the next step (BatchLimits), so that the caller, looking at the batch's size after each
    step, keeps it near `write_batch_bytes` whatever the frames make.
    """

    def __init__(self, worker: Worker, writer: StoreWriter) -> None:
        self.worker = worker
        self.writer = writer
        self.limits = writer.limits
        self.size = writer.limits.step_frames_min

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
            limits = self.limits
            most = limits.step_frames_max
            target = limits.write_batch_bytes // limits.step_share
            fits = len(step) * target // added if added > 0 else most
            self.size = max(1, min(most, fits, 2 * self.size))
        return len(step)


async def replay(worker: Worker, paths: list[str]) -> None:
    """Feed the captures, in order, through the pipeline to the store."""
    limits = worker.cfg.batch
    writer = StoreWriter(worker.store, stats=worker.writer_stats, limits=limits)
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
                    while (
                        fed < limits.replay_batch_frames
                        and writer.staged_bytes < limits.write_batch_bytes
                    ):
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


async def live(worker: Worker, cap: LiveCapture) -> None:
    """Feed what the live capture delivers through the pipeline to the store, until it ends."""
    from kshark.live import CHANNEL_BATCHES

    send, receive = trio.open_memory_channel[list[tuple[int, int, bytes]]](CHANNEL_BATCHES)
    # While the writer is behind, `put` waits, this loop stops taking batches from the capture,
    # and once CHANNEL_BATCHES are waiting the capture drops and counts (`our_drops`): the
    # bound on what may wait for the disk is the capture channel plus write_queue_batches.
    limits = worker.cfg.batch
    writer = StoreWriter(worker.store, stats=worker.writer_stats, limits=limits)
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
                            if writer.staged_bytes >= limits.write_batch_bytes:
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
