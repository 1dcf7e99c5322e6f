"""The worker's configuration and its state: the store, the pipeline, and the counters its API
reports."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import capture
from capture.entries import Identity
from capture.pipeline import Pipeline, PipelineLimits
from kshark import __version__
from kshark.store import Store
from kshark.worker.writer import BatchLimits

if TYPE_CHECKING:
    from collections.abc import Iterable

    from capture.protobuf import ProtoDecoder
    from kshark.k8s.config import ClusterConfig
    from kshark.k8s.resolver import Resolver


@dataclass
class WorkerConfig:
    pcaps: list[str] = field(default_factory=list)
    ifaces: list[str] = field(default_factory=list)
    bpf: str | None = None
    data_dir: Path = Path("kshark-data")
    host: str = "127.0.0.1"
    port: int = 30001
    advertise: str | None = None
    node_name: str | None = None
    token: str | None = None
    once: bool = False
    storage_limit: int = 1 << 30
    max_body: int = 1 << 20
    # --proto-descriptor: decodes gRPC messages to JSON in entries (capture/protobuf.py)
    protobuf: ProtoDecoder | None = None
    decode_as: dict[int, str] = field(default_factory=dict)  # port → protocol (--decode-as)
    cluster: ClusterConfig | None = None  # name resolution from this cluster (None: off)
    resolve_off: str = "no --kubeconfig, KUBECONFIG or in-cluster service account"
    batch: BatchLimits = field(default_factory=BatchLimits)  # frames → store writes


class Worker:
    """One worker's state: the store, the pipeline and the counters the API reports."""

    def __init__(self, cfg: WorkerConfig, api_port: int, resolver: Resolver | None = None) -> None:
        self.cfg = cfg
        self.resolver = resolver
        self.store = Store(cfg.data_dir, storage_limit=cfg.storage_limit)
        host = cfg.advertise or (
            cfg.host if cfg.host not in ("0.0.0.0", "::", "") else _primary_ip()
        )
        self.worker_id = f"{host}:{api_port}"
        identity = Identity(
            worker=self.worker_id,
            node_ip=host,
            node_name=cfg.node_name or socket.gethostname(),
            local_ips=frozenset(_local_ips()) if cfg.ifaces else frozenset(),
            resolver=resolver.index if resolver is not None else None,
        )
        from capture.http1 import HttpLimits
        from capture.http2 import Http2Limits

        limits = PipelineLimits(
            http=HttpLimits(max_body=cfg.max_body),
            http2=Http2Limits(max_body=cfg.max_body),
            protobuf=cfg.protobuf,
        )
        self.pipeline = Pipeline(
            identity, self.store.allocate_stream, limits, decode_as=cfg.decode_as
        )
        self.packets = 0
        self.capture_warnings: list[str] = []
        self.live_stats: dict[str, int] = {}
        # The StoreWriter's counters (StoreWriter.stats), kept by it while it runs.
        self.writer_stats: dict[str, int] = {"batch_bytes_limit": cfg.batch.write_batch_bytes}
        self.started = time.time()

    def flush(self) -> None:
        """Write what the pipeline holds now, in this thread (the end of a replay, the final
        flush). A write still outstanding in the store is finished first, so order is kept."""
        out = self.pipeline.pop_output()
        if out.entries or out.packets or out.closed_streams:
            self.store.write(out)

    def feed(self, frames: Iterable[tuple[int, int, bytes]]) -> None:
        """Feed frames to the pipeline; what they produce waits in it (pipeline.pop_output)."""
        self.packets += self.pipeline.feed_many(frames)

    def stats(self) -> dict[str, Any]:
        pipeline = self.pipeline.stats()
        live = self.live_stats
        return {
            "worker": self.worker_id,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 3),
            "packets": self.packets,
            "dropped_kernel": live.get("kernel_drops", 0),
            "dropped_ours": live.get("our_drops", 0) + pipeline.get("held_packets_discarded", 0),
            "connections": pipeline.get("connections_dissected", 0),
            "open_connections": pipeline.get("open_connections", 0),
            "entries": pipeline.get("entries", 0),
            "errors": pipeline.get("entries_with_error", 0),
            "capture_warnings": list(self.capture_warnings),
            # The capture modules run compiled (capture/__init__.py), or as plain Python.
            "compiled": capture.NATIVE_BUILD is not None,
            "pipeline": pipeline,
            "live": dict(live),
            "store": self.store.stats,
            "writer": dict(self.writer_stats),
            "resolver": (
                self.resolver.status()
                if self.resolver is not None
                else {"enabled": False, "reason": self.cfg.resolve_off}
            ),
        }

    def summary_line(self) -> str:
        s = self.pipeline.stats()
        # Gaps are not drops: they are bytes the capture never held, reported on their own.
        dropped = self.live_stats.get("kernel_drops", 0) + self.live_stats.get("our_drops", 0)
        dropped += s.get("held_packets_discarded", 0) + self.store.stats.get("dropped_entries", 0)
        return (
            f"kshark-worker: {self.packets} packets, {s.get('decode_tcp', 0)} tcp, "
            f"{self.pipeline.connections_text()}, {s.get('entries', 0)} entries "
            f"({s.get('entries_with_error', 0)} with errors), {dropped} dropped, "
            f"{s.get('tcp_gap_bytes', 0)} bytes missing from the capture, "
            f"{self.pipeline.undecoded_text()}, {len(self.capture_warnings)} capture warnings"
        )


def _primary_ip() -> str:
    # The address a packet to the outside would leave from; no packet is sent (UDP connect).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _local_ips() -> set[str]:
    ips: set[str] = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            ips.add(str(info[4][0]))
    except OSError:
        pass
    try:
        import fcntl  # noqa: F401  (Linux only; the interface walk below needs /proc)

        with open("/proc/net/fib_trie") as fh:
            lines = fh.read().splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                ips.add(lines[i - 1].split()[-1])
    except OSError:
        pass
    return ips
