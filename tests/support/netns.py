"""Network-namespace test harness: private, throw-away networks for live tests (needs root).

Why namespaces: live tests must capture real packets without touching the machine's own
interfaces or sending anything to an address outside this sandbox. Every namespace here is
created by the test that uses it, carries only 10.213.x.x addresses (plus its own loopback), and
is deleted when the context manager exits, even when the test failed.

Import from a test module with::

    from tests.support import netns as nh

Building blocks:

- ``netns_pair()`` → ``Pair``: a "srv" and a "cli" namespace joined by one veth pair.
- ``netns_star(n)`` → ``Star``: n "node" namespaces, each joined by a veth to one "hub" namespace
  whose ends are enslaved to a Linux bridge, so the hub and every node share one /24.
- ``run_in_ns(ns, argv)`` → ``Popen`` (``ip netns exec``), ``ns_process(...)`` (the same as a
  context manager that ends the process), ``ns_run(...)`` (run to completion, check, capture).
- ``wait_for_tcp(ns, ip, port)``: blocks until something accepts connections there.
- ``remove_stale_namespaces()``: deletes namespaces left by harness users whose process is gone.

Names are ``ksk-<pid>-<n>-<role>`` so concurrent test processes never collide, and a stale
namespace can be attributed to a dead pid. IPv6 is disabled inside the namespaces by default:
its automatic traffic (DAD, router solicitations) would add packets no test asked for and make
packet counts flaky.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.procstat import TERMINATE_GRACE_S, stop_process

# Only addresses inside this /16 are ever configured, and only inside namespaces we create.
SUBNET_PREFIX = "10.213"
NAME_PREFIX = "ksk"
# How long `ip` commands and process shutdowns may take before the harness gives up.
COMMAND_TIMEOUT_S = 20.0


_counter = itertools.count(1)


@dataclass(frozen=True)
class Pair:
    """Two namespaces joined by a veth pair; addresses are /24s in 10.213.<subnet>.0."""

    srv_ns: str
    cli_ns: str
    srv_ip: str
    cli_ip: str
    srv_if: str  # the veth end inside srv_ns
    cli_if: str  # the veth end inside cli_ns


@dataclass(frozen=True)
class Node:
    ns: str
    ip: str
    iface: str  # the node's veth end, inside ns
    hub_port: str  # the peer end, inside the hub namespace, enslaved to the bridge


@dataclass(frozen=True)
class Star:
    hub_ns: str
    hub_ip: str  # the bridge's address in the hub namespace
    bridge: str
    nodes: tuple[Node, ...]


def ip(*args: str, ns: str | None = None) -> str:
    """Run `ip [-n ns] args...`; raises with ip's own message on failure; returns stdout."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res.stdout


def _next_names(role_count: int) -> tuple[str, int]:
    """A namespace name stem unique to this process and call, and a subnet number for it."""
    n = next(_counter)
    # Subnets only need to be unique for readability of captures (namespaces isolate them).
    subnet = (os.getpid() + n) % 250 + 1
    return f"{NAME_PREFIX}-{os.getpid()}-{n}", subnet


def _add_ns(name: str, *, ipv6: bool) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", ns=name)
    if not ipv6:
        # Through /proc rather than sysctl(8): one process, and no dependency on procps.
        script = (
            "for k in all default lo; do echo 1 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done"
        )
        subprocess.run(
            ["ip", "netns", "exec", name, "sh", "-c", script],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )


def _ns_pids(ns: str) -> list[int]:
    res = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    return [int(p) for p in res.stdout.split()] if res.returncode == 0 else []


def delete_ns(ns: str) -> None:
    """End every process still inside `ns` (all started by the test that owns it), then delete it.

    A namespace with live processes would outlive `ip netns del` (its veths and sockets too), so
    its processes go first: SIGTERM, a grace period, then SIGKILL.
    """
    pids = _ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_TIMEOUT_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def list_namespaces() -> list[str]:
    res = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def remove_stale_namespaces() -> list[str]:
    """Delete `ksk-<pid>-...` namespaces whose creating process no longer exists (crashed runs)."""
    removed = []
    for ns in list_namespaces():
        m = re.fullmatch(rf"{NAME_PREFIX}-(\d+)-\d+-.+", ns)
        if m and not _alive(int(m.group(1))):
            delete_ns(ns)
            removed.append(ns)
    return removed


@contextlib.contextmanager
def _namespaces() -> Iterator[list[str]]:
    """Collects namespace names as they are created; deletes them all on exit, in reverse."""
    created: list[str] = []
    try:
        yield created
    finally:
        for ns in reversed(created):
            delete_ns(ns)


@contextlib.contextmanager
def netns_pair(*, ipv6: bool = False, mtu: int | None = None) -> Iterator[Pair]:
    """Two fresh namespaces, `srv` (10.213.S.1/24) and `cli` (10.213.S.2/24), joined by a veth.

    Both veth ends are created directly inside their namespaces, so nothing ever appears in the
    root namespace and fixed device names (`veth-srv`, `veth-cli`) cannot collide.
    """
    stem, subnet = _next_names(2)
    with _namespaces() as created:
        srv, cli = f"{stem}-srv", f"{stem}-cli"
        for ns in (srv, cli):
            _add_ns(ns, ipv6=ipv6)
            created.append(ns)
        pair = Pair(
            srv_ns=srv,
            cli_ns=cli,
            srv_ip=f"{SUBNET_PREFIX}.{subnet}.1",
            cli_ip=f"{SUBNET_PREFIX}.{subnet}.2",
            srv_if="veth-srv",
            cli_if="veth-cli",
        )
        ip(
            "link",
            "add",
            pair.srv_if,
            "netns",
            srv,
            "type",
            "veth",
            "peer",
            "name",
            pair.cli_if,
            "netns",
            cli,
        )
        for ns, dev, addr in ((srv, pair.srv_if, pair.srv_ip), (cli, pair.cli_if, pair.cli_ip)):
            ip("addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            if mtu is not None:
                ip("link", "set", dev, "mtu", str(mtu), ns=ns)
            ip("link", "set", dev, "up", ns=ns)
        yield pair


@contextlib.contextmanager
def netns_star(n: int, *, ipv6: bool = False) -> Iterator[Star]:
    """A hub namespace with bridge `br0` (10.213.S.254/24) and `n` node namespaces on it.

    Node i (0-based) lives in `ksk-<pid>-<k>-node<i>` with address 10.213.S.(i+1)/24 on its
    `eth0`; the peer end `n<i>` sits in the hub namespace as a bridge port. Nodes reach each
    other and the hub directly over the bridge (one L2 segment, like pods on a node's bridge).
    """
    if not 1 <= n <= 200:
        raise ValueError("netns_star: n must be between 1 and 200")
    stem, subnet = _next_names(n + 1)
    with _namespaces() as created:
        hub = f"{stem}-hub"
        _add_ns(hub, ipv6=ipv6)
        created.append(hub)
        bridge = "br0"
        hub_ip = f"{SUBNET_PREFIX}.{subnet}.254"
        ip("link", "add", bridge, "type", "bridge", ns=hub)
        ip("addr", "add", f"{hub_ip}/24", "dev", bridge, ns=hub)
        ip("link", "set", bridge, "up", ns=hub)
        nodes = []
        for i in range(n):
            ns = f"{stem}-node{i}"
            _add_ns(ns, ipv6=ipv6)
            created.append(ns)
            node = Node(
                ns=ns, ip=f"{SUBNET_PREFIX}.{subnet}.{i + 1}", iface="eth0", hub_port=f"n{i}"
            )
            ip(
                "link",
                "add",
                node.iface,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                node.hub_port,
                "netns",
                hub,
            )
            ip("link", "set", node.hub_port, "master", bridge, "up", ns=hub)
            ip("addr", "add", f"{node.ip}/24", "dev", node.iface, ns=ns)
            ip("link", "set", node.iface, "up", ns=ns)
            nodes.append(node)
        yield Star(hub_ns=hub, hub_ip=hub_ip, bridge=bridge, nodes=tuple(nodes))


def run_in_ns(ns: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
    """Start `argv` inside namespace `ns` (via `ip netns exec`); the caller owns the process."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen_kw)


@contextlib.contextmanager
def ns_process(ns: str, argv: Sequence[str], **popen_kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """`run_in_ns` as a context manager: the process is stopped on exit if still running."""
    proc = run_in_ns(ns, argv, **popen_kw)
    try:
        yield proc
    finally:
        stop_process(proc)


def ns_run(
    ns: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in `ns` to completion; text output captured; raises on failure if check."""
    res = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"in {ns}: {' '.join(argv)} exited {res.returncode}: {res.stderr.strip()[-2000:]}"
        )
    return res


_WAIT_TCP = """
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing accepts connections on {host}:{port}")
        time.sleep(0.02)
"""


def wait_for_tcp(ns: str, host: str, port: int, timeout: float = 10.0) -> None:
    """Block until a TCP connect to host:port from inside `ns` succeeds (one probe connection)."""
    ns_run(ns, ["python3", "-c", _WAIT_TCP, host, str(port), str(timeout)], timeout=timeout + 5)


@dataclass(frozen=True)
class Pod:
    ns: str
    ip: str
    host_if: str  # its veth's peer in the node namespace, a port of the node's bridge


@dataclass(frozen=True)
class NodeWithPods:
    """A Kubernetes node as a bridge CNI (flannel, kubenet, the bridge plugin) builds it."""

    ns: str  # the node's own (host) network namespace: where a hostNetwork worker captures
    bridge: str  # `cni0`, the pods' gateway
    gateway_ip: str
    pods: tuple[Pod, ...]
    uplink: str  # the node's `eth0`
    node_ip: str
    remote_ns: str  # a machine beyond the uplink (a pod of another node, routed)
    remote_ip: str


@contextlib.contextmanager
def netns_node(pods: int = 2) -> Iterator[NodeWithPods]:
    """A node namespace with bridge `cni0` (10.213.S.1/24, IP forwarding on) and `pods` pod
    namespaces on it (10.213.S.2, .3, …; veth `eth0` inside, `vethpodN` on the bridge, default
    route via the bridge), plus an uplink `eth0` (10.213.0.1/24) to a `remote` namespace
    (10.213.0.2, routes the pods' /24 back through the node). Pod-to-pod traffic crosses two
    bridge ports; pod-to-remote traffic crosses a bridge port, the bridge and the uplink."""
    if not 1 <= pods <= 200:
        raise ValueError("netns_node: pods must be between 1 and 200")
    stem, subnet = _next_names(pods + 2)
    with _namespaces() as created:
        node, remote = f"{stem}-node", f"{stem}-remote"
        for ns in (node, remote):
            _add_ns(ns, ipv6=False)
            created.append(ns)
        subprocess.run(
            ["ip", "netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        gateway = f"{SUBNET_PREFIX}.{subnet}.1"
        ip("link", "add", "cni0", "type", "bridge", ns=node)
        ip("addr", "add", f"{gateway}/24", "dev", "cni0", ns=node)
        ip("link", "set", "cni0", "up", ns=node)
        made = []
        for i in range(pods):
            pod_ns = f"{stem}-pod{i}"
            _add_ns(pod_ns, ipv6=False)
            created.append(pod_ns)
            pod = Pod(ns=pod_ns, ip=f"{SUBNET_PREFIX}.{subnet}.{i + 2}", host_if=f"vethpod{i}")
            ip("link", "add", "eth0", "netns", pod_ns, "type", "veth", "peer", "name",
               pod.host_if, "netns", node)  # fmt: skip
            ip("link", "set", pod.host_if, "master", "cni0", "up", ns=node)
            ip("addr", "add", f"{pod.ip}/24", "dev", "eth0", ns=pod_ns)
            ip("link", "set", "eth0", "up", ns=pod_ns)
            ip("route", "add", "default", "via", gateway, ns=pod_ns)
            made.append(pod)
        node_ip, remote_ip = f"{SUBNET_PREFIX}.0.1", f"{SUBNET_PREFIX}.0.2"
        ip("link", "add", "eth0", "netns", node, "type", "veth", "peer", "name", "eth0",
           "netns", remote)  # fmt: skip
        ip("addr", "add", f"{node_ip}/24", "dev", "eth0", ns=node)
        ip("link", "set", "eth0", "up", ns=node)
        ip("addr", "add", f"{remote_ip}/24", "dev", "eth0", ns=remote)
        ip("link", "set", "eth0", "up", ns=remote)
        ip("route", "add", f"{SUBNET_PREFIX}.{subnet}.0/24", "via", node_ip, ns=remote)
        yield NodeWithPods(
            ns=node,
            bridge="cni0",
            gateway_ip=gateway,
            pods=tuple(made),
            uplink="eth0",
            node_ip=node_ip,
            remote_ns=remote,
            remote_ip=remote_ip,
        )
