"""The REST prelude the worker and the hub share: which route a request names, and the refusals
every route gets alike.

Both serve the same routes (docs/api.md, docs/hub.md), each also under an `/api` prefix; only
GET and HEAD are served. `route_of(request)` strips the prefix and answers what does not depend
on the route's own handler: another method on a route is `405` (with `Allow`), anything on an
unknown path `404`. Each app then dispatches on the returned path and ends with `no_such_path`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kshark.api.httpserver import error_response

if TYPE_CHECKING:
    from kshark.api.httpserver import Request, Response

# Routes matched exactly, and routes followed by a parameter (`/item/{...}`, `/pcaps/{...}`).
EXACT_ROUTES = frozenset(
    {"/echo", "/version", "/query/validate", "/status", "/metrics", "/har", "/pcap"}
)
PREFIX_ROUTES = ("/item/", "/pcaps/")
_METHODS = ("GET", "HEAD")


def route_exists(path: str) -> bool:
    """Whether `path` (without the `/api` prefix) is one of the REST routes."""
    return path in EXACT_ROUTES or path.startswith(PREFIX_ROUTES)


def route_of(request: Request) -> tuple[str, Response | None]:
    """(the route path without its `/api` prefix, None), or (that path, the refusal to send:
    405 for a method other than GET/HEAD on a route, 404 for one on any other path)."""
    path = request.path
    if path.startswith("/api/"):
        path = path[4:]
    if request.method not in _METHODS:
        if route_exists(path):
            return path, error_response(
                405, f"{request.method} not allowed", [("Allow", ", ".join(_METHODS))]
            )
        return path, no_such_path(request)
    return path, None


def no_such_path(request: Request) -> Response:
    """The 404 for a path no route serves (named as the client sent it)."""
    return error_response(404, f"no such path: {request.path}")
