#!/usr/bin/env python3
"""Peak memory of a replay whose responses decode to far more than they weigh (issue 9).

    .venv/bin/python scripts/bench_memory.py [--responses 200] [--max-body SIZE] [--markdown]

Builds bench-out/gzip-<N>x10mib.pcap (once; scripts/make_hostile_fixtures.py's conversations:
N gzip responses of about 10 KiB, each decoding to 10 MiB, 10 per keep-alive connection, about
2 MB in all), then runs `kshark-worker --once` on it under /usr/bin/time -v and reports its
maximum RSS. Before bodies were bounded after decoding, each entry kept its 10 MiB (13 MB as
base64) and this capture took a worker to 5.4 GB; the target is under 300 MB with the default
--max-body (1 MiB). `--responses 20` checks the script in seconds.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from bench import timed  # noqa: E402
from make_hostile_fixtures import Conversation, S, get, ok, pcap  # noqa: E402

OUT = ROOT / "bench-out"
TARGET_MB = 300
PER_CONNECTION = 10
CONTENT = bytes(10 << 20)  # compresses ~1000:1, like a sparse export


def build(path: Path, responses: int) -> None:
    body = gzip.compress(CONTENT, compresslevel=9, mtime=0)
    response = ok(body, "Content-Encoding: gzip")
    frames: list[tuple[int, bytes]] = []
    for c in range(0, responses, PER_CONNECTION):
        conv = Conversation(1_709_290_800 * S + c * S, cport=20000 + c)
        conv.handshake()
        for k in range(c, min(c + PER_CONNECTION, responses)):
            conv.exchange(get(f"/export/{k}.log"), response)
        conv.close()
        frames.extend(conv.frames)
    path.write_bytes(pcap(1, [(t // S, t % S // 1000, f) for t, f in frames]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--responses", type=int, default=200)
    ap.add_argument("--max-body", default=None, help="passed to kshark-worker (default: its own)")
    ap.add_argument("--markdown", action="store_true", help="a table row (scripts/bench uses it)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    cap = OUT / f"gzip-{args.responses}x10mib.pcap"
    if not cap.exists():
        build(cap, args.responses)
    with tempfile.TemporaryDirectory(prefix="ksbench-mem-") as data:
        cmd = [
            str(ROOT / ".venv" / "bin" / "kshark-worker"), "--once", "--pcap", str(cap),
            "--data-dir", data, "--storage-limit", "100GiB", "--log-level", "WARNING",
        ]  # fmt: skip
        if args.max_body:
            cmd += ["--max-body", args.max_body]
        try:
            wall, cpu, rss, out = timed(cmd, stdout=subprocess.PIPE)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"bench_memory: kshark-worker failed: {exc}")
    entries = out.split(" entries", 1)[0].rsplit(" ", 1)[-1]
    mb = rss / 2**20
    verdict = "within" if mb < TARGET_MB else "OVER"
    if args.markdown:
        print(
            "| capture | entries | wall s | max RSS MB | target |\n|---|---:|---:|---:|---|\n"
            f"| {args.responses} gzip responses decoding to 10 MiB each "
            f"({cap.stat().st_size / 1e6:.1f} MB), --max-body "
            f"{args.max_body or 'default (1MiB)'} | {entries} | {wall:.1f} | {mb:.0f} | "
            f"< {TARGET_MB} MB: {verdict} |"
        )
    else:
        print(f"{cap.name}: {entries} entries, {wall:.1f} s wall, {cpu:.1f} s cpu, max RSS {mb:.0f} MB "
              f"(target < {TARGET_MB} MB: {verdict})")  # fmt: skip
        print(out.strip())


if __name__ == "__main__":
    main()
