"""End to end: the installed `kshark-worker` console script, run as a user runs it.

Every test starts the real executable as a subprocess and judges it only by what a user sees:
the exit code, stdout/stderr, the files in the data directory, the API (plain HTTP, `wscat`, a
websocket follower). Replay tests use the demo capture and shared real captures; the live tests
(root) build private network namespaces (tests/support/netns.py), run nginx in one and
curl in the other, and run the worker inside the server namespace on its veth.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns as nh
from tests.support.worker_cli import (
    DEMO,
    FIXTURES,
    SHARED_PCAPS,
    SHUTDOWN_BUDGET_S,
    STEP_TIMEOUT_S,
    LineReader,
    ServingWorker,
    entries,
    entry_files,
    parse_summary,
    pcap_files,
    read_pcap,
    run_once,
    worker_bin,
)
from tests.support.wscat import wscat_binary, wscat_lines

WS_CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "ws_client.py")
PY = sys.executable

# What the demo capture holds (scripts/make_demo_capture.py): six keep-alive connections of four
# exchanges each, 108 packets.
DEMO_PACKETS = 108
DEMO_CONNECTIONS = 6
DEMO_ENTRIES = 24


def once_ok(data_dir: Path, *pcaps: Path | str) -> dict[str, Any]:
    args = [a for p in pcaps for a in ("--pcap", str(p))]
    res = run_once(*args, "--data-dir", str(data_dir))
    assert res.returncode == 0, res.stderr
    return parse_summary(res.stdout)


def shape(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an exchange independently of the stream number it was given."""
    return (
        entry["index"],
        entry["timestamp"],
        entry["request"]["method"],
        entry["request"]["url"],
        entry["response"].get("status"),
        entry["src"]["port"],
    )


def by_stream(items: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for e in items:
        out.setdefault(int(e["stream"].removesuffix(".pcap")), []).append(e)
    return out


# ---- --once replay ------------------------------------------------------------------------------


def test_once_replays_the_demo_into_files_named_per_entry_md(tmp_path: Path) -> None:
    data = tmp_path / "D"
    res = run_once("--pcap", str(DEMO), "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # a clean capture: nothing to warn about
    summary = parse_summary(res.stdout)
    assert summary["packets"] == DEMO_PACKETS
    assert summary["connections"] == DEMO_CONNECTIONS
    assert summary["protocols"] == {"http": DEMO_CONNECTIONS}
    assert summary["entries"] == DEMO_ENTRIES
    assert summary["errors"] == summary["dropped"] == summary["warnings"] == 0

    files = entry_files(data)
    assert len(files) == DEMO_ENTRIES
    streams = by_stream(entries(data))
    assert sorted(streams) == list(range(1, DEMO_CONNECTIONS + 1))
    for stream, items in streams.items():
        assert [e["index"] for e in items] == list(range(len(items)))
        for e in items:
            name = f"{stream:012d}.pcap"
            assert e["stream"] == name
            assert e["entryFile"] == f"{stream:012d}_pcap-{e['index']}_entry.json"
            assert files[stream, e["index"]].name == e["entryFile"]
            assert e["id"] == f"{e['worker']}/{name}-{e['index']}"
            assert e["worker"] == "127.0.0.1:30001"  # --host/--port defaults
    # One pcap per connection, named by its stream, together holding exactly the demo's packets.
    pcaps = pcap_files(data)
    assert sorted(pcaps) == sorted(streams)
    stored = sorted(rec for p in pcaps.values() for rec in read_pcap(p))
    assert stored == sorted(read_pcap(DEMO))
    # Each connection's pcap holds that connection's packets only: its client port in every one.
    for stream, p in pcaps.items():
        port = int(streams[stream][0]["src"]["port"]).to_bytes(2, "big")
        assert all(port in frame[34:38] for _, frame in read_pcap(p))


def test_several_pcaps_are_processed_in_order_and_streams_continue(tmp_path: Path) -> None:
    second = FIXTURES / "short-and-keepalive.pcap"
    once_ok(tmp_path / "a", DEMO)
    once_ok(tmp_path / "b", second)
    summary = once_ok(tmp_path / "ab", DEMO, second)
    alone_a, alone_b = by_stream(entries(tmp_path / "a")), by_stream(entries(tmp_path / "b"))
    both = by_stream(entries(tmp_path / "ab"))
    assert summary["entries"] == DEMO_ENTRIES + 6
    assert summary["connections"] == len(alone_a) + len(alone_b) == len(both)
    # The first file's connections first, then the second's, numbering carried on.
    expected = list(alone_a.values()) + list(alone_b.values())
    assert sorted(both) == list(range(1, len(expected) + 1))
    assert [[shape(e) for e in both[s]] for s in sorted(both)] == [
        [shape(e) for e in items] for items in expected
    ]


def test_gzip_compressed_capture_gives_the_same_files(tmp_path: Path) -> None:
    compressed = tmp_path / "demo.pcap.gz"
    compressed.write_bytes(gzip.compress(DEMO.read_bytes()))
    plain = once_ok(tmp_path / "plain", DEMO)
    zipped = once_ok(tmp_path / "zipped", compressed)
    assert zipped == plain
    for sub in ("entries", "pcaps"):
        a = {p.name: p.read_bytes() for p in (tmp_path / "plain" / sub).iterdir()}
        b = {p.name: p.read_bytes() for p in (tmp_path / "zipped" / sub).iterdir()}
        assert len(a) > 0 and a == b


def test_truncated_capture_warns_and_keeps_its_entries(tmp_path: Path) -> None:
    capture = SHARED_PCAPS / "sv-http-mime-truncated.pcap"
    res = run_once("--pcap", str(capture), "--data-dir", str(tmp_path / "D"))
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, res.stderr
    assert str(capture) in warnings[0] and "truncated" in warnings[0]
    assert "Traceback" not in res.stderr
    summary = parse_summary(res.stdout)
    assert summary["entries"] == 8 and summary["warnings"] == 1
    assert len(entry_files(tmp_path / "D")) == 8


@pytest.mark.parametrize("case", ["missing", "not-a-capture", "empty", "second-missing"])
def test_unusable_capture_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    bad = tmp_path / "input.pcap"
    if case == "not-a-capture":
        bad.write_text("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    elif case == "empty":
        bad.write_bytes(b"")
    pcaps = [DEMO, bad] if case == "second-missing" else [bad]
    args = [a for p in pcaps for a in ("--pcap", str(p))]
    res = run_once(*args, "--data-dir", str(tmp_path / "D"))
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"kshark-worker: {bad}: ")
    reason = {"missing": "no such file", "second-missing": "no such file"}.get(
        case, "not a pcap or pcapng capture"
    )
    assert reason in lines[0]
    # Every file is checked before any is processed: nothing of the good first file was stored.
    assert not (tmp_path / "D" / "entries").exists() or not list(
        (tmp_path / "D" / "entries").iterdir()
    )


def test_second_run_on_the_same_data_dir_continues_the_stream_counter(tmp_path: Path) -> None:
    data = tmp_path / "D"
    once_ok(data, DEMO)
    first = {p.name: p.read_bytes() for p in entry_files(data).values()}
    first_streams = set(pcap_files(data))
    once_ok(data, DEMO)
    files = entry_files(data)
    assert len(files) == 2 * DEMO_ENTRIES
    # The first run's files are untouched; the second run's connections got new numbers.
    assert {n: p.read_bytes() for n, p in ((p.name, p) for p in files.values()) if n in first} == (
        first
    )
    new_streams = set(pcap_files(data)) - first_streams
    assert len(new_streams) == DEMO_CONNECTIONS
    assert min(new_streams) > max(first_streams)
    assert {s for s, _ in files} == first_streams | new_streams


# ---- serving ------------------------------------------------------------------------------------


@pytest.fixture
def serving_demo(tmp_path: Path) -> Iterator[ServingWorker]:
    w = ServingWorker.start(
        ["--pcap", str(DEMO), "--data-dir", str(tmp_path / "served")], tmp_path / "worker.log"
    )
    try:
        w.wait_for_entries(DEMO_ENTRIES)
        yield w
    finally:
        w.kill()


@pytest.mark.tools
def test_worker_keeps_serving_after_replay_and_wscat_streams_the_matches(
    tmp_path: Path, serving_demo: ServingWorker
) -> None:
    wscat_binary()  # before anything else: a missing wscat is a setup failure, said first
    # What the filter must select, by a plain Python filter over a --once run's files.
    once_ok(tmp_path / "once", DEMO)
    expected = [e for e in entries(tmp_path / "once") if e["response"].get("status", 0) > 300]
    assert Counter(e["response"]["status"] for e in expected) == {301: 3, 404: 3, 500: 3}

    w = serving_demo
    w.wait_for_log("kshark-worker: 108 packets")  # the replay's end: the worker must go on serving
    assert w.proc.poll() is None
    assert w.get("/echo") == (200, b"It's running.")
    lines = wscat_lines(w.port, "response.status > 300", tmp_path)
    got = [json.loads(line) for line in lines]
    assert all(isinstance(g, dict) for g in got)
    assert len(got) == len(expected) == 9

    def same_exchange(e: dict[str, Any]) -> dict[str, Any]:
        # The worker's API address is part of the id: --once used the default port.
        return {k: v for k, v in e.items() if k not in ("id", "worker")}

    assert [same_exchange(g) for g in got] == [same_exchange(e) for e in expected]
    assert [g["id"] for g in got] == [
        f"127.0.0.1:{w.port}/{e['stream']}-{e['index']}" for e in expected
    ]
    # Exactly the stored bytes, one compact JSON object per line.
    stored = entry_files(tmp_path / "served")
    for line, g in zip(lines, got, strict=True):
        stream = int(g["stream"].removesuffix(".pcap"))
        assert line.encode() == stored[stream, g["index"]].read_bytes().strip()
    assert w.proc.poll() is None  # still serving after the client left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_promptly_with_files_complete(
    serving_demo: ServingWorker, tmp_path: Path, signum: int
) -> None:
    rc, took = serving_demo.stop(signum)
    assert rc == 0, serving_demo.log()
    assert took < SHUTDOWN_BUDGET_S
    assert "Traceback" not in serving_demo.log()
    data = tmp_path / "served"
    assert len(entry_files(data)) == DEMO_ENTRIES
    assert all(json.loads(p.read_bytes())["id"] for p in entry_files(data).values())
    stored = sorted(rec for p in pcap_files(data).values() for rec in read_pcap(p))
    assert stored == sorted(read_pcap(DEMO))
    # The directory is released: another worker can take it over at once.
    once_ok(data, DEMO)
    assert len(entry_files(data)) == 2 * DEMO_ENTRIES


# ---- live capture (root, network namespaces) ---------------------------------------------------

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  keepalive_timeout 30s;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  types {{ text/plain txt; application/json json; }}
  server {{
    listen {ip}:80;
    listen {ip}:8080;
    root {prefix}/www;
    location = /submit {{ return 201 "created\\n"; }}
  }}
}}
"""


def start_nginx(ns: str, ip: str, prefix: Path) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    www = prefix / "www"
    www.mkdir(parents=True)
    (www / "hello.txt").write_text("hello from the server namespace\n")
    (www / "data.json").write_text(json.dumps({"items": list(range(50))}))
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, ip=ip))
    proc = nh.run_in_ns(
        ns, [nginx, "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for port in (80, 8080):
        nh.wait_for_tcp(ns, ip, port)
    return proc


@pytest.fixture
def pair() -> Iterator[nh.Pair]:
    nh.remove_stale_namespaces()
    with nh.netns_pair() as p:
        yield p


@pytest.fixture
def nginx(pair: nh.Pair, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_nginx(pair.srv_ns, pair.srv_ip, tmp_path / "nginx")
    try:
        yield proc
    finally:
        nh.stop_process(proc)


class Follower:
    """tests/support/ws_client.py inside a namespace: a `/api/wsFull` stream opened before any
    traffic."""

    def __init__(self, ns: str, port: int, first_frame: str) -> None:
        self.proc = nh.run_in_ns(
            ns, [PY, WS_CLIENT, f"ws://127.0.0.1:{port}/api/wsFull", first_frame, "--ready"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines = LineReader(self.proc)
        first = self.lines.readline(STEP_TIMEOUT_S)
        if first != "#ready":
            nh.stop_process(self.proc)
            raise AssertionError(f"follower: {first!r} {self.proc.stderr.read()!r}")  # type: ignore[union-attr]

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            line = self.lines.readline(STEP_TIMEOUT_S)
            assert line is not None and not line.startswith("#close"), (line, out)
            out.append(json.loads(line))
        return out

    def nothing_more(self, wait_s: float) -> None:
        try:
            line = self.lines.readline(wait_s)
        except AssertionError:
            return  # timed out: nothing arrived, as expected
        raise AssertionError(f"unexpected frame: {line!r}")

    def close(self) -> None:
        nh.stop_process(self.proc)


def curl(ns: str, *args: str) -> list[tuple[str, int]]:
    """One curl run (several URLs share a connection when curl can): [(status, local port)].

    `--next` starts a new option group in curl, so every group gets its own -s/-w."""
    each = ["-s", "-w", "%{http_code} %{local_port}\\n"]
    argv = ["curl", *each]
    for a in args:
        argv += [a, *each] if a == "--next" else [a]
    out = nh.ns_run(ns, argv, timeout=STEP_TIMEOUT_S).stdout
    return [(code, int(port)) for code, port in (line.split() for line in out.splitlines())]


def live_worker(pair: nh.Pair, tmp_path: Path, *extra: str) -> ServingWorker:
    return ServingWorker.start(
        ["--iface", pair.srv_if, "--node-name", "node-a", "--data-dir", str(tmp_path / "D"),
         *extra],
        tmp_path / "worker.log",
        prefix=("ip", "netns", "exec", pair.srv_ns),
    )  # fmt: skip


def ns_status(pair: nh.Pair, w: ServingWorker) -> dict[str, Any]:
    out = nh.ns_run(pair.srv_ns, ["curl", "-s", "--max-time", "5", w.url("/status")]).stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.live
@pytest.mark.tools
def test_live_requests_arrive_on_a_stream_opened_before_the_traffic(
    pair: nh.Pair, nginx: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    w = live_worker(pair, tmp_path)
    follower = None
    try:
        # history false: only entries written after the stream opened can arrive on it.
        follower = Follower(pair.srv_ns, w.port, json.dumps({"query": "", "history": False}))
        base, o = f"http://{pair.srv_ip}", ("-o", "/dev/null")
        runs = [
            # (curl arguments, [(method, path, status, port)] it must produce)
            ([*o, f"{base}/hello.txt"], [("GET", "/hello.txt", 200, 80)]),
            # keep-alive: three requests on one connection
            ([*o, f"{base}/hello.txt", *o, f"{base}/data.json", *o, f"{base}/missing"],
             [("GET", "/hello.txt", 200, 80), ("GET", "/data.json", 200, 80),
              ("GET", "/missing", 404, 80)]),
            ([*o, "-d", "a=1&b=2", f"{base}/submit"], [("POST", "/submit", 201, 80)]),
            # POST then GET on one keep-alive connection
            ([*o, "-d", "x=1", f"{base}/submit", "--next", *o, f"{base}/data.json?page=2"],
             [("POST", "/submit", 201, 80), ("GET", "/data.json", 200, 80)]),
            # not keep-alive: an explicit close, and HTTP/1.0
            ([*o, "-H", "Connection: close", f"{base}/data.json"], [("GET", "/data.json", 200, 80)]),
            ([*o, "-0", f"{base}/hello.txt"], [("GET", "/hello.txt", 200, 80)]),
            ([*o, f"{base}:8080/missing.txt"], [("GET", "/missing.txt", 404, 8080)]),
        ]  # fmt: skip
        sent: list[tuple[str, str, int, int, int]] = []  # + the client's port
        for args, want in runs:
            results = curl(pair.cli_ns, *args)
            assert [code for code, _ in results] == [str(s) for _, _, s, _ in want]
            sent += [(*x, local) for x, (_, local) in zip(want, results, strict=True)]
        got = follower.take(len(sent))
        follower.nothing_more(0.5)
    finally:
        if follower is not None:
            follower.close()
        w.kill()
    assert [
        (e["request"]["method"], e["request"]["path"], e["response"]["status"],
         int(e["dst"]["port"]), int(e["src"]["port"]))
        for e in got
    ] == sent  # fmt: skip
    for e in got:
        assert e["node"]["name"] == "node-a"
        assert e["src"]["ip"] == pair.cli_ip and e["dst"]["ip"] == pair.srv_ip
        assert e["error"] is None and e["outgoing"] is False
    post = next(e for e in got if e["request"]["method"] == "POST")
    assert post["request"]["postData"]["text"] == "a=1&b=2"
    # Connections as curl made them: the keep-alive runs share a stream, in request order.
    streams = [e["stream"] for e in got]
    assert streams[1] == streams[2] == streams[3] and streams[5] == streams[6]
    assert [e["index"] for e in got[1:4]] == [0, 1, 2]
    assert len(set(streams)) == len(runs)
    assert [e["request"]["httpVersion"] for e in got][-2] == "HTTP/1.0"


@pytest.mark.live
@pytest.mark.tools
def test_live_filter_restricts_capture_and_signal_flushes(
    pair: nh.Pair, nginx: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    w = live_worker(pair, tmp_path, "--filter", "tcp port 80")
    follower = None
    try:
        follower = Follower(pair.srv_ns, w.port, "http")  # raw KFL, as wscat sends it
        base = f"http://{pair.srv_ip}"
        # The port-8080 request comes between the two port-80 ones: unfiltered it would be
        # the second entry on the stream.
        for url in (f"{base}/hello.txt", f"{base}:8080/hello.txt", f"{base}/data.json"):
            assert curl(pair.cli_ns, "-o", "/dev/null", url)[0][0] == "200"
        got = follower.take(2)
        follower.nothing_more(0.5)
        st = ns_status(pair, w)
        rc, _ = w.stop(signal.SIGINT)
    finally:
        if follower is not None:
            follower.close()
        w.kill()
    assert [(e["request"]["path"], e["dst"]["port"]) for e in got] == [
        ("/hello.txt", "80"),
        ("/data.json", "80"),
    ]
    assert st["entries"] == 2 and st["connections"] == 2
    assert rc == 0, w.log()
    # Flushed on SIGINT: both connections' pcaps, complete, with only port-80 packets.
    pcaps = pcap_files(tmp_path / "D")
    assert len(pcaps) == 2
    for p in pcaps.values():
        frames = [f for _, f in read_pcap(p)]
        assert frames[0][47] & 0x02  # the client's SYN comes first
        assert all(b"\x00\x50" in (f[34:36], f[36:38]) for f in frames)
        assert sum(1 for f in frames if f[47] & 0x01) == 2  # a FIN each way
    assert st["packets"] == sum(len(read_pcap(p)) for p in pcaps.values())


@pytest.fixture
def world_writable_dir() -> Iterator[Path]:
    # An unprivileged user must be able to create the data directory, so the refusal it gets is
    # about capture and nothing else (pytest's tmp_path is private to root).
    d = Path(tempfile.mkdtemp(prefix="ksk-worker-"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.live
@pytest.mark.parametrize(
    "drop_privilege",
    [
        # An ordinary user. It keeps CAP_DAC_READ_SEARCH (read and search any file, nothing
        # else) so that it can run the checkout's venv wherever the clone lives: root's home
        # and fresh temp directories are 0700, and `nobody` could not even start python there.
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search"],
        # still root, but without CAP_NET_RAW (as in a locked-down container)
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"],
        # root with no capability at all
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"],
    ],
    ids=["nobody", "root-without-cap-net-raw", "root-without-capabilities"],
)  # fmt: skip
def test_live_start_without_privilege_is_refused_in_one_line(
    pair: nh.Pair, world_writable_dir: Path, drop_privilege: list[str]
) -> None:
    res = nh.ns_run(
        pair.srv_ns,
        [*drop_privilege, worker_bin(), "--iface", pair.srv_if, "--port", "0",
         "--data-dir", str(world_writable_dir / "D")],
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "kshark-worker: live capture needs root or CAP_NET_RAW "
        f"(AF_PACKET socket on {pair.srv_if}: Operation not permitted)"
    ]


@pytest.mark.live
def test_live_unknown_interface_is_refused_in_one_line(pair: nh.Pair, tmp_path: Path) -> None:
    res = nh.ns_run(
        pair.srv_ns,
        [worker_bin(), "--iface", "nosuch0", "--port", "0", "--data-dir", str(tmp_path / "D")],
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == ["kshark-worker: no such network interface: 'nosuch0'"]
