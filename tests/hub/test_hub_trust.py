"""The hub is a trust boundary (issue 9, item 5): what one worker sends can neither end its
clients' streams nor speak for another worker.

Before: a worker (or anything at a worker's address) sending a text frame that is not UTF-8
made the hub forward it, and every library client of the hub closed with 1007; binary frames
and non-JSON text were forwarded too; a worker could send `{"worker": …}` frames (the hub's
own) and entries with another worker's id. Now each such frame is counted and dropped, the
worker is `degraded` (in /status, and as a state frame to JSON clients), and the streams go on.
"""

from __future__ import annotations

import orjson
import pytest
import trio

from kshark.hub.frames import EntryMeta, read_entry, worker_gap_frame
from tests.support.hostile_worker import BINARY, HostileWorker, frame
from tests.support.hub import open_client, start_hub
from tests.support.rawhttp import get

BUDGET = 15


def hostile_entry(
    address: str, stream: int, *, claims: str | None = None, worker: str | None = None
) -> bytes:
    """An entry as a worker writes it; `claims` puts another worker in its id and `worker`,
    `worker` only in its `worker` field."""
    who = claims or address
    entry = {
        "id": f"{who}/{stream:012d}.pcap-0",
        "worker": worker or who,
        "timestamp": 1_764_288_000_000 + stream,
        "request": {"path": f"/hostile/{stream}"},
    }
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def script_for(h: HostileWorker, good: str) -> list[bytes]:
    return [
        frame(b'{"id": "\xff\xfe broken"}'),  # a text frame that is not UTF-8
        frame(b'{"a": "\xed\xa0\x80"}'),  # UTF-8-shaped, but a surrogate: not UTF-8 either
        frame(hostile_entry(h.address, 1), BINARY),  # a valid entry, in a binary frame
        frame(b"not json at all"),
        frame(b"[1, 2, 3]"),
        frame(b'{"worker": {"id": "%s", "state": "down", "reason": "spoofed"}}' % good.encode()),
        frame(hostile_entry(h.address, 2, claims=good)),  # another worker's entry
        frame(hostile_entry(h.address, 3, worker="someone-else:1")),  # id and worker disagree
        frame(b'{"gap": {"missed": {"deep": [1]}, "reason": "%s"}}' % (b"x" * 5000)),
        frame(hostile_entry(h.address, 9)),  # and one good entry, last
    ]


DROPPED = 8  # every frame above but the gap frame and the good entry


@pytest.mark.parametrize("first_frame", [{"query": ""}, ""], ids=["json-client", "raw-client"])
async def test_garbage_from_one_worker_neither_ends_streams_nor_speaks_for_another(
    nursery, make_worker, first_frame
):
    good = await make_worker("good")
    good.write(2, path="/good")
    hostile = HostileWorker()
    hostile.script = script_for(await nursery.start(hostile.serve), good.address)
    hub = await start_hub(nursery, [good.address, hostile.address])
    mine = f"{hostile.address}/000000000009.pcap-0"
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, first_frame) as client:
            # The hostile worker's good entry comes after all of its garbage.
            await client.until(lambda c: mine in {e["id"] for e in c.entries})
            await client.until(lambda c: len(c.entries) == 3)
            later = good.write(1, path="/later")  # the stream goes on
            await client.until(lambda c: len(c.entries) == 4)
            status = (await get(hub.port, "/status")).json()
    assert client.close_code is None
    got = sorted(e["id"] for e in client.entries)
    assert got == sorted([*(e["id"] for e in good.written[:2]), mine, later[0]["id"]])
    # Nothing arrived that claims to be the good worker but is not one of its entries.
    assert all(e["request"]["path"] != "/hostile/2" for e in client.entries)
    workers = {w["id"]: w for w in status["workers"]}
    bad, fine = workers[hostile.address], workers[good.address]
    assert bad["frames_dropped"] == DROPPED and bad["degraded"] is True
    assert "worker" in bad["last_drop"]  # the last dropped: id and worker disagree
    assert bad["state"] == "up"  # still connected: its valid entries flow
    assert fine["frames_dropped"] == 0 and fine["degraded"] is False
    if first_frame == "":
        assert client.states == [] and client.gaps == []  # raw clients: entries only
        return
    # The spoofed state frame never reached the client: the good worker was only ever up.
    assert [s["state"] for s in client.states if s["id"] == good.address] == ["up"]
    states = [s for s in client.states if s["id"] == hostile.address]
    assert [s["state"] for s in states] == ["up", "degraded"]
    assert states[1]["reason"] == "dropped a frame that is not UTF-8"
    # The worker's gap frame is rebuilt from what makes sense in it.
    assert client.gaps == [{"missed": None, "reason": "unknown", "worker": hostile.address}]


async def test_a_worker_cannot_take_another_workers_name_first(nursery, make_worker):
    """Before the hub knows a worker's own id (its /status), its first entries teach it; an
    entry naming another of the hub's workers teaches nothing and is dropped."""
    good = await make_worker("good")
    hostile = HostileWorker()
    await nursery.start(hostile.serve)
    hostile.script = [
        frame(hostile_entry(hostile.address, 1, claims=good.address)),
        frame(hostile_entry(hostile.address, 2)),
    ]
    hub = await start_hub(nursery, [good.address, hostile.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.until(lambda c: len(c.entries) == 1)
    assert client.entries[0]["id"] == f"{hostile.address}/000000000002.pcap-0"
    assert hub.workers.info[hostile.address].frames_dropped == 1
    assert hub.workers.info[good.address].advertised in (None, good.address)


# --- the check itself --------------------------------------------------------------------


def test_read_entry_accepts_entries_and_says_why_it_refuses_the_rest() -> None:
    ok = hostile_entry("10.0.0.1:30001", 7)
    assert read_entry(ok) == EntryMeta(
        "10.0.0.1:30001/000000000007.pcap-0", "10.0.0.1:30001", 1_764_288_000_007
    )
    # Non-ASCII UTF-8 is fine; a nested "id" is not the entry's.
    nested = b'{"a": {"id": "x/1"}, "id": "w:1/1-0", "note": "\xc3\xa9t\xc3\xa9", "worker": "w:1"}'
    assert read_entry(nested) == EntryMeta("w:1/1-0", "w:1", 0)
    redacted = b'{"id": "[REDACTED]", "worker": "w:1"}'
    assert read_entry(redacted) == EntryMeta("[REDACTED]", "w:1", 0)
    assert read_entry(b'{"id": "w:1/1-0", "worker": "[REDACTED]"}') == EntryMeta(
        "w:1/1-0", "w:1", 0
    )
    refused = {
        b'{"id": "w:1/1-0", "x": "\xff"}': "a frame that is not UTF-8",
        b'{"id": "w:1/1-0"} trailing': "a frame that is not JSON",
        b'{"id": "w:1/1-0", "x": [1,}': "a frame that is not JSON",
        b'"w:1/1-0"': "a JSON frame that is not an object",
        b'{"worker": {"id": "w:1", "state": "up"}}': "an object that is not an entry (no id)",
        b'{"id": 5}': "an object that is not an entry (no id)",
        b'{"id": "no-slash"}': "an entry id that does not name its worker: 'no-slash'",
        b'{"id": "a:1/1-0", "worker": "b:1"}': "an entry whose worker 'b:1' is not its id's 'a:1'",
    }
    for data, why in refused.items():
        assert read_entry(data) == why, data


def test_gap_frames_are_rebuilt_from_sane_values() -> None:
    assert orjson.loads(worker_gap_frame("w:1", 12, "retention")) == {
        "gap": {"missed": 12, "reason": "retention", "worker": "w:1"}
    }
    for missed, reason in [({"a": 1}, "x" * 100), (-1, "Bad Reason"), (True, None), (2**70, 5)]:
        assert orjson.loads(worker_gap_frame("w:1", missed, reason)) == {
            "gap": {"missed": None, "reason": "unknown", "worker": "w:1"}
        }
