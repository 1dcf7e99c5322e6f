"""Macros: names that stand for a parenthesised KFL expression (``http``, ``dns``, …).

A macro is expanded only where its name stands alone as a selector — a whole word, never inside
``request.httpVersion`` nor inside a string — because expansion happens on the syntax tree, not
on the text. Operators add their own with ``name=expansion`` lines (:func:`parse_macro_spec`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from .parser import RESERVED

BUILTIN_MACROS: Final[Mapping[str, str]] = {
    "http": 'protocol.abbr == "HTTP"',
    "http2": 'protocol.abbr == "HTTP/2"',
    "grpc": 'protocol.abbr == "gRPC"',
    "gql": 'protocol.abbr == "GQL"',
    "amqp": 'protocol.name == "amqp"',
    "kafka": 'protocol.name == "kafka"',
    "redis": 'protocol.name == "redis"',
    "dns": 'protocol.name == "dns"',
    "tcp": 'protocol.layer4 == "tcp"',
    "udp": 'protocol.layer4 == "udp"',
    # A macro's own name inside its expansion is a plain selector: this is the entry's field.
    "tls": "tls",
}

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# How deep macros may expand into macros before we call it a loop.
MAX_MACRO_DEPTH: Final = 16


def check_macros(macros: Mapping[str, str]) -> None:
    """Raise ValueError for a name that could never be used as a macro."""
    for name, expansion in macros.items():
        if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED:
            raise ValueError(f"macro name {name!r} is not an identifier (or is a keyword)")
        if not isinstance(expansion, str):
            raise ValueError(f"macro {name!r}: the expansion must be KFL text")


def parse_macro_spec(spec: str) -> tuple[str, str]:
    """``"name=expansion"`` (as operators write it in configuration) → ``(name, expansion)``."""
    name, sep, expansion = spec.partition("=")
    name = name.strip()
    if not sep or not expansion.strip():
        raise ValueError(f"macro {spec!r}: expected name=expansion")
    check_macros({name: expansion})
    return name, expansion.strip()


def macros_from_specs(specs: Iterable[str]) -> dict[str, str]:
    """Several ``name=expansion`` specs → a mapping for ``compile_query(macros=...)``."""
    return dict(parse_macro_spec(s) for s in specs)
