"""Writing: a pipeline batch into packets buffered per connection, pcap appends, entry files
and their journal lines, in three phases (begin, I/O in any thread, finish); see core.py and
docs/store.md, "Writing from two threads"."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kshark.store import fileio, names, pcapfile
from kshark.store.batch import PreparedBatch
from kshark.store.iohelper import IOHelper
from kshark.store.pending import PendingWrite
from kshark.store.retention import Retention
from kshark.store.state import INDEX_MASK, SEQ_SHIFT, StreamFiles

if TYPE_CHECKING:
    from kshark.store.batch import StoreOutput

log = logging.getLogger("kshark.store")

# An entry ready to be written: (its stream, stream number, index, entryFile, JSON bytes).
Pending = tuple[StreamFiles, int, int, str, bytes]


class WriteState:
    """What finish_write needs of its begin_write, kept on the PendingWrite meanwhile."""

    __slots__ = ("closed_streams", "errors_before", "pcap_streams", "records", "successes_before")

    def __init__(
        self,
        records: list[Pending],
        pcap_streams: list[tuple[int, StreamFiles, int]],
        closed_streams: list[int],
        errors_before: int,
        successes_before: int,
    ) -> None:
        self.records = records
        self.pcap_streams = pcap_streams  # (number, stream, packets) per PendingWrite.pcaps
        self.closed_streams = closed_streams
        self.errors_before = errors_before
        self.successes_before = successes_before


class Writer(Retention):
    """The writing part of a Store (state.py); retention runs inside its writes."""

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
            per_stream = self._limits.pcap_buffer_per_stream
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
        records: list[Pending] = []
        for name, stream, index, data in batch.entries:
            st = streams.get(stream)
            if st is None:
                st = self._new_stream(stream)
                assert st is not None  # the name's 12 digits are always a valid number
            done = st.entries
            if (
                done
                and index <= (done[-1] & INDEX_MASK)
                and any(e & INDEX_MASK == index for e in done)
            ):
                self._invalid_entry(f"{name} was already written; the duplicate is dropped")
                continue
            records.append((st, stream, index, name, data))
            if st.buf:
                to_flush.add(stream)

        if self._buffered > self._limits.pcap_buffer_total:
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
            self._evict(self._limits.retention_streams_per_write, unlinks, extra, keep)

        pcap_files: list[tuple[str, bytes, int]] = []
        pcap_streams: list[tuple[int, StreamFiles, int]] = []
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
        pending.store_state = WriteState(
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
        state: WriteState = pending.store_state
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

    def _new_stream(self, stream: int) -> StreamFiles | None:
        if isinstance(stream, bool) or not isinstance(stream, int):
            return None
        if not 0 <= stream <= names.MAX_STREAM:
            return None
        if stream >= self._next_stream:
            # A number this store did not hand out: move the counter past it so it is never
            # handed out later.
            self._next_stream = stream + 1
        st = self._streams[stream] = StreamFiles(closed=False)
        self._open_streams += 1
        return st

    def _adopt_linktype(self, stream: int, st: StreamFiles, linktype: int, count: int = 1) -> bool:
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

    def _take_buffer(self, stream: int, st: StreamFiles) -> tuple[str, bytes, int]:
        """A stream's buffered packets as one append: (pcap name, bytes, size before)."""
        buf = st.buf
        assert buf
        size = st.pcap_size
        if size == 0:
            assert st.linktype is not None
            buf.insert(0, pcapfile.global_header(st.linktype))
        return names.stream_name(stream), b"".join(buf), size

    def _clear_buffer(self, st: StreamFiles) -> None:
        self._buffered -= st.buf_bytes
        st.buf = None
        st.buf_bytes = 0

    def _pcap_written(
        self,
        st: StreamFiles,
        name: str,
        length: int,
        size: int,
        packets: int,
        error: OSError | None,
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

    def _flush_stream(self, stream: int, st: StreamFiles) -> None:
        """Write one stream's buffered packets now, in this thread (flush, pcap_path)."""
        if not st.buf:
            return
        packets = len(st.buf) // 2
        file = self._take_buffer(stream, st)
        self._clear_buffer(st)
        io = PendingWrite(self._pcaps_fd, self._tmp_fd, self._entries_fd, [file], [])
        io.run_io()
        self._pcap_written(st, file[0], len(file[1]), file[2], packets, io.pcap_errors[0])

    def _journal_entries(self, records: list[Pending], errors: list[OSError | None]) -> None:
        """Announce the entry files run_io wrote, in batch order; account for them."""
        entries_fd = self._entries_fd
        written: list[Pending] = []
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
            st.entries.append(seq << SEQ_SHIFT | index)
            recent[seq] = (stream, data)
            added += size
            seq += 1
        self._usage += used
        self._recent_bytes += added
        # Entries per journal segment: a batch spans one segment, rarely two.
        live = self._segment_live
        journal = self._journal
        first = seq - done
        while first < seq:
            segment = journal.segment_of(first)
            upto = min(seq, journal.segment_end(first) + 1)
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
        max_entries = self._limits.recent_entries_max
        max_bytes = self._limits.recent_bytes_max
        while (
            recent and seq <= last and (len(recent) > max_entries or self._recent_bytes > max_bytes)
        ):
            hit = recent.pop(seq, None)
            if hit is not None:
                self._recent_bytes -= len(hit[1])
            seq += 1
        self._recent_low = seq

    def flush(self) -> None:
        """Write every buffered packet to its pcap (after finishing an outstanding write)."""
        self._check_open()
        self._settle()
        for stream, st in list(self._streams.items()):
            if st.buf:
                self._flush_stream(stream, st)
