"""The websocket side of the one-port server (kshark.api.httpserver): trio-websocket on a
connection whose upgrade request h11 has already read, and what a streaming server needs of it
besides (no pong once our close is out; a linger after a close the server began).
"""

from __future__ import annotations

import h11
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping

from kshark.api.h11io import RECV_CHUNK


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read off the socket, then reads on.

    h11 read the upgrade request's head together with whatever the client sent after it (a
    first frame that did not wait for the 101). Those bytes are held until `release()`:
    wsproto drops anything it receives before the handshake is accepted, so they must reach it
    after `accept()`.

    `aclose()` closes the socket, unless `keep_socket` was set (by ServerWebSocket, once a
    closing handshake the server began has completed): then only this wrapper is closed (later
    calls raise ClosedResourceError, as on a closed socket) and the connection's task closes the
    socket after lingering (ServerLimits.ws_close_linger). trio-websocket closes its stream the
    moment a closing handshake completes, which is too soon for some clients.
    """

    def __init__(self, stream: trio.abc.Stream, after: bytes = b"") -> None:
        self.transport_stream = stream
        self._after = after
        self._released = trio.Event()
        self._closed = False
        self.keep_socket = False

    def release(self) -> None:
        """The handshake is accepted: bytes after the head may be delivered now."""
        self._released.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._closed:
            raise trio.ClosedResourceError("the websocket's stream is closed")
        if self._after:
            await self._released.wait()
            part = self._after
            if max_bytes is None or max_bytes >= len(part):
                self._after = b""
                return part
            self._after = part[max_bytes:]
            return part[:max_bytes]
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the websocket's stream is closed")
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        if self.keep_socket:
            await trio.lowlevel.checkpoint()
        else:
            await self.transport_stream.aclose()


class ServerWebSocket(WebSocketConnection):
    """trio-websocket's server connection, with what a streaming server needs besides.

    - A ping that arrives while our close frame is out (the closing handshake) is not
      answered: wsproto refuses to send a pong in that state, and trio-websocket (0.12, its
      issue #184) lets that error end the reader task, which logged a traceback and tore the
      connection down before the client had read the end of its stream. RFC 6455 §5.5.2
      requires a pong only "unless it already received a Close frame"; once we sent ours,
      the client learns all it needs from it.
    - `closed_by_server` records that our side began the closing handshake. Once that
      handshake completes, the socket is left open (PrefixedStream.keep_socket) for the
      server to linger on (ServerLimits.ws_close_linger); every other end (the client closed
      first, a protocol error, a timeout) closes it at once, as trio-websocket does.
    """

    closed_by_server = False

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if self._wsproto.state == ConnectionState.OPEN:
            self.closed_by_server = True
        await super().aclose(code, reason)

    async def _handle_ping_event(self, event: Ping) -> None:
        if self._wsproto.state == ConnectionState.OPEN:
            await super()._handle_ping_event(event)

    async def _close_stream(self) -> None:
        stream = self._stream
        if (
            self.closed_by_server
            and self._wsproto.state == ConnectionState.CLOSED
            and isinstance(stream, PrefixedStream)
        ):
            stream.keep_socket = True
        await super()._close_stream()


async def wrap_server_stream(
    nursery: trio.Nursery,
    stream: PrefixedStream,
    head: h11.Request,
    *,
    message_queue_size: int,
    max_message_size: int,
) -> WebSocketRequest:
    """trio_websocket.wrap_server_stream for a request whose head h11 has already read: wsproto
    is given the parsed head (`initiate_upgrade_connection`), trio-websocket the stream after
    it, and the connection is a ServerWebSocket (the library takes no connection class).

    Raises wsproto's RemoteProtocolError for a request that is no websocket handshake; its
    `event_hint` is the refusal to send."""
    wsconn = WSConnection(ConnectionType.SERVER)
    wsconn.initiate_upgrade_connection(head.headers.raw_items(), head.target)
    connection = ServerWebSocket(
        stream,
        wsconn,
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
    )
    nursery.start_soon(connection._reader_task)
    return await connection._get_request()


async def linger(stream: trio.SocketStream, seconds: float) -> None:
    """Keep a connection open for `seconds`, reading and discarding what the peer sends (data
    left unread when a socket is closed makes the kernel reset the connection). The peer's
    end of stream does not end the wait: wscat half-closes right after the closing handshake
    and still exits only when we close."""
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some(RECV_CHUNK):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # reset by the peer: nothing left to wait for
        await trio.sleep_forever()
