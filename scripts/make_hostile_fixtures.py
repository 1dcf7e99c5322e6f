#!/usr/bin/env python3
"""Writes fixtures/hostile/: small captures of what a hostile or damaged capture holds (issue 9).

Each file is one case a user hit: impossible packet times, a mid-connection start on a one-byte
TCP keep-alive, a request line with spaces in its target, a one-direction capture with a lost
segment, traffic inside VXLAN / Geneve / GRE-ERSPAN / NFLOG, link types and tunnels kshark does
not decode, smuggling-shaped framing (Content-Length with leading zeros, a folded
Transfer-Encoding), a response that decodes to 10 MiB. Packets are built with scapy; the capture
files are written here byte by byte, because the cases need header fields (times, interface
options) no well-behaved writer produces. tests/golden/test_hostile.py says what each must give.

Deterministic (tests/golden/test_hostile.py regenerates into a temporary directory and compares
bytes): fixed times, addresses, ports, sequence numbers, IP ids, gzip level and mtime.

    .venv/bin/python scripts/make_hostile_fixtures.py            # rewrites fixtures/hostile/
    .venv/bin/python scripts/make_hostile_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import gzip
import struct
from collections.abc import Callable
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "fixtures" / "hostile"

S = 1_000_000_000
US = 1_000
BASE_S = 1_709_290_800  # 2024-03-01T11:00:00Z
MSS = 1448

CLIENT = ("10.244.1.7", 45000)  # each capture uses its own client port: replayed together
# (one worker, several --pcap) they are different connections
SERVER = ("10.244.2.9", 8080)
MACS = {"src": "02:42:0a:f4:01:07", "dst": "02:42:0a:f4:02:09"}

# (seconds, sub-second units as the file stores them, frame)
Record = tuple[int, int, bytes]


# -- packets --------------------------------------------------------------------------------------


class Conversation:
    """One TCP connection as a list of Ethernet frames with their times (ns since the epoch).

    seq/ack are kept per side; `send` cuts data into MSS-sized segments. Times advance by `step`
    per packet unless given.
    """

    def __init__(
        self, t0_ns: int, cport: int, cisn: int = 0x1000_0000, sisn: int = 0x2000_0000
    ) -> None:
        self.t = t0_ns
        self.cport = cport
        self.seq = {True: cisn, False: sisn}
        self.frames: list[tuple[int, bytes]] = []

    def packet(
        self,
        from_client: bool,
        flags: str,
        payload: bytes = b"",
        seq: int | None = None,
        options: list[tuple[str, object]] | None = None,
        dt: int = 1_000_000,
    ) -> Packet:
        self.t += dt
        client = (CLIENT[0], self.cport)
        (sip, sport), (dip, dport) = (client, SERVER) if from_client else (SERVER, client)
        s = self.seq[from_client] if seq is None else seq
        tcp = TCP(
            sport=sport,
            dport=dport,
            seq=s & 0xFFFFFFFF,
            ack=self.seq[not from_client] & 0xFFFFFFFF,
            flags=flags,
            window=502,
            options=options or [],
        )
        pkt = Ether(**MACS) / IP(src=sip, dst=dip, id=len(self.frames) + 1, ttl=63) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        if seq is None:
            self.seq[from_client] += len(payload) + ("S" in flags) + ("F" in flags)
        self.frames.append((self.t, bytes(pkt)))
        return pkt

    def handshake(self) -> None:
        self.packet(True, "S")
        self.packet(False, "SA")
        self.packet(True, "A")

    def send(self, from_client: bool, data: bytes, dt: int = 1_000_000) -> None:
        for i in range(0, len(data), MSS):
            self.packet(from_client, "PA", data[i : i + MSS], dt=dt)

    def exchange(self, request: bytes, response: bytes) -> None:
        self.send(True, request)
        self.packet(False, "A")
        self.send(False, response)
        self.packet(True, "A")

    def close(self) -> None:
        self.packet(True, "FA")
        self.packet(False, "FA")
        self.packet(True, "A")


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: curl/8.5.0\r\n\r\n".encode()


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def two_gets(t0_ns: int, cport: int) -> list[tuple[int, bytes]]:
    c = Conversation(t0_ns, cport)
    c.handshake()
    c.exchange(get("/a"), ok(b"first"))
    c.exchange(get("/b"), ok(b"second"))
    c.close()
    return c.frames


# -- file writers ---------------------------------------------------------------------------------


def pcap(linktype: int, records: list[Record], nanos: bool = False) -> bytes:
    """A classic pcap (µs, or ns with nanos), little-endian, with the fields as given."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for sec, frac, frame in records:
        out.append(struct.pack("<IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def pcap_of(frames: list[tuple[int, bytes]], linktype: int = 1) -> bytes:
    return pcap(linktype, [(t // S, t % S, f) for t, f in frames], nanos=True)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng(interfaces: list[tuple[int, bytes]], packets: list[tuple[int, int, bytes]]) -> bytes:
    """One little-endian section: interfaces (link type, raw IDB options) and EPBs (interface,
    64-bit timestamp in that interface's units, frame)."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idbs = [
        _block(1, struct.pack("<HHI", lt, 0, 262144) + opts + b"\x00" * 4)  # options, opt_endofopt
        for lt, opts in interfaces
    ]
    epbs = [
        _block(6, struct.pack("<IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
        for ifid, ts, f in packets
    ]
    return b"".join([shb, *idbs, *epbs])


def option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


# -- the cases ------------------------------------------------------------------------------------

CASES: dict[str, Callable[[], bytes]] = {}


def case(name: str) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(fn: Callable[[], bytes]) -> Callable[[], bytes]:
        CASES[name] = fn
        return fn

    return register


@case("ts-pcap-sec-max.pcap")
def _ts_pcap_sec_max() -> bytes:
    """ts_sec = 0xFFFFFFFF, and microsecond fields past a second (what a damaged file holds)."""
    frames = two_gets(BASE_S * S, 45002)
    return pcap(1, [(0xFFFFFFFF, 999_000 + i * 700_000, f) for i, (_, f) in enumerate(frames)])


@case("ts-pcapng-negative-offset.pcapng")
def _ts_negative_offset() -> bytes:
    """if_tsoffset = -4e9 s: every packet lands before 1970."""
    frames = two_gets(BASE_S * S, 45003)
    opts = option(14, struct.pack("<q", -4_000_000_000))
    return pcapng([(1, opts)], [(0, t // US, f) for t, f in frames])


@case("ts-pcapng-resol-seconds.pcapng")
def _ts_resol_seconds() -> bytes:
    """if_tsresol = 0 (whole seconds) and 64-bit times near the maximum."""
    frames = two_gets(BASE_S * S, 45004)
    opts = option(9, b"\x00")
    top = (1 << 64) - 100
    return pcapng([(1, opts)], [(0, top + i, f) for i, (_, f) in enumerate(frames)])


@case("ts-pcapng-64bit-max.pcapng")
def _ts_64bit_max() -> bytes:
    """Default µs resolution, timestamps within a second of 2**64 - 1 units."""
    frames = two_gets(BASE_S * S, 45005)
    return pcapng(
        [(1, b"")], [(0, (1 << 64) - 1_000_000 + i * 1000, f) for i, (_, f) in enumerate(frames)]
    )


@case("ts-pcapng-resol-extreme.pcapng")
def _ts_resol_extreme() -> bytes:
    """if_tsresol 10**-127 s and 2**-127 s on two interfaces: every time rounds to the epoch."""
    frames = two_gets(BASE_S * S, 45006)
    ifaces = [(1, option(9, bytes([127]))), (1, option(9, bytes([0xFF])))]
    return pcapng(ifaces, [(i % 2, t, f) for i, (t, f) in enumerate(frames)])


@case("keepalive-midstream.pcap")
def _keepalive() -> bytes:
    """A capture that starts on a long-lived connection with a Windows keep-alive (one stale
    byte at SND.NXT - 1) that the server D-SACKs, then a request and its response."""
    c = Conversation(BASE_S * S + 120 * S, 45010)
    nxt = c.seq[True]
    c.packet(True, "A", b"\x00", seq=nxt - 1)
    c.packet(False, "A", options=[("NOP", None), ("NOP", None), ("SAck", (nxt - 1, nxt))])
    c.exchange(get("/orders?page=2"), ok(b'{"orders": []}'))
    return pcap_of(c.frames)


@case("target-spaces.pcap")
def _target_spaces() -> bytes:
    """Attack traffic: a request line with spaces in its target; the server never answers."""
    c = Conversation(BASE_S * S + 180 * S, 45011)
    c.handshake()
    c.send(
        True,
        b"GET /cgi-bin/x;cat /etc/passwd|?data=Download HTTP/1.1\r\nHost: 10.244.2.9\r\n"
        b"User-Agent: Mozilla/5.0\r\n\r\n",
    )
    c.packet(False, "A")
    return pcap_of(c.frames)


@case("gap-one-direction.pcap")
def _gap_one_direction() -> bytes:
    """Only the server's packets (a one-direction capture): three responses a minute apart on
    a keep-alive connection, and a segment of the first one lost. Nothing reveals the loss
    until the end of the capture, minutes later."""
    c = Conversation(BASE_S * S + 240 * S, 45012)
    c.handshake()
    frames = [c.frames[1]]  # the SYN-ACK only: the client's side is not captured
    first = ok(bytes(range(97, 123)) * 200)  # a 5200-byte body: four segments
    start = c.seq[False]
    for k in range(0, len(first), MSS):
        c.packet(False, "PA", first[k : k + MSS], seq=start + k)
        if k != MSS:  # the second segment is lost
            frames.append(c.frames[-1])
    c.seq[False] = start + len(first)
    for n in (2, 3):
        c.packet(False, "PA", ok(b"response %d" % n), dt=60 * S)
        frames.append(c.frames[-1])
    return pcap_of(frames)


def _wrapped(outer: Callable[[bytes], Packet], cport: int) -> list[tuple[int, bytes]]:
    return [(t, bytes(outer(f))) for t, f in two_gets(BASE_S * S + 300 * S, cport)]


NODE = {"src": "192.168.49.2", "dst": "192.168.49.3"}


@case("vxlan.pcap")
def _vxlan() -> bytes:
    """Pod-to-pod traffic between nodes of an overlay network: VXLAN on Flannel's port 8472."""
    return pcap_of(
        _wrapped(
            lambda f: Ether() / IP(**NODE) / UDP(sport=33000, dport=8472) / VXLAN(vni=1) / Raw(f),
            45016,
        )
    )


@case("geneve.pcap")
def _geneve() -> bytes:
    return pcap_of(
        _wrapped(
            lambda f: (
                Ether() / IP(**NODE) / UDP(sport=33000, dport=6081) / GENEVE(proto=0x6558) / Raw(f)
            ),
            45017,
        )
    )


@case("gre-erspan.pcap")
def _erspan() -> bytes:
    """Port mirroring: ERSPAN type II (GRE with a sequence number, 8-byte ERSPAN header)."""
    header = struct.pack("!HHI", 0x1000 | 5, 0x0001, 0)  # version 1 (type II), VLAN, session
    return pcap_of(
        _wrapped(
            lambda f: (
                Ether()
                / IP(**NODE)
                / GRE(seqnum_present=1, sequence_number=7, proto=0x88BE)
                / Raw(header + f)
            ),
            45018,
        )
    )


def _nflog(ip_packet: bytes) -> bytes:
    def tlv(kind: int, value: bytes) -> bytes:
        raw = struct.pack("<HH", 4 + len(value), kind) + value
        return raw + b"\x00" * (-len(raw) % 4)

    return (
        bytes([2, 0]) + struct.pack(">H", 5)
        + tlv(1, b"\x08\x00\x01\x00") + tlv(10, b"kshark\x00") + tlv(9, ip_packet)
    )  # fmt: skip


@case("nflog.pcap")
def _nflog_capture() -> bytes:
    """`tcpdump -i nflog:5` of `iptables -j NFLOG --nflog-group 5` (link type 239)."""
    frames = two_gets(BASE_S * S + 360 * S, 45008)
    return pcap(239, [(t // S, t % S // US, _nflog(f[14:])) for t, f in frames])


@case("undecoded.pcapng")
def _undecoded() -> bytes:
    """What kshark does not open, next to a conversation it does: a link type it does not read
    (147, a user DLT) and IPsec ESP; both are counted and said, not silently dropped."""
    frames = two_gets(BASE_S * S + 420 * S, 45009)
    esp = bytes(Ether() / IP(**NODE, proto=50) / Raw(b"\x00\x00\x10\x01" + bytes(60)))
    packets = [(0, t // US, f) for t, f in frames]
    packets += [(1, frames[-1][0] // US + k, b"\x00" * 40) for k in range(3)]
    packets += [(0, frames[-1][0] // US + 10, esp)]
    return pcapng([(1, b""), (147, b"")], packets)


@case("cl-leading-zeros.pcap")
def _cl_zeros() -> bytes:
    """A request smuggled behind a Content-Length spelled with 30 leading zeros."""
    c = Conversation(BASE_S * S + 480 * S, 45013)
    c.handshake()
    body = b"q=" + b"x" * 48
    c.send(
        True,
        b"POST /search HTTP/1.1\r\nHost: shop.example\r\nContent-Length: %s50\r\n\r\n%s"
        b"GET /admin HTTP/1.1\r\nHost: shop.example\r\n\r\n" % (b"0" * 30, body),
    )
    c.packet(False, "A")
    c.send(False, ok(b"results") + ok(b"admin"))
    c.packet(True, "A")
    c.close()
    return pcap_of(c.frames)


@case("te-obs-fold.pcap")
def _te_fold() -> bytes:
    """A Transfer-Encoding folded onto a continuation line (obs-fold), then a second request."""
    c = Conversation(BASE_S * S + 540 * S, 45014)
    c.handshake()
    c.send(
        True,
        b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n" + get("/after"),
    )
    c.packet(False, "A")
    c.send(False, ok(b"stored") + ok(b"next"))
    c.packet(True, "A")
    c.close()
    return pcap_of(c.frames)


def big_content() -> bytes:
    """10 MiB of text that gzip compresses about 1000:1 (a log export, say)."""
    line = b"2024-03-01T11:00:00Z INFO request served path=/api/items status=200\n"
    return (line * ((10 << 20) // len(line) + 1))[: 10 << 20]


def gzip_response(content: bytes) -> bytes:
    gz = gzip.compress(content, compresslevel=9, mtime=0)
    return ok(gz, "Content-Encoding: gzip")


@case("gzip-10mib.pcap")
def _gzip_10mib() -> bytes:
    """One response whose 10 KiB gzip body decodes to 10 MiB."""
    c = Conversation(BASE_S * S + 600 * S, 45015)
    c.handshake()
    c.exchange(get("/export.log"), gzip_response(big_content()))
    c.close()
    return pcap_of(c.frames)


def build(out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in CASES.items():
        (out_dir / name).write_bytes(make())
    return sorted(CASES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--out", type=Path, default=OUT, help="directory to write (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    for name in build(args.out):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
