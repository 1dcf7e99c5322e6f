"""kshark.store: what a user or the API sees in the data directory and through Store's readers."""

from __future__ import annotations

import errno
import logging
import os
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from capture.pipeline import Output
from kshark.store import Store, StoreError, StoreLimits, StoreLockedError, fileio
from tests.support.store import (
    T0,
    WORKER,
    disk_usage_of,
    frame,
    journal_lines,
    make_entry,
    read_pcap,
)

REPO = Path(__file__).resolve().parents[2]


def one_connection(store: Store, n_entries: int, *, close: bool = True, body: str = "") -> int:
    """Write one connection: a packet per entry, then its entries, then (optionally) its end."""
    stream = store.allocate_stream()
    out = Output()
    for i in range(n_entries):
        out.packets.append((stream, T0 + i, 1, frame(stream, i)))
        out.entries.append(make_entry(stream, i, body))
    if close:
        out.closed_streams.append(stream)
    store.write(out)
    return stream


# -- names, contents and layout --------------------------------------------------------------


def test_files_are_named_as_entry_md_says(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        stream = store.allocate_stream()
        entries = [make_entry(stream, 0), make_entry(stream, 1)]
        store.write(Output(entries, [(stream, T0, 1, frame(stream, 0))], [stream]))
        assert stream == 1  # 0 would read as "no stream yet" to the pipeline
        assert sorted(p.name for p in (tmp_path / "entries").iterdir()) == [
            "000000000001_pcap-0_entry.json",
            "000000000001_pcap-1_entry.json",
        ]
        assert [p.name for p in (tmp_path / "pcaps").iterdir()] == ["000000000001.pcap"]
        assert journal_lines(tmp_path) == [
            "1 000000000001_pcap-0_entry.json",
            "2 000000000001_pcap-1_entry.json",
        ]
        assert (tmp_path / "journal" / "000000000000.log").is_file()
        raw = (tmp_path / "entries" / "000000000001_pcap-1_entry.json").read_bytes()
        # Compact, keys sorted at every level: the exact bytes the websocket sends.
        assert raw == orjson.dumps(entries[1], option=orjson.OPT_SORT_KEYS)
        assert raw.startswith(b'{"entryFile":"000000000001_pcap-1_entry.json","id":')
        assert b'"headers":{"A":"2","Z":"1"}' in raw
        assert orjson.loads(raw) == entries[1]
        assert store.entry_bytes(1, 1) == raw
        assert store.read_after(0, 10) == (
            [(1, orjson.dumps(entries[0], option=orjson.OPT_SORT_KEYS)), (2, raw)],
            0,
        )


def test_entry_files_appear_whole_to_a_concurrent_reader(tmp_path: Path) -> None:
    """A thread polling the entries directory never reads a partial entry."""
    entries_dir = tmp_path / "entries"
    entries_dir.mkdir()
    stop = threading.Event()
    seen: set[str] = set()
    bad: list[str] = []

    def poll() -> None:
        # Only files not yet read whole: the reader spends its time on the newest ones,
        # where a non-atomic writer would show a partial file.
        while not stop.is_set():
            for name in os.listdir(entries_dir):
                if name in seen:
                    continue
                try:
                    data = (entries_dir / name).read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    bad.append(f"{name}: {len(data)} bytes")
                seen.add(name)

    body = "b" * 300_000  # big enough that writing one takes several system calls' time
    with Store(tmp_path) as store:
        reader = threading.Thread(target=poll)
        reader.start()
        try:
            for _ in range(60):
                one_connection(store, 2, body=body)
        finally:
            stop.set()
            reader.join()
    assert bad == []
    assert len(seen) >= 60  # the reader really was reading while entries were written


def test_each_stream_has_a_pcap_dpkt_reads_with_exact_times(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        a = store.allocate_stream()
        b = store.allocate_stream()
        big = b"J" * 300_000  # longer than the snaplen: cut to 262144, original length kept
        packets = [
            (a, T0 + 1, 1, frame(a, 0)),
            (b, T0 + 2, 113, frame(b, 0)),
            (a, T0 + 3_000_000_007, 1, frame(a, 1)),
            (b, T0 + 4, 113, big),
        ]
        store.write(Output([make_entry(a, 0), make_entry(b, 0)], packets, []))
        # No close yet: the packets of every written entry are already on disk.
        path_a = store.pcap_path(a)
        assert path_a == tmp_path / "pcaps" / "000000000001.pcap"
        assert read_pcap(path_a) == (1, [(T0 + 1, frame(a, 0)), (T0 + 3_000_000_007, frame(a, 1))])
        path_b = store.pcap_path("000000000002.pcap")
        assert path_b is not None
        linktype, got = read_pcap(path_b)
        assert linktype == 113
        assert got == [(T0 + 2, frame(b, 0)), (T0 + 4, big[:262144])]
        with path_b.open("rb") as f:
            header = f.read(24)
            assert header[:4] == bytes.fromhex("4d3cb2a1")  # ns magic, little-endian
            f.seek(24 + 16 + len(frame(b, 0)))
            record = f.read(16)
        assert int.from_bytes(record[8:12], "little") == 262144
        assert int.from_bytes(record[12:16], "little") == 300_000


def test_packets_without_entries_are_buffered_until_close(tmp_path: Path) -> None:
    store = Store(tmp_path)
    s = store.allocate_stream()
    store.write(Output([], [(s, T0, 1, frame(s, 0))], []))
    assert not (tmp_path / "pcaps" / "000000000001.pcap").exists()
    assert store.stats["pcap_buffered_bytes"] == 16 + 60
    store.close()
    assert read_pcap(tmp_path / "pcaps" / "000000000001.pcap") == (1, [(T0, frame(s, 0))])

    with Store(tmp_path) as store:
        s = store.allocate_stream()
        store.write(Output([], [(s, T0 + 5, 1, frame(s, 5))], []))
    assert read_pcap(tmp_path / "pcaps" / f"{s:012d}.pcap") == (1, [(T0 + 5, frame(s, 5))])

    with Store(tmp_path) as store:
        s = store.allocate_stream()
        store.write(Output([], [(s, T0 + 6, 1, frame(s, 6))], []))
        path = store.pcap_path(s)  # a download gets every packet received so far
        assert path is not None
        assert read_pcap(path) == (1, [(T0 + 6, frame(s, 6))])
        # A closed stream's remaining packets are written by the write that closes it.
        store.write(Output([], [(s, T0 + 7, 1, frame(s, 7))], [s]))
        assert read_pcap(path)[1] == [(T0 + 6, frame(s, 6)), (T0 + 7, frame(s, 7))]


def test_a_packet_with_another_link_type_is_dropped_and_counted(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        s = store.allocate_stream()
        store.write(
            Output([make_entry(s, 0)], [(s, T0, 1, frame(s, 0)), (s, T0 + 1, 113, b"sll")], [])
        )
        assert read_pcap(tmp_path / "pcaps" / f"{s:012d}.pcap") == (1, [(T0, frame(s, 0))])
        assert store.stats["pcap_linktype_mismatch"] == 1
        assert store.stats["dropped_packets"] == 1


def test_invalid_and_duplicate_entries_are_refused(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        s = store.allocate_stream()
        evil = make_entry(s, 0) | {"entryFile": "../../../tmp/evil_entry.json"}
        missing = {k: v for k, v in make_entry(s, 1).items() if k != "entryFile"}
        store.write(Output([evil, missing, make_entry(s, 2), make_entry(s, 2)], [], []))
        store.write(Output([make_entry(s, 2)], [], []))
        assert store.stats["invalid_entries"] == 4
        assert [p.name for p in (tmp_path / "entries").iterdir()] == [
            "000000000001_pcap-2_entry.json"
        ]
        assert store.last_seq == 1
        assert not (tmp_path.parent / "evil_entry.json").exists()


# -- the stream counter and seq across restarts ----------------------------------------------


def test_stream_counter_resumes_after_a_clean_restart(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert [store.allocate_stream() for _ in range(3)] == [1, 2, 3]
    with Store(tmp_path) as store:
        assert store.allocate_stream() == 4  # a clean close records the exact counter
    assert (tmp_path / "state" / "stream-reservation").read_text() == "5\n"


def test_stream_counter_never_reuses_a_number_after_a_crash(tmp_path: Path) -> None:
    first = Store(tmp_path)  # never closed: as if the process died
    used = [first.allocate_stream() for _ in range(5)]
    # Only a middle number reached the disk: the scan alone would resume at 3.
    first.write(Output([make_entry(used[1], 0)], [], []))
    second = Store(tmp_path)
    again = [second.allocate_stream() for _ in range(3)]
    assert set(again).isdisjoint(used)
    assert min(again) == StoreLimits().reservation_block + 1  # the whole reserved block is skipped
    second.close()


def test_stream_counter_after_a_killed_process_and_lock(tmp_path: Path) -> None:
    """A real process reserves numbers, uses one, and dies without closing. While alive it
    holds the directory; after it dies nothing it could have handed out comes back."""
    child = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from kshark.store import Store
        store = Store(sys.argv[1])
        used = [store.allocate_stream() for _ in range(3)]
        print(" ".join(map(str, used)), flush=True)
        sys.stdin.readline()
        os._exit(9)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        used = [int(x) for x in proc.stdout.readline().split()]
        assert used == [1, 2, 3]
        with pytest.raises(
            StoreLockedError, match=rf"in use by another kshark process \(pid {proc.pid}\)"
        ):
            Store(tmp_path)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 9
    finally:
        proc.kill()
        proc.wait()
    with Store(tmp_path) as store:
        assert store.allocate_stream() == StoreLimits().reservation_block + 1


def test_seq_resumes_after_restart_and_a_torn_journal_line(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for _ in range(3):
        one_connection(store, 1)
    assert store.last_seq == 3
    # Crash during an append: half a line at the end of the journal.
    with (tmp_path / "journal" / "000000000000.log").open("ab") as f:
        f.write(b"4 00000000")
    store = Store(tmp_path)
    assert store.last_seq == 3
    s = one_connection(store, 2)
    assert store.last_seq == 5
    store.close()
    with Store(tmp_path) as store:
        assert store.last_seq == 5
        items, missed = store.read_after(3, 10)
        assert [seq for seq, _ in items] == [4, 5]
        assert [orjson.loads(b)["entryFile"] for _, b in items] == [
            f"{s:012d}_pcap-0_entry.json",
            f"{s:012d}_pcap-1_entry.json",
        ]
        assert missed == 0
    assert journal_lines(tmp_path)[-2:] == [
        f"4 {s:012d}_pcap-0_entry.json",
        f"5 {s:012d}_pcap-1_entry.json",
    ]


def test_entry_files_a_crash_left_unjournaled_are_announced_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A kill between a batch's files and its journal lines: the files exist, the journal does
    # not name them. The next start journals them, after everything written before, once.
    with Store(tmp_path) as store:
        s = one_connection(store, 2, close=False)
        lost = [make_entry(s, 2), make_entry(s, 3)]
    before = journal_lines(tmp_path)
    for e in lost:
        data = orjson.dumps(e, option=orjson.OPT_SORT_KEYS)
        (tmp_path / "entries" / e["entryFile"]).write_bytes(data)
    # The files journaled before the crash carry the journal's own mtime, as they can within
    # one tick of the filesystem clock: they must not be journaled twice.
    journal_ns = (tmp_path / "journal" / "000000000000.log").stat().st_mtime_ns
    for i in (0, 1):
        os.utime(
            tmp_path / "entries" / f"{s:012d}_pcap-{i}_entry.json", ns=(journal_ns, journal_ns)
        )
    with caplog.at_level(logging.WARNING), Store(tmp_path) as store:
        assert store.last_seq == 4
        items, missed = store.read_after(0, 10)
        assert missed == 0
        assert [orjson.loads(b)["entryFile"] for _, b in items] == [
            f"{s:012d}_pcap-{i}_entry.json" for i in range(4)
        ]
    assert journal_lines(tmp_path) == [
        *before,
        f"3 {s:012d}_pcap-2_entry.json",
        f"4 {s:012d}_pcap-3_entry.json",
    ]
    assert "2 entry file(s) a crash had left unannounced are journaled now" in caplog.text
    with Store(tmp_path) as store:  # and only once
        assert store.last_seq == 4


# -- following: history order, cursors ---------------------------------------------------------


def test_read_after_returns_history_in_write_order(tmp_path: Path) -> None:
    # A tiny recent cache and tiny journal segments, so history comes from the files and
    # crosses segment borders.
    limits = StoreLimits(recent_entries_max=3, segment_lines=4)
    written: list[bytes] = []
    with Store(tmp_path, limits=limits) as store:
        a, b, c = (store.allocate_stream() for _ in range(3))
        batches = [
            [make_entry(b, 0), make_entry(a, 0)],
            [make_entry(c, 0), make_entry(a, 1), make_entry(b, 1)],
            [make_entry(a, 2)],
            [make_entry(c, 1), make_entry(c, 2), make_entry(b, 2), make_entry(a, 3)],
        ]
        for batch in batches:
            store.write(Output(batch, [], []))
            written.extend(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in batch)
        assert len(list((tmp_path / "journal").iterdir())) == 3
        assert store.read_after(0, 100) == (list(enumerate(written, start=1)), 0)
        # Page through with the documented cursor rule.
        cursor, pages = 0, []
        while True:
            items, missed = store.read_after(cursor, 3)
            if not items and not missed:
                break
            pages.append([seq for seq, _ in items])
            cursor += len(items) + missed
        assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
        assert store.read_after(10, 5) == ([], 0)
        assert store.read_after(8, 0) == ([], 0)
    # After a restart nothing is cached: the same bytes come from the files.
    with Store(tmp_path, limits=limits) as store:
        assert store.read_after(0, 100) == (list(enumerate(written, start=1)), 0)


@pytest.mark.parametrize("where", ["cache", "files"])
def test_read_after_keeps_a_batch_within_max_bytes(tmp_path: Path, where: str) -> None:
    # Small entries, then large ones: a batch counted in entries alone would take 64 of the
    # large ones at once. With max_bytes it stops before the entry that would pass the bound;
    # a first entry larger than the bound comes alone.
    limits = StoreLimits(recent_entries_max=1) if where == "files" else StoreLimits()
    sizes = [10, 10, 10, 3000, 3000, 3000, 10, 10]
    written: list[bytes] = []
    with Store(tmp_path, limits=limits) as store:
        for n in sizes:
            entry = make_entry(store.allocate_stream(), 0, body="b" * n)
            store.write(Output([entry], [], []))
            written.append(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS))
        small, large = len(written[0]), len(written[3])
        bound = 3 * small + 100
        assert bound < large
        cursor, pages = 0, []
        while True:
            items, missed = store.read_after(cursor, 64, max_bytes=bound)
            assert missed == 0
            if not items:
                break
            assert [data for _, data in items] == written[cursor : cursor + len(items)]
            assert len(items) == 1 or sum(len(d) for _, d in items) <= bound
            pages.append([seq for seq, _ in items])
            cursor += len(items)
        assert pages == [[1, 2, 3], [4], [5], [6], [7, 8]]
        # A bound of 0 still makes progress, one entry at a time.
        assert [len(store.read_after(seq, 64, max_bytes=0)[0]) for seq in range(8)] == [1] * 8


def test_seq_of_id_accepts_every_id_form(tmp_path: Path) -> None:
    limits = StoreLimits(segment_lines=4)
    with Store(tmp_path, limits=limits) as store:
        streams = [one_connection(store, 3) for _ in range(3)]
        s = streams[1]
        seq = 5  # second connection, index 1
        assert store.seq_of_id(f"{WORKER}/{s:012d}.pcap-1") == seq
        assert store.seq_of_id(f"{s:012d}.pcap-1") == seq
        assert store.seq_of_id(f"{s:012d}_pcap-1_entry.json") == seq
        assert store.seq_of_id(f"{streams[2]:012d}.pcap-2") == 9
        assert store.seq_of_id(f"{streams[0]:012d}.pcap-0") == 1
        items, _ = store.read_after(seq, 1)
        assert orjson.loads(items[0][1])["id"] == f"{WORKER}/{s:012d}.pcap-2"
        for unknown in (
            f"{s:012d}.pcap-7",
            "000000000099.pcap-0",
            "7.pcap-0",
            "000000000001.pcap-01",
            "000000000001_pcap-0_entry.json.bak",
            "",
            "garbage",
        ):
            assert store.seq_of_id(unknown) is None, unknown


async def test_wait_for_seq_wakes_on_write(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        woke: list[int] = []

        async def follower() -> None:
            await store.wait_for_seq(0)
            woke.append(store.last_seq)
            await store.wait_for_seq(1)
            woke.append(store.last_seq)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower)
                await trio.testing.wait_all_tasks_blocked()
                assert woke == []
                one_connection(store, 1)
                await trio.testing.wait_all_tasks_blocked()
                assert woke == [1]
                store.write(Output([], [(1, T0, 1, frame(1, 9))], []))  # packets only: no wake-up
                await trio.testing.wait_all_tasks_blocked()
                assert woke == [1]
                one_connection(store, 2)
            assert woke == [1, 3]
            await store.wait_for_seq(2)  # already past: returns at once


# -- retention -----------------------------------------------------------------------------------


def test_retention_deletes_the_oldest_streams_and_readers_count_them(tmp_path: Path) -> None:
    limits = StoreLimits(segment_lines=4)
    limit = 160 * 1024  # 40 blocks: each closed connection takes 3 (pcap + 2 entries)
    with Store(tmp_path, storage_limit=limit, limits=limits) as store:
        kept_open = one_connection(store, 1, close=False)  # oldest, but still open
        closed = [one_connection(store, 2) for _ in range(30)]
        stats = store.stats
        assert stats["bytes_used"] <= limit
        assert stats["bytes_used"] == disk_usage_of(tmp_path)
        assert stats["deleted_streams"] > 0
        assert stats["deleted_entries"] == 2 * stats["deleted_streams"]
        remaining = sorted(int(p.name[:12]) for p in (tmp_path / "pcaps").iterdir())
        # The open connection survives; the closed ones that remain are the newest.
        assert remaining[0] == kept_open
        assert remaining[1:] == closed[-len(remaining) + 1 :]
        assert stats["deleted_streams"] == len(closed) - (len(remaining) - 1)
        gone = closed[0]
        assert store.pcap_path(gone) is None
        assert store.entry_bytes(gone, 0) is None
        # Old journal segments went with their entries; the first (stream kept_open) stays.
        assert "000000000001.log" not in {p.name for p in (tmp_path / "journal").iterdir()}
        assert store.stats["deleted_journal_segments"] > 0

        items, missed = store.read_after(0, 1000)
        assert missed == stats["deleted_entries"]
        assert len(items) + missed == store.last_seq
        on_disk = {p.name for p in (tmp_path / "entries").iterdir()}
        assert [orjson.loads(b)["entryFile"] for _, b in items] == sorted(on_disk)
        # A cursor at a deleted entry still resumes in place while its journal line exists.
        assert store.seq_of_id(f"{closed[0]:012d}.pcap-1") == 3

    # Reopened with a lower limit: retention runs at once.
    with Store(tmp_path, storage_limit=64 * 1024, limits=limits) as store:
        assert store.stats["bytes_used"] <= 64 * 1024
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)
        remaining2 = sorted(int(p.name[:12]) for p in (tmp_path / "pcaps").iterdir())
        assert remaining2 == remaining[-len(remaining2) :]  # the oldest went first


def test_retention_empties_an_open_stream_last_and_its_pcap_restarts(tmp_path: Path) -> None:
    with Store(tmp_path, storage_limit=24 * 1024) as store:
        s = store.allocate_stream()
        store.write(Output([make_entry(s, 0)], [(s, T0, 1, frame(s, 0))], []))
        big = "x" * 30_000  # one entry larger than the limit forces everything out
        store.write(Output([make_entry(s, 1, big)], [(s, T0 + 1, 1, frame(s, 1))], []))
        assert store.stats["bytes_used"] <= 24 * 1024
        assert store.read_after(0, 10) == ([], 2)
        store.write(Output([make_entry(s, 2)], [(s, T0 + 2, 1, frame(s, 2))], [s]))
        path = store.pcap_path(s)
        assert path is not None
        assert read_pcap(path) == (1, [(T0 + 2, frame(s, 2))])  # a fresh, valid pcap
        items, missed = store.read_after(0, 10)
        assert ([seq for seq, _ in items], missed) == ([3], 2)


def test_journal_segments_go_with_their_entries_also_after_a_restart(tmp_path: Path) -> None:
    limits = StoreLimits(segment_lines=4)
    with Store(tmp_path, limits=limits) as store:
        old = [one_connection(store, 2) for _ in range(4)]  # seqs 1-8: segments 0 and 1
    segments = {p.name for p in (tmp_path / "journal").iterdir()}
    assert segments == {"000000000000.log", "000000000001.log"}
    with Store(tmp_path, storage_limit=64 * 1024, limits=limits) as store:
        # Entries from before the restart: their cursor still resolves through the journal.
        assert store.seq_of_id(f"{WORKER}/{old[2]:012d}.pcap-1") == 6
        new = [one_connection(store, 2) for _ in range(6)]
        assert all(store.pcap_path(s) is None for s in old)
        segments = {p.name for p in (tmp_path / "journal").iterdir()}
        assert "000000000000.log" not in segments
        assert "000000000001.log" not in segments
        assert store.seq_of_id(f"{old[2]:012d}.pcap-1") is None  # its line is gone too
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)
        items, missed = store.read_after(0, 100)
        kept = sorted(p.name for p in (tmp_path / "entries").iterdir())
        assert [orjson.loads(b)["entryFile"] for _, b in items] == kept
        assert len(items) + missed == store.last_seq == 20
        assert store.pcap_path(new[-1]) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_keep_every_promise(tmp_path: Path, seed: int) -> None:
    """Random batches, closes, restarts, crashes and limit changes; after every step the
    store's view matches the directory and every reader agrees with it."""
    limits = StoreLimits(segment_lines=8, recent_entries_max=5, retention_streams_per_write=2)
    rng = random.Random(seed)
    limit = 200 * 1024
    store = Store(tmp_path, storage_limit=limit, limits=limits)
    handed_out: list[int] = []
    open_conns: dict[int, int] = {}  # stream → next index
    last_seq = 0
    for _ in range(120):
        action = rng.random()
        if action < 0.06:
            store.close()
            limit = rng.choice([120, 200, 300]) * 1024
            store = Store(tmp_path, storage_limit=limit, limits=limits)
            open_conns.clear()  # a restart ends every connection
        elif action < 0.1:
            store = Store(
                tmp_path, storage_limit=limit, limits=limits
            )  # crash: the old one is abandoned
            open_conns.clear()
        else:
            out = Output()
            for _ in range(rng.randint(0, 2)):
                s = store.allocate_stream()
                handed_out.append(s)
                open_conns[s] = 0
            for s in list(open_conns):
                for _ in range(rng.randint(0, 3)):
                    out.packets.append((s, T0 + rng.randrange(10**12), 1, frame(s, 0)))
                if rng.random() < 0.5:
                    body = "q" * rng.choice([10, 3000, 9000])
                    out.entries.append(make_entry(s, open_conns[s], body))
                    open_conns[s] += 1
                if rng.random() < 0.25:
                    out.closed_streams.append(s)
                    del open_conns[s]
            store.write(out)
            assert store.stats["bytes_used"] <= limit
        # Every promise, checked against the directory itself.
        assert len(set(handed_out)) == len(handed_out)
        assert store.last_seq >= last_seq
        last_seq = store.last_seq
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)
        items, missed = store.read_after(0, 10**6)
        assert len(items) + missed == store.last_seq
        seqs = [seq for seq, _ in items]
        assert seqs == sorted(seqs)
        on_disk = {p.name for p in (tmp_path / "entries").iterdir()}
        assert {orjson.loads(b)["entryFile"] for _, b in items} == on_disk
        for seq, data in items[-3:]:
            entry = orjson.loads(data)
            assert store.seq_of_id(entry["id"]) == seq
            assert store.entry_bytes(int(entry["stream"][:12]), entry["index"]) == data
        for p in (tmp_path / "pcaps").iterdir():
            assert read_pcap(p)[0] == 1
    store.close()


# -- paths ----------------------------------------------------------------------------------------


def test_no_input_reaches_outside_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = tmp_path / "secret.pcap"
    secret.write_bytes(b"secret")
    with Store(data) as store:
        s = one_connection(store, 1)
        inside = data / "pcaps" / "000000000001.pcap"
        assert store.pcap_path(s) == inside
        assert store.pcap_path("000000000001.pcap") == inside
        assert store.pcap_path("1") == inside
        (data / "pcaps" / "000000000009.pcap").symlink_to(secret)
        weird: list[Any] = [
            "../secret.pcap",
            "../../secret",
            "/etc/passwd",
            "000000000001.pcap/../../../secret.pcap",
            "1/..",
            "",
            -1,
            10**12,
            True,
            None,
            1.0,
            b"000000000001.pcap",
            9,
        ]
        for value in weird:
            assert store.pcap_path(value) is None, value
        assert store.entry_bytes(-1, 0) is None
        assert store.entry_bytes(s, -1) is None
        assert store.entry_bytes("../x", 0) is None  # type: ignore[arg-type]
        assert store.seq_of_id("../../../etc/passwd") is None


# -- write errors ---------------------------------------------------------------------------------


def test_a_full_disk_is_counted_logged_once_and_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_write_all = fileio.write_all

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    caplog.set_level(logging.INFO, logger="kshark.store")
    with Store(tmp_path) as store:
        one_connection(store, 1)
        monkeypatch.setattr(fileio, "write_all", disk_full)
        s1 = one_connection(store, 2, close=False)
        s2 = one_connection(store, 1)
        stats = store.stats
        assert stats["write_errors"] >= 4
        assert stats["dropped_entries"] == 3
        assert stats["dropped_packets"] == 3
        assert store.last_seq == 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "ENOSPC" in errors[0].getMessage()
        assert "--storage-limit" in errors[0].getMessage()
        assert sorted(p.name for p in (tmp_path / "entries").iterdir()) == [
            "000000000001_pcap-0_entry.json"
        ]
        assert not (tmp_path / "pcaps" / f"{s1:012d}.pcap").exists()
        assert list((tmp_path / "tmp").iterdir()) == []

        monkeypatch.setattr(fileio, "write_all", real_write_all)
        store.write(Output([make_entry(s1, 2)], [(s1, T0 + 9, 1, frame(s1, 9))], [s1]))
        assert store.last_seq == 2
        assert "succeed again" in caplog.records[-1].getMessage()
        items, missed = store.read_after(1, 10)
        assert [orjson.loads(b)["entryFile"] for _, b in items] == [f"{s1:012d}_pcap-2_entry.json"]
        assert missed == 0
        path = store.pcap_path(s1)
        assert path is not None
        assert read_pcap(path) == (1, [(T0 + 9, frame(s1, 9))])
        assert store.entry_bytes(s2, 0) is None
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


def test_a_failed_journal_append_leaves_no_unannounced_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = fileio.write_all
    with Store(tmp_path) as store:
        journal_dir = (tmp_path / "journal").stat().st_ino

        def journal_full(fd: int, data: bytes) -> None:
            if data[:1].isdigit() and b"_entry.json\n" in data:  # a journal line
                real_write_all(fd, data[:5])  # a short write, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_write_all(fd, data)

        one_connection(store, 1)
        monkeypatch.setattr(fileio, "write_all", journal_full)
        one_connection(store, 2)
        monkeypatch.setattr(fileio, "write_all", real_write_all)
        assert store.stats["dropped_entries"] == 2
        assert store.last_seq == 1
        assert journal_lines(tmp_path) == ["1 000000000001_pcap-0_entry.json"]
        assert [p.name for p in (tmp_path / "entries").iterdir()] == [
            "000000000001_pcap-0_entry.json"
        ]
        assert (tmp_path / "journal").stat().st_ino == journal_dir
        one_connection(store, 1)
        assert journal_lines(tmp_path)[-1] == "2 000000000003_pcap-0_entry.json"


def test_a_real_full_filesystem(tmp_path: Path) -> None:
    """A 1 MiB tmpfs: writes fail with a real ENOSPC, nothing on disk is half-written, and
    writing resumes when space is freed. Needs root (CI runs as root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * 400_000)
        with Store(mnt / "data") as store:
            body = "y" * 20_000
            for _ in range(60):
                one_connection(store, 1, body=body)
                if store.stats["write_errors"]:
                    break
            for _ in range(3):
                one_connection(store, 1, body=body)  # keeps running on a full disk
            stats = store.stats
            assert stats["write_errors"] > 0
            assert stats["dropped_entries"] > 0
            before = store.last_seq
            for p in (mnt / "data" / "entries").iterdir():
                orjson.loads(p.read_bytes())
            for line in journal_lines(mnt / "data"):
                assert (mnt / "data" / "entries" / line.split()[1]).exists()
            for p in (mnt / "data" / "pcaps").iterdir():
                read_pcap(p)
            ballast.unlink()
            s = one_connection(store, 1, body=body)
            assert store.last_seq == before + 1
            assert store.entry_bytes(s, 0) is not None
            path = store.pcap_path(s)
            assert path is not None
            assert read_pcap(path) == (1, [(T0, frame(s, 0))])
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.write(Output())
    with pytest.raises(StoreError, match="closed"):
        store.allocate_stream()
