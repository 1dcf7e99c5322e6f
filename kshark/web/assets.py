"""The dashboard's static files, read once from the package, and how they are served.

Why no build step and no framework: the page is a list, a filter bar, a detail pane and a status
table over an API that already does the work (filtering, projection, resumption). Plain ES
modules that the browser loads as they are keep it small (a few hundred lines per concern), let
anyone read what runs, and need nothing but this package at run time, so it works in an
air-gapped cluster. No file is fetched from the internet, ever.

Caching: the page (`/`) is `no-cache` (revalidated on every load) and names its files under a
version directory, `assets/<version>/app.js`, where the version is a hash of every file. Those
are served `immutable` for a year; a new kshark (new files) is a new version, so browsers never
mix old and new modules. A request for another version is a 404, never a stale file.

Security headers on every dashboard response: a Content-Security-Policy that allows scripts,
styles and connections from this origin only (no inline script or style, no eval, no frames,
no forms, no plugins), `nosniff`, no referrer. Captured data never reaches the page through
these files: it comes from the API and is rendered as text (see static/dom.js).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from kshark.api.httpserver import Response, error_response
from kshark.web.paths import ASSETS_PREFIX, PAGE_PATH

# The page's only source of code, style, images and connections is its own origin. `'self'` in
# connect-src also covers ws:/wss: to the same host and port (CSP Level 3), which the streams use.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
PAGE_CACHE = "no-cache"
ASSET_CACHE = "public, max-age=31536000, immutable"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# index.html names its files relative to the page, under this placeholder, so that the dashboard
# also works behind a proxy that serves it under a path prefix.
_VERSION_PLACEHOLDER = b"{{ASSETS}}"


@dataclass(frozen=True, slots=True)
class Assets:
    version: str
    page: bytes
    files: dict[str, tuple[bytes, str]]  # name → (bytes, content type)


def load_assets() -> Assets:
    """Every file of static/ (flat: no subdirectories), the page with its version filled in."""
    root = resources.files("kshark.web").joinpath("static")
    files: dict[str, tuple[bytes, str]] = {}
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in CONTENT_TYPES:
            files[item.name] = (item.read_bytes(), CONTENT_TYPES[suffix])
    digest = hashlib.sha256()
    for name, (data, _) in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    version = digest.hexdigest()[:16]
    page, _ = files.pop("index.html")
    page = page.replace(_VERSION_PLACEHOLDER, f"assets/{version}".encode())
    return Assets(version, page, files)


_assets: Assets | None = None


def assets() -> Assets:
    global _assets
    if _assets is None:
        _assets = load_assets()
    return _assets


def static_response(path: str) -> Response | None:
    """The dashboard's answer for `path` (the request path as sent), or None if it is not one of
    the dashboard's paths."""
    if path == PAGE_PATH:
        page = assets().page
        return Response(
            200, page, CONTENT_TYPES[".html"], [*SECURITY_HEADERS, ("Cache-Control", PAGE_CACHE)]
        )
    if not path.startswith(ASSETS_PREFIX):
        return None
    version, _, name = path[len(ASSETS_PREFIX) :].partition("/")
    a = assets()
    found = a.files.get(name) if version == a.version else None
    if found is None:
        missing = error_response(404, f"no such file: {path}")
        missing.headers.extend(SECURITY_HEADERS)
        return missing
    data, content_type = found
    return Response(200, data, content_type, [*SECURITY_HEADERS, ("Cache-Control", ASSET_CACHE)])
