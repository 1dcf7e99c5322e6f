#!/usr/bin/env python3
"""Regenerates the golden fixtures under fixtures/ and what each one must turn into.

Every capture here is crafted with scapy from an explicit script of TCP segments: handshake,
HTTP messages split into segments, and whatever goes wrong on purpose (reordering, loss,
retransmission, a reset). The expected entries are derived from what the script sends — the
bodies it encoded, the packet times it set, the addresses it used — never from running our
pipeline, and are written to fixtures/expected.json for tests/golden/test_fixtures.py.

Deterministic on purpose (tests/golden/test_fixtures_uptodate.py regenerates into a temporary
directory and compares bytes): fixed timestamps, ISNs, ports, MACs and IP ids, compression with
fixed levels and a zero gzip mtime, no randomness.

    .venv/bin/python scripts/make_fixtures.py            # rewrites fixtures/
    .venv/bin/python scripts/make_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import brotli
import zstandard
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import EDecimal, PcapNgWriter

REPO = Path(__file__).resolve().parent.parent
US = 1_000
MS = 1_000_000
S = 1_000_000_000
# 2024-03-01T09:00:00Z; fixture k starts k minutes later, at a sub-millisecond offset so that
# startTime's fraction and the millisecond floor of `timestamp` are both exercised.
BASE_NS = 1_709_283_600 * S
MSS = 1448
SEQ_MOD = 1 << 32
# What the decoder counts for a capture with IP fragments (capture/decode.py DecodeStats), in
# expected.json under "decode" for the fixtures that have fragments.
DECODE_COUNTS = (
    "fragments",
    "fragments_reassembled",
    "fragments_duplicate",
    "fragments_dropped",
    "fragments_timeout",
)
FRAG_TIMEOUT_NS = 30 * 1_000_000_000  # Linux's ipfrag_time, and capture/ipfrag.py's default

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

MAC_CLIENT = "02:42:0a:01:00:0b"
MAC_SERVER = "02:42:0a:02:00:14"

UA_CURL = "curl/8.5.0"
UA_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0"
UA_GO = "Go-http-client/1.1"
UA_PY = "python-requests/2.31.0"
SERVER_NGINX = "nginx/1.25.4"
SERVER_APACHE = "Apache/2.4.58 (Unix)"


# -- HTTP messages ------------------------------------------------------------------------------


@dataclass
class Msg:
    """One HTTP message as it goes on the wire, plus what a dissector should recover from it."""

    start: str  # request line or status line
    headers: list[tuple[str, str]]
    body_wire: bytes = b""  # body bytes as sent (chunked framing included)
    body: bytes = b""  # de-chunked body, still content-encoded
    decoded: bytes = b""  # after content decoding

    @property
    def head(self) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def wire(self) -> bytes:
        return self.head + self.body_wire

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def version(self) -> str:
        parts = self.start.split(" ")
        return parts[2] if self.is_request else parts[0]

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("HTTP/")


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    length: bool = True,
) -> Msg:
    hdrs = list(headers)
    if body and length:
        hdrs.append(("Content-Length", str(len(body))))
    return Msg(f"{method} {target} {version}", hdrs, body, body, body)


def encode(content: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return content
    if encoding == "gzip":
        buf = io.BytesIO()
        # mtime=0 and no file name: the same input always gives the same bytes.
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            gz.write(content)
        return buf.getvalue()
    if encoding == "deflate":  # what RFC 9110 means by deflate: a zlib stream
        return zlib.compress(content, 9)
    if encoding == "raw-deflate":  # what some servers (old IIS) send instead
        co = zlib.compressobj(9, zlib.DEFLATED, -15)
        return co.compress(content) + co.flush()
    if encoding == "br":
        return bytes(brotli.compress(content, quality=11))
    if encoding == "zstd":
        # one frame with its content size and a checksum, single-threaded: deterministic
        cctx = zstandard.ZstdCompressor(level=19, write_checksum=True, threads=0)
        return cctx.compress(content)
    raise ValueError(encoding)


def chunked(body: bytes, sizes: list[int], trailers: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    """Chunked framing with the given chunk sizes (the rest in a last chunk); the first chunk
    carries a chunk extension, as some servers send, which a dissector must ignore."""
    out = []
    pos = 0
    for i, n in enumerate([*sizes, len(body) - sum(sizes)]):
        if n <= 0:
            continue
        ext = ";src=cache" if i == 0 else ""
        out.append(f"{n:x}{ext}\r\n".encode() + body[pos : pos + n] + b"\r\n")
        pos += n
    assert pos == len(body)
    out.append(b"0\r\n")
    out.extend(f"{k}: {v}\r\n".encode() for k, v in trailers)
    out.append(b"\r\n")
    return b"".join(out)


def response(
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    content: bytes = b"",
    *,
    encoding: str | None = None,
    version: str = "HTTP/1.1",
    framing: str = "length",  # "length" | "chunked" | "close" | "none" (HEAD/304/1xx/101)
    chunk_sizes: list[int] | None = None,
    trailers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    declared_length: int | None = None,  # HEAD: the length the GET would have had
) -> Msg:
    hdrs = list(headers)
    body = encode(content, encoding)
    if encoding is not None:
        hdrs.append(("Content-Encoding", "deflate" if encoding == "raw-deflate" else encoding))
    if framing == "length":
        hdrs.append(("Content-Length", str(len(body))))
        body_wire = body
    elif framing == "chunked":
        hdrs.append(("Transfer-Encoding", "chunked"))
        if trailers:
            hdrs.append(("Trailer", ", ".join(k for k, _ in trailers)))
        body_wire = chunked(body, chunk_sizes or [], trailers)
    elif framing == "close":
        body_wire = body
    elif framing == "none":
        if declared_length is not None:
            hdrs.append(("Content-Length", str(declared_length)))
        body = body_wire = content = b""
    else:
        raise ValueError(framing)
    return Msg(f"{version} {status} {reason}", hdrs, body_wire, body, content)


def http_date(ts_ns: int) -> str:
    return formatdate(ts_ns // S, usegmt=True)


def rfc3339(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, S)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


# -- captures -----------------------------------------------------------------------------------


@dataclass
class Frame:
    ts_ns: int
    side: int  # 0 = sent by the client, 1 = by the server
    conn: int  # index into Fixture.conns
    l3: Packet  # IP or IPv6 packet
    payload: int  # TCP payload length (used to number streams)
    filed: bool = True  # False: goes to no connection's pcap (a fragment of a lost datagram)


@dataclass
class Fixture:
    name: str  # file name under fixtures/
    what: str  # one line: what it exercises
    link: str = "ether"  # ether | vlan | qinq | sll | sll2 | null | raw
    fmt: str = "pcap"  # pcap | pcapng-ns | pcap-gz
    truncate_last: bool = False
    start_ns: int = 0
    clock: int = 0
    frames: list[Frame] = field(default_factory=list)
    conns: list[Conn] = field(default_factory=list)
    frag_id: int = 0x5EED0000  # IPv6 fragment identification, per fixture
    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def advance(self, dt_ns: int) -> int:
        self.clock += dt_ns
        return self.clock

    @property
    def linktype(self) -> int:
        return {
            "ether": LINKTYPE_ETHERNET,
            "vlan": LINKTYPE_ETHERNET,
            "qinq": LINKTYPE_ETHERNET,
            "sll": LINKTYPE_LINUX_SLL,
            "sll2": LINKTYPE_LINUX_SLL2,
            "null": LINKTYPE_NULL,
            "raw": LINKTYPE_RAW,
        }[self.link]

    def frame_bytes(self, f: Frame) -> bytes:
        """The link-layer frame around one IP packet. Both directions are captured on the same
        interface; the SLL packet type says which way it went (0 = to us, 4 = from us)."""
        ip = bytes(f.l3)
        ethertype = 0x86DD if isinstance(f.l3, IPv6) else 0x0800
        src, dst = (MAC_CLIENT, MAC_SERVER) if f.side == 0 else (MAC_SERVER, MAC_CLIENT)
        if self.link == "ether":
            return bytes(Ether(src=src, dst=dst, type=ethertype)) + ip
        if self.link == "vlan":
            return bytes(Ether(src=src, dst=dst) / Dot1Q(vlan=100, prio=0, type=ethertype)) + ip
        if self.link == "qinq":
            outer = Ether(src=src, dst=dst, type=0x88A8) / Dot1AD(vlan=200)
            return bytes(outer / Dot1Q(vlan=100, type=ethertype)) + ip
        # Captured on the server: packets from the client arrive (0), the server's leave (4).
        pkttype = 0 if f.side == 0 else 4
        if self.link == "sll":
            sll = CookedLinux(pkttype=pkttype, lladdrtype=1, lladdrlen=6, proto=ethertype)
            sll.src = bytes.fromhex(src.replace(":", "")) + b"\0\0"
            return bytes(sll) + ip
        if self.link == "sll2":
            sll2 = CookedLinuxV2(
                proto=ethertype, ifindex=2, lladdrtype=1, pkttype=pkttype, lladdrlen=6
            )
            sll2.src = bytes.fromhex(src.replace(":", "")) + b"\0\0"
            return bytes(sll2) + ip
        if self.link == "null":
            # BSD loopback: the address family in the writer's byte order (little-endian here).
            family = 2 if ethertype == 0x0800 else 30
            return struct.pack("<I", family) + ip
        if self.link == "raw":
            return ip
        raise ValueError(self.link)


@dataclass
class Conn:
    """One TCP connection: tracks each side's next sequence number so every segment carries
    correct seq/ack values, and numbers the entries expected from it."""

    fx: Fixture
    client: tuple[str, int]
    server: tuple[str, int]
    isn: tuple[int, int]
    nxt: list[int] = field(default_factory=list)
    ipid: list[int] = field(default_factory=list)
    index: int = 0
    entries: int = 0

    def __post_init__(self) -> None:
        self.nxt = [self.isn[0] % SEQ_MOD, self.isn[1] % SEQ_MOD]
        self.index = len(self.fx.conns)
        self.ipid = [0x1F00 + 0x301 * self.index, 0x6A00 + 0x1C3 * self.index]
        self.fx.conns.append(self)

    @property
    def v6(self) -> bool:
        return ":" in self.client[0]

    def _packet(
        self,
        side: int,
        flags: str,
        seq: int,
        payload: bytes,
        ack: int | None = None,
        sack: tuple[int, int] | None = None,
    ) -> Packet:
        src, dst = (self.client, self.server) if side == 0 else (self.server, self.client)
        options: list[tuple[str, Any]] = []
        if "S" in flags:
            options = [("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7)]
        elif sack is not None:
            options = [("NOP", None), ("NOP", None), ("SAck", sack)]
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            seq=seq % SEQ_MOD,
            ack=(self.nxt[1 - side] if ack is None else ack) if "A" in flags else 0,
            flags=flags,
            window=64240 if "S" in flags else 502,
            options=options,
        )
        if self.v6:
            l3: Packet = IPv6(src=src[0], dst=dst[0], hlim=64) / tcp
        else:
            self.ipid[side] = (self.ipid[side] + 1) & 0xFFFF
            l3 = IP(src=src[0], dst=dst[0], ttl=64, id=self.ipid[side], flags="DF") / tcp
        if payload:
            l3 = l3 / Raw(payload)
        return l3

    def emit(
        self,
        side: int,
        flags: str,
        payload: bytes = b"",
        *,
        dt: int,
        seq: int | None = None,
        ack: int | None = None,
        sack: tuple[int, int] | None = None,
        captured: bool = True,
    ) -> int:
        """Sends one segment `dt` ns after the previous packet. With `seq` given it is a
        retransmission (or a reordered segment made earlier) and the side's next sequence
        number does not move. `ack` overrides the acknowledgement (default: everything the
        peer has sent so far). Returns the packet's time."""
        ts = self.fx.advance(dt)
        s = self.nxt[side] if seq is None else seq
        pkt = self._packet(side, flags, s, payload, ack, sack)
        if seq is None:
            used = len(payload) + ("S" in flags) + ("F" in flags)
            self.nxt[side] = (self.nxt[side] + used) % SEQ_MOD
        if captured:
            self.fx.frames.append(Frame(ts, side, self.index, pkt, len(payload)))
        return ts

    def emit_fragments(
        self,
        side: int,
        flags: str,
        payload: bytes,
        *,
        dt: int,
        mtu: int,
        seq: int | None = None,
        order: list[int] | None = None,
        lost: Iterable[int] = (),
        dup: Iterable[int] = (),
        spacing: int = 15 * US,
    ) -> int:
        """Sends one segment across a link of this MTU, which cuts its IP datagram into
        fragments (RFC 791 / RFC 8200: data in multiples of 8 bytes, every fragment with the IP
        header, IPv6 with a fragment header). They are captured in ``order`` (fragment indices,
        default in order), ``lost`` ones not at all, ``dup`` ones a second time right after.
        Returns the time of the fragment that completes the datagram (the decoder gives the
        segment that time), or 0 if one was lost; ``seq`` as in `emit`."""
        s = self.nxt[side] if seq is None else seq
        pkt = self._packet(side, flags, s, payload)
        if seq is None:
            used = len(payload) + ("S" in flags) + ("F" in flags)
            self.nxt[side] = (self.nxt[side] + used) % SEQ_MOD
        whole = bytes(pkt)  # the TCP checksum is computed over the unfragmented datagram
        frags: list[Packet] = []
        if self.v6:
            data = whole[40:]
            step = (mtu - 40 - 8) // 8 * 8
            self.fx.frag_id += 1
            for pos in range(0, len(data), step):
                more = pos + step < len(data)
                frag = IPv6ExtHdrFragment(nh=6, offset=pos // 8, m=int(more), id=self.fx.frag_id)
                frags.append(
                    IPv6(src=pkt.src, dst=pkt.dst, hlim=64) / frag / Raw(data[pos : pos + step])
                )
        else:
            data = whole[20:]
            step = (mtu - 20) // 8 * 8
            for pos in range(0, len(data), step):
                more = pos + step < len(data)
                ip = IP(
                    src=pkt.src,
                    dst=pkt.dst,
                    ttl=64,
                    id=pkt.id,
                    flags="MF" if more else 0,
                    frag=pos // 8,
                    proto=6,
                )
                frags.append(ip / Raw(data[pos : pos + step]))
        assert len(frags) > 1, "the datagram fits the MTU"
        lost, dup = set(lost), set(dup)
        captured: list[Frame] = []
        seen: set[int] = set()
        completed = 0
        for i in order if order is not None else range(len(frags)):
            if i in lost:
                continue
            for _ in range(2 if i in dup else 1):
                ts = self.fx.advance(spacing if captured else dt)
                captured.append(Frame(ts, side, self.index, frags[i], len(payload)))
                if i not in seen:
                    seen.add(i)
                    if len(seen) == len(frags):
                        completed = ts
        self.fx.frames.extend(captured)
        counts = self.fx.notes.setdefault("decode", dict.fromkeys(DECODE_COUNTS, 0))
        counts["fragments_duplicate"] += len(dup)
        if lost:
            # The datagram never completes: its fragments belong to no connection's pcap.
            for f in captured:
                f.filed = False
                f.payload = 0
            counts["fragments"] += len(captured)
        else:
            # A copy arriving after the datagram completed would start a new one, and no pcap.
            assert captured[-1].ts_ns == completed, "duplicate of the completing fragment"
            counts["fragments"] += len(captured) - 1
            counts["fragments_reassembled"] += 1
        return completed

    def fragments_time_out(self, count: int) -> None:
        """Notes that the fragments of one lost datagram (``count`` were captured) must be
        discarded by the decoder's 30 s timeout."""
        counts = self.fx.notes["decode"]
        counts["fragments_timeout"] += 1
        counts["fragments_dropped"] += count

    def handshake(self, rtt: int = 310 * US) -> None:
        self.emit(0, "S", dt=2 * MS)
        self.emit(1, "SA", dt=21 * US)
        self.emit(0, "A", dt=rtt)

    def carve(self, side: int, data: bytes, mss: int = MSS) -> list[tuple[int, bytes]]:
        """Allocates sequence space for `data` in MSS-sized segments without sending them."""
        segs = []
        for pos in range(0, len(data), mss):
            piece = data[pos : pos + mss]
            segs.append((self.nxt[side], piece))
            self.nxt[side] = (self.nxt[side] + len(piece)) % SEQ_MOD
        return segs

    def put(self, side: int, seg: tuple[int, bytes], *, dt: int, last: bool = False) -> int:
        return self.emit(side, "PA" if last else "A", seg[1], dt=dt, seq=seg[0])

    def send(
        self,
        side: int,
        data: bytes,
        *,
        dt: int,
        mss: int = MSS,
        spacing: int = 40 * US,
        fin: bool = False,
    ) -> int:
        """Sends `data` as back-to-back segments; returns the time of the first one."""
        segs = self.carve(side, data, mss)
        first = 0
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            flags = ("FPA" if fin else "PA") if last else "A"
            ts = self.emit(side, flags, seg[1], dt=dt if i == 0 else spacing, seq=seg[0])
            if last and fin:
                self.nxt[side] = (self.nxt[side] + 1) % SEQ_MOD
            first = first or ts
        return first

    def ack(self, side: int, dt: int = 35 * US) -> int:
        return self.emit(side, "A", dt=dt)

    def close(self, first: int = 0, dt: int = 1 * MS) -> None:
        self.emit(first, "FA", dt=dt)
        self.emit(1 - first, "FA", dt=45 * US)
        self.emit(first, "A", dt=280 * US)

    def exchange(
        self,
        req: Msg,
        resp: Msg,
        *,
        think: int = 900 * US,
        server_time: int = 7_600 * US,
        mss: int = MSS,
        **expect: Any,
    ) -> None:
        """The ordinary keep-alive round trip: request, ACK, response, ACK; expected entry."""
        t_req = self.send(0, req.wire, dt=think, mss=mss)
        self.ack(1)
        t_resp = self.send(1, resp.wire, dt=server_time, mss=mss)
        self.ack(0)
        self.expect(req, resp, t_req, t_resp, **expect)

    def expect(
        self,
        req: Msg | None,
        resp: Msg | None,
        t_req: int | None,
        t_resp: int | None,
        *,
        error: str | None = None,
        skip: Iterable[str] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Records the entry this connection must produce next, by field path."""
        e: dict[str, Any] = {}
        e["src.ip"], e["src.port"] = self.client[0], str(self.client[1])
        e["dst.ip"], e["dst.port"] = self.server[0], str(self.server[1])
        e["protocol.layer3"] = "ipv6" if self.v6 else "ip"
        e["protocol.layer4"] = "tcp"
        e["tls"] = False
        e["outgoing"] = False
        if req is not None:
            version = req.version
        elif resp is not None:
            version = resp.version
        else:
            raise ValueError("an entry needs a request or a response")
        e["protocol.version"] = version.removeprefix("HTTP/")
        if req is not None and t_req is not None:
            target = req.start.split(" ")[1]
            e["request.method"] = req.start.split(" ")[0]
            e["request.url"] = target
            e["request.targetUri"] = target
            e["request.path"] = target.split("?", 1)[0]
            e["request.pathSegments"] = e["request.path"].split("/")[1:]
            e["request.httpVersion"] = req.version
            e["request.bodySize"] = len(req.body)
            e["request.headersSize"] = -1
            e["requestSize"] = len(req.wire)
            for name in ("Host", "User-Agent", "Accept", "Content-Type"):
                if req.header(name) is not None:
                    e[f"request.headers.{name}"] = req.header(name)
            if req.body:
                ctype = req.header("Content-Type") or ""
                e["request.postData.mimeType"] = ctype.split(";", 1)[0].strip()
                e["request.postData.text"] = req.body.decode()
            if "?" not in target:
                e["request.queryString"] = {}
            if req.header("Cookie") is None:
                e["request.cookies"] = {}
            e["timestamp"] = t_req // MS
            e["startTime"] = rfc3339(t_req)
        elif t_resp is not None:
            # No request: the pair's first captured byte is the response's.
            e["timestamp"] = t_resp // MS
            e["startTime"] = rfc3339(t_resp)
        if resp is not None and t_resp is not None:
            status, reason = resp.start.split(" ", 2)[1:]
            e["response.status"] = int(status)
            e["response.statusText"] = reason
            e["response.httpVersion"] = resp.version
            e["response.bodySize"] = len(resp.body)
            e["response.headersSize"] = -1
            e["responseSize"] = len(resp.wire)
            e["response.content.size"] = len(resp.decoded)
            redirect = 300 <= int(status) < 400
            e["response.redirectURL"] = (resp.header("Location") or "") if redirect else ""
            for name in ("Server", "Content-Type", "Content-Encoding", "Transfer-Encoding"):
                if resp.header(name) is not None:
                    e[f"response.headers.{name}"] = resp.header(name)
            if resp.header("Content-Type") is not None:
                e["response.content.mimeType"] = resp.header("Content-Type")
            if resp.decoded:
                e["response.content.encoding"] = "base64"
                e["response.content.text"] = base64.b64encode(resp.decoded).decode()
            else:
                e["response.content.text"] = None  # None: the key must be absent
            if resp.header("Set-Cookie") is None:
                e["response.cookies"] = {}
        elif resp is None:
            e["response"] = {}
        if req is not None and resp is not None and t_req is not None and t_resp is not None:
            elapsed_ns = t_resp - t_req
            # Packet times are chosen so that rounding is never a tie: "rounded" is unambiguous.
            if elapsed_ns % MS == MS // 2:
                raise ValueError(f"{self.fx.name}: elapsed time {elapsed_ns} ns is a rounding tie")
            e["elapsedTime"] = max(0, (elapsed_ns + MS // 2) // MS)
        e["error"] = error
        for key in skip:
            e.pop(key, None)
        if extra:
            e.update(extra)
        self.fx.entries.append({"conn": self.index, "index": self.entries, "fields": e})
        self.entries += 1


# -- realistic traffic helpers ------------------------------------------------------------------

CLIENT_IP = "10.1.0.11"
SERVER_IP = "10.2.0.20"


def get(target: str, host: str = "shop.example", ua: str = UA_CURL, **kw: Any) -> Msg:
    extra = kw.pop("headers", [])
    return request(
        "GET", target, [("Host", host), ("User-Agent", ua), ("Accept", "*/*"), *extra], **kw
    )


def json_resp(fx: Fixture, obj: Any, status: int = 200, reason: str = "OK", **kw: Any) -> Msg:
    extra = kw.pop("headers", [])
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    hdrs = [
        ("Server", SERVER_NGINX),
        ("Date", http_date(fx.clock)),
        ("Content-Type", "application/json; charset=utf-8"),
        *extra,
    ]
    return response(status, reason, hdrs, body, **kw)


def text_resp(fx: Fixture, body: bytes, ctype: str = "text/plain; charset=utf-8", **kw: Any) -> Msg:
    extra = kw.pop("headers", [])
    status = kw.pop("status", 200)
    reason = kw.pop("reason", "OK")
    server = kw.pop("server", SERVER_NGINX)
    hdrs = [("Server", server), ("Date", http_date(fx.clock)), ("Content-Type", ctype), *extra]
    return response(status, reason, hdrs, body, **kw)


def products(n: int, offset: int = 0) -> list[dict[str, Any]]:
    colours = ["red", "blue", "green", "black", "white", "orange"]
    return [
        {
            "id": f"{0x3395A43E + 7919 * i:08x}-2d88-40de-b95f-{0xE00E1502085B + i:012x}",
            "name": f"Sock model {i}",
            "price": 7.99 + i,
            "tags": [colours[i % 6], colours[(i * 5 + 1) % 6]],
            "count": (i * 37) % 101,
            "description": f"Comfortable sock number {i}, knitted with care.",
        }
        for i in range(offset, offset + n)
    ]


def js_source(n: int) -> bytes:
    return "".join(
        f"export function handler{i}(event) {{ return fetch('/api/v{i % 3}/items/' + event.id); }}\n"
        for i in range(n)
    ).encode()


def csv_rows(n: int) -> bytes:
    rows = ["ts,user,action,amount"]
    rows += [
        f"2024-03-01T09:{i % 60:02d}:00Z,user{i % 17},purchase,{(i * 13) % 97}.50" for i in range(n)
    ]
    return ("\n".join(rows) + "\n").encode()


def html_page(title: str, paragraphs: int) -> bytes:
    body = "".join(
        f"<p>Paragraph {i}: the quick brown fox jumps over the lazy dog.</p>\n"
        for i in range(paragraphs)
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n<h1>{title}</h1>\n{body}</body></html>\n"
    ).encode()


def conn(
    fx: Fixture,
    cport: int,
    *,
    client: str = CLIENT_IP,
    server: str = SERVER_IP,
    sport: int = 80,
    isn: tuple[int, int] | None = None,
) -> Conn:
    if isn is None:
        n = len(fx.conns)
        isn = (0x1A2B3C4D + 0x01000193 * n + cport, 0x5E6F7081 + 0x00F00F0F * n + sport)
    return Conn(fx, (client, cport), (server, sport), isn)


# -- the fixtures -------------------------------------------------------------------------------

BUILDERS: list[Callable[[Fixture], None]] = []


def fixture(name: str, what: str, **kw: Any) -> Callable[[Callable[[Fixture], None]], Any]:
    def register(fn: Callable[[Fixture], None]) -> Callable[[Fixture], None]:
        def build(fx: Fixture) -> None:
            fn(fx)

        build.spec = (name, what, kw)  # type: ignore[attr-defined]
        BUILDERS.append(build)
        return fn

    return register


@fixture(
    "short-and-keepalive.pcap",
    "three short connections (one exchange each, Connection: close) then one keep-alive "
    "connection with three exchanges: streams 1-4, index 0 on each short one, 0/1/2 on the last",
)
def _short_and_keepalive(fx: Fixture) -> None:
    for i, (target, status, reason) in enumerate(
        [
            ("/api/health", 200, "OK"),
            ("/api/version", 200, "OK"),
            ("/favicon.ico", 404, "Not Found"),
        ]
    ):
        c = conn(fx, 40001 + i)
        c.handshake()
        req = get(target, headers=[("Connection", "close")])
        if status == 200:
            resp = json_resp(fx, {"status": "ok", "n": i}, headers=[("Connection", "close")])
        else:
            page = html_page("404 Not Found", 1)
            resp = text_resp(
                fx, page, "text/html", status=404, reason=reason, headers=[("Connection", "close")]
            )
        c.exchange(req, resp)
        c.close(first=1, dt=300 * US)  # the server closes first, as with Connection: close
    c = conn(fx, 40004)
    c.handshake()
    c.exchange(get("/catalogue?size=5", ua=UA_GO), json_resp(fx, products(5)))
    c.exchange(get("/catalogue/size", ua=UA_GO), json_resp(fx, {"size": 9}), server_time=2_300 * US)
    body = json.dumps({"itemId": "3395a43e", "quantity": 2}).encode()
    post = request(
        "POST",
        "/cart",
        [
            ("Host", "shop.example"),
            ("User-Agent", UA_GO),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    c.exchange(
        post,
        json_resp(fx, {"ok": True}, 201, "Created", headers=[("Location", "/cart/17")]),
        server_time=11_200 * US,
    )
    c.close(first=0)


@fixture(
    "out-of-order.pcap",
    "response segments captured in the order 2,1,4,3 and a request whose second segment "
    "arrives before its first: one entry, bodies intact",
)
def _out_of_order(fx: Fixture) -> None:
    c = conn(fx, 41000)
    c.handshake()
    req = get(
        "/static/app.js?v=" + "a1b2c3" * 40,
        ua=UA_FIREFOX,
        headers=[("Accept-Language", "en-US,en;q=0.5"), ("Referer", "http://shop.example/")],
    )
    segs = c.carve(0, req.wire, mss=200)
    t_req = c.put(0, segs[0], dt=900 * US)
    for seg in segs[2:]:
        c.put(0, seg, dt=30 * US)
    c.put(0, segs[1], dt=30 * US, last=True)  # the late one
    c.ack(1)
    resp = text_resp(
        fx, js_source(55), "application/javascript", headers=[("Cache-Control", "max-age=3600")]
    )
    segs = c.carve(1, resp.wire)
    assert len(segs) == 4
    c.put(1, segs[1], dt=6_100 * US)
    t_resp = c.put(1, segs[0], dt=55 * US)  # the response starts with the second packet captured
    c.put(1, segs[3], dt=40 * US, last=True)
    c.put(1, segs[2], dt=40 * US)
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "retransmission.pcap",
    "a request sent twice (RTO retransmission), then a response with a retransmitted middle "
    "segment and a spurious retransmission of its first: two intact entries",
)
def _retransmission(fx: Fixture) -> None:
    c = conn(fx, 41100)
    c.handshake()
    req = get("/api/orders/1001", ua=UA_PY)
    seg = c.carve(0, req.wire)[0]
    t_req = c.put(0, seg, dt=800 * US, last=True)
    c.put(0, seg, dt=204 * MS, last=True)  # the RTO fired: same bytes again
    c.ack(1)
    resp = json_resp(fx, {"order": 1001, "items": products(2)})
    t_resp = c.send(1, resp.wire, dt=3_400 * US)
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)

    req = get("/api/orders/1001/invoice", ua=UA_PY)
    t_req = c.send(0, req.wire, dt=1_200 * US)
    c.ack(1)
    resp = text_resp(fx, csv_rows(120), "text/csv")
    segs = c.carve(1, resp.wire)
    assert len(segs) >= 3
    t_resp = c.put(1, segs[0], dt=9_300 * US)
    for i, seg in enumerate(segs[1:], 1):
        c.put(1, seg, dt=40 * US, last=i == len(segs) - 1)
    c.put(1, segs[1], dt=210 * MS)  # middle segment again
    c.put(1, segs[0], dt=60 * US)  # and a spurious copy of the first
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "overlap.pcap",
    "response segments A and C captured, B lost, then a retransmission covering the tail of A, "
    "all of B and the head of C (same bytes): one intact entry",
)
def _overlap(fx: Fixture) -> None:
    c = conn(fx, 41200)
    c.handshake()
    req = get("/docs/guide.html", ua=UA_FIREFOX)
    t_req = c.send(0, req.wire, dt=700 * US)
    c.ack(1)
    resp = text_resp(fx, html_page("Guide", 40), "text/html; charset=utf-8")
    start = c.nxt[1]
    wire = resp.wire
    c.carve(1, wire)  # allocates the sequence space
    a, b_end = 1000, 2000
    assert len(wire) > 2600
    t_resp = c.emit(1, "A", wire[:a], dt=5_200 * US, seq=start)
    c.emit(1, "PA", wire[b_end:], dt=40 * US, seq=start + b_end)  # C; B was lost
    # The client got A and C but not B: it ACKs the end of A and SACKs C.
    c.emit(
        0,
        "A",
        dt=300 * US,
        ack=(start + a) % SEQ_MOD,
        sack=((start + b_end) % SEQ_MOD, (start + len(wire)) % SEQ_MOD),
    )
    # The sender repacketises: tail of A, all of B, head of C in one segment.
    c.emit(1, "PA", wire[a - 300 : b_end + 300], dt=12 * MS, seq=start + a - 300)
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "missing-syn.pcap",
    "keep-alive connection already open when the capture started (no SYN/SYN-ACK): two "
    "entries, index 0 and 1, client still src",
)
def _missing_syn(fx: Fixture) -> None:
    c = conn(fx, 52344, server="10.2.0.30", sport=8080)
    # The handshake and earlier exchanges happened before the capture began.
    c.nxt = [(c.nxt[0] + 5123) % SEQ_MOD, (c.nxt[1] + 80211) % SEQ_MOD]
    c.exchange(get("/orders?page=2", host="orders:8080", ua=UA_GO), json_resp(fx, products(2, 10)))
    c.exchange(get("/orders?page=3", host="orders:8080", ua=UA_GO), json_resp(fx, products(2, 12)))
    c.close()


@fixture(
    "gap-resync.pcap",
    "keep-alive with four exchanges; the middle segment of the second response was not captured: "
    "index 1 has a dissection error (body bytes lost), indices 0, 2 and 3 are intact",
)
def _gap_resync(fx: Fixture) -> None:
    c = conn(fx, 41300)
    c.handshake()
    for i in range(4):
        req = get(f"/items/{i + 1}", ua=UA_GO)
        resp = json_resp(fx, {"item": i + 1, "related": products(20, i)})
        t_req = c.send(0, req.wire, dt=1_100 * US)
        c.ack(1)
        segs = c.carve(1, resp.wire)
        assert len(segs) >= 3
        t_resp = 0
        for j, seg in enumerate(segs):
            lost = i == 1 and j == 1
            ts = c.emit(
                1,
                "PA" if j == len(segs) - 1 else "A",
                seg[1],
                dt=4_300 * US if j == 0 else 40 * US,
                seq=seg[0],
                captured=not lost,
            )
            t_resp = t_resp or ts
        c.ack(0)
        if i == 1:
            # Lost bytes inside a body of known length keep the framing (capture/http1.py):
            # the response completes with a dissection error and the next ones are intact.
            c.expect(
                req,
                resp,
                t_req,
                t_resp,
                error="dissection",
                skip=(
                    "response.content.size",
                    "response.content.text",
                    "response.content.encoding",
                ),
            )
        else:
            c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "chunked-trailers.pcap",
    "chunked response with a chunk extension and trailer fields, split mid chunk-size line, "
    "then a Content-Length response on the same connection: two entries, de-chunked bodies",
)
def _chunked_trailers(fx: Fixture) -> None:
    c = conn(fx, 41400)
    c.handshake()
    content = csv_rows(60)
    req = get("/events/export.csv", ua=UA_CURL)
    digest = hashlib.sha256(content).hexdigest()
    resp = text_resp(
        fx,
        content,
        "text/csv; charset=utf-8",
        framing="chunked",
        chunk_sizes=[700, 1024, 5],
        trailers=[("X-Checksum", f"sha256={digest}"), ("X-Rows", "60")],
    )
    t_req = c.send(0, req.wire, dt=900 * US)
    c.ack(1)
    wire = resp.wire
    cut = wire.index(b"\r\n400\r\n") + 3  # inside "400\r\n": the size line is split
    segs = c.carve(1, wire[:cut], mss=4000) + c.carve(1, wire[cut:], mss=600)
    t_resp = c.put(1, segs[0], dt=6_600 * US)
    for i, seg in enumerate(segs[1:], 1):
        c.put(1, seg, dt=40 * US, last=i == len(segs) - 1)
    c.ack(0)
    # Trailer fields are appended to the response headers (capture/http1.py).
    c.expect(
        req,
        resp,
        t_req,
        t_resp,
        extra={
            "response.headers.X-Checksum": f"sha256={digest}",
            "response.headers.X-Rows": "60",
            "response.headers.Trailer": "X-Checksum, X-Rows",
        },
    )
    c.exchange(get("/events/count", ua=UA_CURL), json_resp(fx, {"count": 60}))
    c.close()


@fixture(
    "gzip.pcap",
    "Content-Encoding: gzip with Content-Length, then gzip inside chunked framing: content.text "
    "is the original JSON, bodySize the compressed length",
)
def _gzip(fx: Fixture) -> None:
    c = conn(fx, 41500)
    c.handshake()
    ae = [("Accept-Encoding", "gzip, deflate, br")]
    c.exchange(
        get("/api/products", ua=UA_FIREFOX, headers=ae),
        json_resp(fx, products(30), encoding="gzip", headers=[("Vary", "Accept-Encoding")]),
    )
    c.exchange(
        get("/api/products?page=2", ua=UA_FIREFOX, headers=ae),
        json_resp(fx, products(30, 30), encoding="gzip", framing="chunked", chunk_sizes=[256, 256]),
    )
    c.close()


@fixture(
    "brotli.pcap",
    "Content-Encoding: br: content.text is the original HTML",
)
def _brotli(fx: Fixture) -> None:
    c = conn(fx, 41600)
    c.handshake()
    c.exchange(
        get("/blog/", ua=UA_FIREFOX, headers=[("Accept-Encoding", "gzip, deflate, br")]),
        text_resp(fx, html_page("Blog", 60), "text/html; charset=utf-8", encoding="br"),
    )
    c.close()


@fixture(
    "deflate.pcap",
    "Content-Encoding: deflate as a zlib stream, then as raw deflate (both seen in the wild): "
    "two entries with the original bodies",
)
def _deflate(fx: Fixture) -> None:
    c = conn(fx, 41700)
    c.handshake()
    ae = [("Accept-Encoding", "deflate")]
    c.exchange(
        get("/api/report", ua=UA_PY, headers=ae),
        json_resp(
            fx, {"rows": products(10)}, encoding="deflate", headers=[("Vary", "Accept-Encoding")]
        ),
    )
    c.exchange(
        get("/legacy/report.txt", ua=UA_PY, headers=ae),
        text_resp(fx, csv_rows(80), "text/plain", encoding="raw-deflate", server=SERVER_APACHE),
    )
    c.close()


@fixture(
    "pipelining.pcap",
    "three GETs sent back to back before any response, then three responses (the last two in "
    "one segment): entries 0,1,2 pair in order",
)
def _pipelining(fx: Fixture) -> None:
    c = conn(fx, 41800)
    c.handshake()
    reqs = [get(f"/img/{n}.png", ua=UA_FIREFOX) for n in ("a", "b", "c")]
    t_reqs = [c.send(0, r.wire, dt=900 * US if i == 0 else 60 * US) for i, r in enumerate(reqs)]
    c.ack(1)
    pngs = [
        b"\x89PNG\r\n\x1a\n" + bytes((i * 7 + n) % 256 for i in range(200 + 100 * n))
        for n in range(3)
    ]
    resps = [
        text_resp(fx, png, "image/png", headers=[("ETag", f'"img-{n}"')])
        for n, png in enumerate(pngs)
    ]
    t0 = c.send(1, resps[0].wire, dt=3_700 * US)
    t12 = c.send(1, resps[1].wire + resps[2].wire, dt=50 * US)
    c.ack(0)
    for req, resp, t_req, t_resp in zip(reqs, resps, t_reqs, [t0, t12, t12], strict=True):
        c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "expect-100-continue.pcap",
    "POST with Expect: 100-continue, interim 100 Continue, body, then 201: one entry with the "
    "final status and the request body",
)
def _expect_100(fx: Fixture) -> None:
    c = conn(fx, 41900)
    c.handshake()
    body = json.dumps({"name": "upload.bin", "parts": [f"part-{i}" for i in range(40)]}).encode()
    req = request(
        "POST",
        "/api/uploads",
        [
            ("Host", "files.example"),
            ("User-Agent", UA_CURL),
            ("Accept", "*/*"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Expect", "100-continue"),
        ],
        body,
        length=False,
    )
    t_req = c.send(0, req.head, dt=900 * US)
    interim = response(100, "Continue", [], framing="none")
    c.send(1, interim.wire, dt=400 * US)
    c.send(0, req.body_wire, dt=250 * US)
    c.ack(1)
    resp = json_resp(
        fx,
        {"id": "u-77", "size": len(body)},
        201,
        "Created",
        headers=[("Location", "/api/uploads/u-77")],
    )
    t_resp = c.send(1, resp.wire, dt=8_100 * US)
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "head.pcap",
    "HEAD answered with Content-Length but no body, then a GET on the same connection: two "
    "entries, the HEAD response has bodySize 0",
)
def _head(fx: Fixture) -> None:
    c = conn(fx, 42000)
    c.handshake()
    head = request(
        "HEAD",
        "/downloads/report.pdf",
        [("Host", "files.example"), ("User-Agent", UA_CURL), ("Accept", "*/*")],
    )
    resp = response(
        200,
        "OK",
        [
            ("Server", SERVER_APACHE),
            ("Date", http_date(fx.clock)),
            ("Content-Type", "application/pdf"),
            ("Last-Modified", "Wed, 28 Feb 2024 17:00:00 GMT"),
            ("Accept-Ranges", "bytes"),
        ],
        framing="none",
        declared_length=48213,
    )
    c.exchange(head, resp, extra={"response.headers.Content-Length": "48213"})
    c.exchange(
        get("/downloads/readme.txt", host="files.example"),
        text_resp(fx, b"Read me first.\n" * 20, server=SERVER_APACHE),
    )
    c.close()


@fixture(
    "not-modified.pcap",
    "conditional GET answered 304 Not Modified (no body, no length), then a 200 on the same "
    "connection: two entries",
)
def _not_modified(fx: Fixture) -> None:
    c = conn(fx, 42100)
    c.handshake()
    req = get(
        "/static/logo.png",
        ua=UA_FIREFOX,
        headers=[
            ("If-None-Match", '"5f3a-61b2"'),
            ("If-Modified-Since", "Tue, 27 Feb 2024 10:00:00 GMT"),
        ],
    )
    resp = response(
        304,
        "Not Modified",
        [
            ("Server", SERVER_NGINX),
            ("Date", http_date(fx.clock)),
            ("ETag", '"5f3a-61b2"'),
            ("Cache-Control", "max-age=600"),
        ],
        framing="none",
    )
    c.exchange(req, resp)
    c.exchange(
        get("/static/site.css", ua=UA_FIREFOX),
        text_resp(fx, b"body { margin: 0; }\n" * 30, "text/css"),
    )
    c.close()


@fixture(
    "http10-close.pcap",
    "HTTP/1.0 request and a response with no Content-Length, delimited by the server's FIN "
    "(on the last data segment): one entry, version 1.0",
)
def _http10(fx: Fixture) -> None:
    c = conn(fx, 42200, sport=80)
    c.handshake()
    req = request(
        "GET",
        "/legacy/status",
        [("Host", "legacy.example"), ("User-Agent", "Wget/1.21.4"), ("Accept", "*/*")],
        version="HTTP/1.0",
    )
    resp = text_resp(
        fx,
        csv_rows(50),
        "text/plain",
        version="HTTP/1.0",
        framing="close",
        server="BaseHTTP/0.6 Python/3.11.8",
    )
    t_req = c.send(0, req.wire, dt=900 * US)
    c.ack(1)
    t_resp = c.send(1, resp.wire, dt=2_800 * US, fin=True)
    c.emit(0, "FA", dt=200 * US)
    c.emit(1, "A", dt=40 * US)
    c.expect(req, resp, t_req, t_resp)


def ws_frame(payload: bytes, opcode: int = 1, mask: bytes | None = None) -> bytes:
    assert len(payload) < 126
    if mask is None:
        return bytes([0x80 | opcode, len(payload)]) + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


@fixture(
    "websocket-upgrade.pcap",
    "GET with Upgrade: websocket, 101 Switching Protocols, then websocket frames whose payloads "
    "look like HTTP: exactly one entry (101)",
)
def _websocket(fx: Fixture) -> None:
    c = conn(fx, 42300, sport=8080)
    c.handshake()
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    accept = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    req = request(
        "GET",
        "/ws/chat?room=lobby",
        [
            ("Host", "chat.example:8080"),
            ("User-Agent", UA_FIREFOX),
            ("Accept", "*/*"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", "http://chat.example:8080"),
        ],
    )
    resp = response(
        101,
        "Switching Protocols",
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)],
        framing="none",
    )
    c.exchange(req, resp, server_time=1_300 * US, extra={"request.queryString": {"room": "lobby"}})
    mask = bytes([0x37, 0xFA, 0x21, 0x3D])
    c.send(0, ws_frame(b'{"type":"join","nick":"alice"}', mask=mask), dt=20 * MS)
    c.send(1, ws_frame(b"GET /not-an-entry HTTP/1.1\r\nHost: chat.example\r\n\r\n"), dt=900 * US)
    c.ack(0)
    c.send(0, ws_frame(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", mask=mask), dt=40 * MS)
    c.send(1, ws_frame(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), dt=600 * US)
    c.send(0, ws_frame(b"\x03\xe8", opcode=8, mask=mask), dt=30 * MS)  # close 1000
    c.send(1, ws_frame(b"\x03\xe8", opcode=8), dt=300 * US)
    c.close(first=1)


def simple_get_fixture(
    fx: Fixture,
    cport: int,
    *,
    client: str = CLIENT_IP,
    server: str = SERVER_IP,
    sport: int = 80,
    path: str = "/api/ping",
) -> None:
    c = conn(fx, cport, client=client, server=server, sport=sport)
    c.handshake()
    c.exchange(
        get(path, host=f"svc:{sport}" if sport != 80 else "svc", ua=UA_GO),
        json_resp(fx, {"pong": True, "path": path}),
    )
    c.exchange(
        get(path + "/2", host=f"svc:{sport}" if sport != 80 else "svc", ua=UA_GO),
        text_resp(fx, b"second\n"),
        server_time=1_700 * US,
    )
    c.close()


@fixture(
    "ipv6.pcap", "IPv6 over Ethernet on port 8080: two entries, layer3 ipv6, compressed addresses"
)
def _ipv6(fx: Fixture) -> None:
    simple_get_fixture(
        fx, 50123, client="2001:db8:10::11", server="2001:db8:20::80", sport=8080, path="/v6/ping"
    )


@fixture("vlan.pcap", "Ethernet with an 802.1Q tag (VLAN 100): two entries", link="vlan")
def _vlan(fx: Fixture) -> None:
    simple_get_fixture(fx, 42400, path="/vlan/ping")


@fixture(
    "qinq.pcap",
    "Ethernet with 802.1ad outer (200) and 802.1Q inner (100) tags: two entries",
    link="qinq",
)
def _qinq(fx: Fixture) -> None:
    simple_get_fixture(fx, 42500, path="/qinq/ping")


@fixture("sll.pcap", "Linux cooked capture v1 (LINKTYPE 113): two entries", link="sll")
def _sll(fx: Fixture) -> None:
    simple_get_fixture(fx, 42600, path="/sll/ping")


@fixture("sll2.pcap", "Linux cooked capture v2 (LINKTYPE 276): two entries", link="sll2")
def _sll2(fx: Fixture) -> None:
    simple_get_fixture(fx, 42700, path="/sll2/ping")


@fixture(
    "null-loopback.pcap",
    "BSD NULL/loopback (LINKTYPE 0, little-endian family) on 127.0.0.1: client and server share "
    "the address, the port tells them apart",
    link="null",
)
def _null(fx: Fixture) -> None:
    simple_get_fixture(
        fx, 52000, client="127.0.0.1", server="127.0.0.1", sport=8000, path="/lo/ping"
    )


@fixture("raw-ip.pcap", "raw IP (LINKTYPE 101), no link header: two entries", link="raw")
def _raw(fx: Fixture) -> None:
    simple_get_fixture(fx, 42800, path="/raw/ping")


@fixture(
    "pcapng-ns.pcapng",
    "pcapng with if_tsresol=9 (nanosecond timestamps): startTime keeps all nine digits",
    fmt="pcapng-ns",
)
def _pcapng_ns(fx: Fixture) -> None:
    fx.advance(789)  # off the microsecond grid: only a nanosecond-aware reader gets it right
    c = conn(fx, 42900)
    c.handshake()
    c.exchange(
        get("/ns/first", ua=UA_GO), json_resp(fx, {"n": 1}), think=900_123, server_time=3_400_321
    )
    c.exchange(
        get("/ns/second", ua=UA_GO), json_resp(fx, {"n": 2}), think=1_000_007, server_time=2_655_001
    )
    c.close()


@fixture("gzip-file.pcap.gz", "the whole pcap gzip-compressed: one entry", fmt="pcap-gz")
def _gzip_file(fx: Fixture) -> None:
    c = conn(fx, 43000)
    c.handshake()
    c.exchange(get("/compressed/capture", ua=UA_CURL), json_resp(fx, {"compressed": "file"}))
    c.close()


@fixture(
    "truncated.pcap",
    "the last record (a third request) is cut in half: a warning, the two complete entries "
    "before it are kept",
    truncate_last=True,
)
def _truncated(fx: Fixture) -> None:
    c = conn(fx, 43100)
    c.handshake()
    c.exchange(get("/t/1", ua=UA_GO), json_resp(fx, {"t": 1}))
    c.exchange(get("/t/2", ua=UA_GO), json_resp(fx, {"t": 2}))
    c.send(0, get("/t/3-never-complete", ua=UA_GO).wire, dt=1 * MS)  # the record cut in half


@fixture(
    "no-response.pcap",
    "a keep-alive exchange, then a request the server only ACKs before both sides close: the "
    "second entry has error pair-not-found and an empty response",
)
def _no_response(fx: Fixture) -> None:
    c = conn(fx, 43200)
    c.handshake()
    c.exchange(get("/reports", ua=UA_PY), json_resp(fx, {"reports": 3}))
    req = get("/reports/slow?year=2023", ua=UA_PY)
    t_req = c.send(0, req.wire, dt=1 * MS)
    c.ack(1)
    c.expect(req, None, t_req, None, error="pair-not-found")
    c.close(first=0, dt=5 * S)


@fixture(
    "response-without-request.pcap",
    "capture starts mid-connection with a response whose request was not captured, then a full "
    "exchange: entry 0 is the response alone (pair-not-found), entry 1 is complete",
)
def _response_without_request(fx: Fixture) -> None:
    c = conn(fx, 52400, server="10.2.0.40")
    c.nxt = [(c.nxt[0] + 331) % SEQ_MOD, (c.nxt[1] + 9001) % SEQ_MOD]
    orphan = json_resp(fx, {"orphan": True, "items": products(3)})
    t_orphan = c.send(1, orphan.wire, dt=1 * MS)
    c.ack(0)
    # The orphan's time stands in for the missing request's; it is not asserted.
    c.expect(None, orphan, None, t_orphan, error="pair-not-found")
    c.exchange(get("/after-orphan", ua=UA_GO), json_resp(fx, {"after": "orphan"}))
    c.close()


@fixture(
    "malformed-then-valid.pcap",
    "a good exchange, then a request whose head is malformed (non-numeric Content-Length) "
    "answered 400, then a valid request: entries 0 ok, 1 dissection error with the 400, 2 ok",
)
def _malformed(fx: Fixture) -> None:
    c = conn(fx, 43300)
    c.handshake()
    c.exchange(get("/first", ua=UA_CURL), json_resp(fx, {"first": True}))
    # A head that cannot be framed (RFC 9112 6.3: an invalid Content-Length is unrecoverable).
    bad = request(
        "GET",
        "/broken",
        [("Host", "shop.example"), ("User-Agent", UA_CURL), ("Content-Length", "abc")],
        length=False,
    )
    t_bad = c.send(0, bad.wire, dt=1 * MS)
    c.ack(1)
    resp400 = text_resp(
        fx, html_page("400 Bad Request", 1), "text/html", status=400, reason="Bad Request"
    )
    t_400 = c.send(1, resp400.wire, dt=300 * US)
    c.ack(0)
    c.expect(bad, resp400, t_bad, t_400, error="dissection")
    c.exchange(get("/after", ua=UA_CURL), json_resp(fx, {"after": True}))
    c.close()


@fixture(
    "unusual-port.pcap",
    "HTTP on port 5555, recognised by content: two entries, dst.port 5555",
)
def _unusual_port(fx: Fixture) -> None:
    c = conn(fx, 43400, server="10.2.0.55", sport=5555)
    c.handshake()
    body = json.dumps({"jsonrpc": "2.0", "method": "status", "id": 1}).encode()
    rpc = request(
        "POST",
        "/rpc",
        [
            ("Host", "10.2.0.55:5555"),
            ("User-Agent", UA_GO),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    c.exchange(rpc, json_resp(fx, {"jsonrpc": "2.0", "result": "up", "id": 1}))
    c.exchange(
        get("/metrics", host="10.2.0.55:5555", ua="Prometheus/2.50.1"),
        text_resp(fx, b"# TYPE up gauge\nup 1\n", "text/plain; version=0.0.4"),
    )
    c.close()


@fixture(
    "form-post.pcap",
    "POST application/x-www-form-urlencoded answered 302: postData.params decoded in order, "
    "redirectURL from Location",
)
def _form_post(fx: Fixture) -> None:
    c = conn(fx, 43500)
    c.handshake()
    body = b"username=alice&password=p%40ss+w0rd%21&remember=on&next=%2Fdashboard%3Ftab%3D1"
    req = request(
        "POST",
        "/login",
        [
            ("Host", "shop.example"),
            ("User-Agent", UA_FIREFOX),
            ("Accept", "text/html,application/xhtml+xml"),
            ("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"),
            ("Origin", "http://shop.example"),
        ],
        body,
    )
    resp = text_resp(
        fx, b"", "text/html", status=302, reason="Found", headers=[("Location", "/dashboard?tab=1")]
    )
    params = [{"name": k, "value": v} for k, v in parse_qsl(body.decode(), keep_blank_values=True)]
    assert params[1]["value"] == "p@ss w0rd!"
    c.exchange(req, resp, extra={"request.postData.params": params})
    c.close()


@fixture(
    "cookies.pcap",
    "Cookie with three pairs and two Set-Cookie headers: request.cookies and response.cookies",
)
def _cookies(fx: Fixture) -> None:
    c = conn(fx, 43600)
    c.handshake()
    req = get(
        "/account",
        ua=UA_FIREFOX,
        headers=[("Cookie", "sessionid=9f8e7d6c; csrftoken=AbC123xyz; theme=dark")],
    )
    resp = json_resp(
        fx,
        {"user": "alice"},
        headers=[
            ("Set-Cookie", "sessionid=1a2b3c4d; Path=/; HttpOnly; SameSite=Lax"),
            ("Set-Cookie", "theme=light; Max-Age=31536000; Path=/"),
        ],
    )
    c.exchange(
        req,
        resp,
        extra={
            "request.cookies": {"sessionid": "9f8e7d6c", "csrftoken": "AbC123xyz", "theme": "dark"},
            "request.headers.Cookie": "sessionid=9f8e7d6c; csrftoken=AbC123xyz; theme=dark",
            "response.cookies": {"sessionid": "1a2b3c4d", "theme": "light"},
        },
    )
    c.close()


@fixture(
    "query-string.pcap",
    "query with a repeated name, percent-encoding, '+' for space and an empty value: queryString "
    "decoded (lists for repeats), url and path raw",
)
def _query_string(fx: Fixture) -> None:
    c = conn(fx, 43700)
    c.handshake()
    target = "/search?q=caf%C3%A9+au+lait&tag=red&tag=blue&tag=red&page=2&empty=&redirect=%2Fhome%3Fx%3D1"
    c.exchange(
        get(target, ua=UA_FIREFOX),
        json_resp(fx, {"results": []}),
        extra={
            "request.queryString": {
                "q": "café au lait",
                "tag": ["red", "blue", "red"],
                "page": "2",
                "empty": "",
                "redirect": "/home?x=1",
            },
            "request.pathSegments": ["search"],
        },
    )
    c.close()


@fixture(
    "rst-mid-response.pcap",
    "the server sends the head and the first 4203 bytes of a 20000-byte body, then a RST: one "
    "entry with error type connection and the status it had",
)
def _rst(fx: Fixture) -> None:
    c = conn(fx, 43800)
    c.handshake()
    req = get("/large/file.bin", ua=UA_CURL)
    t_req = c.send(0, req.wire, dt=900 * US)
    c.ack(1)
    content = bytes((i * 31 + 7) % 251 for i in range(20000))
    resp = text_resp(fx, content, "application/octet-stream")
    segs = c.carve(1, resp.wire)
    c.put(1, segs[0], dt=2_200 * US)
    c.put(1, segs[1], dt=40 * US)
    c.put(1, segs[2], dt=40 * US)
    c.emit(1, "RA", dt=3 * MS, seq=segs[3][0])
    sent = sum(len(p) for _, p in segs[:3])
    c.expect(
        req,
        None,
        t_req,
        None,
        error="connection",
        skip=("response",),
        extra={
            # What was captured of the response before the reset.
            "response.status": 200,
            "response.bodySize": sent - len(resp.head),
            "responseSize": sent,
        },
    )


@fixture(
    "seq-wrap.pcap",
    "both ISNs just below 2**32 so request and response bytes cross the sequence wrap: two intact "
    "entries",
)
def _seq_wrap(fx: Fixture) -> None:
    c = conn(fx, 43900, isn=(SEQ_MOD - 120, SEQ_MOD - 2000))
    c.handshake()
    c.exchange(get("/wrap/" + "x" * 150, ua=UA_GO), json_resp(fx, products(20)))
    c.exchange(get("/wrap/after", ua=UA_GO), json_resp(fx, {"after": "wrap"}))
    assert c.nxt[0] < 10_000 and c.nxt[1] < 10_000
    c.close()


BOMB_SIZE = 20 * 1000 * 1000


@fixture(
    "decompression-bomb.pcap",
    "gzip response that inflates to 20 MB of zeros (Content-Length correct): a dissection error "
    "about the decoded size, content kept raw; the next exchange on the connection is intact",
)
def _bomb(fx: Fixture) -> None:
    c = conn(fx, 44000)
    c.handshake()
    req = get("/export/backup.json", ua=UA_PY, headers=[("Accept-Encoding", "gzip")])
    gz = encode(bytes(BOMB_SIZE), "gzip")
    resp = response(
        200,
        "OK",
        [
            ("Server", SERVER_NGINX),
            ("Date", http_date(fx.clock)),
            ("Content-Type", "application/json"),
        ],
        bytes(BOMB_SIZE),
        encoding="gzip",
    )
    assert resp.body == gz
    c.exchange(
        req,
        resp,
        # Past the decode limit the content is given raw, with a dissection error
        # (capture/entries.py): the gzip bytes as sent, not 20 MB of zeros.
        error="dissection",
        extra={
            "response.content.size": len(gz),
            "response.content.text": base64.b64encode(gz).decode(),
        },
    )
    c.exchange(get("/export/status", ua=UA_PY), json_resp(fx, {"export": "done"}))
    c.close()


def cookie_request(target: str, size: int, **kw: Any) -> Msg:
    """A GET whose Cookie header makes its wire size exactly ``size`` bytes."""
    base = get(target, headers=[("Cookie", "session=")], **kw)
    pad = size - len(base.wire)
    assert pad > 0
    return get(target, headers=[("Cookie", "session=" + ("9f3c" * size)[:pad])], **kw)


@fixture(
    "ip-fragments.pcap",
    "IPv4 across a 1400-byte MTU link: the request and every full-size response segment arrive "
    "as two IP fragments, the second one first in alternate datagrams, one fragment captured "
    "twice: one intact entry, its times those of the fragments that completed each datagram",
)
def _ip_fragments(fx: Fixture) -> None:
    c = conn(fx, 44100)
    c.handshake()
    req = cookie_request("/reports/q3.csv?download=1", 1400, ua=UA_FIREFOX)
    t_req = c.emit_fragments(0, "PA", req.wire, dt=900 * US, mtu=1400, order=[1, 0])
    c.ack(1)
    resp = text_resp(fx, csv_rows(150), "text/csv; charset=utf-8")
    segs = c.carve(1, resp.wire)
    assert len(segs) >= 4
    t_resp = 0
    for i, (seq, piece) in enumerate(segs):
        flags = "PA" if i == len(segs) - 1 else "A"
        dt = 5_300 * US if i == 0 else 40 * US
        if 40 + len(piece) > 1400:
            order = [1, 0] if i % 2 == 0 else [0, 1]
            dup = [order[0]] if i == 2 else []
            ts = c.emit_fragments(1, flags, piece, dt=dt, mtu=1400, seq=seq, order=order, dup=dup)
        else:
            ts = c.emit(1, flags, piece, dt=dt, seq=seq)
        t_resp = t_resp or ts
    c.ack(0)
    c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "ipv6-fragments.pcap",
    "IPv6 across a 1280-byte MTU link: a POST and its response in full-size segments, each "
    "arriving as two fragments (fragment extension header), last fragment first: one intact "
    "entry, layer3 ipv6",
)
def _ipv6_fragments(fx: Fixture) -> None:
    c = conn(fx, 50200, client="2001:db8:10::11", server="2001:db8:20::80", sport=8080)
    c.handshake()
    body = json.dumps({"order": products(8)}, separators=(",", ":")).encode()
    req = request(
        "POST",
        "/v6/orders",
        [
            ("Host", "orders:8080"),
            ("User-Agent", UA_GO),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    resp = json_resp(fx, {"accepted": products(10)}, 201, "Created")
    times = []
    for side, msg, dt in ((0, req, 1_000 * US), (1, resp, 9_700 * US)):
        segs = c.carve(side, msg.wire)
        assert len(segs) >= 2
        first = 0
        for i, (seq, piece) in enumerate(segs):
            flags = "PA" if i == len(segs) - 1 else "A"
            gap = dt if i == 0 else 40 * US
            if 60 + len(piece) > 1280:
                ts = c.emit_fragments(side, flags, piece, dt=gap, mtu=1280, seq=seq, order=[1, 0])
            else:
                ts = c.emit(side, flags, piece, dt=gap, seq=seq)
            first = first or ts
        c.ack(1 - side)
        times.append(first)
    c.expect(req, resp, times[0], times[1])
    c.close()


@fixture(
    "fragment-missing.pcap",
    "IPv4 keep-alive with three exchanges over a 1400-byte MTU link; one fragment of a segment "
    "of the second response was not captured: that segment is a TCP gap (index 1 has a "
    "dissection error), its other fragment is dropped after 30 s and counted, indices 0 and 2 "
    "are intact",
)
def _fragment_missing(fx: Fixture) -> None:
    c = conn(fx, 44200)
    c.handshake()
    lost_at = 0
    for i in range(3):
        req = get(f"/exports/{i + 1}.csv", ua=UA_PY)
        resp = text_resp(fx, csv_rows(90 + 10 * i), "text/csv; charset=utf-8")
        # the third exchange comes after a pause long enough for the lost datagram to time out
        t_req = c.send(0, req.wire, dt=31 * S if i == 2 else 1_100 * US)
        c.ack(1)
        segs = c.carve(1, resp.wire)
        assert len(segs) >= 3
        t_resp = 0
        for j, (seq, piece) in enumerate(segs):
            flags = "PA" if j == len(segs) - 1 else "A"
            dt = 4_300 * US if j == 0 else 40 * US
            if 40 + len(piece) <= 1400:
                ts = c.emit(1, flags, piece, dt=dt, seq=seq)
            elif i == 1 and j == 1:
                c.emit_fragments(1, flags, piece, dt=dt, mtu=1400, seq=seq, lost=[0])
                lost_at = fx.clock
                ts = 0
            else:
                ts = c.emit_fragments(1, flags, piece, dt=dt, mtu=1400, seq=seq)
            t_resp = t_resp or ts
        c.ack(0)
        if i == 2:
            # the first fragment after the pause finds the lost datagram older than 30 s
            assert t_resp - lost_at > FRAG_TIMEOUT_NS
            c.fragments_time_out(1)
        if i == 1:
            # Lost bytes inside a body of known length keep the framing (capture/http1.py).
            c.expect(
                req,
                resp,
                t_req,
                t_resp,
                error="dissection",
                skip=(
                    "response.content.size",
                    "response.content.text",
                    "response.content.encoding",
                ),
            )
        else:
            c.expect(req, resp, t_req, t_resp)
    c.close()


@fixture(
    "zstd.pcap",
    "Content-Encoding: zstd with Content-Length, then zstd inside chunked framing: content.text "
    "is the original JSON, bodySize the compressed length",
)
def _zstd(fx: Fixture) -> None:
    c = conn(fx, 44300)
    c.handshake()
    ae = [("Accept-Encoding", "gzip, deflate, br, zstd")]
    c.exchange(
        get("/api/catalogue", ua=UA_FIREFOX, headers=ae),
        json_resp(fx, products(40), encoding="zstd", headers=[("Vary", "Accept-Encoding")]),
    )
    c.exchange(
        get("/api/catalogue?page=2", ua=UA_FIREFOX, headers=ae),
        json_resp(fx, products(25, 40), encoding="zstd", framing="chunked", chunk_sizes=[300]),
    )
    c.close()


# -- writing ------------------------------------------------------------------------------------


class _NsPcapNgWriter(PcapNgWriter):
    """scapy's pcapng writer with nanosecond timestamps: if_tsresol=9 in the interface block
    and exact integer timestamps (scapy converts packet times to float, which cannot hold
    nanoseconds since the epoch)."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self.tsresol = 1_000_000_000

    def _get_time(self, packet: Any, sec: Any, usec: Any) -> tuple[Any, int]:
        return Decimal(packet.time), 0

    def _write_block_idb(self, linktype: int, ifname: bytes | None = None) -> None:
        block_type = struct.pack("<I", 1)
        body = struct.pack("<HHI", linktype, 0, 262144)
        name = b"eth0"
        opts = struct.pack("<HH", 2, len(name)) + name  # if_name
        opts += struct.pack("<HHB3x", 9, 1, 9)  # if_tsresol: 10^-9
        opts += struct.pack("<HH", 0, 0)
        self.f.write(self.build_block(block_type, body, options=opts))


def pcap_bytes(linktype: int, records: list[tuple[int, bytes]]) -> bytes:
    """Classic little-endian microsecond pcap."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for ts_ns, frame in records:
        if ts_ns % US:
            raise ValueError("a microsecond pcap cannot hold this timestamp")
        sec, usec = divmod(ts_ns // US, 1_000_000)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    return b"".join(out)


def write_capture(fx: Fixture, out_dir: Path) -> dict[str, Any]:
    records = [(f.ts_ns, fx.frame_bytes(f)) for f in fx.frames]
    path = out_dir / fx.name
    meta: dict[str, Any] = {}
    if fx.fmt == "pcapng-ns":
        tmp = out_dir / (fx.name + ".tmp")
        writer = _NsPcapNgWriter(str(tmp))
        for ts_ns, frame in records:
            pkt = Ether(frame)
            pkt.time = EDecimal(ts_ns) / S  # exact: a float cannot hold ns since the epoch
            writer.write(pkt)
        writer.close()
        tmp.replace(path)
    else:
        data = pcap_bytes(fx.linktype, records)
        if fx.truncate_last:
            last = len(records[-1][1]) + 16
            data = data[: len(data) - last // 2]
            meta["truncated_at"] = len(data)
        if fx.fmt == "pcap-gz":
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
                gz.write(data)
            data = buf.getvalue()
        path.write_bytes(data)
    return meta


def build(out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {}
    readme = [
        "# Golden fixtures",
        "",
        "Generated by `scripts/make_fixtures.py` (deterministic; rerun it after changing it, "
        "`tests/golden/test_fixtures_uptodate.py` checks the committed files match). "
        "`expected.json` holds, per fixture, the entries the pipeline must produce, by field path "
        "(`null` = the key is absent; `error` holds the expected type or null), derived from what the "
        "script sends. `demo.pcap` is not one of them: `scripts/make_demo_capture.py` writes it "
        "for `scripts/demo`.",
        "",
        "Client and server MACs are fixed, the client is 10.1.0.11 unless noted, every connection "
        "has a full handshake unless noted, all captures are microsecond pcap unless noted.",
        "",
        "Captures with IP fragments also have, in `expected.json`, `decode`: the `Decoder.stats` "
        "counters they must produce (`fragments`, `fragments_reassembled`, ...), and where a "
        "datagram never completes, `unfiled_records`: the indices of its captured fragments, "
        "which reach no connection's pcap. A datagram's fragments go to its connection's pcap "
        "together, when the last one completes it.",
        "",
    ]
    written = []
    for k, builder in enumerate(BUILDERS):
        name, what, kw = builder.spec  # type: ignore[attr-defined]
        start = BASE_NS + k * 60 * S + 250_000 * US + 137 * US
        fx = Fixture(name, what, start_ns=start, clock=start, **kw)
        builder(fx)
        meta = write_capture(fx, out_dir)
        written.append(name)
        # Streams are numbered in the order HTTP is first seen: the first payload of each
        # connection (all connections here carry HTTP).
        first_payload: dict[int, int] = {}
        packets: dict[int, int] = {}
        frames = fx.frames[:-1] if fx.truncate_last else fx.frames
        for f in frames:
            if not f.filed:
                continue
            packets[f.conn] = packets.get(f.conn, 0) + 1
            if f.payload and f.conn not in first_payload:
                first_payload[f.conn] = len(first_payload) + 1
        entries = []
        for e in fx.entries:
            stream = first_payload[e["conn"]]
            fields = {"index": e["index"], "stream": f"{stream:012d}.pcap", **e["fields"]}
            entries.append({"stream": stream, "index": e["index"], "fields": fields})
        expected[name] = {
            "what": what,
            "linktype": fx.linktype,
            "format": fx.fmt,
            "records": len(frames),
            "stream_packets": {str(first_payload[c]): n for c, n in sorted(packets.items())},
            "entries": entries,
            **meta,
        }
        unfiled = [i for i, f in enumerate(frames) if not f.filed]
        if unfiled:  # records that reach no connection's pcap (fragments of a lost datagram)
            expected[name]["unfiled_records"] = unfiled
        if "decode" in fx.notes:  # Decoder.stats counters the capture must produce
            expected[name]["decode"] = fx.notes["decode"]
        n = len(entries)
        readme.append(
            f"- `{name}` — {what}. ({len(fx.frames)} packets, {n} entr{'y' if n == 1 else 'ies'})"
        )
    (out_dir / "expected.json").write_text(
        json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    )
    (out_dir / "README.md").write_text("\n".join(readme) + "\n")
    return [*written, "expected.json", "README.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "fixtures", help="output directory")
    args = parser.parse_args(argv)
    names = build(args.out)
    print(f"wrote {len(names)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
