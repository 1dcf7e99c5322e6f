"""What an export asks for (`?q=<kfl>[&limit=N][&max_bytes=N]`), its bounds, and the scan of
the stored entries that match it; the HAR and pcapng exports (kshark.api.har, kshark.api.pcapng)
and the hub's (kshark.hub.export) share them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from kshark.api.httpserver import Response, json_response
from kshark.api.wire import CompiledQuery, StreamError, compile_stream_query

if TYPE_CHECKING:
    from kshark.api.httpserver import Request
    from kshark.store import Store

# Entries read from the store per batch while scanning (the same bound a stream uses).
SCAN_BATCH = 64


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """The bounds of one export. A `limit` query parameter may lower `max_entries` (HAR) or
    `max_connections` (pcap), never raise them; `max_bytes` may be lowered the same way.

    max_entries: HAR entries in one export. Past it: the export ends, `log.comment` says so.
    max_har_bytes: bytes of HAR entries (JSON text) in one export. The entry that would pass it
        is not sent; the export ends, `log.comment` says so.
    max_connections: connections (per-connection pcaps) in one pcap export. The first ones in
        write order are exported; `X-Kshark-Truncated` and the section comment say so.
    max_pcap_bytes: bytes of packet data (the connections' pcap files) in one pcap export. A
        connection that would pass it is left out, and so is every later one.
    """

    max_entries: int = 10_000
    max_har_bytes: int = 256 << 20
    max_connections: int = 1_000
    max_pcap_bytes: int = 512 << 20


class ExportError(Exception):
    """A request we refuse before answering: (status, JSON error body)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", {}).get("message", ""))
        self.status = status
        self.body = body

    def response(self) -> Response:
        return json_response(self.body, self.status)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """The parsed parameters of an export: the KFL text, its compiled form, and the bounds."""

    text: str
    query: CompiledQuery
    limit: int  # entries (HAR) or connections (pcap)
    max_bytes: int
    limit_from_kfl: bool  # `limit` is the query's own limit(n): reaching it cuts nothing


def parse_export_request(
    request: Request,
    *,
    default_limit: int,
    default_bytes: int,
    macros: Mapping[str, str] | None = None,
) -> ExportRequest:
    """`?q=<kfl>[&limit=N][&max_bytes=N]` → ExportRequest; raises ExportError (400): a KFL
    error carries its line and column, as on `/query/validate` and the stream."""
    text = request.query.get("q", "")
    try:
        query = compile_stream_query(text, macros)
    except StreamError as err:
        error: dict[str, Any] = {"type": "kfl", "message": err.message}
        if err.line is not None:
            error["line"] = err.line
            error["column"] = err.column
        raise ExportError(400, {"error": error}) from None
    limit = _bounded_param(request, "limit", default_limit)
    max_bytes = _bounded_param(request, "max_bytes", default_bytes)
    from_kfl = query.limit is not None and query.limit <= limit
    if query.limit is not None:
        limit = min(limit, max(query.limit, 0))
    return ExportRequest(text, query, limit, max_bytes, from_kfl)


def _bounded_param(request: Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise ExportError(400, _http_error(f"{name} must be a whole number"))
    return min(int(raw), default)


def _http_error(message: str) -> dict[str, Any]:
    return {"error": {"type": "http", "message": message}}


def stored_batches(
    store: Store, req: ExportRequest, end: int
) -> Iterator[tuple[list[tuple[int, dict[str, Any]]], int]]:
    """The stored entries up to seq `end` (the newest when the export began) that match
    `req`, oldest first: per batch read, ([(seq, entry)], entries retention deleted)."""
    match = req.query.match
    seq = 0
    while seq < end:
        items, missed = store.read_after(seq, min(SCAN_BATCH, end - seq))
        if not items and not missed:
            return
        seq += len(items) + missed
        matches: list[tuple[int, dict[str, Any]]] = []
        for s, data in items:
            if s > end:
                break
            entry = orjson.loads(data)
            if match(entry):
                matches.append((s, entry))
        yield matches, missed
