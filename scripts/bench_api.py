#!/usr/bin/env python3
"""The worker API under load, measured in one run; prints a markdown section (scripts/bench).

1. **Stream rate.** `kshark-worker --pcap CAPTURE` (replay, then serve) builds a store; then 1 and
   20 websocket clients with an empty filter read the whole history at once: entries/s, aggregate
   and per client. The clients run in one separate process (lean hand-written websocket framing,
   no JSON decoding), so the worker has a core to itself on a 2-core machine.
2. **Live, under steady load (root).** Two private network namespaces joined by a veth (10.213.x
   addresses only), nginx in one, `kshark-worker --iface <veth> --filter 'tcp port 80'` and
   `tcpdump --immediate-mode` (same interface, same filter) beside it, a follower holding an
   open `/api/wsFull` stream, and a fixed-rate load generator in the other namespace:
   - latency from the capture time of a response to the entry arriving at the open client,
     p50/p99, at 2,000 requests/s;
   - loss: requests sent vs served (nginx stub_status) vs entries the worker wrote vs packets
     tcpdump captured vs packets kshark counted (`/status`), at 2,000 requests/s and at the
     highest rate `wrk` reaches.
   Without root (or without nginx/tcpdump/wrk/curl) this part is skipped and the reason printed.

Internal subcommands (`_read`, `_follow`, `_load`) are this same file run as helper processes,
some inside a namespace with `ip netns exec`; they are not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support: helpers shared with the tests

from tests.support.api import masked_text_frame  # noqa: E402
from tests.support.procstat import cpu_seconds  # noqa: E402

OUT = ROOT / "bench-out"
PY = str(ROOT / ".venv" / "bin" / "python")
WORKER = str(ROOT / ".venv" / "bin" / "kshark-worker")
DEMO = ROOT / "fixtures" / "demo.pcap"

RATE = 2000  # requests/s of the steady live load (the target's rate)
STEADY_SECONDS = 10.0
LOAD_CONNECTIONS = 8  # keep-alive connections the fixed-rate generator spreads its requests over
WRK_SECONDS = 5
WRK_CONNECTIONS = 16
STREAM_CLIENTS = (1, 20)
STREAM_REPEATS = 3  # each client count is measured this many times; the median run is shown
# Targets of issue 4 on this machine, at 2,000 requests/s.
TARGET_P99_MS = 100.0
API_PORT = 30001  # inside the private namespace nothing else can hold it
STEP_TIMEOUT_S = 30.0
SUBNET = "10.213.231"  # only ever configured inside the namespaces this script creates

# ---- a lean websocket client (server frames are unmasked; ours are masked) ---------------------


async def ws_handshake(host: str, port: int, path: str) -> tuple[Any, bytearray]:
    import trio

    stream = await trio.open_tcp_stream(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed during the websocket handshake")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return stream, bytearray(rest)


async def ws_read(
    stream: Any, buf: bytearray, on_message: Callable[[int, bytearray, int, int], bool]
) -> str:
    """Feeds each complete text message to on_message(recv_ns, buf, start, end) (fragmented
    messages are joined first); returns "stopped" when it returns True, "closed" or "eof"."""
    pos = 0
    frag: bytearray | None = None
    t = time.time_ns()
    while True:
        while True:
            avail = len(buf) - pos
            if avail < 2:
                break
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if avail < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif n == 127:
                if avail < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if avail < hdr + n:
                break
            op = b0 & 0x0F
            start = pos + hdr
            pos = start + n
            if op == 8:
                return "closed"
            if op == 9:  # ping: answer, or a quiet stream would be cut by the server
                await stream.send_all(bytes([0x8A, 0x80]) + os.urandom(4))
            elif op in (0, 1):
                if b0 & 0x80 and frag is None:
                    if on_message(t, buf, start, pos):
                        return "stopped"
                else:
                    frag = (frag or bytearray()) + buf[start:pos]
                    if b0 & 0x80:
                        whole, frag = frag, None
                        if on_message(t, whole, 0, len(whole)):
                            return "stopped"
        if pos:
            del buf[:pos]
            pos = 0
        data = await stream.receive_some(1 << 18)
        if not data:
            return "eof"
        t = time.time_ns()
        buf += data


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


async def read_history(port: int, clients: int, expected: int) -> dict[str, Any]:
    """`clients` streams with an empty filter, opened together, each reading `expected` entries."""
    import trio

    conns = [await ws_handshake("127.0.0.1", port, "/api/wsFull") for _ in range(clients)]
    took: list[float] = [0.0] * clients
    got: list[int] = [0] * clients
    nbytes: list[int] = [0] * clients
    first: list[bytes] = []

    async def one(i: int, stream: Any, buf: bytearray, t0: float) -> None:
        def on_message(_t: int, b: bytearray, s: int, e: int) -> bool:
            if not first:
                first.append(bytes(b[s:e]))
            got[i] += 1
            nbytes[i] += e - s
            return got[i] >= expected

        await stream.send_all(masked_text_frame(""))
        await ws_read(stream, buf, on_message)
        took[i] = time.perf_counter() - t0
        await stream.aclose()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, (stream, buf) in enumerate(conns):
            nursery.start_soon(one, i, stream, buf, t0)
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "took": took,
        "got": got,
        "bytes": sum(nbytes),
        "first_is_entry": bool(first) and "id" in json.loads(first[0]),
    }


def parse_rfc3339_ns(text: str) -> int:
    """ "2025-11-28T00:00:00.123456789Z" → ns since the epoch (UTC)."""
    base, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


async def follow(port: int) -> dict[str, Any]:
    """An open /api/wsFull stream (history false) until stdin ends; then returns, per entry,
    receive time minus response time (startTime + elapsedTime) in ms."""
    import trio

    stream, buf = await ws_handshake("127.0.0.1", port, "/api/wsFull")
    await stream.send_all(masked_text_frame(json.dumps({"query": "", "history": False})))
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not any(c.get("path") == "/api/wsFull" for c in _status(port).get("clients", [])):
        if time.monotonic() > deadline:
            sys.exit("follower: the stream never appeared in /status")
        await trio.sleep(0.02)
    received: list[tuple[int, bytes]] = []

    def on_message(t: int, b: bytearray, s: int, e: int) -> bool:
        received.append((t, bytes(b[s:e])))
        return False

    print("READY", flush=True)
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            await ws_read(stream, buf, on_message)

        async def until_stdin_ends() -> None:
            stdin = trio.lowlevel.FdStream(os.dup(0))
            while await stdin.receive_some(4096):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(reader)
        nursery.start_soon(until_stdin_ends)
    latencies = []
    for t, payload in received:
        e = json.loads(payload)
        done_ns = parse_rfc3339_ns(e["startTime"]) + e["elapsedTime"] * 1_000_000
        latencies.append((t - done_ns) / 1e6)
    return {"entries": len(received), "latencies_ms": latencies}


# ---- fixed-rate load (the `wrk -R` wrk does not have) -------------------------------------------


async def fixed_rate_load(
    host: str, port: int, rate: float, seconds: float, conns: int, path: str
) -> dict[str, Any]:
    """Request i is due at start + i/rate and goes on connection i % conns (keep-alive). Open
    loop: a late response delays only its own connection's next requests, which are then sent
    as soon as possible (counted as late). Responses must be 200 with a Content-Length."""
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kshark-bench\r\n\r\n".encode()
    total = int(rate * seconds)
    counts = {"sent": 0, "ok": 0, "bad": 0, "late": 0, "errors": 0}
    start = loop.time() + 0.2

    async def connection(k: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(k, total, conns):
                due = start + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    counts["late"] += 1
                writer.write(request)
                counts["sent"] += 1
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
                if m:
                    await reader.readexactly(int(m.group(1)))
                if head.startswith(b"HTTP/1.1 200") and m:
                    counts["ok"] += 1
                else:
                    counts["bad"] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["errors"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    t0 = loop.time()
    await asyncio.gather(*(connection(k) for k in range(conns)))
    counts["elapsed"] = loop.time() - t0  # type: ignore[assignment]
    return counts


# ---- helpers for the orchestrating process ------------------------------------------------------


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, **kw)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Ends one process this script started: `sig`, then SIGKILL after a grace period."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def concat_capture(src: Path, dst: Path, copies: int) -> None:
    """`copies` back-to-back replays of a classic pcap, each shifted past the previous one (and
    past the reassembler's idle timeout and closed-connection linger), so the same 4-tuples come
    back as new connections."""
    data = src.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII")
    records = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = rec.unpack_from(data, off)
        records.append((sec, frac, incl, orig, data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    secs = [r[0] for r in records]
    span = max(secs) - min(secs) + 400  # > ReassemblyLimits.idle_timeout_ns (300 s)
    with open(dst, "wb") as out:
        out.write(data[:24])
        for c in range(copies):
            for sec, frac, incl, orig, frame in records:
                out.write(rec.pack(sec + c * span, frac, incl, orig))
                out.write(frame)


def bench_stream_rate(lines: list[str]) -> None:
    # A store large enough that one client reads for a measurable time: the quick bench capture
    # (scripts/bench.py --quick builds it) or, without it, the demo, replayed back to back.
    base, copies = (OUT / "http-5000.pcap", 4) if (OUT / "http-5000.pcap").exists() else (DEMO, 800)
    work = Path(tempfile.mkdtemp(prefix="ksbench-api-"))
    worker: subprocess.Popen[bytes] | None = None
    try:
        capture = work / f"{base.stem}-x{copies}.pcap"
        concat_capture(base, capture, copies)
        log = work / "worker.log"
        with open(log, "wb") as fh:
            worker = subprocess.Popen(
                [WORKER, "--pcap", str(capture), "--data-dir", str(work / "data"), "--port", "0",
                 "--storage-limit", "20GiB"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        port = entries = 0
        while not entries:
            text = log.read_text(errors="replace")
            if m := re.search(r"api listening on \S+ port (\d+)", text):
                port = int(m.group(1))
            if m := re.search(r"kshark-worker: .* (\d+) entries \(", text):
                entries = int(m.group(1))
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not replay {capture}: {text[-1000:]}")
            time.sleep(0.05)
        size = sum(p.stat().st_size for p in (work / "data" / "entries").iterdir())
        lines.append("#### Stream rate: history of a replayed capture to N clients\n")
        lines.append(
            f"Store built by `kshark-worker --pcap {capture.name}` (replay, then serve; "
            f"`{base.name}` {copies} times back to back, time-shifted): "
            f"{entries:,} entries, {size / 1e6:.1f} MB of entry JSON. Each client opens "
            "`/api/wsFull` with an empty filter and reads the whole history; all clients start "
            "together and run in one separate process (raw frame parsing, no JSON decoding). "
            f"Median of {STREAM_REPEATS} runs.\n"
        )
        lines.append(
            "| clients | entries per client | wall s | aggregate entries/s | per client entries/s "
            "(median, slowest) | aggregate MB/s |"
        )
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for n in STREAM_CLIENTS:
            runs = []
            for _ in range(STREAM_REPEATS):
                res = subprocess.run(
                    [PY, __file__, "_read", str(port), str(n), str(entries)],
                    capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                if res.returncode != 0:
                    raise RuntimeError(f"{n} stream clients failed: {res.stderr.strip()[-300:]}")
                runs.append(json.loads(res.stdout))
            r = sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]  # the median run
            assert r["first_is_entry"] and all(g == entries for g in r["got"]), r
            per = [entries / t for t in r["took"]]
            lines.append(
                f"| {n} | {entries:,} | {r['wall']:.2f} | {n * entries / r['wall']:,.0f} | "
                f"{statistics.median(per):,.0f}, {min(per):,.0f} | {r['bytes'] / r['wall'] / 1e6:.0f} |"
            )
        lines.append("")
    finally:
        if worker is not None:
            stop(worker)
        # Deleted after the live part, not now: on a journal-less ext4 (this VM's) creating files
        # costs 10-20x more for minutes after many were deleted nearby, and the live worker's
        # write latency would then measure that (docs/store.md).
        DELETE_AT_END.append(work)


# Work directories removed when the whole benchmark is over (see bench_stream_rate).
DELETE_AT_END: list[Path] = []


# ---- the live part -------------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  types {{ application/json json; }}
  server {{ listen {ip}:80 backlog=4096; root {prefix}/www; }}
  server {{ listen {ip}:8081; location = /nginx_status {{ stub_status; }} }}
}}
"""


def live_missing() -> str | None:
    if os.geteuid() != 0:
        return "not root (network namespaces, AF_PACKET capture and tcpdump need root)"
    missing = [t for t in ("ip", "nginx", "tcpdump", "wrk", "curl") if not shutil.which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/setup installs them)"
    return None


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """(srv_ns, cli_ns, srv_ip, cli_ip): two fresh namespaces joined by a veth; removed on exit,
    after ending whatever still runs inside them."""
    stem = f"ksbapi-{os.getpid()}"
    srv, cli = f"{stem}-srv", f"{stem}-cli"
    created: list[str] = []
    try:
        for ns in (srv, cli):
            run(["ip", "netns", "add", ns], check=True)
            created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        run(["ip", "link", "add", "veth-srv", "netns", srv, "type", "veth", "peer", "name",
             "veth-cli", "netns", cli], check=True)  # fmt: skip
        for ns, dev, addr in ((srv, "veth-srv", f"{SUBNET}.1"), (cli, "veth-cli", f"{SUBNET}.2")):
            run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev], check=True)
            run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield srv, cli, f"{SUBNET}.1", f"{SUBNET}.2"
    finally:
        for ns in reversed(created):
            pids = run(["ip", "netns", "pids", ns]).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", ns])


def ns_exec(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def ns_status(srv: str) -> dict[str, Any]:
    res = run(
        ns_exec(srv, ["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{API_PORT}/status"])
    )
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def nginx_requests(srv: str, ip: str) -> int:
    """nginx's own count of requests handled (stub_status; the status request itself included)."""
    out = run(ns_exec(srv, ["curl", "-s", f"http://{ip}:8081/nginx_status"])).stdout
    m = re.search(r"\n\s*\d+\s+\d+\s+(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected stub_status: {out!r}")
    return int(m.group(1))


def wait_tcp(ns: str, ip: str, port: int) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while run(ns_exec(ns, ["curl", "-s", "-o", "/dev/null", f"http://{ip}:{port}/"])).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {ip}:{port} in {ns}")
        time.sleep(0.05)


def run_delay_seconds(pid: int) -> float:
    """How long the process's main thread has waited for a CPU while runnable (schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def write_latencies(entries_dir: Path, t_start: int, t_end: int) -> list[float]:
    """Per entry file written in [t_start, t_end]: its mtime minus the response time, in ms.
    Splits the end-to-end latency into "captured → on disk" and "on disk → at the client"
    (mtime has the kernel's coarse clock granularity, a few ms)."""
    out = []
    with os.scandir(entries_dir) as it:
        for d in it:
            mtime = d.stat().st_mtime_ns
            if t_start <= mtime <= t_end:
                with open(d.path, "rb") as f:
                    e = json.loads(f.read())
                done_ns = parse_rfc3339_ns(e["startTime"]) + e["elapsedTime"] * 1_000_000
                out.append((mtime - done_ns) / 1e6)
    return out


def live_phase(
    srv: str, cli: str, srv_ip: str, work: Path, name: str, load: list[str], worker_pid: int
) -> dict[str, Any]:
    """One load run with tcpdump and a follower around it; returns every figure of the table."""
    follower_out = work / f"follow-{name}.json"
    tcpdump = subprocess.Popen(
        ns_exec(srv, ["tcpdump", "-i", "veth-srv", "-s", "0", "--immediate-mode", "-B", "32768",
                      "-w", "/dev/null", "tcp port 80"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    follower = subprocess.Popen(
        ns_exec(srv, [PY, __file__, "_follow", str(API_PORT), str(follower_out)]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tcpdump.stderr is not None and follower.stdout is not None
        if "listening on" not in tcpdump.stderr.readline():
            raise RuntimeError("tcpdump did not start")
        if follower.stdout.readline().strip() != "READY":
            raise RuntimeError(f"follower did not start: {follower.stderr.read()}")  # type: ignore[union-attr]
        before = ns_status(srv)
        served0 = nginx_requests(srv, srv_ip)
        cpu0, busy0, wall0 = cpu_seconds(worker_pid), machine_busy(), time.monotonic()
        wait0 = run_delay_seconds(worker_pid)
        t_start = time.time_ns()
        res = subprocess.run(ns_exec(cli, load), capture_output=True, text=True, timeout=120)
        cpu1, busy1, wall1 = cpu_seconds(worker_pid), machine_busy(), time.monotonic()
        wait1 = run_delay_seconds(worker_pid)
        if res.returncode != 0:
            raise RuntimeError(f"load failed: {res.stderr[-500:]}")
        served = nginx_requests(srv, srv_ip) - served0 - 1
        # Let the last packets cross and the worker catch up (entries stop growing).
        deadline = time.monotonic() + 15
        last = -1
        while True:
            time.sleep(0.5)
            after = ns_status(srv)
            if after["entries"] == last or time.monotonic() > deadline:
                break
            last = after["entries"]
        time.sleep(0.3)
        t_end = time.time_ns()
    finally:
        stop(tcpdump, signal.SIGINT)
        if follower.stdin is not None:
            follower.stdin.close()
        try:
            follower.wait(60)
        except subprocess.TimeoutExpired:
            stop(follower)
    tcpdump_err = tcpdump.stderr.read() if tcpdump.stderr else ""

    def count(label: str) -> int:
        m = re.search(rf"(\d+) packets? {label}", tcpdump_err)
        return int(m.group(1)) if m else -1

    follow = json.loads(follower_out.read_text()) if follower_out.exists() else {}
    lat = follow.get("latencies_ms", [])
    written = write_latencies(work / "data" / "entries", t_start, t_end)

    def delta(key: str, sub: str | None = None) -> int:
        # The live counters appear with the first batch (or idle tick) after the worker starts.
        a = (after.get(sub) or {} if sub else after).get(key, 0)
        b = (before.get(sub) or {} if sub else before).get(key, 0)
        return int(a) - int(b)

    return {
        "worker_cpu": (cpu1 - cpu0) / (wall1 - wall0),
        "worker_waiting": (wait1 - wait0) / (wall1 - wall0),
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "load": res.stdout.strip(),
        "served": served,
        "entries": delta("entries"),
        "errors": delta("errors"),
        "tcpdump_captured": count("captured"),
        "tcpdump_dropped": count("dropped by kernel"),
        "packets": delta("packets"),
        "kernel_packets": delta("kernel_packets", "live"),
        "kernel_drops": delta("dropped_kernel"),
        "our_drops": delta("dropped_ours"),
        "followed": follow.get("entries", 0),
        "w50": pct(written, 50) if written else float("nan"),
        "w99": pct(written, 99) if written else float("nan"),
        "p50": pct(lat, 50) if lat else float("nan"),
        "p99": pct(lat, 99) if lat else float("nan"),
        "max": max(lat) if lat else float("nan"),
    }


def bench_live(lines: list[str]) -> None:
    lines.append("#### Live capture: latency and loss under load\n")
    why = live_missing()
    if why:
        lines.append(f"Skipped: {why}.\n")
        return
    # Other work on this shared machine shows in every figure below: measure it first.
    idle0 = machine_busy()
    time.sleep(1.0)
    idle1 = machine_busy()
    background = (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    work = Path(tempfile.mkdtemp(prefix="ksbench-live-"))
    (work / "www").mkdir()
    body = json.dumps({"id": 1, "name": "sock", "price": 12.5, "tags": ["blue", "green"]}) * 2
    (work / "www" / "small.json").write_text(body)
    worker: subprocess.Popen[bytes] | None = None
    try:
        with namespaces() as (srv, cli, srv_ip, _cli_ip):
            (work / "nginx.conf").write_text(NGINX_CONF.format(prefix=work, ip=srv_ip))
            nginx = subprocess.Popen(
                ns_exec(srv, ["nginx", "-p", str(work), "-c", str(work / "nginx.conf")]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_tcp(srv, srv_ip, 80)
            wait_tcp(srv, srv_ip, 8081)
            with open(work / "worker.log", "wb") as fh:
                worker = subprocess.Popen(
                    ns_exec(srv, [WORKER, "--iface", "veth-srv", "--filter", "tcp port 80",
                                  "--port", str(API_PORT), "--data-dir", str(work / "data"),
                                  "--storage-limit", "8GiB"]),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
                )  # fmt: skip
            deadline = time.monotonic() + STEP_TIMEOUT_S
            while "api listening" not in (work / "worker.log").read_text(errors="replace"):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "worker.log").read_text()[-1000:])
                time.sleep(0.05)
            steady = live_phase(
                srv, cli, srv_ip, work, "steady",
                [PY, __file__, "_load", srv_ip, "80", str(RATE), str(STEADY_SECONDS),
                 str(LOAD_CONNECTIONS), "/small.json"], worker.pid,
            )  # fmt: skip
            top = live_phase(
                srv, cli, srv_ip, work, "wrk",
                ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s",
                 f"http://{srv_ip}/small.json"], worker.pid,
            )  # fmt: skip
            stop(worker)
            stop(nginx, signal.SIGQUIT)
    finally:
        if worker is not None:
            stop(worker)
        shutil.rmtree(work, ignore_errors=True)

    load = json.loads(steady["load"])
    sent_steady = load["sent"]
    rate_steady = sent_steady / load["elapsed"]
    m = re.search(r"(\d+) requests in ([\d.]+)s", top["load"])
    wrk_requests = int(m.group(1)) if m else -1
    rps = re.search(r"Requests/sec:\s+([\d.]+)", top["load"])
    wrk_rate = float(rps.group(1)) if rps else float("nan")
    lines.append(
        f"Setup: nginx (1 process) in one namespace on a veth; `kshark-worker --iface veth-srv "
        f"--filter 'tcp port 80'` and `tcpdump -i veth-srv --immediate-mode -B 32768 "
        f"'tcp port 80'` beside it; a follower with an open `/api/wsFull` stream (`history: "
        f"false`) in the same namespace. Load from the other namespace: **steady** = a fixed-"
        f"rate client (open loop, {LOAD_CONNECTIONS} keep-alive connections, GET of a "
        f"{len(body)}-byte JSON) at {RATE:,} requests/s for {STEADY_SECONDS:.0f} s "
        f"({load['late']} requests sent >10 ms late); **wrk** = `wrk -t1 -c{WRK_CONNECTIONS} "
        f"-d{WRK_SECONDS}s`, unthrottled. All processes share the machine's 2 cores; "
        f"before the run, other work kept them {background:.0%} busy.\n"
    )
    lines.append(
        "Latency = the follower's receive time minus the response's capture time, both on this "
        "host's clock (kernel packet timestamps are CLOCK_REALTIME): the response time is the "
        "entry's `startTime` (ns) + `elapsedTime` (ms, rounded, so ±0.5 ms). For these one-"
        "segment responses the first and last packet of the response are the same packet.\n"
    )
    lines.append(f"| figure | steady {RATE:,} req/s | wrk max | target (steady) |")
    lines.append("|---|---:|---:|---|")

    def row(label: str, a: Any, b: Any, target: str = "") -> None:
        lines.append(f"| {label} | {a} | {b} | {target} |")

    def ok(cond: bool) -> str:
        return "met" if cond else "**missed**"

    row("requests sent (client)", f"{sent_steady:,}", f"{wrk_requests:,} (completed)")
    row("achieved rate, req/s", f"{rate_steady:,.0f}", f"{wrk_rate:,.0f}")
    row("requests served (nginx stub_status)", f"{steady['served']:,}", f"{top['served']:,}")
    row(
        "entries written (worker /status)",
        f"{steady['entries']:,}",
        f"{top['entries']:,}",
        f"= served: {ok(steady['entries'] == steady['served'])}",
    )
    row("entries with an error", steady["errors"], top["errors"])
    row(
        "packets captured by tcpdump",
        f"{steady['tcpdump_captured']:,}",
        f"{top['tcpdump_captured']:,}",
    )
    row(
        "packets dropped by tcpdump's kernel buffer",
        steady["tcpdump_dropped"],
        top["tcpdump_dropped"],
    )
    row(
        "packets kshark processed (/status packets)",
        f"{steady['packets']:,}",
        f"{top['packets']:,}",
        f"= tcpdump: {ok(steady['packets'] == steady['tcpdump_captured'])}",
    )
    row("packets past kshark's filter (kernel count)", f"{steady['kernel_packets']:,}",
        f"{top['kernel_packets']:,}")  # fmt: skip
    drops_steady = steady["kernel_drops"] + steady["our_drops"]
    row(
        "kshark drops: kernel ring + ours",
        f"{steady['kernel_drops']} + {steady['our_drops']}",
        f"{top['kernel_drops']} + {top['our_drops']}",
        f"0: {ok(drops_steady == 0)}",
    )
    row(
        "CPU while loaded: worker (1 core = 100%) / whole machine (2 cores)",
        f"{steady['worker_cpu']:.0%} / {steady['machine_busy']:.0%}",
        f"{top['worker_cpu']:.0%} / {top['machine_busy']:.0%}",
    )
    row(
        "share of the load's wall time the worker was runnable but waiting for a CPU",
        f"{steady['worker_waiting']:.0%}",
        f"{top['worker_waiting']:.0%}",
    )
    row("entries received by the open client", f"{steady['followed']:,}", f"{top['followed']:,}")
    row(
        "latency capture → open client, p50 / p99 / max, ms",
        f"{steady['p50']:.1f} / {steady['p99']:.1f} / {steady['max']:.1f}",
        f"{top['p50']:.1f} / {top['p99']:.1f} / {top['max']:.1f}",
        f"p99 < {TARGET_P99_MS:.0f} ms: {ok(steady['p99'] < TARGET_P99_MS)}",
    )
    row(
        "of which capture → entry file written (file mtime), p50 / p99, ms",
        f"{steady['w50']:.1f} / {steady['w99']:.1f}",
        f"{top['w50']:.1f} / {top['w99']:.1f}",
    )
    lines.append("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--no-live", action="store_true", help="only the replayed stream-rate part")
    args = ap.parse_args()
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        bench_stream_rate(lines)
        if args.no_live:
            lines.append("#### Live capture: latency and loss under load\n\nSkipped: --no-live.\n")
        else:
            bench_live(lines)
    finally:
        for work in DELETE_AT_END:
            shutil.rmtree(work, ignore_errors=True)
    lines.append(f"(bench_api.py ran {time.monotonic() - t0:.0f} s.)")
    print("\n".join(lines))


def _helper(argv: list[str]) -> None:
    import trio

    cmd = argv[0]
    if cmd == "_read":
        port, clients, expected = (int(a) for a in argv[1:4])
        print(json.dumps(trio.run(read_history, port, clients, expected)))
    elif cmd == "_follow":
        Path(argv[2]).write_text(json.dumps(trio.run(follow, int(argv[1]))))
    elif cmd == "_load":
        host, port, rate, seconds, conns, path = argv[1:7]
        result = asyncio.run(
            fixed_rate_load(host, int(port), float(rate), float(seconds), int(conns), path)
        )
        print(json.dumps(result))
    else:
        sys.exit(f"unknown helper {cmd!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _helper(sys.argv[1:])
    else:
        main()
