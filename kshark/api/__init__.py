"""The HTTP + websocket side: one port serving the streams and the REST beside them.

- httpserver: the listener, requests and responses on h11 (reused by the hub)
- ws_upgrade: the websocket hand-off to trio-websocket, and what the server adds to it
- h11io: h11 on a Trio stream with an exact head bound (the server, the hub's clients)
- wire: first-frame parsing, error/gap frames, output shaping (reused by the hub)
- wsbatch: many text messages in one write (the worker's and the hub's streams)
- worker_app: the worker's routes over a Store

See docs/api.md for the user-facing contract.
"""

from __future__ import annotations
