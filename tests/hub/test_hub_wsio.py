"""The hub's websocket client to workers: its hand-written frame reader against wsproto, its
handshake and its answers (pongs, the close) as a worker sees them."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from kshark.hub.wsio import WorkerSocket, WsClosed, WsError
from tests.support.hub import scripted_server

# One message of a worker's stream: (text or bytes, how many frames it is cut into, whether a
# ping comes between its frames).
messages = st.tuples(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
)
streams = st.lists(
    st.one_of(
        messages,
        st.tuples(st.just("ping"), st.binary(max_size=125)),
        st.tuples(st.just("pong"), st.binary(max_size=125)),
    ),
    max_size=12,
)


def worker_bytes(stream: list, close: CloseConnection) -> bytes:
    """The stream as a worker's wsproto (a server connection) frames it, ending with `close`."""
    server = Connection(ConnectionType.SERVER)
    out = b""
    for item in stream:
        if item[0] == "ping":
            out += server.send(Ping(item[1]))
        elif item[0] == "pong":
            out += server.send(Pong(item[1]))
        else:
            data, pieces, ping_between = item
            step = max(1, -(-len(data) // pieces))
            parts = [data[i : i + step] for i in range(0, len(data), step)] or [data[:0]]
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                kind = TextMessage if isinstance(data, str) else BytesMessage
                out += server.send(kind(data=part, message_finished=last))
                if ping_between and not last:
                    out += server.send(Ping(b"between"))
    return out + server.send(close)


def wsproto_reads(data: bytes) -> tuple[list[bytes], int, list[bytes], int]:
    """What a wsproto client makes of the bytes: texts, binary messages, pings, close code."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    texts: list[bytes] = []
    binary = 0
    pings: list[bytes] = []
    part = ""
    code = 0
    for event in client.events():
        if isinstance(event, TextMessage):
            part += event.data
            if event.message_finished:
                texts.append(part.encode())
                part = ""
        elif isinstance(event, BytesMessage):
            binary += event.message_finished
        elif isinstance(event, Ping):
            pings.append(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            code = event.code
    return texts, binary, pings, code


async def worker_socket_reads(
    data: bytes, read_size: int
) -> tuple[list[bytes], int, list[bytes], int]:
    """The same, as WorkerSocket reads it `read_size` bytes at a time; pings are what it sent
    back as pongs, as the worker's wsproto reads them."""
    hub_end, worker_end = trio.testing.memory_stream_pair()
    sock = WorkerSocket(hub_end, bytearray(), read_size=read_size, max_message=1 << 20)
    await worker_end.send_all(data)
    texts: list[bytes] = []
    with pytest.raises(WsClosed) as closed:
        while True:
            texts += await sock.receive_batch()
    await hub_end.aclose()
    worker = Connection(ConnectionType.SERVER)
    while chunk := await worker_end.receive_some():
        worker.receive_data(chunk)
    events = list(worker.events())
    pongs = [bytes(e.payload) for e in events if isinstance(e, Pong)]
    echoed = [e for e in events if isinstance(e, CloseConnection)]
    assert len(echoed) == 1 and echoed[0].code == closed.value.code  # the close is echoed
    return texts, sock.binary_dropped, pongs, closed.value.code


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams, read_size=st.integers(min_value=1, max_value=700))
def test_the_frame_reader_reads_what_wsproto_reads(stream, read_size):
    data = worker_bytes(stream, CloseConnection(1000, "done"))
    assert trio.run(worker_socket_reads, data, read_size) == wsproto_reads(data)


async def test_a_close_without_a_code_is_echoed_without_one():
    data = worker_bytes([], CloseConnection(CloseReason.NO_STATUS_RCVD))
    assert await worker_socket_reads(data, 64) == ([], 0, [], 1005)


async def test_a_message_over_the_bound_ends_the_stream_with_1009():
    hub_end, worker_end = trio.testing.memory_stream_pair()
    sock = WorkerSocket(hub_end, bytearray(), read_size=4096, max_message=100)
    server = Connection(ConnectionType.SERVER)
    await worker_end.send_all(server.send(TextMessage("x" * 100)))
    assert await sock.receive_batch() == [b"x" * 100]
    await worker_end.send_all(
        server.send(TextMessage("y" * 60, message_finished=False))
        + server.send(TextMessage("y" * 60))
    )
    with pytest.raises(WsClosed) as closed:
        await sock.receive_batch()
    assert closed.value.code == 1009


def _accept(head: bytes, token: bytes | None = None) -> bytes:
    from wsproto.utilities import generate_accept_token

    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + (token or generate_accept_token(key)) + b"\r\n\r\n"
    )


async def test_the_handshake_and_what_the_worker_sent_right_after_it(nursery):
    first = Connection(ConnectionType.SERVER).send(TextMessage("right after the 101"))
    seen: list[bytes] = []
    port = await nursery.start(scripted_server, lambda head: _accept(head) + first, seen, True)
    with trio.fail_after(10):
        sock = await WorkerSocket.connect(
            "127.0.0.1", port, "/api/wsFull?position=1", headers=[("Authorization", "Bearer t")]
        )
        assert await sock.receive_batch() == [b"right after the 101"]
        await sock.aclose()
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET /api/wsFull?position=1 HTTP/1.1"
    assert {"upgrade: websocket", "sec-websocket-version: 13", "authorization: bearer t"} <= {
        line.lower() for line in lines
    }


@pytest.mark.parametrize(
    ("answer", "message", "status"),
    [
        (lambda head: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", "HTTP 401", 401),
        (lambda head: _accept(head, b"d3Jvbmc="), "not a websocket accept", None),
        (lambda head: b"", "closed the connection during the handshake", None),
        (lambda head: b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not HTTP/1.1", None),
        (lambda head: b"HTTP/1.1 101 x\r\nX: " + b"a" * 17_000 + b"\r\n\r\n", "too large", None),
    ],
)
async def test_a_handshake_that_fails_says_why(nursery, answer, message, status):
    port = await nursery.start(scripted_server, answer, [], True)
    with trio.fail_after(10), pytest.raises(WsError, match=message) as failed:
        await WorkerSocket.connect("127.0.0.1", port, "/api/wsFull")
    assert failed.value.status == status
