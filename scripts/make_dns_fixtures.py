#!/usr/bin/env python3
"""Regenerates the DNS fixtures under fixtures/dns/ and what each must turn into.

The real captures in ../shared/pcaps-proto/ lack what this makes: DNS over TCP with pipelined
queries, answers split across segments and two answers in one segment; a truncated (TC=1) UDP
answer followed by the client's retry over TCP; a query never answered (the timeout entry);
DNS over IPv6. Messages are built with scapy's DNS layer, laid into UDP datagrams and TCP
segments (handshake, ACKs, FIN). What each fixture must produce (fixtures/dns/expected.json,
for tests/golden/test_proto_pcaps.py) is derived from what the script sent — ids, names,
answers, packet times — never from running kshark.

Deterministic (the test regenerates into a temporary directory and compares bytes): fixed
times, ports, addresses and TCP sequence numbers; no randomness.

    .venv/bin/python scripts/make_dns_fixtures.py            # rewrites fixtures/dns/
    .venv/bin/python scripts/make_dns_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRSRV
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import EDecimal, wrpcap

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000
S = 1_000_000_000
BASE_NS = 1_719_824_400 * S  # 2024-07-01T09:00:00Z; fixture k starts k minutes later
MAC_CLIENT = "02:42:0a:01:00:0b"
MAC_SERVER = "02:42:0a:60:00:0a"
CLIENT4, RESOLVER4 = "10.244.1.11", "10.96.0.10"
CLIENT6, RESOLVER6 = "fd00:10:244:1::b", "fd00:10:96::a"
TIMEOUT_S = 10  # capture/dissect_dns.py DnsLimits.query_timeout_ns, and UdpLimits' idle timeout


class Capture:
    """Frames of one fixture, with packet times, and the entries they must give."""

    def __init__(self, k: int) -> None:
        self.t = BASE_NS + k * 60 * S + 123_456
        self.frames: list[Packet] = []
        self.entries: list[dict[str, Any]] = []

    def add(self, pkt: Packet, after_ns: int = MS) -> int:
        self.t += after_ns
        pkt.time = EDecimal(self.t) / EDecimal(S)
        self.frames.append(pkt)
        return self.t

    def udp(self, src: tuple[str, int], dst: tuple[str, int], msg: Packet, after: int = MS) -> int:
        ip: Packet = (
            IPv6(src=src[0], dst=dst[0]) if ":" in src[0] else IP(src=src[0], dst=dst[0], id=1)
        )
        macs = (MAC_CLIENT, MAC_SERVER) if dst[1] == 53 else (MAC_SERVER, MAC_CLIENT)
        frame = Ether(src=macs[0], dst=macs[1]) / ip / UDP(sport=src[1], dport=dst[1]) / msg
        return self.add(frame, after)


class Tcp:
    """One TCP connection of a Capture: handshake at creation, `send`, `close`."""

    def __init__(self, cap: Capture, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.cap = cap
        self.ends = (client, server)
        self.seq = [0x1000_0000 + client[1], 0x7000_0000 + server[1]]
        self._seg(0, "S", b"")
        self._seg(1, "SA", b"")
        self._seg(0, "A", b"")

    def _seg(self, side: int, flags: str, data: bytes, after: int = MS // 4) -> int:
        src, dst = self.ends if side == 0 else self.ends[::-1]
        macs = (MAC_CLIENT, MAC_SERVER) if side == 0 else (MAC_SERVER, MAC_CLIENT)
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            seq=self.seq[side],
            ack=self.seq[1 - side] if "A" in flags else 0,
            flags=flags,
            window=64240,
        )
        ip: Packet = (
            IP(src=src[0], dst=dst[0], id=1) if ":" not in src[0] else IPv6(src=src[0], dst=dst[0])
        )
        frame = Ether(src=macs[0], dst=macs[1]) / ip / tcp
        if data:
            frame = frame / data
        self.seq[side] = (self.seq[side] + len(data) + ("S" in flags or "F" in flags)) % (1 << 32)
        return self.cap.add(frame, after)

    def send(self, side: int, data: bytes, after: int = MS) -> int:
        t = self._seg(side, "PA", data, after)
        self._seg(1 - side, "A", b"", MS // 10)
        return t

    def close(self) -> None:
        self._seg(0, "FA", b"")
        self._seg(1, "FA", b"")
        self._seg(0, "A", b"")


def framed(msg: Packet) -> bytes:
    raw = bytes(msg)
    return struct.pack("!H", len(raw)) + raw


def query(ident: int, name: str, qtype: str) -> Packet:
    return DNS(id=ident, rd=1, qd=[DNSQR(qname=name, qtype=qtype)])


def reply(ident: int, name: str, qtype: str, records: list[Packet], **flags: int) -> Packet:
    return DNS(id=ident, qr=1, rd=1, ra=1, qd=[DNSQR(qname=name, qtype=qtype)], an=records, **flags)


def expect(
    cap: Capture,
    transport: str,
    ident: int,
    name: str,
    qtype: str,
    t_query: int | None,
    t_reply: int | None,
    answers: list[str] | None,
    rcode: int = 0,
    truncated: bool = False,
    error: str | None = None,
    client: str = CLIENT4,
) -> None:
    """One entry: the question, the answers' values (None: no response), its error type."""
    elapsed = 0
    if t_query is not None and t_reply is not None:
        elapsed = (t_reply - t_query + 500_000) // MS
    cap.entries.append(
        {
            "layer4": transport,
            "id": ident,
            "question": [name, qtype],
            "query": t_query is not None,
            "answers": answers,
            "rcode": rcode,
            "truncated": truncated,
            "error": error,
            "elapsedTime": elapsed,
            "timestamp": (t_query if t_query is not None else t_reply or 0) // MS,
            "src": client,
        }
    )


SVC = "catalogue.sock-shop.svc.cluster.local"


def dns_tcp(cap: Capture) -> str:
    """Two queries pipelined in one segment (A, AAAA); the first answer split over two segments
    and the second sent in the segment that ends the first; then an SRV query and answer."""
    conn = Tcp(cap, (CLIENT4, 41000), (RESOLVER4, 53))
    a = reply(0x0A01, SVC, "A", [DNSRR(rrname=SVC, type="A", ttl=30, rdata="10.101.46.75")])
    aaaa = reply(0x0A02, SVC, "AAAA", [])
    tq = conn.send(0, framed(query(0x0A01, SVC, "A")) + framed(query(0x0A02, SVC, "AAAA")))
    both = framed(a) + framed(aaaa)
    ta = conn.send(1, both[:20], 2 * MS)
    conn.send(1, both[20:], MS)
    expect(cap, "tcp", 0x0A01, SVC, "A", tq, ta, ["10.101.46.75"])
    expect(cap, "tcp", 0x0A02, SVC, "AAAA", tq, ta + MS + MS // 10, [])
    srv_name = "_grpc._tcp.catalogue.sock-shop.svc.cluster.local"
    srv = reply(
        0x0A03,
        srv_name,
        "SRV",
        [DNSRRSRV(rrname=srv_name, ttl=30, priority=0, weight=100, port=50051, target=SVC)],
    )
    tq = conn.send(0, framed(query(0x0A03, srv_name, "SRV")), 5 * MS)
    ta = conn.send(1, framed(srv), 3 * MS)
    expect(cap, "tcp", 0x0A03, srv_name, "SRV", tq, ta, [f"0 100 50051 {SVC}"])
    conn.close()
    return "DNS over TCP: two pipelined queries in one segment, an answer split over two segments"


def dns_truncated(cap: Capture) -> str:
    """A UDP answer too big for 512 bytes comes back with TC=1 and no answers; the client asks
    again over TCP and gets all 40 addresses."""
    name = "many.example.com"
    ips = [f"192.0.2.{i}" for i in range(1, 41)]
    tq = cap.udp((CLIENT4, 53001), (RESOLVER4, 53), query(0x0B01, name, "A"))
    ta = cap.udp((RESOLVER4, 53), (CLIENT4, 53001), reply(0x0B01, name, "A", [], tc=1), 2 * MS)
    expect(cap, "udp", 0x0B01, name, "A", tq, ta, [], truncated=True)
    conn = Tcp(cap, (CLIENT4, 41001), (RESOLVER4, 53))
    full = reply(0x0B02, name, "A", [DNSRR(rrname=name, type="A", ttl=60, rdata=ip) for ip in ips])
    tq = conn.send(0, framed(query(0x0B02, name, "A")))
    ta = conn.send(1, framed(full), 4 * MS)
    expect(cap, "tcp", 0x0B02, name, "A", tq, ta, ips)
    conn.close()
    return "a truncated (TC=1) UDP answer, then the retry over TCP with all 40 addresses"


def dns_unanswered(cap: Capture) -> str:
    """Over IPv6: an answered AAAA query, a query never answered (an entry with a timeout
    error once 10 s of packet time pass), an NXDOMAIN, and an answer nobody asked for."""
    c, r = (CLIENT6, 40100), (RESOLVER6, 53)
    name = "api.example.org"
    tq = cap.udp(c, r, query(0x0C01, name, "AAAA"))
    ta = cap.udp(r, c, reply(0x0C01, name, "AAAA", [DNSRR(rrname=name, type="AAAA",
                                                          rdata="2001:db8::80")]))  # fmt: skip
    expect(cap, "udp", 0x0C01, name, "AAAA", tq, ta, ["2001:db8::80"], client=CLIENT6)
    lost = "lost.example.org"
    tq = cap.udp(c, r, query(0x0C02, lost, "A"), 3 * MS)
    expect(cap, "udp", 0x0C02, lost, "A", tq, None, None, error="timeout", client=CLIENT6)
    # Later than the timeout: the next flow's first datagram lets packet time pass it.
    c2 = (CLIENT6, 40101)
    nx = "nope.example.org"
    tq = cap.udp(c2, r, query(0x0C03, nx, "A"), (TIMEOUT_S + 2) * S)
    ta = cap.udp(r, c2, reply(0x0C03, nx, "A", [], rcode=3), 2 * MS)
    expect(cap, "udp", 0x0C03, nx, "A", tq, ta, [], rcode=3, client=CLIENT6)
    stray = "stray.example.org"
    ta = cap.udp(r, c2, reply(0x0C04, stray, "A", [DNSRR(rrname=stray, rdata="192.0.2.9")]))
    expect(cap, "udp", 0x0C04, stray, "A", None, ta, ["192.0.2.9"], error="pair-not-found",
           client=CLIENT6)  # fmt: skip
    return "IPv6: an answered query, one never answered (timeout), NXDOMAIN, a stray answer"


FIXTURES = [
    ("dns-tcp.pcap", dns_tcp),
    ("dns-truncated-udp.pcap", dns_truncated),
    ("dns-unanswered-v6.pcap", dns_unanswered),
]


def build(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {}
    readme = [
        "# DNS fixtures",
        "",
        "Made by `scripts/make_dns_fixtures.py` (do not edit by hand); checked by",
        "`tests/golden/test_proto_pcaps.py` against `expected.json`.",
        "",
    ]
    for k, (name, make) in enumerate(FIXTURES):
        cap = Capture(k)
        what = make(cap)
        wrpcap(str(out / name), cap.frames, nano=True)
        expected[name] = {"what": what, "packets": len(cap.frames), "entries": cap.entries}
        readme.append(f"- `{name}` — {what} ({len(cap.frames)} packets, "
                      f"{len(cap.entries)} entries)")  # fmt: skip
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text("\n".join(readme) + "\n")
    return [name for name, _ in FIXTURES] + ["expected.json", "README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "fixtures" / "dns")
    args = parser.parse_args(argv)
    names = build(args.out)
    print(f"wrote {len(names)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
