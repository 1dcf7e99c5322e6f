"""/status stays small however many clients send however long queries, and a worker's large
/status never makes the hub call it down (issue 9, item 7).

Before: every client's whole query was listed, at the worker and at the hub (150 clients with
65 KB queries: a 9.8 MB /status), and the hub's monitor, refusing a /status over 8 MiB, marked
that healthy worker down.
"""

from __future__ import annotations

import contextlib

import orjson
import trio

from kshark.api.status_caps import MAX_STATUS_CLIENTS, MAX_STATUS_QUERY_CHARS, short_query
from kshark.hub.limits import HubLimits
from kshark.hub.monitor import probe
from kshark.hub.workers import WorkerInfo
from tests.support.hub import open_client, start_hub
from tests.support.rawhttp import get, wait_until

BUDGET = 60
CLIENTS = MAX_STATUS_CLIENTS + 20
# A 64 KB query that is cheap to compile: one long string.
LONG = 'request.path == "/' + "a" * 64_000 + '"'


def check_rows(status: dict, connected: int) -> None:
    assert status["clients_connected"] == connected
    assert len(status["clients"]) == MAX_STATUS_CLIENTS
    assert status["clients_not_listed"] == connected - MAX_STATUS_CLIENTS
    for row in status["clients"]:
        assert row["query"] == LONG[:MAX_STATUS_QUERY_CHARS] + f"… [{len(LONG)} characters]"


async def test_many_clients_with_long_queries_keep_both_statuses_small(nursery, make_worker):
    w = await make_worker("w")
    w.write(1)
    hub = await start_hub(
        nursery, [w.address], limits=HubLimits(status_interval=0.1, status_timeout=5.0)
    )
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as clients:
            for _ in range(CLIENTS):
                clients.start_soon(_hold_client, hub.port)
            await wait_until(lambda: len(w.app.app.clients) == CLIENTS)
            worker_reply = await get(w.port, "/status")
            hub_reply = await get(hub.port, "/status")
            # The hub keeps reading the worker's /status, which stays small: it stays up, and
            # its lag is known.
            info = hub.workers.info[w.address]
            info.lag = None
            await wait_until(lambda: info.lag is not None)
            clients.cancel_scope.cancel()
    assert len(worker_reply.body) < 100_000 and len(hub_reply.body) < 100_000
    check_rows(orjson.loads(worker_reply.body), CLIENTS)
    hub_status = orjson.loads(hub_reply.body)
    check_rows(hub_status, CLIENTS)
    assert hub_status["workers"][0]["state"] == "up"
    assert hub_status["workers"][0]["status_problem"] is None


async def _hold_client(port: int) -> None:
    async with open_client(port, {"query": LONG}) as client:
        await client.quiet_for(BUDGET)  # nothing matches: it just stays connected


def test_short_query_marks_what_it_cut() -> None:
    assert short_query("http") == "http"
    assert short_query("x" * MAX_STATUS_QUERY_CHARS) == "x" * MAX_STATUS_QUERY_CHARS
    cut = short_query("y" * 1000)
    assert cut == "y" * MAX_STATUS_QUERY_CHARS + "… [1000 characters]"


async def _serve_status(body: bytes, chunked: bool, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):  # the hub stops reading
                await _answer(stream)

    async def _answer(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        if chunked:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 1 << 16):
                part = body[i : i + (1 << 16)]
                await stream.send_all(b"%x\r\n" % len(part) + part + b"\r\n")
            await stream.send_all(b"0\r\n\r\n")
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            await stream.send_all(head + body)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def test_a_worker_whose_status_is_too_large_stays_up(nursery) -> None:
    """What an older or foreign worker may still send: the hub does not read it, and says so."""
    clients = [{"remote": f"10.0.0.1:{i}", "lag": 0, "query": "q" * 65_000} for i in range(150)]
    body = orjson.dumps({"worker": "big:1", "last_seq": 7, "clients": clients})
    assert len(body) > HubLimits().max_status_bytes
    for chunked in (False, True):
        port = await nursery.start(_serve_status, body, chunked)
        info = WorkerInfo(f"127.0.0.1:{port}")
        info.lag = 3
        with trio.fail_after(BUDGET):
            await probe(info, HubLimits())
        assert info.state == "up", info.last_error
        assert info.lag is None  # unknown, not stale
        assert info.status_problem == (
            f"its /status is larger than {HubLimits().max_status_bytes} bytes"
            + ("" if chunked else f" ({len(body)})")
            + ": not read"
        )
    # A small one read afterwards clears the problem.
    port = await nursery.start(_serve_status, orjson.dumps({"worker": "w:1", "clients": []}), False)
    info.address = f"127.0.0.1:{port}"
    await probe(info, HubLimits())
    assert (info.state, info.status_problem, info.lag, info.advertised) == ("up", None, 0, "w:1")


async def test_the_lag_of_sockets_a_worker_did_not_list_is_unknown(nursery) -> None:
    listed = [{"remote": "10.0.0.1:1", "lag": 9}]
    for doc, ours, lag in [
        ({"clients": listed, "clients_not_listed": 5}, {"10.0.0.1:1"}, 9),
        ({"clients": listed, "clients_not_listed": 5}, {"10.0.0.9:9"}, None),
        ({"clients": listed, "clients_not_listed": 0}, {"10.0.0.9:9"}, 0),
    ]:
        port = await nursery.start(_serve_status, orjson.dumps(doc), False)
        info = WorkerInfo(f"127.0.0.1:{port}")
        info.relay_sockets = set(ours)
        await probe(info, HubLimits())
        assert info.lag == lag
