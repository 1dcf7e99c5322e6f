"""Worker discovery: the hub watches the worker pods itself (`--discover NAMESPACE/SELECTOR`).

`kshark-hub --discover kshark/app.kubernetes.io/name=kshark-worker` lists and watches the pods
of that namespace that match the label selector (one list+watch, kshark/k8s/listwatch.py: the
same resuming, 410 and backoff rules as the resolver's) and keeps the discovered part of the
hub's WorkerSet equal to the pods that are **Ready and not terminating**: `status.phase`
Running, the `Ready` condition True, no `metadata.deletionTimestamp`, a `status.podIP`. A
worker's address is that IP (IPv6 in brackets) and the port from the pod's `kshark.io/api-port`
annotation, else `--discover-port` (default the worker's default, 30001).

What follows from the WorkerSet (stream.py, relay.py): every open client stream starts a relay
for a pod that joins — a new worker's store is younger than the stream, so it is streamed from
its first entry — and drops the relay of one that leaves, telling JSON-frame clients
`{"worker": {"id": …, "state": "down", …}}`; the stream keeps that worker's position, so a pod
that comes back on the same address resumes after the last entry relayed.

While the API cannot be reached (or answers with an error) the last known set is kept: an API
server restart must not disconnect every client from every worker. /status shows the state under
"discovery" (the list+watch's state, the pods seen, the workers they give, and pods skipped with
the reason).

Needs RBAC `list` and `watch` on `pods` in that namespace (a Role is enough).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import trio

from kshark.hub.workers import WorkerSet, parse_address
from kshark.k8s.api import ApiClient
from kshark.k8s.config import ClusterConfig
from kshark.k8s.listwatch import ApiPath, ListWatch

log = logging.getLogger("kshark.hub")

PORT_ANNOTATION = "kshark.io/api-port"
DEFAULT_WORKER_PORT = 30001  # kshark-worker --port's default
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a DNS label, as Kubernetes wants


@dataclass(frozen=True)
class DiscoverSpec:
    namespace: str
    selector: str  # a Kubernetes label selector; "" selects every pod of the namespace


def parse_discover(text: str) -> DiscoverSpec:
    """`NAMESPACE/LABEL_SELECTOR` → DiscoverSpec; ValueError with a message for users. The first
    `/` ends the namespace (namespaces have none; label keys may: app.kubernetes.io/name=x)."""
    namespace, sep, selector = text.strip().partition("/")
    if not sep or not namespace:
        raise ValueError(f"{text!r}: want NAMESPACE/LABEL_SELECTOR, e.g. kshark/app=kshark-worker")
    if len(namespace) > 63 or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"{text!r}: {namespace!r} is not a namespace name")
    return DiscoverSpec(namespace, selector.strip())


def pod_worker(pod: dict[str, Any], default_port: int) -> tuple[str | None, str | None]:
    """(the worker address this pod serves at, None) when it is Ready and not terminating;
    (None, why not) otherwise."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return None, "terminating"
    if status.get("phase") != "Running":
        return None, f"phase {status.get('phase') or 'unknown'}"
    ready = any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if not ready:
        return None, "not Ready"
    ip = status.get("podIP")
    try:
        addr = ipaddress.ip_address(str(ip))
    except ValueError:
        return None, "no podIP"
    port = default_port
    annotated = (meta.get("annotations") or {}).get(PORT_ANNOTATION)
    if annotated is not None:
        text = str(annotated).strip()
        if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
            return None, f"annotation {PORT_ANNOTATION}={annotated!r} is not a port"
        port = int(text)
    host = f"[{addr.compressed}]" if addr.version == 6 else addr.compressed
    return parse_address(f"{host}:{port}"), None


class Discovery:
    """The list+watch's sink: pods in, the WorkerSet's discovered addresses out."""

    def __init__(self, workers: WorkerSet, spec: DiscoverSpec, default_port: int) -> None:
        self.workers = workers
        self.spec = spec
        self.default_port = default_port
        self._pods: dict[str, dict[str, Any]] = {}  # name → the pod's last object
        self.skipped: dict[str, str] = {}  # pod name → why it is not a worker now
        self.loop: ListWatch | None = None
        self.updated_at: float | None = None

    # -- Sink ----------------------------------------------------------------------------------

    def replace(self, objects: list[dict[str, Any]], now_ns: int) -> None:
        self._pods = {self._name(o): o for o in objects}
        self._apply()

    def upsert(self, obj: dict[str, Any], now_ns: int) -> None:
        self._pods[self._name(obj)] = obj
        self._apply()

    def delete(self, obj: dict[str, Any], now_ns: int) -> None:
        self._pods.pop(self._name(obj), None)
        self._apply()

    @staticmethod
    def _name(pod: dict[str, Any]) -> str:
        return str((pod.get("metadata") or {}).get("name") or "")

    def _apply(self) -> None:
        addresses: dict[str, str] = {}  # address → pod, in pod-name order
        skipped: dict[str, str] = {}
        for name in sorted(self._pods):
            address, why = pod_worker(self._pods[name], self.default_port)
            if address is None:
                skipped[name] = why or "not a worker"
            elif address in addresses:
                skipped[name] = f"same address as pod {addresses[address]}"
            else:
                addresses[address] = name
        if skipped != self.skipped:
            for name, why in skipped.items():
                if self.skipped.get(name) != why:
                    log.info("pod %s/%s is not streamed: %s", self.spec.namespace, name, why)
        self.skipped = skipped
        self.updated_at = time.time()
        added, removed = self.workers.set_discovered_workers(list(addresses))
        for address in added:
            log.info("worker %s added (pod %s)", address, addresses[address])
        for address in removed:
            log.info("worker %s removed (its pod left, or is not Ready)", address)

    # -- the service ---------------------------------------------------------------------------

    async def run(
        self,
        config: ClusterConfig,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        params = {"labelSelector": self.spec.selector} if self.spec.selector else {}
        path = ApiPath("v1", f"/api/v1/namespaces/{self.spec.namespace}/pods")
        async with ApiClient(config) as client:
            self.loop = ListWatch(client, "pods", [path], self, params=params)
            log.info(
                "discovering workers: pods in %s matching %r (%s)",
                self.spec.namespace,
                self.spec.selector,
                config.source,
            )
            task_status.started()
            await self.loop.run()

    def status(self) -> dict[str, Any]:
        return {
            "namespace": self.spec.namespace,
            "selector": self.spec.selector,
            "default_port": self.default_port,
            "pods": len(self._pods),
            "workers": list(self.workers.discovered),
            "skipped": dict(self.skipped),
            "watch": self.loop.status.as_dict() if self.loop is not None else None,
        }
