#!/usr/bin/env python3
"""Regenerates the HTTP/2 and gRPC fixtures under fixtures/h2/ and what each must turn into.

The real captures in ../shared/pcaps-proto/ lack what this makes: an HTTP/1.1 `Upgrade: h2c`
with the full handshake, HPACK table-size changes, RST_STREAM, GOAWAY, a gRPC server stream
with compressed messages, failing gRPC calls, a capture that starts mid-connection (mid-frame,
with HPACK entries from before it), capture gaps, server push, and many interleaved streams with
padding, priority and CONTINUATION frames.

The HTTP/2 bytes come from a real implementation (the `h2` library: both peers are driven, so
HPACK, flow control and framing are what a conforming stack sends); scapy lays them into TCP
segments (handshake, MSS-sized segments, ACKs, FIN). What each fixture must produce
(fixtures/h2/expected.json, for tests/golden/test_h2_fixtures.py) is derived from what the script
sent — paths, statuses, bodies, message counts, what was cut — never from running kshark.

Also written: `shop.desc`, a FileDescriptorSet of the gRPC service the fixtures call
(`--proto-descriptor`), built with protobuf's descriptor_pb2 and serialised deterministically;
the gRPC messages are serialised from it.

Deterministic (tests/golden/test_h2_fixtures.py regenerates and compares bytes): fixed times,
ISNs, ports, addresses; gzip with mtime 0; no randomness.

    .venv/bin/python scripts/make_h2_fixtures.py            # rewrites fixtures/h2/
    .venv/bin/python scripts/make_h2_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived
from h2.settings import SettingCodes
from hyperframe.frame import Frame, HeadersFrame
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import EDecimal, wrpcap

REPO = Path(__file__).resolve().parent.parent
US = 1_000
MS = 1_000_000
S = 1_000_000_000
BASE_NS = 1_717_232_400 * S  # 2024-06-01T09:00:00Z; fixture k starts k minutes later
MSS = 1448
MAC_CLIENT = "02:42:0a:01:00:0b"
MAC_SERVER = "02:42:0a:02:00:14"

Expected = dict[str, Any]


# --- TCP on the wire ------------------------------------------------------------------------


class Tcp:
    """One TCP connection: every segment with correct seq/ack, packet times from t."""

    def __init__(
        self,
        t0: int,
        client: tuple[str, int],
        server: tuple[str, int],
        isn: tuple[int, int] = (0x1000_0000, 0x7000_0000),
    ) -> None:
        self.t = t0
        self.addr = (client, server)
        self.nxt = [isn[0], isn[1]]
        self.packets: list[Packet] = []
        self.v6 = ":" in client[0]

    def _pkt(self, side: int, flags: str, payload: bytes = b"", seq: int | None = None) -> None:
        src, dst = self.addr[side], self.addr[1 - side]
        ip = (
            IPv6(src=src[0], dst=dst[0])
            if self.v6
            else IP(src=src[0], dst=dst[0], id=len(self.packets) + 1)
        )
        macs = (MAC_CLIENT, MAC_SERVER) if side == 0 else (MAC_SERVER, MAC_CLIENT)
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            flags=flags,
            seq=(self.nxt[side] if seq is None else seq) % (1 << 32),
            ack=self.nxt[1 - side] % (1 << 32) if "A" in flags else 0,
            window=65535,
        )
        p = Ether(src=macs[0], dst=macs[1]) / ip / tcp
        if payload:
            p = p / Raw(payload)
        p.time = EDecimal(self.t) / EDecimal(S)
        self.packets.append(p)

    def tick(self, dt: int) -> None:
        self.t += dt

    def handshake(self) -> None:
        self._pkt(0, "S")
        self.nxt[0] += 1
        self.tick(150 * US)
        self._pkt(1, "SA")
        self.nxt[1] += 1
        self.tick(60 * US)
        self._pkt(0, "A")

    def send(self, side: int, data: bytes, dt: int = 200 * US, lose: tuple[int, ...] = ()) -> None:
        """data in MSS-sized segments dt apart; the segments numbered in `lose` are not
        captured (their sequence space is used: the peer ACKs them), then the peer's ACK."""
        for i, k in enumerate(range(0, len(data), MSS)):
            self.tick(dt if i == 0 else 20 * US)
            seg = data[k : k + MSS]
            if i not in lose:
                self._pkt(side, "PA", seg)
            self.nxt[side] += len(seg)
        self.tick(40 * US)
        self._pkt(1 - side, "A")

    def close(self) -> None:
        self.tick(500 * US)
        self._pkt(0, "FA")
        self.nxt[0] += 1
        self.tick(80 * US)
        self._pkt(1, "FA")
        self.nxt[1] += 1
        self.tick(50 * US)
        self._pkt(0, "A")


# --- HTTP/2 conversations (both peers real h2 connections) -------------------------------------


class H2:
    """A client and a server h2 connection talking over a Tcp; `flush(side)` sends what that
    side has to send and lets the other side receive it."""

    def __init__(self, tcp: Tcp, *, upgrade: bool = False) -> None:
        self.tcp = tcp
        cfg = {"header_encoding": "utf-8", "validate_inbound_headers": False}
        self.conn = (
            H2Connection(H2Configuration(client_side=True, **cfg)),
            H2Connection(H2Configuration(client_side=False, **cfg)),
        )
        self.received: list[list[Any]] = [[], []]  # events per receiving side
        self.captured = True  # False: bytes go to the peer but not on the wire (before a cut)
        self.transform: Callable[[bytes], bytes] | None = None
        if not upgrade:
            self.conn[0].initiate_connection()
            self.conn[1].initiate_connection()

    def flush(self, side: int, dt: int = 200 * US, lose: tuple[int, ...] = ()) -> bytes:
        data = self.conn[side].data_to_send()
        if not data:
            return b""
        if self.transform is not None:
            data = self.transform(data)
        if self.captured:
            self.tcp.send(side, data, dt, lose)
        else:
            self.tcp.nxt[side] += len(data)
            self.tcp.tick(dt)
        self.deliver(1 - side, data)
        return data

    def deliver(self, side: int, data: bytes) -> None:
        events = self.conn[side].receive_data(data)
        for ev in events:
            if isinstance(ev, DataReceived) and ev.flow_controlled_length:
                self.conn[side].acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.received[side].extend(events)

    def both(self) -> None:
        """Let both sides say what they have (settings, acks, window updates)."""
        for _ in range(3):
            if not (self.flush(0) or self.flush(1)):
                break


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def pad_headers(data: bytes, pad: int) -> bytes:
    """Rewrites every HEADERS frame in data with `pad` bytes of padding (PADDED flag)."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        body = data[pos + 9 : pos + 9 + length]
        if isinstance(frame, HeadersFrame):
            frame.parse_body(memoryview(body))
            frame.pad_length = pad
            frame.flags.add("PADDED")
            out += frame.serialize()
        else:
            out += data[pos : pos + 9 + length]
        pos += 9 + length
    return bytes(out)


# --- the gRPC service: its descriptor and messages ---------------------------------------------


def shop_descriptor() -> descriptor_pb2.FileDescriptorSet:
    f = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    item = f.message_type.add(name="Item")
    item.field.add(name="id", number=1, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    item.field.add(name="name", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    item.field.add(name="price", number=3, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL)
    item.field.add(name="tags", number=4, type=T.TYPE_STRING, label=T.LABEL_REPEATED)
    get = f.message_type.add(name="GetItemRequest")
    get.field.add(name="id", number=1, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    lst = f.message_type.add(name="ListItemsRequest")
    lst.field.add(name="category", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    lst.field.add(name="limit", number=2, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
    up = f.message_type.add(name="UploadSummary")
    up.field.add(name="accepted", number=1, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
    svc = f.service.add(name="Catalog")
    svc.method.add(name="GetItem", input_type=".shop.GetItemRequest", output_type=".shop.Item")
    svc.method.add(
        name="ListItems",
        input_type=".shop.ListItemsRequest",
        output_type=".shop.Item",
        server_streaming=True,
    )
    svc.method.add(
        name="Upload",
        input_type=".shop.Item",
        output_type=".shop.UploadSummary",
        client_streaming=True,
    )
    return descriptor_pb2.FileDescriptorSet(file=[f])


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(shop_descriptor().file[0])


def proto(type_name: str, /, **fields: Any) -> bytes:
    cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"shop.{type_name}"))
    return cls(**fields).SerializeToString(deterministic=True)


def proto_json(type_name: str, /, **fields: Any) -> dict[str, Any]:
    """What the message sent is in protobuf's JSON mapping (what --proto-descriptor shows)."""
    cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"shop.{type_name}"))
    out: dict[str, Any] = json_format.MessageToDict(cls(**fields), preserving_proto_field_name=True)
    return out


def grpc_frame(message: bytes, compress: bool = False) -> bytes:
    body = gz(message) if compress else message
    return bytes([1 if compress else 0]) + len(body).to_bytes(4, "big") + body


def item(i: int) -> dict[str, Any]:
    return {"id": 1000 + i, "name": f"item-{i}", "price": 2.5 * i, "tags": ["blue", f"t{i % 3}"]}


# --- fixtures -------------------------------------------------------------------------------

FIXTURES: list[tuple[str, str, Callable[[int], tuple[list[Packet], list[Expected], Expected]]]] = []


def fixture(name: str, what: str) -> Callable[[Callable[..., Any]], Any]:
    def register(fn: Callable[[int], tuple[list[Packet], list[Expected], Expected]]) -> Any:
        FIXTURES.append((name, what, fn))
        return fn

    return register


def req_headers(
    method: str, path: str, authority: str, extra: list[tuple[str, str]] = ()
) -> list[tuple[str, str]]:  # type: ignore[assignment]
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
        *extra,
    ]


@fixture(
    "h2-upgrade.pcap",
    "HTTP/1.1 GET with Upgrade: h2c answered 101, stream 1's response in HTTP/2, then a second request on stream 3 (404, gzip body)",
)
def _upgrade(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40100), ("10.2.0.20", 80))
    tcp.handshake()
    h = H2(tcp, upgrade=True)
    client, server = h.conn
    settings = client.initiate_upgrade_connection()
    assert settings is not None
    upgrade_req = (
        b"GET /robots.txt HTTP/1.1\r\nHost: h2.example\r\nUser-Agent: curl/8.5.0\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: "
        + settings
        + b"\r\n\r\n"
    )
    tcp.send(0, upgrade_req)
    server.initiate_upgrade_connection(settings)
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    robots = b"User-agent: *\nDisallow: /private/\n"
    server.send_headers(
        1,
        [(":status", "200"), ("content-type", "text/plain"), ("content-length", str(len(robots)))],
    )
    server.send_data(1, robots, end_stream=True)
    first = server.data_to_send()
    tcp.send(1, switching + first)  # the 101 and the server's SETTINGS + stream 1 in one segment
    h.deliver(0, first)
    h.flush(0)  # the client's preface, SETTINGS, SETTINGS ACK
    h.flush(1)
    client.send_headers(
        3,
        req_headers("GET", "/humans.txt", "h2.example", [("accept-encoding", "gzip")]),
        end_stream=True,
    )
    h.flush(0)
    missing = b"not here\n" * 20
    server.send_headers(
        3,
        [
            (":status", "404"),
            ("content-type", "text/plain; charset=utf-8"),
            ("content-encoding", "gzip"),
        ],
    )
    server.send_data(3, gz(missing), end_stream=True)
    h.flush(1)
    h.both()
    tcp.close()
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "GET",
                "path": "/robots.txt",
                "status": 200,
                "httpVersion": "HTTP/1.1",
                "responseBody": robots.decode(),
                "error": None,
            },
            {
                "stream": 3,
                "method": "GET",
                "path": "/humans.txt",
                "status": 404,
                "responseBody": missing.decode(),
                "error": None,
            },
        ],
        {},
    )


@fixture(
    "h2-hpack-table-size.pcap",
    "prior knowledge; six requests whose encoder tables are resized by SETTINGS_HEADER_TABLE_SIZE (0, 256, then 4096) between them; repeated custom headers",
)
def _table_size(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40102), ("10.2.0.20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    expected = []
    sizes = {1: 0, 3: 256, 5: 4096, 9: 64}  # before request k, each peer shrinks the other's table
    for k, sid in enumerate((1, 3, 5, 7, 9, 11)):
        if sid in sizes:
            server.update_settings({SettingCodes.HEADER_TABLE_SIZE: sizes[sid]})
            client.update_settings({SettingCodes.HEADER_TABLE_SIZE: sizes[sid]})
            h.both()
        extra = [
            ("x-tenant", "acme"),
            ("x-request-id", f"req-{k:04d}"),
            ("user-agent", "kshark-fixture/1"),
        ]
        client.send_headers(
            sid, req_headers("GET", f"/items/{k}", "api.example", extra), end_stream=True
        )
        h.flush(0)
        body = json.dumps({"item": k}).encode()
        server.send_headers(
            sid,
            [
                (":status", "200"),
                ("content-type", "application/json"),
                ("x-served-by", "node-a"),
                ("x-request-id", f"req-{k:04d}"),
            ],
        )
        server.send_data(sid, body, end_stream=True)
        h.flush(1)
        expected.append(
            {
                "stream": sid,
                "method": "GET",
                "path": f"/items/{k}",
                "status": 200,
                "responseBody": body.decode(),
                "error": None,
                "requestHeaders": {
                    "X-Tenant": "acme",
                    "X-Request-Id": f"req-{k:04d}",
                    "User-Agent": "kshark-fixture/1",
                    ":authority": "api.example",
                },
                "responseHeaders": {
                    "X-Served-By": "node-a",
                    "X-Request-Id": f"req-{k:04d}",
                    "Content-Type": "application/json",
                },
            }
        )
    h.both()
    tcp.close()
    return tcp.packets, expected, {}


@fixture(
    "h2-rst-stream.pcap",
    "stream 1 cancelled by the client mid-response (RST_STREAM CANCEL); stream 3 answered 413 before its upload ended, then RST_STREAM NO_ERROR (not an error); stream 5 refused (REFUSED_STREAM)",
)
def _rst(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40104), ("10.2.0.20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    client.send_headers(1, req_headers("GET", "/slow", "api.example"), end_stream=True)
    h.flush(0)
    server.send_headers(1, [(":status", "200"), ("content-type", "application/octet-stream")])
    server.send_data(1, b"x" * 3000)
    h.flush(1)
    client.reset_stream(1, 8)  # CANCEL
    h.flush(0)
    client.send_headers(
        3,
        req_headers(
            "POST", "/upload", "api.example", [("content-type", "application/octet-stream")]
        ),
    )
    client.send_data(3, b"u" * 2000)
    h.flush(0)
    server.send_headers(3, [(":status", "413")], end_stream=True)
    server.reset_stream(3, 0)  # NO_ERROR: stop sending the request (RFC 9113 §8.1)
    h.flush(1)
    client.send_headers(5, req_headers("DELETE", "/items/9", "api.example"), end_stream=True)
    h.flush(0)
    server.reset_stream(5, 7)  # REFUSED_STREAM
    h.flush(1)
    h.both()
    tcp.close()
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "GET",
                "path": "/slow",
                "status": 200,
                "error": "connection",
                "errorText": "stream 1 reset by the client: CANCEL (0x8)",
            },
            {"stream": 3, "method": "POST", "path": "/upload", "status": 413, "error": None},
            {
                "stream": 5,
                "method": "DELETE",
                "path": "/items/9",
                "status": None,
                "error": "connection",
                "errorText": "stream 5 reset by the server: REFUSED_STREAM (0x7)",
            },
        ],
        {},
    )


@fixture(
    "grpc-calls.pcap",
    "gRPC on :50051: a unary call, a server stream of 30 gzip-compressed messages, a Trailers-Only NOT_FOUND, a client stream answered INVALID_ARGUMENT in the trailers",
)
def _grpc(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40106), ("10.2.0.30", 50051))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()

    def call(sid: int, method: str, extra: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        client.send_headers(
            sid,
            req_headers(
                "POST",
                f"/shop.Catalog/{method}",
                "catalog:50051",
                [
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("grpc-timeout", "5S"),
                    *extra,
                ],
            ),
        )

    ok_headers = [(":status", "200"), ("content-type", "application/grpc")]
    # 1: unary GetItem
    call(1, "GetItem")
    req1 = proto("GetItemRequest", id=1007)
    client.send_data(1, grpc_frame(req1), end_stream=True)
    h.flush(0)
    server.send_headers(1, ok_headers)
    server.send_data(1, grpc_frame(proto("Item", **item(7))))
    server.send_headers(1, [("grpc-status", "0")], end_stream=True)
    h.flush(1)
    # 3: server streaming ListItems, gzip
    call(3, "ListItems", [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")])
    client.send_data(
        3, grpc_frame(proto("ListItemsRequest", category="blue", limit=30)), end_stream=True
    )
    h.flush(0)
    server.send_headers(3, [*ok_headers, ("grpc-encoding", "gzip")])
    h.flush(1)
    for i in range(30):
        server.send_data(3, grpc_frame(proto("Item", **item(i)), compress=True))
        if i % 6 == 5:
            h.flush(1)
            h.flush(0)
    server.send_headers(3, [("grpc-status", "0")], end_stream=True)
    h.flush(1)
    # 5: Trailers-Only NOT_FOUND
    call(5, "GetItem")
    client.send_data(5, grpc_frame(proto("GetItemRequest", id=42)), end_stream=True)
    h.flush(0)
    server.send_headers(
        5,
        [*ok_headers, ("grpc-status", "5"), ("grpc-message", "item%2042%20not%20found")],
        end_stream=True,
    )
    h.flush(1)
    # 7: client streaming Upload, 5 messages, INVALID_ARGUMENT in trailers
    call(7, "Upload")
    for i in range(5):
        client.send_data(7, grpc_frame(proto("Item", **item(100 + i))), end_stream=i == 4)
        h.flush(0)
    server.send_headers(7, ok_headers)
    server.send_data(7, grpc_frame(proto("UploadSummary", accepted=3)))
    server.send_headers(
        7,
        [("grpc-status", "3"), ("grpc-message", "item 103: price must be positive")],
        end_stream=True,
    )
    h.flush(1)
    h.both()
    tcp.close()
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "POST",
                "path": "/shop.Catalog/GetItem",
                "status": 0,
                "statusText": "OK",
                "error": None,
                "grpc": {
                    "service": "shop.Catalog",
                    "method": "GetItem",
                    "requestMessages": 1,
                    "responseMessages": 1,
                    "message": "",
                    "requestJson": [proto_json("GetItemRequest", id=1007)],
                    "responseJson": [proto_json("Item", **item(7))],
                },
            },
            {
                "stream": 3,
                "method": "POST",
                "path": "/shop.Catalog/ListItems",
                "status": 0,
                "statusText": "OK",
                "error": None,
                "grpc": {
                    "service": "shop.Catalog",
                    "method": "ListItems",
                    "requestMessages": 1,
                    "responseMessages": 30,
                    "compressed": 30,
                    "message": "",
                    "requestJson": [proto_json("ListItemsRequest", category="blue", limit=30)],
                    "responseJson": [proto_json("Item", **item(i)) for i in range(8)],
                },
            },
            {
                "stream": 5,
                "method": "POST",
                "path": "/shop.Catalog/GetItem",
                "status": 5,
                "statusText": "NOT_FOUND",
                "error": None,
                "grpc": {
                    "service": "shop.Catalog",
                    "method": "GetItem",
                    "requestMessages": 1,
                    "responseMessages": 0,
                    "message": "item 42 not found",
                },
            },
            {
                "stream": 7,
                "method": "POST",
                "path": "/shop.Catalog/Upload",
                "status": 3,
                "statusText": "INVALID_ARGUMENT",
                "error": None,
                "grpc": {
                    "service": "shop.Catalog",
                    "method": "Upload",
                    "requestMessages": 5,
                    "responseMessages": 1,
                    "message": "item 103: price must be positive",
                    "responseJson": [proto_json("UploadSummary", accepted=3)],
                },
            },
        ],
        {},
    )


@fixture(
    "h2-goaway.pcap",
    "four concurrent requests; the server answers streams 1 and 3, then GOAWAY (last stream 3, ENHANCE_YOUR_CALM): streams 5 and 7 were not processed",
)
def _goaway(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40108), ("10.2.0.20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    for sid in (1, 3, 5, 7):
        client.send_headers(sid, req_headers("GET", f"/feed/{sid}", "api.example"), end_stream=True)
    h.flush(0)
    for sid in (1, 3):
        server.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
        server.send_data(sid, f"feed {sid}\n".encode(), end_stream=True)
    server.close_connection(11, b"too many requests", last_stream_id=3)
    h.flush(1)
    tcp.close()
    why = "not processed: GOAWAY ENHANCE_YOUR_CALM (0xb) from the server (too many requests), last stream 3"
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "GET",
                "path": "/feed/1",
                "status": 200,
                "responseBody": "feed 1\n",
                "error": None,
            },
            {
                "stream": 3,
                "method": "GET",
                "path": "/feed/3",
                "status": 200,
                "responseBody": "feed 3\n",
                "error": None,
            },
            {
                "stream": 5,
                "method": "GET",
                "path": "/feed/5",
                "status": None,
                "error": "connection",
                "errorText": f"stream 5 {why}",
            },
            {
                "stream": 7,
                "method": "GET",
                "path": "/feed/7",
                "status": None,
                "error": "connection",
                "errorText": f"stream 7 {why}",
            },
        ],
        {},
    )


@fixture(
    "h2-midstream.pcap",
    "capture starts mid-connection (no SYN, no preface) inside a DATA frame; HPACK entries from before it are unknown (flagged) until SETTINGS_HEADER_TABLE_SIZE 0 makes both encoders empty their tables",
)
def _midstream(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40110), ("10.2.0.20", 8080))
    h = H2(tcp)
    client, server = h.conn
    h.captured = False  # what the capture did not see: the start of the connection
    h.both()
    extra = [("user-agent", "kshark-fixture/1"), ("x-tenant", "acme")]
    for sid in (1, 3):
        client.send_headers(
            sid, req_headers("GET", f"/before/{sid}", "api.example", extra), end_stream=True
        )
        h.flush(0)
        server.send_headers(
            sid,
            [(":status", "200"), ("content-type", "application/json"), ("x-served-by", "node-a")],
        )
        server.send_data(sid, b'{"before": true}', end_stream=True)
        h.flush(1)
    # Stream 5: a POST whose upload the capture joins in the middle of its DATA frame.
    client.send_headers(
        5,
        req_headers(
            "POST", "/upload", "api.example", [*extra, ("content-type", "application/octet-stream")]
        ),
    )
    h.flush(0)
    client.send_data(5, b"p" * 4000, end_stream=True)
    data = client.data_to_send()
    cut = 1000
    tcp.nxt[0] += cut
    h.captured = True
    tcp.send(0, data[cut:])
    h.deliver(1, data)
    server.send_headers(
        5, [(":status", "201"), ("content-type", "application/json"), ("x-served-by", "node-a")]
    )
    server.send_data(5, b'{"stored": 4000}', end_stream=True)
    h.flush(1)
    # Stream 7: known method and path (static name + new literal), unknown :authority etc.
    client.send_headers(7, req_headers("GET", "/after/7", "api.example", extra), end_stream=True)
    h.flush(0)
    server.send_headers(
        7, [(":status", "200"), ("content-type", "application/json"), ("x-served-by", "node-a")]
    )
    server.send_data(7, b'{"after": 7}', end_stream=True)
    h.flush(1)
    # Both peers shrink the other's table to 0 and back: the encoders emit size updates, every
    # old entry is gone, and the tables are known again.
    for conn in (client, server):
        conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    h.both()
    for conn in (client, server):
        conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 4096})
    h.both()
    for sid in (9, 11):
        client.send_headers(
            sid, req_headers("GET", f"/after/{sid}", "api.example", extra), end_stream=True
        )
        h.flush(0)
        server.send_headers(
            sid,
            [(":status", "200"), ("content-type", "application/json"), ("x-served-by", "node-a")],
        )
        server.send_data(sid, f'{{"after": {sid}}}'.encode(), end_stream=True)
        h.flush(1)
    h.both()
    tcp.close()
    return (
        tcp.packets,
        [
            {
                "stream": 5,
                "method": None,
                "status": 201,
                "error": "pair-not-found",
                "errorText": "stream 5: no request; 2 response header field(s) of stream 5 referenced HPACK entries from before the capture",
            },
            {
                "stream": 7,
                "method": "GET",
                "path": "/after/7",
                "status": 200,
                "error": "dissection",
                "errorContains": "referenced HPACK entries from before the capture",
                "responseBody": '{"after": 7}',
            },
            {
                "stream": 9,
                "method": "GET",
                "path": "/after/9",
                "status": 200,
                "error": None,
                "responseBody": '{"after": 9}',
                "requestHeaders": {"X-Tenant": "acme", ":authority": "api.example"},
                "responseHeaders": {"X-Served-By": "node-a"},
            },
            {
                "stream": 11,
                "method": "GET",
                "path": "/after/11",
                "status": 200,
                "error": None,
                "responseBody": '{"after": 11}',
                "requestHeaders": {"X-Tenant": "acme", ":authority": "api.example"},
                "responseHeaders": {"X-Served-By": "node-a"},
            },
        ],
        {
            "decodeAs": {"8080": "http2"},
            "decodeAsWhy": "the first 512 bytes the client side shows are the inside of a DATA frame and the server has not spoken yet: content detection cannot tell, so the port is hinted (tshark needs -d tcp.port==8080,http2 for such a capture too)",
        },
    )


@fixture(
    "h2-gap.pcap",
    "a segment lost inside a DATA frame (body truncated, framing kept); later a whole response segment (HEADERS + DATA of stream 5) lost: framing realigns on the next frame",
)
def _gap(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40112), ("10.2.0.20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    client.send_headers(1, req_headers("GET", "/big", "api.example"), end_stream=True)
    h.flush(0)
    big = bytes(range(256)) * 40  # 10240 bytes: one DATA frame
    server.send_headers(1, [(":status", "200"), ("content-type", "application/octet-stream")])
    server.send_data(1, big, end_stream=True)
    h.flush(1, lose=(3,))  # the 4th segment, inside the DATA frame
    client.send_headers(3, req_headers("GET", "/small", "api.example"), end_stream=True)
    h.flush(0)
    server.send_headers(3, [(":status", "200"), ("x-kind", "small")])
    server.send_data(3, b"small", end_stream=True)
    h.flush(1)
    client.send_headers(5, req_headers("GET", "/lost", "api.example"), end_stream=True)
    h.flush(0)
    server.send_headers(5, [(":status", "200"), ("x-kind", "lost")])
    server.send_data(5, b"lost" * 100, end_stream=True)
    h.flush(1, lose=(0,))
    client.send_headers(7, req_headers("GET", "/after", "api.example"), end_stream=True)
    h.flush(0)
    server.send_headers(7, [(":status", "204"), ("x-after-gap", "1")], end_stream=True)
    h.flush(1)
    h.both()
    tcp.close()
    seg_data = MSS  # the lost segment is wholly DATA payload of stream 1
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "GET",
                "path": "/big",
                "status": 200,
                "error": "dissection",
                "errorText": f"{seg_data} bytes of the response body lost in a capture gap",
                "responseBodySize": len(big),
                "responseBodyPrefix": big[:1000].hex(),
            },
            {
                "stream": 3,
                "method": "GET",
                "path": "/small",
                "status": 200,
                "responseBody": "small",
                "error": None,
            },
            {
                "stream": 5,
                "method": "GET",
                "path": "/lost",
                "status": None,
                "error": "pair-not-found",
                "errorText": "stream 5: no response",
            },
            {
                "stream": 7,
                "method": "GET",
                "path": "/after",
                "status": 204,
                "error": None,
                "responseHeaders": {"X-After-Gap": "1"},
            },
        ],
        {},
    )


@fixture(
    "h2-push.pcap",
    "IPv6; GET /index.html answered with a PUSH_PROMISE for /style.css (stream 2) and both responses",
)
def _push(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("fd00::11", 40114), ("fd00::20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    client.send_headers(1, req_headers("GET", "/index.html", "web.example"), end_stream=True)
    h.flush(0)
    server.push_stream(1, 2, req_headers("GET", "/style.css", "web.example"))
    html = b"<html><link rel=stylesheet href=/style.css></html>"
    css = b"body { color: #333 }\n"
    server.send_headers(1, [(":status", "200"), ("content-type", "text/html")])
    server.send_data(1, html, end_stream=True)
    server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    server.send_data(2, css, end_stream=True)
    h.flush(1)
    h.both()
    tcp.close()
    return (
        tcp.packets,
        [
            {
                "stream": 1,
                "method": "GET",
                "path": "/index.html",
                "status": 200,
                "responseBody": html.decode(),
                "error": None,
            },
            {
                "stream": 2,
                "method": "GET",
                "path": "/style.css",
                "status": 200,
                "responseBody": css.decode(),
                "error": None,
            },
        ],
        {},
    )


@fixture(
    "h2-concurrent.pcap",
    "24 concurrent streams on one connection, responses interleaved frame by frame, padded HEADERS and DATA, PRIORITY flags, and one request whose 20 KB header block needs CONTINUATION frames",
)
def _concurrent(t0: int) -> tuple[list[Packet], list[Expected], Expected]:
    tcp = Tcp(t0, ("10.1.0.11", 40116), ("10.2.0.20", 8080))
    tcp.handshake()
    h = H2(tcp)
    client, server = h.conn
    h.both()
    sids = [1 + 2 * i for i in range(24)]
    cookie = "session=" + "c" * 20000
    for sid in sids:
        extra = [("cookie", cookie)] if sid == 13 else [("x-n", str(sid))]
        client.send_headers(
            sid,
            req_headers("GET", f"/part/{sid}", "api.example", extra),
            end_stream=True,
            priority_weight=16 + sid % 200,
        )
    h.flush(0)
    bodies = {sid: (f"part {sid} ".encode() * (40 + sid))[: 900 + 37 * sid] for sid in sids}
    h.transform = lambda data: pad_headers(data, 7)  # the server's HEADERS frames are padded
    for sid in sids:
        server.send_headers(
            sid, [(":status", "200"), ("content-type", "text/plain"), ("x-part", str(sid))]
        )
    h.flush(1)
    h.transform = None
    offsets = dict.fromkeys(sids, 0)
    while any(offsets[s] < len(bodies[s]) for s in sids):
        for sid in sids:
            body = bodies[sid]
            k = offsets[sid]
            if k < len(body):
                chunk = body[k : k + 300]
                offsets[sid] = k + len(chunk)
                server.send_data(
                    sid,
                    chunk,
                    end_stream=offsets[sid] == len(body),
                    pad_length=5 if sid % 3 == 0 else None,
                )
        h.flush(1)
        h.flush(0)
    h.both()
    tcp.close()
    expected = []
    for sid in sids:
        e: Expected = {
            "stream": sid,
            "method": "GET",
            "path": f"/part/{sid}",
            "status": 200,
            "responseBody": bodies[sid].decode(),
            "error": None,
            "responseHeaders": {"X-Part": str(sid)},
        }
        if sid == 13:
            e["requestHeaderLengths"] = {"Cookie": len(cookie)}  # 20 KB: HEADERS + CONTINUATION
        expected.append(e)
    return tcp.packets, expected, {}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "h2")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {}
    for k, (name, what, fn) in enumerate(FIXTURES):
        packets, entries, extra = fn(BASE_NS + k * 60 * S + 123_457 * US)
        wrpcap(str(out / name), packets, nano=True)
        expected[name] = {"what": what, "packets": len(packets), "entries": entries, **extra}
    (out / "shop.desc").write_bytes(shop_descriptor().SerializeToString(deterministic=True))
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
