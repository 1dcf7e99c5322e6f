"""A plain HTTP/1.1 client for tests (raw bytes on a socket: what a request looks like on the
wire is part of what the API tests check), and small waits and ports every server test needs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import orjson
import trio


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a server that must be told its port before it starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:PORT now (another process's server)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


async def wait_until(predicate: Any, interval: float = 0.005) -> None:
    """Poll `predicate` until true (the caller's fail_after bounds the wait). Only for state with
    no event to wait on: a server's client registry, another process's files."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(interval)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes  # de-chunked
    chunks: tuple[int, ...] = ()  # a chunked body's chunk sizes, as sent (without the last 0)

    def json(self) -> Any:
        return loads(self.body)


async def http_request(port: int, raw: bytes) -> Reply:
    """Send `raw` as is on a new connection; read one response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        return await read_reply(stream, head_only=raw.startswith(b"HEAD "))


async def get(port: int, target: str, headers: dict[str, str] | None = None) -> Reply:
    """GET over a fresh connection (Connection: close)."""
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    return await http_request(port, (head + "\r\n").encode())


async def read_reply(stream: trio.abc.Stream, *, head_only: bool = False) -> Reply:
    """One response from `stream`: its body by Content-Length, chunked, or up to the close."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed before a response head: {bytes(buf)!r}")
        buf += data
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = bytearray(buf[end + 4 :])
    if head_only:
        return Reply(status, headers, b"")
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            data = await stream.receive_some(65536)
            if not data:
                break
            body += data
        return Reply(status, headers, bytes(body[:n]))
    if headers.get("transfer-encoding") == "chunked":
        sizes: list[int] = []
        return Reply(status, headers, await _dechunk(stream, body, sizes), tuple(sizes))
    while data := await stream.receive_some(65536):
        body += data
    return Reply(status, headers, bytes(body))


async def _dechunk(stream: trio.abc.Stream, buf: bytearray, sizes: list[int]) -> bytes:
    out = bytearray()

    async def more() -> None:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(f"connection closed inside a chunked body: {bytes(out)[-200:]!r}")
        buf.extend(data)

    while True:
        while b"\r\n" not in buf:
            await more()
        line = bytes(buf[: buf.index(b"\r\n")])
        size = int(line.split(b";")[0], 16)
        del buf[: len(line) + 2]
        if size == 0:
            return bytes(out)
        sizes.append(size)
        while len(buf) < size + 2:
            await more()
        out += buf[:size]
        del buf[: size + 2]
