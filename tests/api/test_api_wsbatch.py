"""Batched websocket sends (kshark.api.wsbatch): the frames, both paths, and the worker's canary.

The batched path uses trio-websocket's private attributes. If a release drops them, `can_batch`
says so and sends fall back to one `send_message` per text: correct, only slower. The canaries
below fail then, so the slowdown is seen; the fallback tests keep that path working meanwhile.
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

import kshark.api.wsbatch as wsbatch
from kshark.api.httpserver import ServerLimits, serve
from kshark.api.wsbatch import can_batch, frame_header, send_texts
from tests.support.api import write_entries

TEXTS: list[str | bytes] = ["one", b"two", "x" * 70_000, "Grüße, 世界".encode(), "ε" * 200, ""]
EXPECTED = ["one", "two", "x" * 70_000, "Grüße, 世界", "ε" * 200, ""]


def _wsproto_server() -> WSConnection:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    assert isinstance(next(server.events()), Request)
    server.send(AcceptConnection())
    return server


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_frames_are_wsprotos_byte_for_byte(length: int) -> None:
    text = "é" * (length // 2) + "a" * (length % 2)  # two-byte characters: bytes, not chars
    payload = text.encode()
    assert len(payload) == length
    assert frame_header(len(payload)) + payload == _wsproto_server().send(TextMessage(text))


class PublicOnly:
    """A connection as a trio-websocket without the private attributes would give it."""

    def __init__(self, ws) -> None:
        self._ws = ws

    async def send_message(self, message) -> None:
        await self._ws.send_message(message)


class BatchApp:
    ws_paths = frozenset({"/batch", "/public-only", "/closed"})

    def __init__(self) -> None:
        self.batched: bool | None = None
        self.after_close: BaseException | None = None

    async def handle_http(self, request):
        raise AssertionError("not used")

    async def handle_ws(self, request, ws) -> None:
        if request.path == "/closed":
            await ws.aclose()
            try:
                await send_texts(ws, ["late", "later"])
            except ConnectionClosed as exc:
                self.after_close = exc
            return
        target = ws if request.path == "/batch" else PublicOnly(ws)
        self.batched = can_batch(target)
        await send_texts(target, TEXTS)
        await ws.get_message()


@pytest.mark.parametrize(("path", "batched"), [("/batch", True), ("/public-only", False)])
async def test_each_text_arrives_as_its_own_message_on_both_paths(nursery, path, batched):
    app = BatchApp()
    with trio.fail_after(10):
        port = await nursery.start(
            lambda task_status: serve(app, "127.0.0.1", 0, task_status=task_status)
        )
        async with open_websocket_url(f"ws://127.0.0.1:{port}{path}") as ws:
            got = [await ws.get_message() for _ in TEXTS]
            await ws.send_message("done")
    assert got == EXPECTED
    assert app.batched is batched


async def test_a_batch_on_a_closed_connection_raises_connection_closed(nursery):
    app = BatchApp()
    limits = ServerLimits(ws_close_linger=0)
    with trio.fail_after(10):
        port = await nursery.start(
            lambda task_status: serve(app, "127.0.0.1", 0, limits=limits, task_status=task_status)
        )
        async with open_websocket_url(f"ws://127.0.0.1:{port}/closed") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    assert isinstance(app.after_close, ConnectionClosed)


async def test_canary_the_workers_streams_send_in_batches(api, store, monkeypatch):
    """The installed trio-websocket still has what batched sends need, on the connections the
    worker's streams really get."""
    seen: list[bool] = []
    real = wsbatch.can_batch

    def spy(ws) -> bool:
        seen.append(real(ws))
        return seen[-1]

    monkeypatch.setattr(wsbatch, "can_batch", spy)
    with trio.fail_after(10):
        written = write_entries(store, [{"status": 200}] * 5)
        async with open_websocket_url(api.ws_url("/api/wsFull")) as ws:
            await ws.send_message("")
            got = [await ws.get_message() for _ in written]
    assert len(got) == 5
    assert seen and all(seen)
