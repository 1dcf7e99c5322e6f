"""One TCP port for plain HTTP/1.1 and websockets, shared by the worker and the hub.

Why not two servers: users and proxies expect one address (`ws://host:30001/api/wsFull` beside
`http://host:30001/status`), and Kubeshark serves both on one port. Why not h11 for the plain side:
a websocket upgrade has to hand trio-websocket the exact bytes of the request head (wsproto parses
the handshake itself), so we must own the buffer the head was read into; parsing a GET head is a
few lines once the buffer is ours.

Per connection (one Trio task each): read a request head (bounded by `ServerLimits.max_head`,
timed by cancel scopes), check the optional token, then either

- a websocket upgrade to one of `app.ws_paths`: replay the bytes already read through
  `PrefixedStream` into trio-websocket's `wrap_server_stream`, accept, and run
  `app.handle_ws(request, ws)` until it returns; or
- anything else: `app.handle_http(request)` → a `Response`, written with Content-Length (or
  chunked when the length is unknown); keep-alive unless the client or an error says otherwise.

A handler that raises ends its own connection (logged), never the server.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hmac
import logging
import re
from collections.abc import AsyncIterable, Set
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import trio
from trio_websocket import WebSocketConnection, wrap_server_stream

from kshark import __version__
from kshark.web.paths import is_public

log = logging.getLogger("kshark.api")

SERVER_HEADER = f"kshark/{__version__}"
# Bytes asked of the socket per receive while reading a request head.
_RECV_CHUNK = 16384
# Chunk size for streamed response bodies (pcap downloads): one chunk in memory per connection.
STREAM_CHUNK = 65536

# Websocket subprotocols: a client that offers `kshark` gets it back (browsers need an answer to
# any subprotocol they offer); `kshark.bearer.<base64url of the token>` carries the token.
WS_SUBPROTOCOL = "kshark"
WS_TOKEN_PREFIX = "kshark.bearer."

_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

REASONS = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Every bound one connection or the listener keeps, and what happens at the bound.

    max_head: bytes of one request head (request line + headers). Past it: 431 and close.
    max_body: bytes of a request body (our routes are GETs; the hub may POST). Past it: 413, close.
    head_timeout: seconds for the first request head to arrive complete. Past it: close.
    idle_timeout: seconds a keep-alive connection may wait for its next request. Past it: close.
    send_timeout: seconds one response write may stall (a client that stopped reading a
        download). Past it: close. Websocket sends are not covered: their pacing is the app's.
    max_connections: connections served at once. Past it: 503 and close, without reading.
    ws_handshake_timeout: seconds to finish the websocket opening handshake. Past it: close.
    ws_close_timeout: seconds to wait for the websocket closing handshake. Past it: close TCP.
    ws_max_message: largest client websocket message (the first frame is a query; later frames
        are ignored). Past it: trio-websocket closes with 1009.
    ws_message_queue: client messages trio-websocket buffers before it stops reading the socket.
    """

    max_head: int = 16 * 1024
    max_body: int = 1024 * 1024
    head_timeout: float = 10.0
    idle_timeout: float = 60.0
    send_timeout: float = 60.0
    max_connections: int = 1024
    ws_handshake_timeout: float = 10.0
    ws_close_timeout: float = 5.0
    ws_max_message: int = 64 * 1024
    ws_message_queue: int = 4


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Header names are lower-case; repeated headers joined with ", "."""

    method: str
    target: str  # as sent, e.g. "/query/validate?q=http"
    path: str  # percent-decoded, without the query
    query: dict[str, str]  # first value of each name; "?q=" gives {"q": ""}
    headers: dict[str, str]
    version: str = "HTTP/1.1"
    remote: str = ""  # "ip:port" of the peer
    body: bytes = b""


@dataclass(slots=True)
class Response:
    """What a route answers. `stream` (with `content_length`, or None for chunked) is for bodies
    that must not be held in memory, such as pcap downloads."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterable[bytes] | None = None
    content_length: int | None = None


def json_response(
    value: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON body with sorted keys (the project's wire style)."""
    body = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    return Response(status, body, "application/json", headers or [])


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


def error_response(
    status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    """The JSON error shape of every non-2xx answer: {"error": {"type": "http", "message": ...}}."""
    return json_response({"error": {"type": "http", "message": message}}, status, headers)


class App(Protocol):
    """What `serve` serves. Websocket upgrades to a path in `ws_paths` go to `handle_ws`;
    everything else (including a non-upgrade request to a ws path) goes to `handle_http`."""

    ws_paths: Set[str]

    async def handle_http(self, request: Request) -> Response: ...

    async def handle_ws(self, request: Request, ws: WebSocketConnection) -> None: ...


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read off the socket, then reads on.

    trio-websocket wants the whole handshake from the stream; we have already consumed the head
    to route it, so we give it back through this wrapper instead of re-parsing it ourselves.
    Bytes that came after the head (a client that sends its first frame without waiting for
    the 101) are held until `release()`: wsproto drops anything it receives before the
    handshake is accepted, so they must reach it after `accept()`.
    """

    def __init__(self, stream: trio.abc.Stream, head: bytes, after: bytes = b"") -> None:
        self.transport_stream = stream
        self._pending = [part for part in (head, after) if part]
        self._after_pending = bool(after)
        self._released = trio.Event()

    def release(self) -> None:
        """The handshake is accepted: bytes after the head may be delivered now."""
        self._released.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._pending:
            if self._after_pending and len(self._pending) == 1:
                await self._released.wait()
            else:
                await trio.lowlevel.checkpoint()
            part = self._pending[0]
            if max_bytes is None or max_bytes >= len(part):
                del self._pending[0]
                return part
            self._pending[0] = part[max_bytes:]
            return part[:max_bytes]
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


class _HttpError(Exception):
    """A request we answer with `status` and then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def serve(
    app: App,
    host: str | None,
    port: int,
    *,
    token: str | None = None,
    limits: ServerLimits | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port and serve `app` until cancelled; `task_status.started(bound_port)`.

    host None or "" listens on every address. With port 0 the OS picks the port; when a host name
    resolves to several addresses only the first listener is kept, so that there is one port.
    """
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    if port == 0 and len(listeners) > 1:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = int(listeners[0].socket.getsockname()[1])
    server = _Server(app, token, limits or ServerLimits())
    log.info("api listening on %s port %d", host or "*", bound)
    task_status.started(bound)
    await trio.serve_listeners(server.handle_connection, listeners)


class _Server:
    def __init__(self, app: App, token: str | None, limits: ServerLimits) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.limits = limits
        self.connections = 0

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        remote = _peer(stream)
        self.connections += 1
        try:
            if self.connections > self.limits.max_connections:
                busy = error_response(503, "too many connections")
                await self._send_response(stream, busy, None, close=True)
                return
            await self._serve_requests(stream, remote)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; nothing to answer
        except Exception:
            log.exception("connection from %s failed", remote)
        finally:
            self.connections -= 1
            with trio.move_on_after(self.limits.ws_close_timeout):
                await stream.aclose()

    async def _serve_requests(self, stream: trio.SocketStream, remote: str) -> None:
        limits = self.limits
        buf = bytearray()
        first = True
        while True:
            head_end: int | None = None
            with trio.move_on_after(limits.head_timeout if first else limits.idle_timeout):
                try:
                    head_end = await _read_head(stream, buf, limits.max_head)
                except _HttpError as exc:
                    await self._send_error(stream, exc)
                    return
            if head_end is None:
                return  # timeout or end of stream between requests
            first = False
            head = bytes(buf[:head_end])
            del buf[:head_end]
            try:
                request, keep_alive = _parse_head(head, remote)
            except _HttpError as exc:
                await self._send_error(stream, exc)
                return

            if not self._authorized(request):
                # A refused upgrade is never left half-done, and an unread body would be taken
                # for the next request: answer, then close.
                keep_alive = keep_alive and not _is_websocket_upgrade(request)
                keep_alive = keep_alive and not _has_body(request)
                refusal = error_response(
                    401, "missing or wrong token", [("WWW-Authenticate", "Bearer")]
                )
                ok = await self._send_response(stream, refusal, request, close=not keep_alive)
                if not ok or not keep_alive:
                    return
                continue

            if request.path in self.app.ws_paths and _is_websocket_upgrade(request):
                # The replay holds the head and anything the client sent after it (a first
                # frame may follow the handshake without waiting for our 101).
                await self._serve_websocket(stream, head, bytes(buf), request)
                return
            if request.path in self.app.ws_paths and request.method in ("GET", "HEAD"):
                response = error_response(
                    426, "this path is a websocket endpoint", [("Upgrade", "websocket")]
                )
                keep_alive = keep_alive and not _has_body(request)
            else:
                try:
                    request = await self._read_body(stream, buf, request)
                except _HttpError as exc:
                    await self._send_error(stream, exc)
                    return
                try:
                    response = await self.app.handle_http(request)
                except Exception:
                    log.exception("%s %s from %s failed", request.method, request.target, remote)
                    response = error_response(500, "internal error")
                    keep_alive = False
            ok = await self._send_response(stream, response, request, close=not keep_alive)
            if not ok or not keep_alive:
                return

    async def _send_error(self, stream: trio.abc.Stream, exc: _HttpError) -> None:
        await self._send_response(stream, error_response(exc.status, exc.message), None, close=True)

    def _authorized(self, request: Request) -> bool:
        if self.token is None or is_public(request.path):
            return True
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token):
            return True
        given = request.query.get("token") or _subprotocol_token(request)
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def _read_body(
        self, stream: trio.SocketStream, buf: bytearray, request: Request
    ) -> Request:
        if "transfer-encoding" in request.headers:
            raise _HttpError(501, "chunked request bodies are not supported")
        length_text = request.headers.get("content-length")
        if length_text is None:
            return request
        if not length_text.isascii() or not length_text.isdigit():
            raise _HttpError(400, "bad Content-Length")
        length = int(length_text)
        if length > self.limits.max_body:
            raise _HttpError(413, f"request body over {self.limits.max_body} bytes")
        with trio.move_on_after(self.limits.head_timeout) as scope:
            while len(buf) < length:
                data = await stream.receive_some(_RECV_CHUNK)
                if not data:
                    raise trio.BrokenResourceError("end of stream inside a request body")
                buf += data
        if scope.cancelled_caught:
            raise _HttpError(408, "request body too slow")
        body = bytes(buf[:length])
        del buf[:length]
        return Request(
            request.method,
            request.target,
            request.path,
            request.query,
            request.headers,
            request.version,
            request.remote,
            body,
        )

    async def _serve_websocket(
        self, stream: trio.SocketStream, head: bytes, after: bytes, request: Request
    ) -> None:
        limits = self.limits
        async with trio.open_nursery() as nursery:
            ws: WebSocketConnection | None = None
            replay = PrefixedStream(stream, head, after)
            with trio.move_on_after(limits.ws_handshake_timeout):
                ws_request = await wrap_server_stream(
                    nursery,
                    replay,
                    message_queue_size=limits.ws_message_queue,
                    max_message_size=limits.ws_max_message,
                )
                chosen = (
                    WS_SUBPROTOCOL if WS_SUBPROTOCOL in ws_request.proposed_subprotocols else None
                )
                ws = await ws_request.accept(subprotocol=chosen)
                replay.release()
            if ws is None:
                log.info("websocket handshake from %s did not complete", request.remote)
                nursery.cancel_scope.cancel()
                return
            try:
                await self.app.handle_ws(request, ws)
            except Exception:
                log.exception("websocket %s from %s failed", request.path, request.remote)
                with trio.move_on_after(limits.ws_close_timeout):
                    await ws.aclose(1011, "internal error")
            finally:
                with trio.move_on_after(limits.ws_close_timeout):
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _send_response(
        self, stream: trio.abc.Stream, response: Response, request: Request | None, *, close: bool
    ) -> bool:
        """Write one response; False when the connection can no longer be reused.

        A body of unknown length is sent chunked to HTTP/1.1 clients and delimited by closing
        the connection for HTTP/1.0 ones. HEAD gets the head only.
        """
        streamed = response.stream is not None
        unknown_length = streamed and response.content_length is None
        http10 = request is not None and request.version == "HTTP/1.0"
        chunked = unknown_length and not http10
        close = close or (unknown_length and http10)
        head_only = request is not None and request.method == "HEAD"
        lines = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Server: {SERVER_HEADER}",
            f"Content-Type: {response.content_type}",
        ]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif not unknown_length:
            length = response.content_length if streamed else len(response.body)
            lines.append(f"Content-Length: {length}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = response.stream
        try:
            with trio.move_on_after(self.limits.send_timeout) as scope:
                if head_only or body is None:
                    await stream.send_all(head if head_only else head + response.body)
                    return True
                await stream.send_all(head)
                sent = 0
                async for chunk in body:
                    if not chunk:
                        continue
                    # The stall budget is per chunk, not per download.
                    scope.deadline = trio.current_time() + self.limits.send_timeout
                    sent += len(chunk)
                    if chunked:
                        await stream.send_all(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    elif response.content_length is not None and sent > response.content_length:
                        raise RuntimeError("response stream longer than its Content-Length")
                    else:
                        await stream.send_all(chunk)
                if chunked:
                    await stream.send_all(b"0\r\n\r\n")
                elif response.content_length is not None and sent != response.content_length:
                    # We cannot honour the length we promised; closing tells the client.
                    log.warning(
                        "response body ended at %d of %d bytes; closing",
                        sent,
                        response.content_length,
                    )
                    return False
                return not close
            return not scope.cancelled_caught
        finally:
            # A body not sent to the end (HEAD, a stalled client, an error) still releases
            # what it holds (an open file) now, not at garbage collection.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()


async def _read_head(stream: trio.abc.Stream, buf: bytearray, max_head: int) -> int | None:
    """Read into `buf` until it holds a whole head; return the index just past its blank line,
    or None at end of stream. Leading blank lines before a request line are dropped."""
    start = 0
    while True:
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n", start)
        if end >= 0:
            if end + 4 > max_head:
                raise _HttpError(431, f"request head over {max_head} bytes")
            return end + 4
        if len(buf) > max_head:
            raise _HttpError(431, f"request head over {max_head} bytes")
        start = max(0, len(buf) - 3)
        data = await stream.receive_some(_RECV_CHUNK)
        if not data:
            return None
        buf += data


def _parse_head(head: bytes, remote: str) -> tuple[Request, bool]:
    """Request line and headers → (Request, keep_alive). Raises _HttpError(400/505)."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[0]):
        raise _HttpError(400, "bad request line")
    method_b, target_b, version_b = parts
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        if version_b.startswith(b"HTTP/"):
            raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
        raise _HttpError(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            # Includes obsolete line folding and a space before the colon (RFC 9112 §5.1).
            raise _HttpError(400, "bad header line")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = target_b.decode("latin-1")
    if target.startswith("/"):
        split = urlsplit(target)
    elif target.startswith(("http://", "https://")):
        split = urlsplit(target)  # absolute-form, as proxies send it
    else:
        raise _HttpError(400, "bad request target")
    query: dict[str, str] = {}
    for qname, qvalue in parse_qsl(split.query, keep_blank_values=True):
        query.setdefault(qname, qvalue)
    version = version_b.decode("ascii")
    connection = headers.get("connection", "").lower()
    # HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep it.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    request = Request(
        method=method_b.decode("ascii"),
        target=target,
        path=unquote(split.path or "/"),
        query=query,
        headers=headers,
        version=version,
        remote=remote,
    )
    return request, keep_alive


def _subprotocol_token(request: Request) -> str | None:
    """The token a browser sends as a websocket subprotocol (`kshark.bearer.<base64url>`, beside
    `kshark`): a page cannot set headers on a websocket, and a token in the URL ends up in logs
    and in what users copy. Only on upgrade requests."""
    if not _is_websocket_upgrade(request):
        return None
    for offered in request.headers.get("sec-websocket-protocol", "").split(","):
        name = offered.strip()
        if name.startswith(WS_TOKEN_PREFIX):
            encoded = name[len(WS_TOKEN_PREFIX) :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return raw.decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None


def _is_websocket_upgrade(request: Request) -> bool:
    h = request.headers
    return (
        request.method == "GET"
        and "websocket" in h.get("upgrade", "").lower()
        and "upgrade" in h.get("connection", "").lower()
        and "sec-websocket-key" in h
    )


def _has_body(request: Request) -> bool:
    h = request.headers
    return "transfer-encoding" in h or h.get("content-length", "0") not in ("", "0")


def _peer(stream: trio.SocketStream) -> str:
    try:
        addr = stream.socket.getpeername()
    except (OSError, AttributeError):
        return "?"
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)
