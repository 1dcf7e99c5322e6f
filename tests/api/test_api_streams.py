"""The entry streams (/api/wsFull, /api/ws): what a wscat user or a JSON-frame client receives."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from trio_websocket import open_websocket_url

from tests.support.api import RawWsClient, drain, write_entries
from tests.support.rawhttp import loads, wait_until

BUDGET = 10  # seconds for any one test's I/O


def sorted_compact(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


async def test_raw_text_client_gets_history_then_live_entries_as_stored(api, store):
    with trio.fail_after(BUDGET):
        old = write_entries(store, [{"status": 200}, {"status": 404}, {"status": 503}])
        async with open_websocket_url(api.ws_url("/api/wsFull")) as ws:
            await ws.send_message("response.status > 300")
            first = [await ws.get_message() for _ in range(2)]
            assert [loads(m)["id"] for m in first] == [old[1]["id"], old[2]["id"]]
            # Unchanged stored text: the bytes of the entry file, not a re-encoding.
            stored = store.entry_bytes(int(old[1]["stream"][:12]), 0)
            assert first[0].encode() == stored

            new = write_entries(store, [{"status": 201}, {"status": 500}])
            live = await ws.get_message()
            assert loads(live)["id"] == new[1]["id"]
            assert loads(live) == new[1]

            newer = write_entries(store, [{"status": 302}])
            assert loads(await ws.get_message())["id"] == newer[0]["id"]


async def test_wsfull_alias_and_empty_query_stream_everything(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"path": "/a"}, {"path": "/b"}, {"path": "/c"}])
        async with open_websocket_url(api.ws_url("/wsFull")) as ws:
            await ws.send_message("")
            got = [loads(await ws.get_message()) for _ in range(3)]
        assert got == entries


async def test_entries_have_sorted_keys_compact_text(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{"status": 200}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("http")
            text = await ws.get_message()
        assert text == sorted_compact(loads(text))


async def test_json_frame_client_history_then_live(api, store):
    with trio.fail_after(BUDGET):
        old = write_entries(store, [{"method": "GET"}, {"method": "POST"}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message(orjson.dumps({"query": 'request.method == "POST"'}).decode())
            assert loads(await ws.get_message())["id"] == old[1]["id"]
            new = write_entries(store, [{"method": "GET"}, {"method": "POST"}])
            assert loads(await ws.get_message())["id"] == new[1]["id"]


async def test_bad_kfl_gets_one_error_frame_then_1008(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}, {}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("response.status == ")
            messages, code = await drain(ws)
    assert code == 1008
    assert len(messages) == 1, messages
    err = loads(messages[0])["error"]
    assert err["type"] == "kfl"
    assert err["line"] == 1 and isinstance(err["column"], int) and err["column"] >= 1
    assert err["message"].startswith(f"{err['line']}:{err['column']}: ")


async def test_bad_kfl_in_json_frame_is_a_kfl_error_too(api, store):
    with trio.fail_after(BUDGET):
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('{"query": "request.path.nosuchhelper(1)"}')
            messages, code = await drain(ws)
    assert code == 1008
    assert [loads(m)["error"]["type"] for m in messages] == ["kfl"]


async def test_bad_json_frame_field_gets_request_error_then_1008(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}])
        for frame in (
            {"query": "", "fields": "id"},
            {"query": "", "history": "no"},
            {"query": 3},
            {"query": "", "feilds": ["id"]},
        ):
            async with open_websocket_url(api.ws_url()) as ws:
                await ws.send_message(orjson.dumps(frame).decode())
                messages, code = await drain(ws)
            assert code == 1008, frame
            assert len(messages) == 1, (frame, messages)
            err = loads(messages[0])["error"]
            assert err["type"] == "request", frame
            assert err["message"], frame


async def test_json_that_is_not_a_query_object_is_kfl_text(api, store):
    """A JSON object without "query" is taken as KFL (and so is a KFL error, not a request one)."""
    with trio.fail_after(BUDGET):
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('{"fields": ["id"]}')
            messages, code = await drain(ws)
    assert code == 1008
    assert loads(messages[0])["error"]["type"] == "kfl"


async def test_limit_closes_with_1000_after_n(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{} for _ in range(5)])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("http and limit(2)")
            messages, code = await drain(ws)
    assert code == 1000
    assert [loads(m)["id"] for m in messages] == [e["id"] for e in entries[:2]]


async def test_limit_counts_live_entries_too(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"status": 500}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("response.status == 500 and limit(2)")
            assert loads(await ws.get_message())["id"] == entries[0]["id"]
            more = write_entries(store, [{"status": 200}, {"status": 500}, {"status": 500}])
            messages, code = await drain(ws)
    assert code == 1000
    assert [loads(m)["id"] for m in messages] == [more[1]["id"]]


async def test_redact_replaces_values_in_every_entry(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(
            store,
            [{"request_headers": {"Authorization": "Bearer secret-1"}}, {}],
        )
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('redact("request.headers.Authorization", "src.ip")')
            got = [await ws.get_message() for _ in range(2)]
    first, second = (loads(m) for m in got)
    assert first["request"]["headers"]["Authorization"] == "[REDACTED]"
    assert "secret-1" not in got[0]
    assert first["src"]["ip"] == "[REDACTED]" and second["src"]["ip"] == "[REDACTED]"
    # Everything else as written, and still sorted compact JSON.
    first["request"]["headers"]["Authorization"] = "Bearer secret-1"
    first["src"]["ip"] = entries[0]["src"]["ip"]
    assert first == entries[0]
    assert got[0] == sorted_compact(loads(got[0]))


async def test_fields_project_each_entry(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"path": "/a", "status": 201}, {"path": "/b"}])
        frame = {"query": "", "fields": ["id", "request.path", "response.status", "no.such"]}
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message(orjson.dumps(frame).decode())
            got = [loads(await ws.get_message()) for _ in range(2)]
    assert got == [
        {"id": entries[0]["id"], "request": {"path": "/a"}, "response": {"status": 201}},
        {"id": entries[1]["id"], "request": {"path": "/b"}, "response": {"status": 200}},
    ]


async def test_history_false_skips_stored_entries(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}, {}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('{"query": "", "history": false}')
            await wait_until(lambda: len(api.app.clients) == 1)
            new = write_entries(store, [{"path": "/new"}])
            assert loads(await ws.get_message())["id"] == new[0]["id"]


async def test_since_resumes_right_after_the_cursor_without_repeats(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"path": f"/{i}"} for i in range(5)])
        seen: list[str] = []
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('{"query": ""}')
            for _ in range(3):
                seen.append(loads(await ws.get_message())["id"])
        # Reconnect from the last id seen; then a live entry arrives.
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message(orjson.dumps({"query": "", "since": seen[-1]}).decode())
            for _ in range(2):
                seen.append(loads(await ws.get_message())["id"])
            live = write_entries(store, [{"path": "/live"}])
            seen.append(loads(await ws.get_message())["id"])
    assert seen == [e["id"] for e in entries] + [live[0]["id"]]


async def test_since_with_a_projection_that_keeps_the_cursor(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{}, {}, {}])
        frame = {"query": "", "since": entries[0]["id"], "fields": ["id"]}
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message(orjson.dumps(frame).decode())
            got = [loads(await ws.get_message()) for _ in range(2)]
    assert got == [{"id": entries[1]["id"]}, {"id": entries[2]["id"]}]


async def test_unknown_cursor_is_a_cursor_error(api, store):
    with trio.fail_after(BUDGET):
        write_entries(store, [{}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message('{"query": "", "since": "127.0.0.1:30001/000000009999.pcap-0"}')
            messages, code = await drain(ws)
    assert code == 1008
    assert [loads(m)["error"]["type"] for m in messages] == ["cursor"]


async def test_summary_stream_sends_the_summary_form(api, store):
    from capture.entries import summarize

    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"method": "POST", "path": "/x", "status": 404}, {}])
        async with open_websocket_url(api.ws_url("/api/ws")) as ws:
            await ws.send_message("response.status == 404")
            text = await ws.get_message()
            live = write_entries(store, [{"status": 404, "path": "/y"}])
            live_text = await ws.get_message()
        async with open_websocket_url(api.ws_url("/ws")) as ws:
            await ws.send_message('{"query": "", "fields": ["id", "summary"]}')
            projected = [loads(await ws.get_message()) for _ in range(3)]
    assert text == sorted_compact(summarize(entries[0]))
    got = loads(text)
    assert (got["id"], got["method"], got["summary"], got["status"]) == (
        entries[0]["id"],
        "POST",
        "/x",
        404,
    )
    assert "request" not in got and "response" not in got
    assert loads(live_text)["id"] == live[0]["id"]
    assert projected == [
        {"id": e["id"], "summary": e["request"]["path"]} for e in [*entries, *live]
    ]


async def test_later_client_frames_are_ignored(api, store):
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"status": 500}, {"status": 200}])
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("response.status == 500")
            assert loads(await ws.get_message())["id"] == entries[0]["id"]
            await ws.send_message("response.status == 200")  # not a new filter
            more = write_entries(store, [{"status": 200}, {"status": 500}])
            assert loads(await ws.get_message())["id"] == more[1]["id"]


async def test_client_closing_ends_its_stream_on_the_server(api, store):
    with trio.fail_after(BUDGET):
        async with open_websocket_url(api.ws_url()) as ws:
            await ws.send_message("http")
            await wait_until(lambda: len(api.app.clients) == 1)
        await wait_until(lambda: len(api.app.clients) == 0)


async def test_first_frame_sent_with_the_handshake_is_not_lost(api, store):
    """wscat-like clients may send the query in the same packet as the upgrade request."""
    with trio.fail_after(BUDGET):
        entries = write_entries(store, [{"status": 418}, {"status": 200}])
        client = await RawWsClient.connect(
            api.port, "/api/wsFull", pipelined_first_frame="response.status == 418"
        )
        try:
            assert loads(await client.next_message())["id"] == entries[0]["id"]
        finally:
            await client.aclose()


async def test_idle_stream_gets_pings(nursery, store):
    from wsproto.events import Ping

    from kshark.api.entry_stream import StreamLimits
    from tests.support.api import start_worker_api

    api = await start_worker_api(nursery, store, limits=StreamLimits(ping_interval=0.2))
    with trio.fail_after(BUDGET):
        client = await RawWsClient.connect(api.port, "/api/wsFull")
        try:
            await client.send_text("http")
            start = trio.current_time()
            event = await client.next_event()
            assert isinstance(event, Ping)
            assert trio.current_time() - start >= 0.15
        finally:
            await client.aclose()


async def test_a_client_that_never_sends_its_query_is_told_and_closed(nursery, store):
    from kshark.api.entry_stream import StreamLimits
    from tests.support.api import start_worker_api

    api = await start_worker_api(nursery, store, limits=StreamLimits(first_frame_timeout=0.2))
    with trio.fail_after(BUDGET):
        async with open_websocket_url(api.ws_url()) as ws:
            messages, code = await drain(ws)
    assert code == 1008
    assert [loads(m)["error"]["type"] for m in messages] == ["request"]


async def test_before_the_worker_has_a_store_rest_is_503_and_streams_1013(nursery):
    from kshark.api.httpserver import serve
    from kshark.api.worker_app import WorkerApp
    from tests.support.rawhttp import get

    box: list = []  # the worker fills this once its store exists
    app = WorkerApp(lambda: box[0])
    with trio.fail_after(BUDGET):
        port = await nursery.start(
            lambda task_status: serve(app, "127.0.0.1", 0, task_status=task_status)
        )
        assert (await get(port, "/status")).status == 503
        assert (await get(port, "/echo")).status == 200
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/wsFull") as ws:
            await ws.send_message("http")
            messages, code = await drain(ws)
    assert code == 1013
    assert [loads(m)["error"]["type"] for m in messages] == ["unavailable"]
