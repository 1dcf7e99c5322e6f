"""The cluster panel in Chromium against a real hub: a worker whose frames the hub drops is
`degraded` (with what was dropped), each worker's own drops are shown, and a stopped worker is
`hung` — and stays hung whatever the hub's later words for its silence.

Before: the page had no `degraded` state (a degraded frame turned the worker's row into an
unstyled "degraded" and it was no longer counted up, the next /status made it plain "up"); its
"drops" column showed the hub's failed connections, not what the workers lost; and a stopped
worker showed "hung" only until the hub's reconnect timed out, then "down".
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.store import stored_ids
from tests.support.web import (
    DEMO,
    DEMO_ENTRIES,
    REPO,
    ROWS,
    STEP_MS,
    Served,
    get_json,
    hub,
    page_url,
    shown_ids,
    wait_stored,
    worker,
)

pytestmark = pytest.mark.tools

HOSTILE = REPO / "tests" / "support" / "hostile_worker.py"
LOSSES = {"dropped_kernel": 7, "dropped_ours": 2, "store": {"dropped_entries": 3}}


def hostile(tmp: Path) -> Served:
    """Something at a worker's address that sends a frame the hub must drop, and reports drops
    of its own in its /status."""
    spec = tmp / "hostile.json"
    spec.write_text(json.dumps({"frames": ["not json at all"], "status": LOSSES}))
    return Served([sys.executable, str(HOSTILE), str(spec)], tmp / "hostile.log").start()


def row(page: Any, address: str) -> Any:
    return page.locator(f'#cluster-rows tr[data-worker="{address}"]')


def test_a_degraded_worker_and_every_workers_own_drops(
    page: tuple[Any, Any], tmp_path: Path, shots: Path
) -> None:
    p, watch = page
    w = worker(tmp_path, "w", [DEMO])
    wait_stored(w, DEMO_ENTRIES)
    bad = hostile(tmp_path)
    # The hostile worker never answers pings: a long silence allowance keeps it connected.
    h = hub(tmp_path, [w.address, bad.address], extra=["--worker-silence", "600"])
    try:
        assert p.goto(page_url(h)).status == 200
        expect(p.locator(ROWS)).to_have_count(DEMO_ENTRIES, timeout=STEP_MS)
        bad_row, good_row = row(p, bad.address), row(p, w.address)
        expect(bad_row.locator(".state")).to_have_text("degraded", timeout=STEP_MS)
        expect(bad_row.locator(".state")).to_have_class("state state-degraded")
        expect(bad_row.locator("td.error")).to_contain_text("dropped a frame that is not JSON")
        # Its own drops, as its /status says (through the hub's /status, every 2 s).
        expect(bad_row.locator(".drops")).to_have_text("9", timeout=STEP_MS)
        expect(bad_row.locator(".drops")).to_have_attribute(
            "title", "kernel 7, kshark 2; the hub's connections to it that failed: 0"
        )
        expect(bad_row.locator("td:nth-child(5)")).to_have_text("3")
        # That row came from the hub's /status (the frame has no drops): degraded there too.
        assert bad_row.locator(".state").text_content() == "degraded"
        # A degraded worker is up: its entries flow.
        expect(p.locator("#cluster-summary")).to_have_text("2 of 2 workers up · 1 degraded")
        # The healthy one: up, nothing dropped, its entries relayed.
        expect(good_row.locator(".state")).to_have_text("up")
        expect(good_row.locator(".drops")).to_have_text("0")
        expect(good_row.locator("td:nth-child(5)")).to_have_text("0")
        expect(good_row.locator(".relayed")).to_have_text(str(DEMO_ENTRIES))
        # What the page shows is what the hub's /status says.
        status = {x["id"]: x for x in get_json(h.url("/status"))["workers"]}
        assert status[bad.address]["degraded"] is True
        assert status[bad.address]["last_drop"] == "a frame that is not JSON"
        assert (status[bad.address]["dropped_kernel"], status[bad.address]["dropped_ours"]) == (
            7,
            2,
        )
        assert status[bad.address]["dropped_entries"] == 3
        p.locator("aside.cluster").screenshot(path=str(shots / "cluster-degraded.png"))
    finally:
        h.stop()
        bad.stop()
        w.stop()
    assert watch.errors == [], watch.console


def test_a_stopped_worker_is_hung_and_stays_hung_until_it_runs_again(
    page: tuple[Any, Any], tmp_path: Path
) -> None:
    p, watch = page
    w = worker(tmp_path, "w", [DEMO])
    wait_stored(w, DEMO_ENTRIES)
    silence, pong = 1, 1
    h = hub(
        tmp_path,
        [w.address],
        extra=["--worker-silence", str(silence), "--worker-pong-timeout", str(pong)],
    )
    assert w.proc is not None
    stopped = False
    try:
        assert p.goto(page_url(h)).status == 200
        expect(p.locator(ROWS)).to_have_count(DEMO_ENTRIES, timeout=STEP_MS)
        state, error = row(p, w.address).locator(".state"), row(p, w.address).locator("td.error")
        expect(state).to_have_text("up")

        os.kill(w.proc.pid, signal.SIGSTOP)  # its connections stay open; it answers nothing
        stopped = True
        expect(state).to_have_text("hung", timeout=(silence + pong) * 1000 + STEP_MS)
        expect(state).to_have_class("state state-hung")
        # The hub then tries to reconnect: the kernel takes the connection, the worker never
        # answers the handshake. That is the same silence: still hung, not down.
        expect(error).to_contain_text("connecting timed out", timeout=2 * STEP_MS)
        assert state.text_content() == "hung"
        expect(p.locator("#cluster-summary")).to_have_text("0 of 1 workers up · 1 hung")

        os.kill(w.proc.pid, signal.SIGCONT)
        stopped = False
        expect(state).to_have_text("up", timeout=STEP_MS)
        ids = shown_ids(p)
        assert len(ids) == len(set(ids)) == DEMO_ENTRIES  # nothing twice after it came back
        assert set(ids) == stored_ids(tmp_path / "w", w.address)
    finally:
        if stopped:
            os.kill(w.proc.pid, signal.SIGCONT)
        h.stop()
        w.stop()
    assert watch.errors == [], watch.console
