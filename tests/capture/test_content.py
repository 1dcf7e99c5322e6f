"""capture.content.decode_body: every coding, stacking, bombs, corrupt and truncated streams."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib

import brotli
import pytest

from capture.content import decode_body

TEXT = b"The quick brown fox jumps over the lazy dog. " * 50
CAP = 10 << 20


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 means it
        ("deflate", raw_deflate),  # raw DEFLATE, as some servers send it
        ("br", brotli.compress),
    ],
)
def test_each_coding_round_trips(coding: str, encode: object) -> None:
    assert callable(encode)
    assert decode_body(encode(TEXT), coding, CAP) == (TEXT, None)


@pytest.mark.parametrize("coding", ["", "identity", "identity, identity"])
def test_no_coding_returns_the_body_unchanged(coding: str) -> None:
    assert decode_body(b"\x1f\x8bnot really", coding, CAP) == (b"\x1f\x8bnot really", None)


def test_stacked_codings_are_removed_last_first() -> None:
    # sv-gzip-layered-encodings.pcap: "identity, identity, gzip, identity, gzip, gzip"
    body = gzip.compress(gzip.compress(gzip.compress(TEXT)))
    assert decode_body(body, "identity, identity, gzip, identity, gzip, gzip", CAP) == (TEXT, None)
    mixed = brotli.compress(zlib.compress(TEXT))  # deflate applied first, then br
    assert decode_body(mixed, "deflate, br", CAP) == (TEXT, None)


def test_concatenated_gzip_members_all_decode() -> None:
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decode_body(body, "gzip", CAP) == (b"first second", None)


def test_gzip_bomb_is_an_error_with_bounded_memory() -> None:
    bomb = gzip.compress(bytes(10 << 20), 9)  # 10 MB of zeros, ~10 kB on the wire
    cap = 1 << 20
    tracemalloc.start()
    try:
        body, error = decode_body(bomb, "gzip", cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert body == bomb  # the raw body, untouched
    assert error == "decoded size exceeds 1048576 bytes"
    assert peak < 4 * cap  # never the 10 MB the bomb expands to


def test_brotli_bomb_is_an_error_with_bounded_memory() -> None:
    bomb = brotli.compress(bytes(10 << 20))
    tracemalloc.start()
    try:
        body, error = decode_body(bomb, "br", 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (body, error) == (bomb, "decoded size exceeds 1048576 bytes")
    assert peak < 4 << 20


def test_exactly_max_decoded_is_allowed() -> None:
    data = os.urandom(1000)
    assert decode_body(gzip.compress(data), "gzip", 1000) == (data, None)
    assert decode_body(gzip.compress(data), "gzip", 999)[1] == "decoded size exceeds 999 bytes"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_corrupt_stream_returns_the_raw_body_and_why(coding: str) -> None:
    junk = b"\x1f\x8b\x08\x00" + bytes(range(40, 140)) if coding == "gzip" else b"\xff" * 64
    body, error = decode_body(junk, coding, CAP)
    assert body == junk
    assert error is not None and error.startswith(f"corrupt {coding} stream")


@pytest.mark.parametrize(("coding", "encode"), [("gzip", gzip.compress), ("br", brotli.compress)])
def test_truncated_stream_decodes_what_it_can(coding: str, encode: object) -> None:
    assert callable(encode)
    data = os.urandom(20000)  # incompressible: the first half of the stream holds ~the first half
    wire = encode(data)
    body, error = decode_body(wire[: len(wire) // 2], coding, CAP)
    assert 0 < len(body) < len(data)
    assert data.startswith(body)
    assert error == f"{coding} stream truncated: decoded {len(body)} bytes before the data ended"


def test_unsupported_coding_returns_the_raw_body() -> None:
    assert decode_body(b"abc", "gzip, compress", CAP) == (
        b"abc",
        "unsupported content encoding 'compress'",
    )
