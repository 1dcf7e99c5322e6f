"""How much of its clients a /status shows, at the worker and at the hub alike.

A client chooses its query (up to 64 KiB of KFL) and anyone may connect many times: listing
every client with its whole query made /status grow with them (150 clients with 65 KB queries:
9.8 MB), which a hub reading that /status every 2 s, and anyone's monitoring, then pays for.
So a /status lists at most `MAX_STATUS_CLIENTS` clients, those that matter most first (the
caller's order), and says how many it left out (`clients_not_listed`); and it shows at most
`MAX_STATUS_QUERY_CHARS` characters of each query, cut with a marker that gives the full length.
The counters (`clients_connected`, totals) still count every client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_STATUS_CLIENTS = 100
MAX_STATUS_QUERY_CHARS = 256


def short_query(text: str, limit: int = MAX_STATUS_QUERY_CHARS) -> str:
    """`text`, or its first `limit` characters and `… [N characters]` when it is longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text)} characters]"


def listed_clients(
    rows: Iterable[dict[str, Any]], limit: int = MAX_STATUS_CLIENTS
) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` rows, each with its "query" shortened, and how many were left out."""
    shown: list[dict[str, Any]] = []
    left_out = 0
    for row in rows:
        if len(shown) >= limit:
            left_out += 1
            continue
        query = row.get("query")
        if isinstance(query, str):
            row["query"] = short_query(query)
        shown.append(row)
    return shown, left_out
