"""The REST routes of an app, as a table: the worker and the hub each fill one, the dashboard
(kshark.web.routes) adds its pages and exports to either, and `dispatch` answers a request.

Both apps serve the same routes (docs/api.md, docs/hub.md), each also under an `/api` prefix;
only GET and HEAD are served. A route is an exact path (`/status`) or a prefix followed by a
parameter (`/item/{...}`); pages are matched on the path as sent (`/`, `/assets/...`: not
routes, so never under `/api`). What does not depend on a route's handler is answered here,
alike for both apps: another method on a route is `405` (with `Allow`), anything on an unknown
path `404`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from kshark import __version__
from kshark.api.httpserver import Response, error_response, json_response, text_response
from kshark.api.kfl_thread import off_loop
from kshark.api.metrics import CONTENT_TYPE
from kshark.kfl import validate as validate_query

if TYPE_CHECKING:
    from kshark.api.httpserver import Request

# A route's handler: the request, and what follows the route's own path (a prefix route's
# parameter; "" for an exact route).
Handler = Callable[["Request", str], Awaitable[Response]]
# A page: its answer for the request, or None when the path is not one of its own.
Page = Callable[["Request"], "Response | None"]

_METHODS = ("GET", "HEAD")


class Routes:
    """Exact routes, prefix routes (in the order added) and pages, tried in that order."""

    def __init__(self) -> None:
        self._exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []
        self._pages: list[Page] = []

    def exact(self, path: str, handler: Handler) -> None:
        self._exact[path] = handler

    def prefix(self, prefix: str, handler: Handler) -> None:
        self._prefixes.append((prefix, handler))

    def page(self, page: Page) -> None:
        self._pages.append(page)

    def exists(self, path: str) -> bool:
        """Whether `path` (without the `/api` prefix) is one of the routes."""
        return path in self._exact or any(path.startswith(p) for p, _ in self._prefixes)

    def route_of(self, request: Request) -> tuple[str, Response | None]:
        """(the route path without its `/api` prefix, None), or (that path, the refusal to
        send: 405 for a method other than GET/HEAD on a route, 404 for one on any other path)."""
        path = request.path
        if path.startswith("/api/"):
            path = path[4:]
        if request.method not in _METHODS:
            if self.exists(path):
                return path, error_response(
                    405, f"{request.method} not allowed", [("Allow", ", ".join(_METHODS))]
                )
            return path, no_such_path(request)
        return path, None

    async def dispatch(self, request: Request) -> Response:
        """The answer to `request`: its route's handler's, a page, or a refusal."""
        path, refused = self.route_of(request)
        if refused is not None:
            return refused
        handler = self._exact.get(path)
        if handler is not None:
            return await handler(request, "")
        for prefix, handler in self._prefixes:
            if path.startswith(prefix):
                return await handler(request, path[len(prefix) :])
        for page in self._pages:
            answer = page(request)
            if answer is not None:
                return answer
        return no_such_path(request)


def no_such_path(request: Request) -> Response:
    """The 404 for a path no route serves (named as the client sent it)."""
    return error_response(404, f"no such path: {request.path}")


def add_common_routes(
    routes: Routes,
    *,
    role: str,
    status: Callable[[], dict[str, Any]],
    metrics: Callable[[], str],
    macros: Mapping[str, str] | None = None,
) -> None:
    """The routes the worker and the hub answer alike: /echo, /version, /query/validate
    (with the app's KFL macros), /status and /metrics (from the app's own documents)."""

    async def echo(request: Request, _: str) -> Response:
        return text_response("It's running.")

    async def version(request: Request, _: str) -> Response:
        return json_response({"name": "kshark", "role": role, "version": __version__})

    async def validate(request: Request, _: str) -> Response:
        valid, message = await off_loop(validate_query, request.query.get("q", ""), macros)
        return json_response({"valid": valid, "message": message})

    async def status_route(request: Request, _: str) -> Response:
        return json_response(status())

    async def metrics_route(request: Request, _: str) -> Response:
        return Response(200, metrics().encode(), CONTENT_TYPE)

    routes.exact("/echo", echo)
    routes.exact("/version", version)
    routes.exact("/query/validate", validate)
    routes.exact("/status", status_route)
    routes.exact("/metrics", metrics_route)
