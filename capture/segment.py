"""The values decode hands to the rest of the pipeline: TCP segments and UDP datagrams.

A NamedTuple rather than a dataclass: it is built once per packet on the hot path, and tuple
construction is the cheapest immutable record CPython has.
"""

from __future__ import annotations

from typing import NamedTuple

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

# Packet times every consumer can represent: a pcap record's ts_sec is 32 unsigned bits, so from
# the epoch to 2106-02-07T06:28:15.999999999Z. The pipeline clamps a time outside this range to
# the nearer bound (and counts it; capture/pipeline.py), so the store's pcaps, the entries'
# RFC 3339 times and every difference of times stay well defined whatever a capture claims.
TS_MIN_NS = 0
TS_MAX_NS = 0xFFFFFFFF * 1_000_000_000 + 999_999_999


class Segment(NamedTuple):
    """One TCP segment as captured: addresses packed (4 or 16 bytes), time in ns since epoch."""

    ts_ns: int
    family: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


class Datagram(NamedTuple):
    """One UDP datagram's payload, for a port a UDP dissector listens on (see decode.py)."""

    ts_ns: int
    family: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    payload: bytes
