"""Live capture for real: AF_PACKET rings inside throw-away network namespaces (needs root).

Each test builds its own namespaces (tests/support/netns.py), runs a real HTTP server and
real clients (curl, urllib) there, captures with kshark.live in a separate process
(tests/support/capture_runner.py, started with `ip netns exec`) and checks what a user would: every
request and response is in the capture, exactly what tcpdump sees on the same interface, with
kernel nanosecond timestamps; loopback packets once; the BPF filter really filters; losses are
counted; no privilege → a clear refusal. Frames are decoded with dpkt here, independently of
kshark's own decoder.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from kshark import live
from tests.support import netns as nh

pytestmark = pytest.mark.live

RUNNER = str(Path(__file__).resolve().parents[1] / "support" / "capture_runner.py")
PY = sys.executable
STEP_TIMEOUT_S = 20.0  # any single wait (process start, client run, capture stop)
SETTLE_S = 0.2  # lets the last FIN/ACKs of a finished client cross the veth before stopping


@pytest.fixture(scope="module", autouse=True)
def _no_stale_namespaces() -> None:
    nh.remove_stale_namespaces()


@pytest.fixture
def pair() -> Iterator[nh.Pair]:
    with nh.netns_pair() as p:
        yield p


@pytest.fixture
def webroot(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(b"hello from the server namespace\n")
    # Large enough to need many segments (and GSO super-frames on veth).
    (tmp_path / "big.bin").write_bytes(os.urandom(300_000))
    return tmp_path


class Capture:
    """One capture_runner process inside a namespace."""

    def __init__(self, ns: str, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.proc = nh.run_in_ns(
            ns,
            [*prefix, PY, RUNNER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.first_line = self._readline()

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], STEP_TIMEOUT_S)
        if not ready:
            nh.stop_process(self.proc)
            raise AssertionError("capture runner did not start in time")
        line = self.proc.stdout.readline()
        if not line:
            _, err = self.proc.communicate(timeout=STEP_TIMEOUT_S)
            raise AssertionError(f"capture runner died: {err[-2000:]}")
        return line.strip()

    def resume(self) -> None:
        """Ends a --stall-until-line stall."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self) -> dict[str, Any]:
        """Stop gracefully (stdin EOF) and return {"frames": [(ts, linktype, bytes)], "stats"}."""
        assert self.first_line == "READY", self.first_line
        out, err = self.proc.communicate(input="", timeout=STEP_TIMEOUT_S)
        assert self.proc.returncode == 0, err[-2000:]
        result = json.loads(out.strip().splitlines()[-1])
        result["frames"] = [(ts, lt, base64.b64decode(f)) for ts, lt, f in result["frames"]]
        return result

    def close(self) -> None:
        nh.stop_process(self.proc)


def start_http_server(ns: str, host: str, port: int, root: Path) -> subprocess.Popen[Any]:
    proc = nh.run_in_ns(
        ns,
        [PY, "-m", "http.server", "--bind", host, str(port), "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Probe before any capture starts, so the probe connection is in no capture.
    nh.wait_for_tcp(ns, host, port)
    return proc


def curl(ns: str, *args: str, check: bool = True) -> str:
    """Runs curl in `ns`; returns the HTTP status code it saw ("000": no response)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args]
    return nh.ns_run(ns, argv, timeout=STEP_TIMEOUT_S, check=check).stdout.strip()


def decode_ip(linktype: int, frame: bytes) -> Any:
    if linktype == live.LINKTYPE_ETHERNET:
        return dpkt.ethernet.Ethernet(frame).data
    assert linktype == live.LINKTYPE_LINUX_SLL, linktype
    return dpkt.sll.SLL(frame).data


def tcp_segments(frames: list[tuple[int, int, bytes]]) -> list[tuple[Any, ...]]:
    """(src, sport, dst, dport, seq, ack, flags, payload) of every TCP segment, in capture order."""
    segs = []
    for _, lt, frame in frames:
        ip = decode_ip(lt, frame)
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
            t = ip.data
            segs.append((ip.src, t.sport, ip.dst, t.dport, t.seq, t.ack, t.flags, bytes(t.data)))
    return segs


def http_conversations(
    frames: list[tuple[int, int, bytes]], port: int
) -> list[tuple[bytes, bytes]]:
    """Reassembles each connection to `port`: [(client bytes, server bytes)], by first SYN."""
    isn: dict[tuple[Any, ...], int] = {}
    data: dict[tuple[Any, ...], dict[int, bytes]] = defaultdict(dict)
    order: list[tuple[Any, ...]] = []
    for src, sport, dst, dport, seq, _, flags, payload in tcp_segments(frames):
        key = (src, sport, dst, dport)
        if flags & dpkt.tcp.TH_SYN:
            isn.setdefault(key, seq)
            if dport == port and key not in order:
                order.append(key)
        if payload:
            # Offsets from the ISN, modulo 2^32: correct even if the sequence space wraps.
            data[key].setdefault((seq - isn[key] - 1) % 2**32, payload)

    def stream(key: tuple[Any, ...]) -> bytes:
        parts = data.get(key, {})
        out = b""
        for off in sorted(parts):
            out += parts[off][len(out) - off :] if off < len(out) else parts[off]
        return out

    return [(stream(k), stream((k[2], k[3], k[0], k[1]))) for k in order]


def first_line(b: bytes) -> str:
    return b.split(b"\r\n", 1)[0].decode()


# --------------------------------------------------------------------------------------------


def test_http_over_veth_is_captured_exactly_like_tcpdump(pair: nh.Pair, webroot: Path) -> None:
    srv = start_http_server(pair.srv_ns, pair.srv_ip, 80, webroot)
    tcpdump = nh.run_in_ns(
        pair.srv_ns,
        ["tcpdump", "-i", pair.srv_if, "-s", "0", "-U", "--immediate-mode",
         "--time-stamp-precision=nano", "-w", str(webroot / "tcpdump.pcap")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tcpdump.stderr is not None
    assert "listening on" in tcpdump.stderr.readline()
    cap = Capture(pair.srv_ns, "--iface", pair.srv_if)
    try:
        t0 = time.time_ns()
        base = f"http://{pair.srv_ip}"
        codes = [
            curl(pair.cli_ns, f"{base}/hello.txt"),
            curl(pair.cli_ns, f"{base}/missing.txt"),
            curl(pair.cli_ns, "-d", "a=1&b=2", f"{base}/form"),
        ]
        fetched = nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import sys, urllib.request as u; "
             "print(len(u.urlopen(sys.argv[1], timeout=10).read()))", f"{base}/big.bin"],
            timeout=STEP_TIMEOUT_S,
        )  # fmt: skip
        assert fetched.stdout.strip() == str((webroot / "big.bin").stat().st_size)
        time.sleep(SETTLE_S)
        t1 = time.time_ns()
        result = cap.finish()
    finally:
        cap.close()
        tcpdump.send_signal(2)
        tcpdump.communicate(timeout=STEP_TIMEOUT_S)
        nh.stop_process(srv)
    assert codes == ["200", "404", "501"]
    frames, stats = result["frames"], result["stats"]

    # Every request and its response, per connection, in order.
    convs = http_conversations(frames, 80)
    assert [first_line(c) for c, _ in convs] == [
        "GET /hello.txt HTTP/1.1",
        "GET /missing.txt HTTP/1.1",
        "POST /form HTTP/1.1",
        "GET /big.bin HTTP/1.1",
    ]
    assert [first_line(s).split(" ")[1] for _, s in convs] == ["200", "404", "501", "200"]
    assert convs[2][0].endswith(b"\r\n\r\na=1&b=2")
    assert convs[0][1].endswith(b"hello from the server namespace\n")
    assert convs[3][1].endswith((webroot / "big.bin").read_bytes())

    with open(webroot / "tcpdump.pcap", "rb") as f:
        reference = [(int(ts * 10**9), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
    # Exactly the same frames as tcpdump, and in the same order within each direction. Across
    # directions two capture sockets may legitimately interleave differently: the kernel hands
    # a packet to each socket from whichever CPU handles it, so an outgoing and an incoming
    # packet a few microseconds apart can reach the two rings in either order.
    ours = [f for _, _, f in frames]
    theirs = [f for _, f in reference]
    assert sorted(ours) == sorted(theirs)
    src_mac = {f[6:12] for f in theirs}
    for mac in src_mac:
        assert [f for f in ours if f[6:12] == mac] == [f for f in theirs if f[6:12] == mac]
    assert all(lt == live.LINKTYPE_ETHERNET for _, lt, _ in frames)
    # Kernel timestamps in nanoseconds: inside the test's window, close to tcpdump's (each
    # socket may stamp an outgoing packet itself), and not rounded to microseconds.
    assert all(t0 <= ts <= t1 for ts, _, _ in frames)
    by_frame = sorted((f, ts) for ts, _, f in frames)
    ref_by_frame = sorted((f, ts) for ts, f in reference)
    assert all(
        abs(ts - ref) < 5_000_000 for (_, ts), (_, ref) in zip(by_frame, ref_by_frame, strict=True)
    )
    assert any(ts % 1000 for ts, _, _ in frames)

    assert stats["packets"] == len(frames)
    assert stats["bytes"] == sum(len(f) for _, _, f in frames)
    assert stats["kernel_packets"] == len(frames)
    assert stats["kernel_drops"] == stats["our_drops"] == stats["duplicates_skipped"] == 0
    assert stats["truncated"] == 0
    assert stats["interfaces"][pair.srv_if]["packets"] == len(frames)


def test_loopback_packets_are_entered_once(pair: nh.Pair, webroot: Path) -> None:
    srv = start_http_server(pair.srv_ns, "127.0.0.1", 8080, webroot)
    cap = Capture(pair.srv_ns, "--iface", "lo")
    try:
        assert curl(pair.srv_ns, "http://127.0.0.1:8080/hello.txt") == "200"
        assert curl(pair.srv_ns, "http://127.0.0.1:8080/big.bin") == "200"
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
        nh.stop_process(srv)
    frames, stats = result["frames"], result["stats"]
    segs = tcp_segments(frames)
    assert len(segs) == len(frames)  # nothing but this TCP traffic on the namespace's lo
    assert len(set(segs)) == len(segs), "a TCP segment was entered twice"
    convs = http_conversations(frames, 8080)
    assert [first_line(c) for c, _ in convs] == ["GET /hello.txt HTTP/1.1", "GET /big.bin HTTP/1.1"]
    assert convs[1][1].endswith((webroot / "big.bin").read_bytes())
    # Each packet passed the tap twice (leaving and arriving); the leaving copy was skipped.
    assert stats["duplicates_skipped"] == stats["packets"] == len(frames)
    assert stats["kernel_packets"] == 2 * len(frames)


def test_any_interface_gives_cooked_frames_once_each(pair: nh.Pair, webroot: Path) -> None:
    srv = start_http_server(pair.srv_ns, pair.srv_ip, 80, webroot)
    local = start_http_server(pair.srv_ns, "127.0.0.1", 8080, webroot)
    cap = Capture(pair.srv_ns, "--iface", "any")
    try:
        assert curl(pair.cli_ns, f"http://{pair.srv_ip}/hello.txt") == "200"
        assert curl(pair.srv_ns, "http://127.0.0.1:8080/missing") == "404"
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
        nh.stop_process(srv)
        nh.stop_process(local)
    frames, stats = result["frames"], result["stats"]
    assert {lt for _, lt, _ in frames} == {live.LINKTYPE_LINUX_SLL}
    veth = http_conversations(frames, 80)
    lo = http_conversations(frames, 8080)
    assert [(first_line(c), first_line(s)[:12]) for c, s in veth] == [
        ("GET /hello.txt HTTP/1.1", "HTTP/1.0 200")
    ]
    assert [(first_line(c), first_line(s)[:12]) for c, s in lo] == [
        ("GET /missing HTTP/1.1", "HTTP/1.0 404")
    ]
    segs = tcp_segments(frames)
    assert len(set(segs)) == len(segs)
    # The SLL header says which direction each veth frame went: in (0) or out (4).
    to_client = socket.inet_aton(pair.cli_ip)
    pkttypes = {
        dpkt.sll.SLL(f).type
        for _, _, f in frames
        if isinstance(ip := decode_ip(113, f), dpkt.ip.IP) and ip.dst == to_client
    }
    assert pkttypes == {4}
    assert stats["duplicates_skipped"] > 0
    assert stats["interfaces"].keys() == {"any"}


def test_bpf_filter_runs_in_the_kernel(pair: nh.Pair, webroot: Path) -> None:
    srv = start_http_server(pair.srv_ns, pair.srv_ip, 80, webroot)
    filtered = Capture(pair.srv_ns, "--iface", pair.srv_if, "--filter", "tcp port 80")
    filtered_any = Capture(pair.srv_ns, "--iface", "any", "--filter", "tcp port 80")
    everything = Capture(pair.srv_ns, "--iface", pair.srv_if)
    captures = (filtered, filtered_any, everything)
    try:
        assert curl(pair.cli_ns, f"http://{pair.srv_ip}/hello.txt") == "200"
        # Other traffic: UDP datagrams and a refused TCP connection to another port.
        assert curl(pair.cli_ns, f"http://{pair.srv_ip}:8081/", check=False) == "000"
        nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for _ in range(5): s.sendto(b'not http', (sys.argv[1], 9999))", pair.srv_ip],
        )  # fmt: skip
        time.sleep(SETTLE_S)
        results = [c.finish() for c in captures]
    finally:
        for c in captures:
            c.close()
        nh.stop_process(srv)

    def flows(frames: list[tuple[int, int, bytes]]) -> set[tuple[str, int, int]]:
        out = set()
        for _, lt, f in frames:
            ip = decode_ip(lt, f)
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP | dpkt.udp.UDP):
                out.add((type(ip.data).__name__, ip.data.sport, ip.data.dport))
        return out

    # Unfiltered: the other traffic did happen on this interface.
    seen = flows(results[2]["frames"])
    assert any(f[0] == "UDP" and f[2] == 9999 for f in seen)
    assert any(f[0] == "TCP" and f[2] == 8081 for f in seen)
    for result in results[:2]:
        assert result["frames"]
        assert all(f[0] == "TCP" and 80 in f[1:] for f in flows(result["frames"]))
        convs = http_conversations(result["frames"], 80)
        assert [first_line(c) for c, _ in convs] == ["GET /hello.txt HTTP/1.1"]
        # Rejected packets never reached the ring: the kernel's own count matches ours.
        assert result["stats"]["kernel_packets"] == result["stats"]["packets"]


def test_capture_on_a_bridge_sees_every_node(webroot: Path) -> None:
    # The harness's star: three node namespaces, each with its own HTTP server, on the bridge of
    # a hub namespace (the layout the hub tests use).
    with nh.netns_star(3) as star:
        servers = [start_http_server(n.ns, n.ip, 80, webroot) for n in star.nodes]
        cap = Capture(star.hub_ns, "--iface", star.bridge, "--filter", "tcp port 80")
        try:
            for node in star.nodes:
                assert curl(star.hub_ns, f"http://{node.ip}/hello.txt") == "200"
            time.sleep(SETTLE_S)
            result = cap.finish()
        finally:
            cap.close()
            for srv in servers:
                nh.stop_process(srv)
    seen = []
    for client, server in http_conversations(result["frames"], 80):
        assert first_line(client) == "GET /hello.txt HTTP/1.1"
        assert first_line(server) == "HTTP/1.0 200 OK"
        host = next(h for h in client.split(b"\r\n") if h.startswith(b"Host: "))
        seen.append(host[6:].decode())
    assert seen == [n.ip for n in star.nodes]


def test_kernel_drops_are_counted_when_the_ring_overflows(pair: nh.Pair) -> None:
    # A 2-block ring of 64 KiB, and a worker whose event loop is stuck while 3000 datagrams
    # of 1000 bytes arrive: the ring overflows and the kernel drops.
    cap = Capture(
        pair.srv_ns, "--iface", pair.srv_if, "--filter", "udp port 9999",
        "--buffer-bytes", str(128 * 1024), "--block-bytes", str(64 * 1024),
        "--stall-until-line",
    )  # fmt: skip
    try:
        nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for _ in range(3000): s.sendto(bytes(1000), (sys.argv[1], 9999))", pair.srv_ip],
        )  # fmt: skip
        cap.resume()
        time.sleep(SETTLE_S)
        # Once the worker reads again, capture must carry on normally.
        nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for i in range(5): s.sendto(b'after %d' % i, (sys.argv[1], 9999))", pair.srv_ip],
        )  # fmt: skip
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
    stats = result["stats"]
    payloads = [bytes(decode_ip(lt, f).data.data) for _, lt, f in result["frames"]]
    assert payloads[-5:] == [b"after %d" % i for i in range(5)]
    assert len(payloads) > 5 and set(payloads[:-5]) == {bytes(1000)}
    assert stats["packets"] == len(result["frames"])
    assert stats["kernel_drops"] > 0
    assert stats["kernel_freezes"] > 0
    # Every datagram that reached the interface is either captured or counted as dropped.
    assert stats["kernel_packets"] == stats["packets"] + stats["kernel_drops"] <= 3005


def test_our_drops_are_counted_when_the_consumer_falls_behind(pair: nh.Pair) -> None:
    # A channel of one batch that nobody reads until the end: later batches must be dropped
    # (and counted), never waited for.
    cap = Capture(
        pair.srv_ns, "--iface", pair.srv_if, "--filter", "udp port 9999",
        "--channel-bound", "1", "--hold-consumer",
    )  # fmt: skip
    try:
        nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for _ in range(8): s.sendto(b'x', (sys.argv[1], 9999)); time.sleep(0.05)", pair.srv_ip],
        )  # fmt: skip
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
    stats = result["stats"]
    assert stats["packets"] == len(result["frames"]) >= 1
    assert stats["our_drops"] > 0
    assert stats["kernel_drops"] == 0
    assert stats["kernel_packets"] == 8 == stats["packets"] + stats["our_drops"]


def test_idle_capture_sleeps_in_the_kernel_and_several_interfaces_work(pair: nh.Pair) -> None:
    # Waiting is done by Trio's I/O on the ring sockets: an idle second costs (almost) no CPU,
    # where a polling loop would burn the whole second.
    cap = Capture(pair.srv_ns, "--iface", pair.srv_if, "--iface", "lo", "--filter", "udp")
    try:
        time.sleep(1.0)
        for dst in (pair.cli_ip, "127.0.0.1"):
            nh.ns_run(
                pair.srv_ns,
                [PY, "-c", "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "s.sendto(b'to ' + sys.argv[1].encode(), (sys.argv[1], 9999))", dst],
            )  # fmt: skip
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
    assert result["cpu_s_while_capturing"] < 0.1
    payloads = sorted(bytes(decode_ip(lt, f).data.data) for _, lt, f in result["frames"])
    assert payloads == [b"to 10.213.%d.2" % int(pair.cli_ip.split(".")[2]), b"to 127.0.0.1"]
    per_iface = result["stats"]["interfaces"]
    assert per_iface.keys() == {pair.srv_if, "lo"}
    assert per_iface[pair.srv_if]["packets"] == per_iface["lo"]["packets"] == 1


TUN_HELPER = """
import fcntl, os, struct, sys, dpkt
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))  # TUNSETIFF: TUN, NO_PI
print("up", flush=True)
sys.stdin.readline()
for i in range(3):
    udp = dpkt.udp.UDP(sport=4000, dport=5000, data=b"into tun %d" % i)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([10, 213, 254, 2]), dst=bytes([10, 213, 254, 1]), p=17, data=udp)
    os.write(fd, bytes(ip))
sys.stdin.readline()
"""


def test_non_ethernet_interface_gets_cooked_frames(pair: nh.Pair) -> None:
    # A tun device has no link-layer header (ARPHRD_NONE): frames come as Linux SLL (113).
    helper = nh.run_in_ns(
        pair.srv_ns, [PY, "-c", TUN_HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert helper.stdin is not None and helper.stdout is not None
    try:
        assert helper.stdout.readline().strip() == "up"
        nh.ip("addr", "add", "10.213.254.1/24", "dev", "tun0", ns=pair.srv_ns)
        nh.ip("link", "set", "tun0", "up", ns=pair.srv_ns)
        cap = Capture(pair.srv_ns, "--iface", "tun0", "--filter", "udp")
        try:
            helper.stdin.write("send\n")
            helper.stdin.flush()
            nh.ns_run(
                pair.srv_ns,
                [PY, "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "s.sendto(b'out of tun', ('10.213.254.2', 5000))"],
            )  # fmt: skip
            time.sleep(SETTLE_S)
            result = cap.finish()
        finally:
            cap.close()
    finally:
        nh.stop_process(helper)
    got = set()
    for _, lt, f in result["frames"]:
        assert lt == live.LINKTYPE_LINUX_SLL
        sll = dpkt.sll.SLL(f)
        assert sll.hrd == 65534  # ARPHRD_NONE
        got.add((sll.type, bytes(sll.data.data.data)))
    assert got == {
        (0, b"into tun 0"),
        (0, b"into tun 1"),
        (0, b"into tun 2"),
        (4, b"out of tun"),
    }


@pytest.mark.parametrize(
    "drop_privilege",
    [
        # An ordinary user. CAP_DAC_READ_SEARCH (read and search any file, nothing else) lets
        # it run the checkout's venv wherever the clone lives: root's home and fresh temp
        # directories are 0700.
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"],
        # root, but without CAP_NET_RAW (as in a locked-down container)
        ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"],
    ],
    ids=["nobody", "root-without-cap-net-raw"],
)  # fmt: skip
def test_start_without_privilege_is_refused_clearly(
    pair: nh.Pair, drop_privilege: list[str]
) -> None:
    res = nh.ns_run(
        pair.srv_ns, [*drop_privilege, PY, RUNNER, "--iface", pair.srv_if], check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout) == {
        "error": "LivePermissionError",
        "message": "live capture needs root or CAP_NET_RAW "
        "(AF_PACKET socket on veth-srv: Operation not permitted)",
    }


def test_cap_net_raw_alone_is_enough(pair: nh.Pair) -> None:
    # CAP_NET_RAW is the one capture privilege; CAP_DAC_READ_SEARCH only lets `nobody` read a
    # checkout that lives in a private (0700) directory.
    as_nobody_with_net_raw = (
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "--inh-caps=+net_raw,+dac_read_search", "--ambient-caps=+net_raw,+dac_read_search",
    )  # fmt: skip
    cap = Capture(
        pair.srv_ns, "--iface", pair.srv_if, "--filter", "udp", prefix=as_nobody_with_net_raw
    )
    try:
        nh.ns_run(
            pair.cli_ns,
            [PY, "-c", "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "for i in range(3): s.sendto(b'datagram %d' % i, (sys.argv[1], 9999))", pair.srv_ip],
        )  # fmt: skip
        time.sleep(SETTLE_S)
        result = cap.finish()
    finally:
        cap.close()
    payloads = [bytes(decode_ip(lt, f).data.data) for _, lt, f in result["frames"]]
    assert payloads == [b"datagram 0", b"datagram 1", b"datagram 2"]


def test_user_errors_name_what_is_wrong() -> None:
    with pytest.raises(live.LiveFilterError, match=r"invalid capture filter 'tcp prot 80'.*syntax"):
        live.LiveCapture(["lo"], bpf_filter="tcp prot 80").open()
    with pytest.raises(live.LiveFilterError, match=r"'ether host 1:2:3:4:5:6' \(with 'any'"):
        live.LiveCapture(["any"], bpf_filter="ether host 1:2:3:4:5:6").open()
    with pytest.raises(live.LiveInterfaceError, match=r"no such network interface: 'ksk-nope0'"):
        live.LiveCapture(["lo", "ksk-nope0"]).open()
    with pytest.raises(live.LiveInterfaceError, match=r"'any'.*alone"):
        live.LiveCapture(["any", "lo"])
