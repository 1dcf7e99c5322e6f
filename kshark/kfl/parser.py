"""KFL text → typed AST (kshark.kfl.ast), with errors that say where and what was expected.

The grammar lives in ``kfl.lark`` (package data). Parsing is LALR with lark's contextual lexer,
so keywords stay usable as keys after a dot (``request.in``). Lark's ``UnexpectedInput`` is turned
into a :class:`KflError` whose message names the offending token and, in words, what would have
been valid there. Checks the grammar cannot express (string escapes, indexes that are not
whole numbers, nesting depth) raise ``KflError`` from the transformer; lark wraps those in
``VisitError`` and :func:`parse` unwraps them. Regex bodies are kept as written: the compiler
compiles them with RE2 (kshark.kfl.regex), once per distinct pattern.
"""

from __future__ import annotations

import math
import re
import threading
from importlib import resources
from typing import Any, TypeVar

from lark import Lark, Token, Transformer_NonRecursive
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import KflError

# Limits on what one query may be (a websocket client chooses this text). The text is bounded
# so that parsing stays bounded (lark's LALR parser and the non-recursive transformer below use
# no recursion, so only the length matters); the nesting depth because code
# generation indents once per boolean level and Python's tokenizer refuses more than 100
# indentation levels. A selector's steps are bounded because the generated code chains them in
# one expression (Python's compiler recurses per `[...]`: 3,500 of them exhaust its stack) and
# because every decoded prefix of a selector is a key the compiler hashes (quadratic in the
# steps). A number's digits are bounded because int() refuses more than 4,300 and because
# comparing huge numbers costs per entry; a float literal must be finite.
MAX_QUERY_CHARS = 65_536
MAX_DEPTH = 48
MAX_SELECTOR_STEPS = 64
MAX_NUMBER_CHARS = 64

_parser_lock = threading.Lock()
_parser: Lark | None = None


def _lark() -> Lark:
    """The LALR parser, built once on first use (building it is not cheap)."""
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                grammar = resources.files(__package__).joinpath("kfl.lark").read_text("utf-8")
                _parser = Lark(
                    grammar,
                    parser="lalr",
                    lexer="contextual",
                    propagate_positions=False,
                    maybe_placeholders=True,
                )
    return _parser


def parse(text: str) -> ast.Expr | None:
    """Parse a KFL text. ``None`` means the empty query (empty or whitespace only): match all."""
    if len(text) > MAX_QUERY_CHARS:
        raise KflError(1, 1, f"query too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        result: ast.Expr | None = _ToAst().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, KflError):
            raise exc.orig_exc from None
        raise
    return result


# --- syntax errors ----------------------------------------------------------------------------

_VALUE_START = {"NAME", "NUMBER", "STRING"}
_OPERATORS = {"AND", "ANDAND", "OR", "OROR", "EQ", "NE", "LT", "LE", "GT", "GE", "IN"}
_COMPARISONS = {"EQ", "NE", "LT", "LE", "GT", "GE", "IN"}
_MAX_SHOWN = 40


def _show(text: str) -> str:
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 1] + "…"
    return text


def _describe_expected(expected: set[str], got: str) -> str:
    """What the parser would have accepted, in words ("" when nothing useful can be said)."""
    closers = [sym for name, sym in (("RPAR", '")"'), ("RSQB", '"]"')) if name in expected]
    if expected >= _VALUE_START:
        return "expected " + " or ".join(["a value", *closers])
    if {"STRING", "NUMBER", "STAR"} <= expected:
        return 'expected a key in quotes, an index or "*"'
    if "NAME" in expected:
        return 'expected a field name or "*"' if "STAR" in expected else "expected a field name"
    if got in _COMPARISONS and not expected & _COMPARISONS and "AND" in expected:
        return 'comparisons do not chain: join them with "and"'
    parts = list(closers)
    if "COMMA" in expected:
        parts.append('","')
    if expected & _OPERATORS:
        parts.append("an operator")
    if "$END" in expected:
        parts.append("the end of the query")
    return "expected " + " or ".join(parts) if parts else ""


def _syntax_error(text: str, exc: UnexpectedInput) -> KflError:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        if char in ("'", '"'):
            msg = (
                "unterminated string (strings end on the same line with the quote they began with)"
            )
        elif char == "=":
            msg = 'unexpected character "=" (use == to compare)'
        elif char == "&":
            msg = 'unexpected character "&" (use && or and)'
        elif char == "|":
            msg = 'unexpected character "|" (use || or or)'
        else:
            msg = f"unexpected character {_quote_char(char)}"
        return KflError(exc.line, exc.column, msg)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.accepts or exc.expected)
        if tok.type == "$END":
            # lark lends $END the position of the last token; point just after it instead.
            line = tok.end_line if tok.end_line is not None else 1
            column = tok.end_column if tok.end_column is not None else 1
            if not text.strip():
                line, column = 1, 1
            what = "unexpected end of query"
        else:
            line, column = tok.line or 1, tok.column or 1
            if tok.type == "STRING":
                what = f"unexpected string {_show(tok.value)}"
            elif tok.type == "REGEX":
                what = f"unexpected regex {_show(tok.value)}"
            elif tok.type == "NUMBER":
                what = f"unexpected number {_show(tok.value)}"
            else:
                what = f'unexpected token "{_show(tok.value)}"'
        hint = _describe_expected(expected, tok.type)
        return KflError(line, column, f"{what} ({hint})" if hint else what)
    return KflError(getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1, str(exc))


def _quote_char(char: str) -> str:
    if char.isprintable() and char != '"':
        return f'"{char}"'
    return f"U+{ord(char):04X}"


# --- literals -----------------------------------------------------------------------------------

_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")


def decode_string(tok: Token) -> str:
    """The value of a STRING token: quotes removed, escapes decoded, unknown escapes rejected."""
    body: str = tok.value[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    n = len(body)
    base_col = (tok.column or 1) + 1  # column of body[0]
    while i < n:
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]  # the token's regex guarantees a character after a backslash
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and _HEX4.fullmatch(body, i + 2, i + 6):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt == "u":
            raise KflError(tok.line or 1, base_col + i, "\\u needs four hex digits (\\u00e9)")
        else:
            raise KflError(
                tok.line or 1,
                base_col + i,
                f'unknown escape "\\{nxt}" in a string (write \\\\ for a backslash; '
                f'regexes take raw bodies: r"\\{nxt}")',
            )
    value = "".join(out)
    if any("\ud800" <= c <= "\udfff" for c in value):
        # \ud83d\ude00 pairs make one character; a lone half cannot be text.
        try:
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise KflError(
                tok.line or 1, tok.column or 1, "a \\u escape leaves half a surrogate pair"
            ) from None
    return value


def _number(tok: Token) -> int | float:
    text: str = tok.value
    if len(text) > MAX_NUMBER_CHARS:
        raise KflError(
            tok.line or 1,
            tok.column or 1,
            f"number too long ({len(text)} characters; at most {MAX_NUMBER_CHARS})",
        )
    if "." in text or "e" in text or "E" in text:
        value = float(text)
        if math.isinf(value):
            raise KflError(tok.line or 1, tok.column or 1, f"number out of range: {_show(text)}")
        return value
    return int(text)


# --- tree → AST -------------------------------------------------------------------------------


def _depth(*nodes: Any) -> int:
    return 1 + max((getattr(n, "depth", 0) for n in nodes), default=0)


_N = TypeVar("_N", bound=ast.Expr)


def _checked(node: _N) -> _N:
    if node.depth > MAX_DEPTH:
        raise KflError(
            node.line, node.column, f"the query nests too deeply (at most {MAX_DEPTH} levels)"
        )
    return node


def _extend(base: ast.Expr, step: ast.Step, tok: Token) -> ast.Select:
    """Append a selector step; a selector base is extended in place of being nested.

    ``tok`` is the step's token: a selector with too many steps is refused there."""
    if isinstance(base, ast.Select):
        if len(base.steps) >= MAX_SELECTOR_STEPS:
            raise KflError(
                tok.line or 1,
                tok.column or 1,
                f"selector too long (at most {MAX_SELECTOR_STEPS} steps after "
                f"{base.line}:{base.column})",
            )
        return ast.Select(
            base.base, (*base.steps, step), line=base.line, column=base.column, depth=base.depth
        )
    return _checked(
        ast.Select(base, (step,), line=base.line, column=base.column, depth=_depth(base))
    )


# Reserved words. The contextual lexer reads one as a plain name wherever the keyword could not
# stand (`x and and`, a lone `in`); after a dot that is harmless (`request.in` is a key), but as
# a field name of its own it would hide a typo, so it is rejected.
RESERVED = frozenset({"and", "or", "not", "in", "true", "false", "nil", "null"})


def _not_reserved(tok: Token) -> None:
    if tok.value in RESERVED:
        raise KflError(
            tok.line or 1,
            tok.column or 1,
            f'unexpected keyword "{tok.value}" (expected a value; '
            f'a field named so is written ["{tok.value}"] after its parent)',
        )


def _args(node: Any) -> tuple[ast.Expr, ...]:
    return () if node is None else tuple(node)


class _ToAst(Transformer_NonRecursive):  # type: ignore[type-arg]
    """Builds the AST bottom-up without recursion (long selector chains cannot blow the stack)."""

    def start(self, children: list[Any]) -> ast.Expr | None:
        return children[0] if children else None

    def args(self, children: list[Any]) -> list[ast.Expr]:
        return [c for c in children if not isinstance(c, Token)]

    def _bool_op(self, children: list[Any], cls: type[ast.And] | type[ast.Or]) -> ast.Expr:
        operands = tuple(c for c in children if not isinstance(c, Token))
        first = operands[0]
        return _checked(
            cls(operands, line=first.line, column=first.column, depth=_depth(*operands))
        )

    def or_expr(self, children: list[Any]) -> ast.Expr:
        return self._bool_op(children, ast.Or)

    def and_expr(self, children: list[Any]) -> ast.Expr:
        return self._bool_op(children, ast.And)

    def not_(self, children: list[Any]) -> ast.Expr:
        tok, operand = children
        return _checked(ast.Not(operand, line=tok.line, column=tok.column, depth=_depth(operand)))

    def compare(self, children: list[Any]) -> ast.Expr:
        left, op, right = children
        return _checked(
            ast.Compare(
                op.value, left, right, line=op.line, column=op.column, depth=_depth(left, right)
            )
        )

    def in_(self, children: list[Any]) -> ast.Expr:
        left, tok, right = children
        return _checked(
            ast.In(left, right, line=tok.line, column=tok.column, depth=_depth(left, right))
        )

    def neg(self, children: list[Any]) -> ast.Expr:
        tok, operand = children
        if (
            isinstance(operand, ast.Literal)
            and isinstance(operand.value, int | float)
            and not isinstance(operand.value, bool)
        ):
            return ast.Literal(-operand.value, line=tok.line, column=tok.column)
        return _checked(ast.Neg(operand, line=tok.line, column=tok.column, depth=_depth(operand)))

    def member(self, children: list[Any]) -> ast.Expr:
        base, _dot, name = children
        return _extend(base, ast.Key(name.value), name)

    def wildcard(self, children: list[Any]) -> ast.Expr:
        return _extend(children[0], ast.Wild(), children[2])  # at the "*"

    def descend(self, children: list[Any]) -> ast.Expr:
        base, _dots, name = children
        return _extend(base, ast.Descend(name.value), name)

    def key(self, children: list[Any]) -> ast.Expr:
        base, _l, string, _r = children
        return _extend(base, ast.Key(decode_string(string)), string)

    def index(self, children: list[Any]) -> ast.Expr:
        base, _l, number, _r = children
        value = _number(number)
        if not isinstance(value, int):
            raise KflError(
                number.line, number.column, f"an index must be a whole number, not {number.value}"
            )
        return _extend(base, ast.Index(value), number)

    def method(self, children: list[Any]) -> ast.Expr:
        base, _dot, name, _l, args, _r = children
        arguments = _args(args)
        if name.value in ("json", "xml"):
            if arguments:
                raise KflError(name.line, name.column, f"{name.value}() takes no arguments")
            return _extend(base, ast.Decode(name.value), name)
        return _checked(
            ast.Method(
                base,
                name.value,
                arguments,
                line=name.line,
                column=name.column,
                depth=_depth(base, *arguments),
            )
        )

    def string(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Literal(decode_string(tok), line=tok.line, column=tok.column)

    def number(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Literal(_number(tok), line=tok.line, column=tok.column)

    def regex(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Regex(tok.value[2:-1], line=tok.line, column=tok.column)

    def true(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Literal(True, line=tok.line, column=tok.column)

    def false(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Literal(False, line=tok.line, column=tok.column)

    def nil(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        return ast.Literal(None, line=tok.line, column=tok.column)

    def list_lit(self, children: list[Any]) -> ast.Expr:
        tok, args, _r = children
        items = _args(args)
        return _checked(ast.ListLit(items, line=tok.line, column=tok.column, depth=_depth(*items)))

    def name(self, children: list[Any]) -> ast.Expr:
        (tok,) = children
        _not_reserved(tok)
        return ast.Select(None, (ast.Key(tok.value),), bare=True, line=tok.line, column=tok.column)

    def call(self, children: list[Any]) -> ast.Expr:
        name, _l, args, _r = children
        _not_reserved(name)
        arguments = _args(args)
        return _checked(
            ast.Call(
                name.value,
                arguments,
                line=name.line,
                column=name.column,
                depth=_depth(*arguments),
            )
        )

    def group(self, children: list[Any]) -> ast.Expr:
        _l, expr, _r = children
        return expr  # type: ignore[no-any-return]
