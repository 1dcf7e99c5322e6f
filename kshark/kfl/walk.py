"""Selector steps past the first ``*`` or ``..key``: every step applies to every value found.

The generated predicates walk plain key/index/decoder chains inline; once a wildcard or a
descent makes the value "many", they hand the remaining steps to :func:`walk`. The result is a
list of everything found (list semantics then apply: ``==`` is true if any element matches), or
MISSING when nothing was found. Steps are ``(code, arg)`` pairs:

    "k" key · "h" header key (arg = (name, lowercased)) · "i" index · "w" wildcard ·
    "d" descend (arg = key) · "j" json() · "x" xml() · "L" XML leaf → text

What a walk visits and decodes is charged to the entry's budget (kshark.kfl.budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .budget import EntryBudget, decode_json_in, decode_xml_in
from .decoders import xml_leaf
from .values import MISSING, header

Op = tuple[str, Any]


# Types a walk goes into without asking (entries are plain dicts and lists, from orjson), and
# leaves it never looks into; anything else is asked whether it is a Mapping (slow, rare).
_NESTED: Final = frozenset({dict, list, tuple})
_LEAVES: Final = frozenset({str, int, float, bool, type(None)})


def _containers(values: Any) -> list[Any]:
    return [
        x
        for x in values
        if type(x) in _NESTED or (type(x) not in _LEAVES and isinstance(x, Mapping))
    ]


def _children(v: Any) -> list[Any]:
    if type(v) is dict or isinstance(v, Mapping):
        return list(v.values())
    if type(v) is list or type(v) is tuple:
        return list(v)
    return []


def _descend(v: Any, name: str, b: EntryBudget) -> list[Any] | None:
    """Every value under key ``name``, at any depth, in document order; no recursion. Each
    container looked into is a visit; None when the budget runs out."""
    out: list[Any] = []
    stack = [v]
    left = b.visits
    while stack:
        cur = stack.pop()
        left -= 1
        if left < 0:
            b.visits = -1
            return None
        if type(cur) is dict or (type(cur) not in _NESTED and isinstance(cur, Mapping)):
            if name in cur:
                out.append(cur[name])
            kids = _containers(cur.values())
        elif type(cur) is list or type(cur) is tuple:
            kids = _containers(cur)
        else:
            continue
        if kids:
            kids.reverse()
            stack.extend(kids)
    b.visits = left
    return out


def _one(v: Any, code: str, arg: Any, b: EntryBudget) -> Any:
    if code == "k":
        if type(v) is dict or isinstance(v, Mapping):
            return v.get(arg, MISSING)
        return MISSING
    if code == "h":
        if type(v) is dict or isinstance(v, Mapping):
            found = v.get(arg[0], MISSING)
            return found if found is not MISSING else header(v, arg[1])
        return MISSING
    if code == "i":
        if (type(v) is list or type(v) is tuple) and arg < len(v):
            return v[arg]
        return MISSING
    if code == "j":
        return decode_json_in(v, b)
    if code == "x":
        return decode_xml_in(v, b)
    if code == "L":
        return xml_leaf(v)
    return MISSING


def walk(v: Any, ops: tuple[Op, ...], b: EntryBudget) -> Any:
    """Apply ``ops`` to ``v`` within the entry's budget ``b`` (kshark.kfl.budget: every value a
    ``*`` yields and every container ``..key`` looks into is a visit); see the module
    docstring. MISSING when nothing was found or the budget ran out."""
    many = False
    vals: list[Any] = []
    for code, arg in ops:
        if not many:
            if code == "w":
                vals = _children(v)
                if not b.spend_visits(len(vals)):
                    return MISSING
                many = True
            elif code == "d":
                found = _descend(v, arg, b)
                if found is None:
                    return MISSING
                vals = found
                many = True
            else:
                v = _one(v, code, arg, b)
                if v is MISSING:
                    return MISSING
            continue
        nxt: list[Any] = []
        for x in vals:
            if code == "w":
                kids = _children(x)
                if not b.spend_visits(len(kids)):
                    return MISSING
                nxt.extend(kids)
            elif code == "d":
                found = _descend(x, arg, b)
                if found is None:
                    return MISSING
                nxt.extend(found)
            else:
                y = _one(x, code, arg, b)
                if y is not MISSING:
                    nxt.append(y)
        vals = nxt
    if many:
        return vals if vals else MISSING
    return v
