"""The hub's /status shows each worker's own losses — packets the kernel and kshark dropped,
entries it could not store — as the worker's /status reports them (the dashboard's cluster
panel shows them: issue 11).

Before: the hub's per-worker `drops` counted only its own websockets to the worker that failed;
what the worker itself lost was not in the hub's /status at all.
"""

from __future__ import annotations

import trio

from kshark.hub.limits import HubLimits
from kshark.hub.monitor import probe
from kshark.hub.workers import WorkerInfo
from tests.support.hostile_worker import HostileWorker
from tests.support.hub import start_hub
from tests.support.rawhttp import get, wait_until

BUDGET = 15
LOSSES = {"dropped_kernel": 7, "dropped_ours": 2, "store": {"dropped_entries": 3}}


async def test_the_hub_status_has_each_workers_own_drops(nursery, make_worker):
    lossy = HostileWorker(status=dict(LOSSES))
    await nursery.start(lossy.serve)
    # The worker API over a real store, without a capture: its store counts, nothing else.
    plain = await make_worker("plain")
    hub = await start_hub(
        nursery, [lossy.address, plain.address], limits=HubLimits(status_interval=0.1)
    )

    async def workers() -> dict[str, dict]:
        status = (await get(hub.port, "/status")).json()
        return {w["id"]: w for w in status["workers"]}

    with trio.fail_after(BUDGET):
        await wait_until(lambda: hub.workers.info[lossy.address].dropped_kernel is not None)
        await wait_until(lambda: hub.workers.info[plain.address].dropped_entries is not None)
        got = await workers()
        # They follow the worker's counters.
        lossy.status["dropped_ours"] = 5
        await wait_until(lambda: hub.workers.info[lossy.address].dropped_ours == 5)
    row = got[lossy.address]
    assert (row["dropped_kernel"], row["dropped_ours"], row["dropped_entries"]) == (7, 2, 3)
    assert row["drops"] == 0  # the hub's own connection drops stay apart
    row = got[plain.address]
    assert (row["dropped_kernel"], row["dropped_ours"], row["dropped_entries"]) == (None, None, 0)


async def test_counts_a_worker_does_not_give_are_unknown_not_zero(nursery):
    odd = HostileWorker(
        status={"dropped_kernel": "7", "dropped_ours": -1, "store": {"dropped_entries": True}}
    )
    silent = HostileWorker()  # an older worker, or another program: says nothing of drops
    for w in (odd, silent):
        await nursery.start(w.serve)
    limits = HubLimits()
    for w in (odd, silent):
        info = WorkerInfo(w.address)
        with trio.fail_after(BUDGET):
            await probe(info, limits)
        status = info.status()
        assert status["state"] == "up"
        assert (status["dropped_kernel"], status["dropped_ours"], status["dropped_entries"]) == (
            None,
            None,
            None,
        )
