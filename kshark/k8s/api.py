"""The few API calls kshark makes: GET one page of a list, and stream a watch.

Why hand-written on httpx rather than a Kubernetes client library: the official client blocks,
kubernetes_asyncio needs asyncio, and what kshark needs from the libraries that do run on anyio
(lightkube, kr8s) is exactly the part they decide for you — when a watch resumes from which
resourceVersion, what a 410 inside a 200 stream does to the cache, how errors back off, and
counters for /status. Those rules are the whole job of `listwatch.py` (~200 lines, tested
against a real kube-apiserver); httpx brings the hard parts underneath: TLS with the cluster's
CA or a client certificate, HTTP/1.1 chunked streaming, connection reuse, and a Trio backend.

Responses are parsed with orjson (a list of 10,000 pods is tens of MB of JSON).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from kshark import __version__
from kshark.k8s.config import ClusterConfig

# Seconds to connect / write a request / wait for a pooled connection. Reads have their own
# bound per call (a watch is quiet for minutes by design).
CONNECT_TIMEOUT = 10.0
# Seconds a plain (non-watch) GET may take to answer, a list page included.
REQUEST_TIMEOUT = 30.0
# Largest single watch event line accepted (one object). Past it the stream is dropped as an
# error (and resumed): a Pod with megabytes of annotations is not something to buffer blindly.
MAX_EVENT_BYTES = 16 << 20


class ApiError(Exception):
    """An API call that failed: an HTTP status (or a Status object), or no answer at all.

    `code` is the HTTP status / Status code, 0 when the server could not be reached or the
    connection broke. str() is one line for /status and logs."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason

    @classmethod
    def from_status(cls, status: Any, fallback_code: int = 0) -> ApiError:
        """From a Kubernetes Status object (the body of an error, or an ERROR watch event)."""
        if not isinstance(status, dict):
            return cls(fallback_code, f"HTTP {fallback_code}")
        code = status.get("code")
        code = code if isinstance(code, int) else fallback_code
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or reason or f"HTTP {code}")
        return cls(code, f"{code} {reason}: {message}" if reason else f"{code}: {message}", reason)


class ApiClient:
    """One HTTP connection pool to one API server; closed with `aclose` (or `async with`)."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        auth = httpx.BasicAuth(*config.basic_auth) if config.basic_auth else None
        self._extensions: dict[str, Any] = {}
        if config.tls_server_name:
            self._extensions["sni_hostname"] = config.tls_server_name
        self._http = httpx.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context(),
            auth=auth,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            headers={"Accept": "application/json", "User-Agent": f"kshark/{__version__}"},
            follow_redirects=False,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        token = self.config.bearer_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET `path` → the decoded JSON object; ApiError on any failure."""
        try:
            r = await self._http.get(
                path, params=params, headers=self._headers(), extensions=self._extensions
            )
        except httpx.HTTPError as exc:
            raise ApiError(0, _describe(exc)) from None
        if r.status_code != 200:
            raise _error_of(r.status_code, r.content)
        try:
            body = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise ApiError(r.status_code, f"GET {path}: the answer is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(r.status_code, f"GET {path}: the answer is not a JSON object")
        return body

    @asynccontextmanager
    async def watch(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a watch; yields an iterator of its events (`{"type", "object"}` dicts), which
        ends when the server ends the stream. ApiError when it cannot be opened, and from the
        iterator when the connection breaks or a line is not an event. `read_timeout` bounds
        the silence between two chunks (bookmarks and timeoutSeconds keep it short)."""
        timeout = httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT)
        try:
            async with self._http.stream(
                "GET",
                path,
                params={**params, "watch": "true"},
                headers=self._headers(),
                timeout=timeout,
                extensions=self._extensions,
            ) as r:
                if r.status_code != 200:
                    raise _error_of(r.status_code, await r.aread())
                yield _events(r)
        except httpx.HTTPError as exc:
            raise ApiError(0, _describe(exc)) from None


async def _events(r: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Newline-delimited JSON events from a watch response."""
    buf = b""
    try:
        async for chunk in r.aiter_bytes():
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line, buf = buf[:nl], buf[nl + 1 :]
                if line.strip():
                    yield _event(line)
            if len(buf) > MAX_EVENT_BYTES:
                raise ApiError(0, f"a watch event longer than {MAX_EVENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise ApiError(0, _describe(exc)) from None
    if buf.strip():
        yield _event(buf)


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ApiError(0, f"a watch line that is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ApiError(0, f"a watch line that is not an event: {line[:80]!r}")
    return event


def _error_of(status: int, body: bytes) -> ApiError:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        return ApiError(status, f"HTTP {status}: {text}" if text else f"HTTP {status}")
    return ApiError.from_status(parsed, status)


def _describe(exc: httpx.HTTPError) -> str:
    """One line for a transport failure: the exception's class says more than its (often
    empty) text, e.g. "ConnectError: [Errno 111] Connection refused"."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
