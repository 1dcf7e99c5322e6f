"""Exports of a filter's stored entries: HAR 1.2 (`GET /api/har?q=`, kshark.api.har) and one
merged pcapng of their connections (`GET /api/pcap?q=`, kshark.api.pcapng), on a worker; the hub
gathers them from its workers (kshark.hub.export). docs/dashboard.md documents both for users.

What is exported: the entries stored when the request arrives that match the KFL `q`, oldest
first (the store's write order), bounded by `ExportLimits` (a `limit` parameter, or KFL's
`limit(n)`, may ask for fewer; kshark.api.export_query). Nothing is held whole: entries are read
from the store in batches and sent as they are converted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kshark.api.export_query import ExportError, ExportLimits, parse_export_request
from kshark.api.har import har_from_store, har_response
from kshark.api.httpserver import error_response
from kshark.api.pcapng import pcap_response, pcapng_from_plan, plan_pcap_export

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kshark.api.httpserver import Request, Response
    from kshark.store import Store


async def worker_export(
    store: Store,
    request: Request,
    route: str,
    *,
    interface_name: str,
    macros: Mapping[str, str] | None = None,
    limits: ExportLimits | None = None,
) -> Response:
    """`/har` or `/pcap` (without the `/api` prefix) of a worker's store."""
    limits = limits or ExportLimits()
    try:
        if route == "/har":
            req = parse_export_request(
                request,
                default_limit=limits.max_entries,
                default_bytes=limits.max_har_bytes,
                macros=macros,
            )
            return har_response(har_from_store(store, req))
        req = parse_export_request(
            request,
            default_limit=limits.max_connections,
            default_bytes=limits.max_pcap_bytes,
            macros=macros,
        )
        if req.query.has_redactions:
            return error_response(
                400, "a query with redact() cannot export packets: they hold what it hides"
            )
        plan = await plan_pcap_export(store, req)
        return pcap_response(pcapng_from_plan(plan, interface_name), plan)
    except ExportError as err:
        return err.response()
