"""The worker's data directory: entry files, one pcap per connection, the journal, retention.

One `Store` per data directory and process, its state owned by one thread (the worker's Trio
thread): a write takes a whole pipeline batch, readers (`read_after`, `seq_of_id`,
`entry_bytes`, `pcap_path`) are plain calls that never block on the writer (`pcap_path` of a
connection whose packets are being appended excepted), and `wait_for_seq` is the one async
method, woken when a write finishes. The layout on disk and what a reader may rely on are in
docs/store.md.

A write is three phases so that its file system calls can run off that thread, overlapped with
parsing the next batch: `begin_write` decides everything (names, offsets, what retention
deletes) without I/O, `PendingWrite.run_io` makes the calls in any thread (or the I/O helper
process), `finish_write` journals and accounts. `write()` is the three in a row.

Order inside one write is what makes a concurrent reader (even another process) safe: the
packets of every entry in the batch reach their pcap first, then each entry file appears whole
(temp file + rename), and only then does the journal line that announces it get appended. A line
in the journal therefore always names a complete file with its packets already on disk.

Write errors (a full disk, EIO) never escape a write: what could not be written is dropped and
counted, one log line per errno says what happened, and every later write simply tries again, so
the store recovers by itself when space returns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import trio

from capture.pcapwrite import RecordGroup, group_records
from kshark.store import fileio, names, pcapfile
from kshark.store.identity import store_id
from kshark.store.iohelper import IOHelper
from kshark.store.journal import Journal, segment_end, segment_name, segment_of
from kshark.store.pending import PendingWrite

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence, Set
    from types import TracebackType

log = logging.getLogger("kshark.store")

DEFAULT_STORAGE_LIMIT = 1 << 30
# Stream numbers are reserved on disk this many at a time, so allocating is a memory increment
# and a crash skips at most this many numbers (it never reuses one).
RESERVATION_BLOCK = 1024
# Packets wait in memory until their stream has an entry in the batch, is closed, or its buffer
# passes PCAP_BUFFER_PER_STREAM; if all buffers together pass PCAP_BUFFER_TOTAL, every buffer is
# written out. Buffering turns a packet into a list append instead of an open/write/close.
PCAP_BUFFER_PER_STREAM = 256 << 10
PCAP_BUFFER_TOTAL = 64 << 20
# The newest entries' bytes, as written, so live followers do not read back a file that was
# written a moment ago. Oldest dropped first past either bound; entries retention deletes are
# dropped at once, so the cache never serves what the disk no longer has.
RECENT_ENTRIES_MAX = 4096
RECENT_BYTES_MAX = 8 << 20
# Once usage passes the limit, oldest streams are deleted until it is under 90% of it, so
# retention runs in bursts instead of on every write.
RETENTION_TARGET = 0.9
# Past the limit, a write deletes as many streams as needed to get back under it at once; the
# rest of the way to the target goes at most this many streams per write, so deleting a few
# hundred MB of small files never stalls the event loop in one go.
RETENTION_STREAMS_PER_WRITE = 512
# Lines read from the journal at a time by `read_after` when skipping deleted entries.
_READ_CHUNK_LINES = 1024

_STATE_RESERVATION = "stream-reservation"
_STATE_LOCK = "lock"
_SUBDIRS = ("entries", "pcaps", "journal", "state", "tmp")
_SORT_KEYS = orjson.OPT_SORT_KEYS
_SEQ_SHIFT = 30  # indexes are < 10**9 < 2**30 (names.py)
_INDEX_MASK = (1 << _SEQ_SHIFT) - 1


class StoreOutput(Protocol):
    """What `write()` consumes: capture.pipeline.Output has this shape (duck typing, so the store
    does not import the pipeline)."""

    @property
    def entries(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def packets(self) -> Sequence[tuple[int, int, int, bytes]]: ...

    @property
    def closed_streams(self) -> Sequence[int]: ...


class StoreError(Exception):
    """The data directory cannot be used (startup) or the store was used after close()."""


class StoreLockedError(StoreError):
    """Another process has this data directory open."""


class _Stream:
    """What the store knows of one connection: its files on disk and its pending packets."""

    __slots__ = (
        "buf",
        "buf_bytes",
        "closed",
        "entries",
        "entry_usage",
        "linktype",
        "pcap_size",
    )

    def __init__(self, closed: bool) -> None:
        # Packets not yet written: record header, frame, record header, frame, ...
        self.buf: list[bytes] | None = None
        self.buf_bytes = 0
        self.closed = closed
        self.entry_usage = 0  # disk usage of its entry files
        # Its entry files on disk, each as one int `seq << _SEQ_SHIFT | index` (one small object
        # per entry instead of two; seq 0: found on disk at startup, seq not read).
        self.entries: list[int] = []
        self.linktype: int | None = None
        self.pcap_size = 0  # bytes in its pcap file (0: no file)


# An entry ready to be written: (its stream, stream number, index, entryFile, JSON bytes).
_Pending = tuple[_Stream, int, int, str, bytes]


class _WriteState:
    """What finish_write needs of its begin_write, kept on the PendingWrite meanwhile."""

    __slots__ = ("closed_streams", "errors_before", "pcap_streams", "records", "successes_before")

    def __init__(
        self,
        records: list[_Pending],
        pcap_streams: list[tuple[int, _Stream, int]],
        closed_streams: list[int],
        errors_before: int,
        successes_before: int,
    ) -> None:
        self.records = records
        self.pcap_streams = pcap_streams  # (number, stream, packets) per PendingWrite.pcaps
        self.closed_streams = closed_streams
        self.errors_before = errors_before
        self.successes_before = successes_before


class PreparedBatch:
    """A pipeline batch with the work that needs no store state done: entries serialised
    (compact, sorted keys) with their entryFile checked, packets framed as pcap records grouped
    per connection.

    Made by `Store.prepare_write` (any thread, any time); `Store.begin_write` takes it instead
    of the batch and has only the decisions left (which stream, which file, duplicates across
    batches, which buffers to write). `nbytes` is what it holds (entry JSON and pcap records);
    `extend` appends a later one, so a writer can serialise a batch step by step and see its
    size as it grows.
    """

    __slots__ = ("_names", "closed_streams", "entries", "invalid", "nbytes", "packets")

    def __init__(self, out: StoreOutput) -> None:
        # (entryFile, stream, index, JSON bytes) per valid entry, and why each other one is not
        self.entries: list[tuple[str, int, int, bytes]] = []
        self.invalid: list[str] = []
        # The packets as pcap records, per (stream, link type) in order of first appearance
        self.packets: list[RecordGroup] = []
        self.closed_streams = list(out.closed_streams)
        self.nbytes = 0
        self._names: set[str] = set()
        if out.entries:
            self._add_entries(out.entries)
        if out.packets:
            # Compiled with the packet side (capture/pcapwrite.py): no Python step per packet.
            packets = out.packets
            self.packets = group_records(
                packets if type(packets) is list else list(packets), pcapfile.SNAPLEN
            )
            for group in self.packets:
                self.nbytes += group.size

    def _add_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        parse = names.parse_entry_file
        dumps = orjson.dumps
        seen = self._names
        size = 0
        for entry in entries:
            name = entry.get("entryFile")
            parsed = parse(name) if isinstance(name, str) else None
            if parsed is None:
                self.invalid.append(f"entryFile {name!r} is not a valid entry file name")
                continue
            assert isinstance(name, str)
            if name in seen:
                self.invalid.append(f"{name} was already written; the duplicate is dropped")
                continue
            try:
                data = dumps(entry, option=_SORT_KEYS)
            except orjson.JSONEncodeError as exc:
                self.invalid.append(f"{name}: cannot be serialised ({exc})")
                continue
            seen.add(name)
            size += len(data)
            self.entries.append((name, parsed[0], parsed[1], data))
        self.nbytes += size

    def extend(self, later: PreparedBatch) -> None:
        """Append a batch prepared from the pipeline's next output: the result is what one
        batch made of both outputs, in order, would be."""
        for entry in later.entries:
            if entry[0] in self._names:
                self.invalid.append(f"{entry[0]} was already written; the duplicate is dropped")
                continue
            self._names.add(entry[0])
            self.entries.append(entry)
            self.nbytes += len(entry[3])
        self.invalid += later.invalid
        self.packets += later.packets
        self.closed_streams += later.closed_streams
        for group in later.packets:
            self.nbytes += group.size


class Store:
    """Entry files, per-connection pcaps and the journal under one data directory."""

    def __init__(
        self, data_dir: str | os.PathLike[str], storage_limit: int = DEFAULT_STORAGE_LIMIT
    ) -> None:
        if storage_limit <= 0:
            raise ValueError(f"storage_limit must be positive, not {storage_limit}")
        self.data_dir = Path(data_dir).absolute()
        self.storage_limit = int(storage_limit)
        self._closed = True  # until fully open: close() then has nothing to undo
        self._pending: PendingWrite | None = None  # the write begun and not yet finished
        self._helper: IOHelper | None = None  # start_io_helper()
        self._fds: list[int] = []
        try:
            for sub in _SUBDIRS:
                (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._lock()
            self._fds.append(self._lock_fd)
            self._entries_fd = self._open_dir("entries")
            self._pcaps_fd = self._open_dir("pcaps")
            self._journal_fd = self._open_dir("journal")
            self._state_fd = self._open_dir("state")
            self.store_id = store_id(self._state_fd)  # state/store-id, made once (identity.py)
            self._tmp_fd = self._open_dir("tmp")
            for leftover in os.listdir(self._tmp_fd):
                fileio.unlink_quietly(self._tmp_fd, leftover)
            vfs = os.statvfs(self.data_dir)
            self._block = min(max(vfs.f_frsize or vfs.f_bsize, 512), 1 << 16)
            self._journal = Journal(self._journal_fd, self._block)
            self._streams: dict[int, _Stream] = {}
            # Journal segment → entries written since this start that are still on disk; a
            # segment whose count reaches 0 (and that holds no legacy entry) can be deleted.
            self._segment_live: dict[int, int] = {}
            self._usage = self._journal.bytes_used
            self._entries_on_disk = 0
            self._scan()
            self._next_stream = self._resume_counter()
        except StoreError:
            self._close_fds()
            raise
        except OSError as exc:
            self._close_fds()
            raise StoreError(
                f"cannot use the data directory {self.data_dir}: {exc.strerror or exc}"
            ) from exc
        self._reserved = self._next_stream  # the first allocation reserves a block
        self._closed = False
        self._open_streams = 0
        self._buffered = 0
        self._recent: dict[int, tuple[int, bytes]] = {}  # seq → (stream, entry bytes)
        self._recent_bytes = 0
        # Every seq from here to last_seq is in _recent unless retention deleted it.
        self._recent_low = self._journal.last_seq + 1
        self._event: trio.Event | None = None
        self._evicting = False
        # Files retention has planned for the outstanding write's I/O phase: counted as
        # deleted already, so readers must not serve them meanwhile.
        self._doomed_entries: set[bytes] = set()
        self._doomed_pcaps: set[int] = set()
        self._evict_order: list[int] = []
        self._evict_pos = 0
        self._logged_errnos: set[int] = set()
        self._entries_written = 0
        self._deleted_streams = 0
        self._deleted_entries = 0
        self._deleted_segments = 0
        self._write_errors = 0
        self._dropped_entries = 0
        self._dropped_packets = 0
        self._invalid_entries = 0
        self._linktype_mismatch = 0
        self._successes = 0  # files written; tells a recovery from a write with nothing to do
        self._drop_old_segments()
        if self._usage > self.storage_limit:
            self._evict(None)  # the limit was lowered since the last run

    # -- opening -------------------------------------------------------------------------

    def _open_dir(self, sub: str) -> int:
        fd = fileio.open_dir(self.data_dir / sub)
        self._fds.append(fd)
        return fd

    def _lock(self) -> int:
        """One writer per data directory: a second worker would hand out the same stream numbers.

        A POSIX record lock (lockf): it is released when the process dies, however it dies.
        It is per process, so a second Store on the same directory in the same process is not
        refused (tests reopen a store to simulate a restart).
        """
        path = self.data_dir / "state" / _STATE_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"the data directory {self.data_dir} is in use by another kshark process "
                f"(pid {holder}); give each worker its own --data-dir"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _scan(self) -> None:
        """Account every file a previous run left, so retention and the counter know them."""
        block = self._block
        streams = self._streams
        with os.scandir(self._pcaps_fd) as it:
            for de in it:
                stream = names.parse_pcap_file(de.name)
                if stream is None:
                    continue
                size = de.stat(follow_symlinks=False).st_size
                if size < pcapfile.GLOBAL_HEADER_SIZE:
                    # A failed first write that could not even be cut back: not a pcap.
                    fileio.unlink_quietly(self._pcaps_fd, de.name)
                    continue
                st = streams.get(stream)
                if st is None:
                    st = streams[stream] = _Stream(closed=True)
                st.pcap_size = size
                self._usage += fileio.disk_usage(size, block)
        # Entry files at least as new as the journal's last write may be ones a crash left
        # without their journal line (see _announce_leftovers).
        journal_mtime = self._journal.mtime_ns()
        recent: list[tuple[int, int, str, int]] = []
        with os.scandir(self._entries_fd) as it:
            for de in it:
                parsed = names.parse_entry_file(de.name)
                if parsed is None:
                    continue
                stream, index = parsed
                stat = de.stat(follow_symlinks=False)
                size = stat.st_size
                if stat.st_mtime_ns >= journal_mtime:
                    recent.append((stream, index, de.name, stat.st_mtime_ns))
                st = streams.get(stream)
                if st is None:
                    st = streams[stream] = _Stream(closed=True)
                st.entries.append(index)  # seq unknown (0): not worth reading the journal
                st.entry_usage += fileio.disk_usage(size, block)
                self._usage += fileio.disk_usage(size, block)
                self._entries_on_disk += 1
        for st in streams.values():
            st.entries.sort()
        if recent:
            self._announce_leftovers(recent)
        # Entries from before this start pin every journal segment that existed then, until
        # retention has deleted them all (they are the oldest, so they go first).
        self._legacy_entries = self._entries_on_disk
        self._legacy_last_segment = self._journal.current_segment

    def _announce_leftovers(self, recent: list[tuple[int, int, str, int]]) -> None:
        """Journal the entry files a crash left without their journal line, so followers get
        them too (otherwise /item would serve them but no stream ever would).

        A batch's files are written before its journal lines, so a kill in between leaves
        files that only the journal lacks, and only from that last batch: every such file is
        at least as new as the journal's last write (`recent`; with a coarse filesystem clock,
        files journaled in the same tick are among them). A journaled file's line is in a
        segment written after the file, so the segments at least as new as the oldest of them
        (one or two, in practice) tell which are really missing; those are appended in (stream,
        index) order, the order a batch writes them."""
        oldest = min(r[3] for r in recent)
        known: set[bytes] = set()
        for segment in reversed(self._journal.segments):
            name = segment_name(segment)
            try:
                if os.stat(name, dir_fd=self._journal_fd).st_mtime_ns < oldest:
                    break
            except FileNotFoundError:
                continue
            data = fileio.read_all(self._journal_fd, name) or b""
            known.update(line.partition(b" ")[2] for line in data.splitlines())
        missing = sorted(r for r in recent if r[2].encode() not in known)
        if not missing:
            return
        done, delta, error = self._journal.append([r[2].encode() for r in missing])
        self._usage += delta
        log.warning(
            "%d entry file(s) a crash had left unannounced are journaled now (%s%s)",
            done,
            missing[0][2],
            ", …" if len(missing) > 1 else "",
        )
        if error is not None:
            log.error(
                "cannot journal them all: %s; %d stay unannounced", error, len(missing) - done
            )

    def _resume_counter(self) -> int:
        """Past every number reserved, on disk, or named by the newest journal line."""
        candidates = [1]
        data = fileio.read_all(self._state_fd, _STATE_RESERVATION)
        if data is not None:
            try:
                candidates.append(int(data))
            except ValueError:
                log.warning("state/%s is not a number (%r); ignoring it", _STATE_RESERVATION, data)
        if self._streams:
            candidates.append(max(self._streams) + 1)
        if self._journal.last_name:
            stream = names.parse_entry_file_bytes(self._journal.last_name)
            if stream is not None:
                candidates.append(stream + 1)
        return max(candidates)

    # -- the stream counter --------------------------------------------------------------

    def allocate_stream(self) -> int:
        """The next stream number (from 1; never 0, which the pipeline reads as "none yet")."""
        self._check_open()
        n = self._next_stream
        if n > names.MAX_STREAM:
            raise StoreError("stream numbers exhausted (12 digits)")
        if n >= self._reserved:
            self._reserve(n + RESERVATION_BLOCK)
        self._next_stream = n + 1
        return n

    def _reserve(self, mark: int) -> bool:
        try:
            fileio.replace_durably(self._state_fd, _STATE_RESERVATION, b"%d\n" % mark)
        except OSError as exc:
            # Keep handing out numbers: the ones that reach disk are found again by the scan at
            # the next start. The reservation is retried at the next allocation.
            self._write_failed("stream reservation", f"state/{_STATE_RESERVATION}", exc)
            return False
        self._reserved = mark
        return True

    # -- writing -------------------------------------------------------------------------

    def write(self, out: StoreOutput | PreparedBatch) -> None:
        """Store one pipeline batch: packets, closed streams, entries; then apply retention.

        The three phases of a write in one go. A caller that wants the file work off its own
        thread runs them itself: `begin_write`, `PendingWrite.run_io` in a worker thread,
        `finish_write` (docs/store.md, "Writing from two threads")."""
        pending = self.begin_write(out)
        pending.run_io()
        self.finish_write(pending)

    def prepare_write(self, out: StoreOutput) -> PreparedBatch:
        """Phase 0 of a write, optional: the part that needs no store state (serialising the
        entries, checking their names, framing the pcap records). Safe in any thread or
        task, at any time; `begin_write` then has only decisions left. The worker's writer
        prepares a batch while the previous one's files are being written."""
        return PreparedBatch(out)

    def begin_write(self, out: StoreOutput | PreparedBatch) -> PendingWrite:
        """Phase 1 of a write, in the store's thread: take in one batch and decide its files.

        Packets go into the per-connection buffers, closed connections are marked, entries are
        validated and serialised (unless `prepare_write` did that), and the buffers due for
        their pcap are taken. Nothing is written: the returned PendingWrite holds the names and
        bytes, and its `run_io()` (any thread) writes them. Then `finish_write()` must follow,
        in this thread.

        One write is outstanding at a time: a write begun while another is outstanding (or
        `flush`, `close`, `pcap_path` of a stream it carries) first finishes that one,
        performing or waiting for its I/O. So batches reach the disk and the journal in the
        order they were begun.
        """
        self._check_open()
        self._settle()
        batch = out if isinstance(out, PreparedBatch) else PreparedBatch(out)
        errors_before = self._write_errors
        successes_before = self._successes
        streams = self._streams
        to_flush: set[int] = set()

        if batch.packets:
            per_stream = PCAP_BUFFER_PER_STREAM
            total = self._buffered
            for group in batch.packets:
                stream, linktype = group.stream, group.linktype
                st = streams.get(stream)  # type: ignore[call-overload]
                if st is None or st.linktype != linktype:
                    if st is None:
                        st = self._new_stream(stream)  # type: ignore[arg-type]
                        if st is None:
                            self._dropped_packets += group.count
                            continue
                    assert isinstance(stream, int)
                    if st.linktype != linktype and not self._adopt_linktype(
                        stream, st, linktype, group.count
                    ):
                        continue
                assert isinstance(stream, int)
                buf = st.buf
                if buf is None:
                    buf = st.buf = []
                buf += group.parts
                total += group.size
                size = st.buf_bytes + group.size
                st.buf_bytes = size
                if size > per_stream:
                    to_flush.add(stream)
            self._buffered = total

        for stream in batch.closed_streams:
            st = streams.get(stream)
            if st is not None and not st.closed:
                st.closed = True
                self._open_streams -= 1
                if st.buf:
                    to_flush.add(stream)

        for why in batch.invalid:
            self._invalid_entry(why)
        records: list[_Pending] = []
        for name, stream, index, data in batch.entries:
            st = streams.get(stream)
            if st is None:
                st = self._new_stream(stream)
                assert st is not None  # the name's 12 digits are always a valid number
            done = st.entries
            if (
                done
                and index <= (done[-1] & _INDEX_MASK)
                and any(e & _INDEX_MASK == index for e in done)
            ):
                self._invalid_entry(f"{name} was already written; the duplicate is dropped")
                continue
            records.append((st, stream, index, name, data))
            if st.buf:
                to_flush.add(stream)

        if self._buffered > PCAP_BUFFER_TOTAL:
            to_flush.update(n for n, st in streams.items() if st.buf)

        # Retention decides before this batch's files exist, counting what they will add, so
        # that its deletions go into the same I/O phase (off this thread) ahead of them.
        block = self._block
        extra = 0
        for rec in records:
            extra += -(-len(rec[4]) // block) * block  # fileio.disk_usage, once per entry
        for stream in to_flush:
            st = streams[stream]
            size = st.pcap_size
            grown = size + st.buf_bytes + (0 if size else pcapfile.GLOBAL_HEADER_SIZE)
            extra += fileio.disk_usage(grown, block) - fileio.disk_usage(size, block)
        unlinks: list[tuple[int, str]] = []
        if self._evicting or self._usage + extra > self.storage_limit:
            # Streams this batch writes to stay known (their older files may still go).
            keep = to_flush.union(rec[1] for rec in records)
            self._evict(RETENTION_STREAMS_PER_WRITE, unlinks, extra, keep)

        pcap_files: list[tuple[str, bytes, int]] = []
        pcap_streams: list[tuple[int, _Stream, int]] = []
        for stream in to_flush:
            st = streams[stream]
            pcap_streams.append((stream, st, len(st.buf or ()) // 2))
            pcap_files.append(self._take_buffer(stream, st))
            self._clear_buffer(st)

        pending = PendingWrite(
            self._pcaps_fd,
            self._tmp_fd,
            self._entries_fd,
            pcap_files,
            [(rec[3], rec[4]) for rec in records],
            self._helper,
            unlinks,
        )
        pending.store_state = _WriteState(
            records, pcap_streams, batch.closed_streams, errors_before, successes_before
        )
        self._pending = pending
        return pending

    def finish_write(self, pending: PendingWrite) -> None:
        """Phase 3 of a write, in the store's thread: account for the files `run_io()` wrote,
        append their journal lines, wake the readers, apply retention.

        If `run_io()` has not run yet it runs here; if it is running in another thread, this
        waits for it. Finishing a write that is already finished (early, by a later write,
        `flush`, `close` or `pcap_path`) does nothing.
        """
        if pending.finished:
            return
        if pending is not self._pending:
            raise ValueError(
                "finish_write: this PendingWrite is not this store's outstanding write"
            )
        pending.run_io()
        pending.finished = True
        self._pending = None
        state: _WriteState = pending.store_state
        pending.store_state = None
        if pending.helper_failure is not None and self._helper is not None:
            log.warning(
                "%s; this batch and the next ones are written by the worker itself",
                pending.helper_failure,
            )
            self._helper.close()
            self._helper = None
        if pending.unlinks:
            self._doomed_entries.clear()
            self._doomed_pcaps.clear()
            appended = {name for name, _, _ in pending.pcaps}
            for (kind, name), error in zip(pending.unlinks, pending.unlink_errors, strict=True):
                if error is not None:
                    self._unlink_failed(kind, name, error, name in appended)
        for (_, st, packets), (name, data, size), error in zip(
            state.pcap_streams, pending.pcaps, pending.pcap_errors, strict=True
        ):
            self._pcap_written(st, name, len(data), size, packets, error)
        if state.records:
            self._journal_entries(state.records, pending.entry_errors)

        streams = self._streams
        for stream in state.closed_streams:
            closed = streams.get(stream)
            if (
                closed is not None
                and closed.closed
                and not (closed.pcap_size or closed.entries or closed.buf)
            ):
                del streams[stream]  # nothing of it reached the disk (write errors)

        if self._usage > self.storage_limit:
            # Still over the limit (retention in begin_write could not free enough before this
            # batch's files, e.g. one entry bigger than the older files together): the same
            # write gets back under it, deleting here.
            self._evict(None)
        if (
            self._logged_errnos
            and self._write_errors == state.errors_before
            and self._successes > state.successes_before
        ):
            log.warning(
                "store writes under %s succeed again (%d write errors so far: %d entries and "
                "%d packets dropped)",
                self.data_dir,
                self._write_errors,
                self._dropped_entries,
                self._dropped_packets,
            )
            self._logged_errnos.clear()

    def start_io_helper(self) -> bool:
        """Have a helper process make the file system calls of `run_io()` from now on
        (kshark.store.iohelper), so that they run on another core without competing with the
        caller's threads for the GIL. True if it runs (or already did); False if it cannot be
        started, and the calls stay in-process (logged). `close()` stops it."""
        self._check_open()
        if self._helper is None:
            try:
                self._helper = IOHelper(self._pcaps_fd, self._tmp_fd, self._entries_fd)
            except OSError as exc:
                log.warning(
                    "cannot start the store's I/O helper process (%s); files are written by "
                    "the worker itself",
                    exc.strerror or exc,
                )
                return False
        return True

    def _settle(self) -> None:
        """Finish the outstanding write, if there is one (running or waiting for its I/O)."""
        if self._pending is not None:
            self.finish_write(self._pending)

    def _new_stream(self, stream: int) -> _Stream | None:
        if isinstance(stream, bool) or not isinstance(stream, int):
            return None
        if not 0 <= stream <= names.MAX_STREAM:
            return None
        if stream >= self._next_stream:
            # A number this store did not hand out: move the counter past it so it is never
            # handed out later.
            self._next_stream = stream + 1
        st = self._streams[stream] = _Stream(closed=False)
        self._open_streams += 1
        return st

    def _adopt_linktype(self, stream: int, st: _Stream, linktype: int, count: int = 1) -> bool:
        """A pcap has one link type, the first packet's; `count` packets of another are dropped."""
        if st.linktype is None:
            if st.pcap_size == 0:
                st.linktype = linktype
                return True
            head = fileio.read_all(self._pcaps_fd, names.stream_name(stream)) or b""
            st.linktype = pcapfile.linktype_of_header(head[: pcapfile.GLOBAL_HEADER_SIZE])
            if st.linktype == linktype:
                return True
        self._linktype_mismatch += count
        self._dropped_packets += count
        return False

    def _invalid_entry(self, why: str) -> None:
        self._invalid_entries += 1
        if self._invalid_entries == 1 or self._invalid_entries % 10000 == 0:
            log.error("entry not stored (%d so far): %s", self._invalid_entries, why)

    def _take_buffer(self, stream: int, st: _Stream) -> tuple[str, bytes, int]:
        """A stream's buffered packets as one append: (pcap name, bytes, size before)."""
        buf = st.buf
        assert buf
        size = st.pcap_size
        if size == 0:
            assert st.linktype is not None
            buf.insert(0, pcapfile.global_header(st.linktype))
        return names.stream_name(stream), b"".join(buf), size

    def _clear_buffer(self, st: _Stream) -> None:
        self._buffered -= st.buf_bytes
        st.buf = None
        st.buf_bytes = 0

    def _pcap_written(
        self, st: _Stream, name: str, length: int, size: int, packets: int, error: OSError | None
    ) -> None:
        if error is not None:
            self._write_failed("pcap", name, error)
            self._dropped_packets += packets
            return
        self._successes += 1
        new = size + length
        block = self._block
        self._usage += fileio.disk_usage(new, block) - fileio.disk_usage(size, block)
        st.pcap_size = new

    def _flush_stream(self, stream: int, st: _Stream) -> None:
        """Write one stream's buffered packets now, in this thread (flush, pcap_path)."""
        if not st.buf:
            return
        packets = len(st.buf) // 2
        file = self._take_buffer(stream, st)
        self._clear_buffer(st)
        io = PendingWrite(self._pcaps_fd, self._tmp_fd, self._entries_fd, [file], [])
        io.run_io()
        self._pcap_written(st, file[0], len(file[1]), file[2], packets, io.pcap_errors[0])

    def _journal_entries(self, records: list[_Pending], errors: list[OSError | None]) -> None:
        """Announce the entry files run_io wrote, in batch order; account for them."""
        entries_fd = self._entries_fd
        written: list[_Pending] = []
        for rec, error in zip(records, errors, strict=True):
            if error is not None:
                self._write_failed("entry file", rec[3], error)
                self._dropped_entries += 1
            else:
                written.append(rec)
        if not written:
            return
        done, delta, error = self._journal.append([rec[3].encode() for rec in written])
        self._usage += delta
        if error is not None:
            self._write_failed("journal", "journal/", error)
            for rec in written[done:]:
                # Not announced, so never seen: remove it rather than leave an entry that only
                # /item could find.
                fileio.unlink_quietly(entries_fd, rec[3])
                self._dropped_entries += 1
        if not done:
            return
        self._successes += 1
        block = self._block
        recent = self._recent
        seq = self._journal.last_seq - done + 1
        added = 0
        used = 0
        # Once per entry, so written out: fileio.disk_usage inline, totals added after the loop.
        for st, stream, index, _, data in written[:done]:
            size = len(data)
            usage = -(-size // block) * block
            st.entry_usage += usage
            used += usage
            st.entries.append(seq << _SEQ_SHIFT | index)
            recent[seq] = (stream, data)
            added += size
            seq += 1
        self._usage += used
        self._recent_bytes += added
        # Entries per journal segment: a batch spans one segment, rarely two.
        live = self._segment_live
        first = seq - done
        while first < seq:
            segment = segment_of(first)
            upto = min(seq, segment_end(first) + 1)
            live[segment] = live.get(segment, 0) + upto - first
            first = upto
        self._trim_recent()
        self._entries_written += done
        self._entries_on_disk += done
        if self._event is not None:
            event, self._event = self._event, None
            event.set()

    def _trim_recent(self) -> None:
        """Drop the oldest cached entries past either bound. The cache holds every seq from
        _recent_low up except those retention deleted, so the oldest is found by counting up
        from there (each seq is passed once), not by `next(iter(dict))`, which walks over every
        slot already popped from the dict's front."""
        recent = self._recent
        seq = self._recent_low
        last = self._journal.last_seq
        while (
            recent
            and seq <= last
            and (len(recent) > RECENT_ENTRIES_MAX or self._recent_bytes > RECENT_BYTES_MAX)
        ):
            hit = recent.pop(seq, None)
            if hit is not None:
                self._recent_bytes -= len(hit[1])
            seq += 1
        self._recent_low = seq

    def _write_failed(self, what: str, name: str, exc: OSError) -> None:
        """Count it; say it once per errno until writes succeed again."""
        self._write_errors += 1
        code = exc.errno or 0
        if code in self._logged_errnos:
            return
        self._logged_errnos.add(code)
        if code == errno.ENOSPC:
            hint = (
                f"The disk is full: free space on it, or lower --storage-limit (now "
                f"{self.storage_limit} bytes; the store holds {self._usage})."
            )
        elif code == errno.EDQUOT:
            hint = "The disk quota is exhausted: raise it, or lower --storage-limit."
        elif code == errno.EIO:
            hint = "The disk reports an I/O error: check the device."
        elif code == errno.EROFS:
            hint = "The filesystem is read-only."
        else:
            hint = ""
        log.error(
            "cannot write the %s %s under %s: %s [%s]. %s The worker keeps running; what cannot "
            "be written is dropped and counted (write_errors, dropped_entries, dropped_packets) "
            "and every later write tries again.",
            what,
            name,
            self.data_dir,
            exc.strerror or exc,
            errno.errorcode.get(code, str(code)),
            hint,
        )

    def flush(self) -> None:
        """Write every buffered packet to its pcap (after finishing an outstanding write)."""
        self._check_open()
        self._settle()
        for stream, st in list(self._streams.items()):
            if st.buf:
                self._flush_stream(stream, st)

    # -- retention -----------------------------------------------------------------------

    def _evict(
        self,
        budget: int | None,
        plan: list[tuple[int, str]] | None = None,
        extra: int = 0,
        keep: Set[int] = frozenset(),
    ) -> None:
        """Delete the oldest streams' files until usage is under RETENTION_TARGET of the limit.

        Oldest = lowest stream number (numbers are handed out in the order connections are
        first seen as HTTP). Closed connections go first; a connection still open goes only
        when every closed one is gone (its pcap then restarts with the packets that follow).

        With `plan`, the files are not deleted here: their names are added to it for the
        write's I/O phase, and the store counts them as gone at once (readers skip them).
        `extra`: usage the write being begun will add. `keep`: streams it writes to, which
        stay known (their older files may still go).
        """
        limit = self.storage_limit
        target = int(limit * RETENTION_TARGET)
        if not self._evicting:
            if self._usage + extra <= limit:
                return
            self._evicting = True
            self._evict_order = self._eviction_order()
            self._evict_pos = 0
        deleted: set[int] = set()
        recomputed = False
        spent = 0
        while self._usage + extra > target:
            if budget is not None and spent >= budget and self._usage + extra <= limit:
                break
            if self._evict_pos >= len(self._evict_order):
                if recomputed:
                    break  # nothing left that can be deleted
                recomputed = True
                self._evict_order = self._eviction_order()
                self._evict_pos = 0
                if not self._evict_order:
                    break
            stream = self._evict_order[self._evict_pos]
            self._evict_pos += 1
            st = self._streams.get(stream)
            if st is None or not (st.pcap_size or st.entries):
                continue
            self._delete_stream(stream, st, plan, keep)
            deleted.add(stream)
            spent += 1
        if self._usage + extra <= target or (
            recomputed and self._evict_pos >= len(self._evict_order)
        ):
            self._evicting = False
            self._evict_order = []
        if deleted:
            self._forget_recent(deleted)
            self._drop_old_segments()

    def _eviction_order(self) -> list[int]:
        closed: list[int] = []
        still_open: list[int] = []
        for stream, st in self._streams.items():
            if st.pcap_size or st.entries:
                (closed if st.closed else still_open).append(stream)
        closed.sort()
        still_open.sort()
        return closed + still_open

    def _delete_stream(
        self,
        stream: int,
        st: _Stream,
        plan: list[tuple[int, str]] | None = None,
        keep: Set[int] = frozenset(),
    ) -> None:
        """Delete a stream's pcap and entry files: now, or (with `plan`) in the I/O phase of
        the write being begun, counting them as deleted now."""
        block = self._block
        if st.pcap_size:
            name = names.stream_name(stream)
            if plan is None:
                error = fileio.remove(self._pcaps_fd, name)
            else:
                plan.append((fileio.UNLINK_PCAP, name))
                self._doomed_pcaps.add(stream)
                error = None
            if error is None:
                self._usage -= fileio.disk_usage(st.pcap_size, block)
                st.pcap_size = 0
            else:
                self._write_failed("pcap (deleting)", name, error)
        kept: list[int] = []
        live = self._segment_live
        for packed in st.entries:
            name = names.entry_file_name(stream, packed & _INDEX_MASK)
            if plan is None:
                error = fileio.remove(self._entries_fd, name)
                if error is not None:
                    self._write_failed("entry file (deleting)", name, error)
                    kept.append(packed)
                    continue
            else:
                plan.append((fileio.UNLINK_ENTRY, name))
                self._doomed_entries.add(name.encode())
            self._deleted_entries += 1
            self._entries_on_disk -= 1
            seq = packed >> _SEQ_SHIFT
            if seq:
                live[segment_of(seq)] -= 1
            else:
                self._legacy_entries -= 1
        if not kept:
            self._usage -= st.entry_usage
            st.entry_usage = 0
        st.entries = kept
        self._deleted_streams += 1
        if st.closed and not kept and not st.pcap_size and not st.buf and stream not in keep:
            del self._streams[stream]

    def _unlink_failed(self, kind: int, name: str, error: OSError, replaced: bool) -> None:
        """A deletion planned by retention failed in the I/O phase. The file stays on disk,
        counted in the usage again but no longer part of any stream (the next start's scan
        finds it); a pcap the same write restarted (`replaced`) is that write's new file."""
        pcap = kind == fileio.UNLINK_PCAP
        self._write_failed("pcap (deleting)" if pcap else "entry file (deleting)", name, error)
        if replaced:
            return
        try:
            size = os.stat(name, dir_fd=self._pcaps_fd if pcap else self._entries_fd).st_size
        except OSError:
            return  # gone after all
        self._usage += fileio.disk_usage(size, self._block)
        if not pcap:
            self._entries_on_disk += 1
            self._deleted_entries -= 1

    def _drop_old_segments(self) -> None:
        """Delete the journal segments none of whose entries is still on disk (never the one
        being appended to): their lines can only say "missed", which seq arithmetic says too."""
        journal = self._journal
        live = self._segment_live
        for segment in journal.segments:
            if segment >= journal.current_segment:
                break
            if live.get(segment, 0) or (
                self._legacy_entries and segment <= self._legacy_last_segment
            ):
                continue
            freed = journal.delete_segment(segment)
            if freed is not None:
                live.pop(segment, None)
                self._usage -= freed
                self._deleted_segments += 1

    def _forget_recent(self, deleted: set[int]) -> None:
        recent = self._recent
        gone = [seq for seq, (stream, _) in recent.items() if stream in deleted]
        for seq in gone:
            self._recent_bytes -= len(recent.pop(seq)[1])

    # -- reading -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the newest entry (0: none yet). Seqs start at 1 and only grow."""
        return self._journal.last_seq

    def read_after(
        self, seq: int, max_items: int, max_bytes: int | None = None
    ) -> tuple[list[tuple[int, bytes]], int]:
        """Entries after `seq` in write order: ([(seq, entry JSON bytes)], missed).

        `missed` counts entries in the range walked whose files retention deleted; they are
        not returned. Items and missed together cover seq + 1 … seq + len(items) + missed
        exactly, so the caller's next cursor is `seq + len(items) + missed` (≥ the last item's
        seq). At most `max_items` items; any number of missed entries may be skipped.

        With `max_bytes`, the items' bytes stay within it: the read stops before an entry that
        would take the total past it, unless that entry is the first (a caller always gets an
        entry when one is there). So what one read holds is at most max(max_bytes, one entry).
        """
        self._check_open()
        items: list[tuple[int, bytes]] = []
        missed = 0
        if max_items <= 0:
            return items, missed
        room = max_bytes if max_bytes is not None else -1  # bytes left; -1: unbounded
        last = self._journal.last_seq
        s = max(seq, 0) + 1
        recent_low = self._recent_low
        streams = self._streams
        entries_fd = self._entries_fd
        doomed = self._doomed_entries
        while s <= last and len(items) < max_items:
            if s >= recent_low:
                recent = self._recent
                while s <= last and len(items) < max_items:
                    hit = recent.get(s)
                    if hit is None:
                        missed += 1
                    else:
                        cached = hit[1]
                        if room >= 0:
                            if len(cached) > room and items:
                                return items, missed
                            room = max(0, room - len(cached))
                        items.append((s, cached))
                    s += 1
                break
            want = min(max(max_items - len(items), _READ_CHUNK_LINES), recent_low - s)
            batch = self._journal.read_names(s, want)
            if batch is None:  # the whole journal segment is gone: so are its entries
                end = min(segment_end(s), recent_low - 1)
                missed += end - s + 1
                s = end + 1
                continue
            if not batch:
                break
            for name in batch:
                if len(items) >= max_items:
                    break
                data = None
                if name:
                    stream = names.parse_entry_file_bytes(name)
                    if stream is not None and stream in streams and name not in doomed:
                        data = fileio.read_all(entries_fd, name)
                if data is None:
                    missed += 1
                else:
                    if room >= 0:
                        # Its size is known once read; read again by the next call.
                        if len(data) > room and items:
                            return items, missed
                        room = max(0, room - len(data))
                    items.append((s, data))
                s += 1
        return items, missed

    def seq_of_id(self, entry_id_or_file: str) -> int | None:
        """The seq of an entry named by a full id, a short id or an entryFile (see names.py);
        None if the journal has no such entry. Works for entries retention deleted as long as
        their journal segment is still on disk, so an old cursor still resumes in place."""
        self._check_open()
        name = names.entry_file_from_id(entry_id_or_file)
        if name is None:
            return None
        stream, index = int(name[:12]), int(name[name.index("-") + 1 : name.index("_entry")])
        st = self._streams.get(stream)
        if st is not None:
            for packed in st.entries:
                if packed & _INDEX_MASK == index and packed >> _SEQ_SHIFT:
                    return packed >> _SEQ_SHIFT
        # Deleted, from before this start, or unknown: the journal, oldest segment first
        # (deleted entries are the oldest).
        return self._journal.find(name.encode(), self._journal.first_segment)

    def entry_bytes(self, stream: int, index: int) -> bytes | None:
        """One entry's JSON as stored, or None (unknown, invalid numbers, or deleted)."""
        self._check_open()
        number = names.parse_stream(stream)
        if number is None or not names.valid_index(index):
            return None
        name = names.entry_file_name(number, index)
        if self._doomed_entries and name.encode() in self._doomed_entries:
            return None  # retention deletes it in the write in progress
        return fileio.read_all(self._entries_fd, name)

    def pcap_path(self, stream: int | str) -> Path | None:
        """The path of a connection's pcap inside the data directory, or None if it has none.

        Takes the number or its text (`"000000000007.pcap"`, `"7"`). Buffered packets of that
        stream are written first, so the file holds every packet received so far.
        """
        self._check_open()
        number = names.parse_stream(stream)
        if number is None:
            return None
        st = self._streams.get(number)
        pending = self._pending
        if pending is not None and (
            number in self._doomed_pcaps
            or (st is not None and any(rec[1] is st for rec in pending.store_state.pcap_streams))
        ):
            # Its pcap is being appended to or deleted in the write's I/O phase: wait for that
            # (at most one batch's I/O), so the caller gets the file as it then is, its size
            # ending at a whole record.
            self._settle()
        if st is not None and st.buf:
            self._flush_stream(number, st)
        name = names.stream_name(number)
        try:
            mode = os.stat(name, dir_fd=self._pcaps_fd, follow_symlinks=False).st_mode
        except OSError:
            return None
        # Only a regular file the store wrote: a symlink planted there could point anywhere.
        return self.data_dir / "pcaps" / name if stat.S_ISREG(mode) else None

    async def wait_for_seq(self, seq: int) -> None:
        """Return once last_seq > seq (woken by write(); always a Trio checkpoint)."""
        if self._journal.last_seq > seq:
            await trio.lowlevel.checkpoint()
            return
        while self._journal.last_seq <= seq:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()

    @property
    def stats(self) -> dict[str, int]:
        return {
            "entries_written": self._entries_written,
            "entries_on_disk": self._entries_on_disk,
            "last_seq": self._journal.last_seq,
            "streams": len(self._streams),
            "open_streams": self._open_streams,
            "next_stream": self._next_stream,
            "bytes_used": self._usage,
            "storage_limit": self.storage_limit,
            "deleted_streams": self._deleted_streams,
            "deleted_entries": self._deleted_entries,
            "deleted_journal_segments": self._deleted_segments,
            "journal_segments": len(self._journal.segments),
            "write_errors": self._write_errors,
            "dropped_entries": self._dropped_entries,
            "dropped_packets": self._dropped_packets,
            "invalid_entries": self._invalid_entries,
            "pcap_linktype_mismatch": self._linktype_mismatch,
            "pcap_buffered_bytes": self._buffered,
        }

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Write buffered packets, record the exact counter (a clean restart skips no number),
        release the directory. Idempotent."""
        if self._closed:
            return
        self._settle()
        self.flush()
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        if self._next_stream < self._reserved:
            self._reserve(self._next_stream)
        self._journal.close()
        self._closed = True
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store of {self.data_dir} is closed")

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.data_dir)!r}, last_seq={self.last_seq}, bytes={self._usage})"
