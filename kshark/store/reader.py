"""Reading: entries in write order from any position (the newest from memory, older ones from
their files through the journal), one entry by name, and waiting for the next write. Plain calls
in the store's thread that never wait for the writer; docs/store.md, "Reading"."""

from __future__ import annotations

import trio

from kshark.store import fileio, names
from kshark.store.state import INDEX_MASK, SEQ_SHIFT, StoreState

# Lines read from the journal at a time by `read_after` when skipping deleted entries.
_READ_CHUNK_LINES = 1024


class Reader(StoreState):
    """The reading part of a Store (state.py)."""

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
                # A deliberate fast path: the newest entries, from memory, for every live
                # follower. The byte budget below is the file loop's, inlined in both.
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
                end = min(self._journal.segment_end(s), recent_low - 1)
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
                if packed & INDEX_MASK == index and packed >> SEQ_SHIFT:
                    return packed >> SEQ_SHIFT
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

    async def wait_for_seq(self, seq: int) -> None:
        """Return once last_seq > seq (woken by write(); always a Trio checkpoint)."""
        if self._journal.last_seq > seq:
            await trio.lowlevel.checkpoint()
            return
        while self._journal.last_seq <= seq:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
