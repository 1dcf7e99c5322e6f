"""A real Kubernetes control plane for the deployment tests: ../shared/tools/kubernetes/cluster.sh
(etcd + kube-apiserver + kube-controller-manager v1.20.2 on loopback; no kubelet, no scheduler).

`Cluster.start(dir)` picks free ports (another test or engineer may run a cluster too), waits
until the API answers, and `kubectl(...)` runs Debian's (or any) kubectl against it. What a
kubelet and a scheduler would do, tests do by hand: `bind` a pod to a node, `set_pod_running`
patches its status (phase, IPs, Ready).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO.parent / "shared" / "tools" / "kubernetes" / "cluster.sh"
START_TIMEOUT_S = 120.0  # ~8 s on an idle machine; the suite may run beside others
KUBECTL_TIMEOUT_S = 60.0


def available() -> str | None:
    """Why the cluster cannot run here, or None."""
    if not CLUSTER_SH.is_file():
        return f"no {CLUSTER_SH}"
    for tool in ("kubectl", "etcd", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup installs it)"
    return None


def _free_port(consecutive: int = 1) -> int:
    """A port p such that p..p+consecutive-1 are all free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + consecutive > 65535:
            continue
        ok = True
        for extra in range(1, consecutive):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + extra))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free ports")


@dataclass
class Cluster:
    dir: Path
    kubeconfig: Path
    api_port: int

    @classmethod
    def start(cls, state_dir: Path) -> Cluster:
        api_port = _free_port()
        etcd_port = _free_port(2)  # etcd also listens on ETCD_PORT+1 (peers)
        env = {**os.environ, "API_PORT": str(api_port), "ETCD_PORT": str(etcd_port)}
        res = subprocess.run(
            [str(CLUSTER_SH), "start", str(state_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if res.returncode != 0:
            subprocess.run([str(CLUSTER_SH), "stop", str(state_dir)], capture_output=True)
            raise RuntimeError(f"cluster.sh start failed: {res.stderr.strip()[-2000:]}")
        cluster = cls(state_dir, Path(res.stdout.strip().splitlines()[-1]), api_port)
        cluster._wait_for_default_service_account()
        return cluster

    def stop(self) -> None:
        subprocess.run([str(CLUSTER_SH), "stop", str(self.dir)], capture_output=True, timeout=60)

    def _wait_for_default_service_account(self) -> None:
        # The controller manager is up once it made the default namespace's ServiceAccount.
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            res = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"controller manager not up: {res.stderr}")
            time.sleep(0.2)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=KUBECTL_TIMEOUT_S,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res

    def patch_status(self, path: str, patch: dict[str, Any]) -> None:
        """A merge patch of a status subresource, straight to the API: `kubectl patch
        --subresource=status` exists only from kubectl 1.24 on, and Debian's is 1.20."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        (user,) = config["users"]
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.api_port}{path}",
            data=json.dumps(patch).encode(),
            method="PATCH",
            headers={
                "Authorization": f"Bearer {user['user']['token']}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the test cluster's self-signed serving certificate
        with urllib.request.urlopen(req, context=ctx, timeout=KUBECTL_TIMEOUT_S) as resp:
            resp.read()

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def create_node(self, name: str, internal_ip: str) -> None:
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
        )
        status = {
            "status": {
                "addresses": [{"type": "InternalIP", "address": internal_ip}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Test"}],
            }
        }
        self.patch_status(f"/api/v1/nodes/{name}/status", status)

    def bind(self, namespace: str, pod: str, node: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        self.kubectl("create", "-f", "-", input=json.dumps(binding))

    def set_pod_running(self, namespace: str, pod: str, ip: str, host_ip: str) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": host_ip,
                "conditions": [
                    {"type": cond, "status": "True", "lastTransitionTime": now}
                    for cond in ("Initialized", "ContainersReady", "Ready", "PodScheduled")
                ],
            }
        }
        self.patch_status(f"/api/v1/namespaces/{namespace}/pods/{pod}/status", status)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount namespace/name: what a pod running
        as it would present (its token, made by the controller manager's token controller)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            sa = self.get_json("serviceaccount", name, "-n", namespace)
            if sa.get("secrets"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no token for serviceaccount {namespace}/{name}")
            time.sleep(0.2)
        secret = self.get_json("secret", sa["secrets"][0]["name"], "-n", namespace)
        token = base64.b64decode(secret["data"]["token"]).decode()
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "local",
                            "cluster": {
                                "server": f"https://127.0.0.1:{self.api_port}",
                                "insecure-skip-tls-verify": True,
                            },
                        }
                    ],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "sa",
                            "context": {"cluster": "local", "user": name, "namespace": namespace},
                        }
                    ],
                    "current-context": "sa",
                }
            )
        )
        return path
