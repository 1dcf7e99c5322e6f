"""The HTTP + websocket side: one port serving the streams and the REST beside them.

- httpserver: the listener, request parsing, websocket hand-off (reused by the hub)
- wire: first-frame parsing, error/gap frames, output shaping (reused by the hub)
- worker_app: the worker's routes over a Store

See docs/api.md for the user-facing contract.
"""

from __future__ import annotations
