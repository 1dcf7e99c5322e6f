"""The hub's own websocket client for worker streams (its batched sends to clients: wsbatch).

Why not trio-websocket for these two legs (the server side still uses it for the handshake and
to watch the client): the hub's work per entry is only moving bytes, and trio-websocket's
per-message path (a reader task, a memory channel hop and wsproto events per message, one
`send` syscall per message) cost the hub ~190 µs of CPU per entry relayed, about nine times
what a worker spends to stream it (scripts/bench_hub.py). Here:

- `WorkerSocket` reads a worker's stream in large chunks and hands back every complete message
  of a chunk at once, as the payload bytes the worker sent: they go to the client unchanged
  (never decoded to str and encoded again).
- Sends to the hub's clients are batched by `kshark.api.wsbatch`, as the worker's are.

Only what the hub needs of RFC 6455 is here: client handshake (with Sec-WebSocket-Accept
check), masked text frames out, text/continuation/ping/pong/close in, a size bound per message,
and a ping out (`WorkerSocket.ping`) for the relay's hung-worker check. A worker sends text
only: binary messages are read and dropped, counted in `binary_dropped` (the relay checks what
the text messages hold, see frames.check_entry).

`WorkerSocket.receive_batch` may be cancelled at any point (the relay bounds its waits with
cancel scopes) without losing a message: messages parsed but not yet returned are kept for the
next call, and control frames to the worker are sent shielded, within `control_timeout`.
`heard_at` and `reads` say when the worker last sent a byte (any frame counts, pongs too).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import struct

import trio

from kshark import __version__
from kshark.hub.httpclient import describe_oserror

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
# Bounds of the opening handshake's response head.
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


def _masked(payload: bytes, opcode: int) -> bytes:
    """One final masked frame (client → server)."""
    mask = os.urandom(4)
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 0xFE, n)
    else:
        head = struct.pack("!BBQ", first, 0xFF, n)
    # XOR with the repeated mask through big integers: one C operation, not a loop per byte.
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


class WorkerSocket:
    """A client websocket to a worker, read in chunks of `read_size` bytes."""

    def __init__(
        self,
        stream: trio.SocketStream,
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
        key = base64.b64encode(os.urandom(16)).decode()
        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"User-Agent: kshark-hub/{__version__}",
            *(f"{name}: {value}" for name, value in headers or ()),
        ]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        stream: trio.SocketStream | None = None
        try:
            with trio.fail_after(connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(request)
                buf = bytearray()
                while (end := buf.find(b"\r\n\r\n")) < 0:
                    if len(buf) > MAX_HANDSHAKE_HEAD:
                        raise WsError("the worker's handshake answer is too large")
                    data = await stream.receive_some(16384)
                    if not data:
                        raise WsError("the worker closed the connection during the handshake")
                    buf += data
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = head[0].split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status != 101:
                raise WsError(f"the worker refused the websocket (HTTP {status})", status=status)
            fields = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            if fields.get("sec-websocket-accept") != expected:
                raise WsError("the worker's handshake answer is not a websocket accept")
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
            buf,
            read_size=read_size,
            max_message=max_message,
            control_timeout=control_timeout,
        )

    async def send_text(self, text: str) -> None:
        try:
            await self.stream.send_all(_masked(text.encode(), OP_TEXT))
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
        await self._send_control(OP_PING, b"kshark-hub")

    async def _parse(self, out: list[bytes]) -> None:
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
                    await self._send_control(OP_PONG, bytes(buf[start:pos]))
                elif opcode == OP_CLOSE:
                    payload = bytes(buf[start:pos])
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    reason = payload[2:].decode("utf-8", "replace")
                    if out:
                        # Deliver what came before the close first; the close is seen next time.
                        pos = start - hdr
                        break
                    await self._send_control(OP_CLOSE, payload[:2])
                    raise WsClosed(code, reason)
                elif opcode != OP_PONG:
                    raise WsClosed(1002, f"unexpected opcode {opcode}")
        finally:
            if pos:
                del buf[:pos]

    async def _send_control(self, opcode: int, payload: bytes) -> None:
        # Shielded: a frame cut by a cancellation would leave the worker reading garbage. It is
        # a few bytes and only waits if the worker stopped reading; past control_timeout the
        # connection is given up (the next receive_batch says so). A send error is seen by the
        # next read.
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._control_timeout) as scope:
                with contextlib.suppress(
                    OSError, trio.BrokenResourceError, trio.ClosedResourceError
                ):
                    await self.stream.send_all(_masked(payload, opcode))
            if scope.cancelled_caught:
                self._broken = True

    async def aclose(self) -> None:
        await _close(self.stream)


async def _close(stream: trio.SocketStream | None) -> None:
    if stream is not None:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _local(stream: trio.SocketStream) -> str:
    """Our end of the connection as the worker's /status shows its clients ("ip:port")."""
    try:
        host, port = stream.socket.getsockname()[:2]
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
