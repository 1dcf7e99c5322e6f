"""KFL, the Kubeshark filter language: compile a query text once, then test entries with it.

    from kshark.kfl import compile_query, KflError
    q = compile_query('http and response.status >= 500')
    q.match(entry)        # -> bool, never raises
    q.limit               # -> int | None
    q.redact(entry)       # -> the entry to send (a redacted copy if the query has redact())

Pure: no I/O, no clock (except one read when a query uses now()/minutes()…; pass ``now_ms``).
The language is documented for users in docs/kfl.md; the contract is ../shared/KFL.md.
"""

from __future__ import annotations

from .errors import KflError
from .macros import BUILTIN_MACROS, macros_from_specs, parse_macro_spec
from .query import Query, compile_query, validate

__all__ = [
    "BUILTIN_MACROS",
    "KflError",
    "Query",
    "compile_query",
    "macros_from_specs",
    "parse_macro_spec",
    "validate",
]
