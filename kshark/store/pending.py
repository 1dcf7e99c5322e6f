"""One batch's file work, cut off from the Store so that it can run in another thread.

`Store.begin_write` (the store's thread) decides everything: which packets go to which pcap at
what offset, the entry files' names and bytes, what retention deletes. A `PendingWrite` then
holds only names, bytes and the store's directory descriptors, and `run_io()` performs the
system calls (the deletions, then the pcap appends, then the entry files) and records what
failed. It reads and writes no Store state, so it can run in a worker thread while the store's
thread parses the next batch; `Store.finish_write` (the store's thread again) journals what was
written and accounts for it.

Everything that cleans up after a failed call (a pcap cut back to its last record, a new pcap
that could not get its first record removed, a temp entry file removed) happens inside
`run_io()`, next to the call, so the directory is never left half-written between the phases.

The system calls are made in this process, or by the store's I/O helper process when it has one
(kshark.store.iohelper): a Python thread making them here would need the GIL back after every
call, and a parser holding the GIL makes it wait up to the switch interval each time.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING, Any

from kshark.store import fileio

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kshark.store.iohelper import IOHelper

# The outcome of a call not (yet) made: a run_io stopped by an unexpected exception leaves the
# rest of its batch counted as failed instead of unaccounted.
NOT_ATTEMPTED = OSError(errno.EIO, "the write was not attempted")


class PendingWrite:
    """The files of one batch: `run_io()` writes them (in any thread, once), then the store's
    `finish_write` (its own thread) journals and accounts for them.

    `unlinks`: (fileio.UNLINK_PCAP or UNLINK_ENTRY, file name) per file retention deletes,
    done first; `pcaps`: (file name, bytes, size before) per pcap append; `entries`: (file
    name, bytes) per entry file. After `run_io()`, `unlink_errors` / `pcap_errors` /
    `entry_errors` line up with them: None for a file deleted or written, else the OSError.
    """

    __slots__ = (
        "_entries_fd",
        "_helper",
        "_lock",
        "_pcaps_fd",
        "_ran",
        "_request",
        "_tmp_fd",
        "entries",
        "entry_errors",
        "finished",
        "helper_failure",
        "pcap_errors",
        "pcaps",
        "store_state",
        "unlink_errors",
        "unlinks",
    )

    def __init__(
        self,
        pcaps_fd: int,
        tmp_fd: int,
        entries_fd: int,
        pcaps: Sequence[tuple[str, bytes, int]],
        entries: Sequence[tuple[str, bytes]],
        helper: IOHelper | None = None,
        unlinks: Sequence[tuple[int, str]] = (),
    ) -> None:
        self._pcaps_fd = pcaps_fd
        self._tmp_fd = tmp_fd
        self._entries_fd = entries_fd
        self._helper = helper
        # Encoded here, in the store's thread (see IOHelper.encode_request).
        self._request = (
            helper.encode_request(pcaps, entries, unlinks)
            if helper is not None and (pcaps or entries or unlinks)
            else None
        )
        self.pcaps = pcaps
        self.entries = entries
        self.pcap_errors: list[OSError | None] = [NOT_ATTEMPTED] * len(pcaps)
        self.entry_errors: list[OSError | None] = [NOT_ATTEMPTED] * len(entries)
        self.unlinks = unlinks
        self.unlink_errors: list[OSError | None] = [NOT_ATTEMPTED] * len(unlinks)
        # Set when the helper process failed and the batch was written here instead.
        self.helper_failure: str | None = None
        # run_io runs once: the first caller does the work; a second one (the store's thread
        # finishing this write early) waits until it is done.
        self._lock = threading.Lock()
        self._ran = False
        self.finished = False  # set by Store.finish_write
        self.store_state: Any = None  # what finish_write needs; only the store's thread uses it

    @property
    def ran(self) -> bool:
        """True once run_io() has completed."""
        return self._ran

    def run_io(self) -> None:
        """Write this batch's files. Thread-safe and idempotent: a second call waits for the
        first to finish. OSErrors are recorded in unlink_errors / pcap_errors / entry_errors,
        never raised."""
        with self._lock:
            if self._ran:
                return
            try:
                if not (self.pcaps or self.entries or self.unlinks):
                    return
                helper = self._helper
                request, self._request = self._request, None
                if helper is not None and request is not None:
                    try:
                        self.pcap_errors, self.entry_errors, self.unlink_errors = helper.exchange(
                            request
                        )
                        return
                    except OSError as exc:  # the helper is gone: the batch is done here
                        self.helper_failure = str(exc)
                # Redoing what a dead helper may have done in part is safe: a file already
                # deleted counts as deleted, appends write at their offsets, entry files are
                # replaced by the same bytes.
                self.pcap_errors, self.entry_errors, self.unlink_errors = fileio.write_files(
                    self._pcaps_fd,
                    self._tmp_fd,
                    self._entries_fd,
                    self.pcaps,
                    self.entries,
                    self.unlinks,
                )
            finally:
                self._ran = True
