"""``redact("path", ...)``: paths in an entry whose values are replaced by ``"[REDACTED]"``.

Path syntax (a string argument): dot-separated keys (``request.headers.Authorization`` — keys may
hold any character but ``.`` and ``[``, so ``Content-Type`` works), ``[N]`` indexes, ``["key"]``,
``*`` or ``[*]`` for every child, ``..key`` for that key at any depth, and ``json()`` / ``xml()``
segments to reach inside a body (``response.content.text.json().token``); such a body is
re-encoded afterwards (base64 again if it was base64). Keys right under ``request.headers`` /
``response.headers`` match case-insensitively, as header lookups do.

Redaction works on a deep copy and fails closed: if a body that had something redacted inside it
cannot be re-encoded, the whole body becomes ``"[REDACTED]"``. Paths that do not exist are
skipped. Matching never sees redactions (``redact("id") and id == 1`` tests the real ``id``).

Cost: all the paths of one entry share one kshark.kfl.budget.EntryBudget. Each body a path
reaches into is decoded (its characters charged) and each value ``*``/``..key`` looks at is a
visit; a body that would go past the budget is replaced whole, unread (failing closed again).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .ast import Decode, Descend, Index, Key, Step, Wild
from .budget import EntryBudget
from .decoders import decode_json_ex, decode_xml_ex, dump_xml

REDACTED: Final = "[REDACTED]"

# One (container, key) slot: container[key] is the value a path step reached.
_Slot = tuple[Any, Any]


class _OverBudget(Exception):
    """The entry's budget ran out while walking: the body being redacted is replaced whole."""


class PathError(ValueError):
    """A redact path that does not parse; ``offset`` is where in the path text."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def _segment(text: str, offset: int) -> Step:
    if text == "*":
        return Wild()
    if text in ("json()", "xml()"):
        return Decode(text[:-2])
    if not text:
        raise PathError(offset, "empty key")
    return Key(text)


def _read_key(path: str, i: int) -> tuple[str, int]:
    j = i
    while j < len(path) and path[j] not in ".[":
        j += 1
    return path[i:j], j


def parse_path(path: str) -> tuple[Step, ...]:
    """Parse a redact path (see the module docstring)."""
    if not path:
        raise PathError(0, "empty path")
    steps: list[Step] = []
    i = 0
    n = len(path)
    while i < n:
        ch = path[i]
        if path.startswith("..", i):
            j = i
            while j < n and path[j] == ".":  # Kubeshark also accepts json()...name
                j += 1
            name, end = _read_key(path, j)
            if not name or name == "*":
                raise PathError(j, "expected a key after ..")
            steps.append(Descend(name))
            i = end
        elif ch == ".":
            if not steps:
                raise PathError(i, "a path starts with a key")
            name, end = _read_key(path, i + 1)
            steps.append(_segment(name, i + 1))
            i = end
        elif ch == "[":
            close = path.find("]", i)
            inner = path[i + 1 : close] if close != -1 else ""
            if close == -1:
                raise PathError(i, 'unclosed "["')
            if inner == "*":
                steps.append(Wild())
            elif inner.isdigit() and inner.isascii():
                steps.append(Index(int(inner)))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
                steps.append(Key(inner[1:-1]))
            else:
                raise PathError(i, 'expected [N], ["key"] or [*]')
            i = close + 1
        elif not steps:
            name, end = _read_key(path, i)
            steps.append(_segment(name, i))
            i = end
        else:
            raise PathError(i, 'expected "." or "[" between keys')
    return tuple(steps)


def _header_step(steps: tuple[Step, ...]) -> int:
    """Index of the step that names a header (matched case-insensitively), or -1."""
    if (
        len(steps) >= 3
        and steps[0] in (Key("request"), Key("response"))
        and steps[1] == Key("headers")
        and isinstance(steps[2], Key)
    ):
        return 2
    return -1


class RedactPath:
    """One compiled redact path."""

    __slots__ = ("fold_at", "source", "steps")

    def __init__(self, source: str) -> None:
        self.source = source
        self.steps = parse_path(source)
        self.fold_at = _header_step(self.steps)

    def apply(self, root: Any, budget: EntryBudget | None = None) -> int:
        """Redact in place inside ``root`` (a private copy); the number of values replaced.

        ``budget`` is the entry's (shared by all the query's paths; a fresh one if None)."""
        return _redact(root, self.steps, self.fold_at, budget or EntryBudget())


def _children(node: Any, b: EntryBudget) -> list[_Slot]:
    if type(node) is dict:
        out: list[_Slot] = [(node, k) for k in node]
    elif type(node) is list:
        out = [(node, i) for i in range(len(node))]
    else:
        return []
    if not b.spend_visits(len(out)):
        raise _OverBudget
    return out


def _descend(node: Any, name: str, b: EntryBudget) -> list[_Slot]:
    """Every slot keyed ``name`` at any depth under ``node`` (and in it), without recursion."""
    out: list[_Slot] = []
    stack = [node]
    while stack:
        cur = stack.pop()
        if not b.spend_visits(1):
            raise _OverBudget
        if type(cur) is dict:
            if name in cur:
                out.append((cur, name))
            stack.extend(v for v in cur.values() if type(v) is dict or type(v) is list)
        elif type(cur) is list:
            stack.extend(v for v in cur if type(v) is dict or type(v) is list)
    return out


def _redact(root: Any, steps: tuple[Step, ...], fold_at: int, b: EntryBudget) -> int:
    holder = [root]
    frontier: list[_Slot] = [(holder, 0)]
    for pos, step in enumerate(steps):
        nxt: list[_Slot] = []
        for parent, slot in frontier:
            node = parent[slot]
            if isinstance(step, Key):
                if type(node) is dict:
                    if pos == fold_at:
                        low = step.name.lower()
                        nxt.extend((node, k) for k in node if type(k) is str and k.lower() == low)
                    elif step.name in node:
                        nxt.append((node, step.name))
            elif isinstance(step, Index):
                if type(node) is list and step.index < len(node):
                    nxt.append((node, step.index))
            elif isinstance(step, Wild):
                nxt.extend(_children(node, b))
            elif isinstance(step, Descend):
                nxt.extend(_descend(node, step.name, b))
            elif pos + 1 == len(steps):  # a path ending in json()/xml(): the body itself
                nxt.append((parent, slot))
            else:
                return sum(
                    _redact_inside(parent, slot, step.kind, steps[pos + 1 :], b)
                    for parent, slot in frontier
                )
        frontier = nxt
        if not frontier:
            return 0
    for parent, slot in frontier:
        parent[slot] = REDACTED
    return len(frontier)


def _redact_inside(
    parent: Any, slot: Any, kind: str, rest: tuple[Step, ...], b: EntryBudget
) -> int:
    body = parent[slot]
    if type(body) is str:
        if len(body) > b.chars:  # cannot be looked into within the budget: fail closed
            parent[slot] = REDACTED
            return 1
        b.chars -= len(body)
    if kind == "json":
        doc, was_b64 = decode_json_ex(body)
    else:
        doc, was_b64 = decode_xml_ex(body)
    if type(doc) is not dict and type(doc) is not list:
        return 0
    if doc is body:  # already a list/object in the entry: redact it in place
        return _redact(doc, rest, -1, b)
    try:
        count = _redact(doc, rest, -1, b)
    except _OverBudget:
        parent[slot] = REDACTED  # partly walked: never send it half redacted
        return 1
    if count:
        try:
            if kind == "json":
                text = orjson.dumps(doc).decode()
            else:
                original = base64.b64decode(body).decode("utf-8", "replace") if was_b64 else body
                text = dump_xml(doc, prolog=original.lstrip().startswith("<?xml"))
            if was_b64:
                text = base64.b64encode(text.encode()).decode("ascii")
        except Exception:  # fail closed: never send the unredacted body
            text = REDACTED
        parent[slot] = text
    return count


def _copy1(v: Any) -> Any:
    """A shallow copy as a plain dict/list (so redaction can reach it), or None for a scalar."""
    t = type(v)
    if t is dict or t is list:
        return t(v)
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, tuple):
        return list(v)
    return None


def deep_copy(obj: Any) -> Any:
    """A copy of every container in ``obj`` as plain dicts and lists; scalars are shared (they
    are immutable). No recursion. Mappings and tuples become dicts and lists, so that every
    container in the copy is one redaction can write into.
    """
    top = _copy1(obj)
    if top is None:
        return obj
    stack = [top]
    while stack:
        node = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)
        for k, v in items:
            if type(v) is str or type(v) is int:  # the common leaves, skipped cheaply
                continue
            c = _copy1(v)
            if c is not None:
                node[k] = c  # replacing a value while iterating is allowed (size unchanged)
                stack.append(c)
    return top
