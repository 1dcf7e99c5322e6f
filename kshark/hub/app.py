"""The hub's routes: the worker API, served for the whole set of workers.

Served through kshark.api.httpserver (one port, HTTP + websockets, optional client token), with
the worker's first-frame parsing and error frames (kshark.api.wire), so a client cannot tell a
hub from a worker except by the entries' variety, the hub cursor and the worker state frames.

- `/api/wsFull`, `/wsFull`, `/api/ws`, `/ws`: the filter is compiled here first (a bad one gets
  the error frame and close 1008 before any worker is contacted), then stream.HubStream relays
  it to every worker.
- `/item/{worker}/{stream}-{index}`, `/pcaps/{worker}/{stream}`: fetched from that worker over
  HTTP and streamed through. `{worker}` must be one of the hub's workers (its address or its own
  id): the hub never connects anywhere a client names.
- `/status`, `/metrics`: the hub's workers (state, last error, entries relayed, lag) and clients.
- `/echo`, `/version`, `/query/validate`: answered by the hub itself.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Set
from typing import TYPE_CHECKING, Any

from trio_websocket import ConnectionClosed

from kshark import __version__
from kshark.api.httpserver import Response, error_response
from kshark.api.metrics import Metric, render
from kshark.api.paths import FULL_PATHS, ITEM_RE, PCAP_RE, STREAM_PATHS
from kshark.api.routes import Routes, add_common_routes
from kshark.api.status_caps import listed_clients
from kshark.api.wire import (
    CLOSE_NORMAL,
    Projection,
    StreamError,
    open_stream,
    refuse,
)
from kshark.hub.frames import META_FIELDS, parse_cursor
from kshark.hub.httpclient import UpstreamError, http_get
from kshark.hub.limits import HubLimits
from kshark.hub.relay import RelayPlan
from kshark.hub.stream import HubStream, StreamCounters
from kshark.web import routes as web_routes

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

    from kshark.api.httpserver import Request
    from kshark.api.wire import StreamRequest
    from kshark.hub.workers import WorkerInfo, WorkerSet, WorkersFileState

log = logging.getLogger("kshark.hub")

# Response headers of a worker passed on to the client.
_PASSED_HEADERS = ("content-disposition",)


def relay_plan(path: str, request: StreamRequest, limit: int | None) -> RelayPlan:
    """What every worker is asked for one client stream (see relay.RelayPlan)."""
    fields = request.fields
    worker_fields: tuple[str, ...] | None = fields
    project = None
    if fields is not None:
        missing = tuple(name for name in META_FIELDS if name not in fields)
        if missing:
            # The hub needs these to resume and merge; it asks for them and removes them again.
            worker_fields = (*fields, *missing)
            project = Projection(fields)
    return RelayPlan(
        worker_path="/api/wsFull" if path in FULL_PATHS else "/api/ws",
        query=request.query,
        worker_fields=worker_fields,
        project=project,
        history=request.history,
        json_frame=request.json_frame,
        ordered=request.ordered,
        limit=limit,
    )


class HubApp:
    """The hub's `App` (see kshark.api.httpserver) over a WorkerSet."""

    ws_paths: Set[str] = STREAM_PATHS

    def __init__(
        self,
        workers: WorkerSet,
        *,
        limits: HubLimits | None = None,
        worker_token: str | None = None,
        workers_file: WorkersFileState | None = None,
    ) -> None:
        self.workers = workers
        self.limits = limits or HubLimits()
        self.worker_token = worker_token
        self.workers_file = workers_file
        self.clients: dict[int, HubStream] = {}
        self.clients_total = 0
        self.counters = StreamCounters()
        self.started = time.time()
        self.port: int | None = None  # set by run_hub once listening
        self.discovery: Any = None  # kshark.hub.discover.Discovery with --discover
        self.routes = self._routes()

    # ---- streams ----------------------------------------------------------------------------

    async def handle_ws(self, request: Request, ws: WebSocketConnection) -> None:
        opened = await open_stream(ws, first_frame_timeout=self.limits.first_frame_timeout)
        if opened is None:
            return  # refused (error frame sent, 1008) before any worker was contacted
        stream_request, query = opened
        try:
            cursor = parse_cursor(stream_request.since)
        except ValueError as exc:
            await refuse(ws, StreamError("cursor", str(exc)))
            return
        stream = HubStream(
            ws,
            remote=request.remote,
            path=request.path,
            request=stream_request,
            plan=relay_plan(request.path, stream_request, query.limit),
            limit=query.limit,
            cursor=cursor,
            workers=self.workers,
            limits=self.limits,
            counters=self.counters,
            worker_token=self.worker_token,
        )
        self.clients[stream.id] = stream
        self.clients_total += 1
        try:
            if await stream.run():
                await ws.aclose(CLOSE_NORMAL)
        except ConnectionClosed:
            pass  # the client went away while we were sending
        finally:
            del self.clients[stream.id]

    # ---- REST -------------------------------------------------------------------------------

    def _routes(self) -> Routes:
        routes = Routes()
        add_common_routes(routes, role="hub", status=self.status, metrics=self.metrics)
        for route, pattern in (("/item/", ITEM_RE), ("/pcaps/", PCAP_RE)):

            async def proxy(
                request: Request, rest: str, route: str = route, pattern: re.Pattern[str] = pattern
            ) -> Response:
                return await self._proxy(request, rest, route, pattern)

            routes.prefix(route, proxy)
        web_routes.add_dashboard(routes, self._export)
        return routes

    async def handle_http(self, request: Request) -> Response:
        return await self.routes.dispatch(request)

    async def _export(self, request: Request, route: str) -> Response:
        from kshark.hub.export import hub_export

        return await hub_export(self.workers, request, route, worker_token=self.worker_token)

    async def _proxy(
        self, request: Request, rest: str, route: str, pattern: re.Pattern[str]
    ) -> Response:
        name, slash, what = rest.partition("/")
        if not slash or pattern.fullmatch(what) is None:
            want = "{stream}-{index}" if route == "/item/" else "{stream}"
            return error_response(404, f"want {route}{{worker}}/{want}")
        address = self.workers.resolve(name)
        if address is None:
            return error_response(404, f"unknown worker: {name}")
        try:
            upstream = await http_get(
                address, route + what, token=self.worker_token, io_timeout=self.limits.http_timeout
            )
        except UpstreamError as exc:
            return error_response(502, f"worker {address}: {exc}")
        headers = [
            (name.title(), upstream.headers[name])
            for name in _PASSED_HEADERS
            if name in upstream.headers
        ]
        content_type = upstream.headers.get("content-type", "application/octet-stream")
        if request.method == "HEAD":
            await upstream.aclose()
            return Response(
                upstream.status,
                content_type=content_type,
                headers=headers,
                stream=_nothing(),
                content_length=upstream.content_length,
            )
        return Response(
            upstream.status,
            content_type=content_type,
            headers=headers,
            stream=upstream.body(),
            content_length=upstream.content_length,
        )

    # ---- status and metrics --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        workers = [self.workers.info[a].status() for a in self.workers.addresses]
        out: dict[str, Any] = {
            "role": "hub",
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 3),
            "workers": workers,
            "workers_total": len(workers),
            "workers_up": sum(1 for w in workers if w["state"] == "up"),
            "workers_file": self.workers_file.status() if self.workers_file else None,
            "discovery": self.discovery.status() if self.discovery else None,
            "clients_connected": len(self.clients),
            "clients_total": self.clients_total,
            "entries_sent_total": self.counters.entries_sent_total,
        }
        # Oldest first, at most MAX_STATUS_CLIENTS, queries shortened (kshark.api.status_caps).
        out["clients"], out["clients_not_listed"] = listed_clients(
            c.status() for c in self.clients.values()
        )
        return out

    def metrics(self) -> str:
        """Prometheus text exposition (kshark.api.metrics): the hub's totals and one series per
        worker."""
        infos = [self.workers.info[a] for a in self.workers.addresses]

        def total(name: str, kind: str, help_text: str, value: float) -> Metric:
            return Metric(name, kind, help_text, [({}, value)])

        def per_worker(
            name: str, kind: str, help_text: str, get: Callable[[WorkerInfo], float]
        ) -> Metric:
            return Metric(name, kind, help_text, [({"worker": i.address}, get(i)) for i in infos])

        return render(
            [
                total(
                    "kshark_hub_uptime_seconds",
                    "gauge",
                    "seconds since the hub started",
                    round(time.time() - self.started, 3),
                ),
                total(
                    "kshark_hub_clients_connected",
                    "gauge",
                    "client streams open now",
                    len(self.clients),
                ),
                total(
                    "kshark_hub_clients_total",
                    "counter",
                    "client streams served",
                    self.clients_total,
                ),
                total(
                    "kshark_hub_entries_sent_total",
                    "counter",
                    "entry frames sent to clients",
                    self.counters.entries_sent_total,
                ),
                per_worker(
                    "kshark_hub_worker_up",
                    "gauge",
                    "1 if the worker was reachable at the last check",
                    lambda i: 1 if i.state == "up" else 0,
                ),
                per_worker(
                    "kshark_hub_worker_entries_relayed_total",
                    "counter",
                    "entries from this worker sent to clients",
                    lambda i: i.entries_relayed,
                ),
                per_worker(
                    "kshark_hub_worker_lag_entries",
                    "gauge",
                    "entries the hub's streams on this worker are behind its newest",
                    lambda i: i.lag or 0,
                ),
                per_worker(
                    "kshark_hub_worker_streams",
                    "gauge",
                    "client streams connected to this worker now",
                    lambda i: i.relays_connected,
                ),
                per_worker(
                    "kshark_hub_worker_connects_total",
                    "counter",
                    "websockets opened to this worker",
                    lambda i: i.connects,
                ),
                per_worker(
                    "kshark_hub_worker_drops_total",
                    "counter",
                    "websockets to this worker that failed",
                    lambda i: i.drops,
                ),
                per_worker(
                    "kshark_hub_worker_frames_dropped_total",
                    "counter",
                    "frames of this worker the hub dropped (not UTF-8, not JSON, not its entries)",
                    lambda i: i.frames_dropped,
                ),
                per_worker(
                    "kshark_hub_worker_degraded",
                    "gauge",
                    "1 if the hub dropped a frame of this worker in the last 60 s",
                    lambda i: 1 if i.degraded else 0,
                ),
            ]
        )


async def _nothing() -> AsyncIterator[bytes]:
    empty: tuple[bytes, ...] = ()  # a HEAD answer: the server sends the head only
    for chunk in empty:
        yield chunk
