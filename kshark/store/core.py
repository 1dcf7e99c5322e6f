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

The parts, each in its module: opening a directory (recovery.py), writing (writer.py), retention
(retention.py), reading (reader.py), the state they share (state.py) and the bounds they keep
(limits.py, `StoreLimits`). This module assembles them and owns the stream counter and closing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from kshark.store import fileio, names, recovery
from kshark.store.identity import store_id
from kshark.store.journal import Journal
from kshark.store.limits import DEFAULT_STORAGE_LIMIT, StoreLimits
from kshark.store.reader import Reader
from kshark.store.state import StoreError
from kshark.store.writer import Writer

if TYPE_CHECKING:
    from types import TracebackType

_SUBDIRS = ("entries", "pcaps", "journal", "state", "tmp")


class Store(Writer, Reader):
    """Entry files, per-connection pcaps and the journal under one data directory."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        storage_limit: int = DEFAULT_STORAGE_LIMIT,
        limits: StoreLimits | None = None,
    ) -> None:
        if storage_limit <= 0:
            raise ValueError(f"storage_limit must be positive, not {storage_limit}")
        self.data_dir = Path(data_dir).absolute()
        self.storage_limit = int(storage_limit)
        self._limits = limits = limits or StoreLimits()
        self._closed = True  # until fully open: close() then has nothing to undo
        self._pending = None
        self._helper = None
        self._fds = []
        try:
            for sub in _SUBDIRS:
                (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
            self._fds.append(recovery.lock_data_dir(self.data_dir))
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
            self._journal = Journal(
                self._journal_fd, self._block, limits.segment_lines, limits.index_cache_segments
            )
            found = recovery.scan(
                self._pcaps_fd, self._entries_fd, self._journal_fd, self._journal, self._block
            )
            self._next_stream = recovery.resume_counter(
                self._state_fd, found.streams, self._journal
            )
        except StoreError:
            self._close_fds()
            raise
        except OSError as exc:
            self._close_fds()
            raise StoreError(
                f"cannot use the data directory {self.data_dir}: {exc.strerror or exc}"
            ) from exc
        self._streams = found.streams
        self._usage = self._journal.bytes_used + found.usage
        self._entries_on_disk = found.entries
        self._segment_live = {}
        self._legacy_entries = found.entries
        self._legacy_last_segment = self._journal.current_segment
        self._reserved = self._next_stream  # the first allocation reserves a block
        self._closed = False
        self._open_streams = 0
        self._buffered = 0
        self._recent = {}
        self._recent_bytes = 0
        self._recent_low = self._journal.last_seq + 1
        self._event = None
        self._evicting = False
        self._doomed_entries = set()
        self._doomed_pcaps = set()
        self._evict_order = []
        self._evict_pos = 0
        self._logged_errnos = set()
        self._entries_written = 0
        self._deleted_streams = 0
        self._deleted_entries = 0
        self._deleted_segments = 0
        self._write_errors = 0
        self._dropped_entries = 0
        self._dropped_packets = 0
        self._invalid_entries = 0
        self._linktype_mismatch = 0
        self._successes = 0
        self._drop_old_segments()
        if self._usage > self.storage_limit:
            self._evict(None)  # the limit was lowered since the last run

    def _open_dir(self, sub: str) -> int:
        fd = fileio.open_dir(self.data_dir / sub)
        self._fds.append(fd)
        return fd

    # -- the stream counter --------------------------------------------------------------

    def allocate_stream(self) -> int:
        """The next stream number (from 1; never 0, which the pipeline reads as "none yet")."""
        self._check_open()
        n = self._next_stream
        if n > names.MAX_STREAM:
            raise StoreError("stream numbers exhausted (12 digits)")
        if n >= self._reserved:
            self._reserve(n + self._limits.reservation_block)
        self._next_stream = n + 1
        return n

    def _reserve(self, mark: int) -> bool:
        try:
            fileio.replace_durably(self._state_fd, recovery.STATE_RESERVATION, b"%d\n" % mark)
        except OSError as exc:
            # Keep handing out numbers: the ones that reach disk are found again by the scan at
            # the next start. The reservation is retried at the next allocation.
            self._write_failed("stream reservation", f"state/{recovery.STATE_RESERVATION}", exc)
            return False
        self._reserved = mark
        return True

    # -- reading (a pcap: it may have to wait for the write in progress) --------------------

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
