"""The typed, frozen syntax tree a KFL text parses to.

Every node carries the 1-based ``line``/``column`` of the token it starts at, so that the
compiler can reject it (unknown helper, wrong arguments, a list where none may be) with a
position the user can act on. ``depth`` is the node's nesting depth, computed bottom-up by the
parser, so that no later pass needs to recurse to enforce the nesting limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

# --- selector steps ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """``.name`` or ``["name"]``: a child of an object."""

    name: str


@dataclass(frozen=True, slots=True)
class Index:
    """``[3]``: an element of a list (non-negative)."""

    index: int


@dataclass(frozen=True, slots=True)
class Wild:
    """``.*`` or ``[*]``: every child of an object or list."""


@dataclass(frozen=True, slots=True)
class Descend:
    """``..name``: every value under key ``name``, at any depth."""

    name: str


@dataclass(frozen=True, slots=True)
class Decode:
    """``.json()`` / ``.xml()``: parse the string and go on inside it."""

    kind: str  # "json" | "xml"


Step: TypeAlias = Key | Index | Wild | Descend | Decode

# --- expressions ------------------------------------------------------------------------------

Scalar: TypeAlias = str | int | float | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """Where an expression starts: the 1-based ``line``/``column`` of its token (for a method,
    a comparison or ``in``: of the helper's name or the operator), and its nesting ``depth``."""

    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Scalar


@dataclass(frozen=True, slots=True)
class Regex(Node):
    """``r"..."``: ``source`` is the raw body as written (compiled, with RE2, by the compiler)."""

    source: str


@dataclass(frozen=True, slots=True)
class ListLit(Node):
    """``[a, b, …]``: allowed only on the right of ``in``."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Select(Node):
    """A selector: ``base`` (``None`` = the entry itself) followed by ``steps``.

    ``bare`` is true for a lone identifier (``http``): only those are macro candidates, which is
    what makes macros whole words.
    """

    base: Expr | None
    steps: tuple[Step, ...]
    bare: bool = False


@dataclass(frozen=True, slots=True)
class Method(Node):
    """``receiver.name(args)`` for the predicate helpers (startsWith, endsWith, contains, matches)."""

    receiver: Expr
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Call(Node):
    """``name(args)``: size, datetime, now, seconds…weeks, limit, redact."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    operand: Expr


@dataclass(frozen=True, slots=True)
class Not(Unary):
    """``not x``, ``!x``."""


@dataclass(frozen=True, slots=True)
class Neg(Unary):
    """``-x``."""


@dataclass(frozen=True, slots=True)
class Compare(Node):
    op: str  # "==" "!=" "<" "<=" ">" ">="
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class In(Node):
    """``x in [a, b]`` (a list literal) or ``x in sel`` (a field's value)."""

    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class And(BoolOp):
    """``a and b and …``: its operands flattened."""


@dataclass(frozen=True, slots=True)
class Or(BoolOp):
    """``a or b or …``: its operands flattened."""


Expr: TypeAlias = (
    Literal | Regex | ListLit | Select | Method | Call | Not | Neg | Compare | In | And | Or
)
