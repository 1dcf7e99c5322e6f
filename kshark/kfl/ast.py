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


@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Regex:
    """``r"..."``: ``source`` is the raw body as written (compiled, with RE2, by the compiler)."""

    source: str
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Expr, ...]
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Select:
    """A selector: ``base`` (``None`` = the entry itself) followed by ``steps``.

    ``bare`` is true for a lone identifier (``http``): only those are macro candidates, which is
    what makes macros whole words.
    """

    base: Expr | None
    steps: tuple[Step, ...]
    line: int
    column: int
    depth: int = 1
    bare: bool = False


@dataclass(frozen=True, slots=True)
class Method:
    """``receiver.name(args)`` for the predicate helpers (startsWith, endsWith, contains, matches)."""

    receiver: Expr
    name: str
    args: tuple[Expr, ...]
    line: int  # of the helper's name
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args)``: size, datetime, now, seconds…weeks, limit, redact."""

    name: str
    args: tuple[Expr, ...]
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # "==" "!=" "<" "<=" ">" ">="
    left: Expr
    right: Expr
    line: int  # of the operator
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class In:
    left: Expr
    right: Expr
    line: int  # of `in`
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    line: int
    column: int
    depth: int = 1


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    line: int
    column: int
    depth: int = 1


Expr: TypeAlias = (
    Literal | Regex | ListLit | Select | Method | Call | Not | Neg | Compare | In | And | Or
)
