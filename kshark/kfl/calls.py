"""KFL's helpers in generated code: the methods on a value (`startsWith`, `endsWith`,
`contains`, `matches`) and the functions (`size`, `now` and the time units, `datetime`, `limit`,
`redact`), for the compiler's generator (kshark.kfl.compiler)."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Protocol

from . import values
from .ast import Call, Expr, ListLit, Literal, Method, Regex
from .errors import KflError
from .fragments import STR_INLINE, STR_TESTS
from .helpers import DATETIME_EXAMPLE, FUNCTIONS, METHODS, UNIT_MS, parse_datetime
from .limits import MAX_REDACT_PATHS
from .redact import PathError, RedactPath
from .regex import KflRegex


@dataclass(frozen=True, slots=True)
class Known:
    """A value known at compile time."""

    value: Any


class CodeGen(Protocol):
    """What the helpers use of the compiler's generator."""

    limit: int | None
    redactions: list[RedactPath]

    def emit(self, ind: int, text: str) -> None: ...
    def budget(self) -> str: ...
    def scanning(self, short: str, a: str, long: str, negate: bool) -> str: ...
    def tmp(self, prefix: str = "v") -> str: ...
    def const(self, value: Any) -> str: ...
    def regex(self, source: str, line: int, column: int) -> KflRegex: ...
    def regex_node(self, node: Regex) -> KflRegex: ...
    def now(self) -> int: ...
    def value(self, node: Expr, ind: int) -> tuple[str, Known | None]: ...
    def regex_test(self, subject: Expr, rx: KflRegex, negate: bool, ind: int) -> str: ...


def _arity(node: Method | Call, n: int) -> None:
    if len(node.args) != n:
        raise KflError(
            node.line,
            node.column,
            f"{node.name}() takes {_plural(n)} ({len(node.args)} given)",
        )


def method(gen: CodeGen, node: Method, ind: int) -> str:
    """A method on a value: `x.startsWith("a")`, `x.matches(r"...")`."""
    name = node.name
    if name in STR_TESTS:
        _arity(node, 1)
        arg = node.args[0]
        if isinstance(arg, Regex | ListLit):
            raise KflError(
                arg.line,
                arg.column,
                f"{name}() takes a text"
                + (' (for a regex use matches(r"..."))' if isinstance(arg, Regex) else ""),
            )
        a, known = gen.value(node.receiver, ind)
        b, kb = gen.value(arg, ind)
        test = STR_TESTS[name]
        # contains() reads the whole text: long texts are searched within the budget.
        bud = f", {gen.budget()}" if name == "contains" else ""
        if kb is not None:
            text = values.sform(kb.value)
            if text is None:
                return "False"
            if known is not None:
                return "True" if values.str_pred(known.value, text, test) else "False"
            k = gen.const(text)
            inline = STR_INLINE[name].format(a=a, k=k)
            if bud:
                inline = gen.scanning(inline, a, f"_scan_in({a}, {k}{bud})", False)
            slow = f"_str_pred({a}, {k}, {gen.const(test)}{bud})"
            return f"({inline} if type({a}) is str else {slow})"
        return f"_str_pred_dyn({a}, {b}, {gen.const(test)}{bud})"
    if name == "matches":
        _arity(node, 1)
        arg = node.args[0]
        if isinstance(arg, Regex):
            rx = gen.regex_node(arg)
        elif isinstance(arg, Literal) and type(arg.value) is str:
            # A plain string's escapes are already decoded: "\\d" is the regex \d. Error
            # positions count from the opening quote, in the decoded text.
            rx = gen.regex(arg.value, arg.line, arg.column)
        else:
            raise KflError(
                arg.line, arg.column, 'matches() takes a regex in quotes: matches(r"^/api/")'
            )
        return gen.regex_test(node.receiver, rx, False, ind)
    if name in FUNCTIONS:
        raise KflError(
            node.line, node.column, f"{name}() is a function, not a method: write {name}(...)"
        )
    raise KflError(node.line, node.column, f'unknown helper "{name}"' + _suggest(name, METHODS))


def call(gen: CodeGen, node: Call, ind: int) -> tuple[str, Known | None]:
    """A function: `size(x)`, `now()`, `minutes(-5)`, `datetime("...")`, `limit(n)`, `redact(...)`."""
    name = node.name
    if name == "size":
        _arity(node, 1)
        atom, known = gen.value(node.args[0], ind)
        if known is not None:
            v = values.size(known.value)
            if v is not values.MISSING:
                return gen.const(v), Known(v)
        t = gen.tmp()
        gen.emit(ind, f"{t} = _size({atom})")
        return t, None
    if name == "now":
        _arity(node, 0)
        ms = gen.now()
        return gen.const(ms), Known(ms)
    if name in UNIT_MS:
        _arity(node, 1)
        arg = node.args[0]
        n = arg.value if isinstance(arg, Literal) else None
        if not isinstance(n, int | float) or isinstance(n, bool):
            raise KflError(arg.line, arg.column, f"{name}() takes a number, like {name}(-5)")
        offset = n * UNIT_MS[name]
        if not math.isfinite(offset):  # minutes(1e308): no instant to compare with
            raise KflError(arg.line, arg.column, f"{name}() out of range: {n}")
        ms = gen.now() + round(offset)
        return gen.const(ms), Known(ms)
    if name == "datetime":
        _arity(node, 1)
        arg = node.args[0]
        ms_or_none = (
            parse_datetime(arg.value)
            if isinstance(arg, Literal) and type(arg.value) is str
            else None
        )
        if ms_or_none is None:
            raise KflError(
                arg.line,
                arg.column,
                f'datetime() takes a date and time like "{DATETIME_EXAMPLE}" (UTC)',
            )
        return gen.const(ms_or_none), Known(ms_or_none)
    if name == "limit":
        _arity(node, 1)
        arg = node.args[0]
        if not (isinstance(arg, Literal) and type(arg.value) is int and arg.value >= 1):
            raise KflError(
                arg.line, arg.column, "limit() takes a whole number of entries, like limit(100)"
            )
        gen.limit = arg.value if gen.limit is None else min(gen.limit, arg.value)
        return "True", Known(True)
    if name == "redact":
        if not node.args:
            raise KflError(node.line, node.column, "redact() takes at least one path")
        for arg in node.args:
            if len(gen.redactions) >= MAX_REDACT_PATHS:
                raise KflError(
                    arg.line,
                    arg.column,
                    f"too many redact() paths in one query (at most {MAX_REDACT_PATHS})",
                )
            if not (isinstance(arg, Literal) and type(arg.value) is str):
                raise KflError(
                    arg.line,
                    arg.column,
                    'redact() takes paths in quotes, like redact("request.headers.Authorization")',
                )
            try:
                gen.redactions.append(RedactPath(arg.value))
            except PathError as err:
                raise KflError(
                    arg.line,
                    arg.column,
                    f"redact(): bad path {arg.value!r} at offset {err.offset}: {err.message}",
                ) from None
        return "True", Known(True)
    if name in METHODS:
        raise KflError(
            node.line,
            node.column,
            f"{name}() is a method: write sel.{name}(...)",
        )
    raise KflError(node.line, node.column, f'unknown helper "{name}"' + _suggest(name, FUNCTIONS))


def _suggest(name: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if not close:
        lowered = [k for k in known if k.lower() == name.lower()]
        close = lowered[:1]
    return f' (did you mean "{close[0]}"?)' if close else ""


def _plural(n: int) -> str:
    return f"{n} argument" if n == 1 else f"{n} arguments"
