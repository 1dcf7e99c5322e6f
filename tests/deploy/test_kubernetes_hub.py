"""The applied deployment at work: a worker pod of the DaemonSet, patched Ready at an address
where a real worker (the DaemonSet's command line, replaying a capture instead of capturing)
listens, is discovered by a hub run with the Deployment's command line and the hub
ServiceAccount's own credentials; with the tokens from the generated Secret, the probes and the
streams answer only with the token; the worker's name resolution, with the worker
ServiceAccount's credentials, syncs every kind without an error (RBAC grants what it reads)."""

from __future__ import annotations

import base64
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.support.deploy_cluster import Cluster
from tests.support.manifests import (
    PROBE,
    REPO,
    build,
    container,
    container_argv,
    container_env,
    copy_with_tokens,
    find,
)
from tests.support.rawhttp import free_port

VENV_BIN = Path(sys.executable).parent
DEMO_PCAP = REPO / "fixtures" / "demo.pcap"
NS = "kshark"
STEP_TIMEOUT_S = 60.0


pytestmark = pytest.mark.kubernetes


def _loopback_address() -> str:
    """A 127/8 address of its own, so that the worker can listen on the manifest's port 8897."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(100):
        addr = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
        with socket.socket() as s:
            try:
                s.bind((addr, 8897))
            except OSError:
                continue
        return addr
    raise RuntimeError("no free 127/8 address for port 8897")


def _wait(what: str, predicate: Any, timeout: float = STEP_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _localize(argv: list[str], replace: dict[str, str | None]) -> list[str]:
    """The manifest's command line with some flags pointed at local paths (None: dropped)."""
    out = [str(VENV_BIN / argv[0])]
    for arg in argv[1:]:
        flag = arg.split("=", 1)[0]
        if flag not in replace:
            out.append(arg)
        elif replace[flag] is not None:
            out.append(f"{flag}={replace[flag]}")
    return out


@pytest.fixture(scope="module")
def deployment(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("hub")
    base = copy_with_tokens(tmp)
    cluster.kubectl("apply", "-k", str(base))
    built = build(base)
    worker_ip = _loopback_address()
    cluster.create_node("node-a", worker_ip)
    pod = _wait(
        "the DaemonSet's pod",
        lambda: cluster.get_json("pods", "-n", NS, "-l", "app.kubernetes.io/name=kshark-worker")[
            "items"
        ],
    )[0]
    name = pod["metadata"]["name"]
    cluster.bind(NS, name, "node-a")
    # The tokens as the cluster holds them (the Secret kustomize generated).
    (secret,) = [
        s
        for s in cluster.get_json("secrets", "-n", NS)["items"]
        if s["metadata"]["name"].startswith("kshark-tokens-")
    ]
    tokens = {}
    for key in ("hub-token", "worker-token"):
        path = tmp / key
        path.write_bytes(base64.b64decode(secret["data"][key]))
        tokens[key] = path
    # The worker: the DaemonSet's command line on "node-a" (POD_IP = its loopback address),
    # replaying the demo capture instead of capturing.
    wc = container(find(built, "DaemonSet", "kshark-worker"), "worker")
    wenv = container_env(wc, {"status.podIP": worker_ip, "spec.nodeName": "node-a"})
    local = {
        "--iface": None,
        "--filter": None,
        "--data-dir": str(tmp / "data"),
        "--token-file": str(tokens["worker-token"]),
    }
    # In a pod it would find its ServiceAccount's token; here: the same token, as a kubeconfig.
    wkube = cluster.service_account_kubeconfig(NS, "kshark-worker", tmp / "worker.kubeconfig")
    wargv = [
        *_localize(container_argv(wc, wenv), local),
        "--pcap",
        str(DEMO_PCAP),
        "--kubeconfig",
        str(wkube),
    ]
    worker = subprocess.Popen(wargv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The hub: the Deployment's command line, with the hub ServiceAccount's credentials.
    hc = container(find(built, "Deployment", "kshark-hub"), "hub")
    henv = container_env(hc, {"metadata.namespace": NS})
    hub_port = free_port()
    local = {
        "--host": "127.0.0.1",
        "--port": str(hub_port),
        "--token-file": str(tokens["hub-token"]),
        "--worker-token-file": str(tokens["worker-token"]),
    }
    kubeconfig = cluster.service_account_kubeconfig(NS, "kshark-hub", tmp / "hub.kubeconfig")
    hargv = [*_localize(container_argv(hc, henv), local), "--kubeconfig", str(kubeconfig)]
    hub = subprocess.Popen(hargv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield {
            "cluster": cluster,
            "pod": name,
            "worker_ip": worker_ip,
            "hub_port": hub_port,
            "tokens": tokens,
            "worker": worker,
            "hub": hub,
            "built": built,
        }
    finally:
        for proc in (hub, worker):
            proc.terminate()
            proc.wait(10)


def _probe(port: int, token_file: Path, host: str = "127.0.0.1") -> int:
    return subprocess.run(
        [sys.executable, "-I", str(PROBE), str(port), str(token_file)],
        capture_output=True,
        timeout=30,
        env={**os.environ, "KSHARK_PROBE_HOST": host},
    ).returncode


def _status_code(host: str, port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probes_answer_only_with_the_token(deployment: dict) -> None:
    d = deployment
    tokens = d["tokens"]
    _wait("the worker's probe", lambda: _probe(8897, tokens["worker-token"], d["worker_ip"]) == 0)
    _wait("the hub's probe", lambda: _probe(d["hub_port"], tokens["hub-token"]) == 0)
    assert _probe(8897, tokens["hub-token"], d["worker_ip"]) == 1  # the other token: refused
    assert _probe(d["hub_port"], tokens["worker-token"]) == 1
    assert _status_code(d["worker_ip"], 8897, "/echo") == 401
    assert _status_code("127.0.0.1", d["hub_port"], "/echo") == 401
    assert _status_code("127.0.0.1", d["hub_port"], "/status") == 401


async def test_the_hub_discovers_the_ready_worker_pod_and_streams_it(deployment: dict) -> None:
    d = deployment
    d["cluster"].set_pod_running(NS, d["pod"], d["worker_ip"], d["worker_ip"])
    url = f"ws://127.0.0.1:{d['hub_port']}/api/wsFull"
    with trio.fail_after(STEP_TIMEOUT_S):
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(url) as ws:
                await ws.send_message("true")
                await ws.get_message()
        assert rejected.value.status_code == 401
        token = d["tokens"]["hub-token"].read_text().strip()
        headers = [(b"authorization", f"Bearer {token}".encode())]
        entries: list[dict] = []
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message(orjson.dumps({"query": "true"}).decode())
            while len(entries) < 24:
                frame = orjson.loads(await ws.get_message())
                if "worker" in frame and isinstance(frame["worker"], dict):
                    continue  # up/down frames
                entries.append(frame)
    assert {e["worker"] for e in entries} == {f"{d['worker_ip']}:8897"}
    assert {e["node"]["name"] for e in entries} == {"node-a"}


def _worker_status(d: dict) -> dict | None:
    token = d["tokens"]["worker-token"].read_text().strip()
    req = urllib.request.Request(
        f"http://{d['worker_ip']}:8897/status", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(orjson.loads(resp.read()))
    except OSError:
        return None


def test_resolution_reads_everything_it_needs_with_the_worker_service_account(
    deployment: dict,
) -> None:
    d = deployment
    status = _wait(
        "the resolver synced",
        lambda: (s := _worker_status(d)) and s["resolver"].get("synced") and s,
    )
    resolver = status["resolver"]
    assert resolver["last_error"] is None and resolver["failing"] == []
    assert set(resolver["objects"]) == {"pods", "services", "nodes", "endpointslices"}
    assert resolver["objects"]["nodes"] >= 1  # node-a, read with the worker's own token


def test_entries_name_the_node_by_its_node_name_and_never_by_the_worker_pod(
    deployment: dict, tmp_path: Path
) -> None:
    """Top-level `node.name` is the Node's name (the DaemonSet passes the downward API's
    spec.nodeName as --node-name), and resolution agrees with it: the node's own address names
    the Node, never the worker pod, which is hostNetwork and so reports that address as its
    podIP."""
    from scripts.make_k8s_fixtures import connection, pcap

    d = deployment
    cluster, ip = d["cluster"], d["worker_ip"]
    cluster.set_pod_running(NS, d["pod"], ip, ip)  # as the kubelet reports a hostNetwork pod
    pod = cluster.get_json("pods", "-n", NS, d["pod"])
    assert pod["spec"]["hostNetwork"] is True and pod["status"]["podIP"] == ip
    t0 = 1_767_261_600 * 1_000_000_000
    capture = tmp_path / "node.pcap"
    capture.write_bytes(
        pcap(
            connection(t0, (ip, 41000), ("192.0.2.10", 443), "/from-the-node")
            + connection(t0 + 10**9, ("192.0.2.11", 41001), (ip, 9100), "/to-the-node")
        )
    )
    # The DaemonSet's command line once more, replaying that capture on its own port and data.
    wc = container(find(d["built"], "DaemonSet", "kshark-worker"), "worker")
    wenv = container_env(wc, {"status.podIP": ip, "spec.nodeName": "node-a"})
    assert "--node-name=node-a" in container_argv(wc, wenv)
    local = {
        "--iface": None,
        "--filter": None,
        "--port": str(free_port()),
        "--data-dir": str(tmp_path / "data"),
        "--token-file": str(d["tokens"]["worker-token"]),
    }
    wkube = cluster.service_account_kubeconfig(NS, "kshark-worker", tmp_path / "w.kubeconfig")
    argv = [*_localize(container_argv(wc, wenv), local), "--pcap", str(capture)]
    done = subprocess.run(
        [*argv, "--kubeconfig", str(wkube), "--once"],
        capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = {
        e["request"]["path"]: e
        for e in (orjson.loads(f.read_bytes()) for f in (tmp_path / "data" / "entries").iterdir())
    }
    assert set(entries) == {"/from-the-node", "/to-the-node"}
    for e in entries.values():
        assert e["node"] == {"ip": ip, "name": "node-a"}
    for end in (entries["/from-the-node"]["src"], entries["/to-the-node"]["dst"]):
        assert (end["ip"], end["name"], end["namespace"]) == (ip, "node-a", "")
        assert end["pod"] is None and end["service"] is None  # not the worker pod
