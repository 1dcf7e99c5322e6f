"""capture.content.decode_body: every coding, stacking, bombs, corrupt and truncated streams."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib

import brotli
import pytest
import zstandard

from capture.content import ZSTD_MAX_WINDOW, Decoded, decode_body, decode_content

TEXT = b"The quick brown fox jumps over the lazy dog. " * 50
CAP = 10 << 20


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def zstd(data: bytes) -> bytes:
    """One frame with the content size in its header, as zstd's one-shot API writes it."""
    return zstandard.ZstdCompressor(level=3).compress(data)


def zstd_streamed(data: bytes, window_log: int = 20, checksum: bool = True) -> bytes:
    """One frame without a content size, in several blocks, as a streaming server writes it."""
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=window_log, write_checksum=checksum
    )
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
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
        ("zstd", zstd),
        ("zstd", zstd_streamed),
        ("ZSTD", zstd),
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
    assert decode_body(zstd(gzip.compress(TEXT)), "gzip, zstd", CAP) == (TEXT, None)
    assert decode_body(gzip.compress(zstd(TEXT)), "zstd, gzip", CAP) == (TEXT, None)
    # the order matters: removed in the wrong order, the outer coding is not zstd
    body, error = decode_body(zstd(gzip.compress(TEXT)), "zstd, gzip", CAP)
    assert error is not None and error.startswith("corrupt gzip stream")


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


def test_concatenated_zstd_frames_and_skippable_frames_all_decode() -> None:
    # RFC 8878 3.1: frames may be appended; a skippable frame (magic 0x184D2A5?) carries no data
    skippable = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"meta!"
    body = zstd(b"first ") + skippable + zstd_streamed(b"second")
    assert decode_body(body, "zstd", CAP) == (b"first second", None)
    # bytes after the last frame that are not a frame are ignored, as for gzip
    assert decode_body(zstd(TEXT) + b"\r\n", "zstd", CAP) == (TEXT, None)


@pytest.mark.parametrize("encode", [zstd, zstd_streamed], ids=["content-size", "streamed"])
def test_zstd_bomb_is_an_error_with_bounded_memory(encode: object) -> None:
    assert callable(encode)
    bomb = encode(bytes(50 << 20))  # 50 MB of zeros in a few kB
    assert len(bomb) < 50_000
    tracemalloc.start()
    try:
        body, error = decode_body(bomb, "zstd", 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (body, error) == (bomb, "decoded size exceeds 1048576 bytes")
    assert peak < 4 << 20


def test_zstd_bomb_in_many_small_frames_is_caught_too() -> None:
    frame = zstd(bytes(1 << 20))
    body, error = decode_body(frame * 20, "zstd", 10 << 20)  # 20 MB in 20 frames
    assert (body, error) == (frame * 20, "decoded size exceeds 10485760 bytes")
    assert decode_body(frame * 10, "zstd", 10 << 20) == (bytes(10 << 20), None)


def test_zstd_window_past_8_mib_is_refused_not_allocated() -> None:
    # RFC 9659: HTTP zstd senders use at most an 8 MB window; a frame asking for 16 MiB (and no
    # content size that would bound it) is not decoded, whatever its actual size.
    assert ZSTD_MAX_WINDOW == 8 << 20
    data = os.urandom(1000)
    assert decode_body(zstd_streamed(data, window_log=23), "zstd", CAP) == (data, None)
    wide = zstd_streamed(data, window_log=24)
    body, error = decode_body(wide, "zstd", CAP)
    assert body == wide
    assert error is not None and error.startswith("corrupt zstd stream:")


def test_exactly_max_decoded_is_allowed() -> None:
    data = os.urandom(1000)
    assert decode_body(gzip.compress(data), "gzip", 1000) == (data, None)
    assert decode_body(gzip.compress(data), "gzip", 999)[1] == "decoded size exceeds 999 bytes"
    assert decode_body(zstd(data), "zstd", 1000) == (data, None)
    assert decode_body(zstd(data), "zstd", 999)[1] == "decoded size exceeds 999 bytes"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_stream_returns_the_raw_body_and_why(coding: str) -> None:
    junk = b"\x1f\x8b\x08\x00" + bytes(range(40, 140)) if coding == "gzip" else b"\xff" * 64
    body, error = decode_body(junk, coding, CAP)
    assert body == junk
    assert error is not None and error.startswith(f"corrupt {coding} stream")


def test_corrupt_zstd_block_after_a_valid_header() -> None:
    wire = bytearray(zstd_streamed(os.urandom(5000) + TEXT))
    wire[len(wire) // 2 :] = bytes(len(wire) - len(wire) // 2)  # the header and a block survive
    body, error = decode_body(bytes(wire), "zstd", CAP)
    assert body == bytes(wire)
    assert error is not None and error.startswith("corrupt zstd stream:")


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("br", brotli.compress), ("zstd", zstd_streamed)],
)
def test_truncated_stream_decodes_what_it_can(coding: str, encode: object) -> None:
    assert callable(encode)
    # incompressible, in more than one zstd block (128 KiB each): the first half of the stream
    # holds about the first half
    data = os.urandom(300_000)
    wire = encode(data)
    body, error = decode_body(wire[: len(wire) // 2], coding, CAP)
    assert 0 < len(body) < len(data)
    assert data.startswith(body)
    assert error == f"{coding} stream truncated: decoded {len(body)} bytes before the data ended"


@pytest.mark.parametrize("cut", [1, 3, 5, 8, -1, -4], ids=lambda n: f"cut-at-{n}")
def test_zstd_stream_cut_anywhere_is_truncated_not_corrupt(cut: int) -> None:
    # Inside the magic, the header, a block header, or the checksum: all a stream that stopped.
    wire = zstd_streamed(TEXT)
    body, error = decode_body(wire[:cut], "zstd", CAP)
    assert TEXT.startswith(body)
    assert error == f"zstd stream truncated: decoded {len(body)} bytes before the data ended"


def test_unsupported_coding_returns_the_raw_body() -> None:
    assert decode_body(b"abc", "gzip, compress", CAP) == (
        b"abc",
        "unsupported content encoding 'compress'",
    )


# --- keeping a bounded prefix (--max-body) -------------------------------------------------------

BIG = bytes(range(256)) * (40 << 10)  # 10 MiB, not all zeros


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", lambda b: brotli.compress(b, quality=1)),
        ("zstd", zstd),
        ("zstd", zstd_streamed),
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b), quality=1)),
    ],
)
def test_content_decoding_keeps_at_most_max_keep_and_reports_the_whole_size(
    coding: str, encode: object
) -> None:
    """What a 10 MiB response body costs is what is kept: max_keep bytes, whatever its
    decoded size (reported in full). Before, all 10 MiB were kept in every entry."""
    assert callable(encode)
    body = encode(BIG)
    keep = 1 << 20
    tracemalloc.start()
    try:
        result = decode_content(body, coding, CAP, keep)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == Decoded(BIG[:keep], len(BIG), None)
    # the kept prefix, plus a few decoding pieces; a stacked coding's inner output on top
    assert peak < (len(body) + 3 * keep if "," not in coding else len(BIG) + 3 * keep)


def test_prefix_of_a_cut_stream_and_small_bodies() -> None:
    body = gzip.compress(BIG)
    result = decode_content(body[: len(body) // 2], "gzip", CAP, 1000)
    assert result.data == BIG[:1000] and 1000 < result.size < len(BIG)
    assert result.problem is not None and f"decoded {result.size} bytes" in result.problem
    assert decode_content(gzip.compress(b"small"), "gzip", CAP, 1000) == Decoded(b"small", 5, None)
    # nothing to decode: the body is the content, kept to max_keep too
    assert decode_content(b"raw", "", CAP, 2) == Decoded(b"ra", 3, None)
    assert decode_content(b"raw", "identity", CAP, 5) == Decoded(b"raw", 3, None)
    bomb = gzip.compress(bytes(CAP + 1))
    assert decode_content(bomb, "gzip", CAP, 10) == Decoded(
        bomb, len(bomb), f"decoded size exceeds {CAP} bytes"
    )
