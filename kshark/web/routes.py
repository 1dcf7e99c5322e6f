"""The dashboard's routes, added to the worker's and the hub's route tables (kshark.api.routes)
after their own REST routes.

- `/` and `/assets/<version>/<file>`: the page and its files (kshark.web.assets); pages matched
  on the path as sent, so `/api/` is not the page.
- `/har`, `/pcap` (and `/api/har`, `/api/pcap`, as every REST route): the exports, answered by
  the app's `export(request, route)`: from the worker's store (kshark.api.export) or gathered by
  the hub from its workers (kshark.hub.export).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from kshark.web.assets import static_response

if TYPE_CHECKING:
    from kshark.api.httpserver import Request, Response
    from kshark.api.routes import Routes

EXPORT_ROUTES = ("/har", "/pcap")


def add_dashboard(routes: Routes, export: Callable[[Request, str], Awaitable[Response]]) -> None:
    """The page, its assets and the exports; `export` gets the request and its route."""
    routes.page(lambda request: static_response(request.path))
    for route in EXPORT_ROUTES:

        async def export_route(request: Request, _: str, route: str = route) -> Response:
            return await export(request, route)

        routes.exact(route, export_route)
