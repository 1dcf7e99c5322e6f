"""A hostile KFL text against a worker and a hub over real sockets (issue 9, item 3).

What a client sent, and what it got before: `response.content.text` followed by 8,000
`.json()` held the worker's event loop ~30 s (and the hub's with it); a 3,500-step dotted path
or a 5,000-digit number was an uncaught error (close 1011, HTTP 500 from `/query/validate`).
Now each is a `kfl` error frame with line and column and close 1008 (KFL.md, "Errors"), or
`{"valid": false, ...}`; and no compile, nor a long filtering run, holds the event loop.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from kshark.api import routes, wire
from kshark.api.entry_stream import StreamLimits
from tests.support.api import drain, start_worker_api, write_entries
from tests.support.rawhttp import get, wait_until

BUDGET = 30  # seconds: a bound on a hang, not a measure of speed

HOSTILE = {
    "json-chain": "response.content.text" + ".json()" * 8000,
    "dotted": "a" + ".b" * 3500,
    "digits": "response.status == " + "9" * 5000,
}
# The same, short enough for a GET's 16 KiB request head (the position of the error is the same).
HOSTILE_GET = {**HOSTILE, "json-chain": "response.content.text" + ".json()" * 200}
EXPECTED = {
    "json-chain": (1, 450, "selector too long (at most 64 steps after 1:1)"),
    "dotted": (1, 129, "selector too long (at most 64 steps after 1:1)"),
    "digits": (1, 20, "number too long (5000 characters; at most 64)"),
}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    from kshark.store import Store

    s = Store(tmp_path / "data")
    yield s
    s.close()


async def _refused(port: int, query: str) -> tuple[dict[str, Any], int]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/api/wsFull") as ws:
        await ws.send_message(query)
        messages, code = await drain(ws)
    assert len(messages) == 1
    return orjson.loads(messages[0]), code


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_worker_refuses_oversized_queries_with_a_kfl_error(
    nursery: trio.Nursery, store: Any, name: str
) -> None:
    api = await start_worker_api(nursery, store)
    write_entries(store, [{"path": "/a"}])
    line, column, message = EXPECTED[name]
    with trio.fail_after(BUDGET):
        frame, code = await _refused(api.port, HOSTILE[name])
        reply = await get(api.port, "/query/validate?q=" + _quote(HOSTILE_GET[name]))
        echo = await get(api.port, "/echo")
    assert frame == {
        "error": {
            "type": "kfl",
            "message": f"{line}:{column}: {message}",
            "line": line,
            "column": column,
        }
    }
    assert code == 1008
    assert reply.status == 200
    assert orjson.loads(reply.body) == {"valid": False, "message": f"{line}:{column}: {message}"}
    assert echo.status == 200


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_hub_refuses_oversized_queries_with_a_kfl_error(
    nursery: trio.Nursery, store: Any, name: str
) -> None:
    from kshark.hub import HubConfig, run_hub

    api = await start_worker_api(nursery, store)
    hub = await nursery.start(run_hub, HubConfig(workers=[f"127.0.0.1:{api.port}"], port=0))
    line, column, message = EXPECTED[name]
    with trio.fail_after(BUDGET):
        frame, code = await _refused(hub.port, HOSTILE[name])
        reply = await get(hub.port, "/query/validate?q=" + _quote(HOSTILE_GET[name]))
    assert frame["error"] == {
        "type": "kfl",
        "message": f"{line}:{column}: {message}",
        "line": line,
        "column": column,
    }
    assert code == 1008
    assert (reply.status, orjson.loads(reply.body)["valid"]) == (200, False)
    assert api.app.clients_total == 0  # refused at the hub: no worker was asked


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


class Gate:
    """A compile that waits, in whatever thread runs it, until the test opens the gate."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, *args: Any) -> Any:
        self.entered.set()
        if not self.open.wait(BUDGET):
            raise AssertionError("the gate was never opened")
        return self.real(*args)


async def _wait_thread_event(event: threading.Event) -> None:
    await trio.to_thread.run_sync(event.wait, BUDGET)
    assert event.is_set()


async def test_compiling_a_stream_query_does_not_hold_the_event_loop(
    nursery: trio.Nursery, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await start_worker_api(nursery, store)
    write_entries(store, [{"path": "/a"}])
    gate = Gate(wire.compile_stream_query)
    monkeypatch.setattr(wire, "compile_stream_query", gate)
    with trio.fail_after(BUDGET):
        async with open_websocket_url(f"ws://127.0.0.1:{api.port}/api/wsFull") as ws:
            await ws.send_message('request.path == "/a"')
            await _wait_thread_event(gate.entered)
            # The compile is in progress (held at the gate): the worker still answers.
            echo = await get(api.port, "/echo")
            assert echo.status == 200
            gate.open.set()
            entry = orjson.loads(await ws.get_message())
    assert entry["request"]["path"] == "/a"


async def test_validating_a_query_does_not_hold_the_event_loop(
    nursery: trio.Nursery, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await start_worker_api(nursery, store)
    gate = Gate(routes.validate_query)
    monkeypatch.setattr(routes, "validate_query", gate)
    results: list[Any] = []

    async def validate() -> None:
        results.append(await get(api.port, "/query/validate?q=http"))

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as inner:
            inner.start_soon(validate)
            await _wait_thread_event(gate.entered)
            echo = await get(api.port, "/echo")
            gate.open.set()
    assert echo.status == 200
    assert orjson.loads(results[0].body) == {"valid": True, "message": ""}


class SlowQuery:
    """A compiled query whose match costs `cost` seconds of CPU per entry (a stand-in for a
    costly filter on large entries), counting the entries it has looked at."""

    def __init__(self, real: Any, cost: float) -> None:
        self.real = real
        self.cost = cost
        self.seen = 0
        self.limit = real.limit
        self.has_redactions = real.has_redactions
        self.redact = real.redact

    def match(self, entry: Any) -> bool:
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass
        self.seen += 1
        return bool(self.real.match(entry))


class EchoProbe:
    """The worker app, recording how far the slow filter was when /echo was answered."""

    def __init__(self, app: Any, query_box: list[SlowQuery]) -> None:
        self.app = app
        self.ws_paths = app.ws_paths
        self.query_box = query_box
        self.seen_at_echo: int | None = None

    async def handle_http(self, request: Any) -> Any:
        if request.path == "/echo" and self.query_box:
            self.seen_at_echo = self.query_box[0].seen
        return await self.app.handle_http(request)

    async def handle_ws(self, request: Any, ws: Any) -> None:
        await self.app.handle_ws(request, ws)


async def test_filtering_a_long_batch_lets_the_event_loop_run(
    nursery: trio.Nursery, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kshark.api.httpserver import serve
    from kshark.api.worker_app import WorkerApp

    n = 400
    write_entries(store, [{"path": f"/p{i}"} for i in range(n)])
    box: list[SlowQuery] = []
    real_compile = wire.compile_stream_query

    def compile_slow(text: str, macros: Any) -> SlowQuery:
        box.append(SlowQuery(real_compile(text, macros), cost=0.003))
        return box[0]

    monkeypatch.setattr(wire, "compile_stream_query", compile_slow)
    # One batch holds every entry: nothing but the filter's own checkpoints can yield.
    limits = StreamLimits(batch_entries=n, batch_bytes=1 << 30)
    app = EchoProbe(WorkerApp(store, limits=limits), box)
    port = await nursery.start(
        lambda task_status: serve(app, "127.0.0.1", 0, task_status=task_status)
    )
    with trio.fail_after(BUDGET):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/wsFull") as ws:
            await ws.send_message('request.path == "/none"')
            # Polling runs only when the worker's event loop lets this task run.
            await wait_until(lambda: bool(box) and box[0].seen > 0, interval=0.001)
            echo = await get(port, "/echo")
    assert echo.status == 200
    assert app.seen_at_echo is not None
    assert 0 < app.seen_at_echo < n  # answered while the batch was being filtered
