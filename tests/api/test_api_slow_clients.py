"""Slow and many clients: nobody waits for a stalled reader, and a stalled reader costs one batch."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url

from kshark.api.entry_stream import StreamLimits
from tests.support.api import RawWsClient, start_worker_api, write_entries
from tests.support.rawhttp import get, loads, wait_until


def held_by_streams(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still allocated with the worker's stream code (its app, its entry stream) in their
    stack: what the server holds for its clients."""
    files = [
        tracemalloc.Filter(True, f"*kshark/api/{m}.py", all_frames=True)
        for m in ("worker_app", "entry_stream")
    ]
    return sum(stat.size for stat in snapshot.filter_traces(files).statistics("filename"))


async def test_stalled_client_beside_a_fast_one(nursery, store):
    limits = StreamLimits(batch_entries=16, batch_bytes=256 * 1024)
    api = await start_worker_api(nursery, store, limits=limits)
    total, per_write = 300, 20
    body = b"b" * 48_000  # ≈ 66 KB per entry once base64'd: ≈ 20 MB in all
    with trio.fail_after(30):
        stalled = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
        await stalled.send_text("")
        await wait_until(lambda: len(api.app.clients) == 1)
        async with open_websocket_url(
            api.ws_url(), max_message_size=1 << 20, receive_buffer_size=1 << 16
        ) as fast:
            await fast.send_message("http")
            await wait_until(lambda: len(api.app.clients) == 2)
            stalled_state, fast_state = api.app.clients.values()

            # Count what the stream pumps hold: allocations with worker_app in their stack.
            tracemalloc.start(12)
            received: list[str] = []
            try:
                async with trio.open_nursery() as inner:

                    async def write() -> None:
                        for _ in range(total // per_write):
                            write_entries(store, [{"body": body}] * per_write)
                            await trio.sleep(0.01)

                    inner.start_soon(write)
                    for _ in range(total):
                        received.append(loads(await fast.get_message())["id"])
                snapshot = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            held = held_by_streams(snapshot)
            assert len(received) == total == len(set(received))
            assert fast_state.seq == store.last_seq == total
            # The stalled client stopped far behind, and what the server holds for it stays
            # near one batch (256 KiB target) however much was written (≈ 20 MB).
            assert stalled_state.seq < total // 2, stalled_state.seq
            assert held < 2 * 1024 * 1024, held
            assert stalled_state.buffered_bytes <= limits.batch_bytes + len(store.entry_bytes(1, 0))
            status = loads((await get(api.port, "/status")).body)
            lags = sorted(c["lag"] for c in status["clients"])
            assert lags[0] == 0 and lags[1] == total - stalled_state.seq

        # The stalled client was slow, not broken: once it reads, everything arrives in order.
        ids = [loads(await stalled.next_message())["id"] for _ in range(total)]
        assert ids == received
        await stalled.aclose()


@pytest.mark.parametrize("query", ["", "http"], ids=["everything", "filtered"])
async def test_a_client_that_stops_reading_holds_its_byte_budget_with_entries_of_megabytes(
    nursery, store, query
):
    # A run of small entries sizes the reads up to 64 entries; then come entries of 3 MB. A
    # batch counted in entries would take 64 of those (here: all 12, 36 MB) for a client
    # that has stopped reading; the budget is documented in bytes (StreamLimits).
    from kshark.api.entry_stream import SEND_CHUNK_BYTES

    limits = StreamLimits()
    small = write_entries(store, [{"body": b"s" * 1000}] * 200)
    large = write_entries(store, [{"body": bytes([65 + i]) * 2_250_000} for i in range(12)])
    largest = max(len(store.entry_bytes(int(e["stream"][:12]), 0)) for e in large)
    assert largest > limits.batch_bytes
    budget = 3 * max(limits.batch_bytes, largest) + 2 * SEND_CHUNK_BYTES
    api = await start_worker_api(nursery, store, limits=limits)
    with trio.fail_after(60):
        tracemalloc.start(12)
        try:
            client = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
            await client.send_text(query)  # a filter makes the server parse each entry
            await wait_until(lambda: len(api.app.clients) == 1)
            (state,) = api.app.clients.values()
            ids = [loads(await client.next_message())["id"] for _ in small]
            assert ids == [e["id"] for e in small]
            # The client reads no more: the stream blocks in its send, holding what it holds.
            await wait_until(lambda: state.buffered_bytes >= largest)
            await trio.testing.wait_all_tasks_blocked()
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    held = held_by_streams(snapshot)
    assert state.buffered_bytes <= max(limits.batch_bytes, largest)
    assert held <= budget, (held, budget)
    status = loads((await get(api.port, "/status")).body)
    assert status["clients"][0]["buffered_bytes"] == state.buffered_bytes
    await client.aclose()


async def test_retention_past_a_slow_client_is_counted_and_told_to_json_clients(tmp_path, nursery):
    from kshark.store import Store

    store = Store(tmp_path / "data", storage_limit=2 * 1024 * 1024)
    try:
        api = await start_worker_api(nursery, store, limits=StreamLimits(batch_entries=4))
        total = 300
        with trio.fail_after(30):
            json_client = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
            await json_client.send_text('{"query": ""}')
            raw_client = await RawWsClient.connect(api.port, "/api/wsFull", rcvbuf=4096)
            await raw_client.send_text("")
            await wait_until(lambda: len(api.app.clients) == 2)
            json_state, raw_state = api.app.clients.values()
            entries = []
            for _ in range(total // 10):
                entries += write_entries(store, [{"body": b"g" * 30_000}] * 10)
                await trio.sleep(0.005)
            assert store.stats["deleted_entries"] > 0
            last_id = entries[-1]["id"]

            async def read_all(client: RawWsClient) -> tuple[list[str], list[int]]:
                ids: list[str] = []
                gaps: list[int] = []
                while not ids or ids[-1] != last_id:
                    frame = loads(await client.next_message())
                    if "gap" in frame:
                        assert frame["gap"]["reason"] == "retention"
                        gaps.append(frame["gap"]["missed"])
                    else:
                        ids.append(frame["id"])
                return ids, gaps

            json_ids, json_gaps = await read_all(json_client)
            raw_ids, raw_gaps = await read_all(raw_client)
            status = loads((await get(api.port, "/status")).body)
            await json_client.aclose()
            await raw_client.aclose()
    finally:
        store.close()
    order = [e["id"] for e in entries]
    for ids in (json_ids, raw_ids):
        # A subsequence of the write order: nothing repeated, nothing out of order.
        positions = [order.index(i) for i in ids]
        assert positions == sorted(set(positions))
    assert sum(json_gaps) > 0
    assert sum(json_gaps) == json_state.missed == total - len(json_ids)
    assert raw_gaps == []  # raw-text clients get entries only
    assert raw_state.missed == total - len(raw_ids) > 0
    assert status["clients_missed_total"] == json_state.missed + raw_state.missed


async def test_many_clients_each_get_their_own_filtered_stream(api, store):
    statuses = [200, 201, 404, 500]
    with trio.fail_after(20):
        history = write_entries(store, [{"status": statuses[i % 4]} for i in range(40)])
        results: dict[int, list[str]] = {}

        async def client(n: int, query: str, expect: int) -> None:
            async with open_websocket_url(api.ws_url()) as ws:
                await ws.send_message(query)
                results[n] = [loads(await ws.get_message())["id"] for _ in range(expect)]

        live: list[dict] = []
        async with trio.open_nursery() as inner:
            for n in range(12):
                status = statuses[n % 4]
                inner.start_soon(client, n, f"response.status == {status}", 20)
            await wait_until(lambda: len(api.app.clients) == 12)
            live = write_entries(store, [{"status": statuses[i % 4]} for i in range(40)])
    everything = history + live
    for n, ids in results.items():
        status = statuses[n % 4]
        assert ids == [e["id"] for e in everything if e["response"]["status"] == status]
    with trio.fail_after(5):
        await wait_until(lambda: not api.app.clients)
        assert orjson.loads((await get(api.port, "/status")).body)["clients_connected"] == 0


class ScriptedStore:
    """Just the reading side of Store, over a dict, with chosen seqs deleted.

    The real store's retention deletes oldest first, so it cannot be made to delete the newest
    entries a client is about to read; this layout checks that a batch ending in (or made only
    of) deleted entries is counted once and walked past, per Store.read_after's contract.
    """

    def __init__(self, entries: list[dict], deleted: set[int]) -> None:
        self.data = {
            i + 1: orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for i, e in enumerate(entries)
        }
        self.ids = {e["id"]: i + 1 for i, e in enumerate(entries)}
        self.deleted = deleted
        self.last_seq = len(entries)
        self.stats = {"entries_written": len(entries)}
        self._event = trio.Event()

    def add(self, entry: dict) -> None:
        self.last_seq += 1
        self.data[self.last_seq] = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
        self._event.set()
        self._event = trio.Event()

    def read_after(
        self, seq: int, max_items: int, max_bytes: int | None = None
    ) -> tuple[list[tuple[int, bytes]], int]:
        items, missed, s, size = [], 0, seq + 1, 0
        while s <= self.last_seq and len(items) < max_items:
            if s in self.deleted:
                missed += 1
            else:
                size += len(self.data[s])
                if items and max_bytes is not None and size > max_bytes:
                    break
                items.append((s, self.data[s]))
            s += 1
        return items, missed

    def seq_of_id(self, entry_id: str) -> int | None:
        return self.ids.get(entry_id)

    async def wait_for_seq(self, seq: int) -> None:
        while self.last_seq <= seq:
            await self._event.wait()


async def test_deleted_entries_at_the_end_of_a_batch_are_counted_once(nursery):
    from tests.support.api import make_entry

    entries = [make_entry(n, 0) for n in range(1, 8)]
    store = ScriptedStore(entries, deleted={6, 7})
    api = await start_worker_api(nursery, store, limits=StreamLimits(batch_entries=8))
    with trio.fail_after(10):
        client = await RawWsClient.connect(api.port, "/api/wsFull")
        await client.send_text(orjson.dumps({"query": "", "since": entries[2]["id"]}).decode())
        frames = [loads(await client.next_message()) for _ in range(3)]
        await wait_until(lambda: next(iter(api.app.clients.values())).seq == 7)
        store.add(make_entry(8, 0))
        frames.append(loads(await client.next_message()))
        await client.aclose()
    gaps = [f["gap"] for f in frames if "gap" in f]
    assert gaps == [{"missed": 2, "reason": "retention"}]
    assert [f for f in frames if "gap" not in f] == [entries[3], entries[4], make_entry(8, 0)]
    assert api.app.clients_missed_total == 2


async def test_a_batch_of_only_deleted_entries_is_counted_once(nursery):
    from tests.support.api import make_entry

    entries = [make_entry(n, 0) for n in range(1, 7)]
    store = ScriptedStore(entries, deleted={4, 5, 6})
    api = await start_worker_api(nursery, store)
    with trio.fail_after(10):
        client = await RawWsClient.connect(api.port, "/api/wsFull")
        await client.send_text(orjson.dumps({"query": "", "since": entries[2]["id"]}).decode())
        first = loads(await client.next_message())
        await wait_until(lambda: next(iter(api.app.clients.values())).seq == 6)
        store.add(make_entry(7, 0))
        second = loads(await client.next_message())
        await client.aclose()
    assert first == {"gap": {"missed": 3, "reason": "retention"}}
    assert second == make_entry(7, 0)
    assert api.app.clients_missed_total == 3
