"""Writing from two threads: Store.begin_write / PendingWrite.run_io / Store.finish_write, the
I/O helper process, and the worker's StoreWriter. What a reader, the API or another process,
sees while a batch's files are being written elsewhere."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from capture.pipeline import Output
from kshark.store import PreparedBatch, Store, StoreLimits, fileio, iohelper
from kshark.store.pending import PendingWrite
from kshark.worker import StoreWriter
from tests.support.store import (
    T0,
    connection,
    disk_usage_of,
    entry_names,
    frame,
    journal_lines,
    make_entry,
    pcap_packets,
)


def check_directory(data_dir: Path, *, retention: bool = False) -> int:
    """What another process following the directory sees at this instant: every journal line
    names a complete entry file (unless `retention` deleted it since), and every entry file
    there is complete. Returns the number of journal lines."""
    lines = journal_lines(data_dir)
    first = int(lines[0].split()[0]) if lines else 1
    for n, line in enumerate(lines, first):
        seq, name = line.split()
        assert int(seq) == n
        path = data_dir / "entries" / name
        if retention and not path.exists():
            continue
        orjson.loads(path.read_bytes())
    for name in entry_names(data_dir):
        try:
            data = (data_dir / "entries" / name).read_bytes()
        except FileNotFoundError:
            continue
        orjson.loads(data)
    return len(lines)


STEP_TIMEOUT_S = 20.0  # a bound on a hang, not a measure of speed


class Pieces:
    """fileio.write_all in 4 KiB pieces, calling `between()` in the writing thread after each:
    the test decides what happens while a file is half-written (a reader looks, or the writer
    holds its files until the store's thread waits for it)."""

    def __init__(self) -> None:
        self.between: Callable[[], None] = lambda: None
        self.count = 0


@pytest.fixture
def pieces(monkeypatch: pytest.MonkeyPatch) -> Pieces:
    real = fileio.write_all
    hook = Pieces()

    def in_pieces(fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for i in range(0, len(view), 4096):
            real(fd, view[i : i + 4096])
            hook.count += 1
            hook.between()

    monkeypatch.setattr(fileio, "write_all", in_pieces)
    return hook


class WatchedLock:
    """Stands in for a PendingWrite's run_io lock (its `_lock`): says when a second thread
    starts waiting on it, which is what the store's thread does when it must finish a write
    another thread is still doing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited_on = threading.Event()

    def __enter__(self) -> WatchedLock:
        if not self._lock.acquire(blocking=False):
            self.waited_on.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def hold_files_until_waited_on(pending: PendingWrite, hook: Pieces) -> trio.Event:
    """From its first piece on, the thread running `pending.run_io` holds its files until the
    store's thread waits for it. Returns an event set (in Trio) once that thread is inside."""
    inside = trio.Event()
    lock = WatchedLock()
    pending._lock = lock  # type: ignore[assignment]
    token = trio.lowlevel.current_trio_token()

    def first_piece() -> None:
        hook.between = lambda: None
        trio.from_thread.run_sync(inside.set, trio_token=token)
        assert lock.waited_on.wait(STEP_TIMEOUT_S), "the store's thread never waited"

    hook.between = first_piece
    return inside


def helper_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- the three phases -----------------------------------------------------------------------------


async def test_a_reader_during_run_io_sees_nothing_of_the_batch_until_finish_write(
    tmp_path: Path, pieces: Pieces
) -> None:
    with Store(tmp_path) as store:
        before = store.allocate_stream()
        store.write(connection(before, 1))
        s = store.allocate_stream()
        pending = store.begin_write(connection(s, 6, body="b" * 20_000))
        woke: list[int] = []

        async def follower() -> None:
            await store.wait_for_seq(1)
            woke.append(store.last_seq)

        looks = 0

        def look() -> None:
            # The API's view, at every step of the writing thread: not a line, not a wake-up,
            # until finish_write.
            nonlocal looks
            assert store.last_seq == 1
            assert store.read_after(1, 100) == ([], 0)
            assert woke == []
            for i in range(6):  # /item: nothing, or the whole entry
                data = store.entry_bytes(s, i)
                assert data is None or orjson.loads(data)["index"] == i
            assert check_directory(tmp_path) == 1
            looks += 1

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower)
                token = trio.lowlevel.current_trio_token()
                # The writing thread stops after each 4 KiB piece while the API looks.
                pieces.between = lambda: trio.from_thread.run_sync(look, trio_token=token)
                pieces.count = 0
                await trio.to_thread.run_sync(pending.run_io)
                pieces.between = lambda: None
                assert pending.ran
                assert looks == pieces.count > 7  # it looked inside every file, more than once
                assert store.last_seq == 1
                # Written, not yet announced: every file complete, no line names them yet.
                assert len(entry_names(tmp_path)) == 7
                assert check_directory(tmp_path) == 1
                store.finish_write(pending)
                assert store.last_seq == 7
        assert woke == [7]
        items, missed = store.read_after(1, 100)
        assert [orjson.loads(b)["index"] for _, b in items] == list(range(6))
        assert missed == 0
        assert check_directory(tmp_path) == 7
        path = store.pcap_path(s)
        assert path is not None
        assert pcap_packets(path) == [(T0 + i, frame(s, i)) for i in range(6)]
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


async def test_the_helper_process_writes_while_readers_see_only_whole_files(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        assert store.start_io_helper()
        with trio.fail_after(30):
            for _ in range(3):
                streams = [store.allocate_stream() for _ in range(4)]
                pending = store.begin_write(
                    Output(
                        [make_entry(s, i, "h" * 150_000) for s in streams for i in range(3)],
                        [(s, T0 + i, 1, frame(s, i)) for s in streams for i in range(3)],
                        streams,
                    )
                )
                lines = store.last_seq
                async with trio.open_nursery() as nursery:
                    done = trio.Event()

                    async def io(pending: Any = pending, done: trio.Event = done) -> None:
                        await trio.to_thread.run_sync(pending.run_io)
                        done.set()

                    nursery.start_soon(io)
                    while not done.is_set():
                        assert check_directory(tmp_path) == lines
                        assert store.read_after(lines, 10) == ([], 0)
                        await trio.lowlevel.checkpoint()
                store.finish_write(pending)
                assert store.last_seq == lines + 12
                assert check_directory(tmp_path) == lines + 12
                for s in streams:
                    path = store.pcap_path(s)
                    assert path is not None
                    assert pcap_packets(path) == [(T0 + i, frame(s, i)) for i in range(3)]
        assert store.stats["write_errors"] == 0
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)
        assert list((tmp_path / "tmp").iterdir()) == []


async def test_a_full_disk_inside_run_io_is_counted_and_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = fileio.write_all

    def disk_full(fd: int, data: bytes | memoryview) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    caplog.set_level(logging.INFO, logger="kshark.store")
    with Store(tmp_path) as store, trio.fail_after(10):
        first = store.allocate_stream()
        store.write(connection(first, 1))
        monkeypatch.setattr(fileio, "write_all", disk_full)
        s = store.allocate_stream()
        pending = store.begin_write(connection(s, 2, close=False))
        await trio.to_thread.run_sync(pending.run_io)
        assert [e is not None for e in pending.entry_errors] == [True, True]
        store.finish_write(pending)
        stats = store.stats
        assert stats["dropped_entries"] == 2
        assert stats["dropped_packets"] == 2
        assert stats["write_errors"] == 3  # the pcap and the two entry files
        assert store.last_seq == 1
        assert entry_names(tmp_path) == ["000000000001_pcap-0_entry.json"]
        assert not (tmp_path / "pcaps" / f"{s:012d}.pcap").exists()  # no header-less pcap
        assert list((tmp_path / "tmp").iterdir()) == []
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "ENOSPC" in errors[0].getMessage()

        monkeypatch.setattr(fileio, "write_all", real)
        pending = store.begin_write(Output([make_entry(s, 2)], [(s, T0 + 9, 1, frame(s, 9))], [s]))
        await trio.to_thread.run_sync(pending.run_io)
        store.finish_write(pending)
        assert store.last_seq == 2
        assert "succeed again" in caplog.records[-1].getMessage()
        assert journal_lines(tmp_path)[-1] == f"2 {s:012d}_pcap-2_entry.json"
        path = store.pcap_path(s)
        assert path is not None
        assert pcap_packets(path) == [(T0 + 9, frame(s, 9))]
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards. Needs root (CI runs as root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


async def test_a_real_full_filesystem_through_the_helper_process(tiny_tmpfs: Path) -> None:
    """The disk fills while the helper writes: what failed is counted, nothing on disk is
    half-written, and writes resume when space is freed."""
    ballast = tiny_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 400_000)
    data = tiny_tmpfs / "data"
    with Store(data) as store, trio.fail_after(30):
        assert store.start_io_helper()

        async def write(out: Output) -> None:
            pending = store.begin_write(out)
            await trio.to_thread.run_sync(pending.run_io)
            store.finish_write(pending)

        for _ in range(60):
            await write(connection(store.allocate_stream(), 2, body="y" * 20_000))
            if store.stats["write_errors"]:
                break
        await write(connection(store.allocate_stream(), 2, body="y" * 20_000))
        stats = store.stats
        assert stats["write_errors"] > 0
        assert stats["dropped_entries"] > 0
        before = store.last_seq
        assert check_directory(data) == before
        for p in (data / "pcaps").iterdir():
            pcap_packets(p)
        assert list((data / "tmp").iterdir()) == []
        ballast.unlink()
        s = store.allocate_stream()
        await write(connection(s, 1, body="y" * 20_000))
        assert store.last_seq == before + 1
        assert store.entry_bytes(s, 0) is not None
        path = store.pcap_path(s)
        assert path is not None
        assert pcap_packets(path) == [(T0, frame(s, 0))]
        assert store.stats["bytes_used"] == disk_usage_of(data)


def test_retention_deletes_in_the_io_phase_and_readers_skip_what_it_deletes(
    tmp_path: Path,
) -> None:
    limits = StoreLimits(recent_entries_max=2)  # older entries: read from files
    limit = 160 * 1024  # 40 blocks; a closed connection of 2 entries takes 3
    with Store(tmp_path, storage_limit=limit, limits=limits) as store:
        old = []
        for _ in range(12):
            old.append(store.allocate_stream())
            store.write(connection(old[-1], 2))
        assert store.stats["deleted_streams"] == 0
        new = store.allocate_stream()
        pending = store.begin_write(connection(new, 4, body="x" * 6000))  # 8 more blocks
        # Retention planned its deletions into this write's I/O phase, oldest first...
        doomed = [name for kind, name in pending.unlinks if kind == fileio.UNLINK_ENTRY]
        assert doomed[:2] == [f"{old[0]:012d}_pcap-{i}_entry.json" for i in range(2)]
        assert (fileio.UNLINK_PCAP, f"{old[0]:012d}.pcap") in pending.unlinks
        # ...so the files are still there, but no reader serves them any more.
        for name in doomed:
            assert (tmp_path / "entries" / name).exists()
            assert store.entry_bytes(int(name[:12]), int(name[18])) is None
        items, missed = store.read_after(0, 1000)
        served = {orjson.loads(b)["entryFile"] for _, b in items}
        assert not served & set(doomed)
        assert len(items) + missed == store.last_seq == 24
        pending.run_io()
        for name in doomed:
            assert not (tmp_path / "entries" / name).exists()
        store.finish_write(pending)
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path) <= limit
        assert store.pcap_path(old[0]) is None
        assert store.pcap_path(new) is not None
        assert check_directory(tmp_path, retention=True) == 28
        items, missed = store.read_after(0, 1000)
        assert sorted(orjson.loads(b)["entryFile"] for _, b in items) == entry_names(tmp_path)


def test_an_open_connection_emptied_by_retention_is_not_served_before_its_files_go(
    tmp_path: Path,
) -> None:
    limits = StoreLimits(recent_entries_max=2)  # older entries: read from files
    with Store(tmp_path, storage_limit=64 * 1024, limits=limits) as store:  # 16 blocks
        a = store.allocate_stream()
        store.write(connection(a, 2, close=False))  # the oldest, still open: deleted last
        for _ in range(3):
            store.write(connection(store.allocate_stream(), 2))
        c = store.allocate_stream()
        pending = store.begin_write(connection(c, 2, body="x" * 20_000))  # 11 more blocks
        assert (fileio.UNLINK_PCAP, f"{a:012d}.pcap") in pending.unlinks
        assert (tmp_path / "entries" / f"{a:012d}_pcap-0_entry.json").exists()
        items, missed = store.read_after(0, 100)
        assert items == []  # every older entry is being deleted; none is served meanwhile
        assert missed == 8
        assert store.entry_bytes(a, 0) is None
        store.finish_write(pending)
        assert [int(p.name[:12]) for p in (tmp_path / "pcaps").iterdir()] == [c]
        store.write(Output([make_entry(a, 2)], [(a, T0 + 2, 1, frame(a, 2))], [a]))
        path = store.pcap_path(a)
        assert path is not None
        assert pcap_packets(path) == [(T0 + 2, frame(a, 2))]  # a fresh pcap for what follows
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


def test_a_deletion_that_fails_in_the_io_phase_is_counted_and_the_file_accounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_remove = fileio.remove

    def refuse_entries(dir_fd: int, name: str | bytes) -> OSError | None:
        if str(name).endswith("_entry.json"):
            return OSError(errno.EIO, os.strerror(errno.EIO))
        return real_remove(dir_fd, name)

    with Store(tmp_path, storage_limit=64 * 1024) as store:
        for _ in range(4):
            store.write(connection(store.allocate_stream(), 2))
        monkeypatch.setattr(fileio, "remove", refuse_entries)
        store.write(connection(store.allocate_stream(), 2, body="x" * 20_000))
        stats = store.stats
        assert stats["write_errors"] > 0
        assert stats["bytes_used"] == disk_usage_of(tmp_path)
        assert stats["entries_on_disk"] == len(entry_names(tmp_path))
        assert stats["deleted_entries"] == 0
        monkeypatch.setattr(fileio, "remove", real_remove)
        store.write(connection(store.allocate_stream(), 1))
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


def test_a_write_begun_while_another_is_outstanding_goes_after_it(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        a = store.allocate_stream()
        b = store.allocate_stream()
        p1 = store.begin_write(Output([make_entry(a, 0)], [(a, T0, 1, frame(a, 0))], []))
        # Begun before p1 is finished: p1 is finished first (its I/O run here), then p2 begins.
        p2 = store.begin_write(
            Output([make_entry(a, 1), make_entry(b, 0)], [(a, T0 + 1, 1, frame(a, 1))], [a])
        )
        assert p1.finished
        assert store.last_seq == 1
        # A plain write() while p2 is outstanding: p2 goes first.
        store.write(Output([make_entry(b, 1)], [(b, T0 + 2, 1, frame(b, 2))], [b]))
        assert p2.finished
        store.finish_write(p1)  # already finished: nothing happens
        store.finish_write(p2)
        assert journal_lines(tmp_path) == [
            "1 000000000001_pcap-0_entry.json",
            "2 000000000001_pcap-1_entry.json",
            "3 000000000002_pcap-0_entry.json",
            "4 000000000002_pcap-1_entry.json",
        ]
        assert pcap_packets(tmp_path / "pcaps" / f"{a:012d}.pcap") == [
            (T0, frame(a, 0)),
            (T0 + 1, frame(a, 1)),
        ]
        assert pcap_packets(tmp_path / "pcaps" / f"{b:012d}.pcap") == [(T0 + 2, frame(b, 2))]
        assert store.stats["entries_written"] == 4
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)
        other = Store(tmp_path / "other")
        p3 = other.begin_write(Output())
        with pytest.raises(ValueError, match="outstanding"):
            store.finish_write(p3)
        other.close()


async def test_a_write_waits_for_the_outstanding_io_of_another_thread(
    tmp_path: Path, pieces: Pieces
) -> None:
    with Store(tmp_path) as store, trio.fail_after(20):
        a = store.allocate_stream()
        p1 = store.begin_write(connection(a, 4, body="z" * 30_000, close=False))
        inside = hold_files_until_waited_on(p1, pieces)
        async with trio.open_nursery() as nursery:

            async def io() -> None:
                await trio.to_thread.run_sync(p1.run_io)
                store.finish_write(p1)  # finished meanwhile by the write below: no-op

            nursery.start_soon(io)
            await inside.wait()  # the thread is inside p1's files now
            # Same stream, next packets and entries: waits for p1's thread, then goes after it.
            store.write(
                Output([make_entry(a, 4)], [(a, T0 + 4, 1, frame(a, 4))], [a]),
            )
            assert p1.finished
        assert [line.split()[1] for line in journal_lines(tmp_path)] == [
            f"{a:012d}_pcap-{i}_entry.json" for i in range(5)
        ]
        assert pcap_packets(tmp_path / "pcaps" / f"{a:012d}.pcap") == [
            (T0 + i, frame(a, i)) for i in range(5)
        ]


async def test_pcap_path_waits_for_an_append_in_flight(tmp_path: Path, pieces: Pieces) -> None:
    big = b"P" * 50_000
    with Store(tmp_path) as store, trio.fail_after(20):
        s = store.allocate_stream()
        other = store.allocate_stream()
        store.write(Output([], [(s, T0, 1, frame(s, 0))], []))  # buffered, no file yet
        packets = [(s, T0 + i, 1, big) for i in range(1, 5)]
        pending = store.begin_write(Output([make_entry(s, 0)], packets, []))
        inside = hold_files_until_waited_on(pending, pieces)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, pending.run_io)
            await inside.wait()
            # Another stream's download does not wait for it.
            assert store.pcap_path(other) is None
            assert not pending.finished
            path = store.pcap_path(s)  # a download now gets every packet received so far
            assert pending.finished
            assert path is not None
            assert pcap_packets(path) == [(T0, frame(s, 0))] + [(T0 + i, big) for i in range(1, 5)]


def test_close_finishes_an_outstanding_write_and_stops_the_helper(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.start_io_helper()
    assert store.start_io_helper()  # idempotent
    pid = store._helper.pid  # type: ignore[union-attr]
    assert helper_alive(pid)
    s = store.allocate_stream()
    pending = store.begin_write(connection(s, 2, close=False))
    store.close()
    assert pending.finished
    assert journal_lines(tmp_path) == [
        f"1 {s:012d}_pcap-0_entry.json",
        f"2 {s:012d}_pcap-1_entry.json",
    ]
    assert pcap_packets(tmp_path / "pcaps" / f"{s:012d}.pcap") == [
        (T0, frame(s, 0)),
        (T0 + 1, frame(s, 1)),
    ]
    assert not helper_alive(pid)
    with Store(tmp_path) as again:  # the directory is released
        assert again.last_seq == 2


def test_a_dead_helper_is_replaced_by_in_process_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kshark.store")
    with Store(tmp_path) as store:
        assert store.start_io_helper()
        a = store.allocate_stream()
        store.write(connection(a, 1, close=False))  # through the helper
        os.kill(store._helper.pid, signal.SIGKILL)  # type: ignore[union-attr]
        b = store.allocate_stream()
        store.write(
            Output([make_entry(a, 1), make_entry(b, 0)], [(a, T0 + 1, 1, frame(a, 1))], [a])
        )
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("I/O helper process" in w for w in warnings)
        store.write(connection(store.allocate_stream(), 1))
        assert store.stats["write_errors"] == 0
        assert store.last_seq == 4
        assert check_directory(tmp_path) == 4
        assert pcap_packets(tmp_path / "pcaps" / f"{a:012d}.pcap") == [
            (T0, frame(a, 0)),
            (T0 + 1, frame(a, 1)),
        ]
        assert store.stats["bytes_used"] == disk_usage_of(tmp_path)


def test_a_batch_redone_after_a_helper_died_midway_gives_the_same_files(tmp_path: Path) -> None:
    """The fallback redoes the whole batch, part of which the helper may have done: a file
    already deleted counts as deleted, appends land at their offsets, entry files are replaced
    by the same bytes; so nothing doubles and nothing is lost."""
    for sub in ("pcaps", "tmp", "entries"):
        (tmp_path / sub).mkdir()
    fds = [fileio.open_dir(tmp_path / sub) for sub in ("pcaps", "tmp", "entries")]
    try:
        old = [("000000000001.pcap", b"HEADERr1", 0), ("000000000003.pcap", b"HEADERold", 0)]
        assert fileio.write_files(*fds, old, [("000000000003_pcap-0_entry.json", b"{}")]) == (
            [None, None],
            [None],
            [],
        )
        batch = (
            [
                ("000000000001.pcap", b"r2r3", 8),
                ("000000000002.pcap", b"HEADERq", 0),
                ("000000000003.pcap", b"HEADERnew", 0),  # retention emptied it: restarts
            ],
            [("000000000001_pcap-0_entry.json", b'{"a":1}')],
            [
                (fileio.UNLINK_PCAP, "000000000003.pcap"),
                (fileio.UNLINK_ENTRY, "000000000003_pcap-0_entry.json"),
            ],
        )
        done = ([None, None, None], [None], [None, None])
        assert fileio.write_files(*fds, *batch) == done
        assert fileio.write_files(*fds, *batch) == done
        pcaps = tmp_path / "pcaps"
        assert (pcaps / "000000000001.pcap").read_bytes() == b"HEADERr1r2r3"
        assert (pcaps / "000000000002.pcap").read_bytes() == b"HEADERq"
        assert (pcaps / "000000000003.pcap").read_bytes() == b"HEADERnew"
        assert entry_names(tmp_path) == ["000000000001_pcap-0_entry.json"]
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        for fd in fds:
            os.close(fd)


def test_a_request_written_in_pieces_reaches_the_helper_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request is gathered from its parts (no copy of the batch); a write cut short (a
    signal) goes on where it stopped."""
    real = os.writev
    calls = 0

    def short(fd: int, buffers: list[bytes | memoryview]) -> int:
        nonlocal calls
        calls += 1
        return real(fd, [bytes(b"".join(bytes(b) for b in buffers)[:7])])

    monkeypatch.setattr(os, "writev", short)
    parts: list[bytes | memoryview] = [b"", b"abc", b"", b"defghijkl", b"m" * 20, b"n"]
    expected = b"".join(bytes(p) for p in parts)
    r, w = os.pipe()
    try:
        iohelper._writev_all(w, parts)
        assert os.read(r, 1000) == expected
    finally:
        os.close(r)
        os.close(w)
    assert calls == -(-len(expected) // 7)


# -- the worker's writer task ---------------------------------------------------------------------


class GatedStore:
    """A Store whose run_io first waits at a gate the test opens, so the test decides when a
    batch's I/O ends; everything else is the real store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Semaphore(0)
        self.begun: list[int] = []  # entries per batch, in the order begin_write saw them
        # A test that fails while a thread waits at the gate would otherwise never end: the
        # writer does not abandon its thread, not even to a fail_after.
        self.watchdog = threading.Timer(10, self.open_gate)
        self.watchdog.daemon = True
        self.watchdog.start()

    def open_gate(self) -> None:
        """Let every waiting and later run_io through (also on failure: a thread blocked at
        the gate would keep the test from ever ending)."""
        for _ in range(1000):
            self.gate.release()

    def start_io_helper(self) -> bool:
        return self.store.start_io_helper()

    def prepare_write(self, out: Output) -> PreparedBatch:
        return self.store.prepare_write(out)

    def begin_write(self, out: PreparedBatch) -> Gated:
        self.begun.append(len(out.entries))
        return Gated(self.store.begin_write(out), self.gate)  # type: ignore[arg-type]

    def finish_write(self, gated: Gated) -> None:
        self.store.finish_write(gated.inner)

    def write(self, out: PreparedBatch) -> None:
        self.store.write(out)


class Gated:
    def __init__(self, inner: PendingWrite, gate: threading.Semaphore) -> None:
        self.inner = inner
        self.gate = gate

    def run_io(self) -> None:
        self.gate.acquire()
        self.inner.run_io()


def journal_streams(data_dir: Path) -> list[int]:
    return [int(line.split()[1][:12]) for line in journal_lines(data_dir)]


async def test_the_writer_keeps_put_order_and_bounds_its_queue(tmp_path: Path) -> None:
    with Store(tmp_path) as real, trio.fail_after(20):
        store = GatedStore(real)
        writer = StoreWriter(store, capacity=1, overlap=True)  # type: ignore[arg-type]
        a, b, c, d = (real.allocate_stream() for _ in range(4))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await writer.put(connection(a, 1))  # taken at once: being written
                await trio.testing.wait_all_tasks_blocked()
                assert store.begun == [1]
                await writer.put(connection(b, 2))  # queued: within capacity
                assert writer.queued == 1
                returned = trio.Event()

                async def third() -> None:
                    await writer.put(connection(c, 3))  # over capacity: waits
                    returned.set()

                nursery.start_soon(third)
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set()
                assert writer.queued == 2
                assert real.last_seq == 0  # nothing announced while batch 1's I/O waits
                store.gate.release()  # batch 1 done → batch 2 taken → room for batch 3
                await returned.wait()
                assert real.last_seq == 1
                store.open_gate()
                await writer.put(connection(d, 1))
                writer.close()
        finally:
            store.open_gate()
        assert store.begun == [1, 2, 3, 1]
        assert journal_streams(tmp_path) == [a, b, b, c, c, c, d]


async def test_a_cancelled_writer_loses_no_batch(tmp_path: Path) -> None:
    """SIGTERM cancels the writer while a batch's files are being written and others wait:
    the thread finishes that batch, finish_write journals it, drain() writes the rest."""
    with Store(tmp_path) as real, trio.fail_after(20):
        store = GatedStore(real)
        writer = StoreWriter(store, capacity=1, overlap=True)  # type: ignore[arg-type]
        a, b, c = (real.allocate_stream() for _ in range(3))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await writer.put(connection(a, 2))
                await trio.testing.wait_all_tasks_blocked()
                await writer.put(connection(b, 1))
                nursery.start_soon(writer.put, connection(c, 1))  # over capacity: waits
                await trio.testing.wait_all_tasks_blocked()
                assert writer.queued == 2
                nursery.cancel_scope.cancel()  # what SIGTERM does
                with trio.CancelScope(shield=True):
                    await trio.testing.wait_all_tasks_blocked()  # the writer took the cancel
                assert real.last_seq == 0  # cancelled, and still waiting for the thread
                store.gate.release()
        finally:
            store.open_gate()
        assert real.last_seq >= 2  # the batch in flight was finished, not abandoned
        writer.drain()
        assert writer.queued == 0
        assert journal_streams(tmp_path) == [a, a, b, c]
        for s, n in ((a, 2), (b, 1), (c, 1)):
            path = real.pcap_path(s)
            assert path is not None
            assert pcap_packets(path) == [(T0 + i, frame(s, i)) for i in range(n)]


async def test_without_a_second_cpu_the_writer_writes_in_its_own_thread(tmp_path: Path) -> None:
    """overlap=False (one CPU to run on): no helper process, no thread; the same files."""
    with Store(tmp_path) as store, trio.fail_after(20):
        writer = StoreWriter(store, capacity=1, overlap=False)
        streams = [store.allocate_stream() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for s in streams:
                await writer.put(connection(s, 2))
            writer.close()
        assert store._helper is None
        assert journal_streams(tmp_path) == [s for s in streams for _ in range(2)]
        assert check_directory(tmp_path) == 6
