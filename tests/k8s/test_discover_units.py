"""kshark.hub.discover without a cluster: the --discover value, and which pods are workers."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from kshark.hub.discover import DiscoverSpec, Discovery, parse_discover, pod_worker
from kshark.hub.workers import WorkerSet


def worker_pod(name: str, ip: str | None = "10.244.1.5", *, ready: bool = True,
               phase: str = "Running", port: str | None = None,
               deleting: bool = False) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "kshark"}
    if port is not None:
        meta["annotations"] = {"kshark.io/api-port": port}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


def test_parse_discover() -> None:
    assert parse_discover("kshark/app.kubernetes.io/name=kshark-worker") == DiscoverSpec(
        "kshark", "app.kubernetes.io/name=kshark-worker"
    )
    assert parse_discover("kshark/") == DiscoverSpec("kshark", "")
    for bad in ("kshark", "/app=x", "Kshark/app=x", "-x/app=y"):
        with pytest.raises(ValueError, match=r"NAMESPACE/LABEL_SELECTOR|not a namespace name"):
            parse_discover(bad)


@pytest.mark.parametrize(
    ("pod", "want"),
    [
        (worker_pod("w"), ("10.244.1.5:30001", None)),
        (worker_pod("w", port="30123"), ("10.244.1.5:30123", None)),
        (worker_pod("w", ip="fd00::0:5"), ("[fd00::5]:30001", None)),
        (worker_pod("w", ready=False), (None, "not Ready")),
        (worker_pod("w", phase="Pending"), (None, "phase Pending")),
        (worker_pod("w", deleting=True), (None, "terminating")),
        (worker_pod("w", ip=None), (None, "no podIP")),
        (
            worker_pod("w", port="http"),
            (None, "annotation kshark.io/api-port='http' is not a port"),
        ),
    ],
    ids=[
        "default-port",
        "annotated",
        "ipv6",
        "not-ready",
        "pending",
        "terminating",
        "no-ip",
        "bad-port",
    ],
)
def test_which_pods_are_workers(pod: dict[str, Any], want: tuple[str | None, str | None]) -> None:
    assert pod_worker(pod, 30001) == want


async def test_the_discovered_set_follows_the_pods_and_combines_with_the_command_line() -> None:
    workers = WorkerSet(["10.9.9.9:30001"])
    d = Discovery(workers, DiscoverSpec("kshark", ""), 30001)
    d.replace([worker_pod("b", "10.244.1.6"), worker_pod("a", "10.244.1.5"),
               worker_pod("c", "10.244.1.7", ready=False)], 0)  # fmt: skip
    assert workers.addresses == ["10.9.9.9:30001", "10.244.1.5:30001", "10.244.1.6:30001"]
    assert workers.info["10.244.1.5:30001"].sources == {"discover"}
    assert d.skipped == {"c": "not Ready"}
    version = workers.version
    d.delete(worker_pod("a", "10.244.1.5"), 0)
    with trio.fail_after(1):
        await workers.wait_changed(version)
    assert workers.addresses == ["10.9.9.9:30001", "10.244.1.6:30001"]
    d.upsert(worker_pod("b", "10.244.1.6", deleting=True), 0)
    assert workers.addresses == ["10.9.9.9:30001"]
    assert d.status()["skipped"] == {"b": "terminating", "c": "not Ready"}
