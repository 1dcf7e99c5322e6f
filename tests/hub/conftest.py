"""Fixtures for the hub tests: in-process workers over Stores in temporary directories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.hub import FakeWorker

MakeWorker = Callable[..., Awaitable[FakeWorker]]


@pytest.fixture
async def make_worker(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[MakeWorker]:
    made: list[FakeWorker] = []

    async def make(name: str | None = None, **kw: Any) -> FakeWorker:
        name = name or f"w{len(made)}"
        worker = FakeWorker(tmp_path / name, node_name=f"node-{name}", **kw)
        made.append(worker)
        return await worker.start(nursery)

    yield make
    for worker in made:
        worker.close()


@pytest.fixture
async def workers3(make_worker: MakeWorker) -> list[FakeWorker]:
    return [await make_worker(f"w{i}") for i in range(3)]
