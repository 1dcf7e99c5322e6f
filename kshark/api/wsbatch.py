"""Many websocket text messages in one socket write, on a trio-websocket server connection.

The worker's streams and the hub's relay both send entries in batches. trio-websocket sends one
message per `send_message`: a socket write and a scheduler round trip per entry, which was most
of a stream's CPU. Here a batch is framed at once and written in one `send_all`, under
trio-websocket's own send lock, so its pings, pongs and closing handshake never interleave with
it (BENCHMARKS.md: worker API stream rate, hub fan-in cost).

trio-websocket has no public way to do this, so `send_texts` uses four of its private
attributes; `can_batch` is the one check that they are there. Without them it falls back to
one `send_message` per text: correct, only slower. The tests say which path the installed
version takes (tests/api/test_api_wsbatch.py, and a canary for each user: the worker's and
the hub's streams).

The frames are written here, not by wsproto's `send`: a server-to-client text frame with no
extension (our server never negotiates one) is a 2-10 byte header and the payload, and
wsproto's general framing costs an order of magnitude more per message than this header
(`frame_header` is checked byte for byte against wsproto in the tests).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

# What send_texts uses of trio-websocket's WebSocketConnection (stable since its 0.9).
_PRIVATE = ("_close_reason", "_stream", "_stream_lock", "_abort_web_socket")

_OP_TEXT = 0x1


def can_batch(ws: WebSocketConnection) -> bool:
    """Whether `send_texts` can write several messages at once on this connection."""
    return all(hasattr(ws, name) for name in _PRIVATE)


def frame_header(length: int) -> bytes:
    """The header of one final, unmasked text frame (server → client) of `length` bytes."""
    first = 0x80 | _OP_TEXT
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


async def send_texts(ws: WebSocketConnection, texts: Sequence[str | bytes]) -> None:
    """Send each text (a str, or bytes that are UTF-8) as one text message, all in one write.

    Raises ConnectionClosed like `send_message`."""
    if not can_batch(ws):
        for text in texts:
            await ws.send_message(text if isinstance(text, str) else text.decode())
        return
    impl: Any = ws
    if impl._close_reason:
        raise ConnectionClosed(impl._close_reason)
    data = _frames(texts)
    async with impl._stream_lock:
        try:
            await impl._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await impl._abort_web_socket()
            raise ConnectionClosed(impl._close_reason) from None


def _frames(texts: Sequence[str | bytes]) -> bytes:
    # A function of its own: the encoded copies are freed before the write, which may block
    # for as long as the client does not read (a stalled client holds one batch, not two).
    parts: list[bytes] = []
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        parts.append(frame_header(len(data)))
        parts.append(data)
    return b"".join(parts)
