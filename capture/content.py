"""Content-Encoding removal with a hard cap on the decoded size.

`decode_body(body, content_encoding, max_decoded)` undoes the codings listed in a
Content-Encoding value (RFC 9110 8.4: listed in the order they were applied, so they are removed
last first): gzip / x-gzip, deflate (zlib-wrapped, or raw DEFLATE as some servers send it), br,
identity. It returns `(decoded, None)`, or the body and an error text when it cannot:

* a decoded size past `max_decoded` ("decompression bomb") → the raw body and
  "decoded size exceeds N bytes". Decompression is streamed with an output limit
  (`zlib.decompressobj().decompress(data, max_length)`, brotli's `output_buffer_limit`), so
  memory never exceeds about max_decoded whatever the compression ratio;
* a corrupt stream or an unknown coding → the raw body and the reason;
* a stream that simply stops (the body was cut by max_body, a capture gap or a connection end)
  → what could be decoded, and "... stream truncated ...". A user sees the start of the
  content rather than nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli

__all__ = ["decode_body"]

# Input is fed to the decompressors in pieces of this size, so a single call never has to
# produce more than max_decoded + 1 bytes of output.
_FEED = 64 << 10


class _Bomb(Exception):
    """Decoded output would exceed max_decoded."""


def decode_body(body: bytes, content_encoding: str, max_decoded: int) -> tuple[bytes, str | None]:
    """Remove the Content-Encoding codings from body (see the module docstring)."""
    if not content_encoding or not body:
        return body, None
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return body, None
    data = body
    problem: str | None = None
    for coding in reversed(codings):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return body, f"unsupported content encoding {coding!r}"
        try:
            data, truncated = decoder(data, max_decoded)
        except _Bomb:
            return body, f"decoded size exceeds {max_decoded} bytes"
        except (zlib.error, brotli.error) as exc:
            return body, f"corrupt {coding} stream: {exc}"
        if truncated and problem is None:
            problem = f"{coding} stream truncated: decoded {len(data)} bytes before the data ended"
    return data, problem


def _zlib(data: bytes, max_decoded: int, wbits: int) -> tuple[bytes, bool]:
    """Decode one or more concatenated zlib/gzip members; (output, truncated)."""
    out: list[bytes] = []
    total = 0
    pos = 0
    n = len(data)
    while pos < n:
        d = zlib.decompressobj(wbits)
        while True:
            # unconsumed_tail holds input the output limit stopped at; feed it first.
            chunk = d.unconsumed_tail or data[pos : pos + _FEED]
            if not d.unconsumed_tail:
                pos += len(chunk)
            piece = d.decompress(chunk, max_decoded - total + 1)
            total += len(piece)
            if total > max_decoded:
                raise _Bomb
            out.append(piece)
            if d.eof:
                break
            if not d.unconsumed_tail and pos >= n:
                return b"".join(out), True  # input ended inside the stream
        rest = d.unused_data
        if not rest.strip(b"\x00"):
            break  # trailing padding after the last member
        if wbits & 16 == 0 or rest[:2] != b"\x1f\x8b":
            break  # not another gzip member: ignore trailing garbage, like browsers do
        data = rest + data[pos:]
        n = len(data)
        pos = 0
    return b"".join(out), False


def _gzip(data: bytes, max_decoded: int) -> tuple[bytes, bool]:
    return _zlib(data, max_decoded, 16 + zlib.MAX_WBITS)


def _deflate(data: bytes, max_decoded: int) -> tuple[bytes, bool]:
    # "deflate" is meant to be zlib-wrapped (RFC 9110 8.4.1.2) but some servers send raw
    # DEFLATE; a zlib header is recognisable (CMF 0x?8, FCHECK makes CMF*256+FLG a multiple of 31).
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return _zlib(data, max_decoded, zlib.MAX_WBITS)
    return _zlib(data, max_decoded, -zlib.MAX_WBITS)


def _br(data: bytes, max_decoded: int) -> tuple[bytes, bool]:
    d = brotli.Decompressor()
    out: list[bytes] = []
    total = 0
    limit = max_decoded + 1
    for pos in range(0, len(data), _FEED):
        piece = d.process(data[pos : pos + _FEED], output_buffer_limit=limit - total)
        while True:
            total += len(piece)
            if total > max_decoded:
                raise _Bomb
            out.append(piece)
            if d.can_accept_more_data():
                break
            piece = d.process(b"", output_buffer_limit=limit - total)
    return b"".join(out), not d.is_finished()


_DECODERS: dict[str, Callable[[bytes, int], tuple[bytes, bool]]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _br,
}
