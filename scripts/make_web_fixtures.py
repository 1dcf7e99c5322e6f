#!/usr/bin/env python3
"""Writes fixtures/web/: the captures the dashboard's browser tests replay (tests/web).

- `xss.pcap`: requests and responses whose path, query string, headers, cookies and bodies
  (JSON and HTML) hold `<script>` and event-handler payloads. Each payload calls `alert(n)` or
  names `XSS-n`, so a test can tell that none of them ran (no dialog) and that each is shown as
  the text it is.
- `bodies.pcap`: a gzip-encoded JSON response (shown decoded and pretty-printed), a JSON request
  body, a binary response (shown as hex), and a request that never got a response (an entry
  with `error`).

Deterministic (fixed times, addresses, ports, sequence numbers, gzip mtime 0): rerunning gives
the same bytes; tests/web/test_web_fixtures.py checks that the committed files are what this
script writes.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter

T0 = 1_764_374_400.0  # 2025-11-29T00:00:00Z
SERVER = ("10.0.60.10", 8080)
MAC_C, MAC_S = "02:00:00:00:01:01", "02:00:00:00:01:02"
OUT = Path(__file__).resolve().parent.parent / "fixtures" / "web"

# The JSON body of the gzip response: what the detail pane must show, pretty-printed.
GZIP_JSON = {"items": [{"id": 1, "name": "first", "tags": ["a", "b"]}, {"id": 2, "name": "second"}]}
BINARY_BODY = bytes(range(256)) * 2
POST_JSON = {"name": "sock", "price": 12.5, "colours": ["red", "blue"]}


def message(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start, *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(
    status: int, reason: str, body: bytes, ctype: str, extra: list[tuple[str, str]] = ()
) -> bytes:  # type: ignore[assignment]
    headers = [("Server", "fixture/1.0"), ("Content-Type", ctype), *extra]
    if not body:
        headers.append(("Content-Length", "0"))
    return message(f"HTTP/1.1 {status} {reason}", headers, body)


def xss_exchanges() -> list[tuple[bytes, bytes | None]]:
    json_body = json.dumps(
        {
            "html": "<script>alert(6)</script>",
            "img": "<img src=x onerror=alert(7)>",
            "nested": {"<b>key</b>": "<svg onload=alert(8)>"},
        }
    ).encode()
    html_body = b"<html><body><script>alert(9)</script><img src=x onerror=alert(10)></body></html>"
    return [
        (
            message(
                "GET /<script>alert(1)</script>/XSS-1?q=<img/src/onerror=alert(2)>&XSS-2=1 HTTP/1.1",
                [
                    ("Host", "shop<b>XSS-3</b>"),
                    ("User-Agent", "<svg onload=alert(3)>"),
                    ("X-Note", '<img src=x onerror="alert(4)">'),
                    ("Cookie", "session=<script>alert(5)</script>"),
                ],
            ),
            response(
                200,
                "OK",
                json_body,
                "application/json",
                [
                    ("Set-Cookie", "t=<script>alert(11)</script>; Path=/"),
                    ("X-Reply", "<b onmouseover=alert(12)>XSS-4</b>"),
                ],
            ),
        ),
        (
            message("GET /page HTTP/1.1", [("Host", "shop"), ("Accept", "text/html")]),
            response(200, "OK", html_body, "text/html; charset=utf-8"),
        ),
    ]


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def bodies_exchanges() -> list[tuple[bytes, bytes | None]]:
    return [
        (
            message(
                "GET /api/items HTTP/1.1",
                [("Host", "shop"), ("Accept", "application/json"), ("Accept-Encoding", "gzip")],
            ),
            response(
                200,
                "OK",
                gzip_bytes(json.dumps(GZIP_JSON, separators=(",", ":")).encode()),
                "application/json",
                [("Content-Encoding", "gzip")],
            ),
        ),
        (
            message(
                "POST /api/items HTTP/1.1",
                [("Host", "shop"), ("Content-Type", "application/json")],
                json.dumps(POST_JSON).encode(),
            ),
            response(201, "Created", b'{"id":3}', "application/json"),
        ),
        (
            message("GET /logo.bin HTTP/1.1", [("Host", "shop")]),
            response(200, "OK", BINARY_BODY, "application/octet-stream"),
        ),
        (message("GET /never-answered HTTP/1.1", [("Host", "shop")]), None),
    ]


class Connection:
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


def write(path: Path, exchanges: list[tuple[bytes, bytes | None]], client_ip: str) -> None:
    writer = PcapWriter(str(path), linktype=1, sync=True)
    t = T0
    c = Connection(writer, (client_ip, 40000), 1_000_000, 2_000_000)
    for flags, from_client in (("S", True), ("SA", False), ("A", True)):
        t += 0.0003
        c.pkt(t, from_client, flags)
    for request, answer in exchanges:
        t += 0.001
        c.pkt(t, True, "PA", request)
        if answer is None:
            continue
        t += 0.004
        for off in range(0, len(answer), 1448):
            t += 0.0001
            c.pkt(t, False, "PA", answer[off : off + 1448])
        t += 0.0003
        c.pkt(t, True, "A")
    for from_client, flags in ((True, "FA"), (False, "FA"), (True, "A")):
        t += 0.0003
        c.pkt(t, from_client, flags)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(OUT))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "xss.pcap", xss_exchanges(), "10.0.60.20")
    write(out / "bodies.pcap", bodies_exchanges(), "10.0.60.21")


if __name__ == "__main__":
    main()
