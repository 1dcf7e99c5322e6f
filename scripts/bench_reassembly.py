#!/usr/bin/env python3
"""µs per segment of ``Reassembler.feed`` on a synthetic HTTP-like workload.

    .venv/bin/python scripts/bench_reassembly.py [--conns 1000] [--per-conn 200] [--repeat 5]

The workload is built before timing: ``--conns`` connections (handshake, then keep-alive
request/response rounds, then FIN both ways) with their segments interleaved round-robin, so the
dict and the per-connection state are spread over memory as in a real capture. About a quarter of
the segments are pure ACKs, as in perf-baseline.md's capture (19 %). Rows (best of ``--repeat``
runs, CPU time of this process; the machine is shared, so the minimum is the least disturbed):

  mixed             the whole workload, events drained every 256 segments
  mixed, pop each   the same, ``pop_events()`` after every segment (what the pipeline does)
  pure ACKs         only pure ACKs on established connections (fast path, no events)
  in-order data     only the data segments, in order (fast path + one Data each)
  1% reordered      the mixed workload with 1 % of data segments swapped with their successor
                    (out-of-order buffering, hole fills, joined Data)

Target (issue 2): ≲ 1.5 µs/segment on "mixed" on this machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capture.reassembly import Reassembler  # noqa: E402
from capture.segment import ACK, FIN, PSH, SYN, Segment  # noqa: E402

MSS = 1448
CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])
REQUEST = b"GET /small.json HTTP/1.1\r\nHost: example\r\nUser-Agent: bench\r\n\r\n"
MASK = 0xFFFFFFFF


def build_connection(i: int, per_conn: int, rng: random.Random) -> list[Segment]:
    """About ``per_conn`` segments of one keep-alive HTTP connection, time field = order."""
    cport = 20000 + i
    sport = 8080
    cseq = rng.randrange(1 << 32)
    sseq = rng.randrange(1 << 32)
    out: list[Segment] = []

    def c2s(flags: int, payload: bytes = b"") -> None:
        nonlocal cseq
        out.append(Segment(0, 4, CLIENT_IP, SERVER_IP, cport, sport, cseq, sseq, flags, payload))
        cseq = (cseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & MASK

    def s2c(flags: int, payload: bytes = b"") -> None:
        nonlocal sseq
        out.append(Segment(0, 4, SERVER_IP, CLIENT_IP, sport, cport, sseq, cseq, flags, payload))
        sseq = (sseq + len(payload) + (1 if flags & (SYN | FIN) else 0)) & MASK

    c2s(SYN)
    s2c(SYN | ACK)
    c2s(ACK)
    body = bytes(rng.randrange(256) for _ in range(MSS))
    while len(out) < per_conn - 4:
        c2s(ACK | PSH, REQUEST)
        s2c(ACK)  # pure ACK of the request
        for _ in range(rng.choice((1, 2, 3, 4))):
            s2c(ACK, body)
        s2c(ACK | PSH, body[:300])
        c2s(ACK)  # pure ACK of the response
    c2s(ACK | FIN)
    s2c(ACK | FIN)
    c2s(ACK)
    return out


def build(conns: int, per_conn: int, seed: int = 1) -> list[Segment]:
    rng = random.Random(seed)
    flows = [build_connection(i, per_conn, rng) for i in range(conns)]
    merged: list[Segment] = []
    pos = [0] * conns
    live = list(range(conns))
    while live:
        still = []
        for i in live:
            if pos[i] < len(flows[i]):
                merged.append(flows[i][pos[i]])
                pos[i] += 1
                still.append(i)
        live = still
    return [s._replace(ts_ns=1_700_000_000_000_000_000 + n * 1000) for n, s in enumerate(merged)]


def run(segs: list[Segment], warm: list[Segment], pop_every: int) -> float:
    r = Reassembler()
    feed = r.feed
    pop = r.pop_events
    for s in warm:  # e.g. the handshakes, so only the measured segments are timed
        feed(s)
    pop()
    t0 = time.process_time()
    if pop_every == 1:
        for s in segs:
            feed(s)
            pop()
    else:
        n = 0
        for s in segs:
            feed(s)
            n += 1
            if n == pop_every:
                pop()
                n = 0
    t1 = time.process_time()
    return (t1 - t0) / len(segs) * 1e6


def best(repeat: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--per-conn", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    segs = build(args.conns, args.per_conn)
    established = [s for s in segs if not s.flags & (SYN | FIN)]
    handshakes = [s for s in segs if s.flags & SYN]
    # pure ACKs of established connections that acknowledge exactly what the peer sent (the
    # handshake), so they take the fast path and produce no events, as in a real capture
    isn = {(s.src, s.sport): s.seq for s in handshakes}
    pure_acks = [
        s._replace(seq=(isn[(s.src, s.sport)] + 1) & MASK, ack=(isn[(s.dst, s.dport)] + 1) & MASK)
        for s in established
        if not s.payload
    ]
    data = [s for s in established if s.payload]
    reordered = list(segs)
    rng = random.Random(2)
    idx = [i for i, s in enumerate(reordered[:-1]) if s.payload and reordered[i + 1].payload]
    for i in rng.sample(idx, len(data) // 100):
        reordered[i], reordered[i + 1] = reordered[i + 1], reordered[i]

    # sanity: the workload reassembles cleanly
    r = Reassembler()
    for s in segs:
        r.feed(s)
    st = r.stats
    assert st.gaps == 0 and st.closed_fin == args.conns, st

    rows = [
        ("mixed", len(segs), best(args.repeat, lambda: run(segs, [], 256))),
        ("mixed, pop each", len(segs), best(args.repeat, lambda: run(segs, [], 1))),
        ("pure ACKs", len(pure_acks), best(args.repeat, lambda: run(pure_acks, handshakes, 256))),
        ("in-order data", len(data), best(args.repeat, lambda: run(data, handshakes, 256))),
        ("1% reordered", len(reordered), best(args.repeat, lambda: run(reordered, [], 256))),
    ]
    print(f"Reassembler.feed, {args.conns} connections, best of {args.repeat} (CPU time)\n")
    print("| workload | segments | µs/segment |")
    print("|---|---:|---:|")
    for name, n, us in rows:
        print(f"| {name} | {n} | {us:.3f} |")


if __name__ == "__main__":
    main()
