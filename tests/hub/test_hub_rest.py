"""The hub's REST routes: its own answers, and /item and /pcaps fetched from the right worker."""

from __future__ import annotations

import trio

from capture.pipeline import Output
from tests.support.hub import make_entry, open_client, start_hub
from tests.support.rawhttp import get, wait_until

BUDGET = 15


async def test_echo_version_validate(nursery, workers3):
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        echo = await get(hub.port, "/echo")
        version = await get(hub.port, "/api/version")
        good = await get(hub.port, "/query/validate?q=response.status%20%3E%20300")
        bad = await get(hub.port, "/query/validate?q=response.status%20%3E")
        missing = await get(hub.port, "/nothing/here")
        post = await get(hub.port, "/status", {"Content-Length": "0"})
    assert echo.status == 200 and echo.body == b"It's running."
    assert version.json()["role"] == "hub"
    assert good.json() == {"valid": True, "message": ""}
    assert bad.json()["valid"] is False and bad.json()["message"].startswith("1:")
    assert missing.status == 404
    assert post.status == 200
    assert [w.ws_requests for w in workers3] == [0, 0, 0]


async def test_item_and_pcap_come_from_the_named_worker(nursery, workers3):
    a, b, _ = workers3
    a.write(1)  # a's stream 1
    b.write(2)  # b's streams 1 and 2
    stream = b.store.allocate_stream()  # 3: only b has it
    entry = make_entry(b.address, stream, 0, path="/from/b")
    frames = [bytes([i]) * 60 for i in range(1, 4)]
    b.store.write(
        Output(
            entries=[entry],
            packets=[(stream, 1_764_288_000_000_000_000 + i, 1, f) for i, f in enumerate(frames)],
            closed_streams=[stream],
        )
    )
    hub = await start_hub(nursery, [w.address for w in workers3])
    with trio.fail_after(BUDGET):
        item = await get(hub.port, f"/item/{b.address}/{stream:012d}.pcap-0")
        direct_item = await get(b.port, f"/item/{stream}-0")
        pcap = await get(hub.port, f"/api/pcaps/{b.address}/{stream}")
        direct_pcap = await get(b.port, f"/pcaps/{stream}")
        head = await get(hub.port, f"/pcaps/{b.address}/{stream}", {"X": "y"})
        wrong_worker = await get(hub.port, f"/item/{a.address}/{stream:012d}.pcap-0")
        unknown = await get(hub.port, f"/item/127.0.0.1:1/{stream}-0")
        sneaky = await get(hub.port, f"/item/{b.address}/..%2Fstatus")
        no_worker = await get(hub.port, f"/pcaps/{stream}")
    assert item.status == 200 and item.json() == entry
    assert item.body == direct_item.body
    assert pcap.status == 200 and pcap.body == direct_pcap.body
    assert pcap.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert "attachment" in pcap.headers["content-disposition"]
    assert pcap.body[:4] == bytes.fromhex("4d3cb2a1")  # ns-resolution pcap, little-endian
    assert all(f in pcap.body for f in frames)
    assert head.status == 200
    assert wrong_worker.status == 404  # a has no such stream: its own 404 passed on
    assert unknown.status == 404 and "unknown worker" in unknown.json()["error"]["message"]
    assert sneaky.status == 404 and no_worker.status == 404


async def test_unreachable_worker_gives_502(nursery, workers3):
    hub = await start_hub(nursery, [*(w.address for w in workers3), "127.0.0.1:9"])
    with trio.fail_after(BUDGET):
        reply = await get(hub.port, "/item/127.0.0.1:9/7-0")
    assert reply.status == 502 and "127.0.0.1:9" in reply.json()["error"]["message"]


async def test_status_and_metrics_per_worker(nursery, workers3):
    for i, w in enumerate(workers3):
        w.write(i + 1)
    nowhere = "127.0.0.1:9"
    hub = await start_hub(nursery, [*(w.address for w in workers3), nowhere])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.entries_until(6)
            await wait_until(lambda: all(w["state"] != "unknown" for w in hub.status()["workers"]))
            status = (await get(hub.port, "/status")).json()
            metrics = (await get(hub.port, "/metrics")).body.decode()
    workers = {w["id"]: w for w in status["workers"]}
    assert list(workers) == [*(w.address for w in workers3), nowhere]
    for i, w in enumerate(workers3):
        st = workers[w.address]
        assert st["state"] == "up" and st["entries_relayed"] == i + 1
        assert st["streams"] == 1 and st["worker"] == w.address
        assert st["lag"] == 0 and st["last_seq"] == i + 1
    down = workers[nowhere]
    assert down["state"] == "down" and "refused" in down["last_error"].lower()
    assert down["entries_relayed"] == 0 and down["streams"] == 0
    assert status["workers_up"] == 3 and status["clients_connected"] == 1
    assert status["entries_sent_total"] == 6
    assert f'kshark_hub_worker_entries_relayed_total{{worker="{workers3[2].address}"}} 3' in metrics
    assert f'kshark_hub_worker_up{{worker="{nowhere}"}} 0' in metrics
    assert "kshark_hub_entries_sent_total 6" in metrics
