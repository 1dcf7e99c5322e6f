"""capture.http2_hpack: RFC 7541's examples, agreement with a real encoder under table-size
changes, and the observer's promise when the table is only partly known: a field is decoded
right or counted unknown, never decoded wrong."""

from __future__ import annotations

from typing import Any

import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.http2_hpack import HpackDecoder

# RFC 7541 Appendix C.3 (no Huffman) and C.4 (Huffman): three requests on one connection.
C3 = [
    "828684410f7777772e6578616d706c652e636f6d",
    "828684be58086e6f2d6361636865",
    "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
]
C4 = [
    "828684418cf1e3c2e5f23a6ba0ab90f4ff",
    "828684be5886a8eb10649cbf",
    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
]
C_REQUESTS = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
]
# C.6: three responses with Huffman and a 256-byte table, so entries are evicted.
C6 = [
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
    "4883640effc1c0bf",
    "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
]
C6_RESPONSES = [
    [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ],
    [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"),
    ],
]


@pytest.mark.parametrize("blocks", [C3, C4], ids=["plain", "huffman"])
def test_rfc7541_request_examples(blocks: list[str]) -> None:
    dec = HpackDecoder(partial=False)
    for block, want in zip(blocks, C_REQUESTS, strict=True):
        res = dec.decode(bytes.fromhex(block))
        assert (res.fields, res.unknown, res.error) == (want, 0, None)
    assert dec.known_entries == 3  # custom-key, cache-control, :authority (C.4.3's table)


def test_rfc7541_response_examples_evict_in_a_256_byte_table() -> None:
    dec = HpackDecoder(partial=False)
    dec.max_size = 256  # the peer's SETTINGS_HEADER_TABLE_SIZE in the example
    for block, want in zip(C6, C6_RESPONSES, strict=True):
        res = dec.decode(bytes.fromhex(block))
        assert (res.fields, res.unknown, res.error) == (want, 0, None)
    assert dec.known_entries == 3  # C.6.3: set-cookie, content-encoding, date (215 bytes)


def test_partial_table_counts_unknown_references_and_keeps_decoding_the_block() -> None:
    enc = Encoder()
    enc.encode([("x-tenant", "acme"), (":authority", "api.example")])  # before the capture
    block = enc.encode(
        [(":method", "GET"), (":authority", "api.example"), ("x-new", "1"), ("x-tenant", "acme")]
    )
    dec = HpackDecoder(partial=True)
    res = dec.decode(block)
    assert res.fields == [(":method", "GET"), ("x-new", "1")]
    assert res.unknown == 2
    assert res.error is None
    # x-new was inserted by that very block after two unknown references: still known, and at
    # the right index, in the next block.
    res = dec.decode(enc.encode([("x-new", "1")]))
    assert (res.fields, res.unknown) == ([("x-new", "1")], 0)


def test_size_update_to_zero_makes_a_partial_table_known() -> None:
    enc = Encoder()
    enc.encode([("x-a", "1")])  # before the capture
    dec = HpackDecoder(partial=True)
    enc.header_table_size = 0
    res = dec.decode(enc.encode([("x-b", "2")]))  # starts with a size update to 0
    assert (res.fields, res.error, dec.partial) == ([("x-b", "2")], None, False)
    enc.header_table_size = 4096
    res = dec.decode(enc.encode([("x-c", "3"), ("x-c", "3")]))
    assert (res.fields, res.unknown, res.error) == ([("x-c", "3"), ("x-c", "3")], 0, None)
    res = dec.decode(enc.encode([("x-a", "1"), ("x-c", "3")]))
    assert (res.fields, res.unknown, res.error) == ([("x-a", "1"), ("x-c", "3")], 0, None)


def test_an_index_past_a_table_believed_complete_is_flagged_not_fatal() -> None:
    dec = HpackDecoder(partial=False)
    res = dec.decode(
        bytes([0x80 | 70, 0x82])
    )  # dynamic index 70 on an empty table, then :method GET
    assert res.fields == [(":method", "GET")]
    assert res.unknown == 1
    assert res.error is not None and "past the dynamic table" in res.error
    assert dec.partial


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x80", "index 0"),
        (b"\xff", "integer cut short"),
        (b"\x40\x05ab", "string cut short"),
        (b"\x40\x81\xff\x01a", "bad Huffman code"),
        (b"\x82\x20", "table size update after a header field"),
    ],
)
def test_malformed_blocks_return_what_decoded_and_an_error(block: bytes, why: str) -> None:
    dec = HpackDecoder(partial=False)
    dec.decode(Encoder().encode([("x-known", "1")]))
    res = dec.decode(block)
    assert res.error is not None and why in res.error
    assert dec.partial and dec.known_entries == 0  # its insertions may be lost: table unknown


# --- properties ------------------------------------------------------------------------------

_names = st.sampled_from(
    [":path", ":authority", "x-a", "x-b", "user-agent", "content-type", "cookie", "x-long-name-z"]
)
_values = st.text(alphabet="abcdefghij/=:; 0123456789é", max_size=40)
_header_lists = st.lists(st.tuples(_names, _values), min_size=1, max_size=12)
# A block's header list, with a table-size change (or None) the encoder applies before it.
_blocks = st.lists(
    st.tuples(st.sampled_from([None, None, None, 0, 64, 100, 256, 4096]), _header_lists),
    min_size=1,
    max_size=25,
)


def _encode(blocks: list[tuple[int | None, list[tuple[str, str]]]]) -> list[bytes]:
    enc = Encoder()
    out = []
    for size, headers in blocks:
        if size is not None:
            enc.header_table_size = size
        # hpack's encoder indexes everything by default; never-indexed fields vary the kinds
        out.append(enc.encode([(n, v, n == "cookie") for n, v in headers]))
    return out


@settings(max_examples=150, deadline=None)
@given(_blocks)
def test_agrees_with_a_real_encoder_under_table_size_changes(blocks: Any) -> None:
    dec = HpackDecoder(partial=False)
    for wire, (_, headers) in zip(_encode(blocks), blocks, strict=True):
        res = dec.decode(wire)
        assert (res.fields, res.unknown, res.error) == (headers, 0, None)


@settings(max_examples=150, deadline=None)
@given(_blocks, st.integers(min_value=0, max_value=24))
def test_joining_late_never_decodes_a_field_wrong(blocks: Any, start: int) -> None:
    """From block `start` on (the capture began there), every decoded field list is the true
    one with the unknown fields left out, and the unknown ones are counted."""
    wires = _encode(blocks)
    dec = HpackDecoder(partial=True)
    for wire, (_, headers) in list(zip(wires, blocks, strict=True))[start:]:
        res = dec.decode(wire)
        assert res.error is None
        assert len(res.fields) + res.unknown == len(headers)
        it = iter(headers)
        assert all(field in it for field in res.fields)  # an in-order sub-sequence


@settings(max_examples=200, deadline=None)
@given(_blocks, st.data())
def test_corrupted_blocks_never_raise(blocks: Any, data: st.DataObject) -> None:
    wires = _encode(blocks)
    dec = HpackDecoder(partial=data.draw(st.booleans()))
    for wire in wires:
        if wire and data.draw(st.booleans()):
            buf = bytearray(wire)
            i = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
            buf[i] ^= data.draw(st.integers(min_value=1, max_value=255))
            wire = bytes(buf[: data.draw(st.integers(min_value=0, max_value=len(buf)))])
        res = dec.decode(wire)
        assert len(res.fields) <= len(wire)
