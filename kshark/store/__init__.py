"""The worker's data directory: entry files, per-connection pcaps, the journal that orders them,
retention, and following new entries as they are written. Layout and guarantees: docs/store.md.

    from kshark.store import Store
"""

from __future__ import annotations

from kshark.store.core import (
    DEFAULT_STORAGE_LIMIT,
    PCAP_BUFFER_PER_STREAM,
    PCAP_BUFFER_TOTAL,
    RECENT_BYTES_MAX,
    RECENT_ENTRIES_MAX,
    RESERVATION_BLOCK,
    RETENTION_STREAMS_PER_WRITE,
    RETENTION_TARGET,
    PreparedBatch,
    Store,
    StoreError,
    StoreLockedError,
    StoreOutput,
)
from kshark.store.journal import INDEX_CACHE_SEGMENTS, SEGMENT_LINES
from kshark.store.pending import PendingWrite

__all__ = [
    "DEFAULT_STORAGE_LIMIT",
    "INDEX_CACHE_SEGMENTS",
    "PCAP_BUFFER_PER_STREAM",
    "PCAP_BUFFER_TOTAL",
    "RECENT_BYTES_MAX",
    "RECENT_ENTRIES_MAX",
    "RESERVATION_BLOCK",
    "RETENTION_STREAMS_PER_WRITE",
    "RETENTION_TARGET",
    "SEGMENT_LINES",
    "PendingWrite",
    "PreparedBatch",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreOutput",
]
