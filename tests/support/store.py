"""Helpers for the store's tests: entries and packets built by hand, and what the data directory
holds read back (pcaps with dpkt, an independent reader)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dpkt

from capture.pipeline import Output
from kshark.store import fileio

WORKER = "10.0.41.65:30001"
T0 = 1_703_019_067_482_113_205  # ns; ENTRY.md's example instant


def make_entry(stream: int, index: int, body: str = "") -> dict[str, Any]:
    """An entry with the identity fields of ENTRY.md; nested keys deliberately unsorted."""
    name = f"{stream:012d}.pcap"
    return {
        "worker": WORKER,
        "stream": name,
        "index": index,
        "id": f"{WORKER}/{name}-{index}",
        "entryFile": f"{stream:012d}_pcap-{index}_entry.json",
        "node": {"name": "node-a", "ip": "10.0.41.65"},
        "request": {
            "method": "GET",
            "path": f"/s{stream}/i{index}",
            "headers": {"Z": "1", "A": "2"},
        },
        "response": {"status": 200, "content": {"text": body}},
        "timestamp": T0 // 1_000_000 + index,
    }


def frame(stream: int, n: int, size: int = 60) -> bytes:
    """A stand-in packet that says which stream and which packet it is."""
    return (b"%d:%d:" % (stream, n)).ljust(size, b"x")


def connection(stream: int, n: int, body: str = "", close: bool = True, t: int = T0) -> Output:
    """One connection's batch: a packet and an entry per exchange, then (optionally) its end."""
    return Output(
        [make_entry(stream, i, body) for i in range(n)],
        [(stream, t + i, 1, frame(stream, i)) for i in range(n)],
        [stream] if close else [],
    )


def read_pcap(path: Path) -> tuple[int, list[tuple[int, bytes]]]:
    """(linktype, [(ts_ns, frame)]) as dpkt reads it; dpkt gives ns files Decimal timestamps."""
    with path.open("rb") as f:
        reader = dpkt.pcap.Reader(f)
        packets = [(int(ts * 1_000_000_000), bytes(buf)) for ts, buf in reader]
        return reader.datalink(), packets


def pcap_packets(path: Path) -> list[tuple[int, bytes]]:
    """[(ts_ns, frame)] of the pcap at `path`."""
    return read_pcap(path)[1]


def journal_lines(data_dir: Path) -> list[str]:
    lines: list[str] = []
    for seg in sorted((data_dir / "journal").iterdir()):
        lines.extend(seg.read_text().splitlines())
    return lines


def stored_ids(data_dir: Path, worker: str) -> set[str]:
    """The id of every entry in a worker's data directory (from the entry file names)."""
    ids = set()
    for name in os.listdir(data_dir / "entries"):
        stream, _, rest = name.partition("_pcap-")
        ids.add(f"{worker}/{stream}.pcap-{rest.removesuffix('_entry.json')}")
    return ids


def entry_names(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "entries").iterdir())


def disk_usage_of(data_dir: Path) -> int:
    """What the store's files occupy, counted in 4 KiB blocks like the store does."""
    total = 0
    for sub in ("entries", "pcaps", "journal"):
        for p in (data_dir / sub).iterdir():
            total += fileio.disk_usage(p.stat().st_size, 4096)
    return total
