"""Streams through the hub, against real worker APIs over real Stores (in this process).

What a user of the hub checks: one stream carries every worker's entries; a bad filter is
refused before any worker is asked; limit(n) counts across workers; fields/history/since work
as on a worker, with a cursor covering every worker; a worker that goes away and comes back
does not end the stream and loses or repeats nothing; the workers file can change under open
streams; "ordered" sorts by timestamp; a slow client holds the hub to a bounded buffer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import trio
import trio.testing

from capture.pipeline import Output
from kshark.hub.limits import HubLimits
from kshark.kfl import validate
from tests.support.hub import open_client, stalled_client, start_hub
from tests.support.rawhttp import get, wait_until

BUDGET = 15  # seconds for any one test's I/O
STORE_AGE_RESOLUTION_S = 0.001  # the position frame's store_age: seconds, rounded to ms


def ids(entries: list[dict]) -> list[str]:
    return [e["id"] for e in entries]


def by_worker(entries: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in entries:
        out.setdefault(e["worker"], []).append(e["id"])
    return out


async def test_one_stream_carries_every_workers_entries(nursery, workers3):
    written = [w.write(4, path=f"/from/{i}") for i, w in enumerate(workers3)]
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "") as client:  # raw KFL text, as wscat sends
            await client.entries_until(12)
            # Then live: entries written after the stream opened arrive too.
            later = [w.write(2, path="/later") for w in workers3]
            await client.entries_until(18)
            await client.quiet_for(0.3)
    assert client.states == [] and client.gaps == []  # raw-text clients only ever get entries
    got = by_worker(client.entries)
    for w, history, live in zip(workers3, written, later, strict=True):
        # Each worker's entries in its own write order, each once.
        assert got[w.address] == ids(history) + ids(live)
    assert len(client.entries) == 18
    # Entries are the workers' own text: the hub forwarded them unchanged.
    stored = {e["id"]: e for batch in written + later for e in batch}
    assert all(e == stored[e["id"]] for e in client.entries)


async def test_bad_filter_is_refused_before_any_worker_is_contacted(nursery, workers3):
    for w in workers3:
        w.write(2)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "response.status == and limit(3)") as client:
            code = await client.drain()
        async with open_client(hub.port, {"query": "http", "since": "no-worker-in-this"}) as bad:
            bad_code = await bad.drain()
        assert hub.status()["clients_total"] == 0
        # A good stream after them reaches every worker once: a (wrong) relay of theirs,
        # started before it, would have reached a worker first.
        async with open_client(hub.port, "") as good:
            await good.entries_until(6)
    assert code == 1008
    assert client.entries == [] and len(client.errors) == 1
    err = client.errors[0]
    # The same message /query/validate gives, with its position.
    valid, message = validate("response.status == and limit(3)")
    assert not valid and err["type"] == "kfl" and err["message"] == message
    assert message.startswith(f"{err['line']}:{err['column']}:")
    assert bad_code == 1008 and bad.errors[0]["type"] == "cursor"
    assert [w.ws_requests for w in workers3] == [1, 1, 1]


async def test_limit_counts_across_workers(nursery, workers3):
    for w in workers3:
        w.write(4)
        w.write(2, status=500)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "limit(5)") as client:
            code = await client.drain()
        async with open_client(hub.port, "response.status == 500 and limit(4)") as errors:
            errors_code = await errors.drain()
    assert code == 1000 and len(client.entries) == 5
    assert len(set(ids(client.entries))) == 5
    assert errors_code == 1000 and len(errors.entries) == 4
    assert all(e["response"]["status"] == 500 for e in errors.entries)


async def test_fields_are_projected_and_the_hub_still_resumes(nursery, workers3):
    for i, w in enumerate(workers3):
        w.write(2, path=f"/p{i}")
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "fields": ["request.path"]}) as client:
            await client.entries_until(6)
        fields = ["id", "request.path", "timestamp", "worker"]
        async with open_client(hub.port, {"query": "", "fields": fields}) as full:
            await full.entries_until(6)
    # Exactly what was asked for: the hub asked workers for id/worker/timestamp and removed them.
    assert sorted(e["request"]["path"] for e in client.entries) == [
        "/p0",
        "/p0",
        "/p1",
        "/p1",
        "/p2",
        "/p2",
    ]
    assert all(set(e) == {"request"} and set(e["request"]) == {"path"} for e in client.entries)
    assert all(set(e) == {"id", "request", "timestamp", "worker"} for e in full.entries)


async def test_history_false_sends_only_new_entries(nursery, workers3):
    for w in workers3:
        w.write(3, path="/old")
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "history": False}) as client:
            await client.until(lambda c: sum(s["state"] == "up" for s in c.states) == 3)
            await wait_until(lambda: all(w.app.app.clients for w in workers3))
            new = [w.write(1, path="/new")[0] for w in workers3]
            await client.entries_until(3)
            await client.quiet_for(0.3)
    assert sorted(ids(client.entries)) == sorted(e["id"] for e in new)


async def test_since_takes_a_hub_cursor_in_every_form(nursery, workers3):
    for w in workers3:
        w.write(3)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as first:
            await first.entries_until(9)
        # What the docs tell clients to keep: the last id per worker.
        cursor = {e["worker"]: e["id"] for e in first.entries}
        new = {w.address: ids(w.write(2)) for w in workers3}
        expected = sorted(i for batch in new.values() for i in batch)
        forms = [cursor, orjson.dumps(cursor).decode(), list(cursor.values())]
        for form in forms:
            async with open_client(hub.port, {"query": "", "since": form}) as again:
                await again.entries_until(6)
                await again.quiet_for(0.3)
            assert sorted(ids(again.entries)) == expected, form
        # A worker missing from the cursor is sent from its start.
        partial = {workers3[0].address: cursor[workers3[0].address]}
        async with open_client(hub.port, {"query": "", "since": partial}) as some:
            await some.entries_until(2 + 5 + 5)
            await some.quiet_for(0.3)
    got = by_worker(some.entries)
    assert got[workers3[0].address] == new[workers3[0].address]
    for w in workers3[1:]:
        assert got[w.address] == ids(w.written)


async def test_json_clients_see_worker_states_raw_clients_do_not(nursery, workers3):
    for w in workers3:
        w.write(1)
    nowhere = "127.0.0.1:9"  # nothing listens there (discard port, not served on loopback)
    hub = await start_hub(nursery, [*(w.address for w in workers3), nowhere])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as js:
            await js.entries_until(3)
            await js.until(lambda c: c.state_of(nowhere) == "down")
        async with open_client(hub.port, "") as raw:
            await raw.entries_until(3)
            await raw.quiet_for(0.5)
    assert all(js.state_of(w.address) == "up" for w in workers3)
    down = [s for s in js.states if s["id"] == nowhere]
    assert down[0]["state"] == "down" and "refused" in down[0]["reason"].lower()
    assert len(down) == 1  # announced once, not once per retry
    assert raw.raw and all(
        "worker" not in orjson.loads(t) or "id" in orjson.loads(t) for t in raw.raw
    )
    assert raw.states == [] and len(raw.entries) == 3


async def test_worker_down_and_back_loses_and_repeats_nothing(nursery, workers3):
    a, b, c = workers3
    for w in workers3:
        w.write(2)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.entries_until(6)
            a.stop()  # every connection of worker a dropped, as when its process dies
            await client.until(lambda cl: cl.state_of(a.address) == "down")
            # The others keep flowing while a is down.
            b.write(2)
            c.write(2)
            await client.entries_until(10)
            # a's store keeps what it writes meanwhile (a restart on the same data directory).
            a.write(3)
            await a.start(nursery)
            await client.until(lambda cl: cl.state_of(a.address) == "up")
            a.write(1)
            await client.entries_until(14)
            await client.quiet_for(0.3)
    got = by_worker(client.entries)
    for w in workers3:
        assert got[w.address] == ids(w.written)  # all, once, in write order
    assert Counter(ids(client.entries)).most_common(1)[0][1] == 1
    status = {w["id"]: w for w in hub.status()["workers"]}
    assert status[a.address]["drops"] >= 1 and status[a.address]["entries_relayed"] == 6


async def test_ordered_streams_are_merged_by_timestamp(nursery, make_worker):
    a, b = await make_worker("a"), await make_worker("b")
    base = 1_764_288_000_000
    # Each worker writes in its own time order; together they interleave.
    for i in range(10):
        a.write(1, ts_ms=base + 2 * i)
        b.write(1, ts_ms=base + 2 * i + 1)
    hub = await start_hub(nursery, [a.address, b.address], limits=HubLimits(reorder_window=0.3))
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "ordered": True}) as client:
            await client.entries_until(20)
            # Live entries, written out of order across workers within the window.
            b.write(1, ts_ms=base + 101)
            a.write(1, ts_ms=base + 100)
            await client.entries_until(22)
    stamps = [e["timestamp"] for e in client.entries]
    assert stamps == sorted(stamps)
    assert stamps[-2:] == [base + 100, base + 101]


async def test_a_slow_client_holds_the_hub_to_a_bounded_buffer(nursery, make_worker):
    w = await make_worker("big")
    body = b"x" * 30_000  # ~40 KB entries: kernel buffers hold few of them
    for _ in range(10):
        w.write(50, body=body)
    limits = HubLimits(
        client_channel=8, client_buffer_bytes=100_000, receive_buffer=16384, status_interval=0.2
    )
    hub = await start_hub(nursery, [w.address], limits=limits)
    with trio.fail_after(BUDGET):
        slow = await stalled_client(hub.port, "/api/wsFull", "")
        await wait_until(lambda: hub.clients and w.app.app.clients)
        stream = next(iter(hub.clients.values()))
        worker_client = next(iter(w.app.app.clients.values()))
        # The client reads nothing; everything upstream fills and stops: entries flowed (both
        # filters compiled), then no task can run and no socket is ready.
        await wait_until(lambda: stream.status()["buffered_bytes"] > 0)
        await trio.testing.wait_all_tasks_blocked()
        held = stream.status()
        sent, worker_seq = stream.sent, worker_client.seq
        # Two more of the hub's probes of the worker (status_interval) move nothing either.
        probes = w.app.status_answered
        await wait_until(lambda: w.app.status_answered >= probes + 2)
        await trio.testing.wait_all_tasks_blocked()
        # Stalled: nothing moves, the hub holds at most its budget, the worker is held back
        # (and /status says how far behind the hub's stream on it is).
        assert stream.sent == sent and worker_client.seq == worker_seq
        assert held["buffered"] <= limits.client_channel
        assert 0 < held["buffered_bytes"] <= limits.client_buffer_bytes
        assert worker_seq < 500
        assert hub.status()["workers"][0]["lag"] == 500 - worker_seq
        # Once the client reads, every entry arrives, in order.
        got = [orjson.loads(await slow.next_message())["id"] for _ in range(500)]
        await slow.aclose()
    assert got == ids(w.written)


async def test_workers_file_changes_under_an_open_stream(nursery, make_worker, tmp_path: Path):
    a, b = await make_worker("a"), await make_worker("b")
    a.write(2)
    b.write(3)
    listing = tmp_path / "workers"
    listing.write_text(f"# the hub's workers\n{a.address}\n")
    hub = await start_hub(nursery, [], workers_file=listing)
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.entries_until(2)
            listing.write_text(f"{a.address}\n{b.address}  # joined\n")
            await client.entries_until(5)  # b joined: its history arrives
            listing.write_text(f"{b.address}\n")
            await client.until(lambda c: c.state_of(a.address) == "down")
            a.write(1)  # a left: nothing more from it
            b.write(1)
            await client.entries_until(6)
            await client.quiet_for(0.3)
    got = by_worker(client.entries)
    assert got[a.address] == ids(a.written[:2])
    assert got[b.address] == ids(b.written)
    removed = [s for s in client.states if s["id"] == a.address][-1]
    assert removed["state"] == "down" and "removed" in removed["reason"]
    assert [w["id"] for w in hub.status()["workers"]] == [b.address]


async def test_summary_stream_through_the_hub(nursery, workers3):
    for w in workers3:
        w.write(1, path="/summary/path")
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "", path="/ws") as client:
            await client.entries_until(3)
    assert {e["worker"] for e in client.entries} == {w.address for w in workers3}
    assert all(e["summary"] == "/summary/path" and "request" not in e for e in client.entries)


async def test_stream_status_shows_the_hub_cursor(nursery, workers3):
    for w in workers3:
        w.write(2)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.entries_until(6)
            (stream,) = hub.status()["clients"]
    assert stream["sent"] == 6 and stream["workers_connected"] == 3
    assert stream["cursor"] == {w.address: w.written[-1]["id"] for w in workers3}


async def test_client_token_and_worker_token(nursery, make_worker):
    w = await make_worker("secure", token="w-secret")
    w.write(2)
    hub = await start_hub(nursery, [w.address], token="c-secret", worker_token="w-secret")
    wrong = await start_hub(nursery, [w.address])  # no worker token
    with trio.fail_after(BUDGET):
        assert (await get(hub.port, "/status")).status == 401
        auth = [(b"Authorization", b"Bearer c-secret")]
        async with open_client(hub.port, {"query": ""}, headers=auth) as client:
            await client.entries_until(2)
        async with open_client(wrong.port, {"query": ""}) as refused:
            await refused.until(lambda c: c.state_of(w.address) == "down")
        await wait_until(lambda: wrong.status()["workers"][0]["last_error"] is not None)
    assert "401" in refused.states[0]["reason"]
    assert refused.entries == []


async def test_a_client_leaving_releases_everything(nursery, workers3, caplog):
    for w in workers3:
        w.write(50, body=b"y" * 5000)
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "") as client:
            await client.entries_until(5)
        # Gone mid-stream: its stream, its relays and the workers' streams for it all end.
        await wait_until(lambda: not hub.clients)
        await wait_until(lambda: all(not w.app.app.clients for w in workers3))
        # The same for a client that leaves while nothing is being sent to it.
        async with open_client(hub.port, "response.status == 999") as quiet:
            await wait_until(lambda: len(hub.clients) == 1)
            await quiet.quiet_for(0.2)
        await wait_until(lambda: not hub.clients)
    assert all(w["streams"] == 0 for w in hub.status()["workers"])
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_worker_back_with_a_new_data_directory_is_sent_from_its_start(
    nursery, make_worker, tmp_path: Path
):
    from kshark.store import Store

    a = await make_worker("a")
    a.write(3)
    hub = await start_hub(nursery, [a.address], limits=HubLimits(status_interval=0.1))
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.entries_until(3)
            a.stop(close_store=True)
            await client.until(lambda c: c.state_of(a.address) == "down")
            # Same address, a fresh store whose ids restart from stream 1: the hub's cursor
            # (stream 3) names an entry there too, but of another data directory. The store id
            # tells them apart: never resumed from, the new store is sent from its start.
            a.data_dir = tmp_path / "a-new"
            a.store = Store(a.data_dir)
            fresh = a.write(4)
            assert fresh[2]["id"] == client.entries[2]["id"]  # the alias the hub must not take
            await a.start(nursery)
            await client.entries_until(7)
            await client.quiet_for(0.3)
    assert ids(client.entries[3:]) == ids(fresh)
    assert client.gaps == [{"missed": None, "reason": "store-changed", "worker": a.address}]
    # The hub's /status shows which data directory each worker serves now (its probe).
    with trio.fail_after(BUDGET):
        await wait_until(lambda: _worker_status(hub, a.address)["store_id"] == a.store.store_id)
    assert _worker_status(hub, a.address)["newest_id"] == fresh[-1]["id"]


async def test_a_cursor_the_worker_does_not_know_restarts_it_from_its_first_entry(
    nursery, make_worker
):
    a = await make_worker("a")
    written = a.write(2)
    hub = await start_hub(nursery, [a.address])
    unknown = f"{a.address}/000000009999.pcap-0"  # same store, no such entry
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "since": [unknown]}) as client:
            await client.entries_until(2)
            await client.quiet_for(0.3)
    assert ids(client.entries) == ids(written)
    assert client.gaps == [{"missed": None, "reason": "cursor-unknown", "worker": a.address}]


async def test_history_false_resumes_from_where_the_stream_started(nursery, make_worker):
    """A worker that drops before its first matching entry: what it wrote meanwhile is sent."""
    a = await make_worker("a")
    a.write(3, path="/old")
    hub = await start_hub(nursery, [a.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "history": False}) as client:
            # The hub learnt the stream's start on a from the worker's position frame.
            await wait_until(lambda: _cursor(hub).get(a.address) == a.written[-1]["id"])
            a.stop()
            await client.until(lambda c: c.state_of(a.address) == "down")
            during = a.write(2, path="/during")  # the same data directory, connection down
            await a.start(nursery)
            await client.until(lambda c: c.state_of(a.address) == "up")
            after = a.write(1, path="/after")
            await client.entries_until(3)
            await client.quiet_for(0.3)
    assert ids(client.entries) == ids(during + after)


async def test_history_false_on_an_empty_store_resumes_from_its_first_entry(nursery, make_worker):
    a = await make_worker("a")  # nothing stored yet: the stream starts before its first entry
    hub = await start_hub(nursery, [a.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "history": False}) as client:
            await client.until(lambda c: c.state_of(a.address) == "up")
            await _start_known(hub, a.address)
            a.stop()
            await client.until(lambda c: c.state_of(a.address) == "down")
            during = a.write(2)
            await a.start(nursery)
            await client.entries_until(2)
            await client.quiet_for(0.3)
    assert ids(client.entries) == ids(during)


async def test_history_false_and_a_new_store_older_than_the_stream(
    nursery, make_worker, tmp_path: Path
):
    """A worker switched to a data directory that existed before the client connected: its
    stored entries are history, which this client did not ask for; new ones are sent."""
    from kshark.store import Store

    other = Store(tmp_path / "a-other")  # made (and identified) before the stream opens
    a = await make_worker("a")
    a.write(2)
    hub = await start_hub(nursery, [a.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "history": False}) as client:
            await client.until(lambda c: c.state_of(a.address) == "up")
            await _start_known(hub, a.address)
            a.stop(close_store=True)
            await client.until(lambda c: c.state_of(a.address) == "down")
            a.data_dir, a.store = tmp_path / "a-other", other
            a.write(3)  # stored before the hub reaches it again: not sent
            await a.start(nursery)
            await client.until(lambda c: bool(c.gaps))
            await wait_until(lambda: bool(a.app and a.app.app.clients))
            new = a.write(1)
            await client.entries_until(1)
            await client.quiet_for(0.3)
    assert ids(client.entries) == ids(new)
    assert client.gaps == [{"missed": None, "reason": "store-changed", "worker": a.address}]


async def test_history_false_and_a_new_store_younger_than_the_stream(
    nursery, make_worker, tmp_path: Path
):
    """A worker restarted on a new, empty data directory while the client is connected: all it
    stores was written since the client connected, so all of it is sent."""
    from kshark.store import Store

    a = await make_worker("a")
    a.write(2)
    hub = await start_hub(nursery, [a.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": "", "history": False}) as client:
            await client.until(lambda c: c.state_of(a.address) == "up")
            await _start_known(hub, a.address)
            await _past_stream_start(hub)  # the new store is measurably younger than the stream
            a.stop(close_store=True)
            await client.until(lambda c: c.state_of(a.address) == "down")
            a.data_dir = tmp_path / "a-new"
            a.store = Store(a.data_dir)
            fresh = a.write(3)
            await a.start(nursery)
            await client.entries_until(3)
            await client.quiet_for(0.3)
    assert ids(client.entries) == ids(fresh)
    assert client.gaps == [{"missed": None, "reason": "store-changed", "worker": a.address}]


async def test_history_false_and_a_worker_first_reached_after_the_stream_began(
    nursery, make_worker, tmp_path: Path
):
    """Down when the client connected, the worker then starts on a new data directory: what
    it wrote before the hub reached it was written after the client connected, so it is sent;
    what a worker already stored before the client connected is not."""
    from kshark.store import Store
    from tests.support.hub import FakeWorker
    from tests.support.rawhttp import free_port

    old = await make_worker("old")
    old.write(2)  # history for this client
    late = FakeWorker(tmp_path / "late", node_name="node-late")
    late.port = free_port()
    hub = await start_hub(nursery, [old.address, late.address])
    try:
        with trio.fail_after(BUDGET):
            async with open_client(hub.port, {"query": "", "history": False}) as client:
                await client.until(lambda c: c.state_of(late.address) == "down")
                await _past_stream_start(hub)  # the new store is measurably younger than the stream
                late.store = Store(late.data_dir)
                early = late.write(2)  # before the hub can reach it
                await late.start(nursery)
                await client.entries_until(2)
                await wait_until(lambda: bool(old.app and old.app.app.clients))
                new_old = old.write(1)
                await client.entries_until(3)
                await client.quiet_for(0.3)
    finally:
        late.close()
    assert by_worker(client.entries) == {late.address: ids(early), old.address: ids(new_old)}
    assert client.gaps == []


async def _start_known(hub, address: str) -> None:
    """Until the hub has learnt where the stream starts on that worker and which store it is
    (the worker's position frame, sent once the worker has compiled the query)."""
    await wait_until(lambda: any(address in s.stores for s in hub.clients.values()))


async def _past_stream_start(hub) -> None:
    """Until the hub's clock is past the stream's start by more than a worker's `store_age`
    resolution (1 ms): a store made from now on is younger than the stream, measurably."""
    (stream,) = hub.clients.values()
    await wait_until(lambda: trio.current_time() - stream.started > 2 * STORE_AGE_RESOLUTION_S)


def _worker_status(hub, address: str) -> dict:
    return next(w for w in hub.status()["workers"] if w["id"] == address)


def _cursor(hub) -> dict[str, str]:
    clients = hub.status()["clients"]
    return clients[0]["cursor"] if clients else {}


async def test_a_starting_worker_is_up_for_a_stream_once_it_serves_it(nursery, tmp_path: Path):
    """A worker listens before its store is open (kshark-worker restarted on its data directory)
    and meanwhile refuses streams: "the worker is starting", close 1013. JSON clients are told
    `up` once it serves theirs, not at every attempt it refused."""
    from kshark.api.httpserver import serve
    from kshark.api.worker_app import WorkerApp
    from kshark.store import Store
    from tests.support.hub import CountingApp, make_entry

    opened: list[Store] = []

    def store() -> Store:
        if not opened:
            raise LookupError("not open yet")
        return opened[0]

    app = CountingApp(WorkerApp(store, stats_provider=lambda: {"worker": address}))
    port = await nursery.start(serve, app, "127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    hub = await start_hub(nursery, [address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await wait_until(lambda: app.ws_requests >= 3)  # refused three times
            opened.append(Store(tmp_path / "w"))
            entry = make_entry(address, opened[0].allocate_stream())
            opened[0].write(Output(entries=[entry]))
            await client.entries_until(1)
    opened[0].close()
    assert [s["state"] for s in client.states] == ["down", "up"]
    assert client.states[0]["reason"] == "the worker is not ready (the worker is starting)"
    assert ids(client.entries) == [entry["id"]]
