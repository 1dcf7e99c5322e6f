"""The streaming paths the worker and the hub both serve (docs/api.md), in one place so that
neither app imports the other's module for them."""

from __future__ import annotations

# Full entries, and the summary form of ENTRY.md.
FULL_PATHS = frozenset({"/api/wsFull", "/wsFull"})
SUMMARY_PATHS = frozenset({"/api/ws", "/ws"})
STREAM_PATHS = FULL_PATHS | SUMMARY_PATHS
# `/api/wsFull?position=1`: a JSON-frame client asks the worker for the position frame
# (kshark.api.worker_app); the hub's relays always do.
POSITION_PARAM = "position"
POSITION_ON = frozenset({"1", "true"})
