"""The dashboard under a stream larger than its buffer: what it keeps is bounded, and says so.

A feeder (a real worker API over a real store, tests/support/feeder.py) holds more entries than the
page keeps (BUFFER_LIMIT, 10,000) and then writes more, live. Checked, as a user would see it and
through the DevTools protocol: the list shows exactly the newest 10,000, the toolbar says how many
older ones were dropped, the DOM holds only the rows in sight, and the JS heap after a garbage
collection does not grow while twice as many entries again go through. Pause freezes the view
while entries keep arriving; a list scrolled away from the bottom stays where the user put it.

How fast the page is at 2,000 entries/s (long tasks, heap over 30 s) is measured by
scripts/bench_web.py, never here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.feeder import Feeder
from tests.support.web import ROWS, STEP_MS, edge_row

BUFFER_LIMIT = 10_000
HISTORY = 12_000
LIVE = 12_000
LIVE_RATE = 1_500  # entries/s written live: what a busy 2-core machine keeps up with


@pytest.fixture
def feeder(tmp_path: Path) -> Iterator[Feeder]:
    f = Feeder(tmp_path / "feeder", history=HISTORY, rate=LIVE_RATE, total=LIVE)
    try:
        yield f
    finally:
        f.stop()


def counter(page: Any, node_id: str) -> int:
    return int(page.inner_text(node_id).replace(",", ""))


def heap_after_gc(cdp: Any) -> int:
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("HeapProfiler.collectGarbage")
    return int(cdp.send("Runtime.getHeapUsage")["usedSize"])


def wait_matched(page: Any, n: int, timeout_s: float = 120.0) -> None:
    """Until the page has received at least n entries (its "matched" count)."""
    deadline = time.monotonic() + timeout_s
    while (got := counter(page, "#count-matched")) < n:
        assert time.monotonic() < deadline, f"the page received {got} of {n} entries"
        page.wait_for_timeout(50)  # polling a number in the page: no event says "n reached"


def test_the_view_is_bounded_and_says_what_it_dropped(
    page: tuple[Any, Any], feeder: Feeder, browser: Any
) -> None:
    p, watch = page
    cdp = browser.new_cdp_session(p)
    p.goto(feeder.url("/"))
    wait_matched(p, HISTORY)
    expect(p.locator("#count-matched")).to_have_text(f"{HISTORY:,}")
    expect(p.locator("#count-shown")).to_have_text(f"{BUFFER_LIMIT:,}")
    dropped = p.locator("#dropped")
    expect(dropped).to_be_visible()
    expect(dropped).to_have_attribute("data-count", str(HISTORY - BUFFER_LIMIT))
    expect(dropped).to_contain_text(
        f"{HISTORY - BUFFER_LIMIT:,} older entries dropped from the view"
    )
    rendered = p.locator("#list .row").count()
    assert rendered < 200  # the rows in sight, not 10,000
    # The newest entry is at the bottom, in sight (the view sticks to it).
    assert edge_row(p, "last")["path"] == f"/api/catalogue/{(HISTORY - 1) % 97}"
    heap_full = heap_after_gc(cdp)

    # Scrolled away from the bottom, the view stays put while entries arrive.
    p.locator("#list").evaluate("(list) => { list.scrollTop = 0; }")
    feeder.go()
    wait_matched(p, HISTORY + 500)
    assert p.locator("#list").evaluate("(list) => list.scrollTop") == 0

    # Paused: the rows shown do not change, the counts go on.
    p.click("#pause")
    expect(p.locator("#pause")).to_have_attribute("aria-pressed", "true")
    frozen_first = edge_row(p, "first")["id"]
    at_pause = counter(p, "#count-matched")
    expect(p.locator("#paused-note")).to_be_visible()
    expect(p.locator("#count-matched")).not_to_have_text(f"{at_pause:,}", timeout=STEP_MS)
    expect(p.locator("#paused-note")).to_have_text(re.compile(r"paused: [1-9][0-9,]* new since"))
    assert edge_row(p, "first")["id"] == frozen_first

    # Resumed, and back at the bottom: it follows the newest again.
    p.click("#pause")
    expect(p.locator("#pause")).to_have_attribute("aria-pressed", "false")
    p.locator("#list").evaluate("(list) => { list.scrollTop = list.scrollHeight; }")
    feeder.wait_done(timeout=120)
    wait_matched(p, HISTORY + LIVE)
    expect(p.locator("#count-matched")).to_have_text(f"{HISTORY + LIVE:,}")
    expect(p.locator("#count-shown")).to_have_text(f"{BUFFER_LIMIT:,}")
    newest = f"/api/catalogue/{(HISTORY + LIVE - 1) % 97}"
    p.locator(ROWS).filter(has_text=newest).first.wait_for()
    assert edge_row(p, "last")["path"] == newest
    expect(p.locator("#count-shown")).to_have_text(f"{BUFFER_LIMIT:,}")
    expect(dropped).to_have_attribute("data-count", str(HISTORY + LIVE - BUFFER_LIMIT))
    assert p.locator("#list .row").count() < 200

    # 12,000 more entries went through a full buffer: the heap holds the same 10,000 rows.
    heap_end = heap_after_gc(cdp)
    assert heap_end < heap_full * 1.25 + (2 << 20), (heap_full, heap_end)
    assert watch.errors == [], watch.console
