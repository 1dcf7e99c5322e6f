"""The compiled query a server holds per stream: ``match``, ``limit``, ``redact``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .budget import EntryBudget
from .compiler import compile_ast
from .errors import KflError
from .macros import check_macros
from .parser import parse
from .redact import REDACTED, RedactPath, deep_copy


class Query:
    """One compiled KFL text.

    ``match(entry) -> bool`` is a plain function stored on the instance (no bound-method cost
    per entry); it never raises, whatever the entry holds. ``limit`` is the smallest ``limit(n)``
    in the text (None if none). ``redact(entry)`` returns the entry to send.
    """

    __slots__ = ("_redactions", "has_redactions", "limit", "match", "now_ms", "source", "text")

    text: str
    match: Callable[[Mapping[str, Any]], bool]
    limit: int | None
    has_redactions: bool
    source: str
    now_ms: int | None

    def __init__(
        self,
        text: str,
        match: Callable[[Mapping[str, Any]], bool],
        limit: int | None,
        redactions: tuple[RedactPath, ...],
        source: str,
        now_ms: int | None,
    ) -> None:
        self.text = text
        self.match = match
        self.limit = limit
        self._redactions = redactions
        self.has_redactions = bool(redactions)
        self.source = source  # the generated Python, for debugging and the injection test
        self.now_ms = now_ms  # the clock value now()/minutes()… used; None if the query has none

    def redact(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of ``entry`` with every ``redact()`` path replaced by "[REDACTED]".

        The original is never modified. Without ``redact()`` in the query, ``entry`` itself is
        returned (no copy). Never raises: if a path cannot be applied, the copy is returned
        with every top-level value replaced rather than risk sending what should be hidden.
        """
        if not self._redactions:
            return entry
        out: dict[str, Any] = deep_copy(entry)
        budget = EntryBudget()  # one for all paths: what redacting one entry may cost
        try:
            for path in self._redactions:
                path.apply(out, budget)
        except Exception:  # a bug, not data: fail closed
            return dict.fromkeys(out, REDACTED) if isinstance(out, dict) else {}
        return out

    def __repr__(self) -> str:
        return f"Query({self.text!r}, limit={self.limit}, redactions={len(self._redactions)})"


def compile_query(
    text: str, macros: Mapping[str, str] | None = None, *, now_ms: int | None = None
) -> Query:
    """Compile a KFL text. Raises :class:`KflError` (with line and column) if it is not valid.

    ``macros`` adds operator-defined macros (``{"name": "KFL expansion"}``) to, or over, the
    built-in ones; a name that is not an identifier raises ``ValueError``. ``now_ms`` fixes the
    instant that ``now()``/``seconds(n)``… are relative to (default: the clock, read once).
    """
    if not isinstance(text, str):
        raise TypeError(f"a KFL query is text, not {type(text).__name__}")
    if macros:
        check_macros(macros)
    compiled = compile_ast(parse(text), macros, now_ms=now_ms)
    return Query(
        text,
        compiled.match,
        compiled.limit,
        compiled.redactions,
        compiled.source,
        compiled.now_ms,
    )


def validate(text: str, macros: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """``(True, "")`` for a valid query, else ``(False, "line:column: message")``.

    Made for ``GET /query/validate``. Compiles fully (so bad regexes, unknown helpers and bad
    datetimes are reported, not only syntax errors); reads no clock.
    """
    try:
        compile_query(text, macros, now_ms=0)
    except KflError as err:
        return False, str(err)
    return True, ""
