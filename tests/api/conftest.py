"""Fixtures for the API tests: a Store in a temporary directory and a worker API serving it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.api import RunningApi, start_worker_api


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from kshark.store import Store

    s = Store(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
async def api(nursery: trio.Nursery, store: Any) -> RunningApi:
    return await start_worker_api(nursery, store)
