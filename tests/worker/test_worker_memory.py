"""What the worker holds between the pipeline and the disk is bounded in bytes, not in frames.

fixtures/worker/gzip-burst.pcap.gz (scripts/make_worker_fixtures.py): 100 connections of nine
frames, each a gzip response of ~300 bytes that decodes to 256 KiB, so an entry of ~350 KB.
A batch counted in frames alone (2048) takes all 100 of them at once: 35 MB of entries, held
twice (as dicts and as JSON) and up to three batches deep.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import trio

from kshark.store import PendingWrite, PreparedBatch, Store
from kshark.worker import BatchLimits, WorkerConfig, run_worker
from tests.support.worker_cli import FIXTURES, ServingWorker, read_pcap

BURST = FIXTURES / "worker" / "gzip-burst.pcap.gz"
BURST_ENTRIES = 100


def test_a_replay_of_large_entries_is_written_in_batches_within_the_byte_budget(
    tmp_path: Path,
) -> None:
    w = ServingWorker.start(["--pcap", str(BURST), "--data-dir", str(tmp_path / "D")],
                            tmp_path / "worker.log")  # fmt: skip
    try:
        status = w.wait_for_entries(BURST_ENTRIES, written=True)
    finally:
        w.kill()
    writer = status["writer"]
    limit = writer["batch_bytes_limit"]
    stored = sum(p.stat().st_size for p in (tmp_path / "D" / "entries").iterdir())
    assert stored > 4 * limit  # the capture's entries are several batches' worth
    # A batch is handed over once it reaches the limit, checked after each step of frames;
    # a step adds about an eighth of it (docs/store.md, "Memory").
    assert writer["batch_bytes_max"] <= limit + limit // 4
    assert writer["batches"] >= stored // (limit + limit // 4)


async def test_batches_stay_within_the_budget_and_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small budget: ~35 MB of entries in 1 MiB batches. Every batch the store is given is
    # within the budget (plus the step that reached it), and the entries and pcaps are what
    # the capture holds, whatever the batch borders.
    limit = 1 << 20
    sizes: list[int] = []
    begin_write = Store.begin_write

    def spy(self: Store, batch: PreparedBatch) -> PendingWrite:
        sizes.append(sum(len(e[3]) for e in batch.entries) + sum(g.size for g in batch.packets))
        return begin_write(self, batch)

    monkeypatch.setattr(Store, "begin_write", spy)
    cfg = WorkerConfig(
        pcaps=[str(BURST)],
        data_dir=tmp_path / "D",
        once=True,
        batch=BatchLimits(write_batch_bytes=limit),
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_worker, cfg)
    assert len(sizes) >= 30
    assert max(sizes) <= limit + limit // 4, sorted(sizes)[-5:]
    files = sorted((tmp_path / "D" / "entries").iterdir())
    assert len(files) == BURST_ENTRIES
    for n, path in enumerate(files):
        entry = json.loads(path.read_bytes())
        assert entry["request"]["path"] == f"/burst/{n}"
        body = base64.b64decode(entry["response"]["content"]["text"])
        assert body == bytes([65 + n % 26]) * (256 * 1024)
    pcaps = sorted((tmp_path / "D" / "pcaps").iterdir())
    assert [len(read_pcap(p)) for p in pcaps] == [9] * BURST_ENTRIES
