"""The resolver in process, against the real control plane, when things change under it.

- An IP handed from a deleted pod to a pod of another namespace: an entry gets the owner at its
  capture time — the old pod for a request sent before the change (even when its response, and
  so the entry, comes after), the new one after.
- A revoked RBAC permission: the pods watch is re-opened (timeoutSeconds 1) and refused; /status
  says so; the last known pods still resolve, a pod made since does not, and entries keep
  being built.

The frames are the fixture generator's (scripts/make_k8s_fixtures.py), timed by the test.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import trio

from kshark.k8s.config import load_kubeconfig
from kshark.k8s.resolver import Resolver
from tests.support.k8s_cluster import Scenario, grant, service_account_kubeconfig
from tests.support.k8s_resolver import (
    FRONTEND_IP,
    LINKTYPE_ETHERNET,
    connection,
    in_thread,
    owner,
    pipeline_for,
    start_pod,
    until,
)


async def test_an_ip_reused_by_another_namespace_keeps_its_old_owner_on_older_entries(
    scenario: Scenario,
) -> None:
    api = scenario.cluster.api
    ip = "10.244.3.50"
    resolver = Resolver(load_kubeconfig(scenario.cluster.kubeconfig))
    async with trio.open_nursery() as nursery:
        await nursery.start(resolver.run)
        await resolver.wait_settled()
        await in_thread(start_pod, api, "shop", "legacy", ip)
        await until("the old pod", lambda: owner(resolver, ip) == ("shop", "legacy"))

        pipeline = pipeline_for(resolver)
        # Exchange 1: its request is sent while `legacy` has the IP...
        t1 = time.time_ns()
        first = connection(t1, (ip, 41001), (FRONTEND_IP, 8080), "/before")
        for ts, frame in first[:5]:  # SYN, SYN-ACK, ACK, request, its ACK
            pipeline.feed(ts, LINKTYPE_ETHERNET, frame)
        assert pipeline.pop_output().entries == []

        # ...then the pod goes and a pod of another namespace gets its IP.
        await in_thread(api.delete, "/api/v1/namespaces/shop/pods/legacy", force=True)
        await in_thread(start_pod, api, "payments", "newcomer", ip)
        await until("the new pod", lambda: owner(resolver, ip) == ("payments", "newcomer"))
        t2 = time.time_ns()
        # The response to exchange 1 arrives now: its entry is built after the change.
        for i, (_, frame) in enumerate(first[5:]):
            pipeline.feed(t2 + i * 1000, LINKTYPE_ETHERNET, frame)
        # Exchange 2 happens entirely after the change.
        for ts, frame in connection(t2 + 1_000_000, (ip, 41002), (FRONTEND_IP, 8080), "/after"):
            pipeline.feed(ts, LINKTYPE_ETHERNET, frame)
        pipeline.finish()
        # As the store has them: the resolved objects are serialised already (Fragments).
        entries = [orjson.loads(orjson.dumps(e)) for e in pipeline.pop_output().entries]
        got = {e["request"]["path"]: e for e in entries}
        nursery.cancel_scope.cancel()

    before, after = got["/before"]["src"], got["/after"]["src"]
    assert (before["namespace"], before["name"], before["pod"]["metadata"]["name"]) == (
        "shop", "legacy", "legacy",
    )  # fmt: skip
    assert (after["namespace"], after["name"], after["pod"]["metadata"]["name"]) == (
        "payments", "newcomer", "newcomer",
    )  # fmt: skip
    assert got["/before"]["dst"]["name"] == got["/after"]["dst"]["name"] == "frontend.shop"
    # The index answers by time, not by who has the address now.
    assert owner(resolver, ip, t1) == ("shop", "legacy")
    assert owner(resolver, ip, t2) == ("payments", "newcomer")
    assert owner(resolver, ip, t1 - 3_600_000_000_000) == ("shop", "legacy")  # earliest known


async def test_a_revoked_permission_is_reported_and_the_last_state_kept(
    scenario: Scenario, tmp_path: Path
) -> None:
    cluster = scenario.cluster
    api = cluster.api
    kubeconfig = await in_thread(
        service_account_kubeconfig, cluster, "kshark", "revoked", tmp_path / "kc"
    )
    subject = ("kshark", "revoked")
    await in_thread(grant, api, "kshark-revoked-pods", [("", "pods")], subject)
    others = [("", "nodes"), ("", "services"), ("discovery.k8s.io", "endpointslices")]
    await in_thread(grant, api, "kshark-revoked-others", others, subject)
    await in_thread(api.namespace, "revoke")
    await in_thread(start_pod, api, "revoke", "known", "10.244.3.70")
    # The server ends each watch after a second, so a revocation shows at the next re-watch.
    resolver = Resolver(load_kubeconfig(kubeconfig), watch_timeout=1, backoff_initial=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(resolver.run)
        await resolver.wait_settled()
        assert resolver.synced
        assert owner(resolver, "10.244.3.70") == ("revoke", "known")
        pods = resolver.loops["pods"].status

        await in_thread(
            api.delete, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kshark-revoked-pods"
        )
        await until("the refusal", lambda: pods.failing and pods.last_error_code == 403)
        status = resolver.status()
        assert status["failing"] == ["pods"]
        error = status["kinds"]["pods"]["last_error"]
        assert error.startswith("pods (v1): 403 Forbidden: "), error
        assert "system:serviceaccount:kshark:revoked" in error
        refused_since = pods.last_error_at
        assert refused_since is not None

        await in_thread(start_pod, api, "revoke", "unseen", "10.244.3.71")
        # Nothing has been listed or watched since the refusal: the resolver cannot know it.
        assert pods.failing and (pods.last_ok_at or 0) < refused_since
        assert owner(resolver, "10.244.3.71") is None
        assert owner(resolver, "10.244.3.70") == ("revoke", "known")  # the last known state

        pipeline = pipeline_for(resolver)
        now = time.time_ns()
        for ts, frame in connection(now, ("10.244.3.70", 42001), ("10.244.3.71", 8080), "/x"):
            pipeline.feed(ts, LINKTYPE_ETHERNET, frame)
        pipeline.finish()
        (entry,) = pipeline.pop_output().entries
        assert (entry["src"]["name"], entry["dst"]["name"]) == ("known", "")
        assert entry["response"]["status"] == 200
        nursery.cancel_scope.cancel()
