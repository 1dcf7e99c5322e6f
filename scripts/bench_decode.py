#!/usr/bin/env python3
"""µs per packet of kshark's capture reader and decoder, next to dpkt on the same file.

    .venv/bin/python scripts/bench_decode.py [CAPTURE] [--repeat N]

Rows (each the best of N runs, CPU time of this process; the machine is shared, so the minimum
is the figure least disturbed by other work):
  read            ``for _ in CaptureFile(path)``: record walk + frame slice + timestamp
  read + decode   the same plus ``Decoder.decode`` on every frame (frame → Segment)
  dpkt read       a bare ``dpkt.pcap.Reader`` / ``dpkt.pcapng.Reader`` loop
  dpkt decode     dpkt's reader + eager ``dpkt.ethernet.Ethernet(buf)`` + field access, on at most
                  the first 100 000 packets (it is ~10× slower; Ethernet captures only)

Without CAPTURE, a ~200 000-packet Ethernet pcap is assembled in a temporary directory from the
shared captures in ../shared/pcaps (their records repeated), so the script runs anywhere.
Prints a Markdown table (scripts/bench pastes it into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.decode import Decoder  # noqa: E402
from capture.sources import CaptureFile  # noqa: E402

SHARED = ROOT.parent / "shared" / "pcaps"
DPKT_DECODE_MAX = 100_000


def build_default_capture(dest: Path, target: int = 200_000) -> Path:
    """Concatenate the Ethernet records of the shared captures until ``target`` packets."""
    records: list[tuple[int, bytes]] = []
    for src in sorted(SHARED.glob("*.pcap*")):
        for ts, linktype, frame in CaptureFile(src):
            if linktype == 1:
                records.append((ts, frame))
    if not records:
        raise SystemExit(f"bench_decode: no Ethernet captures under {SHARED}")
    rec = struct.Struct("<IIII")
    with dest.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        n = 0
        while n < target:
            for ts, frame in records:
                sec, ns = divmod(ts, 1_000_000_000)
                out.write(rec.pack(sec, ns // 1000, len(frame), len(frame)))
                out.write(frame)
                n += 1
    return dest


def run_read(path: Path) -> int:
    n = 0
    for _ in CaptureFile(path):
        n += 1
    return n


def run_read_decode(path: Path) -> int:
    decode = Decoder().decode
    n = 0
    for ts, linktype, frame in CaptureFile(path):
        decode(ts, linktype, frame)
        n += 1
    return n


def _dpkt_reader(path: Path) -> Iterator[tuple[float, bytes]]:
    import dpkt

    opener: Callable[..., Any] = open
    with open(path, "rb") as probe:
        if probe.read(2) == b"\x1f\x8b":
            opener = gzip.open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        yield from reader


def run_dpkt_read(path: Path) -> int:
    n = 0
    for _ in _dpkt_reader(path):
        n += 1
    return n


def run_dpkt_decode(path: Path) -> int:
    import dpkt

    n = 0
    for _ts, buf in _dpkt_reader(path):
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        tcp = getattr(ip, "data", None)
        if isinstance(tcp, dpkt.tcp.TCP):
            _ = (ip.src, ip.dst, tcp.sport, tcp.dport, tcp.seq, tcp.flags, tcp.data)
        n += 1
        if n >= DPKT_DECODE_MAX:
            break
    return n


def best_of(fn: Callable[[Path], int], path: Path, repeat: int) -> tuple[int, float, float]:
    """(packets, best CPU seconds, wall seconds of that run)."""
    best: tuple[int, float, float] | None = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        n = fn(path)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if best is None or cpu < best[1]:
            best = (n, cpu, wall)
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?", type=Path, help="pcap/pcapng (optionally gzip) file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the best is reported")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kshark-bench-decode-") as tmp:
        path = args.capture or build_default_capture(Path(tmp) / "mixed.pcap")
        rows = [
            ("kshark `CaptureFile` read", run_read),
            ("kshark read + `Decoder.decode`", run_read_decode),
            ("dpkt `Reader` loop only", run_dpkt_read),
            (f"dpkt Reader + eager `Ethernet(buf)` (≤{DPKT_DECODE_MAX:,} pkts)", run_dpkt_decode),
        ]
        size = path.stat().st_size
        print(f"File: `{path.name}`, {size / 1e6:.1f} MB; best of {args.repeat} runs (CPU time).\n")
        print("| what | packets | cpu s | wall s | µs / packet |")
        print("|---|---:|---:|---:|---:|")
        for title, fn in rows:
            n, cpu, wall = best_of(fn, path, args.repeat)
            per = cpu / n * 1e6 if n else float("nan")
            print(f"| {title} | {n:,} | {cpu:.2f} | {wall:.2f} | {per:.2f} |", flush=True)


if __name__ == "__main__":
    main()
