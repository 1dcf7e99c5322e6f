"""h11 connections on Trio streams: the one loop that feeds a sans-IO HTTP/1.1 parser.

Shared by the API server (`httpserver`), the hub's client for worker REST calls
(`kshark.hub.httpclient`) and the hub's websocket handshake to workers (`kshark.hub.wsio`).

What it adds to h11: an exact bound on a message head. h11's `max_incomplete_event_size` is
checked only while a head is incomplete, so a head larger than the bound still parses when one
read brings it whole. Here, while a head is awaited, each read asks the socket for no more than
the room left under the bound, so no head past it can ever complete: `HeadTooLarge` instead.
"""

from __future__ import annotations

import h11
import trio

# Bytes asked of the socket per read once the head is in (bodies, and streamed downloads).
RECV_CHUNK = 65536

# Their state while we wait for their head: a server's client before its request (IDLE), a
# client's server before its response (SEND_RESPONSE).
_AWAITING_HEAD = (h11.IDLE, h11.SEND_RESPONSE)


class HeadTooLarge(Exception):
    """The peer's head did not end within the bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"head over {limit} bytes")
        self.limit = limit


async def next_event(
    conn: h11.Connection,
    stream: trio.abc.ReceiveStream,
    *,
    max_head: int,
    chunk: int = RECV_CHUNK,
    skip_blank_lines: bool = False,
) -> h11.Event | type[h11.PAUSED]:
    """`conn.next_event()`, reading from `stream` for as long as h11 needs data.

    Raises h11.RemoteProtocolError (with its `error_status_hint`) for what is not HTTP/1.1,
    HeadTooLarge past `max_head` bytes of head, and lets the stream's own errors through.
    `skip_blank_lines` (a server's choice) drops empty lines before a request line, which
    RFC 9112 §2.2 asks servers to tolerate (an old client's CRLF after a POST body) and h11
    refuses.
    """
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            return h11.PAUSED
        size = chunk
        awaiting_head = conn.their_state in _AWAITING_HEAD
        pending = 0
        if awaiting_head:
            pending = len(conn.trailing_data[0])
            size = min(chunk, max_head - pending)
            if size <= 0:
                raise HeadTooLarge(max_head)
        data = await stream.receive_some(size)
        if data and skip_blank_lines and awaiting_head and not pending:
            data = bytes(data).lstrip(b"\r\n")
            if not data:
                continue  # only blank lines so far (an empty read would mean end of stream)
        conn.receive_data(bytes(data))
