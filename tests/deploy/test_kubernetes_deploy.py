"""deploy/kubernetes applied for real: `kubectl apply -k` against a real kube-apiserver
(../shared/tools/kubernetes: v1.20.2 with its controller manager, no kubelet), then what the
cluster made of it: every object, a worker pod on every node whatever its taints, the pods'
priority and privileges, and RBAC that grants exactly what resolution and discovery read."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy_cluster import Cluster
from tests.support.manifests import build, container, copy_with_tokens, find

pytestmark = pytest.mark.kubernetes

NS = "kshark"
# What the base must create: a manifest that goes missing fails here, not in a user's cluster.
EXPECTED = {
    ("Namespace", "kshark"),
    ("PriorityClass", "kshark"),
    ("ServiceAccount", "kshark-worker"),
    ("ServiceAccount", "kshark-hub"),
    ("ClusterRole", "kshark-resolve"),
    ("ClusterRoleBinding", "kshark-resolve"),
    ("Role", "kshark-discover"),
    ("RoleBinding", "kshark-discover"),
    ("Secret", "kshark-tokens"),  # + kustomize's content hash
    ("DaemonSet", "kshark-worker"),
    ("Deployment", "kshark-hub"),
    ("Service", "kshark-hub"),
}
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
NODES = {"node-a": "10.250.0.1", "node-b": "10.250.0.2", "node-tainted": "10.250.0.3"}


@pytest.fixture(scope="module")
def applied(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Nodes (one tainted NoSchedule + NoExecute, as control-plane and dedicated nodes are),
    then `kubectl apply -k` of a copy of deploy/kubernetes with fresh tokens."""
    for name, ip in NODES.items():
        cluster.create_node(name, ip)
    cluster.kubectl(
        "taint", "node", "node-tainted", "dedicated=db:NoSchedule", "maintenance=yes:NoExecute"
    )
    base = copy_with_tokens(tmp_path_factory.mktemp("deploy"))
    res = cluster.kubectl("apply", "-k", str(base))
    return {"base": base, "objects": build(base), "apply_output": res.stdout}


def _wait_for(cluster: Cluster, what: str, predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_apply_creates_every_object(cluster: Cluster, applied: dict[str, Any]) -> None:
    built = {
        (o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "Secret" else
         o["metadata"]["name"])
        for o in applied["objects"]
    }  # fmt: skip
    assert built == EXPECTED
    for obj in applied["objects"]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        where = [] if kind in CLUSTER_SCOPED else ["-n", NS]
        got = cluster.get_json(kind.lower(), name, *where)
        assert got["metadata"]["name"] == name
        if kind not in CLUSTER_SCOPED:
            assert got["metadata"]["namespace"] == NS
    ns = cluster.get_json("namespace", NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    secret = cluster.get_json("secret", "-n", NS)["items"]
    (tokens,) = [s for s in secret if s["metadata"]["name"].startswith("kshark-tokens-")]
    assert set(tokens["data"]) == {"hub-token", "worker-token"}


def test_a_worker_pod_on_every_node_whatever_its_taints(
    cluster: Cluster, applied: dict[str, Any]
) -> None:
    def worker_pods() -> list[dict[str, Any]] | None:
        pods = cluster.get_json("pods", "-n", NS, "-l", "app.kubernetes.io/name=kshark-worker")[
            "items"
        ]
        return pods if len(pods) == len(NODES) else None

    pods = _wait_for(cluster, "a worker pod per node", worker_pods)
    # No scheduler runs here: the DaemonSet controller pins each pod to its node by affinity.
    nodes = set()
    for pod in pods:
        (term,) = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        (field,) = term["matchFields"]
        nodes.update(field["values"])
        # Resolved by the Priority admission plugin: the PriorityClass exists and applies.
        assert pod["spec"]["priority"] == 100000
        assert pod["spec"]["hostNetwork"] is True
        assert pod["metadata"]["annotations"]["kshark.io/api-port"] == "8897"
        c = container(pod, "worker")  # pods carry the same container spec
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
        assert c["resources"]["limits"] and c["resources"]["requests"]
    assert nodes == set(NODES)


def test_the_hub_deployment_makes_its_pod(cluster: Cluster, applied: dict[str, Any]) -> None:
    def hub_pods() -> list[dict[str, Any]] | None:
        pods = cluster.get_json("pods", "-n", NS, "-l", "app.kubernetes.io/name=kshark-hub")
        return pods["items"] or None

    (pod,) = _wait_for(cluster, "the hub pod", hub_pods)
    assert pod["spec"]["serviceAccountName"] == "kshark-hub"
    assert pod["spec"]["priority"] == 100000
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def _can(cluster: Cluster, sa: str, *args: str) -> bool:
    res = cluster.kubectl(
        "auth", "can-i", f"--as=system:serviceaccount:{NS}:{sa}", *args, check=False
    )
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stderr
    return answer == "yes"


READS = ("list", "watch")  # what kshark.k8s does: lists, then watches; never a get


def test_rbac_grants_exactly_what_resolution_and_discovery_read(
    cluster: Cluster, applied: dict[str, Any]
) -> None:
    # Workers resolve addresses cluster-wide.
    for resource in ("pods", "services", "nodes", "endpointslices.discovery.k8s.io"):
        for verb in READS:
            assert _can(cluster, "kshark-worker", verb, resource, "--all-namespaces"), (
                verb,
                resource,
            )
    # The hub discovers its own namespace's workers, nothing else.
    for verb in READS:
        assert _can(cluster, "kshark-hub", verb, "pods", "-n", NS)
    assert not _can(cluster, "kshark-hub", "list", "pods", "-n", "default")
    assert not _can(cluster, "kshark-hub", "list", "services", "-n", NS)
    # Read-only, and never secrets (the token Secret included) or anything else.
    for sa in ("kshark-worker", "kshark-hub"):
        assert not _can(cluster, sa, "get", "pods", "-n", NS)  # not needed: no more than that
        for verb in ("create", "update", "patch", "delete"):
            assert not _can(cluster, sa, verb, "pods", "-n", NS)
        assert not _can(cluster, sa, "get", "secrets", "-n", NS)
        assert not _can(cluster, sa, "list", "configmaps", "--all-namespaces")
        assert not _can(cluster, sa, "list", "deployments.apps", "--all-namespaces")


def test_the_example_overlay_applies(cluster: Cluster, applied: dict[str, Any]) -> None:
    overlay = Path(applied["base"]).parent / "overlays" / "example"
    objects = build(overlay)
    ds = find(objects, "DaemonSet", "kshark-worker")
    c = container(ds, "worker")
    assert c["image"] == "registry.example.com/kshark:0.1.0"
    (flt,) = [e["value"] for e in c["env"] if e["name"] == "KSHARK_CAPTURE_FILTER"]
    assert "not port 8897" in flt
    assert "--storage-limit=5GiB" in c["args"]
    # The base's other settings survive the patch.
    assert c["securityContext"]["capabilities"]["add"] == ["NET_RAW"]
    # Accepted by the API server (validation, admission), not persisted.
    res = cluster.kubectl("apply", "-k", str(overlay), "--dry-run=server", "-o", "json")
    assert {i["kind"] for i in json.loads(res.stdout)["items"]} >= {"DaemonSet", "Deployment"}
