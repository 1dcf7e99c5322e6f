"""The hub's acceptance scenario, live: nodes capturing real traffic, one hub stream in front.

Four node namespaces on one bridge (tests/support/netns.netns_star); in each a real HTTP
server (python -m http.server) and a real `kshark-worker --iface eth0` capturing its traffic;
in the hub namespace a real `kshark-hub` with a workers file listing three of the nodes, a real
client sending requests to every node, and the test's websocket clients (tests/support/ws_client.py).
On one open hub stream:

- every node's entries arrive, each with its node's `node.name`;
- node 1's worker is killed with SIGKILL: the stream goes on with the others, and says so;
- it is restarted on the same data directory: its new entries arrive;
- node 3 is added to the workers file mid-stream: it joins;
- at the end, what arrived from each worker is exactly what that worker stored: no duplicates,
  no gaps (packets sent while a worker was dead were never captured, so they are not gaps);

and beside it: a bad filter is refused and contacts no worker; limit(n) counts across workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns as nh
from tests.support.store import stored_ids

pytestmark = pytest.mark.live

PY = sys.executable
BIN = Path(sys.executable).parent
WS_CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "ws_client.py")
WORKER_PORT = 30001
HUB_PORT = 8899
HTTP_PORT = 8080
STEP_S = 20.0  # the longest any single wait may take
QUERY = 'request.path == "/hello.txt"'

TRAFFIC = r"""
import sys, time, urllib.request
ips, n = sys.argv[1:], 0
while True:
    for ip in ips:
        try:
            urllib.request.urlopen(f"http://{ip}:8080/hello.txt?seq={n}", timeout=2).read()
        except OSError:
            pass
    n += 1
    time.sleep(0.04)
"""


class Lines:
    """A process whose stdout lines are collected by a thread, for polling from the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.snapshot() if line.startswith("{")]

    def entries(self) -> list[dict[str, Any]]:
        return [f for f in self.frames() if "id" in f]

    def states(self, worker: str) -> list[str]:
        return [
            f["worker"]["state"]
            for f in self.frames()
            if isinstance(f.get("worker"), dict) and f["worker"]["id"] == worker
        ]

    def close_code(self) -> int | None:
        for line in self.snapshot():
            if line.startswith("#close "):
                return int(line.split()[1]) if line.split()[1] != "None" else None
        return None


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
def star() -> Iterator[nh.Star]:
    with nh.netns_star(4) as s:
        yield s


def test_hub_in_front_of_live_nodes(star: nh.Star, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[Any]] = []

    def start(ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = nh.run_in_ns(ns, argv, **kw)
        procs.append(proc)
        return proc

    def start_worker(i: int) -> subprocess.Popen[Any]:
        node = star.nodes[i]
        argv = [
            str(BIN / "kshark-worker"), "--iface", node.iface, "--filter", f"tcp port {HTTP_PORT}",
            "--node-name", f"node-{i}", "--host", node.ip, "--port", str(WORKER_PORT),
            "--data-dir", str(tmp_path / f"node{i}"), "--log-level", "WARNING",
        ]  # fmt: skip
        return start(node.ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(first_frame: str, *extra: str) -> Lines:
        url = f"ws://{star.hub_ip}:{HUB_PORT}/api/wsFull"
        argv = [PY, WS_CLIENT, url, first_frame, *extra]
        return Lines(start(star.hub_ns, argv, stdout=subprocess.PIPE, text=True))

    def worker_status(i: int) -> dict[str, Any]:
        url = f"http://{star.nodes[i].ip}:{WORKER_PORT}/status"
        return json.loads(nh.ns_run(star.hub_ns, ["curl", "-s", "--max-time", "5", url]).stdout)

    def worker_ready(i: int) -> bool:
        url = f"http://{star.nodes[i].ip}:{WORKER_PORT}/status"
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url]
        return nh.ns_run(star.hub_ns, argv, check=False).stdout == "200"

    address = [f"{node.ip}:{WORKER_PORT}" for node in star.nodes]
    listing = tmp_path / "workers"
    try:
        webroot = tmp_path / "www"
        webroot.mkdir()
        (webroot / "hello.txt").write_text("hello from a node\n")
        for node in star.nodes:
            start(node.ns, [PY, "-m", "http.server", "--bind", node.ip, str(HTTP_PORT),
                            "--directory", str(webroot)],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        workers = [start_worker(i) for i in range(4)]
        for i, node in enumerate(star.nodes):
            nh.wait_for_tcp(star.hub_ns, node.ip, HTTP_PORT)
            # Listening is not ready: a worker serves streams once its store is open (until
            # then it refuses them, and the hub would tell the stream `down` first).
            wait_for(f"node {i} ready", lambda i=i: worker_ready(i))
        listing.write_text("".join(f"{a}\n" for a in address[:3]))
        start(
            star.hub_ns,
            [str(BIN / "kshark-hub"), "--workers-file", str(listing),
             "--host", star.hub_ip, "--port", str(HUB_PORT), "--log-level", "WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        nh.wait_for_tcp(star.hub_ns, star.hub_ip, HUB_PORT)
        traffic = start(star.hub_ns, [PY, "-c", TRAFFIC, *(n.ip for n in star.nodes)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

        stream = client(json.dumps({"query": QUERY}))

        def count(worker: str) -> int:
            return sum(1 for e in stream.entries() if e["worker"] == worker)

        # Every node in the file flows, with the right node name.
        for i in range(3):
            wait_for(f"entries from node {i}", lambda i=i: count(address[i]) >= 5)

        # SIGKILL node 1's worker: the others keep flowing; JSON clients are told.
        workers[1].kill()
        workers[1].wait(10)
        wait_for("node 1 reported down", lambda: stream.states(address[1])[-1:] == ["down"])
        before = {i: count(address[i]) for i in (0, 2)}
        for i in (0, 2):
            wait_for(f"node {i} flowing", lambda i=i: count(address[i]) >= before[i] + 5)
        at_restart = count(address[1])

        # Restarted on the same data directory: its new entries arrive.
        workers[1] = start_worker(1)
        wait_for("node 1 back up", lambda: stream.states(address[1])[-1:] == ["up"])
        wait_for("node 1 flowing again", lambda: count(address[1]) >= at_restart + 5)

        # Node 3 joins through the workers file while the stream is open.
        listing.write_text("".join(f"{a}\n" for a in address))
        wait_for("node 3 joined", lambda: count(address[3]) >= 5)

        # A bad filter: the error frame, close 1008, and no worker asked for a stream.
        served = [worker_status(i)["clients_total"] for i in range(4)]
        bad = client("response.status ==")
        wait_for("bad filter refused", lambda: bad.close_code() is not None)
        assert bad.close_code() == 1008
        (err,) = bad.frames()
        assert err["error"]["type"] == "kfl" and err["error"]["line"] == 1
        assert [worker_status(i)["clients_total"] for i in range(4)] == served

        # limit(n) counts across every worker.
        limited = client(f"{QUERY} and limit(7)")
        wait_for("limited stream closed", lambda: limited.close_code() is not None)
        assert limited.close_code() == 1000 and len(limited.entries()) == 7

        # Stop the traffic, let the last entries through, then compare with the data dirs.
        nh.stop_process(traffic)
        final: dict[str, Any] = {}

        def settled() -> bool:
            # One consistent snapshot: what each worker stores, and what the stream received.
            stored = {a: stored_ids(tmp_path / f"node{i}", a) for i, a in enumerate(address)}
            entries = stream.entries()
            got = {e["id"] for e in entries}
            ok = all({x for x in got if x.startswith(a + "/")} == stored[a] for a in address)
            if ok:
                final.update(stored=stored, entries=entries)
            return ok

        wait_for("every stored entry delivered", settled)
        time.sleep(1.0)  # late entries (connections still closing) land in both, or neither
        wait_for("every stored entry delivered, after a quiet second", settled)
        stored, entries = final["stored"], final["entries"]
        node1_states = stream.states(address[1])
        stream_closed = stream.close_code()
    finally:
        for proc in reversed(procs):
            nh.stop_process(proc)

    ids = Counter(e["id"] for e in entries)
    assert max(ids.values()) == 1, "an entry arrived twice"
    for i in range(4):
        mine = [e for e in entries if e["worker"] == address[i]]
        assert len(mine) == len(stored[address[i]]) >= 5
        assert {e["node"]["name"] for e in mine} == {f"node-{i}"}
        assert all(e["request"]["path"] == "/hello.txt" for e in mine)
    assert node1_states == ["up", "down", "up"]
    assert stream_closed is None  # the stream was never ended by a worker failing
