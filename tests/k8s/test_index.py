"""kshark.k8s.index: what an address resolves to, and when — with plain Kubernetes-shaped dicts."""

from __future__ import annotations

from typing import Any

import pytest

from kshark.k8s.index import ResolutionIndex

S = 1_000_000_000


def pod(ns: str, name: str, ip: str | None, *, node: str = "node-a", host_network: bool = False,
        phase: str = "Running", labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"phase": phase, "hostIP": "10.0.0.11"}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}", "labels": labels or {}},
        "spec": {"nodeName": node, "hostNetwork": host_network},
        "status": status,
    }


def service(ns: str, name: str, cluster_ip: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": cluster_ip}}


def eps(ns: str, name: str, svc: str, ips: list[str], ports: list[int]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "endpoints": [{"addresses": [ip]} for ip in ips],
        "ports": [{"port": p} for p in ports],
    }


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def settled(**kinds: list[dict[str, Any]]) -> ResolutionIndex:
    index = ResolutionIndex()
    for kind in ("pods", "nodes", "services", "endpointslices"):
        index.replace(kind, kinds.get(kind, []), 10 * S)
    index.settling = False
    return index


def names(rec: dict[str, Any] | None) -> tuple[str, str, str | None, str | None] | None:
    if rec is None:
        return None
    pod_name = rec["pod"]["metadata"]["name"] if rec["pod"] else None
    svc_name = rec["service"]["metadata"]["name"] if rec["service"] else None
    return rec["name"], rec["namespace"], pod_name, svc_name


def test_pod_service_node_and_unknown() -> None:
    index = settled(
        pods=[pod("shop", "cart-1", "10.244.1.20"), pod("shop", "debug", "10.244.1.30"),
              pod("mon", "exporter", "10.0.0.11", host_network=True)],
        nodes=[node("node-a", "10.0.0.11")],
        services=[service("shop", "cart", "10.96.0.20")],
        endpointslices=[eps("shop", "cart-x1", "cart", ["10.244.1.20"], [8080])],
    )  # fmt: skip
    now = 20 * S
    assert names(index.resolve("10.96.0.20", 80, now)) == ("cart.shop", "shop", None, "cart")
    assert names(index.resolve("10.96.0.20", 0, now)) == ("cart.shop", "shop", None, "cart")
    assert names(index.resolve("10.244.1.20", 8080, now)) == ("cart.shop", "shop", "cart-1", "cart")
    assert names(index.resolve("10.244.1.20", 0, now)) == ("cart.shop", "shop", "cart-1", "cart")
    rec = index.resolve("10.244.1.20", 8080, now)
    assert rec is not None and rec["endpointSlice"] == {
        "metadata": {"name": "cart-x1", "namespace": "shop"}
    }
    assert rec["service"] == {
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "type": "ClusterIP"},
    }
    assert names(index.resolve("10.244.1.30", 80, now)) == ("debug", "shop", "debug", None)
    # The hostNetwork pod's address is its node's: the node, never the pod.
    assert names(index.resolve("10.0.0.11", 9100, now)) == ("node-a", "", None, None)
    assert index.resolve("192.0.2.1", 80, now) is None


def test_the_record_is_in_kubesharks_shape_and_the_pod_cut_down() -> None:
    index = settled(pods=[pod("shop", "debug", "10.244.1.30", labels={"app": "debug"})])
    rec = index.resolve("10.244.1.30", 0, 20 * S)
    assert rec == {
        "endpointSlice": None,
        "name": "debug",
        "namespace": "shop",
        "pod": {
            "metadata": {
                "labels": {"app": "debug"},
                "name": "debug",
                "namespace": "shop",
                "uid": "uid-debug",
            },
            "spec": {"nodeName": "node-a"},
            "status": {"hostIP": "10.0.0.11", "podIP": "10.244.1.30"},
        },
        "service": None,
    }


def test_by_port_a_node_address_names_the_service_behind_it() -> None:
    index = settled(
        pods=[pod("mon", "exporter", "10.0.0.11", host_network=True)],
        nodes=[node("node-a", "10.0.0.11")],
        endpointslices=[eps("mon", "exp-1", "exporter", ["10.0.0.11"], [9100])],
    )
    assert names(index.resolve("10.0.0.11", 9100, 20 * S)) == (
        "exporter.mon",
        "mon",
        None,
        "exporter",
    )
    assert names(index.resolve("10.0.0.11", 22, 20 * S)) == ("node-a", "", None, None)
    assert names(index.resolve("10.0.0.11", 0, 20 * S)) == ("node-a", "", None, None)


def test_a_pod_behind_two_services_by_ip_alone_names_the_first_by_namespace_and_name() -> None:
    index = settled(
        pods=[pod("shop", "cart-1", "10.244.1.20")],
        endpointslices=[
            eps("shop", "zeta-1", "zeta", ["10.244.1.20"], [9090]),
            eps("shop", "alpha-1", "alpha", ["10.244.1.20"], [8080]),
        ],
    )
    assert names(index.resolve("10.244.1.20", 0, 20 * S)) == (
        "alpha.shop",
        "shop",
        "cart-1",
        "alpha",
    )
    assert names(index.resolve("10.244.1.20", 9090, 20 * S)) == (
        "zeta.shop",
        "shop",
        "cart-1",
        "zeta",
    )


def test_an_ip_handed_to_another_pod_resolves_by_time() -> None:
    index = settled(pods=[pod("shop", "old", "10.244.1.50")])
    index.delete("pods", pod("shop", "old", "10.244.1.50"), 30 * S)
    index.upsert("pods", pod("payments", "new", "10.244.1.50"), 40 * S)
    assert names(index.resolve("10.244.1.50", 0, 5 * S)) == (
        "old",
        "shop",
        "old",
        None,
    )  # before history
    assert names(index.resolve("10.244.1.50", 0, 29 * S)) == ("old", "shop", "old", None)
    assert index.resolve("10.244.1.50", 0, 35 * S) is None  # nobody had it then
    assert names(index.resolve("10.244.1.50", 0, 40 * S)) == ("new", "payments", "new", None)
    assert names(index.resolve("10.244.1.50", 0, 99 * S)) == ("new", "payments", "new", None)


def test_the_newest_claim_wins_and_the_older_takes_over_again() -> None:
    index = settled(pods=[pod("a", "old", "10.244.1.60")])
    index.upsert("pods", pod("b", "new", "10.244.1.60"), 20 * S)  # reported before old's deletion
    assert names(index.resolve("10.244.1.60", 0, 21 * S)) == ("new", "b", "new", None)
    index.upsert(
        "pods", pod("a", "old", "10.244.1.60", labels={"x": "y"}), 22 * S
    )  # a status update
    assert names(index.resolve("10.244.1.60", 0, 23 * S)) == ("new", "b", "new", None)
    index.delete("pods", pod("b", "new", "10.244.1.60"), 24 * S)
    assert names(index.resolve("10.244.1.60", 0, 25 * S)) == ("old", "a", "old", None)


def test_finished_pods_free_their_ip() -> None:
    index = settled(pods=[pod("jobs", "done", "10.244.1.70")])
    index.upsert("pods", pod("jobs", "done", "10.244.1.70", phase="Succeeded"), 20 * S)
    assert index.resolve("10.244.1.70", 0, 21 * S) is None
    assert names(index.resolve("10.244.1.70", 0, 19 * S)) == ("done", "jobs", "done", None)


def test_first_state_is_one_item_while_settling() -> None:
    """The first lists come one kind after another; the first item must be the whole state,
    or a replay older than the worker would resolve a pod without its Service."""
    index = ResolutionIndex()
    index.replace("pods", [pod("shop", "cart-1", "10.244.1.20")], 10 * S)
    index.replace("nodes", [], 11 * S)
    index.replace("services", [service("shop", "cart", "10.96.0.20")], 12 * S)
    index.replace("endpointslices", [eps("shop", "c-1", "cart", ["10.244.1.20"], [8080])], 13 * S)
    index.settling = False
    assert names(index.resolve("10.244.1.20", 0, 1 * S)) == ("cart.shop", "shop", "cart-1", "cart")
    assert index.counts()["history_items"] == 2  # one per address


def test_a_relist_replaces_and_deletes_what_is_gone() -> None:
    index = settled(pods=[pod("a", "p1", "10.244.2.1"), pod("a", "p2", "10.244.2.2")])
    index.replace("pods", [pod("a", "p2", "10.244.2.2"), pod("a", "p3", "10.244.2.3")], 50 * S)
    assert index.resolve("10.244.2.1", 0, 51 * S) is None
    assert names(index.resolve("10.244.2.3", 0, 51 * S)) == ("p3", "a", "p3", None)
    assert index.counts()["pods"] == 2


def test_a_service_update_reaches_the_records_behind_its_endpoints() -> None:
    index = settled(
        pods=[pod("shop", "cart-1", "10.244.1.20")],
        services=[service("shop", "cart", "10.96.0.20")],
        endpointslices=[eps("shop", "c-1", "cart", ["10.244.1.20"], [8080])],
    )
    changed = service("shop", "cart", "10.96.0.20")
    changed["spec"]["type"] = "NodePort"
    index.upsert("services", changed, 30 * S)
    rec = index.resolve("10.244.1.20", 8080, 31 * S)
    assert rec is not None and rec["service"]["spec"]["type"] == "NodePort"


def test_history_per_ip_is_bounded_and_keeps_the_newest() -> None:
    index = ResolutionIndex(history_per_ip=3)
    index.settling = False
    for i in range(6):
        index.upsert("pods", pod("ns", "p", "10.244.3.1", labels={"v": str(i)}), (10 + i) * S)
    assert index.counts()["history_items"] == 3
    rec = index.resolve("10.244.3.1", 0, 1 * S)  # before what is kept: the earliest kept
    assert rec is not None and rec["pod"]["metadata"]["labels"] == {"v": "3"}


def test_released_addresses_are_bounded_oldest_forgotten_first() -> None:
    index = ResolutionIndex(max_unowned_ips=2)
    index.settling = False
    for i in range(3):
        index.upsert("pods", pod("ns", f"p{i}", f"10.244.4.{i}"), 10 * S)
    for i in range(3):
        index.delete("pods", pod("ns", f"p{i}", f"10.244.4.{i}"), (20 + i) * S)
    counts = index.counts()
    assert (counts["ips"], counts["ips_unowned"], counts["history_forgotten"]) == (2, 2, 1)
    assert index.resolve("10.244.4.0", 0, 15 * S) is None  # forgotten
    assert names(index.resolve("10.244.4.2", 0, 15 * S)) == ("p2", "ns", "p2", None)


def test_ipv6_addresses_are_compared_in_the_form_entries_use() -> None:
    index = settled(pods=[pod("v6", "p", "fd00:0:0:0::0a")])
    assert names(index.resolve("fd00::a", 0, 20 * S)) == ("p", "v6", "p", None)


@pytest.mark.parametrize("kind", ["pods", "nodes", "services", "endpointslices"])
def test_objects_without_a_name_or_odd_fields_are_ignored(kind: str) -> None:
    index = settled()
    index.upsert(kind, {"metadata": {}}, 20 * S)
    index.upsert(
        kind, {"metadata": {"name": "x", "namespace": "y"}, "spec": {}, "status": {}}, 20 * S
    )
    assert index.counts()["ips"] == 0
    assert index.counts()["objects_rejected"] == 0


def test_objects_of_an_unexpected_shape_are_counted_not_raised() -> None:
    index = settled()
    odd = pod("ns", "p", "10.244.5.1")
    odd["metadata"]["labels"] = "not-a-map"
    index.upsert("pods", odd, 20 * S)
    index.replace("services", [{"metadata": "x"}, service("ns", "s", "10.96.5.5")], 20 * S)
    assert index.counts()["objects_rejected"] == 2
    assert names(index.resolve("10.96.5.5", 80, 21 * S)) == ("s.ns", "ns", None, "s")
