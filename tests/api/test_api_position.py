"""Where a stream starts and which store it reads: the worker's /status `newest_id` and
`store_id`, the position frame of `?position=1`, the store identity file, the shared REST
prelude."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from kshark.api.httpserver import Request
from kshark.store import Store
from kshark.store.identity import IDENTITY_FILE, read_identity
from tests.support.api import drain, write_entries
from tests.support.rawhttp import get, http_request, loads, wait_until

BUDGET = 10  # seconds for any one test's I/O


async def test_status_names_the_store_and_its_newest_entry(api, store, tmp_path: Path):
    with trio.fail_after(BUDGET):
        empty = loads((await get(api.port, "/status")).body)
        entries = write_entries(store, [{}, {}])
        written = loads((await get(api.port, "/status")).body)
        write_entries(store, [{}])
        later = loads((await get(api.port, "/api/status")).body)
    assert empty["newest_id"] is None
    assert written["newest_id"] == entries[-1]["id"]
    assert later["newest_id"] != written["newest_id"] and later["last_seq"] == 3
    assert empty["store_id"] == written["store_id"] == store.store_id
    assert len(store.store_id) == 32 and int(store.store_id, 16) >= 0
    # Kept in the data directory: the same after a restart, another for another directory.
    reopened = Store(tmp_path / "data-again")
    try:
        assert reopened.store_id != store.store_id
    finally:
        reopened.close()
    identity = read_identity(store.data_dir)
    assert identity is not None and identity.store_id == store.store_id


def test_the_store_id_survives_a_restart_and_a_broken_file_is_replaced(tmp_path: Path):
    with Store(tmp_path / "d") as first:
        sid = first.store_id
    with Store(tmp_path / "d") as again:
        assert again.store_id == sid
    (tmp_path / "d" / "state" / IDENTITY_FILE).write_bytes(b"not json")
    with Store(tmp_path / "d") as repaired:
        assert repaired.store_id != sid and len(repaired.store_id) == 32
    identity = read_identity(tmp_path / "d")
    assert identity is not None and identity.store_id == repaired.store_id
    assert read_identity(tmp_path / "nowhere") is None


async def _frames(url: str, first: str, n: int) -> list[dict]:
    async with open_websocket_url(url) as ws:
        await ws.send_message(first)
        return [loads(await ws.get_message()) for _ in range(n)]


async def test_a_json_client_that_asks_gets_the_position_first(api, store):
    url = api.ws_url("/api/wsFull?position=1")
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{}, {}, {}])
        history = await _frames(url, '{"query": ""}', 4)
        resumed = await _frames(url, orjson.dumps({"query": "", "since": entries[0]["id"]}), 3)
        async with open_websocket_url(url) as ws:
            await ws.send_message('{"query": "", "history": false}')
            now = loads(await ws.get_message())
            await wait_until(lambda: len(api.app.clients) == 1)
            new = write_entries(store, [{}])
            after_now = loads(await ws.get_message())
    for frames in (history, resumed):
        assert set(frames[0]) == {"position"}
        assert frames[0]["position"]["store_id"] == store.store_id
        assert 0 <= frames[0]["position"]["store_age"] < 60
    assert history[0]["position"]["since"] is None  # from the store's first entry
    assert [f["id"] for f in history[1:]] == [e["id"] for e in entries]
    assert resumed[0]["position"]["since"] == entries[0]["id"]
    assert [f["id"] for f in resumed[1:]] == [e["id"] for e in entries[1:]]
    # history false: the stream continues after the newest entry stored when it started.
    assert now["position"]["since"] == entries[-1]["id"]
    assert after_now["id"] == new[0]["id"]


async def test_raw_text_and_unasking_clients_get_entries_only(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{}, {}])
        raw = await _frames(api.ws_url("/api/wsFull?position=1"), "", 2)
        plain = await _frames(api.ws_url(), '{"query": ""}', 2)
    assert [f["id"] for f in raw] == [f["id"] for f in plain] == [e["id"] for e in entries]


async def test_a_refused_cursor_still_says_which_store_refused_it(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}])
        async with open_websocket_url(api.ws_url("/api/wsFull?position=1")) as ws:
            await ws.send_message('{"query": "", "since": "127.0.0.1:30001/000000009999.pcap-0"}')
            messages, code = await drain(ws)
    assert code == 1008
    position, error = (loads(m) for m in messages)
    assert position == {"position": {"store_age": position["position"]["store_age"],
                                     "store_id": store.store_id}}  # fmt: skip
    assert error["error"]["type"] == "cursor"


def store_not_yet_built() -> Store:
    raise LookupError


def _request(method: str, path: str) -> Request:
    return Request(method=method, target=path, path=path, query={}, headers={})


@pytest.mark.parametrize(
    ("method", "path", "route", "status"),
    [
        ("GET", "/api/status", "/status", None),
        ("HEAD", "/item/7-0", "/item/7-0", None),
        ("GET", "/nope", "/nope", None),  # the app's own dispatch says 404
        ("POST", "/api/pcaps/7", "/pcaps/7", 405),
        ("DELETE", "/echo", "/echo", 405),
        ("POST", "/nope", "/nope", 404),
    ],
)
def test_the_rest_prelude(method: str, path: str, route: str, status: int | None) -> None:
    from kshark.api.worker_app import WorkerApp

    routes = WorkerApp(store_not_yet_built).routes
    got, refused = routes.route_of(_request(method, path))
    assert got == route
    assert (refused.status if refused else None) == status
    if status == 405:
        assert refused is not None and ("Allow", "GET, HEAD") in refused.headers


async def test_both_apps_refuse_alike(api, nursery):
    from kshark.hub import HubConfig, run_hub

    with trio.fail_after(BUDGET):
        hub = await nursery.start(run_hub, HubConfig(workers=[f"127.0.0.1:{api.port}"], port=0))
        for port in (api.port, hub.port):
            post = await http_request(
                port,
                b"POST /api/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n",
            )
            missing = await get(port, "/api/nope")
            assert (post.status, post.headers["allow"]) == (405, "GET, HEAD")
            assert loads(post.body) == {"error": {"message": "POST not allowed", "type": "http"}}
            assert missing.status == 404
            assert loads(missing.body)["error"]["message"] == "no such path: /api/nope"
