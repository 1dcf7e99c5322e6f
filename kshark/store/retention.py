"""Retention: the oldest connections' files go once the data directory passes its limit.

Oldest = lowest stream number (numbers are handed out in the order connections are first seen
as HTTP); closed connections before open ones. Deleting goes down to a target below the limit
(StoreLimits.retention_target), a bounded number of connections per write
(retention_streams_per_write), and journal segments none of whose entries remain go with them.
A write begun past the limit plans its deletions into its own I/O phase (off the store's
thread); docs/store.md, "Retention".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kshark.store import fileio, names
from kshark.store.state import INDEX_MASK, SEQ_SHIFT, StoreState, StreamFiles

if TYPE_CHECKING:
    from collections.abc import Set


class Retention(StoreState):
    """The retention part of a Store (state.py)."""

    _evicting: bool  # a burst is under way: it goes on to the target over the next writes
    _evict_order: list[int]  # streams in the order they go, computed when a burst starts
    _evict_pos: int

    def _evict(
        self,
        budget: int | None,
        plan: list[tuple[int, str]] | None = None,
        extra: int = 0,
        keep: Set[int] = frozenset(),
    ) -> None:
        """Delete the oldest streams' files until usage is under the retention target
        (StoreLimits.retention_target) of the limit.

        Oldest = lowest stream number (numbers are handed out in the order connections are
        first seen as HTTP). Closed connections go first; a connection still open goes only
        when every closed one is gone (its pcap then restarts with the packets that follow).

        With `plan`, the files are not deleted here: their names are added to it for the
        write's I/O phase, and the store counts them as gone at once (readers skip them).
        `extra`: usage the write being begun will add. `keep`: streams it writes to, which
        stay known (their older files may still go).
        """
        limit = self.storage_limit
        target = int(limit * self._limits.retention_target)
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
        st: StreamFiles,
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
            name = names.entry_file_name(stream, packed & INDEX_MASK)
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
            seq = packed >> SEQ_SHIFT
            if seq:
                live[self._journal.segment_of(seq)] -= 1
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
