"""The hub in front of real `kshark-worker` processes (replaying fixtures/demo.pcap), and the
`kshark-hub` command itself.

A worker process is killed with SIGKILL mid-stream (no flush, no close: the kernel resets its
connections) and started again on the same data directory and port; the stream must carry on
from every other worker meanwhile and then deliver the restarted worker's new entries, with no
entry twice and none missing (checked against the entry files in its data directory).
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import dpkt
import trio
from hub_support import (
    VENV_BIN,
    WorkerProcess,
    free_port,
    get,
    open_client,
    start_hub,
    wait_until,
)

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
            await wait_until(lambda: _accepts(port))
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


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


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
