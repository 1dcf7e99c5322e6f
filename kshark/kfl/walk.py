"""Selector steps past the first ``*`` or ``..key``: every step applies to every value found.

The generated predicates walk plain key/index/decoder chains inline; once a wildcard or a
descent makes the value "many", they hand the remaining steps to :func:`walk`. The result is a
list of everything found (list semantics then apply: ``==`` is true if any element matches), or
MISSING when nothing was found. Steps are ``(code, arg)`` pairs:

    "k" key · "h" header key (arg = (name, lowercased)) · "i" index · "w" wildcard ·
    "d" descend (arg = key) · "j" json() · "x" xml() · "L" XML leaf → text
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .decoders import decode_json, decode_xml, xml_leaf
from .values import MISSING, header

Op = tuple[str, Any]


def _children(v: Any) -> list[Any]:
    if type(v) is dict or isinstance(v, Mapping):
        return list(v.values())
    if type(v) is list or type(v) is tuple:
        return list(v)
    return []


def _descend(v: Any, name: str) -> list[Any]:
    """Every value under key ``name``, at any depth, in document order; no recursion."""
    out: list[Any] = []
    stack = [v]
    while stack:
        cur = stack.pop()
        if type(cur) is dict or isinstance(cur, Mapping):
            if name in cur:
                out.append(cur[name])
            kids = [x for x in cur.values() if isinstance(x, dict | list | tuple | Mapping)]
        elif type(cur) is list or type(cur) is tuple:
            kids = [x for x in cur if isinstance(x, dict | list | tuple | Mapping)]
        else:
            continue
        stack.extend(reversed(kids))
    return out


def _one(v: Any, code: str, arg: Any) -> Any:
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
        return decode_json(v)
    if code == "x":
        return decode_xml(v)
    if code == "L":
        return xml_leaf(v)
    return MISSING


def walk(v: Any, ops: tuple[Op, ...]) -> Any:
    """Apply ``ops`` to ``v``; see the module docstring."""
    many = False
    vals: list[Any] = []
    for code, arg in ops:
        if not many:
            if code == "w":
                vals = _children(v)
                many = True
            elif code == "d":
                vals = _descend(v, arg)
                many = True
            else:
                v = _one(v, code, arg)
                if v is MISSING:
                    return MISSING
            continue
        nxt: list[Any] = []
        for x in vals:
            if code == "w":
                nxt.extend(_children(x))
            elif code == "d":
                nxt.extend(_descend(x, arg))
            else:
                y = _one(x, code, arg)
                if y is not MISSING:
                    nxt.append(y)
        vals = nxt
    if many:
        return vals if vals else MISSING
    return v
