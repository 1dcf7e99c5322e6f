#!/usr/bin/env python3
"""Name resolution's cost, measured in one run; prints a markdown section (scripts/bench).

1. **Per entry.** The packet side (decode → reassembly → HTTP → entries, capture.pipeline, in this
   process) turns a synthetic capture of N one-exchange connections between pod addresses into
   entries, and the store's CPU part serialises them (PreparedBatch): two pipelines, one
   without a resolver and one with a resolver holding a cluster of PODS pods and SERVICES
   Services (every address of the capture resolves), fed chunk by chunk in turns, so that a
   busy machine's slow stretches fall on both alike. Resolution's cost per entry is their
   difference; it is reported against an entry's whole cost — `kshark-worker --once`
   replaying the same capture into a store, CPU of the worker and of its store helper — as
   issue 10's target reads (< 5 %), and against the in-process part alone. Also the lookups
   and merges alone, repeated with warm caches (in the pipeline they read memory the packets
   have evicted). Each entry names two different pods spread over the cluster: lookups as
   scattered in memory as they get.
2. **Memory and sync time in a real cluster.** ../shared/tools/kubernetes/cluster.sh runs a
   control plane; PODS pods (bound, Running, Ready, one IP each) and SERVICES Services selecting
   them are created, and the controller manager fills their EndpointSlices. A resolver process
   (`kshark.k8s.resolver.Resolver`, the worker's) then lists and watches it: the time from its
   start to every kind listed, and its resident memory then, minus the same process's before the
   resolver started (imports included in both).

    .venv/bin/python scripts/bench_k8s.py                         # 10,000 pods, 2,000 services
    .venv/bin/python scripts/bench_k8s.py --pods 200 --services 40  # a quick check of the script

Internal subcommand `_resolve KUBECONFIG` is the resolver process of part 2.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLUSTER_SH = ROOT.parent / "shared" / "tools" / "kubernetes" / "cluster.sh"
S = 1_000_000_000
PODS_PER_NODE = 110  # Kubernetes' default; decides how many Node objects the cluster gets
EXCHANGES = 20_000  # connections in the per-entry part
ROUNDS = 7  # passes over the capture (both pipelines in turns), and runs of the lookup loop
CHUNK = 50  # connections per turn


def pod_ip(i: int) -> str:
    return f"10.{64 + i // 65536}.{(i // 256) % 256}.{i % 256 + 0}"


def node_ip(i: int) -> str:
    return f"10.0.{i // 256}.{i % 256}"


# ---- synthetic objects (part 1) ----------------------------------------------------------------


def synthetic_objects(pods: int, services: int) -> dict[str, list[dict[str, Any]]]:
    """The objects part 2 creates, as the API would list them (names, IPs, slices)."""
    nodes = max(1, -(-pods // PODS_PER_NODE))
    out: dict[str, list[dict[str, Any]]] = {
        "pods": [],
        "nodes": [],
        "services": [],
        "endpointslices": [],
    }
    for n in range(nodes):
        out["nodes"].append(
            {"metadata": {"name": f"node-{n}"},
             "status": {"addresses": [{"type": "InternalIP", "address": node_ip(n)}]}}
        )  # fmt: skip
    members: dict[int, list[str]] = {}
    for i in range(pods):
        svc = i % services
        members.setdefault(svc, []).append(pod_ip(i))
        out["pods"].append(
            {
                "metadata": {"name": f"p{i}", "namespace": f"ns{svc % 50}", "uid": f"u{i}",
                             "labels": {"app": f"s{svc}", "team": "bench"}},
                "spec": {"nodeName": f"node-{i // PODS_PER_NODE}"},
                "status": {"phase": "Running", "podIP": pod_ip(i), "podIPs": [{"ip": pod_ip(i)}],
                           "hostIP": node_ip(i // PODS_PER_NODE)},
            }
        )  # fmt: skip
    for s in range(services):
        ns = f"ns{s % 50}"
        out["services"].append(
            {"metadata": {"name": f"s{s}", "namespace": ns, "uid": f"su{s}"},
             "spec": {"clusterIP": f"10.96.{s // 256}.{s % 256 + 0}", "type": "ClusterIP"}}
        )  # fmt: skip
        out["endpointslices"].append(
            {
                "metadata": {"name": f"s{s}-abcde", "namespace": ns,
                             "labels": {"kubernetes.io/service-name": f"s{s}"}},
                "endpoints": [{"addresses": [ip]} for ip in members.get(s, [])],
                "ports": [{"port": 8080}],
            }
        )  # fmt: skip
    return out


def per_entry(pods: int, services: int, exchanges: int, rounds: int = ROUNDS) -> list[str]:
    from make_k8s_fixtures import connection, pcap

    from capture.entries import Identity
    from capture.pipeline import Pipeline
    from kshark.k8s.index import ResolutionIndex
    from kshark.store import PreparedBatch

    index = ResolutionIndex()
    for kind, objs in synthetic_objects(pods, services).items():
        index.replace(kind, objs, 1 * S)
    index.settling = False
    base = 1_767_261_600 * S
    conns: list[list[tuple[int, bytes]]] = []
    for i in range(exchanges):
        client = (pod_ip(i % pods), 20000 + i % 40000)
        server = (pod_ip((i * 7 + 1) % pods), 8080)
        conns.append(connection(base + i * 1000_000, client, server, f"/r{i}"))
    chunks = [
        [(ts, 1, f) for conn in conns[i : i + CHUNK] for ts, f in conn]
        for i in range(0, exchanges, CHUNK)
    ]

    def once() -> tuple[float, float, int, int]:
        """One pass over the capture by two pipelines, one resolving and one not, chunk by
        chunk in turns (which goes first alternates): a busy machine slows stretches of time,
        and both then get the same share of them. Each chunk is fed, its entries serialised
        and its packets framed as the store does (PreparedBatch: the store's CPU part; its
        file I/O, in a helper process, is measured apart below). CPU per entry each way, and
        the entries' JSON bytes."""
        plain = Pipeline(
            Identity("10.0.0.1:30001", "10.0.0.1", "bench"), itertools.count().__next__
        )
        resolving = Pipeline(
            Identity("10.0.0.1:30001", "10.0.0.1", "bench", resolver=index),
            itertools.count().__next__,
        )
        spent = [0.0, 0.0]
        size = [0, 0]
        made = [0, 0]
        gc.collect()  # what earlier passes left is not collected during this one
        for k, chunk in enumerate(chunks):
            for side in (0, 1) if k % 2 == 0 else (1, 0):
                pipeline = (plain, resolving)[side]
                t0 = time.process_time()
                pipeline.feed_many(chunk)
                batch = PreparedBatch(pipeline.pop_output())
                spent[side] += time.process_time() - t0
                size[side] += sum(len(e[3]) for e in batch.entries)
                made[side] += len(batch.entries)
        assert made == [exchanges, exchanges], made
        n = exchanges
        return spent[0] / n, spent[1] / n, size[0] // n, size[1] // n

    passes = [once() for _ in range(rounds)]
    plain = statistics.median(p[0] for p in passes)
    resolved = statistics.median(p[1] for p in passes)
    diff = statistics.median(p[1] - p[0] for p in passes)
    plain_size, resolved_size = passes[0][2], passes[0][3]

    # The resolution alone: what EntryBuilder.build does for it, per entry, on warm caches.
    resolve = index.resolve
    ends = [
        (pod_ip(i % pods), pod_ip((i * 7 + 1) % pods), base + i * 1000_000)
        for i in range(exchanges)
    ]
    template = {"endpointSlice": None, "ip": "", "name": "", "namespace": "", "pod": None,
                "port": "", "service": None}  # fmt: skip
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for src_ip, dst_ip, ts in ends:
            src, dst = template.copy(), template.copy()
            names = resolve(src_ip, 0, ts)
            if names is not None:
                src.update(names)
            names = resolve(dst_ip, 8080, ts)
            if names is not None:
                dst.update(names)
        best = min(best, time.process_time() - t0)
    # The two copies happen without a resolver too: only the lookups and merges are its cost.
    t0 = time.process_time()
    for _ in ends:
        template.copy(), template.copy()
    copies = time.process_time() - t0
    lookup = max(0.0, best - copies) / exchanges

    # An entry's whole cost: the worker replaying the same capture into a store (packet side,
    # serialising, the store's files written by its helper process), CPU of both processes,
    # less the same command's on an empty capture (start-up, imports).
    with tempfile.TemporaryDirectory(prefix="kshark-bench-k8s-") as tmp:
        capture = Path(tmp) / "bench.pcap"
        capture.write_bytes(pcap([f for conn in conns for f in conn]))
        empty = Path(tmp) / "empty.pcap"
        empty.write_bytes(pcap([]))
        whole = min(worker_cpu(capture, Path(tmp) / f"d{i}") for i in range(3))
        whole -= min(worker_cpu(empty, Path(tmp) / f"e{i}") for i in range(3))
        whole /= exchanges

    import capture as capture_pkg

    compiled = "compiled" if capture_pkg.NATIVE_BUILD is not None else "pure Python"
    return [
        f"Per entry: {exchanges:,} one-exchange connections between pod addresses, each entry "
        f"naming two different pods spread over a resolver holding {pods:,} pods / "
        f"{services:,} Services (every address resolves: lookups as scattered as they get); "
        f"packet side {compiled}; {rounds} passes, medians:",
        "",
        "| | CPU per entry |",
        "|---|---|",
        f"| an entry's whole cost, no resolver: `kshark-worker --once` replaying the capture into "
        f"a store (both of its processes) | {whole * 1e6:.1f} µs |",
        f"| in this process: capture → serialised entry, no resolver | {plain * 1e6:.1f} µs "
        f"({plain_size:,} bytes of JSON) |",
        f"| in this process: capture → serialised entry, resolving src and dst | "
        f"{resolved * 1e6:.1f} µs ({resolved_size:,} bytes) |",
        f"| **resolution's cost** (lookups, merges, the bigger entry serialised: the two "
        f"pipelines' difference) | **{diff * 1e6:+.1f} µs: {diff / whole:.1%} of an entry's "
        f"whole cost** (target < 5 %); {diff / plain:.1%} of the in-process part alone |",
        f"| the lookups and merges alone, on warm caches | {lookup * 1e6:.2f} µs |",
        "",
    ]


def worker_cpu(capture: Path, data_dir: Path) -> float:
    """CPU seconds (user + system, the worker and its store helper) of `kshark-worker --once`
    replaying `capture` into `data_dir`, without name resolution."""
    worker = Path(sys.executable).parent / "kshark-worker"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(worker), "--pcap", str(capture), "--data-dir", str(data_dir), "--once",
         "--no-resolve", "--port", "0", "--log-level", "WARNING"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ---- the cluster (part 2) ----------------------------------------------------------------------


def free_ports() -> tuple[int, int]:
    import socket

    while True:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            api, etcd = a.getsockname()[1], b.getsockname()[1]
        with socket.socket() as c:
            try:
                c.bind(("127.0.0.1", etcd + 1))
            except OSError:
                continue
        return api, etcd


def populate(server: str, pods: int, services: int) -> float:
    """Create the cluster's objects; returns the seconds it took (slices filled included)."""
    import httpx

    objs = synthetic_objects(pods, services)
    t0 = time.monotonic()
    local = __import__("threading").local()

    def client() -> httpx.Client:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = httpx.Client(
                base_url=server, verify=False, timeout=60,
                headers={"Authorization": "Bearer admintoken"},
            )  # fmt: skip
        return c

    def req(method: str, path: str, body: Any, ctype: str = "application/json") -> None:
        r = client().request(
            method, path, content=json.dumps(body), headers={"Content-Type": ctype}
        )
        if r.status_code >= 300 and r.status_code != 409:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")

    def make_node(n: dict[str, Any]) -> None:
        req("POST", "/api/v1/nodes", {"metadata": n["metadata"]})
        req("PATCH", f"/api/v1/nodes/{n['metadata']['name']}/status", {"status": n["status"]},
            "application/merge-patch+json")  # fmt: skip

    def make_pod(p: dict[str, Any]) -> None:
        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
        spec = {"nodeName": p["spec"]["nodeName"],
                "containers": [{"name": "app", "image": "example.invalid/app:1"}]}  # fmt: skip
        req("POST", f"/api/v1/namespaces/{ns}/pods",
            {"metadata": {"name": name, "labels": p["metadata"]["labels"]}, "spec": spec})  # fmt: skip
        status = dict(p["status"])
        status["conditions"] = [{"type": "Ready", "status": "True"}]
        req("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status},
            "application/merge-patch+json")  # fmt: skip

    def make_service(s: dict[str, Any]) -> None:
        ns = s["metadata"]["namespace"]
        req("POST", f"/api/v1/namespaces/{ns}/services",
            {"metadata": {"name": s["metadata"]["name"]},
             "spec": {"selector": {"app": s["metadata"]["name"]},
                      "ports": [{"port": 80, "targetPort": 8080}]}})  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        namespaces = sorted({p["metadata"]["namespace"] for p in objs["pods"]}
                            | {s["metadata"]["namespace"] for s in objs["services"]})  # fmt: skip
        list(
            pool.map(
                lambda ns: req("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}), namespaces
            )
        )
        list(pool.map(make_node, objs["nodes"]))
        list(pool.map(make_service, objs["services"]))
        list(pool.map(make_pod, objs["pods"]))
    # Until the controller manager has put every pod into its Service's EndpointSlice.
    with httpx.Client(base_url=server, verify=False, timeout=120,
                      headers={"Authorization": "Bearer admintoken"}) as c:  # fmt: skip
        while True:
            body = c.get("/apis/discovery.k8s.io/v1beta1/endpointslices").json()
            filled = sum(
                len(e.get("addresses") or [])
                for s in body["items"]
                for e in s.get("endpoints") or []
            )
            if filled >= pods:
                break
            time.sleep(1.0)
    return time.monotonic() - t0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def resolve_process(kubeconfig: str) -> None:
    """Part 2's resolver: prints JSON {rss_before, rss_after, sync_s, counts}."""
    import trio

    from kshark.k8s.config import load_kubeconfig
    from kshark.k8s.resolver import Resolver

    async def main() -> dict[str, Any]:
        cfg = load_kubeconfig(kubeconfig)
        import gc

        gc.collect()
        before = rss_kib()
        resolver = Resolver(cfg)
        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            await nursery.start(resolver.run)
            while not resolver.synced:  # noqa: ASYNC110 (four loops' states; a poll is simplest)
                await trio.sleep(0.01)
            sync_s = time.monotonic() - t0
            gc.collect()
            after = rss_kib()
            nursery.cancel_scope.cancel()
        return {
            "rss_before": before,
            "rss_after": after,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "sync_s": sync_s,
            "counts": resolver.index.counts(),
        }

    print(json.dumps(trio.run(main)))


def in_cluster(pods: int, services: int) -> list[str]:
    api_port, etcd_port = free_ports()
    with tempfile.TemporaryDirectory(prefix="kshark-bench-k8s-") as tmp:
        d = Path(tmp) / "cluster"
        env = {**os.environ, "API_PORT": str(api_port), "ETCD_PORT": str(etcd_port)}
        try:
            subprocess.run(["bash", str(CLUSTER_SH), "start", str(d)], env=env, check=True,
                           capture_output=True, timeout=300)  # fmt: skip
            made = populate(f"https://127.0.0.1:{api_port}", pods, services)
            res = subprocess.run(
                [sys.executable, __file__, "_resolve", str(d / "kubeconfig")],
                capture_output=True, text=True, check=True, timeout=900,
            )  # fmt: skip
            out = json.loads(res.stdout)
        finally:
            subprocess.run(
                ["bash", str(CLUSTER_SH), "stop", str(d)], capture_output=True, timeout=120
            )
    counts = out["counts"]
    grown = (out["rss_after"] - out["rss_before"]) / 1024
    return [
        f"A real control plane (v1.20) holding {counts['pods']:,} pods on {counts['nodes']:,} nodes, "
        f"{counts['services']:,} Services and {counts['endpointslices']:,} EndpointSlices "
        f"(made in {made:.0f} s); one resolver process lists and watches it:",
        "",
        "| | |",
        "|---|---|",
        f"| time to sync (start → every kind listed) | {out['sync_s']:.2f} s |",
        f"| resolver memory (RSS after sync − before start) | {grown:.1f} MiB "
        f"({grown * 1024 / max(1, counts['ips']):.2f} KiB per address; {counts['ips']:,} addresses) |",
        f"| the process's peak RSS (lists parsed whole) | {out['peak'] / 1024:.1f} MiB |",
        "",
    ]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_resolve":
        resolve_process(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=2_000)
    ap.add_argument("--exchanges", type=int, default=EXCHANGES)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--no-cluster", action="store_true", help="only the per-entry part")
    args = ap.parse_args()
    rows = per_entry(args.pods, args.services, args.exchanges, args.rounds)
    if not args.no_cluster:
        rows += in_cluster(args.pods, args.services)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
