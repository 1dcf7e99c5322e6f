"""Fixtures for the Kubernetes tests: one real control plane for the session, with the scenario
of fixtures/k8s built on it. Tests that change the cluster use their own namespaces or addresses
(or, for the apiserver restart, their own cluster), so sharing it is safe and keeps the suite fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.k8s_cluster import KubeCluster, Scenario, build_scenario, load_scenario


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    c = KubeCluster.start(tmp_path_factory.mktemp("k8s") / "cluster")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def scenario(cluster: KubeCluster) -> Scenario:
    spec = load_scenario()
    return Scenario(cluster, spec, build_scenario(cluster.api, spec))
