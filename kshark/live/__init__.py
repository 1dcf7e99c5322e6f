"""Live capture: AF_PACKET sockets with TPACKET_V3 rings, read on Trio, delivered in batches.

Output is the same `(ts_ns, linktype, frame)` triples that `capture.sources` yields for files,
handed on as **lists** (one memory-channel send per batch: a send per packet would cost more
than the packet's whole processing; see shared/reference/perf-baseline.md).

- capture.py: `LiveCapture` (interfaces, sockets, the Trio loop, the batches);
- ring.py: one interface's ring and its counters (why a TPACKET_V3 ring);
- bpf.py: capture filters compiled by libpcap;
- errors.py: what it refuses with.
"""

from __future__ import annotations

from kshark.live.capture import (
    BATCH_BYTES_MAX,
    BATCH_MAX,
    CHANNEL_BATCHES,
    DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_TIMEOUT_MS,
    DEFAULT_BUFFER_BYTES,
    LiveCapture,
)
from kshark.live.errors import (
    LiveCaptureError,
    LiveFilterError,
    LiveInterfaceError,
    LivePermissionError,
)
from kshark.live.ring import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, Batch, Frame

__all__ = [
    "BATCH_BYTES_MAX",
    "BATCH_MAX",
    "CHANNEL_BATCHES",
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_BLOCK_TIMEOUT_MS",
    "DEFAULT_BUFFER_BYTES",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "Batch",
    "Frame",
    "LiveCapture",
    "LiveCaptureError",
    "LiveFilterError",
    "LiveInterfaceError",
    "LivePermissionError",
]
