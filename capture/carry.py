"""Bytes a TCP dissector carries over between `data()` calls, and the packet time each came with.

What a dissector cannot use yet (a partial head, frame or line) waits in a per-direction buffer;
a message that starts in it takes the time of the data that carried its first byte (ENTRY.md's
times). `marks` lists (offset in the buffer, packet time) for each `data()` that added to it,
offsets ascending, the first 0. capture/http1_framing.py and capture/http2_framing.py keep theirs so.
"""

from __future__ import annotations


def ts_at(marks: list[tuple[int, int]], pos: int) -> int:
    """The time of the data that carried the byte at `pos` of the buffer."""
    ts = marks[0][1] if marks else 0
    for offset, t in marks:
        if offset > pos:
            break
        ts = t
    return ts


def consume(buf: bytearray, marks: list[tuple[int, int]], pos: int) -> list[tuple[int, int]]:
    """Drops the first `pos` bytes of `buf`; the marks of what is left."""
    del buf[:pos]
    if not buf:
        return []
    k = 0
    while k + 1 < len(marks) and marks[k + 1][0] <= pos:
        k += 1
    return [(o - pos if o > pos else 0, t) for o, t in marks[k:]]
