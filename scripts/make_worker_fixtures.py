#!/usr/bin/env python3
"""Captures for the worker's tests (tests/worker), written to fixtures/worker/.

- `gzip-burst.pcap.gz`: 100 short HTTP/1.1 connections back to back, each a GET answered with
  a gzip body of ~300 bytes that decodes to 256 KiB. Nine frames a connection, so a few
  hundred frames make entries of ~350 KB each: what a batch of the worker must stay bounded
  in bytes against (tests/worker/test_worker_memory.py).

Deterministic (tests/worker/test_worker_fixtures_uptodate.py regenerates and compares bytes):
fixed times, ISNs, ports, addresses; gzip with mtime 0.

    .venv/bin/python scripts/make_worker_fixtures.py            # rewrites fixtures/worker/
    .venv/bin/python scripts/make_worker_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapWriter

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "worker"

T0 = 1_709_283_600.0  # 2024-03-01T09:00:00Z
CLIENT_MAC, SERVER_MAC = "02:42:0a:01:00:0b", "02:42:0a:02:00:14"
SERVER = "10.2.0.20"
BURST_CONNECTIONS = 100
BURST_DECODED = 256 * 1024


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _segment(
    t: float,
    n: int,
    client: str,
    cport: int,
    from_client: bool,
    flags: str,
    seq: int,
    ack: int,
    data: bytes = b"",
) -> Packet:
    """One TCP segment of connection `n` between `client`:`cport` and SERVER:80 at time t."""
    if from_client:
        eth = Ether(src=CLIENT_MAC, dst=SERVER_MAC)
        ip = IP(src=client, dst=SERVER, id=n & 0xFFFF)
        tcp = TCP(sport=cport, dport=80, flags=flags, seq=seq, ack=ack, window=65535)
    else:
        eth = Ether(src=SERVER_MAC, dst=CLIENT_MAC)
        ip = IP(src=SERVER, dst=client, id=n & 0xFFFF)
        tcp = TCP(sport=80, dport=cport, flags=flags, seq=seq, ack=ack, window=65535)
    p = eth / ip / tcp
    if data:
        p = p / Raw(data)
    p.time = t
    return p


def gzip_burst() -> list[Packet]:
    packets: list[Packet] = []
    t = T0
    for n in range(BURST_CONNECTIONS):
        client = f"10.1.{n // 200}.{10 + n % 200}"
        cport = 40000 + n
        c, s = 1_000_000 + 7919 * n, 2_000_000 + 104729 * n
        body = _gzip(bytes([65 + n % 26]) * BURST_DECODED)
        request = (
            f"GET /burst/{n} HTTP/1.1\r\nHost: burst.example\r\n"
            "Accept-Encoding: gzip\r\nUser-Agent: curl/8.5.0\r\n\r\n"
        ).encode()
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        # (from the client?, flags, seq, ack, payload), in order
        script = [
            (True, "S", c, 0, b""),
            (False, "SA", s, c + 1, b""),
            (True, "A", c + 1, s + 1, b""),
            (True, "PA", c + 1, s + 1, request),
            (False, "PA", s + 1, c + 1 + len(request), response),
            (True, "A", c + 1 + len(request), s + 1 + len(response), b""),
            (True, "FA", c + 1 + len(request), s + 1 + len(response), b""),
            (False, "FA", s + 1 + len(response), c + 2 + len(request), b""),
            (True, "A", c + 2 + len(request), s + 2 + len(response), b""),
        ]
        for from_client, flags, seq, ack, data in script:
            t += 0.0001
            packets.append(_segment(t, n, client, cport, from_client, flags, seq, ack, data))
    return packets


def write_pcap_gz(path: Path, packets: list[Packet]) -> None:
    raw = io.BytesIO()
    writer = PcapWriter(raw, linktype=1, sync=True)
    for p in packets:
        writer.write(p)
    writer.flush()
    path.write_bytes(_gzip(raw.getvalue()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_pcap_gz(args.out / "gzip-burst.pcap.gz", gzip_burst())


if __name__ == "__main__":
    main()
