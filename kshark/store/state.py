"""What the parts of a Store share: its accounting of the data directory, one connection's
record (`StreamFiles`), and the error bookkeeping every part reports to.

`Store` (core.py) is one object assembled from the classes of its parts, each in its own module:
`Retention` (retention.py), `Writer` (writer.py, which begins retention in its writes), `Reader`
(reader.py), on top of `StoreState` here; opening is recovery.py. They are one object because
they work on the same accounting (usage, streams, journal) in one thread, and a write, a
retention pass and a read see each other's changes at once. `StoreState` declares that state,
so each part's reader can see what it touches without the others' code.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import trio

    from kshark.store.iohelper import IOHelper
    from kshark.store.journal import Journal
    from kshark.store.limits import StoreLimits
    from kshark.store.pending import PendingWrite

log = logging.getLogger("kshark.store")

# A stream's entry files are kept as one int each, `seq << SEQ_SHIFT | index`: one small object
# per entry instead of two. Indexes are < 10**9 < 2**30 (names.py).
SEQ_SHIFT = 30
INDEX_MASK = (1 << SEQ_SHIFT) - 1


class StoreError(Exception):
    """The data directory cannot be used (startup) or the store was used after close()."""


class StoreLockedError(StoreError):
    """Another process has this data directory open."""


class StreamFiles:
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
        # Its entry files on disk, each as `seq << SEQ_SHIFT | index` (seq 0: found on disk at
        # startup, seq not read).
        self.entries: list[int] = []
        self.linktype: int | None = None
        self.pcap_size = 0  # bytes in its pcap file (0: no file)


class StoreState:
    """The attributes the parts of a Store share (set by Store.__init__), and the error
    bookkeeping they all report write failures to."""

    data_dir: Path
    storage_limit: int
    _limits: StoreLimits
    _closed: bool
    # Directory descriptors (the lock file's too, in _fds, closed by close()).
    _fds: list[int]
    _entries_fd: int
    _pcaps_fd: int
    _journal_fd: int
    _state_fd: int
    _tmp_fd: int
    _block: int  # the file system's allocation unit: disk usage is counted in it
    _journal: Journal
    _streams: dict[int, StreamFiles]
    # Journal segment → entries written since this start that are still on disk; a segment
    # whose count reaches 0 (and that holds no legacy entry) can be deleted.
    _segment_live: dict[int, int]
    # Entries from before this start pin every journal segment that existed then, until
    # retention has deleted them all (they are the oldest, so they go first).
    _legacy_entries: int
    _legacy_last_segment: int
    _usage: int  # bytes of disk the data directory uses, as the store counts them
    _entries_on_disk: int
    _next_stream: int
    _open_streams: int
    _buffered: int  # bytes of packets buffered in all streams
    _pending: PendingWrite | None  # the write begun and not yet finished
    _helper: IOHelper | None  # start_io_helper()
    # The newest entries' bytes: seq → (stream, entry bytes); every seq from _recent_low to
    # last_seq is in it unless retention deleted it (StoreLimits.recent_entries_max).
    _recent: dict[int, tuple[int, bytes]]
    _recent_bytes: int
    _recent_low: int
    _event: trio.Event | None  # set when a write journals entries (wait_for_seq)
    # Files retention has planned for the outstanding write's I/O phase: counted as deleted
    # already, so readers must not serve them meanwhile.
    _doomed_entries: set[bytes]
    _doomed_pcaps: set[int]
    _logged_errnos: set[int]
    _entries_written: int
    _deleted_streams: int
    _deleted_entries: int
    _deleted_segments: int
    _write_errors: int
    _dropped_entries: int
    _dropped_packets: int
    _invalid_entries: int
    _linktype_mismatch: int
    _successes: int  # files written; tells a recovery from a write with nothing to do

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

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store of {self.data_dir} is closed")
