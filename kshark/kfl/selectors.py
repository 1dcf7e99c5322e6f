"""Selectors, as the compiler reads them: which step names a header (matched without case), the
walk ops a chain of steps becomes (kshark.kfl.walk), and which decoded prefixes a query uses more
than once (decoded once per entry)."""

from __future__ import annotations

from typing import Any

from .ast import (
    And,
    Call,
    Compare,
    Decode,
    Descend,
    Expr,
    In,
    Index,
    Key,
    ListLit,
    Method,
    Neg,
    Not,
    Or,
    Select,
    Step,
    Wild,
)
from .walk import Op


def header_fold_at(base: Expr | None, steps: tuple[Step, ...]) -> int:
    """The step naming a header under request/response.headers (case-insensitive), or -1."""
    if (
        base is None
        and len(steps) >= 3
        and steps[0] in (Key("request"), Key("response"))
        and steps[1] == Key("headers")
        and isinstance(steps[2], Key)
    ):
        return 2
    return -1


def is_headers_object(node: Expr) -> bool:
    return (
        isinstance(node, Select)
        and node.base is None
        and node.steps in ((Key("request"), Key("headers")), (Key("response"), Key("headers")))
    )


def selector_ops(
    steps: tuple[Step, ...], fold_at: int, offset: int, xml: bool
) -> tuple[list[Op], bool]:
    """Selector steps → walk ops (see kshark.kfl.walk); returns the ops and the XML mode after."""
    ops: list[Op] = []
    for i, st in enumerate(steps, offset):
        if isinstance(st, Key):
            ops.append(("h", (st.name, st.name.lower())) if i == fold_at else ("k", st.name))
        elif isinstance(st, Index):
            ops.append(("i", st.index))
        elif isinstance(st, Wild):
            ops.append(("w", None))
        elif isinstance(st, Descend):
            ops.append(("d", st.name))
        else:
            if xml:
                ops.append(("L", None))
            ops.append(("j" if st.kind == "json" else "x", None))
            xml = st.kind == "xml"
    return ops, xml


def count_decodes(node: Expr | None, counts: dict[tuple[Step, ...], int]) -> None:
    """How often each root-based decoded prefix (``a.b.json()``) occurs in the query."""
    stack: list[Any] = [node]
    while stack:
        n = stack.pop()
        if n is None:
            continue
        if isinstance(n, Select):
            if n.base is None:
                for i, st in enumerate(n.steps):
                    if isinstance(st, Decode):
                        key = n.steps[: i + 1]
                        counts[key] = counts.get(key, 0) + 1
            else:
                stack.append(n.base)
        elif isinstance(n, And | Or):
            stack.extend(n.operands)
        elif isinstance(n, Not | Neg):
            stack.append(n.operand)
        elif isinstance(n, Compare | In):
            stack.extend((n.left, n.right))
        elif isinstance(n, Method):
            stack.append(n.receiver)
            stack.extend(n.args)
        elif isinstance(n, Call | ListLit):
            stack.extend(n.args if isinstance(n, Call) else n.items)
