"""The resolver across API server restarts, on a cluster of its own (restarting the session's
would disturb the other tests).

- A restart under a connected watch: the stream breaks, the resolver backs off and re-opens it;
  changes made right after the server is back are all seen (none lost in the gap).
- A forced 410: the resolver is cut off (a TCP proxy in between) while more than 100 updates and
  real changes go through, and the API server is restarted meanwhile, so its watch cache starts
  after the resolver's resourceVersion. On reconnect the server answers HTTP 200 and then one
  ERROR event with a 410 Status; the resolver relists exactly once and has every change.

Why a restart and not just the updates: this kube-apiserver (1.20) sizes its watch cache
dynamically — the ~100-event cache doubles instead of dropping events younger than 75 s — so a
burst of 150 updates does not expire a resourceVersion taken just before it (checked against
this server); it takes a cache that starts after that resourceVersion, or minutes of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kshark.k8s.config import load_kubeconfig
from kshark.k8s.resolver import Resolver
from tests.support.k8s_cluster import KubeCluster, write_kubeconfig
from tests.support.k8s_resolver import in_thread, owner, start_pod, until
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    c = KubeCluster.start(tmp_path_factory.mktemp("k8s-restart") / "cluster")
    try:
        for name, ip in (("node-a", "10.0.0.11"), ("node-b", "10.0.0.12")):
            c.api.node(name, ip)
        c.api.namespace("restart")
        yield c
    finally:
        c.stop()


async def test_a_restarted_apiserver_loses_no_update(own_cluster: KubeCluster) -> None:
    api = own_cluster.api
    await in_thread(start_pod, api, "restart", "before", "10.244.5.10")
    resolver = Resolver(
        load_kubeconfig(own_cluster.kubeconfig), backoff_initial=0.1, backoff_max=1.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(resolver.run)
        await resolver.wait_settled()
        pods = resolver.loops["pods"].status
        assert owner(resolver, "10.244.5.10") == ("restart", "before")
        watches = pods.watches

        argv = await in_thread(own_cluster.stop_apiserver)
        await until("the broken watch to be noticed", lambda: pods.failing)
        await in_thread(own_cluster.start_apiserver, argv)
        # Changes right after the server is back, while the resolver may still be backing off.
        await in_thread(start_pod, api, "restart", "after", "10.244.5.11")
        await in_thread(api.delete, "/api/v1/namespaces/restart/pods/before", force=True)

        await until("the new pod", lambda: owner(resolver, "10.244.5.11") == ("restart", "after"))
        await until("the deletion", lambda: owner(resolver, "10.244.5.10") is None)
        await until(
            "every kind watching again",
            lambda: all(
                k.status.state == "watching" and not k.status.failing
                for k in resolver.loops.values()
            ),
        )
        assert pods.watches > watches
        status = resolver.status()
        assert status["synced"] is True and status["failing"] == []
        assert all(k["state"] == "watching" for k in status["kinds"].values()), status["kinds"]
        nursery.cancel_scope.cancel()


async def test_a_410_in_a_200_stream_relists_once_and_misses_no_change(
    own_cluster: KubeCluster, tmp_path: Path
) -> None:
    api = own_cluster.api
    await in_thread(api.namespace, "churn")
    await in_thread(start_pod, api, "churn", "doomed", "10.244.5.60")
    await in_thread(api.pod, "churn", "busy", {"role": "churn"})
    proxy = TcpProxy(own_cluster.api_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        kubeconfig = write_kubeconfig(
            tmp_path / "kc", f"https://127.0.0.1:{proxy.port}", "admintoken"
        )
        resolver = Resolver(load_kubeconfig(kubeconfig), backoff_initial=0.05, backoff_max=0.5)
        await nursery.start(resolver.run)
        await resolver.wait_settled()
        pods = resolver.loops["pods"].status
        assert owner(resolver, "10.244.5.60") == ("churn", "doomed")
        # Settled is the lists' end; the watch opens one request later.
        await until("the pods' watch", lambda: pods.state == "watching")
        assert pods.relists == 0
        resource_version = pods.resource_version

        proxy.cut()
        await until("the cut to be noticed", lambda: pods.failing)

        def churn() -> None:
            for i in range(150):
                api.patch(
                    "/api/v1/namespaces/churn/pods/busy",
                    {"metadata": {"annotations": {"n": str(i)}}},
                )
            api.delete("/api/v1/namespaces/churn/pods/doomed", force=True)
            start_pod(api, "churn", "born", "10.244.5.61")
            own_cluster.start_apiserver(own_cluster.stop_apiserver())

        await in_thread(churn)
        assert pods.relists == 0 and pods.resource_version == resource_version
        proxy.restore()
        await until("the relist", lambda: pods.relists >= 1 and pods.state == "watching")
        assert owner(resolver, "10.244.5.61") == ("churn", "born")
        assert resolver.index.lookup("10.244.5.60", 0, time.time_ns()) is None  # deleted meanwhile
        await until(
            "every kind watching again",
            lambda: all(not k.status.failing for k in resolver.loops.values()),
        )
        assert pods.relists == 1  # once, not a loop
        status = resolver.status()
        assert status["relists"] >= 1 and status["failing"] == []
        # The cut is kept for /status: the last error of all, and each kind's own.
        assert status["last_error"] is not None
        assert status["kinds"]["pods"]["last_error"].startswith("pods (v1): ")
        nursery.cancel_scope.cancel()
