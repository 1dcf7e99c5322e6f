"""One TCP port for plain HTTP/1.1 and websockets, shared by the worker and the hub.

Why not two servers: users and proxies expect one address (`ws://host:30001/api/wsFull` beside
`http://host:30001/status`), and Kubeshark serves both on one port. The codecs are libraries:
h11 parses requests and frames responses, wsproto (inside trio-websocket) speaks websocket. h11
pauses after an `Upgrade` request's head; the parsed head goes to wsproto
(`initiate_upgrade_connection`) and the bytes the client sent after it are replayed.

Per connection (one Trio task each): read a request head (bounded by `ServerLimits.max_head`,
timed by cancel scopes), check the optional token, then either

- a websocket upgrade to one of `app.ws_paths`: hand the connection to trio-websocket
  (`ServerWebSocket`, in `ws_upgrade`), accept, and run `app.handle_ws(request, ws)` until it returns; after a
  close the server began, linger a moment before closing the socket
  (ServerLimits.ws_close_linger); or
- anything else: `app.handle_http(request)` → a `Response`, written with Content-Length (or
  chunked when the length is unknown); keep-alive unless the client or an error says otherwise.

A handler that raises ends its own connection (logged), never the server.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import hmac
import logging
from collections.abc import AsyncIterable, Set
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import orjson
import trio
from trio_websocket import WebSocketConnection
from wsproto.events import RejectConnection
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from kshark import __version__
from kshark.api.h11io import HeadTooLarge, next_event
from kshark.api.ws_upgrade import PrefixedStream, ServerWebSocket, linger, wrap_server_stream
from kshark.web.paths import is_public

log = logging.getLogger("kshark.api")

SERVER_HEADER = f"kshark/{__version__}"
# Chunk size for streamed response bodies (pcap downloads): one chunk in memory per connection.
STREAM_CHUNK = 65536

# Websocket subprotocols: a client that offers `kshark` gets it back (browsers need an answer to
# any subprotocol they offer); `kshark.bearer.<base64url of the token>` carries the token.
WS_SUBPROTOCOL = "kshark"
WS_TOKEN_PREFIX = "kshark.bearer."

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
    ws_close_linger: seconds the TCP connection stays open after a closing handshake the
        server began (the end of a `limit(n)` stream, a refused first frame). Clients such as
        wscat exit the moment the TCP connection ends, dropping output they have not yet
        written (to a pipe that is full, say); this gives them the time to write it. Whatever
        the client sends meanwhile is read and discarded. 0: close at once.
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
    ws_close_linger: float = 1.0
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

    @property
    def ws_paths(self) -> Set[str]: ...

    async def handle_http(self, request: Request) -> Response: ...

    async def handle_ws(self, request: Request, ws: WebSocketConnection) -> None: ...


class _HttpError(Exception):
    """A request we answer with `status` and then close the connection."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


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

    def _h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        remote = _peer(stream)
        self.connections += 1
        try:
            if self.connections > self.limits.max_connections:
                busy = error_response(503, "too many connections")
                await self._send_response(self._h11(), stream, busy, None, close=True)
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
        conn = self._h11()
        first = True
        while True:
            event: h11.Event | type[h11.PAUSED] | None = None
            with trio.move_on_after(limits.head_timeout if first else limits.idle_timeout):
                try:
                    event = await next_event(
                        conn, stream, max_head=limits.max_head, skip_blank_lines=True
                    )
                except h11.RemoteProtocolError as exc:
                    error = _HttpError(exc.error_status_hint, str(exc))
                    await self._send_error(conn, stream, error)
                    return
                except HeadTooLarge:
                    error = _HttpError(431, f"request head over {limits.max_head} bytes")
                    await self._send_error(conn, stream, error)
                    return
            if not isinstance(event, h11.Request):
                return  # timeout or end of stream between requests
            first = False
            try:
                request = _request_of(event, remote)
            except _HttpError as exc:
                await self._send_error(conn, stream, exc)
                return
            # The client's own `Connection: close` and HTTP/1.0 are h11's to honour (our_state
            # MUST_CLOSE after the response); this is the server's choice to close after it.
            keep_alive = True

            if not self._authorized(request):
                # A refused upgrade is never left half-done, and an unread body would be taken
                # for the next request: answer, then close.
                keep_alive = keep_alive and not _is_websocket_upgrade(request)
                keep_alive = keep_alive and not _has_body(request)
                refusal = error_response(
                    401, "missing or wrong token", [("WWW-Authenticate", "Bearer")]
                )
                ok = await self._send_response(conn, stream, refusal, request, close=not keep_alive)
                if not (ok and keep_alive and _next_cycle(conn)):
                    return
                continue

            if request.path in self.app.ws_paths and _is_websocket_upgrade(request):
                await self._serve_websocket(conn, stream, event, request)
                return
            if request.path in self.app.ws_paths and request.method in ("GET", "HEAD"):
                response = error_response(
                    426, "this path is a websocket endpoint", [("Upgrade", "websocket")]
                )
                keep_alive = keep_alive and not _has_body(request)
            else:
                try:
                    request = await self._read_body(conn, stream, request)
                except _HttpError as exc:
                    await self._send_error(conn, stream, exc)
                    return
                try:
                    response = await self.app.handle_http(request)
                except Exception:
                    log.exception("%s %s from %s failed", request.method, request.target, remote)
                    response = error_response(500, "internal error")
                    keep_alive = False
            ok = await self._send_response(conn, stream, response, request, close=not keep_alive)
            if not (ok and keep_alive and _next_cycle(conn)):
                return

    async def _send_error(
        self, conn: h11.Connection, stream: trio.abc.Stream, exc: _HttpError
    ) -> None:
        response = error_response(exc.status, exc.message, exc.headers)
        await self._send_response(conn, stream, response, None, close=True)

    def _authorized(self, request: Request) -> bool:
        if self.token is None or is_public(request.path):
            return True
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and _token_matches(value.strip(), self.token):
            return True
        given = request.query.get("token") or _subprotocol_token(request)
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def _read_body(
        self, conn: h11.Connection, stream: trio.SocketStream, request: Request
    ) -> Request:
        if "transfer-encoding" in request.headers:
            raise _HttpError(501, "chunked request bodies are not supported")
        length_text = request.headers.get("content-length")
        if length_text is None:
            return request
        # h11 has checked the value (digits, one length); what is left is our bound.
        if int(length_text) > self.limits.max_body:
            raise _HttpError(413, f"request body over {self.limits.max_body} bytes")
        body = bytearray()
        with trio.move_on_after(self.limits.head_timeout) as scope:
            while True:
                try:
                    event = await next_event(conn, stream, max_head=self.limits.max_head)
                except h11.RemoteProtocolError:
                    raise trio.BrokenResourceError("end of stream inside a request body") from None
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        if scope.cancelled_caught:
            raise _HttpError(408, "request body too slow")
        return dataclasses.replace(request, body=bytes(body))

    async def _serve_websocket(
        self, conn: h11.Connection, stream: trio.SocketStream, head: h11.Request, request: Request
    ) -> None:
        limits = self.limits
        # A handshake has no body: h11 has the request's end and pauses for the switch; what
        # the client sent after the head (a first frame may follow it without waiting for our
        # 101) is h11's trailing data.
        while (event := conn.next_event()) is not h11.PAUSED:
            if not isinstance(event, h11.EndOfMessage):
                await self._send_error(
                    conn, stream, _HttpError(400, "a websocket handshake has no body")
                )
                return
        replay = PrefixedStream(stream, conn.trailing_data[0])
        ws: ServerWebSocket | None = None
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(limits.ws_handshake_timeout):
                try:
                    ws_request = await wrap_server_stream(
                        nursery,
                        replay,
                        head,
                        message_queue_size=limits.ws_message_queue,
                        max_message_size=limits.ws_max_message,
                    )
                except WsRemoteProtocolError as err:
                    # wsproto's refusal (400, or 426 with the versions it speaks), in our shape.
                    hint = err.event_hint
                    status = hint.status_code if isinstance(hint, RejectConnection) else 400
                    headers = (
                        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in hint.headers]
                        if isinstance(hint, RejectConnection)
                        else []
                    )
                    await self._send_error(conn, stream, _HttpError(status, str(err), headers))
                    return
                chosen = (
                    WS_SUBPROTOCOL if WS_SUBPROTOCOL in ws_request.proposed_subprotocols else None
                )
                accepted = await ws_request.accept(subprotocol=chosen)
                assert isinstance(accepted, ServerWebSocket)
                ws = accepted
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
        if replay.keep_socket and limits.ws_close_linger > 0:
            await linger(stream, limits.ws_close_linger)

    async def _send_response(
        self,
        conn: h11.Connection,
        stream: trio.abc.Stream,
        response: Response,
        request: Request | None,
        *,
        close: bool,
    ) -> bool:
        """Write one response through h11; False when it could not be sent whole.

        A body of unknown length is sent chunked to HTTP/1.1 clients and delimited by closing
        the connection for HTTP/1.0 ones (h11's choice, from the request). HEAD gets the head.
        """
        streamed = response.stream is not None
        head_only = request is not None and request.method == "HEAD"
        headers = [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", SERVER_HEADER),
            ("Content-Type", response.content_type),
        ]
        if not streamed:
            headers.append(("Content-Length", str(len(response.body))))
        elif response.content_length is not None:
            headers.append(("Content-Length", str(response.content_length)))
        headers.extend(response.headers)
        if close:
            headers.append(("Connection", "close"))
        head = conn.send(
            h11.Response(
                status_code=response.status,
                headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers],
                reason=REASONS.get(response.status, "").encode("latin-1"),
            )
        )
        body = response.stream
        try:
            with trio.move_on_after(self.limits.send_timeout) as scope:
                if head_only or body is None:
                    if head_only or not response.body:
                        data = head + conn.send(h11.EndOfMessage())
                    else:
                        data = head + conn.send(h11.Data(data=response.body))
                        data += conn.send(h11.EndOfMessage())
                    await stream.send_all(data)
                    return True
                await stream.send_all(head)
                sent = 0
                async for chunk in body:
                    if not chunk:
                        continue
                    # The stall budget is per chunk, not per download.
                    scope.deadline = trio.current_time() + self.limits.send_timeout
                    sent += len(chunk)
                    if response.content_length is not None and sent > response.content_length:
                        raise RuntimeError("response stream longer than its Content-Length")
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
                if response.content_length is not None and sent != response.content_length:
                    # We cannot honour the length we promised; closing tells the client.
                    log.warning(
                        "response body ended at %d of %d bytes; closing",
                        sent,
                        response.content_length,
                    )
                    return False
                await stream.send_all(conn.send(h11.EndOfMessage()))
                return True
            return not scope.cancelled_caught
        finally:
            # A body not sent to the end (HEAD, a stalled client, an error) still releases
            # what it holds (an open file) now, not at garbage collection.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()


def _next_cycle(conn: h11.Connection) -> bool:
    """After a response: ready h11 for the next request on this connection, or say it must
    close (the client asked to, HTTP/1.0, or a body we did not read is still coming)."""
    while conn.their_state is h11.SEND_BODY:
        # A request without a body: its end is already in h11, no read needed.
        if conn.next_event() is h11.NEED_DATA:
            return False
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


def _request_of(event: h11.Request, remote: str) -> Request:
    """h11's request head → Request. Raises _HttpError(400/505) for what h11 lets through and
    we do not serve: other HTTP versions, a target that is neither a path nor a URL."""
    if event.http_version not in (b"1.0", b"1.1"):
        raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    target = event.target.decode("latin-1")
    # origin-form ("/path?q") or absolute-form, as proxies send it
    if not target.startswith(("/", "http://", "https://")):
        raise _HttpError(400, "bad request target")
    split = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    query: dict[str, str] = {}
    for qname, qvalue in parse_qsl(split.query, keep_blank_values=True):
        query.setdefault(qname, qvalue)
    return Request(
        method=event.method.decode("ascii"),
        target=target,
        path=unquote(split.path or "/"),
        query=query,
        headers=headers,
        version="HTTP/" + event.http_version.decode("ascii"),
        remote=remote,
    )


def _token_matches(value: str, token: bytes) -> bool:
    """Whether a header's `value` (decoded as latin-1, so its bytes as sent) is `token`.

    The token is text; its bytes on the wire are UTF-8 from curl, the hub and the dashboard,
    but latin-1 from clients that send a str header as it is (Python's http.client, requests).
    Both are accepted; each comparison takes constant time."""
    as_sent = hmac.compare_digest(value.encode("latin-1"), token)
    as_text = hmac.compare_digest(value.encode(), token)
    return as_sent | as_text


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
