"""The paths the worker and the hub both serve (docs/api.md), in one place so that neither app
imports the other's module for them."""

from __future__ import annotations

import re

# Full entries, and the summary form of ENTRY.md.
FULL_PATHS = frozenset({"/api/wsFull", "/wsFull"})
SUMMARY_PATHS = frozenset({"/api/ws", "/ws"})
STREAM_PATHS = FULL_PATHS | SUMMARY_PATHS
# `/api/wsFull?position=1`: a JSON-frame client asks the worker for the position frame
# (kshark.api.worker_app); the hub's relays always do.
POSITION_PARAM = "position"
POSITION_ON = frozenset({"1", "true"})

# What may follow `/item/` and `/pcaps/` (the hub: `/item/{worker}/`, `/pcaps/{worker}/`):
# `000000000007.pcap-3`, `000000000007-3`, `7-3` (stream, index) and `000000000007.pcap`, `7`.
# ASCII digits only (\d would also take other scripts' digits); nothing else ever reaches a
# file name or, through the hub, a worker.
ITEM_RE = re.compile(r"([0-9]{1,12})(?:\.pcap)?-([0-9]{1,9})")
PCAP_RE = re.compile(r"([0-9]{1,12})(?:\.pcap)?")
