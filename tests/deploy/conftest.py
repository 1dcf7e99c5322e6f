from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_cluster import Cluster, available


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One control plane per test module (~8 s to start), stopped and removed after it."""
    why_not = available()
    if why_not:
        pytest.fail(f"the Kubernetes test cluster cannot run: {why_not}")
    c = Cluster.start(tmp_path_factory.mktemp("cluster") / "state")
    try:
        yield c
    finally:
        c.stop()
