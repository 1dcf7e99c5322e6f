"""The hub in front of real `kshark-worker` processes (replaying fixtures/demo.pcap), and the
`kshark-hub` command itself.

A worker process is killed with SIGKILL mid-stream (no flush, no close: the kernel resets its
connections) and started again on the same data directory and port; the stream must carry on
from every other worker meanwhile and then deliver the restarted worker's new entries, with no
entry twice and none missing (checked against the entry files in its data directory).

Resume edge cases, with entries written while the worker's API is down (`kshark-worker --once`
on its data directory, then the worker serving it with nothing more to replay):

- a `"history": false` stream whose worker dropped before its first match gets them all;
- a worker back on a *new* data directory, whose ids restart at stream 1 and so alias the hub's
  cursor, is recognised by its store id and sent from its first entry (never from the alias).
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import dpkt
import orjson
import trio

from kshark.hub.limits import HubLimits
from tests.support.hub import VENV_BIN, WorkerProcess, open_client, start_hub, write_empty_pcap
from tests.support.rawhttp import accepts, free_port, get, wait_until

BUDGET = 40
DEMO_ENTRIES = 24  # entries in fixtures/demo.pcap


def ids_of(entries: list[dict], worker: str) -> list[str]:
    return [e["id"] for e in entries if e["worker"] == worker]


async def test_sigkilled_worker_restarts_without_duplicates_or_gaps(
    nursery, make_worker, tmp_path: Path
):
    w1 = WorkerProcess(tmp_path / "w1", free_port())
    w2 = WorkerProcess(tmp_path / "w2", free_port())
    live = await make_worker("live")  # an in-process worker that keeps writing
    try:
        w1.start()
        w2.start()
        with trio.fail_after(BUDGET):
            await w1.wait_serving(DEMO_ENTRIES)
            await w2.wait_serving(DEMO_ENTRIES)
            hub = await start_hub(nursery, [w1.address, w2.address, live.address])

            async def keep_writing() -> None:
                while True:
                    live.write(1)
                    await trio.sleep(0.05)

            nursery.start_soon(keep_writing)
            async with open_client(hub.port, {"query": ""}) as client:
                await client.until(lambda c: len(ids_of(c.entries, w1.address)) == DEMO_ENTRIES)
                await client.until(lambda c: len(ids_of(c.entries, w2.address)) == DEMO_ENTRIES)

                w1.kill()
                await client.until(lambda c: c.state_of(w1.address) == "down")
                # The others keep flowing while w1 is dead.
                at_kill = len(ids_of(client.entries, live.address))
                await client.until(lambda c: len(ids_of(c.entries, live.address)) >= at_kill + 10)
                status = {w["id"]: w for w in hub.status()["workers"]}
                assert status[w2.address]["streams"] == 1
                assert status[w1.address]["streams"] == 0

                # Same data directory, same port: it replays the capture again (24 new entries).
                w1.start()
                await client.until(lambda c: c.state_of(w1.address) == "up")
                await client.until(lambda c: len(ids_of(c.entries, w1.address)) == 2 * DEMO_ENTRIES)
                await w1.wait_serving(2 * DEMO_ENTRIES)
                await client.quiet_for(0.5)
    finally:
        w1.stop()
        w2.stop()

    received = Counter(e["id"] for e in client.entries)
    assert max(received.values()) == 1  # no entry twice
    # No gaps: exactly what each worker stores arrived.
    assert set(ids_of(client.entries, w1.address)) == w1.stored_ids()
    assert len(w1.stored_ids()) == 2 * DEMO_ENTRIES
    assert set(ids_of(client.entries, w2.address)) == w2.stored_ids()
    assert (
        ids_of(client.entries, live.address)
        == [e["id"] for e in live.written][: len(ids_of(client.entries, live.address))]
    )
    states = [s["state"] for s in client.states if s["id"] == w1.address]
    assert states == ["up", "down", "up"]


async def test_item_and_pcap_of_a_real_worker_through_the_hub(nursery, tmp_path: Path):
    w = WorkerProcess(tmp_path / "w", free_port())
    try:
        w.start()
        with trio.fail_after(BUDGET):
            await w.wait_serving(DEMO_ENTRIES)
            hub = await start_hub(nursery, [w.address])
            async with open_client(hub.port, "limit(1)") as client:
                await client.drain()
            entry = client.entries[0]
            short = entry["id"].rpartition("/")[2]
            stream = entry["stream"]
            item = await get(hub.port, f"/item/{w.address}/{short}")
            pcap = await get(hub.port, f"/pcaps/{w.address}/{stream}")
            direct = await get(w.port, f"/pcaps/{stream}")
    finally:
        w.stop()
    assert item.status == 200 and item.json() == entry
    assert pcap.status == 200 and pcap.body == direct.body
    packets = list(dpkt.pcap.Reader(io.BytesIO(pcap.body)))
    assert len(packets) >= 4  # a whole connection: handshake, request, response, close


async def test_kshark_hub_command_with_a_workers_file(tmp_path: Path):
    w1 = WorkerProcess(tmp_path / "w1", free_port())
    w2 = WorkerProcess(tmp_path / "w2", free_port())
    listing = tmp_path / "workers"
    listing.write_text(f"{w1.address}\n")
    port = free_port()
    hub = await trio.lowlevel.open_process(
        [str(VENV_BIN / "kshark-hub"), "--workers-file", str(listing), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w1.start()
        w2.start()
        with trio.fail_after(BUDGET):
            await w1.wait_serving(DEMO_ENTRIES)
            await w2.wait_serving(DEMO_ENTRIES)
            await wait_until(lambda: accepts(port))
            async with open_client(port, "") as client:  # raw text, as wscat sends
                await client.entries_until(DEMO_ENTRIES)
                listing.write_text(f"{w1.address}\n{w2.address}\n")  # joins mid-stream
                await client.entries_until(2 * DEMO_ENTRIES)
            status = (await get(port, "/status")).json()
            hub.send_signal(signal.SIGTERM)
            code = await hub.wait()
    finally:
        if hub.returncode is None:
            hub.kill()
            with trio.CancelScope(shield=True):
                await hub.wait()
        w1.stop()
        w2.stop()
    assert code == 0
    assert {e["worker"] for e in client.entries} == {w1.address, w2.address}
    assert len({e["id"] for e in client.entries}) == 2 * DEMO_ENTRIES
    assert [w["id"] for w in status["workers"]] == [w1.address, w2.address]
    assert status["workers_file"]["path"] == str(listing)


# Reconnect quickly once the worker is back (the default backoff grows to 5 s).
QUICK = HubLimits(backoff_max=0.3, status_interval=0.2)


async def test_history_false_gets_what_a_worker_wrote_while_down_before_its_first_match(
    nursery, tmp_path: Path
):
    w = WorkerProcess(tmp_path / "w", free_port())
    try:
        w.start()
        with trio.fail_after(BUDGET):
            await w.wait_serving(DEMO_ENTRIES)
            before = w.stored_ids()
            hub = await start_hub(nursery, [w.address], limits=QUICK)
            async with open_client(hub.port, {"query": "", "history": False}) as client:
                await client.until(lambda c: c.state_of(w.address) == "up")
                # The stream starts after the newest entry w had (its position frame).
                await wait_until(lambda: _stream_cursor(hub).get(w.address) in before)
                w.kill()
                await client.until(lambda c: c.state_of(w.address) == "down")
                await w.replay_once()  # 24 entries, written while nothing serves them
                w.pcap = write_empty_pcap(tmp_path / "empty.pcap")
                w.start()
                await w.wait_serving(2 * DEMO_ENTRIES)
                await client.until(lambda c: len(c.entries) >= DEMO_ENTRIES)
                await client.quiet_for(0.5)
    finally:
        w.stop()
    written_while_down = w.stored_ids() - before
    assert len(written_while_down) == DEMO_ENTRIES
    assert sorted(ids_of(client.entries, w.address)) == sorted(written_while_down)
    assert client.gaps == []


async def test_a_worker_back_on_a_new_data_directory_is_not_aliased(nursery, tmp_path: Path):
    w = WorkerProcess(tmp_path / "first", free_port())
    try:
        w.start()
        with trio.fail_after(BUDGET):
            await w.wait_serving(DEMO_ENTRIES)
            first_ids = w.stored_ids()
            hub = await start_hub(nursery, [w.address], limits=QUICK)
            async with (
                open_client(hub.port, {"query": ""}) as full,
                open_client(hub.port, {"query": "", "history": False}) as live,
            ):
                await full.until(lambda c: len(c.entries) == DEMO_ENTRIES)
                # Both streams know where they are on w, in which store (its position frame).
                await wait_until(
                    lambda: (
                        [w.address in c["cursor"] for c in hub.status()["clients"]] == [True, True]
                    )
                )
                w.kill()
                await full.until(lambda c: c.state_of(w.address) == "down")
                # The same port on a new, empty data directory: the same capture gives the
                # same ids (streams from 1 again), so the hub's cursor names an entry there.
                w.data_dir = tmp_path / "second"
                await w.replay_once()
                assert w.stored_ids() == first_ids
                w.pcap = write_empty_pcap(tmp_path / "empty.pcap")
                w.start()
                await w.wait_serving(DEMO_ENTRIES)
                await full.until(lambda c: len(c.entries) == 2 * DEMO_ENTRIES)
                # Made after `live` connected, the new store holds only newer entries.
                await live.until(lambda c: len(c.entries) == DEMO_ENTRIES)
                await full.quiet_for(0.5)
                await live.quiet_for(0.1)
            status = {x["id"]: x for x in hub.status()["workers"]}
    finally:
        w.stop()
    gap = {"missed": None, "reason": "store-changed", "worker": w.address}
    for client in (full, live):
        assert client.gaps == [gap]
        # The gap frame comes before the new store's entries.
        tail = client.raw[-DEMO_ENTRIES - 1 :]
        assert orjson.loads(tail[0]) == {"gap": gap}
        assert {orjson.loads(t)["id"] for t in tail[1:]} == first_ids
        assert len({orjson.loads(t)["id"] for t in tail[1:]}) == DEMO_ENTRIES
    second_store = orjson.loads((tmp_path / "second" / "state" / "store-id").read_bytes())
    assert status[w.address]["store_id"] == second_store["store_id"]


def _stream_cursor(hub) -> dict[str, str]:
    clients = hub.status()["clients"]
    return clients[0]["cursor"] if clients else {}


def test_kshark_hub_refuses_bad_arguments():
    hub = str(VENV_BIN / "kshark-hub")
    none = subprocess.run([hub], capture_output=True, text=True, timeout=30)
    bad = subprocess.run([hub, "--worker", "nohost"], capture_output=True, text=True, timeout=30)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [hub, "--worker", "127.0.0.1:1", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert none.returncode == 2 and "--worker" in none.stderr
    assert bad.returncode == 2 and "nohost" in bad.stderr
    assert busy.returncode == 2 and "address already in use" in busy.stderr.lower()
