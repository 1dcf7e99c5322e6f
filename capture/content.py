"""Content-Encoding removal with a hard cap on the decoded size, keeping a bounded prefix.

`decode_content(body, content_encoding, max_decoded, max_keep)` undoes the codings listed in a
Content-Encoding value (RFC 9110 8.4: listed in the order they were applied, so they are removed
last first): gzip / x-gzip, deflate (zlib-wrapped, or raw DEFLATE as some servers send it), br,
zstd, identity. It returns `Decoded(data, size, problem)`: at most `max_keep` bytes of the
decoded content (the prefix a user sees), the decoded size of all of it, and None, or an error
text when it cannot decode:

* what is kept is bounded by `max_keep` (the worker's `--max-body`), however far the content
  decodes: a 10 KiB gzip body that decodes to 10 MiB keeps 1 MiB and reports 10 MiB. The rest is
  decoded only to be counted, in pieces of `_FEED` bytes that are dropped at once, so memory
  stays about max_keep + one piece per coding. (Before, the whole decoded body was kept: 200
  such responses took a worker to 5 GB.) Stacked codings stream through the inner ones too,
  but an inner stage's output is collected (up to max_decoded) to feed the next one;

* a decoded size past `max_decoded` ("decompression bomb") → the raw body and
  "decoded size exceeds N bytes". Decompression is streamed with an output limit
  (`zlib.decompressobj().decompress(data, max_length)`, brotli's `output_buffer_limit`,
  zstandard's `stream_reader().read(size)`), so memory never exceeds about max_decoded whatever
  the compression ratio. zstd also needs a window buffer the frame asks for: it is capped at
  `ZSTD_MAX_WINDOW` (8 MiB, the most RFC 9659 lets an HTTP zstd encoder use, and what browsers
  enforce), so a frame asking for more is a corrupt stream, not an allocation;
* a corrupt stream or an unknown coding → the raw body and the reason;
* a stream that simply stops (the body was cut by max_body, a capture gap or a connection end)
  → what could be decoded, and "... stream truncated ...". A user sees the start of the
  content rather than nothing.

`decode_body(body, content_encoding, max_decoded)` is the same keeping everything up to
max_decoded: `(decoded, problem)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import NamedTuple

import brotli
import zstandard

__all__ = ["ZSTD_MAX_WINDOW", "Decoded", "decode_body", "decode_content"]

# Input is fed to the decompressors in pieces of this size, and no call is asked for more
# output than this: what is decoded but not kept lives one piece at a time.
_FEED = 64 << 10


# RFC 9659 section 3: zstd Content-Encoding senders MUST NOT use a window over 8 MB, and
# recipients need not accept one. Without a bound a frame header alone could make the decoder
# allocate up to 2 GiB (zstd's own default limit is 128 MiB).
ZSTD_MAX_WINDOW = 8 << 20


class _Bomb(Exception):
    """Decoded output would exceed max_decoded."""


class Decoded(NamedTuple):
    """What `decode_content` made of a body."""

    data: bytes  # the decoded content, at most max_keep bytes of it (or the raw body: problem)
    size: int  # the decoded length of all of it (len(data) when it could not be decoded)
    problem: str | None  # why it could not be decoded, or was cut short; None when whole


class _Sink:
    """Where a decoder's output goes: counted (past `limit` it is a bomb), the first `keep`
    bytes kept, the rest dropped piece by piece."""

    __slots__ = ("keep", "kept", "limit", "parts", "total")

    def __init__(self, keep: int, limit: int) -> None:
        self.keep = keep
        self.limit = limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.total = 0

    def write(self, piece: bytes) -> None:
        n = len(piece)
        self.total += n
        if self.total > self.limit:
            raise _Bomb
        room = self.keep - self.kept
        if room > 0:
            if n > room:
                piece = piece[:room]
            self.parts.append(piece)
            self.kept += len(piece)

    def data(self) -> bytes:
        parts = self.parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


def decode_content(body: bytes, content_encoding: str, max_decoded: int, max_keep: int) -> Decoded:
    """Remove the Content-Encoding codings from body, keeping at most max_keep decoded bytes
    (see the module docstring)."""
    if content_encoding and body:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
    else:
        codings = []
    if not codings:  # nothing to decode: the body is the content
        return Decoded(body[:max_keep] if len(body) > max_keep else body, len(body), None)
    data = body
    problem: str | None = None
    last = len(codings) - 1
    sink = _Sink(max_keep, max_decoded)
    for i, coding in enumerate(reversed(codings)):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return Decoded(body, len(body), f"unsupported content encoding {coding!r}")
        # The last coding removed writes to the kept prefix; an inner one's whole output is
        # the next one's input (bounded by max_decoded like everything else).
        sink = _Sink(max_keep, max_decoded) if i == last else _Sink(max_decoded, max_decoded)
        try:
            truncated = decoder(data, sink)
        except _Bomb:
            return Decoded(body, len(body), f"decoded size exceeds {max_decoded} bytes")
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            return Decoded(body, len(body), f"corrupt {coding} stream: {exc}")
        if truncated and problem is None:
            problem = f"{coding} stream truncated: decoded {sink.total} bytes before the data ended"
        if i != last:
            data = sink.data()
    return Decoded(sink.data(), sink.total, problem)


def decode_body(body: bytes, content_encoding: str, max_decoded: int) -> tuple[bytes, str | None]:
    """`decode_content` keeping all the decoded content: (decoded, problem)."""
    data, _, problem = decode_content(body, content_encoding, max_decoded, max_decoded)
    return data, problem


def _zlib(data: bytes, sink: _Sink, wbits: int) -> bool:
    """Decode one or more concatenated zlib/gzip members into sink; whether it was cut."""
    pos = 0
    n = len(data)
    while pos < n:
        d = zlib.decompressobj(wbits)
        full = False  # the last call filled its output limit: output may be pending
        while True:
            # unconsumed_tail holds input the output limit stopped at; feed it first.
            chunk = d.unconsumed_tail
            if not chunk and not full:
                if pos >= n:
                    return True  # input ended inside the stream
                chunk = data[pos : pos + _FEED]
                pos += len(chunk)
            piece = d.decompress(chunk, _FEED)
            full = len(piece) == _FEED
            if piece:
                sink.write(piece)
            if d.eof:
                break
        rest = d.unused_data
        if not rest.strip(b"\x00"):
            break  # trailing padding after the last member
        if wbits & 16 == 0 or rest[:2] != b"\x1f\x8b":
            break  # not another gzip member: ignore trailing garbage, like browsers do
        data = rest + data[pos:]
        n = len(data)
        pos = 0
    return False


def _gzip(data: bytes, sink: _Sink) -> bool:
    return _zlib(data, sink, 16 + zlib.MAX_WBITS)


def _deflate(data: bytes, sink: _Sink) -> bool:
    # "deflate" is meant to be zlib-wrapped (RFC 9110 8.4.1.2) but some servers send raw
    # DEFLATE; a zlib header is recognisable (CMF 0x?8, FCHECK makes CMF*256+FLG a multiple of 31).
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return _zlib(data, sink, zlib.MAX_WBITS)
    return _zlib(data, sink, -zlib.MAX_WBITS)


def _br(data: bytes, sink: _Sink) -> bool:
    d = brotli.Decompressor()
    for pos in range(0, len(data), _FEED):
        piece = d.process(data[pos : pos + _FEED], output_buffer_limit=_FEED)
        while True:
            if piece:
                sink.write(piece)
            if d.can_accept_more_data():
                break
            piece = d.process(b"", output_buffer_limit=_FEED)
    # Output can still be pending once all input is in (can_accept_more_data() says nothing
    # about that): drain it.
    while not d.is_finished():
        piece = d.process(b"", output_buffer_limit=_FEED)
        if not piece:
            break
        sink.write(piece)
    return not d.is_finished()


# A zstd frame starts with this magic number (RFC 8878 3.1.1); a skippable frame (3.1.2) with
# 0x184D2A50..0x184D2A5F, little-endian.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE = b"\x2a\x4d\x18"  # bytes 1-3 of the skippable magic; byte 0 is 0x5?
_ZSTD_DICT_ID_SIZE = (0, 1, 2, 4)
_ZSTD_CONTENT_SIZE_SIZE = (0, 2, 4, 8)  # flag 0 with the single-segment bit set means 1


def _zstd_frame_end(data: bytes, pos: int) -> int:
    """Where the zstd frame (or skippable frame) at ``pos`` ends, or -1 if the data ends first.

    Walking the block headers (RFC 8878 3.1.1) costs nothing next to decoding, and is how a
    stream that simply stops is told from one that ended: zstandard's stream reader returns
    what it could in both cases without saying which."""
    n = len(data)
    if data[pos + 1 : pos + 4] == _ZSTD_SKIPPABLE:
        if pos + 8 > n:
            return -1
        end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
        return end if end <= n else -1
    if pos + 5 > n:
        return -1
    fhd = data[pos + 4]  # frame header descriptor
    single_segment = fhd >> 5 & 1
    p = pos + 5 + (1 - single_segment) + _ZSTD_DICT_ID_SIZE[fhd & 3]
    p += _ZSTD_CONTENT_SIZE_SIZE[fhd >> 6] or single_segment
    while True:
        if p + 3 > n:
            return -1
        header = data[p] | data[p + 1] << 8 | data[p + 2] << 16
        # block type 1 (RLE) stores one byte whatever its size; raw and compressed store `size`
        p += 3 + (1 if header >> 1 & 3 == 1 else header >> 3)
        if header & 1:  # last block
            break
    p += 4 * (fhd >> 2 & 1)  # content checksum
    return p if p <= n else -1


def _zstd(data: bytes, sink: _Sink) -> bool:
    """Decode one or more concatenated zstd frames into sink; whether it was cut."""
    pos = 0
    n = len(data)
    view = memoryview(data)
    while pos < n:
        magic = data[pos : pos + 4]
        if len(magic) < 4 and (
            _ZSTD_MAGIC.startswith(magic)
            or (magic[0] & 0xF0 == 0x50 and _ZSTD_SKIPPABLE.startswith(magic[1:]))
        ):
            return True  # input ended inside the next frame's magic number
        if magic != _ZSTD_MAGIC and not (magic[1:] == _ZSTD_SKIPPABLE and magic[0] & 0xF0 == 0x50):
            if pos == 0:
                raise zstandard.ZstdError("no zstd frame at the start")
            break  # not another frame: ignore trailing garbage, as for gzip
        end = _zstd_frame_end(data, pos)
        if magic == _ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).stream_reader(
                view[pos : n if end < 0 else end]
            )
            while True:
                piece = reader.read(_FEED)
                if not piece:
                    break
                sink.write(piece)
        if end < 0:
            return True  # input ended inside the frame
        pos = end
    return False


_DECODERS: dict[str, Callable[[bytes, _Sink], bool]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _br,
    "zstd": _zstd,
}
