"""The hub: the worker API for a whole set of workers on one port (`kshark-hub`).

- workers: the worker set (command line + watched workers file) and per-worker state
- relay: one websocket per worker per client stream, reconnecting and resuming
- stream: one client stream (relays → bounded channel → sender; limit; order)
- merge: ordered merge by timestamp in a bounded window; limit across workers (pure)
- frames: entry metadata, cursors, the hub's own frames (pure)
- monitor: /status probes of every worker
- httpclient: the small HTTP client (h11) for /status, /item, /pcaps and the exports
- wsio: the websocket client to workers (h11 handshake, wsproto frames out, a fast reader in)
- app: the routes; cli: `kshark-hub`

User-facing contract: docs/hub.md.
"""

from __future__ import annotations

from kshark.hub.cli import HubConfig, main, run_hub

__all__ = ["HubConfig", "main", "run_hub"]
