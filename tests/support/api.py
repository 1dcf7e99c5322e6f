"""Shared helpers for the API tests: synthetic entries, a raw HTTP client, a raw websocket client.

The raw clients exist because the polite ones hide what the tests must see: trio-websocket's
client reads eagerly (a stalled reader must really stop reading), and HTTP libraries normalise
paths (traversal attempts must reach the server as typed).
"""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from capture.pipeline import Output

WORKER = "127.0.0.1:30001"
HTTP_PROTOCOL = {
    "abbr": "HTTP",
    "backgroundColor": "#416CDE",
    "fontSize": 12,
    "foregroundColor": "#ffffff",
    "layer3": "ip",
    "layer4": "tcp",
    "longName": "Hypertext Transfer Protocol -- HTTP/1.1",
    "macro": "http",
    "name": "http",
    "ports": ["80", "443", "8080"],
    "priority": 0,
    "referenceLink": "https://datatracker.ietf.org/doc/html/rfc2616",
    "version": "1.1",
}


def make_entry(
    stream: int,
    index: int,
    *,
    method: str = "GET",
    path: str = "/catalogue",
    status: int = 200,
    ts_ms: int = 1703019067482,
    request_headers: dict[str, str] | None = None,
    body: bytes = b"",
    client_port: int = 51846,
) -> dict[str, Any]:
    """An entry of ENTRY.md's shape (HTTP/1.1), varied by the arguments."""
    stream_name = f"{stream:012d}.pcap"
    headers = {"Accept": "application/json", "Host": "catalogue", "User-Agent": "test/1.0"}
    headers.update(request_headers or {})
    content: dict[str, Any] = {
        "encoding": "base64",
        "mimeType": "application/json",
        "size": len(body),
    }
    if body:
        content["text"] = base64.b64encode(body).decode()
    sec, ms = divmod(ts_ms, 1000)
    return {
        "dst": _peer("10.0.53.101", "80"),
        "elapsedTime": 2,
        "entryFile": f"{stream:012d}_pcap-{index}_entry.json",
        "error": None,
        "failed": False,
        "id": f"{WORKER}/{stream_name}-{index}",
        "index": index,
        "node": {"ip": "127.0.0.1", "name": "test-node"},
        "outgoing": False,
        "passed": False,
        "protocol": dict(HTTP_PROTOCOL),
        "record": "",
        "request": {
            "bodySize": 0,
            "cookies": {},
            "headers": headers,
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "method": method,
            "path": path,
            "pathSegments": path.split("/")[1:],
            "queryString": {},
            "targetUri": path,
            "url": path,
        },
        "requestSize": 152,
        "response": {
            "bodySize": len(body),
            "content": content,
            "cookies": {},
            "headers": {"Content-Length": str(len(body)), "Content-Type": "application/json"},
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "redirectURL": "",
            "status": status,
            "statusText": "OK",
        },
        "responseSize": 237 + len(body),
        "src": _peer("10.0.53.77", str(client_port)),
        "startTime": f"{_rfc3339(sec)}.{ms:03d}000000Z",
        "stream": stream_name,
        "timestamp": ts_ms,
        "tls": False,
        "worker": WORKER,
    }


def _peer(ip: str, port: str) -> dict[str, Any]:
    return {
        "endpointSlice": None,
        "ip": ip,
        "name": "",
        "namespace": "",
        "pod": None,
        "port": port,
        "service": None,
    }


def _rfc3339(sec: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def write_entries(store: Any, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each spec (make_entry keyword arguments) becomes one entry on a new stream, written in
    one Store.write; returns the entries in write order."""
    entries = [make_entry(store.allocate_stream(), 0, **spec) for spec in specs]
    store.write(Output(entries=entries))
    return entries


# ---- raw websocket ----------------------------------------------------------------------------


def masked_text_frame(text: str) -> bytes:
    """One final client text frame (RFC 6455 §5.2), built by hand: wsproto will not frame data
    before the handshake completes."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWsClient:
    """A websocket client on a plain socket, reading only when told to.

    `rcvbuf` shrinks the socket's receive buffer before connecting, so a client that stops
    reading pushes back on the server after a few kilobytes instead of megabytes.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Event] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        target: str,
        *,
        rcvbuf: int | None = None,
        pipelined_first_frame: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> RawWsClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        data = client.ws.send(
            Request(host=f"127.0.0.1:{port}", target=target, extra_headers=headers or [])
        )
        if pipelined_first_frame is not None:
            # Handshake and first frame in one write, without waiting for the 101: the server
            # must hand trio-websocket what it read past the request head.
            data += masked_text_frame(pipelined_first_frame)
        await client.stream.send_all(data)
        event = await client.next_event()
        if isinstance(event, RejectConnection):
            raise ConnectionRefusedError(f"handshake rejected: {event.status_code}")
        assert isinstance(event, AcceptConnection), event
        return client

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def next_event(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise EOFError("connection closed")
        return self.pending.pop(0)

    async def next_message(self) -> str:
        """The next complete text message; pings are answered, other control frames skipped."""
        parts: list[str] = []
        while True:
            event = await self.next_event()
            if isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, CloseConnection):
                raise EOFError(f"closed with {event.code}")

    async def aclose(self) -> None:
        await self.stream.aclose()


# ---- a running worker API --------------------------------------------------------------------

FAKE_STATS = {
    "worker": WORKER,
    "packets": 1234,
    "dropped_kernel": 5,
    "dropped_ours": 6,
    "connections": 7,
    "entries": 8,
    "errors": 1,
    "uptime_seconds": 2.5,
    "capture_warnings": [],
    "pipeline": {"decode_tcp": 1200},
}


@dataclass
class RunningApi:
    app: Any
    port: int
    store: Any

    def ws_url(self, path: str = "/api/wsFull") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


async def start_worker_api(
    nursery: trio.Nursery,
    store: Any,
    *,
    token: str | None = None,
    limits: Any = None,
    server_limits: Any = None,
) -> RunningApi:
    from kshark.api.httpserver import serve
    from kshark.api.worker_app import WorkerApp

    app = WorkerApp(store, stats_provider=lambda: dict(FAKE_STATS), limits=limits)
    port = await nursery.start(
        lambda task_status: serve(
            app, "127.0.0.1", 0, token=token, limits=server_limits, task_status=task_status
        )
    )
    return RunningApi(app, port, store)


async def drain(ws: Any) -> tuple[list[str], int]:
    """Every message until the server closes; returns (messages, close code)."""
    from trio_websocket import ConnectionClosed

    messages: list[str] = []
    try:
        while True:
            messages.append(await ws.get_message())
    except ConnectionClosed as closed:
        assert closed.reason is not None
        return messages, closed.reason.code
