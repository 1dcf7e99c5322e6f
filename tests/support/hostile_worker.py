"""Something at a worker's address that speaks just enough of the worker API to be connected to,
then sends whatever frames a test scripts: invalid UTF-8 in a text frame, binary frames, text
that is not JSON, another worker's entries, the hub's own control frames.
`python hostile_worker.py SCRIPT.json` runs one as a process (tests/web): SCRIPT.json holds
`{"frames": [text, …], "status": {…}}`; it prints "api listening on 127.0.0.1 port N" to stderr.

Hand-written framing on a plain socket, because a websocket library will not send a text frame
that is not UTF-8. `GET /status` is answered too (the hub's monitor asks every worker), saying
the worker's own id is its address.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY = 1, 2


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One final, unmasked frame (server → client)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


@dataclass
class HostileWorker:
    """Serves on 127.0.0.1; every websocket stream gets `script` (frames, as bytes) after the
    position frame, then stays open."""

    script: list[bytes] = field(default_factory=list)
    port: int = 0
    first_frames: list[Any] = field(default_factory=list)  # what the hub asked for
    status: dict[str, Any] = field(default_factory=dict)  # more of its /status (e.g. drops)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            end = buf.index(b"\r\n\r\n")
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "sec-websocket-key" not in headers:
                body = orjson.dumps({"worker": self.address, "clients": [], **self.status})
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
                )
                return
            accept = base64.b64encode(
                hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest()
            )
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.first_frames.append(orjson.loads(await _read_masked(stream, buf)))
            position = {"position": {"since": None, "store_age": 1.0, "store_id": "hostile"}}
            await stream.send_all(frame(orjson.dumps(position)))
            for data in self.script:
                await stream.send_all(data)
            while await stream.receive_some(65536):  # pings and the close are not answered
                pass


async def _read_masked(stream: trio.SocketStream, buf: bytearray) -> bytes:
    """One masked client frame's payload (the hub's first frame)."""
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7F
            hdr = 2
            if n == 126:
                n, hdr = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, hdr = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) >= hdr + 4 + n:
                mask = buf[hdr : hdr + 4]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[hdr + 4 : hdr + 4 + n]))
                del buf[: hdr + 4 + n]
                return payload
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("the hub closed before its first frame")
        buf += data


def main(argv: list[str]) -> None:
    import sys
    from pathlib import Path

    spec = orjson.loads(Path(argv[1]).read_bytes())
    worker = HostileWorker(
        script=[frame(text.encode()) for text in spec.get("frames", [])],
        status=spec.get("status", {}),
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            print(f"api listening on 127.0.0.1 port {worker.port}", file=sys.stderr, flush=True)

    trio.run(run)


if __name__ == "__main__":
    import sys

    main(sys.argv)
