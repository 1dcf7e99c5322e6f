"""Ethernet/IPv4/TCP frames for pipeline tests, built with struct (fast, no scapy).

A `TcpFlow` keeps both sides' sequence numbers, so a test writes a conversation as calls
(`syn`, `client`, `server`, `ack`, `fin`) and gets the `(ts_ns, linktype, frame)` triples a
capture file would yield. Checksums are left zero: the pipeline does not check them.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from capture.entries import Identity
from capture.pipeline import Output, Pipeline, PipelineLimits

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04
ETHERNET = 1
T0 = 1_709_283_600_000_000_000  # 2024-03-01T09:00:00Z
MS = 1_000_000
IDENTITY = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="t")

Frame = tuple[int, int, bytes]


def tcp_segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    options: bytes = b"",
) -> bytes:
    """An IPv4 packet carrying one TCP segment (options padded to 4 bytes)."""
    options += b"\x01" * (-len(options) % 4)  # NOP padding
    doff = (20 + len(options)) // 4
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4, flags, 65535,
        0, 0,
    ) + options + payload  # fmt: skip
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return ip + tcp


def ether(ip_packet: bytes, ethertype: int = 0x0800) -> bytes:
    return (
        b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
        + struct.pack("!H", ethertype)
        + (ip_packet)
    )


class TcpFlow:
    """One TCP connection between a client and a server, written as a script of segments."""

    def __init__(
        self,
        client: str = "10.1.0.10",
        server: str = "10.1.0.20",
        cport: int = 40000,
        sport: int = 80,
        cisn: int = 1000,
        sisn: int = 5000,
        ts: int = T0,
    ) -> None:
        self.client, self.server, self.cport, self.sport = client, server, cport, sport
        self.cseq = cisn  # next sequence number each side sends
        self.sseq = sisn
        self.ts = ts
        self.frames: list[Frame] = []

    def _emit(self, from_client: bool, flags: int, payload: bytes, seq: int | None,
              options: bytes = b"", dt: int = MS) -> Frame:  # fmt: skip
        self.ts += dt
        if from_client:
            s = self.cseq if seq is None else seq
            ip = tcp_segment(self.client, self.server, self.cport, self.sport, s, self.sseq,
                             flags, payload, options)  # fmt: skip
            if seq is None:
                self.cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        else:
            s = self.sseq if seq is None else seq
            ip = tcp_segment(self.server, self.client, self.sport, self.cport, s, self.cseq,
                             flags, payload, options)  # fmt: skip
            if seq is None:
                self.sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        frame = (self.ts, ETHERNET, ether(ip))
        self.frames.append(frame)
        return frame

    def handshake(self) -> list[Frame]:
        return [
            self._emit(True, SYN, b"", None),
            self._emit(False, SYN | ACK, b"", None),
            self._emit(True, ACK, b"", None),
        ]

    def client_sends(self, data: bytes, mss: int = 1448, **kw: Any) -> list[Frame]:
        return [
            self._emit(True, ACK | PSH, data[i : i + mss], None, **kw)
            for i in range(0, len(data), mss)
        ]

    def server_sends(self, data: bytes, mss: int = 1448, **kw: Any) -> list[Frame]:
        return [
            self._emit(False, ACK | PSH, data[i : i + mss], None, **kw)
            for i in range(0, len(data), mss)
        ]

    def segment(self, from_client: bool, payload: bytes, seq: int, flags: int = ACK | PSH,
                **kw: Any) -> Frame:  # fmt: skip
        """A segment at an explicit sequence number (the flow's counters do not move)."""
        return self._emit(from_client, flags, payload, seq, **kw)

    def ack(self, from_client: bool, options: bytes = b"", **kw: Any) -> Frame:
        return self._emit(from_client, ACK, b"", None, options, **kw)

    def close(self) -> list[Frame]:
        return [
            self._emit(True, FIN | ACK, b"", None),
            self._emit(False, FIN | ACK, b"", None),
            self._emit(True, ACK, b"", None),
        ]


def run(frames: list[Frame], limits: PipelineLimits | None = None) -> tuple[Output, Pipeline]:
    """All frames through a fresh Pipeline (streams numbered from 1), finished."""
    counter = iter(range(1, 1 << 40))
    p = Pipeline(IDENTITY, allocate_stream=lambda: next(counter), limits=limits)
    for ts, linktype, frame in frames:
        p.feed(ts, linktype, frame)
    p.finish()
    return p.pop_output(), p
