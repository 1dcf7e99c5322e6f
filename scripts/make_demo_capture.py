#!/usr/bin/env python3
"""Writes fixtures/demo.pcap: the capture `scripts/demo` replays.

A small "shop" talking HTTP/1.1 on port 80: a few keep-alive client connections making a mix of
requests (JSON API calls, a redirect, a 404, a 500, a form POST, a gzip page), so that filters such
as `response.status > 300` or `request.path.startsWith("/api")` have something to show.
Deterministic: fixed times, addresses, ports and sequence numbers; rerunning gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter

T0 = 1_764_288_000.0  # 2025-11-28T00:00:00Z
SERVER = ("10.0.53.101", 80)
MAC_C, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _resp(status: int, reason: str, body: bytes, ctype: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nServer: demo-shop/1.0\r\n"
        f"Date: Fri, 28 Nov 2025 00:00:00 GMT\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _req(method: str, target: str, body: bytes = b"", ctype: str = "", extra: str = "") -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: catalogue\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Accept: application/json\r\n{extra}"
    )
    if body:
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def exchanges() -> list[tuple[bytes, bytes]]:
    items = json.dumps([{"id": i, "name": f"sock-{i}", "price": 10 + i} for i in range(3)]).encode()
    page = b"<html><body>" + b"<p>socks for everyone</p>" * 80 + b"</body></html>"
    return [
        (
            _req("GET", "/api/catalogue?size=3&tags=blue"),
            _resp(200, "OK", items, "application/json"),
        ),
        (
            _req("GET", "/api/catalogue/7"),
            _resp(404, "Not Found", b'{"error":"no such sock"}', "application/json"),
        ),
        (
            _req("GET", "/old-shop"),
            _resp(301, "Moved Permanently", b"", "text/html", "Location: /shop\r\n"),
        ),
        (
            _req(
                "GET",
                "/shop",
                extra="Accept-Encoding: gzip\r\nCookie: session=abc123; theme=dark\r\n",
            ),
            _resp(
                200,
                "OK",
                gzip.compress(page, mtime=0),
                "text/html; charset=utf-8",
                "Content-Encoding: gzip\r\n",
            ),
        ),
        (
            _req("POST", "/api/orders", b"sock=7&qty=2", "application/x-www-form-urlencoded"),
            _resp(
                201,
                "Created",
                b'{"order":42}',
                "application/json",
                "Set-Cookie: cart=empty; Path=/\r\n",
            ),
        ),
        (
            _req("GET", "/api/payments/42"),
            _resp(500, "Internal Server Error", b'{"error":"gateway down"}', "application/json"),
        ),
        (
            _req("DELETE", "/api/cart", extra="Authorization: Bearer s3cr3t\r\n"),
            _resp(204, "No Content", b"", "application/json"),
        ),
        (_req("GET", "/health"), _resp(200, "OK", b"ok", "text/plain")),
    ]


class _Connection:
    """One client connection's TCP state while its packets are written."""

    def __init__(self, writer: PcapWriter, client: tuple[str, int], cseq: int, sseq: int) -> None:
        self.writer, self.client, self.cseq, self.sseq = writer, client, cseq, sseq

    def pkt(self, t: float, from_client: bool, flags: str, payload: bytes = b"") -> None:
        src, dst = (self.client, SERVER) if from_client else (SERVER, self.client)
        seq, ack = (self.cseq, self.sseq) if from_client else (self.sseq, self.cseq)
        frame = (
            Ether(src=MAC_C if from_client else MAC_S, dst=MAC_S if from_client else MAC_C)
            / IP(src=src[0], dst=dst[0], id=1, flags="DF")
            / TCP(
                sport=src[1],
                dport=dst[1],
                seq=seq,
                ack=ack if "A" in flags else 0,
                flags=flags,
                window=65535,
            )
        )
        if payload:
            frame = frame / payload
        frame.time = t
        self.writer.write(frame)
        advance = len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
        if from_client:
            self.cseq += advance
        else:
            self.sseq += advance


def write(path: Path) -> None:
    writer = PcapWriter(str(path), linktype=1, sync=True)
    t = T0
    for n in range(6):
        c = _Connection(
            writer, (f"10.0.41.{65 + n % 3}", 51846 + n), 1_000_000 * (n + 1), 2_000_000 * (n + 1)
        )
        t += 0.0003
        c.pkt(t, True, "S")
        t += 0.0003
        c.pkt(t, False, "SA")
        t += 0.0003
        c.pkt(t, True, "A")
        for i, (request, response) in enumerate(exchanges()):
            if (i + n) % 2:
                continue
            t += 0.0003
            c.pkt(t, True, "PA", request)
            t += 0.002 * (1 + i % 3)
            for off in range(0, len(response), 1448):
                t += 0.0001
                c.pkt(t, False, "PA", response[off : off + 1448])
            t += 0.0003
            c.pkt(t, True, "A")
        for from_client, flags in ((True, "FA"), (False, "FA"), (True, "A")):
            t += 0.0003
            c.pkt(t, from_client, flags)
        t += 0.05
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "demo.pcap")
    )
    write(Path(ap.parse_args().out))


if __name__ == "__main__":
    main()
