"""Classic pcap records for writers of pcap files: the store's per-connection pcaps.

The pipeline hands the store every packet of every HTTP connection as (stream, ts_ns, link
type, frame); each becomes a record header and the frame, appended to its connection's pcap.
That is a few operations per packet, ~100,000 packets in a 40,000-entry capture, so it is done
here, in a module compiled with the rest of the packet side (capture/__init__.py), rather than
in the store's own loops: grouped once per (stream, link type), the store then works per
connection, not per packet.

Nanosecond-resolution records (the store writes magic 0xa1b23c4d files): ts_sec, ts_nsec,
incl_len, orig_len, little-endian. ts_sec is 32 unsigned bits: a time before 1970 or after
2106-02-07T06:28:15.999999999Z is written as the nearer of the two (the pipeline has clamped and
counted it already; this keeps the writer total for any caller), never raised on.
"""

from __future__ import annotations

import struct
from typing import Final

RECORD_HEADER: Final = struct.Struct("<IIII")  # ts_sec, ts_nsec, incl_len, orig_len
RECORD_HEADER_SIZE: Final = 16
_SECOND_NS: Final = 1_000_000_000
_TS_MAX: Final = 0xFFFFFFFF * _SECOND_NS + 999_999_999  # capture.segment.TS_MAX_NS


class RecordGroup:
    """The records of one connection and link type, in packet order.

    `parts` alternates record headers and frames (cut to the snap length), ready to be joined;
    `size` is their total length; `count` the number of packets.
    """

    __slots__ = ("count", "linktype", "parts", "size", "stream")

    def __init__(self, stream: object, linktype: int) -> None:
        self.stream = stream
        self.linktype = linktype
        self.parts: list[bytes] = []
        self.size = 0
        self.count = 0


def group_records(packets: list[tuple[object, int, int, bytes]], snaplen: int) -> list[RecordGroup]:
    """Each (stream, ts_ns, linktype, frame) as a pcap record, grouped by (stream, link type)
    in order of first appearance. `stream` is passed through as given (the store validates it)."""
    groups: list[RecordGroup] = []
    by_stream: dict[object, RecordGroup] = {}
    # A stream whose packets come with two link types (seen on two interfaces): rare.
    other: dict[tuple[object, int], RecordGroup] = {}
    pack = RECORD_HEADER.pack
    for stream, ts_ns, linktype, frame in packets:
        g = by_stream.get(stream)
        if g is None:
            g = RecordGroup(stream, linktype)
            by_stream[stream] = g
            groups.append(g)
        elif g.linktype != linktype:
            key = (stream, linktype)
            g2 = other.get(key)
            if g2 is None:
                g2 = RecordGroup(stream, linktype)
                other[key] = g2
                groups.append(g2)
            g = g2
        if not 0 <= ts_ns <= _TS_MAX:
            ts_ns = 0 if ts_ns < 0 else _TS_MAX
        n = len(frame)
        if n <= snaplen:
            g.parts.append(pack(ts_ns // _SECOND_NS, ts_ns % _SECOND_NS, n, n))
            g.parts.append(frame)
            g.size += RECORD_HEADER_SIZE + n
        else:
            g.parts.append(pack(ts_ns // _SECOND_NS, ts_ns % _SECOND_NS, snaplen, n))
            g.parts.append(frame[:snaplen])
            g.size += RECORD_HEADER_SIZE + snaplen
        g.count += 1
    return groups
