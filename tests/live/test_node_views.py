"""`kshark-worker --iface any` on a Kubernetes node, for real: one request, one entry.

A node as a bridge CNI builds it (tests/support/netns.py `netns_node`: pods on veths on
bridge `cni0`, an uplink to a pod of another node) and a Service's ClusterIP as kube-proxy makes
it (nftables DNAT in the node's namespace). The worker runs in the node's namespace exactly as
deploy/kubernetes/worker.yaml starts it: its arguments and capture filter from the DaemonSet, as
uid 0 with no capability but CAP_NET_RAW. A pod then talks to another pod of the node (its
packets cross two veths), to the remote pod (a veth, the bridge, the uplink) and to the Service
(the same, with the addresses rewritten between the veth and the uplink): each request must be
one entry, although the capture saw it two or three times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from tests.support import netns as nh
from tests.support.manifests import (
    build,
    container,
    container_argv,
    container_env,
    copy_with_tokens,
    find,
)

pytestmark = pytest.mark.live

VENV_BIN = Path(sys.executable).parent
CLUSTER_IP = "10.213.250.10"
STEP_TIMEOUT_S = 20.0


@pytest.fixture(scope="module", autouse=True)
def _no_stale_namespaces() -> None:
    nh.remove_stale_namespaces()


@pytest.fixture
def node() -> Iterator[nh.NodeWithPods]:
    with nh.netns_node(pods=2) as n:
        # kube-proxy's rule for a Service, in nftables' words: ClusterIP:80 → the remote pod.
        rules = (
            "table ip nat {\n chain prerouting {\n  type nat hook prerouting priority -100;\n"
            f"  ip daddr {CLUSTER_IP} tcp dport 80 dnat to {n.remote_ip}:8080\n }}\n}}\n"
        )
        nh.ns_run(n.ns, ["nft", "-f", "-"], input=rules)
        yield n


def worker_argv(n: nh.NodeWithPods, data_dir: Path, token_file: Path) -> list[str]:
    """The DaemonSet's command line, as the kubelet would expand it on this node."""
    # kustomize needs the tokens make-tokens writes: build a copy of deploy/ that has them.
    base = copy_with_tokens(Path(tempfile.mkdtemp(dir=data_dir.parent)))
    worker = container(find(build(base), "DaemonSet", "kshark-worker"), "worker")
    env = container_env(worker, {"status.podIP": n.node_ip, "spec.nodeName": "node-a"})
    argv = container_argv(worker, env)
    local = {"--data-dir": str(data_dir), "--token-file": str(token_file)}
    out = [str(VENV_BIN / argv[0])]
    for arg in argv[1:]:
        flag, _, _ = arg.partition("=")
        out.append(f"{flag}={local[flag]}" if flag in local else arg)
    return out


# What the DaemonSet grants: uid 0, capabilities dropped but NET_RAW, no privilege escalation.
AS_THE_DAEMONSET = ("setpriv", "--bounding-set=-all,+net_raw", "--inh-caps=-all", "--no-new-privs")


def _api(n: nh.NodeWithPods, path: str, token: str) -> dict:
    res = nh.ns_run(
        n.ns,
        ["curl", "-sf", "-H", f"Authorization: Bearer {token}", f"http://{n.node_ip}:8897{path}"],
    )
    return json.loads(res.stdout)


def _wait_for_entries(n: nh.NodeWithPods, token: str, count: int) -> dict:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        status = _api(n, "/status", token)
        if status["entries"] >= count:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"worker made {status['entries']} entries, not {count}")
        time.sleep(0.05)


def _copies_of(pcap: Path, payload_start: bytes) -> int:
    with pcap.open("rb") as f:
        return sum(1 for _ts, frame in dpkt.pcap.Reader(f) if payload_start in frame)


def test_each_request_on_a_node_is_one_entry(node: nh.NodeWithPods, tmp_path: Path) -> None:
    n = node
    client, other = n.pods
    webroot = tmp_path / "www"
    webroot.mkdir()
    for name in ("pod-to-pod", "pod-to-remote", "pod-to-service"):
        (webroot / name).write_text(f"{name}\n")
    token_file = tmp_path / "worker-token"
    token_file.write_text("test-token-0123456789\n")
    token = "test-token-0123456789"
    data_dir = tmp_path / "data"
    server = [sys.executable, "-m", "http.server", "-d", str(webroot), "8080"]
    with (
        nh.ns_process(other.ns, server, stderr=subprocess.DEVNULL),
        nh.ns_process(n.remote_ns, server, stderr=subprocess.DEVNULL),
        nh.ns_process(
            n.ns,
            [*AS_THE_DAEMONSET, *worker_argv(n, data_dir, token_file)],
            stderr=subprocess.PIPE,
            text=True,
        ) as worker,
    ):
        nh.wait_for_tcp(client.ns, other.ip, 8080)
        nh.wait_for_tcp(client.ns, n.remote_ip, 8080)
        nh.wait_for_tcp(n.ns, n.node_ip, 8897)
        urls = [
            f"http://{other.ip}:8080/pod-to-pod",
            f"http://{n.remote_ip}:8080/pod-to-remote",
            f"http://{CLUSTER_IP}/pod-to-service",
        ]
        for url in urls:
            res = nh.ns_run(client.ns, ["curl", "-sf", url])
            assert res.stdout == url.rsplit("/", 1)[1] + "\n"
        # The worker's own API is used meanwhile (by _wait_for_entries, as by the hub): the
        # DaemonSet's filter keeps it out, or its /status requests would be entries too.
        status = _wait_for_entries(n, token, 3)
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
    entries = [json.loads(p.read_text()) for p in sorted((data_dir / "entries").glob("*.json"))]
    by_path = {e["request"]["path"]: e for e in entries}
    assert sorted(e["request"]["path"] for e in entries) == [
        "/pod-to-pod",
        "/pod-to-remote",
        "/pod-to-service",
    ]
    assert all(e["response"]["status"] == 200 for e in entries)
    # The Service's request is kept as the client pod sent it (before DNAT); the view after
    # DNAT (to the remote pod's 8080) was recognised as the same connection and counted.
    service = by_path["/pod-to-service"]
    assert (service["src"]["ip"], service["dst"]["ip"], service["dst"]["port"]) == (
        client.ip,
        CLUSTER_IP,
        "80",
    )
    assert status["pipeline"]["duplicate_views"] == 1
    # The premise: the capture really saw these requests more than once (same 4-tuple copies
    # are in the connection's pcap: the reassembler took them for retransmissions).
    pcaps = data_dir / "pcaps"
    assert _copies_of(pcaps / by_path["/pod-to-pod"]["stream"], b"GET /pod-to-pod ") == 2
    assert _copies_of(pcaps / by_path["/pod-to-remote"]["stream"], b"GET /pod-to-remote ") == 3


def test_the_daemonset_privileges_are_needed(node: nh.NodeWithPods, tmp_path: Path) -> None:
    # Without CAP_NET_RAW (its one capability) the worker refuses, clearly.
    token_file = tmp_path / "worker-token"
    token_file.write_text("t")
    without = ("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs")
    res = nh.ns_run(
        node.ns, [*without, *worker_argv(node, tmp_path / "data", token_file)], check=False
    )
    assert res.returncode == 2
    assert "CAP_NET_RAW" in res.stderr
