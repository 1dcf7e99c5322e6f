#!/usr/bin/env python3
"""HTTP/2 and DNS: kshark's entries per second against tshark on the same capture, same run.

    .venv/bin/python scripts/bench_proto.py [--queries 40000] [--requests 20000] [--repeat 3]
                                            [--only dns|http2] [--markdown]

Each capture is recorded for real in a private network namespace (needs root), like
scripts/bench.py's HTTP/1 capture, and kept in bench-out/ for later runs:

  dns     dnsmasq answering A/AAAA lookups from a Python client that, like glibc, opens a new UDP
          socket per lookup (a new 5-tuple, so a new flow and pcap each) and walks a Kubernetes
          search path (`name.ns.svc.cluster.local` answered, the other suffixes NXDOMAIN);
          recorded by tcpdump on the namespace's loopback.
  http2   nginx speaking h2c (prior knowledge), loaded by h2load (10 connections, 10 concurrent
          streams each) with small JSON and HTML responses.

Then `kshark-worker --once` (data directory on tmpfs, as scripts/bench.py's second row) and
tshark listing the same protocol's messages (`-T fields`, DNS: `-Y dns`; HTTP/2: `-Y http2
-d tcp.port==8081,http2`) run `--repeat` times each, interleaved; the fastest run of each counts.
entries/s is kshark's entries over each program's wall time: how fast each turns the capture
into that many records. The HTTP/2 row needs the HTTP/2 dissector (`http2` in
capture.dissectors.spec_names()); without it the row says so.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import sh, timed  # noqa: E402

from capture.dissectors import spec_names  # noqa: E402

OUT = ROOT / "bench-out"
H2_PORT = 8081

DNS_CLIENT = r"""
import random, socket, struct, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
services = [f"svc{i}" for i in range(40)]
namespaces = ["shop", "payments", "default"]
search = ["{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"]
def question(name, qtype):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return q + struct.pack("!HH", qtype, 1)
sent = 0
while sent < n:
    svc, ns = rng.choice(services), rng.choice(namespaces)
    # glibc's order with ndots:5: the search list first; only the first suffix exists.
    for i, suffix in enumerate(search):
        for qtype in (1, 28):
            if sent >= n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            ident = rng.randrange(65536)
            name = f"{svc}.{suffix.format(ns=ns)}"
            s.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question(name, qtype),
                     ("127.0.0.1", 53))
            try:
                s.recv(4096)
            except OSError:
                pass
            s.close()
            sent += 1
        if i == 0:
            break
"""


def _ns_up(ns: str) -> None:
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


def _tcpdump(ns: str, path: Path, bpf: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-i", "lo", "-w", str(path), "-s", "0",
         "-B", "262144", bpf],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "listening" not in line:
        raise RuntimeError(f"tcpdump did not start: {line}")
    return proc


def _stop(procs: list[subprocess.Popen[bytes]], ns: str) -> None:
    for p in reversed(procs):
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def build_dns(path: Path, queries: int) -> None:
    ns = f"ksbdns{os.getpid()}"
    procs: list[subprocess.Popen[bytes]] = []
    hosts = []
    rng = random.Random(7)
    for i in range(40):
        for space in ("shop", "payments", "default"):
            a = f"10.96.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            hosts.append(f"--host-record=svc{i}.{space}.svc.cluster.local,{a},fd00::{i:x}")
    try:
        _ns_up(ns)
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
                 "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
                 "--local=/cluster.local/", "--cache-size=0", *hosts],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        procs.append(_tcpdump(ns, path, "udp port 53"))
        time.sleep(1.0)
        sh(["ip", "netns", "exec", ns, sys.executable, "-c", DNS_CLIENT, str(queries), "1"])
        time.sleep(1.0)
    finally:
        _stop(procs, ns)


NGINX_H2 = """
daemon off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  http2_max_requests 1000000;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  types {{ application/json json; text/html html; }}
  server {{
    listen 127.0.0.1:{port} http2;
    root {prefix}/www;
  }}
}}
"""


def build_h2(path: Path, requests: int) -> None:
    ns = f"ksbh2{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="ksbench-h2-"))
    (work / "www").mkdir()
    (work / "www" / "small.json").write_text('{"id":1,"name":"sock","price":12.5}' * 3)
    (work / "www" / "page.html").write_text(
        "<html><body>" + "<p>socks</p>" * 300 + "</body></html>"
    )
    (work / "nginx.conf").write_text(NGINX_H2.format(prefix=work, port=H2_PORT))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _ns_up(ns)
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, "nginx", "-c", str(work / "nginx.conf"), "-p",
                 str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        procs.append(_tcpdump(ns, path, f"tcp port {H2_PORT}"))
        time.sleep(1.5)
        base = f"http://127.0.0.1:{H2_PORT}/"
        for target, share in (("small.json", 0.7), ("page.html", 0.3)):
            sh(["ip", "netns", "exec", ns, "h2load", "-n", str(max(10, int(requests * share))),
                "-c", "10", "-m", "10", base + target])  # fmt: skip
        time.sleep(1.0)
    finally:
        _stop(procs, ns)
        shutil.rmtree(work, ignore_errors=True)


def _best(runs: list[tuple[float, float, int, str]]) -> tuple[float, float, int, str]:
    best = min(runs, key=lambda r: r[0])
    return best[0], best[1], max(r[2] for r in runs), best[3]


@dataclass
class Result:
    packets: int
    entries: int
    kshark: tuple[float, float, int]  # best wall s, its cpu s, max RSS bytes
    tshark: tuple[float, float, int]
    tshark_lines: int


def measure(cap: Path, tshark: list[str], decode_as: list[str], repeat: int) -> Result:
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    kshark: list[tuple[float, float, int, str]] = []
    tsh: list[tuple[float, float, int, str]] = []
    for _ in range(repeat):
        data = Path(tempfile.mkdtemp(prefix="ksbench-proto-", dir=shm))
        try:
            kshark.append(
                timed(
                    [str(ROOT / ".venv" / "bin" / "kshark-worker"), "--once", "--pcap", str(cap),
                     "--data-dir", str(data), "--storage-limit", "100GiB", "--log-level",
                     "WARNING", *decode_as],
                    stdout=subprocess.PIPE,
                )
            )  # fmt: skip
        finally:
            shutil.rmtree(data, ignore_errors=True)
        tsh.append(timed(["tshark", "-n", "-r", str(cap), *tshark], stdout=subprocess.PIPE))
    k_wall, k_cpu, k_rss, k_out = _best(kshark)
    t_wall, t_cpu, t_rss, t_out = _best(tsh)
    m = re.search(r"(\d+) packets.* (\d+) entries", k_out)
    packets, entries = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    lines = sum(1 for line in t_out.splitlines() if line.strip())
    return Result(packets, entries, (k_wall, k_cpu, k_rss), (t_wall, t_cpu, t_rss), lines)


def rows_for(name: str, cap: Path, res: Result, tshark_cmd: str) -> list[str]:
    entries = res.entries
    k_wall, k_cpu, k_rss = res.kshark
    t_wall, t_cpu, t_rss = res.tshark
    return [
        f"| {name}: `{cap.name}` ({cap.stat().st_size / 1e6:.1f} MB, {res.packets:,} packets, "
        f"{entries:,} entries; tshark listed {res.tshark_lines:,} lines) | | | | | |",
        f"| `kshark-worker --once` (tmpfs) | {k_wall:.2f} | {k_cpu:.2f} | {k_rss / 2**20:.0f} | "
        f"{entries / k_wall:,.0f} | {k_wall / t_wall:.2f} |",
        f"| `{tshark_cmd}` | {t_wall:.2f} | {t_cpu:.2f} | {t_rss / 2**20:.0f} | "
        f"{entries / t_wall:,.0f} | 1.00 |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=40_000, help="DNS lookups in the capture")
    ap.add_argument("--requests", type=int, default=20_000, help="HTTP/2 requests in the capture")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["dns", "http2"], action="append")
    ap.add_argument("--markdown", action="store_true", help="(the output is always markdown)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_proto: building the captures needs root (network namespace + tcpdump)")
    only = set(args.only or ["dns", "http2"])
    OUT.mkdir(exist_ok=True)
    rows = [
        f"Each program ran {args.repeat} times, interleaved; the fastest run of each is shown. "
        "entries/s: kshark's entries over the program's wall time.\n",
        "| program | wall s | cpu s | max RSS MB | entries/s | time vs tshark |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if "dns" in only:
        cap = OUT / f"dns-{args.queries}.pcap"
        if not cap.exists():
            print(f"bench_proto: building {cap}…", file=sys.stderr)
            build_dns(cap, args.queries)
        fields = ["-Y", "dns", "-T", "fields", "-e", "dns.id", "-e", "dns.qry.name"]
        res = measure(cap, fields, [], args.repeat)
        rows += rows_for("DNS", cap, res, "tshark -Y dns -T fields -e dns.id -e dns.qry.name")
    if "http2" in only:
        cap = OUT / f"h2c-{args.requests}.pcap"
        if not cap.exists():
            print(f"bench_proto: building {cap}…", file=sys.stderr)
            build_h2(cap, args.requests)
        if "http2" not in spec_names():
            rows.append(f"| HTTP/2: `{cap.name}`: no HTTP/2 dissector in this build | | | | | |")
        else:
            hint = f"tcp.port=={H2_PORT},http2"
            fields = ["-d", hint, "-Y", "http2.header", "-T", "fields", "-e", "http2.streamid"]
            res = measure(cap, fields, ["--decode-as", f"{H2_PORT}=http2"], args.repeat)
            rows += rows_for("HTTP/2", cap, res,
                             f"tshark -d {hint} -Y http2.header -T fields -e http2.streamid")  # fmt: skip
    print("\n".join(rows))


if __name__ == "__main__":
    main()
