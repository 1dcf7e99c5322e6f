"""A small HTTP/1.1 GET client on Trio and h11, for the REST calls the hub makes to workers.

The hub asks workers for plain HTTP: `/status` (the monitor), `/item/…` and `/pcaps/…` (proxied
for clients), the exports. One request per connection (`Connection: close`), so there is no pool
to bound or keep healthy; bodies are streamed in chunks (a pcap download passes through the hub
without being held), and every wait has a timeout.

Why h11 here and not httpx (which kshark.k8s uses): the bounds are the point of this client. The
monitor's probe caps the response head (MAX_HEAD, exact: `kshark.api.h11io`), each read
(`io_timeout`) and, around it, the whole answer and its size (`kshark.hub.monitor`); here they
are cancel scopes and counts on one Trio stream, where httpx would put its own timeouts, pool
and TLS setup between us and the socket, for a plain-HTTP GET that needs none of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import trio

from kshark import __version__
from kshark.api.h11io import HeadTooLarge, next_event
from kshark.hub.workers import split_address

# Largest response head accepted from a worker. Past it: UpstreamError.
MAX_HEAD = 64 * 1024


def describe_oserror(exc: BaseException) -> str:
    """The most specific text for a connect failure: trio's "all attempts to connect to … failed"
    hides the reason (connection refused, no route to host) one level down."""
    seen = 0
    while exc is not None and seen < 5:
        seen += 1
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        inner = exc.__cause__
        if isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            inner = inner.exceptions[0]
        if inner is None:
            break
        exc = inner
    return str(exc)


class UpstreamError(Exception):
    """The worker could not be reached or answered something that is not HTTP."""


class TooLarge(UpstreamError):
    """A body larger than the reader would take."""


@dataclass
class UpstreamResponse:
    """A response head and its body, still on the wire. Iterate `body()` once, or `aclose()`."""

    status: int
    headers: dict[str, str]  # lower-case names
    content_length: int | None
    _stream: trio.SocketStream
    _conn: h11.Connection
    _timeout: float
    _closed: bool = field(default=False)

    async def body(self) -> AsyncIterator[bytes]:
        """The body in chunks (h11 de-chunks what the worker sent chunked); closes at the end."""
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
        finally:
            await self.aclose()

    async def read(self, max_bytes: int) -> bytes:
        """The whole body, refused past `max_bytes` (UpstreamError)."""
        out = bytearray()
        async for part in self.body():
            out += part
            if len(out) > max_bytes:
                raise TooLarge(f"the worker's answer is larger than {max_bytes} bytes")
        return bytes(out)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await _close(self._stream)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        with trio.move_on_after(self._timeout):
            try:
                return await next_event(self._conn, self._stream, max_head=MAX_HEAD)
            except (OSError, trio.BrokenResourceError) as exc:
                raise UpstreamError(f"reading from the worker failed: {exc}") from None
            except h11.RemoteProtocolError as exc:
                if self._conn.trailing_data[1]:
                    raise UpstreamError("the worker closed the connection mid-body") from None
                raise UpstreamError(f"malformed body from the worker: {exc}") from None
        raise UpstreamError(f"the worker sent nothing for {self._timeout:g} s")


async def http_get(
    address: str, target: str, *, token: str | None = None, io_timeout: float = 10.0
) -> UpstreamResponse:
    """Send `GET target` to the worker at `address`; return once the response head is in.

    `io_timeout` bounds connecting, the head, and each later read. Raises UpstreamError (the
    message says what went wrong, for /status and error answers)."""
    host, port = split_address(address)
    try:
        with trio.fail_after(io_timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise UpstreamError(f"connecting to {address} timed out") from None
    except OSError as exc:
        raise UpstreamError(f"cannot connect to {address}: {describe_oserror(exc)}") from None
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    try:
        headers = [
            (b"Host", address.encode()),
            (b"User-Agent", f"kshark-hub/{__version__}".encode()),
            (b"Connection", b"close"),
        ]
        if token:  # UTF-8, as the worker compares it (h11 would refuse a non-ASCII str)
            headers.append((b"Authorization", b"Bearer " + token.encode()))
        request = conn.send(h11.Request(method="GET", target=target, headers=headers))
        with trio.fail_after(io_timeout):
            await stream.send_all(request + conn.send(h11.EndOfMessage()))
            event = await next_event(conn, stream, max_head=MAX_HEAD)
            while isinstance(event, h11.InformationalResponse):  # 1xx: the answer follows
                event = await next_event(conn, stream, max_head=MAX_HEAD)
        if not isinstance(event, h11.Response):
            raise UpstreamError(f"{address} did not answer in HTTP/1.x")
        fields = {name.decode("ascii"): value.decode("latin-1") for name, value in event.headers}
        length_text = fields.get("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        return UpstreamResponse(event.status_code, fields, length, stream, conn, io_timeout)
    except trio.TooSlowError:
        await _close(stream)
        raise UpstreamError(f"{address} did not answer within {io_timeout:g} s") from None
    except HeadTooLarge:
        await _close(stream)
        raise UpstreamError(f"{address}: response head larger than {MAX_HEAD} bytes") from None
    except h11.RemoteProtocolError:
        await _close(stream)
        if conn.trailing_data == (b"", True):
            raise UpstreamError(f"{address} closed the connection without answering") from None
        raise UpstreamError(f"{address} did not answer in HTTP/1.x") from None
    except (OSError, trio.BrokenResourceError) as exc:
        await _close(stream)
        raise UpstreamError(f"{address}: {exc}") from None
    except BaseException:
        await _close(stream)
        raise


async def _close(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        await stream.aclose()
