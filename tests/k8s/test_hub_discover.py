"""`kshark-hub --discover NAMESPACE/SELECTOR` against the real control plane and real workers.

Each worker pod is a Pod object whose status the test patches to an address where a real
`kshark-worker` process listens (127.0.0.2, .3, .4: all loopback), with its port in the
`kshark.io/api-port` annotation. The hub, a real `kshark-hub` process, must stream the Ready
ones, ignore the rest (not Ready, not matching the selector), drop a pod that is deleted or
starts terminating with a `{"worker": …, "state": "down"}` frame, and stream a pod that joins
from its first entry.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.hub import VENV_BIN, open_client
from tests.support.k8s_cluster import TRAFFIC, KubeApi, Scenario
from tests.support.k8s_resolver import in_thread
from tests.support.rawhttp import get

NS = "kshark-discover"
LABELS = {"app.kubernetes.io/name": "kshark-worker"}
SELECTOR = "app.kubernetes.io/name=kshark-worker"
ENTRIES = 10  # fixtures/k8s/traffic.pcap
STEP_S = 60.0


class Proc:
    """A kshark process with its stderr in a file; `port` read from its "listening" line."""

    def __init__(self, argv: list[str], log: Path, listening: str) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f
            )
        deadline = time.monotonic() + STEP_S
        while not (m := re.search(listening, log.read_text(errors="replace"))):
            assert self.proc.poll() is None, f"exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"not listening: {log.read_text()}"
            time.sleep(0.02)
        self.port = int(m.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_worker(tmp: Path, host: str) -> tuple[Proc, str]:
    w = Proc(
        [str(VENV_BIN / "kshark-worker"), "--pcap", str(TRAFFIC), "--no-resolve", "--host", host,
         "--port", "0", "--data-dir", str(tmp / host)],
        tmp / f"{host}.log",
        r"api listening on \S+ port (\d+)",
    )  # fmt: skip
    address = f"{host}:{w.port}"
    deadline = time.monotonic() + STEP_S
    while True:
        with urllib.request.urlopen(f"http://{address}/status", timeout=STEP_S) as r:
            if json.loads(r.read())["store"]["entries_written"] >= ENTRIES:
                return w, address
        assert time.monotonic() < deadline
        time.sleep(0.05)


def worker_pod(api: KubeApi, name: str, ip: str, port: int, *, ready: bool = True,
               labels: dict[str, str] = LABELS) -> None:  # fmt: skip
    api.pod(NS, name, labels, annotations={"kshark.io/api-port": str(port)})
    api.run_pod(NS, name, "node-a", ip, "10.0.0.11", ready=ready)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


def from_worker(entries: list[dict[str, Any]], address: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["worker"] == address]


async def test_hub_streams_the_ready_worker_pods_and_follows_them(
    scenario: Scenario, tmp_path: Path, procs: list[Proc]
) -> None:
    cluster = scenario.cluster
    api = cluster.api
    await in_thread(api.namespace, NS)
    w1, a1 = await in_thread(start_worker, tmp_path, "127.0.0.2")
    procs.append(w1)
    w2, a2 = await in_thread(start_worker, tmp_path, "127.0.0.3")
    procs.append(w2)
    await in_thread(worker_pod, api, "worker-1", "127.0.0.2", w1.port)
    await in_thread(worker_pod, api, "worker-2", "127.0.0.3", w2.port)
    # Not streamed: a worker pod that is not Ready, and a Ready pod the selector does not match.
    await in_thread(worker_pod, api, "worker-starting", "127.0.0.5", 30001, ready=False)
    await in_thread(worker_pod, api, "not-a-worker", "127.0.0.6", 30001, labels={"app": "other"})

    hub = await in_thread(
        Proc,
        [str(VENV_BIN / "kshark-hub"), "--discover", f"{NS}/{SELECTOR}",
         "--kubeconfig", str(cluster.kubeconfig), "--port", "0"],
        tmp_path / "hub.log",
        r"hub listening on \S+:(\d+)",
    )  # fmt: skip
    procs.append(hub)

    with trio.fail_after(STEP_S):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.until(
                lambda c: (
                    len(from_worker(c.entries, a1)) == ENTRIES
                    and len(from_worker(c.entries, a2)) == ENTRIES
                )
            )
            assert client.state_of(a1) == client.state_of(a2) == "up"
            status = (await get(hub.port, "/status")).json()
            discovery = status["discovery"]
            assert discovery["workers"] == [a1, a2]
            assert discovery["skipped"] == {"worker-starting": "not Ready"}
            assert discovery["watch"]["state"] == "watching"
            assert {w["id"]: w["sources"] for w in status["workers"]} == {
                a1: ["discover"], a2: ["discover"],
            }  # fmt: skip

            # A deleted pod: dropped, with a down frame.
            await in_thread(api.delete, f"/api/v1/namespaces/{NS}/pods/worker-1", force=True)
            await client.until(lambda c: c.state_of(a1) == "down")
            # A pod that starts terminating (graceful delete; no kubelet ever confirms it).
            await in_thread(api.delete, f"/api/v1/namespaces/{NS}/pods/worker-2")
            await client.until(lambda c: c.state_of(a2) == "down")
            down = [s for s in client.states if s["state"] == "down"]
            assert [s["id"] for s in down] == [a1, a2]

            # A new pod joins: streamed from its first entry.
            w3, a3 = await in_thread(start_worker, tmp_path, "127.0.0.4")
            procs.append(w3)
            await in_thread(worker_pod, api, "worker-3", "127.0.0.4", w3.port)
            await client.until(lambda c: len(from_worker(c.entries, a3)) == ENTRIES)
            assert client.state_of(a3) == "up"
            # Nothing twice, and nothing from the pods that left after they left.
            ids = [e["id"] for e in client.entries]
            assert len(ids) == len(set(ids)) == 3 * ENTRIES
            status = (await get(hub.port, "/status")).json()
            assert status["discovery"]["workers"] == [a3]
            assert status["discovery"]["skipped"] == {
                "worker-2": "terminating", "worker-starting": "not Ready",
            }  # fmt: skip


def test_discover_without_a_cluster_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(VENV_BIN / "kshark-hub"), "--discover", "kshark/app=w"],
        capture_output=True, text=True, timeout=STEP_S,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "kshark-hub: --discover needs a cluster: --kubeconfig PATH, KUBECONFIG, or running in a "
        "pod with a service account"
    )
    bad = subprocess.run(
        [str(VENV_BIN / "kshark-hub"), "--discover", "NotANamespace/app=w", "--kubeconfig", "x"],
        capture_output=True, text=True, timeout=STEP_S,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "kshark-hub: --discover: 'NotANamespace/app=w': 'NotANamespace' is not a namespace name"
    )
