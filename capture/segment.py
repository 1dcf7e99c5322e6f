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
