"""A real Kubernetes control plane for the tests, and what they do to it by hand.

`KubeCluster.start(dir)` runs ../shared/tools/kubernetes/cluster.sh (etcd + kube-apiserver +
kube-controller-manager v1.20 on loopback, free ports) and `KubeApi` drives its API with an admin
token — what kubectl would do, in Python, so the tests need no kubectl. Nothing runs pods there:
a test binds each pod to a node and patches its status (IP, Ready) itself, and the controller
manager then fills the EndpointSlices.

`build_scenario` creates fixtures/k8s/scenario.json's cluster (scripts/make_k8s_fixtures.py).
Waits poll the API state with a deadline (the state the tests wait for is on the server).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO.parent / "shared" / "tools" / "kubernetes" / "cluster.sh"
SCENARIO = REPO / "fixtures" / "k8s" / "scenario.json"
TRAFFIC = REPO / "fixtures" / "k8s" / "traffic.pcap"
ADMIN_TOKEN = "admintoken"  # cluster.sh's admin user
# How long one step on the cluster may take (a start is ~8-15 s on a busy machine).
STEP_S = 60.0
START_S = 180.0

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = STEP_S) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> tuple[int, int]:
    """(API_PORT, ETCD_PORT) for cluster.sh: free now, and ETCD_PORT+1 free too (etcd's peer
    port). Another engineer's or test's cluster may hold the defaults."""
    for _ in range(200):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            api, etcd = a.getsockname()[1], b.getsockname()[1]
        if etcd < 65535 and _bindable(etcd + 1) and api != etcd + 1:
            return api, etcd
    raise AssertionError("no free ports for a test cluster")


class KubeApi:
    """Just enough of the Kubernetes API for the tests (sync, admin or any bearer token)."""

    def __init__(self, server: str, token: str = ADMIN_TOKEN) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server,
            verify=False,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
                ok: tuple[int, ...] = (200, 201, 202)) -> dict[str, Any]:  # fmt: skip
        r = self.http.request(
            method,
            path,
            content=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": ctype},
        )
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else {}

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, obj)

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str, force: bool = False) -> dict[str, Any]:
        body = {"gracePeriodSeconds": 0} if force else None
        return self.request("DELETE", path, body, ok=(200, 202, 404))

    # -- objects -------------------------------------------------------------------------------

    def namespace(self, name: str) -> None:
        self.create("/api/v1/namespaces", {"metadata": {"name": name}})

    def node(self, name: str, ip: str) -> None:
        self.create("/api/v1/nodes", {"metadata": {"name": name}})
        self.patch(
            f"/api/v1/nodes/{name}/status",
            {"status": {"addresses": [{"type": "InternalIP", "address": ip},
                                      {"type": "Hostname", "address": name}]}},
        )  # fmt: skip

    def pod(self, ns: str, name: str, labels: dict[str, str], *, host_network: bool = False,
            annotations: dict[str, str] | None = None, port: int = 8080) -> dict[str, Any]:  # fmt: skip
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if annotations:
            meta["annotations"] = annotations
        return self.create(
            f"/api/v1/namespaces/{ns}/pods",
            {"metadata": meta, "spec": pod_spec(port, host_network)},
        )

    def deployment(self, ns: str, name: str, replicas: int, port: int) -> None:
        labels = {"app": name}
        self.create(
            f"/apis/apps/v1/namespaces/{ns}/deployments",
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec(port)},
                },
            },
        )

    def service(self, ns: str, name: str, cluster_ip: str, port: int, target: int) -> None:
        self.create(
            f"/api/v1/namespaces/{ns}/services",
            {
                "metadata": {"name": name},
                "spec": {
                    "clusterIP": cluster_ip,
                    "selector": {"app": name},
                    "ports": [{"name": "http", "port": port, "targetPort": target}],
                },
            },
        )

    def bind(self, ns: str, pod: str, node: str) -> None:
        self.create(
            f"/api/v1/namespaces/{ns}/pods/{pod}/binding",
            {
                "metadata": {"name": pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
        )

    def run_pod(self, ns: str, pod: str, node: str, ip: str, host_ip: str,
                ready: bool = True) -> dict[str, Any]:  # fmt: skip
        """What a kubelet would report: bound to `node`, Running with `ip`, Ready or not."""
        current = self.get(f"/api/v1/namespaces/{ns}/pods/{pod}")
        if not current["spec"].get("nodeName"):
            self.bind(ns, pod, node)
        flag = "True" if ready else "False"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return self.patch(
            f"/api/v1/namespaces/{ns}/pods/{pod}/status",
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": host_ip,
                    "startTime": now,
                    "conditions": [
                        {"type": c, "status": flag, "lastTransitionTime": now}
                        for c in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                    ],
                }
            },
        )

    def pods(self, ns: str, selector: str = "") -> list[dict[str, Any]]:
        q = f"?labelSelector={selector}" if selector else ""
        items: list[dict[str, Any]] = self.get(f"/api/v1/namespaces/{ns}/pods{q}")["items"]
        return items

    def slice_ips(self, ns: str, service: str) -> list[str]:
        items = self.get(
            f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices"
            f"?labelSelector=kubernetes.io/service-name={service}"
        )["items"]
        return sorted(a for s in items for e in s.get("endpoints") or [] for a in e["addresses"])

    def service_account_token(self, ns: str, name: str) -> str:
        """The token the controller manager made for a ServiceAccount (1.20 still makes one)."""

        def secret() -> dict[str, Any] | None:
            sa = self.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}")
            for ref in sa.get("secrets") or []:
                s = self.get(f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
                if (s.get("data") or {}).get("token"):
                    return s
            return None

        found = wait_until(f"a token for serviceaccount {ns}/{name}", secret)
        return base64.b64decode(found["data"]["token"]).decode()


def pod_spec(port: int, host_network: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "example.invalid/app:1", "ports": [{"containerPort": port}]}
        ],
        "terminationGracePeriodSeconds": 30,
    }
    if host_network:
        spec["hostNetwork"] = True
    return spec


def _exited(pid: int) -> bool:
    """Gone, or a zombie (cluster.sh's children are reparented to an init that may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def write_kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]\n'
        f"users: [{{name: u, user: {{token: {token}}}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    return path


def grant(api: Any, name: str, resources: list[tuple[str, str]], subject: tuple[str, str]) -> None:
    """A ClusterRole with list+watch on `resources` ((group, resource)) bound to a
    ServiceAccount (namespace, name)."""
    rules = [
        {"apiGroups": [group], "resources": [resource], "verbs": ["list", "watch"]}
        for group, resource in resources
    ]
    api.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {"metadata": {"name": name}, "rules": rules},
    )
    api.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "namespace": subject[0], "name": subject[1]}],
        },
    )


def service_account_kubeconfig(cluster: KubeCluster, ns: str, name: str, path: Path) -> Path:
    api = cluster.api
    if not any(n["metadata"]["name"] == ns for n in api.get("/api/v1/namespaces")["items"]):
        api.namespace(ns)
    api.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}})
    return write_kubeconfig(path, cluster.server, api.service_account_token(ns, name))


@dataclass
class KubeCluster:
    dir: Path
    api_port: int
    etcd_port: int
    api: KubeApi = field(init=False)

    def __post_init__(self) -> None:
        self.api = KubeApi(self.server)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @classmethod
    def start(cls, directory: Path) -> KubeCluster:
        api_port, etcd_port = free_ports()
        env = {**os.environ, "API_PORT": str(api_port), "ETCD_PORT": str(etcd_port)}
        out = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(directory)],
            env=env, capture_output=True, text=True, timeout=START_S, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if out.returncode != 0:
            subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], timeout=60)
            raise AssertionError(f"cluster.sh start failed: {out.stderr[-2000:]}")
        cluster = cls(directory, api_port, etcd_port)
        # The controller manager makes the default ServiceAccount-less namespaces usable at once;
        # wait until it answers lists (RBAC caches warm).
        wait_until("the API server", lambda: cluster.api.get("/api/v1/namespaces")["items"])
        return cluster

    def stop(self) -> None:
        self.api.close()
        subprocess.run(
            ["bash", str(CLUSTER_SH), "stop", str(self.dir)], timeout=120, capture_output=True
        )

    def ready(self) -> bool:
        try:
            r = self.api.http.get("/readyz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.text.strip() == "ok"

    def stop_apiserver(self) -> list[str]:
        """Kill the apiserver, as a crash would; returns its command line (start_apiserver).

        SIGKILL, not SIGTERM: on SIGTERM this apiserver keeps its open watch streams for its
        60 s shutdown timeout before it goes. The client sees the same broken stream either way,
        a minute sooner this way."""
        pid = int((self.dir / "apiserver.pid").read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGKILL)
        wait_until("the apiserver to exit", lambda: _exited(pid))
        return [a.decode() for a in argv]

    def start_apiserver(self, argv: list[str]) -> None:
        with open(self.dir / "apiserver.log", "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        (self.dir / "apiserver.pid").write_text(str(proc.pid))
        wait_until("the apiserver to be ready again", self.ready, START_S)


# ---- the scenario of fixtures/k8s -------------------------------------------------------------


@dataclass
class Scenario:
    """fixtures/k8s's cluster built on a KubeCluster (tests/k8s/conftest.py's `scenario`)."""

    cluster: KubeCluster
    spec: dict[str, Any]  # fixtures/k8s/scenario.json
    pod_by_ip: dict[str, str]  # the names the cluster gave the scenario's pods


def load_scenario() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCENARIO.read_text())
    return data


def build_scenario(api: KubeApi, sc: dict[str, Any]) -> dict[str, str]:
    """Create the scenario's cluster; returns pod IP → pod name (of the non-hostNetwork pods)."""
    nodes: dict[str, str] = sc["nodes"]
    for name, ip in nodes.items():
        api.node(name, ip)
    for ns in sc["namespaces"]:
        api.namespace(ns)
    for svc in sc["services"]:
        api.service(svc["namespace"], svc["name"], svc["clusterIP"], svc["port"], svc["targetPort"])
    for d in sc["deployments"]:
        api.deployment(d["namespace"], d["name"], len(d["replicas"]), d["port"])
    for p in sc["pods"]:
        api.pod(p["namespace"], p["name"], {"app": p["name"]}, host_network=p["hostNetwork"])
    by_ip: dict[str, str] = {}
    for d in sc["deployments"]:
        want = len(d["replicas"])
        pods = wait_until(
            f"the pods of deployment {d['name']}",
            lambda d=d, want=want: (
                ps if len(ps := api.pods(d["namespace"], f"app={d['name']}")) == want else None
            ),
        )
        names = sorted(p["metadata"]["name"] for p in pods)
        for name, (node, ip) in zip(names, d["replicas"], strict=True):
            api.run_pod(d["namespace"], name, node, ip, nodes[node])
            by_ip[ip] = name
    for p in sc["pods"]:
        api.run_pod(p["namespace"], p["name"], p["node"], p["ip"], nodes[p["node"]])
        if not p["hostNetwork"]:
            by_ip[p["ip"]] = p["name"]
    # The controller manager fills each Service's EndpointSlice from the Ready pods it selects.
    for svc in sc["services"]:
        ns, name = svc["namespace"], svc["name"]
        want_ips = sorted(
            [ip for d in sc["deployments"] if d["name"] == name for _, ip in d["replicas"]]
            + [p["ip"] for p in sc["pods"] if p["name"] == name]
        )
        wait_until(
            f"the EndpointSlice of {ns}/{name}",
            lambda ns=ns, name=name, want_ips=want_ips: api.slice_ips(ns, name) == want_ips,
        )
    return by_ip
