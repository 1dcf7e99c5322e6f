#!/usr/bin/env python3
"""Writes fixtures/k8s/: a small cluster's layout, and a capture of traffic between its workloads.

`scenario.json` is the cluster the Kubernetes tests build on the real control plane
(../shared/tools/kubernetes): two nodes, three namespaces, Deployments and bare pods (one of
them hostNetwork) with the pod IPs the tests give them, Services with fixed ClusterIPs. It also
lists every HTTP exchange of the capture with what its src and dst must resolve to, and the KFL
queries the tests run with the entries each must return. `traffic.pcap` is those exchanges,
crafted with scapy: one TCP connection each (handshake, request, response, FIN), a millisecond
apart, at fixed times in 2026 — before any test cluster exists, so a replay resolves every
address against the first state the worker knew (docs/kubernetes.md, "Time").

What each exchange must resolve to is written here by hand from the layout (docs/kubernetes.md
states the rules), never from running kshark.

Deterministic (tests/k8s/test_k8s_fixtures_uptodate.py regenerates and compares bytes):

    .venv/bin/python scripts/make_k8s_fixtures.py            # rewrites fixtures/k8s/
    .venv/bin/python scripts/make_k8s_fixtures.py --out DIR  # writes somewhere else
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

REPO = Path(__file__).resolve().parent.parent
S = 1_000_000_000
MS = 1_000_000
US = 1_000
BASE_NS = 1_767_261_600 * S  # 2026-01-01T10:00:00Z
LINKTYPE_ETHERNET = 1

NODES = {"node-a": "10.0.0.11", "node-b": "10.0.0.12"}
NAMESPACES = ["shop", "payments", "monitoring"]
# Deployments: namespace, name (also its `app` label), container port, where each replica runs.
DEPLOYMENTS = [
    {
        "namespace": "shop",
        "name": "frontend",
        "port": 8080,
        "replicas": [["node-a", "10.244.1.10"]],
    },
    {
        "namespace": "shop",
        "name": "cart",
        "port": 8080,
        "replicas": [["node-a", "10.244.1.20"], ["node-b", "10.244.2.20"]],
    },
    {
        "namespace": "payments",
        "name": "billing",
        "port": 8443,
        "replicas": [["node-b", "10.244.2.40"]],
    },
]
# Pods made by hand (no controller): a pod no Service selects, and a hostNetwork pod that shares
# node-a's address.
PODS = [
    {
        "namespace": "shop",
        "name": "debug",
        "node": "node-b",
        "ip": "10.244.2.30",
        "hostNetwork": False,
    },
    {
        "namespace": "monitoring",
        "name": "node-exporter",
        "node": "node-a",
        "ip": NODES["node-a"],
        "hostNetwork": True,
    },
]
# Services select `app: <name>`.
SERVICES = [
    {
        "namespace": "shop",
        "name": "frontend",
        "clusterIP": "10.96.100.10",
        "port": 80,
        "targetPort": 8080,
    },
    {
        "namespace": "shop",
        "name": "cart",
        "clusterIP": "10.96.100.20",
        "port": 80,
        "targetPort": 8080,
    },
    {
        "namespace": "payments",
        "name": "billing",
        "clusterIP": "10.96.100.40",
        "port": 8443,
        "targetPort": 8443,
    },
    {
        "namespace": "monitoring",
        "name": "node-exporter",
        "clusterIP": "10.96.100.90",
        "port": 9100,
        "targetPort": 9100,
    },
]

UNKNOWN_IP = "203.0.113.9"  # nothing in the cluster has it


def side(name: str, namespace: str, pod_ip: str | None = None, service: str | None = None,
         endpoint_slice: bool = False) -> dict[str, Any]:  # fmt: skip
    """What one end must resolve to: `pod_ip` names the pod (the tests look its name up by
    IP: a Deployment's pods get generated names), `service` is "namespace/name"."""
    return {
        "name": name,
        "namespace": namespace,
        "pod_ip": pod_ip,
        "service": service,
        "endpointSlice": endpoint_slice,
    }


NOBODY = side("", "")
FRONTEND = side("frontend.shop", "shop", "10.244.1.10", "shop/frontend", True)

# (path, client ip, server ip, server port, what src must be, what dst must be)
EXCHANGES: list[tuple[str, str, str, int, dict[str, Any], dict[str, Any]]] = [
    # A pod behind a Service calls another Service's ClusterIP (as a node sees it before DNAT).
    ("/e1", "10.244.1.10", "10.96.100.20", 80, FRONTEND, side("cart.shop", "shop", None, "shop/cart")),
    # The same call after DNAT: the cart pod, named with its Service (the EndpointSlice lists 8080).
    ("/e2", "10.244.1.10", "10.244.2.20", 8080, FRONTEND,
     side("cart.shop", "shop", "10.244.2.20", "shop/cart", True)),
    # Another namespace's pod calls a cart pod: not in the shop-namespace query.
    ("/e3", "10.244.2.40", "10.244.1.20", 8080,
     side("billing.payments", "payments", "10.244.2.40", "payments/billing", True),
     side("cart.shop", "shop", "10.244.1.20", "shop/cart", True)),
    # A shop pod calls a Service in payments.
    ("/e4", "10.244.1.20", "10.96.100.40", 8443,
     side("cart.shop", "shop", "10.244.1.20", "shop/cart", True),
     side("billing.payments", "payments", None, "payments/billing")),
    # From node-a's address (where the hostNetwork exporter runs): the node, never that pod.
    ("/e5", "10.0.0.11", "10.244.1.10", 8080, side("node-a", ""), FRONTEND),
    # A pod no Service selects: its own name.
    ("/e6", "10.244.2.30", "10.96.100.20", 80, side("debug", "shop", "10.244.2.30"),
     side("cart.shop", "shop", None, "shop/cart")),
    # An address the cluster does not have: empty, never a guess.
    ("/e7", UNKNOWN_IP, "10.244.1.10", 8080, NOBODY, FRONTEND),
    # To the other node's kubelet port: the node.
    ("/e8", "10.244.1.10", "10.0.0.12", 10250, FRONTEND, side("node-b", "")),
    # A Service whose endpoint is the hostNetwork pod: by port, the Service (and no pod).
    ("/metrics", "10.244.2.40", "10.0.0.11", 9100,
     side("billing.payments", "payments", "10.244.2.40", "payments/billing", True),
     side("node-exporter.monitoring", "monitoring", None, "monitoring/node-exporter", True)),
    # A cart pod on a port its Service does not list: still the cart pod, named with its Service.
    ("/e10", "10.244.1.10", "10.244.2.20", 9090, FRONTEND,
     side("cart.shop", "shop", "10.244.2.20", "shop/cart", True)),
]  # fmt: skip

QUERIES = [
    {"query": 'src.namespace == "shop" and dst.name == "cart.shop"', "paths": ["/e1", "/e2", "/e6", "/e10"]},
    {"query": 'dst.service.metadata.name == "cart"', "paths": ["/e1", "/e2", "/e3", "/e6", "/e10"]},
    {"query": 'src.pod.metadata.name == "debug"', "paths": ["/e6"]},
    {"query": 'src.name == ""', "paths": ["/e7"]},
    {"query": 'dst.namespace == "monitoring"', "paths": ["/metrics"]},
]  # fmt: skip


def _mac(ip: str) -> str:
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


def connection(
    t0: int, client: tuple[str, int], server: tuple[str, int], path: str
) -> list[tuple[int, bytes]]:
    """One HTTP/1.1 exchange on its own connection: (ts_ns, Ethernet frame) in order."""
    (_, cport), (sip, sport) = client, server
    isn_c, isn_s = 1000 + cport, 5000 + sport
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {sip}:{sport}\r\nUser-Agent: kshark-k8s-fixture\r\n"
        "Accept: */*\r\n\r\n"
    ).encode()
    body = f'{{"path":"{path}"}}'.encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    frames: list[tuple[int, bytes]] = []
    ident = [cport]

    def emit(dt: int, from_client: bool, flags: str, seq: int, ack: int, data: bytes = b"") -> None:
        ident[0] += 1
        src, dst = (client, server) if from_client else (server, client)
        pkt = (
            Ether(src=_mac(src[0]), dst=_mac(dst[0]))
            / IP(src=src[0], dst=dst[0], id=ident[0] & 0xFFFF, ttl=64)
            / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=64240)
        )
        if data:
            pkt = pkt / Raw(data)
        frames.append((t0 + dt, bytes(pkt)))

    c, s = isn_c, isn_s
    emit(0, True, "S", c, 0)
    emit(40 * US, False, "SA", s, c + 1)
    emit(80 * US, True, "A", c + 1, s + 1)
    emit(120 * US, True, "PA", c + 1, s + 1, request)
    emit(160 * US, False, "A", s + 1, c + 1 + len(request))
    emit(400 * US, False, "PA", s + 1, c + 1 + len(request), response)
    emit(440 * US, True, "FA", c + 1 + len(request), s + 1 + len(response))
    emit(480 * US, False, "FA", s + 1 + len(response), c + 2 + len(request))
    emit(520 * US, True, "A", c + 2 + len(request), s + 2 + len(response))
    return frames


def pcap(frames: list[tuple[int, bytes]]) -> bytes:
    """A classic pcap with nanosecond timestamps."""
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET)]
    for ts, frame in frames:
        out.append(struct.pack("<IIII", ts // S, ts % S, len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def build() -> dict[str, bytes]:
    frames: list[tuple[int, bytes]] = []
    exchanges = []
    for i, (path, cip, sip, sport, src, dst) in enumerate(EXCHANGES):
        t0 = BASE_NS + i * MS
        cport = 40001 + i
        frames += connection(t0, (cip, cport), (sip, sport), path)
        exchanges.append(
            {
                "path": path,
                "src": {"ip": cip, "port": str(cport), **src},
                "dst": {"ip": sip, "port": str(sport), **dst},
            }
        )
    scenario = {
        "nodes": NODES,
        "namespaces": NAMESPACES,
        "deployments": DEPLOYMENTS,
        "pods": PODS,
        "services": SERVICES,
        "exchanges": exchanges,
        "queries": QUERIES,
    }
    return {
        "scenario.json": (json.dumps(scenario, indent=1, sort_keys=True) + "\n").encode(),
        "traffic.pcap": pcap(frames),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "fixtures" / "k8s")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (args.out / name).write_bytes(data)


if __name__ == "__main__":
    main()
