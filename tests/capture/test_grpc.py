"""capture.grpc, capture.protobuf and the gRPC part of capture.http2_entries: message framing
and counting, the call status a client would see, protobuf bodies with and without a schema."""

from __future__ import annotations

import gzip
import random
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.entries import Identity
from capture.grpc import (
    MessageTally,
    call_status,
    grpc_message_text,
    is_grpc_content_type,
    service_method,
    split_messages,
)
from capture.http1 import Message
from capture.http2 import Http2Exchange
from capture.http2_entries import GRPC_MESSAGES_SHOWN, Http2EntryBuilder
from capture.protobuf import ProtoDecoder, ProtoDescriptorError, raw_fields

SHOP_DESC = Path(__file__).resolve().parents[2] / "fixtures" / "h2" / "shop.desc"


def lpm(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


@pytest.mark.parametrize(
    ("value", "grpc"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("Application/GRPC; charset=x", True),
        ("application/grpc-web", False),
        ("application/json", False),
    ],
)
def test_grpc_content_types(value: str, grpc: bool) -> None:
    assert is_grpc_content_type(value) is grpc


def test_service_and_method_from_the_path() -> None:
    assert service_method("/helloworld.Greeter/SayHello") == ("helloworld.Greeter", "SayHello")
    assert service_method("/StreamingService/ClientStreamRPC") == (
        "StreamingService",
        "ClientStreamRPC",
    )
    assert service_method("/a/b/c") == ("", "/a/b/c")
    assert service_method("/onlyone") == ("", "/onlyone")


@pytest.mark.parametrize(
    ("http", "grpc", "want"),
    [
        (200, "0", (0, "grpc-status")),
        (200, "14", (14, "grpc-status")),
        (200, "x", (2, "grpc-status")),
        (404, None, (12, "http-status")),
        (503, None, (14, "http-status")),
        (418, None, (2, "http-status")),
        (200, None, (2, "missing")),
        (None, None, (2, "missing")),
    ],
)
def test_call_status_is_what_a_grpc_client_reports(
    http: int | None, grpc: str | None, want: tuple[int, str]
) -> None:
    assert call_status(http, grpc) == want


def test_grpc_message_is_percent_decoded() -> None:
    assert grpc_message_text("item%2042%20not%20found") == "item 42 not found"
    assert grpc_message_text("caf%C3%A9") == "café"
    assert grpc_message_text("plain 100%") == "plain 100%"


def test_split_messages_bounded_and_cut() -> None:
    body = lpm(b"one") + lpm(b"two", True) + lpm(b"three")[:6]
    msgs, stop = split_messages(body, 10)
    assert [(m.compressed, m.length, m.data) for m in msgs] == [
        (False, 3, b"one"),
        (True, 3, b"two"),
        (False, 5, b"t"),
    ]
    assert stop == len(body)
    assert len(split_messages(lpm(b"x") * 20, 4)[0]) == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), max_size=30),
    st.integers(min_value=0, max_value=2**32),
)
def test_tally_counts_every_message_however_the_body_is_cut(
    msgs: list[tuple[bool, bytes]], seed: int
) -> None:
    body = b"".join(lpm(m, c) for c, m in msgs)
    rng = random.Random(seed)
    tally = MessageTally()
    pos = 0
    while pos < len(body):
        step = rng.randrange(1, 12)
        tally.feed(body, pos, min(pos + step, len(body)))
        pos += step
    assert (tally.count, tally.compressed, tally.partial) == (
        len(msgs),
        sum(c for c, _ in msgs),
        False,
    )


def test_tally_gap_inside_a_message_keeps_the_count_exact_and_elsewhere_gives_up() -> None:
    body = lpm(b"a" * 100) + lpm(b"b" * 10)
    t = MessageTally()
    t.feed(body, 0, 30)
    t.gap(50)  # inside the first message
    t.feed(body, 80, len(body))
    assert (t.count, t.lost) == (2, False)
    t2 = MessageTally()
    t2.feed(body, 0, 30)
    t2.gap(90)  # past its end: where the next prefix is, is unknown
    t2.feed(body, 120, len(body))
    assert (t2.count, t2.lost) == (1, True)
    # A DATA frame that starts with what looks like a prefix: counting goes on from there.
    t2.frame_start()
    t2.feed(lpm(b"c") + lpm(b"d"), 0, 12)
    assert (t2.count, t2.lost) == (3, True)
    t2.lose()
    t2.frame_start()
    t2.feed(b"\x07garbage", 0, 8)  # a flag byte that is neither 0 nor 1: still blind
    t2.feed(lpm(b"e"), 0, 6)  # not at a frame start
    assert t2.count == 3


# --- protobuf -------------------------------------------------------------------------------


def test_raw_fields_show_numbers_wire_types_and_nesting() -> None:
    # {1: 150, 2: "testing", 3: {1: 7, 1: 8}, 4: fixed32 1, 5: fixed64 2, 6: b"\xff\x00"}
    msg = (
        b"\x08\x96\x01"
        + b"\x12\x07testing"
        + b"\x1a\x04\x08\x07\x08\x08"
        + b"\x25\x01\x00\x00\x00"
        + b"\x29\x02\x00\x00\x00\x00\x00\x00\x00"
        + b"\x32\x02\xff\x00"
    )
    assert raw_fields(msg) == {
        "1": {"varint": 150},
        "2": {"string": "testing"},
        "3": {"message": {"1": [{"varint": 7}, {"varint": 8}]}},
        "4": {"fixed32": 1},
        "5": {"fixed64": 2},
        "6": {"bytes": "/wA="},
    }


def test_raw_fields_bounded_depth_and_size() -> None:
    msg = b"\x08\x01"
    for _ in range(12):
        msg = b"\x0a" + bytes([len(msg)]) + msg
    out = raw_fields(msg, max_depth=3)
    assert out is not None
    inner = out["1"]["message"]["1"]["message"]["1"]["message"]["1"]
    assert "bytes" in inner  # depth exhausted: shown as bytes, not parsed further
    many = b"\x08\x01" * 50
    cut = raw_fields(many, max_fields=10)
    assert cut is not None and len(cut["1"]) == 10 and cut["…"] == "80 bytes not shown"


def test_raw_fields_of_something_else_is_none() -> None:
    assert raw_fields(b"\x0f\xff") is None  # wire type 7
    assert raw_fields(b"\x0a\x10abc") is None  # a length past the end


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_raw_fields_never_raise(data: bytes) -> None:
    raw_fields(data)


def test_proto_decoder_decodes_with_the_descriptor_set() -> None:
    dec = ProtoDecoder(SHOP_DESC.read_bytes(), "shop.desc")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorSet.FromString(SHOP_DESC.read_bytes()).file[0])
    item = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Item"))
    data = item(id=7, name="lamp", price=12.5, tags=["a", "b"]).SerializeToString()
    assert dec.decode("shop.Catalog", "GetItem", False, data) == (
        {"id": "7", "name": "lamp", "price": 12.5, "tags": ["a", "b"]},
        None,
    )
    got, why = dec.decode("shop.Catalog", "Nope", True, data)
    assert got is None and why == "method /shop.Catalog/Nope is not in the descriptor set"
    got, why = dec.decode("shop.Catalog", "GetItem", True, b"\xff\xff")
    assert got is None and why is not None and why.startswith("not a shop.GetItemRequest")


def test_proto_decoder_refuses_what_is_not_a_usable_descriptor_set() -> None:
    with pytest.raises(ProtoDescriptorError, match=r"^x\.desc: not a FileDescriptorSet"):
        ProtoDecoder(b"\xff\xff\xff", "x.desc")
    with pytest.raises(ProtoDescriptorError, match="holds no files"):
        ProtoDecoder(b"", "x.desc")
    f = descriptor_pb2.FileDescriptorProto(
        name="a.proto", package="a", dependency=["missing.proto"]
    )
    f.message_type.add(name="A").field.add(
        name="b", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, type_name=".m.B"
    )
    with pytest.raises(ProtoDescriptorError, match=r"cannot load a\.proto .*--include_imports"):
        ProtoDecoder(descriptor_pb2.FileDescriptorSet(file=[f]).SerializeToString(), "x.desc")


# --- entries --------------------------------------------------------------------------------


class _Ends:
    family = 4
    client_ip = b"\x0a\x00\x00\x01"
    client_port = 40000
    server_ip = b"\x0a\x00\x00\x02"
    server_port = 50051


def _msg(headers: list[tuple[str, str]], body: bytes, request: bool) -> Message:
    if request:
        method, target = headers[0][1], headers[1][1]
        return Message(
            method,
            target,
            None,
            None,
            "HTTP/2.0",
            headers,
            body,
            len(body),
            False,
            100,
            1_000_000,
            1_000_000,
            None,
        )
    status = int(headers[0][1])
    return Message(
        None,
        None,
        status,
        HTTPStatus(status).phrase,
        "HTTP/2.0",
        headers,
        body,
        len(body),
        False,
        100,
        3_000_000,
        3_000_000,
        None,
    )


def _entry(ex: Http2Exchange, protos: ProtoDecoder | None = None) -> dict[str, Any]:
    b = Http2EntryBuilder(_Ends(), Identity("w:1", "10.0.0.9", "node"), 7, 10 << 20, 0, protos)
    return b.build(ex, 0)


GRPC_REQ = [
    (":method", "POST"),
    (":path", "/shop.Catalog/ListItems"),
    ("content-type", "application/grpc"),
    ("grpc-encoding", "gzip"),
]


def test_grpc_entry_status_from_trailers_and_messages_decoded() -> None:
    item = b"\x08\x01\x12\x04lamp"
    body = b"".join(lpm(gzip.compress(item, mtime=0), True) for _ in range(GRPC_MESSAGES_SHOWN + 4))
    resp_headers = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-encoding", "gzip"),
        ("grpc-status", "5"),
        ("grpc-message", "gone%21"),
    ]
    ex = Http2Exchange(
        _msg(GRPC_REQ, lpm(b"\x0a\x04blue"), True),
        _msg(resp_headers, body, False),
        None,
        3,
        1,
        GRPC_MESSAGES_SHOWN + 4,
    )
    e = _entry(ex)
    assert e["protocol"]["abbr"] == "gRPC" and e["protocol"]["macro"] == "grpc"
    r = e["response"]
    assert (r["status"], r["statusText"]) == (5, "NOT_FOUND")
    assert r["headers"][":status"] == "200" and r["headers"]["Grpc-Status"] == "5"
    g = r["grpc"]
    assert (g["status"], g["statusName"], g["message"], g["statusSource"]) == (
        5,
        "NOT_FOUND",
        "gone!",
        "grpc-status",
    )
    assert (
        g["messageCount"] == GRPC_MESSAGES_SHOWN + 4 and len(g["messages"]) == GRPC_MESSAGES_SHOWN
    )
    assert g["messages"][0] == {
        "compressed": True,
        "size": len(gzip.compress(item, mtime=0)),
        "fields": {"1": {"varint": 1}, "2": {"string": "lamp"}},
    }
    q = e["request"]
    assert (q["grpc"]["service"], q["grpc"]["method"], q["grpc"]["messageCount"]) == (
        "shop.Catalog",
        "ListItems",
        1,
    )
    assert q["streamId"] == 3 and q["httpVersion"] == "HTTP/2.0"


def test_grpc_entry_without_trailers_is_unknown_not_ok() -> None:
    ex = Http2Exchange(
        _msg(GRPC_REQ, b"", True),
        _msg([(":status", "200"), ("content-type", "application/grpc")], b"", False),
        ("connection", "connection ended (eof) in stream 1"),
        1,
    )
    r = _entry(ex)["response"]
    assert (r["status"], r["statusText"], r["grpc"]["statusSource"]) == (2, "UNKNOWN", "missing")


def test_plain_http2_entry_keeps_the_http_status_and_the_http2_protocol() -> None:
    ex = Http2Exchange(
        _msg([(":method", "GET"), (":path", "/x?a=1")], b"", True),
        _msg([(":status", "404"), ("content-type", "text/plain")], b"nope", False),
        None,
        5,
    )
    e = _entry(ex)
    assert e["protocol"]["abbr"] == "HTTP/2" and e["protocol"]["version"] == "2.0"
    assert (e["response"]["status"], e["response"]["statusText"]) == (404, "Not Found")
    assert e["request"]["path"] == "/x" and e["request"]["queryString"] == {"a": "1"}
    assert "grpc" not in e["response"]


def test_grpc_entry_with_a_descriptor_set_shows_json() -> None:
    dec = ProtoDecoder(SHOP_DESC.read_bytes())
    req = [
        (":method", "POST"),
        (":path", "/shop.Catalog/GetItem"),
        ("content-type", "application/grpc"),
    ]
    ex = Http2Exchange(
        _msg(req, lpm(b"\x08\x2a"), True),
        _msg(
            [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")],
            lpm(b"\x12\x04lamp"),
            False,
        ),
        None,
        1,
        1,
        1,
    )
    e = _entry(ex, dec)
    assert e["request"]["grpc"]["messages"][0]["json"] == {"id": "42"}
    assert e["response"]["grpc"]["messages"][0]["json"] == {"name": "lamp"}
    assert (e["response"]["status"], e["response"]["statusText"]) == (0, "OK")
