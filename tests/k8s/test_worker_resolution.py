"""`kshark-worker --kubeconfig` against a real control plane: every entry of a crafted capture
gets the right src/dst name, namespace, pod, service and EndpointSlice; KFL selects on them
(through wscat, as a user would); /status tells the resolver's state; a permission the worker
lacks is a clear /status error while the entries keep flowing, unresolved where it matters.

The capture and what each exchange must resolve to: scripts/make_k8s_fixtures.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s_cluster import (
    TRAFFIC,
    Scenario,
    grant,
    service_account_kubeconfig,
    wait_until,
)
from tests.support.worker_cli import STEP_TIMEOUT_S, ServingWorker, entries, run_once
from tests.support.wscat import wscat_query

N_EXCHANGES = 10


def wait_stored(w: ServingWorker, n: int) -> dict[str, Any]:
    """Until the worker's store has written `n` entry files (/status counts entries as they are
    built, a moment before their files exist)."""
    return wait_until(
        f"{n} entries stored", lambda: (st := w.status())["store"]["entries_written"] >= n and st
    )


def by_path(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {e["request"]["path"]: e for e in items}
    assert len(out) == len(items), "one entry per exchange"
    return out


def check_side(got: dict[str, Any], want: dict[str, Any], pod_by_ip: dict[str, str]) -> None:
    """One end of an entry against what scenario.json says it must resolve to."""
    where = f"{want['ip']}:{want['port']}"
    assert (got["ip"], got["port"]) == (want["ip"], want["port"])
    assert (got["name"], got["namespace"]) == (want["name"], want["namespace"]), where
    if want["pod_ip"] is None:
        assert got["pod"] is None, where
    else:
        pod = got["pod"]
        assert pod["metadata"]["name"] == pod_by_ip[want["pod_ip"]], where
        assert pod["metadata"]["namespace"] == want["namespace"], where
        assert pod["status"]["podIP"] == want["pod_ip"], where
        assert pod["spec"]["nodeName"] in ("node-a", "node-b"), where
    if want["service"] is None:
        assert got["service"] is None, where
    else:
        ns, name = want["service"].split("/")
        assert got["service"]["metadata"]["name"] == name, where
        assert got["service"]["metadata"]["namespace"] == ns, where
    if want["endpointSlice"]:
        # The controller manager names a Service's slices "<service>-<random>".
        ns, name = want["service"].split("/")
        assert got["endpointSlice"]["metadata"]["name"].startswith(f"{name}-"), where
        assert got["endpointSlice"]["metadata"]["namespace"] == ns, where
    else:
        assert got["endpointSlice"] is None, where


@pytest.fixture(scope="module")
def resolving_worker(
    scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingWorker]:
    tmp = tmp_path_factory.mktemp("resolving")
    w = ServingWorker.start(
        ["--pcap", str(TRAFFIC), "--data-dir", str(tmp / "data"),
         "--kubeconfig", str(scenario.cluster.kubeconfig)],
        tmp / "worker.log",
    )  # fmt: skip
    try:
        wait_stored(w, N_EXCHANGES)
        yield w
    finally:
        w.kill()


@pytest.mark.tools
def test_replay_resolves_every_entry_and_kfl_selects_by_name(
    scenario: Scenario, resolving_worker: ServingWorker, tmp_path: Path
) -> None:
    w = resolving_worker
    status = w.status()
    resolver = status["resolver"]
    assert resolver["enabled"] is True and resolver["synced"] is True, resolver
    assert resolver["failing"] == [] and resolver["last_error"] is None, resolver
    assert resolver["source"].startswith(f"kubeconfig {scenario.cluster.kubeconfig}")
    assert resolver["kinds"]["endpointslices"]["api"] == "discovery.k8s.io/v1beta1"
    spec = scenario.spec
    assert resolver["objects"]["nodes"] == len(spec["nodes"])
    # The scenario's pods (the apiserver's own `kubernetes` Service is there too).
    n_pods = sum(len(d["replicas"]) for d in spec["deployments"]) + len(spec["pods"])
    assert resolver["objects"]["pods"] >= n_pods
    assert resolver["objects"]["services"] >= len(spec["services"]) + 1

    got = by_path(entries(Path(w.log_path).parent / "data"))
    assert sorted(got) == sorted(x["path"] for x in spec["exchanges"])
    for x in spec["exchanges"]:
        entry = got[x["path"]]
        check_side(entry["src"], x["src"], scenario.pod_by_ip)
        check_side(entry["dst"], x["dst"], scenario.pod_by_ip)

    # What a Kubeshark user types: exactly the entries the scenario says.
    for q in spec["queries"]:
        streamed = wscat_query(w.port, q["query"], tmp_path)
        assert sorted(e["request"]["path"] for e in streamed) == sorted(q["paths"]), q["query"]


def test_summary_stream_cuts_the_objects_to_names(resolving_worker: ServingWorker) -> None:
    """/api/ws's summary form (Kubeshark's ResolutionSummary): pod → metadata names, nodeName,
    hostIp; service and endpointSlice → metadata names."""
    import trio
    from trio_websocket import open_websocket_url

    async def first_summary() -> dict[str, Any]:
        url = f"ws://127.0.0.1:{resolving_worker.port}/api/ws"
        async with open_websocket_url(url) as ws:
            await ws.send_message('request.path == "/e2"')
            with trio.fail_after(STEP_TIMEOUT_S):
                result: dict[str, Any] = json.loads(await ws.get_message())
                return result

    summary = trio.run(first_summary)
    dst = summary["dst"]
    assert dst["name"] == "cart.shop"
    assert set(dst["pod"]) == {"metadata", "spec", "status"}
    assert set(dst["pod"]["metadata"]) == {"name", "namespace"}
    assert dst["pod"]["status"] == {"hostIp": "10.0.0.12"}
    assert dst["pod"]["spec"] == {"nodeName": "node-b"}
    assert dst["service"] == {"metadata": {"name": "cart", "namespace": "shop"}}
    assert dst["endpointSlice"]["metadata"]["namespace"] == "shop"


def test_without_a_cluster_entries_keep_empty_names(tmp_path: Path) -> None:
    """No --kubeconfig, no KUBECONFIG, not in a pod: today's entries, resolution off."""
    env_free = run_once("--pcap", str(TRAFFIC), "--data-dir", str(tmp_path / "d"))
    assert env_free.returncode == 0, env_free.stderr
    for e in entries(tmp_path / "d"):
        for end in (e["src"], e["dst"]):
            assert (end["name"], end["namespace"], end["pod"], end["service"]) == (
                "",
                "",
                None,
                None,
            )
            assert end["endpointSlice"] is None


def test_no_resolve_wins_over_a_kubeconfig(scenario: Scenario, tmp_path: Path) -> None:
    out = run_once(
        "--pcap", str(TRAFFIC), "--data-dir", str(tmp_path / "d"),
        "--kubeconfig", str(scenario.cluster.kubeconfig), "--no-resolve",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert all(e["dst"]["name"] == "" for e in entries(tmp_path / "d"))


def test_a_kubeconfig_that_cannot_be_used_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = run_once("--pcap", str(TRAFFIC), "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"kshark-worker: kubeconfig {tmp_path / 'nope'}: No such file or directory"
    )
    execs = tmp_path / "exec.yaml"
    execs.write_text(
        "apiVersion: v1\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {exec: {command: aws}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    plugin = run_once("--pcap", str(TRAFFIC), "--kubeconfig", str(execs))
    assert plugin.returncode == 2
    assert "exec plugin, which kshark does not run" in plugin.stderr
    assert "Traceback" not in plugin.stderr


def test_without_the_pods_permission_status_says_so_and_entries_flow(
    scenario: Scenario, tmp_path: Path
) -> None:
    """A service account that may list+watch everything the resolver reads except pods (as if
    that rule had been revoked): /status names the refusal, every entry is still written, and
    what needs a pod stays empty while Services, EndpointSlices and nodes still resolve."""
    cluster = scenario.cluster
    kubeconfig = service_account_kubeconfig(cluster, "kshark", "no-pods", tmp_path / "kc")
    grant(
        cluster.api,
        "kshark-no-pods",
        [("", "nodes"), ("", "services"), ("discovery.k8s.io", "endpointslices")],
        ("kshark", "no-pods"),
    )
    w = ServingWorker.start(
        [
            "--pcap",
            str(TRAFFIC),
            "--data-dir",
            str(tmp_path / "d"),
            "--kubeconfig",
            str(kubeconfig),
        ],
        tmp_path / "worker.log",
    )
    try:
        resolver = wait_stored(w, N_EXCHANGES)["resolver"]
        assert resolver["failing"] == ["pods"], resolver
        assert resolver["synced"] is False
        error = resolver["last_error"]
        assert error.startswith("pods (v1): 403 Forbidden: "), error
        assert (
            'cannot list resource "pods"' in error
            and "system:serviceaccount:kshark:no-pods" in error
        )
        assert resolver["kinds"]["services"]["synced"] is True
        got = by_path(entries(tmp_path / "d"))
        assert len(got) == N_EXCHANGES
        # A pod no Service selects: only the pod could name it.
        assert (got["/e6"]["src"]["name"], got["/e6"]["src"]["pod"]) == ("", None)
        # A pod behind a Service: the EndpointSlice still names the Service, without the pod.
        e2 = got["/e2"]["dst"]
        assert (e2["name"], e2["pod"], e2["service"]["metadata"]["name"]) == (
            "cart.shop",
            None,
            "cart",
        )
        assert got["/e1"]["dst"]["name"] == "cart.shop"  # a ClusterIP
        assert got["/e5"]["src"]["name"] == "node-a"
    finally:
        w.kill()
