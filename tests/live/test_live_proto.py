"""DNS live, end to end: a real resolver, real queries, entries through the worker and the hub.

Two throw-away namespaces (tests/support/netns.py): in "srv" a real `dnsmasq` (Debian's)
answering for a zone of its own, and a real `kshark-worker --iface` capturing that interface
with the documented filter for DNS (`tcp or udp port 53`); in "cli" real `dig` queries (UDP, and
one over TCP), a real `kshark-hub` in front of the worker, and websocket clients
(tests/support/ws_client.py). What a user checks: each query is one entry on the worker's
`/api/wsFull` and on the hub's, with the answers `dig` itself printed; the summary form
(`/api/ws`) names them; KFL on the DNS fields selects the right ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns as nh

pytestmark = pytest.mark.live

PY = sys.executable
BIN = Path(sys.executable).parent
WS_CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "ws_client.py")
WORKER_PORT = 30001
HUB_PORT = 8899
STEP_S = 20.0

ZONE = "shop.test"
CATALOGUE = f"catalogue.{ZONE}"
# (dig arguments, question name, question type, layer4): each is one entry.
QUERIES = [
    ([CATALOGUE, "A"], CATALOGUE, "A", "udp"),
    ([CATALOGUE, "AAAA"], CATALOGUE, "AAAA", "udp"),
    ([ZONE, "TXT"], ZONE, "TXT", "udp"),
    ([f"_grpc._tcp.{ZONE}", "SRV"], f"_grpc._tcp.{ZONE}", "SRV", "udp"),
    ([ZONE, "MX"], ZONE, "MX", "udp"),
    (["-x", "10.213.9.9"], "9.9.213.10.in-addr.arpa", "PTR", "udp"),
    ([f"nope.{ZONE}", "A"], f"nope.{ZONE}", "A", "udp"),
    (["+tcp", CATALOGUE, "A"], CATALOGUE, "A", "tcp"),
]


class Lines:
    """A process whose stdout lines a thread collects, for polling from the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            frames = [json.loads(x) for x in self.lines if not x.startswith("#")]
        return [f for f in frames if "id" in f]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = STEP_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def _no_stale_namespaces() -> None:
    nh.remove_stale_namespaces()


@pytest.fixture
def pair() -> Iterator[nh.Pair]:
    with nh.netns_pair() as p:
        yield p


def test_dns_live_through_worker_and_hub(pair: nh.Pair, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[Any]] = []

    def start(ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = nh.run_in_ns(ns, argv, **kw)
        procs.append(proc)
        return proc

    def stream(url: str, query: str) -> Lines:
        argv = [PY, WS_CLIENT, url, query]
        return Lines(start(pair.cli_ns, argv, stdout=subprocess.PIPE, text=True))

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    answers: dict[int, list[str]] = {}
    try:
        start(pair.srv_ns, [
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--listen-address={pair.srv_ip}", "--bind-interfaces", "--port=53",
            f"--local=/{ZONE}/", f"--host-record={CATALOGUE},10.213.9.9,fd00::9",
            f"--txt-record={ZONE},v=spf1 -all", f"--mx-host={ZONE},mx.{ZONE},10",
            f"--srv-host=_grpc._tcp.{ZONE},{CATALOGUE},50051,0,100",
            f"--ptr-record=9.9.213.10.in-addr.arpa,{CATALOGUE}",
        ], **quiet)  # fmt: skip
        start(pair.srv_ns, [
            str(BIN / "kshark-worker"), "--iface", pair.srv_if, "--filter", "tcp or udp port 53",
            "--host", pair.srv_ip, "--port", str(WORKER_PORT), "--node-name", "node-dns",
            "--data-dir", str(tmp_path / "worker"), "--log-level", "WARNING",
        ], **quiet)  # fmt: skip
        nh.wait_for_tcp(pair.cli_ns, pair.srv_ip, 53)
        nh.wait_for_tcp(pair.cli_ns, pair.srv_ip, WORKER_PORT)
        start(pair.cli_ns, [
            str(BIN / "kshark-hub"), "--worker", f"{pair.srv_ip}:{WORKER_PORT}",
            "--host", pair.cli_ip, "--port", str(HUB_PORT), "--log-level", "WARNING",
        ], **quiet)  # fmt: skip
        nh.wait_for_tcp(pair.cli_ns, pair.cli_ip, HUB_PORT)
        worker = f"ws://{pair.srv_ip}:{WORKER_PORT}/api"
        full = stream(f"{worker}/wsFull", "dns")
        summary = stream(f"{worker}/ws", "dns")
        hub = stream(f"ws://{pair.cli_ip}:{HUB_PORT}/api/wsFull", "dns")
        hub_ip = stream(f"ws://{pair.cli_ip}:{HUB_PORT}/api/wsFull",
                        'dns and response.answers[0].ip == "10.213.9.9"')  # fmt: skip

        for i, (args, _, _, _) in enumerate(QUERIES):
            out = nh.ns_run(pair.cli_ns, ["dig", f"@{pair.srv_ip}", "+tries=1", "+time=5",
                                          "+short", *args], timeout=STEP_S).stdout  # fmt: skip
            answers[i] = [line.rstrip(".").strip('"') for line in out.splitlines()]
        n = len(QUERIES)
        for name, lines in (("worker", full), ("summary", summary), ("hub", hub)):
            wait_for(f"{n} entries on the {name} stream", lambda s=lines: len(s.entries()) >= n)
        wait_for("2 A entries on the hub's answer-ip stream", lambda: len(hub_ip.entries()) >= 2)
        time.sleep(0.5)  # nothing more may arrive: one entry per query
        entries = full.entries()
        hub_entries, summaries, by_ip = hub.entries(), summary.entries(), hub_ip.entries()
    finally:
        for proc in reversed(procs):
            nh.stop_process(proc)

    assert len(entries) == n and len(hub_entries) == n and len(summaries) == n
    assert {e["id"] for e in hub_entries} == {e["id"] for e in entries}
    assert all(e["node"]["name"] == "node-dns" for e in entries)
    got = sorted(entries, key=lambda e: e["timestamp"])
    for i, ((_, name, qtype, layer4), e) in enumerate(zip(QUERIES, got, strict=True)):
        assert e["error"] is None, e["error"]
        assert e["protocol"]["abbr"] == "DNS" and e["protocol"]["layer4"] == layer4
        assert e["request"]["questions"][0]["name"] == name
        assert e["request"]["questions"][0]["type"] == qtype
        assert e["src"]["ip"] == pair.cli_ip
        assert (e["dst"]["ip"], e["dst"]["port"]) == (pair.srv_ip, "53")
        resp = e["response"]
        values = [a["ip"] or a["txts"] or a["srv"] or a["mx"] or a["ptr"] for a in resp["answers"]]
        assert values == answers[i], (name, qtype)
        assert resp["rcode"] == (3 if name.startswith("nope.") else 0)
    assert {e["request"]["questions"][0]["type"] for e in by_ip} == {"A"}
    assert {e["response"]["answers"][0]["ip"] for e in by_ip} == {"10.213.9.9"}
    s = {x["summary"] + "/" + x["method"]: x["status"] for x in summaries}
    assert s[f"{CATALOGUE}/AAAA"] == 0 and s[f"nope.{ZONE}/A"] == 3
    assert all(x["proto"]["abbr"] == "DNS" for x in summaries)
