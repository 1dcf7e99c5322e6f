"""The worker's data directory: entry files, per-connection pcaps, the journal that orders them,
retention, and following new entries as they are written. Layout and guarantees: docs/store.md.

    from kshark.store import Store
"""

from __future__ import annotations

from kshark.store.batch import PreparedBatch, StoreOutput
from kshark.store.core import Store
from kshark.store.limits import DEFAULT_STORAGE_LIMIT, StoreLimits
from kshark.store.pending import PendingWrite
from kshark.store.state import StoreError, StoreLockedError

__all__ = [
    "DEFAULT_STORAGE_LIMIT",
    "PendingWrite",
    "PreparedBatch",
    "Store",
    "StoreError",
    "StoreLimits",
    "StoreLockedError",
    "StoreOutput",
]
