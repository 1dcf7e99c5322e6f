"""The dashboard's routes, called by the worker's and the hub's apps after their own REST routes.

- `/` and `/assets/<version>/<file>`: the page and its files (kshark.web.assets); matched on the
  path as sent, so `/api/` is not the page.
- `/har`, `/pcap` (and `/api/har`, `/api/pcap`, as every REST route): the exports, from the
  worker's store (kshark.api.export) or gathered by the hub from its workers (kshark.hub.export).

Each returns None for a path that is not theirs; the app then answers its own 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kshark.web.assets import static_response

if TYPE_CHECKING:
    from kshark.api.httpserver import Request, Response
    from kshark.api.worker_app import WorkerApp
    from kshark.hub.app import HubApp

EXPORT_ROUTES = frozenset({"/har", "/pcap"})


async def worker_routes(app: WorkerApp, request: Request, path: str) -> Response | None:
    """`path` is the route without its `/api` prefix (kshark.api.rest.route_of)."""
    static = static_response(request.path)
    if static is not None:
        return static
    if path in EXPORT_ROUTES:
        from kshark.api.export import worker_export

        worker_id = app.status().get("worker")
        return await worker_export(
            app.store,  # raises the app's own "starting" error before the store exists
            request,
            path,
            interface_name=worker_id if isinstance(worker_id, str) else "kshark-worker",
            macros=getattr(app, "_macros", None),
        )
    return None


async def hub_routes(app: HubApp, request: Request, path: str) -> Response | None:
    """`path` is the route without its `/api` prefix (kshark.api.rest.route_of)."""
    static = static_response(request.path)
    if static is not None:
        return static
    if path in EXPORT_ROUTES:
        from kshark.hub.export import hub_export

        return await hub_export(app.workers, request, path, worker_token=app.worker_token)
    return None
