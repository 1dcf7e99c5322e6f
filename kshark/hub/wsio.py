"""The hub's websocket client for worker streams (its batched sends to clients: wsbatch).

Why not trio-websocket here: the hub's work per entry is only moving bytes, and trio-websocket's
per-message path (a reader task, a memory channel hop and wsproto events per message) cost the
hub several times what a worker spends to stream the entry (scripts/bench_hub.py).
`WorkerSocket` reads a worker's stream in large chunks and hands back every complete message of
a chunk at once, as the payload bytes the worker sent: they go to the client unchanged (never
decoded to str and encoded again).

The libraries do the protocol around that: h11 the opening handshake (kshark.api.h11io, with
wsproto's nonce and Sec-WebSocket-Accept check), wsproto the frames to the worker (masked: the
first frame, pongs, pings, the close).

The frames from the worker are read by the hand-written `_parse`, a deliberate fast path, for
two reasons:
- cost: wsproto's `receive_data`/`events` keeps the one-read-many-messages batching, but walks
  each frame through several Python layers and decodes it to str, which we would encode again:
  several times `_parse`'s cost per entry, and the hub's whole per-entry budget is a few of
  those (BENCHMARKS.md, hub fan-in);
- the trust boundary: a worker's frame that is not UTF-8, or binary, is dropped and counted
  (`binary_dropped` here, the relay's `frames.read_entry` for text), and the stream goes on;
  wsproto, as RFC 6455 §8.1 asks of a client, fails the whole connection on it, so a bad
  worker would be reconnected to, and fail, again and again.
It handles what a worker may send (text, continuation, binary, ping, pong, close) with a size
bound per message; a test checks it against wsproto on every well-formed stream hypothesis
finds (tests/hub/test_hub_wsio.py).

`WorkerSocket.receive_batch` may be cancelled at any point (the relay bounds its waits with
cancel scopes) without losing a message: messages parsed but not yet returned are kept for the
next call, and control frames to the worker are sent shielded, within `control_timeout`.
`heard_at` and `reads` say when the worker last sent a byte (any frame counts, pongs too).
"""

from __future__ import annotations

import contextlib

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token, generate_nonce

from kshark import __version__
from kshark.api.h11io import HeadTooLarge, next_event
from kshark.hub.httpclient import describe_oserror

# Bound of the opening handshake's response head.
MAX_HANDSHAKE_HEAD = 16 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WsError(Exception):
    """The worker's websocket could not be opened or was broken; `reason` is for users."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status  # the HTTP status when the worker refused the upgrade


class WsClosed(Exception):
    """The worker closed the stream: `code` from its close frame (1006: the connection ended
    without one)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class WorkerSocket:
    """A client websocket to a worker, read in chunks of `read_size` bytes."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        buf: bytearray,
        *,
        read_size: int,
        max_message: int,
        control_timeout: float = 10.0,
    ) -> None:
        self.stream = stream
        self._buf = buf
        self._read_size = read_size
        self._max_message = max_message
        self._control_timeout = control_timeout
        self._out = Connection(ConnectionType.CLIENT)  # frames to the worker
        self._fragments: bytearray | None = None
        self._fragments_binary = False  # the message being reassembled is a binary one
        self.binary_dropped = 0  # binary messages read and dropped
        # Messages parsed and not yet returned (kept across a cancelled receive_batch).
        self._ready: list[bytes] = []
        # Set when a control frame could not be sent whole: the stream's framing is lost.
        self._broken = False
        self.local = _local(stream)
        self.heard_at = trio.current_time()  # when the worker last sent anything
        self.reads = 0  # socket reads that brought bytes

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        connect_timeout: float = 5.0,
        read_size: int = 1 << 18,
        max_message: int = 64 << 20,
        control_timeout: float = 10.0,
    ) -> WorkerSocket:
        """TCP connect and the opening handshake, within `connect_timeout` seconds."""
        stream: trio.SocketStream | None = None
        try:
            with trio.fail_after(connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
                after = await _handshake(stream, host, port, path, headers or [])
        except trio.TooSlowError:
            await _close(stream)
            raise WsError(f"connecting timed out after {connect_timeout:g} s") from None
        except OSError as exc:
            await _close(stream)
            raise WsError(f"cannot connect: {describe_oserror(exc)}") from None
        except (WsError, trio.BrokenResourceError) as exc:
            await _close(stream)
            if isinstance(exc, WsError):
                raise
            raise WsError(f"the connection was lost during the handshake: {exc}") from None
        except BaseException:
            await _close(stream)
            raise
        assert stream is not None
        return cls(
            stream,
            bytearray(after),
            read_size=read_size,
            max_message=max_message,
            control_timeout=control_timeout,
        )

    async def send_text(self, text: str) -> None:
        try:
            await self.stream.send_all(self._out.send(TextMessage(text)))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            raise WsClosed(1006, "the connection was lost") from None

    async def receive_batch(self) -> list[bytes]:
        """Every complete text message available, at least one (waits for it); pings are
        answered. Raises WsClosed when the worker closes or the connection ends. Cancelling
        it loses nothing: what was parsed is returned by the next call."""
        while True:
            if self._broken:
                raise WsClosed(1006, "a control frame to the worker could not be sent")
            await self._parse(self._ready)
            if self._ready:
                out, self._ready = self._ready, []
                return out
            try:
                data = await self.stream.receive_some(self._read_size)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                raise WsClosed(1006, "the connection was lost") from None
            if not data:
                raise WsClosed(1006, "the connection was lost")
            self.heard_at = trio.current_time()
            self.reads += 1
            self._buf += data

    async def ping(self) -> None:
        """Send a ping; the answer (a pong, or anything else) shows in `reads`/`heard_at`."""
        await self._send_control(Ping(b"kshark-hub"))

    async def _parse(self, out: list[bytes]) -> None:
        # The fast path this module exists for (see the module docstring): frames are read off
        # the buffer in place, every complete one of a chunk in one pass.
        buf = self._buf
        pos = 0
        size = len(buf)
        try:
            while size - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if b1 & 0x80:
                    raise WsClosed(1002, "the worker sent a masked frame")
                n = b1 & 0x7F
                hdr = 2
                if n == 126:
                    if size - pos < 4:
                        break
                    n = (buf[pos + 2] << 8) | buf[pos + 3]
                    hdr = 4
                elif n == 127:
                    if size - pos < 10:
                        break
                    n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    hdr = 10
                if n > self._max_message:
                    raise WsClosed(1009, f"a message larger than {self._max_message} bytes")
                if size - pos < hdr + n:
                    break
                start = pos + hdr
                pos = start + n
                opcode = b0 & 0x0F
                fin = b0 & 0x80
                if opcode in (OP_TEXT, OP_BINARY):
                    if fin and self._fragments is None:
                        if opcode == OP_TEXT:
                            out.append(bytes(buf[start:pos]))
                        else:
                            self.binary_dropped += 1
                    else:
                        self._fragments = bytearray(buf[start:pos])
                        self._fragments_binary = opcode == OP_BINARY
                elif opcode == OP_CONT and self._fragments is not None:
                    self._fragments += buf[start:pos]
                    if len(self._fragments) > self._max_message:
                        raise WsClosed(1009, f"a message larger than {self._max_message} bytes")
                    if fin:
                        if self._fragments_binary:
                            self.binary_dropped += 1
                        else:
                            out.append(bytes(self._fragments))
                        self._fragments = None
                elif opcode == OP_PING:
                    await self._send_control(Pong(bytes(buf[start:pos])))
                elif opcode == OP_CLOSE:
                    payload = bytes(buf[start:pos])
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    reason = payload[2:].decode("utf-8", "replace")
                    if out:
                        # Deliver what came before the close first; the close is seen next time.
                        pos = start - hdr
                        break
                    # Our close echoes the worker's code (none when it gave none).
                    await self._send_control(
                        CloseConnection(CloseReason.NO_STATUS_RCVD if code == 1005 else code)
                    )
                    raise WsClosed(code, reason)
                elif opcode != OP_PONG:
                    raise WsClosed(1002, f"unexpected opcode {opcode}")
        finally:
            if pos:
                del buf[:pos]

    async def _send_control(self, event: Event) -> None:
        # Shielded: a frame cut by a cancellation would leave the worker reading garbage. It is
        # a few bytes and only waits if the worker stopped reading; past control_timeout the
        # connection is given up (the next receive_batch says so). A send error is seen by the
        # next read. Once our close is out nothing more is sent (wsproto would refuse it).
        if self._out.state is not ConnectionState.OPEN:
            return
        data = self._out.send(event)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._control_timeout) as scope:
                with contextlib.suppress(
                    OSError, trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    await self.stream.send_all(data)
            if scope.cancelled_caught:
                self._broken = True

    async def aclose(self) -> None:
        await _close(self.stream)


async def _handshake(
    stream: trio.SocketStream, host: str, port: int, path: str, headers: list[tuple[str, str]]
) -> bytes:
    """The opening handshake (RFC 6455 §4.1) on h11; returns what the worker sent after it."""
    key = generate_nonce()
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HANDSHAKE_HEAD)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[
            (b"Host", (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key),
            (b"Sec-WebSocket-Version", b"13"),
            (b"User-Agent", f"kshark-hub/{__version__}".encode()),
            # Values as UTF-8: a token may be any printable text, and the worker compares the
            # raw bytes (what curl sends from a UTF-8 shell).
            *((name.encode("ascii"), value.encode()) for name, value in headers),
        ],
    )
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    try:
        event = await next_event(conn, stream, max_head=MAX_HANDSHAKE_HEAD)
        while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
            event = await next_event(conn, stream, max_head=MAX_HANDSHAKE_HEAD)
    except HeadTooLarge:
        raise WsError("the worker's handshake answer is too large") from None
    except h11.RemoteProtocolError:
        if conn.trailing_data[1]:
            raise WsError("the worker closed the connection during the handshake") from None
        raise WsError("the worker's handshake answer is not HTTP/1.1") from None
    if not isinstance(event, h11.InformationalResponse):
        status = event.status_code if isinstance(event, h11.Response) else 0
        raise WsError(f"the worker refused the websocket (HTTP {status})", status=status)
    accept = dict(event.headers).get(b"sec-websocket-accept")
    if accept != generate_accept_token(key):
        raise WsError("the worker's handshake answer is not a websocket accept")
    return conn.trailing_data[0]


async def _close(stream: trio.abc.Stream | None) -> None:
    if stream is not None:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _local(stream: trio.abc.Stream) -> str:
    """Our end of the connection as the worker's /status shows its clients ("ip:port")."""
    try:
        host, port = stream.socket.getsockname()[:2]  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
