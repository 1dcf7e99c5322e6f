"""The worker's routes over a Store: the entry streams and the REST beside them.

Streams (`/api/wsFull`, `/wsFull` full entries; `/api/ws`, `/ws` summary form): after the first
frame (kshark.api.wire), each client walks the store's write order from its own position with
`store.read_after(seq, n)`, then sleeps in `store.wait_for_seq(seq)` until the pipeline writes
more (kshark.api.entry_stream). Entries retention deletes before a slow client reaches them are
counted (`clients_missed_total` in /status) and, for JSON-frame clients, told in a gap frame.

A JSON-frame client that opens `/api/wsFull?position=1` (the hub does) first gets a position
frame, `{"position": {"since": <id> | null, "store_age": s, "store_id": "…"}}`: the entry the
stream continues after (null: the store's first entry), taken in the same step that fixes the
stream's start, and which data directory it belongs to (kshark.store.identity). With it a client
that reconnects can resume exactly, even with `"history": false` before its first match, and can
tell a worker restarted on another data directory (whose ids mean other entries) from the same
one. Raw-text clients never get it.

REST (also under an `/api` prefix): /echo, /status, /metrics, /version, /query/validate?q=,
/item/{stream}-{index}, /pcaps/{stream}. Stream numbers are parsed as ASCII digits and handed to
the store as ints; no user text is ever joined into a file path.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import trio
from trio_websocket import ConnectionClosed

from capture.entries import summarize as summarize_entry
from kshark.api.entry_stream import (
    ClientState,
    StreamLimits,
    StreamTotals,
    cancel_when_closed,
    entry_frames,
    send_stream,
)
from kshark.api.files import file_chunks
from kshark.api.httpserver import (
    Request,
    Response,
    error_response,
)
from kshark.api.metrics import Metric, render, status_metrics
from kshark.api.paths import (
    ITEM_RE,
    PCAP_RE,
    POSITION_ON,
    POSITION_PARAM,
    STREAM_PATHS,
    SUMMARY_PATHS,
)
from kshark.api.routes import Routes, add_common_routes
from kshark.api.status_caps import listed_clients
from kshark.api.wire import (
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    StreamError,
    open_stream,
    refuse,
)
from kshark.store.identity import StoreIdentity, read_identity
from kshark.web import routes as web_routes

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

    from kshark.api.wire import StreamRequest
    from kshark.store import Store

log = logging.getLogger("kshark.api")


class _StoreUnavailable(Exception):
    """The worker has not built its store yet (the API starts first to learn its port)."""


class WorkerApp:
    """The worker's `App` (see kshark.api.httpserver) over one Store.

    `store` may be the Store or a callable returning it (the worker builds its store after the
    API has a port); until the callable succeeds, requests get 503 and streams close with 1013.
    `stats_provider` gives the capture/pipeline counters shown in /status and /metrics.
    `summarize` turns an entry into the summary form of ENTRY.md (default:
    capture.entries.summarize).
    """

    ws_paths = STREAM_PATHS

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        stats_provider: Callable[[], Mapping[str, Any]] | None = None,
        macros: Mapping[str, str] | None = None,
        summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        limits: StreamLimits | None = None,
    ) -> None:
        self._store_or_getter = store
        self._stats_provider = stats_provider
        self._macros = dict(macros) if macros else None
        self._summarize = summarize or summarize_entry
        self.limits = limits or StreamLimits()
        self.clients: dict[int, ClientState] = {}
        self._client_ids = itertools.count(1)
        self.clients_total = 0
        self.totals = StreamTotals()
        # /status's newest_id for (store, last_seq): decoding the newest entry once per new
        # entry, not once per /status request.
        self._newest: tuple[object, int, str | None] | None = None
        self._identity: tuple[object, StoreIdentity | None] | None = None
        self.routes = self._routes()

    @property
    def clients_missed_total(self) -> int:
        return self.totals.missed

    @property
    def entries_sent_total(self) -> int:
        return self.totals.sent

    @property
    def store(self) -> Store:
        s = self._store_or_getter
        if callable(s) and not hasattr(s, "read_after"):
            try:
                return s()
            except LookupError:
                raise _StoreUnavailable from None
        return s  # type: ignore[return-value]

    # ---- websocket streams ---------------------------------------------------------------

    async def handle_ws(self, request: Request, ws: WebSocketConnection) -> None:
        opened = await open_stream(
            ws, macros=self._macros, first_frame_timeout=self.limits.first_frame_timeout
        )
        if opened is None:
            return
        stream_request, query = opened
        try:
            store = self.store
        except _StoreUnavailable:
            await refuse(ws, StreamError("unavailable", "the worker is starting"), CLOSE_TRY_AGAIN)
            return
        wants_position = (
            stream_request.json_frame and request.query.get(POSITION_PARAM) in POSITION_ON
        )
        try:
            start = self._start_seq(store, stream_request)
        except StreamError as err:
            if wants_position:
                # Which store refused the cursor: a client keeping cursors across restarts can
                # tell "a new data directory" from "my cursor is too old".
                try:
                    await ws.send_message(self._position_frame(store, None, known=False))
                except ConnectionClosed:
                    return
            await refuse(ws, err)
            return
        # Taken now, with `start` (no await in between), so it names exactly where the stream
        # begins.
        position = self._position_frame(store, start, stream_request) if wants_position else None
        summarize = self._summarize if request.path in SUMMARY_PATHS else None
        client = ClientState(
            id=next(self._client_ids),
            remote=request.remote,
            path=request.path,
            query=stream_request.query,
            json_frame=stream_request.json_frame,
            connected_at=time.time(),
            seq=start,
        )
        self.clients[client.id] = client
        self.clients_total += 1
        log.info(
            "stream %d from %s on %s: %r from seq %d",
            client.id,
            client.remote,
            client.path,
            client.query,
            start,
        )
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_closed, ws, nursery.cancel_scope)
                if position is not None:
                    await ws.send_message(position)
                steps = entry_frames(store, client, stream_request, query, summarize, self.limits)
                finished = await send_stream(
                    ws, nursery, store, client, steps, self.limits, self.totals
                )
                nursery.cancel_scope.cancel()
            if finished:
                await ws.aclose(CLOSE_NORMAL)
        except* ConnectionClosed:
            pass  # the client went away while we were sending
        finally:
            del self.clients[client.id]
            log.info(
                "stream %d ended: %d sent, %d missed, at seq %d",
                client.id,
                client.sent,
                client.missed,
                client.seq,
            )

    def _start_seq(self, store: Store, req: StreamRequest) -> int:
        if req.since is not None:
            if not isinstance(req.since, str):
                raise StreamError("cursor", 'a worker cursor is one entry "id" (a string)')
            seq = store.seq_of_id(req.since)
            if seq is None:
                raise StreamError("cursor", f"unknown cursor {req.since!r}")
            return seq
        return 0 if req.history else store.last_seq

    def _position_frame(
        self, store: Store, start: int | None, req: StreamRequest | None = None, known: bool = True
    ) -> str:
        """The position frame: the entry the stream continues after (`since`; null when it
        starts at the store's first entry; left out when it is not known) and the store."""
        body: dict[str, Any] = {}
        if known and start is not None:
            if req is not None and req.since is not None:
                body["since"] = req.since  # resolved by _start_seq: the client's own cursor
            elif start == 0:
                body["since"] = None
            else:
                since = entry_id_at(store, start)
                if since is not None:  # its file already deleted by retention: not known
                    body["since"] = since
        store_id, age = self._store_identity(store)
        body["store_id"] = store_id
        body["store_age"] = age
        return orjson.dumps({"position": body}, option=orjson.OPT_SORT_KEYS).decode()

    def _store_identity(self, store: Store) -> tuple[str | None, float | None]:
        """The store's id and its age in seconds (None where unknown)."""
        store_id = getattr(store, "store_id", None)
        cached = self._identity
        if cached is None or cached[0] is not store:
            identity = read_identity(store.data_dir) if store_id is not None else None
            cached = self._identity = (store, identity)
        identity = cached[1]
        if identity is None or identity.store_id != store_id:
            return store_id, None
        return store_id, round(max(0.0, time.time() - identity.created), 3)

    def _newest_id(self, store: Store) -> str | None:
        seq = store.last_seq
        cached = self._newest
        if cached is not None and cached[0] is store and cached[1] == seq:
            return cached[2]
        newest = entry_id_at(store, seq)
        self._newest = (store, seq, newest)
        return newest

    # ---- REST ------------------------------------------------------------------------------

    def _routes(self) -> Routes:
        routes = Routes()
        add_common_routes(
            routes, role="worker", status=self.status, metrics=self.metrics, macros=self._macros
        )
        routes.prefix("/item/", self._item)
        routes.prefix("/pcaps/", self._pcap)
        web_routes.add_dashboard(routes, self._export)
        return routes

    async def handle_http(self, request: Request) -> Response:
        try:
            return await self.routes.dispatch(request)
        except _StoreUnavailable:
            return error_response(503, "the worker is starting")

    async def _export(self, request: Request, route: str) -> Response:
        from kshark.api.export import worker_export

        worker_id = self.status().get("worker")
        return await worker_export(
            self.store,  # raises _StoreUnavailable before the store exists
            request,
            route,
            interface_name=worker_id if isinstance(worker_id, str) else "kshark-worker",
            macros=self._macros,
        )

    async def _item(self, request: Request, rest: str) -> Response:
        m = ITEM_RE.fullmatch(rest)
        if m is None:
            return error_response(404, "no such entry (want /item/<stream>-<index>)")
        data = self.store.entry_bytes(int(m[1]), int(m[2]))
        if data is None:
            return error_response(404, f"no such entry: {rest}")
        return Response(200, data, "application/json")

    async def _pcap(self, request: Request, rest: str) -> Response:
        m = PCAP_RE.fullmatch(rest)
        if m is None:
            return error_response(404, "no such pcap (want /pcaps/<stream>)")
        stream = int(m[1])
        path = self.store.pcap_path(stream)
        if path is None:
            return error_response(404, f"no such pcap: {rest}")
        try:
            # The length is fixed here: packets appended later (a connection still open) are
            # not part of this download.
            size = os.stat(path).st_size
        except FileNotFoundError:
            return error_response(404, f"no such pcap: {rest}")
        name = f"{stream:012d}.pcap"
        return Response(
            200,
            content_type="application/vnd.tcpdump.pcap",
            headers=[("Content-Disposition", f'attachment; filename="{name}"')],
            stream=file_chunks(path, size),
            content_length=size,
        )

    # ---- status and metrics ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status document: the worker's counters, the store's, and the clients."""
        out: dict[str, Any] = dict(self._stats_provider()) if self._stats_provider else {}
        store = self.store
        last_seq = store.last_seq
        now = time.time()
        out["store"] = dict(store.stats)
        out["last_seq"] = last_seq
        out["newest_id"] = self._newest_id(store)
        out["store_id"] = getattr(store, "store_id", None)
        out["clients_connected"] = len(self.clients)
        out["clients_total"] = self.clients_total
        out["clients_missed_total"] = self.clients_missed_total
        out["entries_sent_total"] = self.entries_sent_total
        # The most lagging first, at most MAX_STATUS_CLIENTS, queries shortened (status_caps).
        rows: list[dict[str, Any]] = [
            {
                "id": c.id,
                "remote": c.remote,
                "path": c.path,
                "query": c.query,
                "json_frame": c.json_frame,
                "connected_seconds": round(now - c.connected_at, 3),
                "seq": c.seq,
                "lag": max(0, last_seq - c.seq),
                "sent": c.sent,
                "missed": c.missed,
                "buffered_bytes": c.buffered_bytes,
            }
            for c in self.clients.values()
        ]
        rows.sort(key=lambda row: -row["lag"])
        out["clients"], out["clients_not_listed"] = listed_clients(rows)
        return out

    def metrics(self) -> str:
        """Prometheus text exposition (kshark.api.metrics) of /status's numbers, `kshark_`
        prefixed, and each client's lag."""
        status = self.status()
        clients = status.pop("clients")
        lag = [({"client": str(c["id"]), "path": c["path"]}, c["lag"]) for c in clients]
        return render(
            [
                *status_metrics(status, "kshark_", _METRIC_INFO),
                Metric(
                    "kshark_client_lag_entries",
                    "gauge",
                    "entries a connected client is behind",
                    lag,
                ),
            ]
        )


def entry_id_at(store: Store, seq: int) -> str | None:
    """The `id` of the entry at `seq`; None for seq 0 or when its file is gone (retention)."""
    if seq <= 0:
        return None
    items, _ = store.read_after(seq - 1, 1)
    if not items or items[0][0] != seq:
        return None
    try:
        entry = orjson.loads(items[0][1])
    except orjson.JSONDecodeError:
        return None
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    return entry_id if isinstance(entry_id, str) and entry_id else None


# HELP text and type of well-known counters; anything else is a gauge named by its path.
_METRIC_INFO: dict[str, tuple[str, str]] = {
    "packets": ("counter", "packets seen by capture or replay"),
    "dropped_kernel": ("counter", "packets the kernel dropped before capture read them"),
    "dropped_ours": ("counter", "packets kshark dropped (bounded buffers full)"),
    "connections": ("counter", "TCP connections and UDP flows dissected"),
    "entries": ("counter", "entries the pipeline produced"),
    "errors": ("counter", "entries with an error set"),
    "last_seq": ("gauge", "seq of the newest stored entry"),
    "clients_connected": ("gauge", "streaming websocket clients connected now"),
    "clients_total": ("counter", "streaming websocket clients served"),
    "clients_missed_total": ("counter", "entries retention deleted before a client read them"),
    "entries_sent_total": ("counter", "entry frames sent to streaming clients"),
    "uptime_seconds": ("gauge", "seconds since the worker started"),
}
