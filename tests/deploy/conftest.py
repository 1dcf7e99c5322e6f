from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.deploy_cluster import Cluster, available


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
