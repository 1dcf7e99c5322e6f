"""A tiny HTTP/1.1 GET client on Trio, for the REST calls the hub makes to workers.

The hub asks workers for three things over plain HTTP: `/status` (the monitor), `/item/…` and
`/pcaps/…` (proxied for clients). One request per connection (`Connection: close`), so there is
no pool to bound or keep healthy; bodies are streamed in chunks (a pcap download passes through
the hub without being held), and every wait has a timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from kshark import __version__
from kshark.hub.workers import split_address

# Largest response head accepted from a worker. Past it: UpstreamError.
MAX_HEAD = 64 * 1024
# Bytes read from the socket per receive (also the size of streamed chunks).
READ_CHUNK = 65536


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
    _buf: bytearray
    _timeout: float
    _closed: bool = field(default=False)

    async def body(self) -> AsyncIterator[bytes]:
        """The body in chunks (de-chunked if the worker sent it chunked); closes at the end."""
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                async for part in self._chunked():
                    yield part
            elif self.content_length is not None:
                left = self.content_length
                if self._buf:
                    first = bytes(self._buf[:left])
                    del self._buf[:left]
                    left -= len(first)
                    yield first
                while left > 0:
                    data = await self._receive()
                    if not data:
                        raise UpstreamError("the worker closed the connection mid-body")
                    data = data[:left]
                    left -= len(data)
                    yield data
            else:
                if self._buf:
                    yield bytes(self._buf)
                    self._buf.clear()
                while data := await self._receive():
                    yield data
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
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _receive(self) -> bytes:
        with trio.move_on_after(self._timeout) as scope:
            try:
                return bytes(await self._stream.receive_some(READ_CHUNK))
            except (OSError, trio.BrokenResourceError) as exc:
                raise UpstreamError(f"reading from the worker failed: {exc}") from None
        assert scope.cancelled_caught
        raise UpstreamError(f"the worker sent nothing for {self._timeout:g} s")

    async def _chunked(self) -> AsyncIterator[bytes]:
        buf = self._buf
        while True:
            while b"\r\n" not in buf:
                await self._fill(buf)
            line, _, _ = bytes(buf[: buf.index(b"\r\n")]).partition(b";")
            del buf[: buf.index(b"\r\n") + 2]
            try:
                size = int(line.strip(), 16)
            except ValueError:
                raise UpstreamError("bad chunk size from the worker") from None
            if size == 0:
                return
            while len(buf) < size + 2:
                await self._fill(buf)
            yield bytes(buf[:size])
            del buf[: size + 2]

    async def _fill(self, buf: bytearray) -> None:
        data = await self._receive()
        if not data:
            raise UpstreamError("the worker closed the connection mid-body")
        buf += data
        if len(buf) > MAX_HEAD + READ_CHUNK * 4:
            raise UpstreamError("malformed chunked body from the worker")


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
    try:
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {address}",
            f"User-Agent: kshark-hub/{__version__}",
            "Connection: close",
        ]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        buf = bytearray()
        with trio.fail_after(io_timeout):
            await stream.send_all(head)
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > MAX_HEAD:
                    raise UpstreamError(f"{address}: response head larger than {MAX_HEAD} bytes")
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    raise UpstreamError(f"{address} closed the connection without answering")
                buf += data
        status, headers = _parse_head(bytes(buf[:end]), address)
        del buf[: end + 4]
        length_text = headers.get("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        return UpstreamResponse(status, headers, length, stream, buf, io_timeout)
    except trio.TooSlowError:
        await _close(stream)
        raise UpstreamError(f"{address} did not answer within {io_timeout:g} s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        await _close(stream)
        raise UpstreamError(f"{address}: {exc}") from None
    except BaseException:
        await _close(stream)
        raise


def _parse_head(head: bytes, address: str) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"{address} did not answer in HTTP/1.x")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _close(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        await stream.aclose()
