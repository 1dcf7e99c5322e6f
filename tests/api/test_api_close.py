"""The end of a stream: `limit(n)` delivers all n entries, whatever the client does while the
server closes (pings), and however its output is consumed (wscat into a pipe)."""

from __future__ import annotations

import logging
import select
import shutil
import subprocess

import orjson
import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection, Ping, TextMessage

from tests.support.api import RawWsClient, start_worker_api, write_entries
from tests.support.rawhttp import wait_until


def spy_on_streams(app) -> list:
    """The server side of every websocket the app serves, in order of arrival."""
    seen: list = []
    handle = app.handle_ws

    async def spy(request, ws) -> None:
        seen.append(ws)
        await handle(request, ws)

    app.handle_ws = spy
    return seen


async def test_a_ping_during_the_closing_handshake_loses_nothing_and_logs_no_error(
    nursery, store, caplog
) -> None:
    n = 3
    # The last entry (≈ 12 KB) is larger than the client's receive window (a 4 KiB buffer)
    # and smaller than what the server's kernel takes unsent (trio's TCP_NOTSENT_LOWAT, 16
    # KiB): the server sends it whole and then its close frame while part of the entry still
    # waits in the server's kernel for the client to read.
    specs = [{"body": b"s" * 1000}] * (n - 1) + [{"body": b"L" * 8_000}, {"body": b"x"}]
    entries = write_entries(store, specs)
    api = await start_worker_api(nursery, store)
    server_side = spy_on_streams(api.app)
    caplog.set_level(logging.INFO)
    received: list[str] = []
    close: CloseConnection | None = None
    parts: list[str] = []

    def take(event: object) -> None:
        nonlocal close, parts
        if isinstance(event, TextMessage):
            parts.append(event.data)
            if event.message_finished:
                received.append("".join(parts))
                parts = []
        elif isinstance(event, CloseConnection):
            close = event

    with trio.fail_after(30):
        client = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
        await client.send_text(f"limit({n})")
        while len(received) < n - 1:
            take(await client.next_event())
        # The client reads no more for now; the server finishes sending and starts closing.
        await wait_until(lambda: server_side and server_side[0].closed is not None)
        # A client that pings now, and once more a moment later (keep-alives), as many do.
        # A server that gave up the connection at the first ping, and closed its socket,
        # would have its kernel answer the second with a reset, discarding the rest of the
        # entry not yet transmitted.
        ping = Ping(payload=b"are you there")
        await client.stream.send_all(client.ws.send(ping))
        await trio.testing.wait_all_tasks_blocked()  # the server has handled the first ping
        await client.stream.send_all(client.ws.send(ping))
        while close is None:
            take(await client.next_event())
        await client.stream.send_all(client.ws.send(close.response()))
        await client.aclose()
        await wait_until(lambda: not api.app.clients)
    assert close.code == 1000
    assert [orjson_id(text) for text in received] == [e["id"] for e in entries[:n]]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def orjson_id(text: str) -> str:
    return orjson.loads(text)["id"]


def entries_text(entry: dict) -> str:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()


@pytest.mark.tools
async def test_limit_piped_from_wscat_reaches_the_reader_whole(nursery, store) -> None:
    # As in `wscat -c ws://…/api/wsFull -x 'limit(5)' -w 3 | jq …`: wscat exits the moment
    # the server ends the TCP connection, dropping what it has not yet written to the pipe.
    # Entries of 80 KB: five of them are more than a pipe holds.
    wscat = shutil.which("wscat")
    if wscat is None:
        pytest.fail("wscat is not installed: scripts/setup installs it (npm install -g wscat)")
    n = 5
    entries = write_entries(store, [{"body": bytes([97 + i]) * 60_000} for i in range(n + 3)])
    api = await start_worker_api(nursery, store)
    with trio.fail_after(30):
        proc = await trio.lowlevel.open_process(
            [wscat, "-c", api.ws_url(), "-x", f"limit({n})", "-w", "10"],
            # wscat quits when its stdin ends: keep it open.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            # The reader is a little behind wscat: it starts once the server has ended the
            # stream (its close handshake done), as a busy `jq` would. (Served and gone, not
            # "there" then "gone": the whole stream can begin and end between two looks.)
            await wait_until(lambda: api.app.clients_total == 1 and not api.app.clients)
            out = bytearray()
            while chunk := await proc.stdout.receive_some(1 << 16):
                out += chunk
            code = await proc.wait()
        finally:
            await proc.stdin.aclose()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0
    lines = out.decode().split("\n")
    assert lines[-1] == ""  # the output ends with a whole line
    assert [len(line) for line in lines[:-1]] == [len(entries_text(e)) for e in entries[:n]]
    assert [orjson_id(line) for line in lines[:-1]] == [e["id"] for e in entries[:n]]


async def test_only_a_close_the_server_began_lingers(nursery, store) -> None:
    from kshark.api.httpserver import ServerLimits

    write_entries(store, [{"status": 200}] * 3)
    limits = ServerLimits(ws_close_linger=600.0)
    api = await start_worker_api(nursery, store, server_limits=limits)

    async def closing_handshake(client: RawWsClient, *, client_first: bool) -> None:
        if client_first:
            await client.stream.send_all(client.ws.send(CloseConnection(code=1000)))
        while True:
            event = await client.next_event()
            if isinstance(event, CloseConnection):
                break
        if not client_first:
            await client.stream.send_all(client.ws.send(event.response()))

    with trio.fail_after(20):
        # The client closes first: the server closes the TCP connection right after.
        leaving = await RawWsClient.connect(api.port, "/api/wsFull")
        await leaving.send_text("")
        await wait_until(lambda: len(api.app.clients) == 1)
        await closing_handshake(leaving, client_first=True)
        assert await leaving.stream.receive_some(1) == b""
        await leaving.aclose()
        # limit(1) ends the stream: the server began the close, so the connection stays open
        # after the handshake (here for the test's 600 s), until the client goes.
        limited = await RawWsClient.connect(api.port, "/api/wsFull")
        await limited.send_text("limit(1)")
        await closing_handshake(limited, client_first=False)
        await wait_until(lambda: not api.app.clients)
        await trio.testing.wait_all_tasks_blocked()
        readable, _, _ = select.select([limited.stream.socket.fileno()], [], [], 0)
        assert readable == [], "the server closed without lingering"
        await limited.aclose()
