"""The journal: the write order of entries, as text lines in fixed-size segments.

One line per entry, `"<seq> <entryFile>\\n"`, seq starting at 1 and dense (every seq from 1 to
`last_seq` has exactly one line). Segment files hold `segment_lines` lines each (65536: part of
the on-disk format, StoreLimits) and are named by their number, `(seq - 1) // segment_lines`,
with 12 digits: seq 1..65536 are in
`000000000000.log`, 65537.. in `000000000001.log`. Because seqs are dense and segments fixed, the
segment and the line of any seq are arithmetic; only the byte offset of a line needs an index.

Memory: the newest segment's line offsets are kept (4 bytes a line, at most 256 KiB); the offsets
of older segments are rebuilt on demand by reading that segment once (≈ 3 MB) and kept for the
`index_cache_segments` most recently used. Nothing holds the journal itself in memory.

Appends are single `os.write` calls on an `O_APPEND` descriptor; a failed append is cut back to
the last complete line, so the file never ends in half a line (a crash mid-write can leave one;
opening the journal removes it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from array import array
from collections import OrderedDict
from itertools import accumulate, islice

from kshark.store import fileio

log = logging.getLogger("kshark.store")

_SEGMENT_RE = re.compile(r"([0-9]{12})\.log")


def segment_name(segment: int) -> str:
    return f"{segment:012d}.log"


def _offsets_of(data: bytes) -> array[int]:
    """Start offset of every line, plus the end of the last one (n + 1 values)."""
    offsets = array("I", [0])
    offsets.extend(accumulate(map(len, data.splitlines(keepends=True))))
    return offsets


class Journal:
    """Segments under one directory; appends, positional reads and name lookups."""

    def __init__(
        self, dir_fd: int, block: int, segment_lines: int, index_cache_segments: int
    ) -> None:
        self.segment_lines = segment_lines
        self._index_cache_segments = index_cache_segments
        self._dir_fd = dir_fd
        self._block = block
        self._sizes: dict[int, int] = {}  # segment → bytes, for every segment on disk
        for name in os.listdir(dir_fd):
            m = _SEGMENT_RE.fullmatch(name)
            if m is not None:
                self._sizes[int(m.group(1))] = os.stat(name, dir_fd=dir_fd).st_size
        self._index_cache: OrderedDict[int, array[int]] = OrderedDict()
        self._fd: int | None = None  # append descriptor of the current segment
        self.last_seq = 0
        self.last_name: bytes | None = None  # entry file of last_seq (the restart scan uses it)
        self._cur = 0
        self._cur_offsets = array("I", [0])
        if self._sizes:
            self._open_newest(max(self._sizes))

    def segment_of(self, seq: int) -> int:
        return (seq - 1) // self.segment_lines

    def segment_end(self, seq: int) -> int:
        """The last seq of the segment holding `seq`."""
        return ((seq - 1) // self.segment_lines + 1) * self.segment_lines

    def _open_newest(self, segment: int) -> None:
        data = self._read_segment(segment) or b""
        offsets = _offsets_of(data)
        nlines = len(offsets) - 1
        keep = len(data)
        if data and not data.endswith(b"\n"):
            # A crash during an append left half a line: it was never acknowledged, drop it.
            nlines -= 1
            keep = offsets[nlines]
        if nlines > self.segment_lines:
            nlines = self.segment_lines
            keep = offsets[nlines]
        if keep != len(data):
            log.warning(
                "journal segment %s: dropped %d bytes of an incomplete last line",
                segment_name(segment),
                len(data) - keep,
            )
            fd = os.open(segment_name(segment), os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
            try:
                os.ftruncate(fd, keep)
            finally:
                os.close(fd)
            del offsets[nlines + 1 :]
            self._sizes[segment] = keep
        self._cur = segment
        self._cur_offsets = offsets
        self.last_seq = segment * self.segment_lines + nlines
        if nlines:
            line = data[offsets[nlines - 1] : offsets[nlines] - 1]
            seq_text, _, name = line.partition(b" ")
            if seq_text != str(self.last_seq).encode():
                log.warning(
                    "journal segment %s: last line says seq %r, position says %d; using %d",
                    segment_name(segment),
                    seq_text,
                    self.last_seq,
                    self.last_seq,
                )
            self.last_name = name

    # -- facts ---------------------------------------------------------------------------

    def mtime_ns(self) -> int:
        """When the newest segment was last written (0 with no segment): a restart compares
        entry files with it to find ones a crash left unjournaled."""
        if not self._sizes:
            return 0
        try:
            return os.stat(segment_name(max(self._sizes)), dir_fd=self._dir_fd).st_mtime_ns
        except OSError:
            return 0

    @property
    def bytes_used(self) -> int:
        block = self._block
        return sum(fileio.disk_usage(size, block) for size in self._sizes.values())

    @property
    def segments(self) -> list[int]:
        return sorted(self._sizes)

    @property
    def first_segment(self) -> int:
        return min(self._sizes) if self._sizes else self._cur

    @property
    def current_segment(self) -> int:
        """The segment the next line goes to, or the newest on disk."""
        return self._cur

    # -- append --------------------------------------------------------------------------

    def append(self, names: list[bytes]) -> tuple[int, int, OSError | None]:
        """Append lines for seqs last_seq + 1, …; returns (lines written, disk usage delta,
        error). On an error the lines before the failing segment chunk stay written (their seqs
        are taken), the failing chunk is cut back, and the rest is not attempted."""
        done = 0
        delta = 0
        block = self._block
        while done < len(names):
            seq0 = self.last_seq + 1
            segment = self.segment_of(seq0)
            room = (segment + 1) * self.segment_lines - self.last_seq
            chunk_names = names[done : done + room]
            lines = [b"%d %s\n" % (seq0 + i, name) for i, name in enumerate(chunk_names)]
            data = b"".join(lines)
            try:
                fd = self._segment_fd(segment)
                size = self._sizes[segment]
                try:
                    fileio.write_all(fd, data)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            except OSError as exc:
                return done, delta, exc
            new_size = size + len(data)
            delta += fileio.disk_usage(new_size, block) - fileio.disk_usage(size, block)
            self._sizes[segment] = new_size
            # The table already ends with `size` (the previous end); add each new line's end.
            self._cur_offsets.extend(islice(accumulate(map(len, lines), initial=size), 1, None))
            done += len(chunk_names)
            self.last_seq += len(chunk_names)
            self.last_name = chunk_names[-1]
        return done, delta, None

    def _segment_fd(self, segment: int) -> int:
        if self._fd is not None and segment == self._cur:
            return self._fd
        if segment != self._cur:
            # Moving on: the finished segment's offsets become an ordinary cached index.
            self._remember_index(self._cur, self._cur_offsets)
            self._cur = segment
            self._cur_offsets = array("I", [0])
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(segment_name(segment), flags, 0o644, dir_fd=self._dir_fd)
        self._sizes.setdefault(segment, 0)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- read ----------------------------------------------------------------------------

    def read_names(self, seq: int, count: int) -> list[bytes] | None:
        """Entry file names for seq, seq + 1, … (at most `count`, never past the segment of `seq`
        or last_seq). None if that segment is gone (retention). A line that is missing or does
        not carry its expected seq comes back as b"" (the caller counts it missed)."""
        segment = self.segment_of(seq)
        if segment not in self._sizes:
            return None
        stop = min(seq + count, (segment + 1) * self.segment_lines + 1, self.last_seq + 1)
        if stop <= seq:
            return []
        offsets = self._index(segment)
        if offsets is None:
            return None
        base = segment * self.segment_lines + 1
        first = seq - base
        last = min(stop - base, len(offsets) - 1)
        names: list[bytes] = []
        if last > first:
            start = offsets[first]
            try:
                fd = os.open(segment_name(segment), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
            except FileNotFoundError:
                return None
            try:
                data = os.pread(fd, offsets[last] - start, start)
            finally:
                os.close(fd)
            expected = seq
            for line in data.split(b"\n")[: last - first]:
                seq_text, _, name = line.partition(b" ")
                names.append(name if seq_text == b"%d" % expected else b"")
                expected += 1
        names.extend([b""] * (stop - seq - len(names)))
        return names

    def _index(self, segment: int) -> array[int] | None:
        if segment == self._cur:
            return self._cur_offsets
        offsets = self._index_cache.get(segment)
        if offsets is not None:
            self._index_cache.move_to_end(segment)
            return offsets
        data = self._read_segment(segment)
        if data is None:
            return None
        offsets = _offsets_of(data)
        self._remember_index(segment, offsets)
        return offsets

    def _remember_index(self, segment: int, offsets: array[int]) -> None:
        self._index_cache[segment] = offsets
        self._index_cache.move_to_end(segment)
        while len(self._index_cache) > self._index_cache_segments:
            self._index_cache.popitem(last=False)

    def _read_segment(self, segment: int) -> bytes | None:
        return fileio.read_all(self._dir_fd, segment_name(segment))

    def find(self, name: bytes, start_segment: int) -> int | None:
        """The seq of the line naming `name`, scanning segments from `start_segment` upwards
        (the first occurrence wins). Each segment is read whole, once: ≤ ~3 MB at a time."""
        needle = b" " + name + b"\n"
        for segment in sorted(s for s in self._sizes if s >= start_segment):
            data = self._read_segment(segment)
            if not data:
                continue
            pos = data.find(needle)
            if pos < 0:
                continue
            line_start = data.rfind(b"\n", 0, pos) + 1
            try:
                return int(data[line_start:pos])
            except ValueError:
                continue
        return None

    # -- retention -----------------------------------------------------------------------

    def delete_segment(self, segment: int) -> int | None:
        """Delete one segment (never the current one); the disk usage freed, None if it could
        not be deleted."""
        if segment == self._cur or segment not in self._sizes:
            return None
        if not fileio.unlink_quietly(self._dir_fd, segment_name(segment)):
            return None
        self._index_cache.pop(segment, None)
        return fileio.disk_usage(self._sizes.pop(segment), self._block)
