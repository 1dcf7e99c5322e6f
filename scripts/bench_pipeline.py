#!/usr/bin/env python3
"""CPU cost of the sans-IO packet pipeline on a real capture, per packet and per entry.

    .venv/bin/python scripts/bench_pipeline.py CAPTURE [--repeat 3] [--stages] [--profile [N]]
                                                [--gc-freeze]

Runs `capture.pipeline.Pipeline` over the capture the way the worker does (output drained every
2048 packets) and serialises every entry with orjson + OPT_SORT_KEYS, as kshark/store.py does.
The capture is read into memory first, so file reading is not timed (sources.py has its own
cost; `--stages` shows it). Numbers are CPU time of this process (the machine is shared), best of
`--repeat` runs.

--stages     cumulative cost of each stage: read, + decode, + reassembly, + http1 (these three
             with Data events, as any caller of the modules), + the Pipeline's own work and
             entries, + JSON
--profile    one run under cProfile, then the top N functions by own time (default 30)
--gc-freeze  gc.freeze() first (what a worker can do after start-up: the collector then never
             walks the objects of the imported modules again; worth ~3 % here)

The machine is shared: compare runs made one after the other, and prefer the minimum.

Target (2026 perf task): pipeline + serialisation ≲ 30 µs per entry on bench-out/http-45000.pcap
(an nginx/wrk keep-alive capture: 108,681 packets, 41,632 entries).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from capture.decode import Decoder  # noqa: E402
from capture.entries import Identity  # noqa: E402
from capture.http1 import HttpConnection  # noqa: E402
from capture.pipeline import Pipeline  # noqa: E402
from capture.reassembly import Closed, Data, Gap, Opened, Reassembler  # noqa: E402
from capture.sources import CaptureFile  # noqa: E402

IDENTITY = Identity(
    worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="bench", local_ips=frozenset()
)
BATCH = 2048  # packets between pop_output() calls, like the worker's batches
SORT = orjson.OPT_SORT_KEYS


def run_pipeline(packets: list[tuple[int, int, bytes]], serialize: bool = True) -> int:
    counter = itertools.count(1)
    p = Pipeline(IDENTITY, allocate_stream=lambda: next(counter))
    feed = p.feed
    entries = 0
    dumps = orjson.dumps
    for n, (ts, lt, fr) in enumerate(packets, 1):
        feed(ts, lt, fr)
        if n % BATCH == 0:
            out = p.pop_output()
            entries += len(out.entries)
            if serialize:
                for e in out.entries:
                    dumps(e, option=SORT)
    p.finish()
    out = p.pop_output()
    entries += len(out.entries)
    if serialize:
        for e in out.entries:
            dumps(e, option=SORT)
    return entries


def run_decode(packets: list[tuple[int, int, bytes]]) -> int:
    decode = Decoder().decode
    k = 0
    for ts, lt, fr in packets:
        if decode(ts, lt, fr) is not None:
            k += 1
    return k


def run_reassembly(packets: list[tuple[int, int, bytes]], http: bool) -> int:
    decode = Decoder().decode
    r = Reassembler()
    feed = r.feed
    pop = r.pop_events
    conns: dict[int, HttpConnection] = {}
    k = 0
    for ts, lt, fr in packets:
        seg = decode(ts, lt, fr)
        if seg is None:
            continue
        feed(seg)
        for ev in pop():
            k += 1
            if not http:
                continue
            t = type(ev)
            if t is Data:
                h = conns.get(ev.conn_id)
                if h is not None:
                    h.data(ev.side, ev.data, ev.ts_ns)
                    h.pop_exchanges()
            elif t is Opened:
                conns[ev.conn_id] = HttpConnection()
            elif t is Gap:
                h = conns.get(ev.conn_id)
                if h is not None:
                    h.gap(ev.side, ev.length, ev.ts_ns)
                    h.pop_exchanges()
            elif t is Closed:
                h = conns.pop(ev.conn_id, None)
                if h is not None:
                    h.end(ev.reason, ev.ts_ns)
                    h.pop_exchanges()
    return k


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("capture")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--profile", type=int, nargs="?", const=30, default=0)
    ap.add_argument("--gc-freeze", action="store_true")
    args = ap.parse_args()

    t0 = time.process_time()
    packets = list(CaptureFile(args.capture))
    t_read = time.process_time() - t0
    n = len(packets)
    if args.gc_freeze:
        gc.freeze()
    e = run_pipeline(packets)

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run_pipeline, packets)
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
        return

    print(f"{args.capture}: {n} packets, {e} entries")
    if args.stages:
        rows = [
            ("read (sources.py)", t_read),
            ("+ decode", best(lambda: run_decode(packets), args.repeat)),
            ("+ reassembly", best(lambda: run_reassembly(packets, False), args.repeat)),
            ("+ http1", best(lambda: run_reassembly(packets, True), args.repeat)),
            ("+ entries (Pipeline)", best(lambda: run_pipeline(packets, False), args.repeat)),
        ]
        for name, dt in rows:
            print(
                f"  {name:<24} {dt:6.3f} s  {dt / n * 1e6:6.2f} µs/packet  "
                f"{dt / max(e, 1) * 1e6:6.2f} µs/entry"
            )
    dt = best(lambda: run_pipeline(packets), args.repeat)
    print(
        f"pipeline + orjson: {dt:.3f} s cpu  {dt / n * 1e6:.2f} µs/packet  "
        f"{dt / max(e, 1) * 1e6:.2f} µs/entry"
    )


if __name__ == "__main__":
    main()
