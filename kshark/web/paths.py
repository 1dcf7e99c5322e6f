"""Which request paths are the dashboard's static files. No imports: the HTTP server asks this
before it checks the token (kshark.api.httpserver), and must not pull the dashboard in."""

from __future__ import annotations

# The page itself; its files live under ASSETS_PREFIX + <version>/ (kshark.web.assets).
PAGE_PATH = "/"
ASSETS_PREFIX = "/assets/"


def is_public(path: str) -> bool:
    """True for the dashboard's page and files: served without the API token, because the page
    must load before it can ask the user for one. They are the same code for every install and
    carry no captured data; everything the page then shows comes through the API, token and all."""
    return path == PAGE_PATH or path.startswith(ASSETS_PREFIX)
