"""Fixtures for the dashboard's tests: Playwright (sync API) and a fresh Chromium per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.web import SHOTS, STEP_MS, Watch, launch


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # Every wait has the suite's step deadline: actions (the page's default timeout, below) and
    # assertions too, whose own default (5 s) a busy machine exceeds while a hub and its
    # workers start and the page fills.
    expect.set_options(timeout=STEP_MS)
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Any, tmp_path: Path) -> Iterator[Any]:
    """A Chromium context on a fresh profile directory."""
    context = launch(playwright, tmp_path / "profile")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
    """(page, what it logged). The page is the context's first tab."""
    page = browser.pages[0] if browser.pages else browser.new_page()
    watch = Watch()
    watch.attach(page)
    page.set_default_timeout(STEP_MS)
    yield page, watch


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
