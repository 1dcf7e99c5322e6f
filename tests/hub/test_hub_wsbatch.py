"""The hub's client streams send in batches (kshark.api.wsbatch), and still work without them."""

from __future__ import annotations

import pytest
import trio

import kshark.api.wsbatch as wsbatch
from tests.support.hub import open_client, start_hub

BUDGET = 15


async def test_canary_the_hubs_client_streams_send_in_batches(nursery, make_worker):
    """The installed trio-websocket still has what batched sends need, on the connection a
    hub's client stream really gets (else: one write per entry, and this test says so)."""
    w = await make_worker("w")
    w.write(3)
    hub = await start_hub(nursery, [w.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "") as client:
            await client.entries_until(3)
            (stream,) = hub.clients.values()
            assert wsbatch.can_batch(stream.ws)


@pytest.mark.parametrize("batched", [True, False])
async def test_entries_pass_unchanged_with_and_without_batched_sends(
    nursery, make_worker, monkeypatch, batched
):
    if not batched:
        monkeypatch.setattr(wsbatch, "can_batch", lambda ws: False)
    w = await make_worker("w")
    written = w.write(40, path="/grüße/世界")
    hub = await start_hub(nursery, [w.address])
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "") as client:
            await client.entries_until(40)
    assert client.entries == written
