#!/usr/bin/env python3
"""kshark's benchmark: every figure next to the reference it is judged against, in one run.

Not a test: timings on a shared 2-core VM are noisy, so the figures that matter are ratios between
programs measured back to back on the same file (kshark vs tshark, kshark vs a bare dpkt loop).

Parts:
  capture   build bench-out/big.pcap: nginx in a private network namespace, wrk (keep-alive,
            gzip, short connections) and ab (HTTP/1.0), recorded by tcpdump on that namespace's
            loopback with MTU 1500 and offloads off, so frames look like a real NIC's.
  pipeline  kshark-worker --once on it vs tshark -T fields / -T json vs a bare dpkt read loop.
  kfl       compiled KFL vs hand-written predicates (scripts/bench_kfl.py).
  more      scripts/bench_*.py found beside this file contribute their own sections, among them
            bench_memory.py: peak RSS replaying 200 gzip responses that decode to 10 MiB each.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
PY = str(ROOT / ".venv" / "bin" / "python")

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  gzip on; gzip_comp_level 1; gzip_min_length 1000; gzip_types application/json text/html;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  types {{ application/json json; text/html html; application/octet-stream bin; }}
  server {{
    listen 127.0.0.1:8080;
    root {prefix}/www;
    location = /echo {{ return 200 "ok\\n"; }}
  }}
}}
"""

WRK_LUA = """
local reqs = nil
local count = 0
local limit = tonumber(os.getenv("WRK_LIMIT") or "0")
local body = string.rep("x", 900)
function build()
  local t = {}
  for i = 1, 60 do t[#t+1] = wrk.format("GET", "/small.json") end
  for i = 1, 5 do t[#t+1] = wrk.format("POST", "/echo", {["Content-Type"]="application/json"}, '{"data":"' .. body .. '"}') end
  for i = 1, 4 do t[#t+1] = wrk.format("GET", "/missing/x") end
  for i = 1, 15 do t[#t+1] = wrk.format("GET", "/page.html") end
  for i = 1, 15 do t[#t+1] = wrk.format("GET", "/page.html", {["Accept-Encoding"]="gzip"}) end
  t[#t+1] = wrk.format("GET", "/blob.bin")
  return t
end
request = function()
  if reqs == nil then reqs = build() end
  return reqs[math.random(#reqs)]
end
response = function(status, headers, body)
  count = count + 1
  if limit > 0 and count >= limit then wrk.thread:stop() end
end
"""


def sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def build_capture(path: Path, requests: int) -> None:
    """Record `requests` HTTP requests against nginx inside a private namespace."""
    if os.geteuid() != 0:
        sys.exit("bench: building the capture needs root (network namespace + tcpdump)")
    ns = f"ksbench{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="ksbench-"))
    (work / "www" / "missing").mkdir(parents=True)
    (work / "www" / "small.json").write_text(
        '{"id":1,"name":"sock","price":12.5,"tags":["blue","green"],"stock":true}' * 2
    )
    (work / "www" / "page.html").write_text(
        "<html><body>" + "<p>hello socks</p>" * 560 + "</body></html>"
    )
    (work / "www" / "blob.bin").write_bytes(os.urandom(65536))
    (work / "nginx.conf").write_text(NGINX_CONF.format(prefix=work))
    (work / "mix.lua").write_text(WRK_LUA)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh(["ip", "netns", "add", ns])
        sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up", "mtu", "1500"])
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ethtool",
                "-K",
                "lo",
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
            capture_output=True,
            check=False,
        )
        nginx = subprocess.Popen(
            ["ip", "netns", "exec", ns, "nginx", "-c", str(work / "nginx.conf"), "-p", str(work)]
        )
        procs.append(nginx)
        tcpdump = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                "lo",
                "-w",
                str(path),
                "-s",
                "0",
                "-B",
                "262144",
                "tcp port 8080",
            ],
            stderr=subprocess.PIPE,
        )
        procs.append(tcpdump)
        assert tcpdump.stderr is not None
        line = tcpdump.stderr.readline().decode()  # "listening on lo ..." once the socket is live
        if "listening" not in line:
            raise RuntimeError(f"tcpdump did not start: {line}")
        time.sleep(1.5)
        keepalive = int(requests * 0.85)
        short = int(requests * 0.10)
        http10 = requests - keepalive - short
        env = dict(os.environ, WRK_LIMIT=str(keepalive))
        url = "http://127.0.0.1:8080/"
        sh(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "wrk",
                "-t1",
                "-c16",
                f"-d{max(5, keepalive // 9000 + 3)}s",
                "-s",
                str(work / "mix.lua"),
                url,
            ],
            env=env,
        )
        env["WRK_LIMIT"] = str(short // 4)
        sh(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "wrk",
                "-t1",
                "-c4",
                f"-d{max(4, short // 2000 + 2)}s",
                "-H",
                "Connection: close",
                "-s",
                str(work / "mix.lua"),
                url,
            ],
            env=env,
        )
        sh(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ab",
                "-q",
                "-n",
                str(http10),
                "-c",
                "4",
                url + "small.json",
            ]
        )
        time.sleep(1.0)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT if p.args[-1:] != [str(work)] else signal.SIGQUIT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def timed(
    cmd: list[str], *, stdout: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> tuple[float, float, int, str]:
    """(wall s, cpu s, max RSS bytes, stdout) of one run under /usr/bin/time -v."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        out = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tf.name, *cmd],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
            check=True,
            env=env,
        )
        report = Path(tf.name).read_text()
    wall_text = re.search(r"Elapsed \(wall clock\) time.*: (.+)", report)
    assert wall_text is not None
    parts = [float(x) for x in wall_text.group(1).strip().split(":")]
    wall = sum(v * 60 ** (len(parts) - 1 - i) for i, v in enumerate(parts))
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", report).group(1))  # type: ignore[union-attr]
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", report).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1)) * 1024  # type: ignore[union-attr]
    return wall, user + system, rss, out.stdout


DPKT_LOOP = textwrap.dedent(
    """
    import sys, dpkt
    n = 0
    with open(sys.argv[1], "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            n += 1
    print(n)
    """
)


def _worker_once(
    cap: Path, parent: str | None, scratch: list[Path], pure: bool = False
) -> tuple[float, float, int, str]:
    """One `kshark-worker --once` into a fresh data directory under `parent`. The directory is
    deleted at the end of the whole benchmark, not here: on a journal-less ext4 (this VM's)
    creating a file costs 10-20x more for minutes after many files were deleted nearby (the
    allocator skips recently freed inodes one by one), so deleting one run's 45,000 files would
    slow the next run, and the API part's live worker after it."""
    data = Path(tempfile.mkdtemp(prefix="ksbench-data-", dir=parent))
    scratch.append(data)
    env = {**os.environ, "KSHARK_PURE": "1"} if pure else None
    return timed(
        [
            str(ROOT / ".venv" / "bin" / "kshark-worker"),
            "--once",
            "--pcap",
            str(cap),
            "--data-dir",
            str(data),
            "--storage-limit",
            "100GiB",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )


def _file_create_us(parent: str | None, scratch: list[Path], n: int = 5000) -> float:
    """Kernel cost of creating one small file in `parent` right now: the floor under one entry file."""
    d = Path(tempfile.mkdtemp(prefix="ksbench-files-", dir=parent))
    scratch.append(d)
    data = b"x" * 1200
    t = time.perf_counter()
    for i in range(n):
        (d / f"{i:012d}_pcap-0_entry.json").write_bytes(data)
    return (time.perf_counter() - t) / n * 1e6


def _best(runs: list[tuple[float, float, int, str]]) -> tuple[float, float, int, str]:
    """The fastest run by wall time (RSS: the largest seen). Noise on a shared VM only ever adds."""
    best = min(runs, key=lambda r: r[0])
    return best[0], best[1], max(r[2] for r in runs), best[3]


def bench_pipeline(cap: Path, rows: list[str], repeat: int, scratch: list[Path]) -> None:
    # The entry files dominate on a slow disk, so the run is repeated with the data directory on
    # tmpfs: the difference is the disk's, the tmpfs figure is kshark's own. Each program runs
    # `repeat` times, interleaved, and its fastest run counts (the same for every program).
    import capture

    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    disk = str(ROOT / "bench-out")
    tshark_cmd = [
        "tshark",
        "-n",
        "-r",
        str(cap),
        "-Y",
        "http",
        "-T",
        "fields",
        "-e",
        "http.request.method",
        "-e",
        "http.response.code",
    ]
    runs: dict[str, list[tuple[float, float, int, str]]] = {
        k: [] for k in ("disk", "shm", "pure", "tshark", "json", "dpkt")
    }
    for _ in range(repeat):
        runs["disk"].append(_worker_once(cap, disk, scratch))
        if shm:
            runs["shm"].append(_worker_once(cap, shm, scratch))
            runs["pure"].append(_worker_once(cap, shm, scratch, pure=True))
        runs["tshark"].append(timed(tshark_cmd, stdout=subprocess.PIPE))
        runs["dpkt"].append(timed([PY, "-c", DPKT_LOOP, str(cap)]))
    runs["json"].append(timed(["tshark", "-n", "-r", str(cap), "-Y", "http", "-T", "json"]))
    disk_create = _file_create_us(disk, scratch)
    shm_create = _file_create_us(shm, scratch) if shm else 0.0
    w_wall, w_cpu, w_rss, w_out = _best(runs["disk"])
    s_wall, s_cpu, s_rss, _ = _best(runs["shm"]) if shm else (0.0, 0.0, 0, "")
    p_wall, p_cpu, p_rss, _ = _best(runs["pure"]) if shm else (0.0, 0.0, 0, "")
    t_wall, t_cpu, t_rss, t_out = _best(runs["tshark"])
    j_wall, j_cpu, j_rss, _ = _best(runs["json"])
    d_wall, d_cpu, d_rss, _ = _best(runs["dpkt"])
    m = re.search(r"(\d+) packets.* (\d+) entries", w_out)
    packets, entries = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    tshark_msgs = sum(1 for line in t_out.splitlines() if line.strip())
    size = cap.stat().st_size
    compiled = "compiled with mypyc" if capture.NATIVE_BUILD else "NOT compiled (no build)"
    rows.append(
        f"Capture: `{cap.name}`, {size / 1e6:.0f} MB, {packets:,} packets; kshark wrote {entries:,} entries "
        f"(tshark listed {tshark_msgs:,} HTTP messages). Each program ran {repeat} times, "
        f"interleaved; the fastest run of each is shown. kshark's capture modules: {compiled}.\n"
    )
    rows.append(
        "| program | wall s | cpu s | max RSS MB | packets/s | entries/s | time vs tshark -T fields |"
    )
    rows.append("|---|---:|---:|---:|---:|---:|---:|")

    def row(name: str, wall: float, cpu: float, rss: int, with_entries: bool) -> None:
        pps = f"{packets / wall:,.0f}" if wall else "-"
        eps = f"{entries / wall:,.0f}" if with_entries and wall else "-"
        rows.append(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {rss / 2**20:.0f} | {pps} | {eps} | {wall / t_wall:.2f} |"
        )

    row("`kshark-worker --once`, data dir on the disk (ext4)", w_wall, w_cpu, w_rss, True)
    if shm:
        row("`kshark-worker --once`, data dir on tmpfs", s_wall, s_cpu, s_rss, True)
        row(
            "`kshark-worker --once`, tmpfs, capture modules as pure Python (`KSHARK_PURE=1`)",
            p_wall,
            p_cpu,
            p_rss,
            True,
        )
    row(
        "`tshark -Y http -T fields -e http.request.method -e http.response.code`",
        t_wall,
        t_cpu,
        t_rss,
        False,
    )
    row("`tshark -Y http -T json` (one run)", j_wall, j_cpu, j_rss, False)
    row("bare `dpkt.pcap.Reader` loop (read only)", d_wall, d_cpu, d_rss, False)
    rows.append("")
    rows.append(
        f"Creating one 1.2 kB file cost {disk_create:.0f} µs on this disk and {shm_create:.0f} µs on "
        "tmpfs after the runs; kshark creates one file per entry (ENTRY.md) and one pcap per "
        "connection, in a helper process on the second core.\n"
    )
    shm_ratio = f"**{s_wall / t_wall:.2f}** with the data dir on tmpfs, " if shm else ""
    pure_ratio = f" (pure Python: {p_wall / t_wall:.2f} on tmpfs)" if shm else ""
    rows.append(
        f"Ratio kshark / tshark -T fields (target ≤ 0.5): **{w_wall / t_wall:.2f}** on the disk, "
        f"{shm_ratio}{pure_ratio}; "
        f"kshark (disk) / tshark -T json: {w_wall / j_wall:.2f}; kshark (disk) / bare dpkt loop: "
        f"{w_wall / d_wall:.1f}×; kshark peak RSS {max(w_rss, s_rss, p_rss) / 2**20:.0f} MB "
        "(target < 300 MB).\n"
    )


def run_sub(script: str, args: list[str], rows: list[str], title: str) -> None:
    path = ROOT / "scripts" / script
    if not path.exists():
        rows.append(f"### {title}\n\n(`scripts/{script}` not present)\n")
        return
    res = subprocess.run(
        [PY, str(path), *args], capture_output=True, text=True, check=False, timeout=900
    )
    rows.append(f"### {title}\n")
    rows.append(res.stdout.strip() or f"(failed: {res.stderr.strip()[-500:]})")
    rows.append("")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--requests", type=int, default=45_000, help="requests in the built capture (default 45000)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="a 5000-request capture, to check the script"
    )
    ap.add_argument("--capture", type=Path, help="use this capture instead of building one")
    ap.add_argument("--only", choices=["pipeline", "kfl", "more"], action="append")
    ap.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="runs of each program in the pipeline part (default 5)",
    )
    ap.add_argument("--no-write", action="store_true", help="print, do not update BENCHMARKS.md")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    n = 5000 if args.quick else args.requests
    cap = args.capture or OUT / f"http-{n}.pcap"
    only = set(args.only or ["pipeline", "kfl", "more"])
    scratch: list[Path] = []  # data directories, deleted at the very end (see _worker_once)
    try:
        _run_parts(args, cap, n, only, scratch)
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)


def _run_parts(
    args: argparse.Namespace, cap: Path, n: int, only: set[str], scratch: list[Path]
) -> None:
    rows: list[str] = [
        f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        f"Machine: {os.cpu_count()} cores; `uname -r` {os.uname().release}; "
        f"Python {sys.version.split()[0]}; {_tool_version(['tshark', '--version'])}.\n",
    ]
    if "pipeline" in only:
        if not cap.exists():
            print(f"bench: building {cap} ({n} requests)…", file=sys.stderr)
            build_capture(cap, n)
        rows.append("### Capture → entries (issue 2)\n")
        bench_pipeline(cap, rows, args.repeat, scratch)
    if "kfl" in only:
        run_sub(
            "bench_kfl.py",
            ["--markdown"],
            rows,
            "KFL: compiled query vs hand-written Python (issue 3)",
        )
    if "more" in only:
        for extra, title in (
            ("bench_decode.py", "Read + decode per packet"),
            ("bench_reassembly.py", "TCP reassembly per segment"),
            ("bench_api.py", "Worker API: stream rate, latency, live loss (issue 4)"),
            ("bench_hub.py", "Hub: fan-in cost (issue 5)"),
            ("bench_proto.py", "HTTP/2 and DNS: entries/s vs tshark (issue 12)"),
            ("bench_web.py", "Dashboard in Chromium at 2,000 entries/s (issue 11)"),
            ("bench_memory.py", "Memory: responses that decode to 10 MiB each (issue 9)"),
            ("bench_k8s.py", "Kubernetes name resolution: cost per entry, memory, sync (issue 10)"),
        ):
            extra_args = [str(cap)] if extra == "bench_decode.py" and cap.exists() else []
            if extra == "bench_memory.py":
                extra_args = ["--markdown"]
            if (ROOT / "scripts" / extra).exists():
                run_sub(extra, extra_args, rows, title)
    text = "\n".join(rows) + "\n"
    print(text)
    if not args.no_write:
        bench_md = ROOT / "BENCHMARKS.md"
        head = (
            bench_md.read_text().split("\n## Run of", 1)[0]
            if bench_md.exists()
            else "# Benchmarks\n"
        )
        bench_md.write_text(head.rstrip() + "\n\n" + text)


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[
            0
        ]
    except (OSError, IndexError):
        return f"{cmd[0]} not installed"


if __name__ == "__main__":
    main()
