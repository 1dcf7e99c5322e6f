"""What KFL values mean at run time: missing, string forms, numbers, equality, order, truth.

The generated predicates (kshark.kfl.compiler) inline the common case — a string or an int
compared with a literal — and call these functions for everything else: lists, numeric strings,
missing fields, odd types. They must never raise, whatever an entry holds, and never recurse on
entry data (a deeply nested list must not hit Python's recursion limit): nested lists and
objects are walked with explicit stacks.

Rules (../shared/KFL.md, "Values and comparisons"):
- a missing operand makes every comparison false (``==`` and ``!=`` alike);
- numbers and numeric strings compare as numbers, exactly (no float rounding of ints);
- ``nil`` equals only JSON null, and null has no string form;
- a list equals ``x`` when any element does (nested lists are searched too);
- ordering is numeric for two numbers, lexicographic for two non-numeric strings, else false.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .regex import KflRegex

if TYPE_CHECKING:
    from .budget import EntryBudget


class _Missing:
    """The value of a selector that found nothing. Falsy; never equal to anything."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()

# Numeric strings: what a JSON number looks like, optionally signed. No spaces, no "inf"/"nan",
# no hex: a status of "200" is a number, a path of "/200" or " 200" is not.
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")


def num(v: object) -> int | float | None:
    """The number ``v`` is or spells, else None. Booleans are not numbers."""
    t = type(v)
    if t is int or t is float:
        return v  # type: ignore[return-value]
    if t is str:
        s: str = v  # type: ignore[assignment]
        if not _NUMERIC.match(s):
            return None
        if _INTEGER.match(s):
            try:
                return int(s)
            except ValueError:  # more digits than int() will read (sys.int_info)
                return float(s)
        return float(s)
    return None


def sform(v: object) -> str | None:
    """The string form used by ``==``, regexes and the string helpers; None if it has none."""
    t = type(v)
    if t is str:
        return v  # type: ignore[return-value]
    if t is int:
        try:
            return str(v)
        except ValueError:  # more digits than str() will write
            return None
    if t is bool:
        return "true" if v else "false"
    if t is float:
        f: float = v  # type: ignore[assignment]
        if f.is_integer() and abs(f) < 1e16:
            return str(int(f))
        return repr(f)
    return None


def _is_list(v: object) -> bool:
    t = type(v)
    return t is list or t is tuple


def _is_object(v: object) -> bool:
    return type(v) is dict or isinstance(v, Mapping)


def _leaves(v: Any) -> list[Any]:
    """The non-list elements of a (possibly nested) list, in order, without recursion."""
    out: list[Any] = []
    stack = [iter(v)]
    while stack:
        for el in stack[-1]:
            if type(el) is list or type(el) is tuple:
                stack.append(iter(el))
                break
            out.append(el)
        else:
            stack.pop()
    return out


def _scalar_eq(a: Any, b: Any) -> bool:
    """Equality of two values that are not lists (either may be an object)."""
    if a is None or b is None:
        return a is b
    na = num(a)
    if na is not None:
        nb = num(b)
        if nb is not None:
            return na == nb
    if _is_object(a) or _is_object(b):
        return _is_object(a) and _is_object(b) and deep_eq(a, b)
    sa = sform(a)
    return sa is not None and sa == sform(b)


def deep_eq(a: Any, b: Any) -> bool:
    """Structural equality of two lists or objects, scalars compared as ``==`` does."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if _is_list(x):
            if not _is_list(y) or len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif _is_object(x):
            if not _is_object(y) or len(x) != len(y):
                return False
            for k in x:
                if k not in y:
                    return False
                stack.append((x[k], y[k]))
        elif _is_list(y) or _is_object(y) or not _scalar_eq(x, y):
            return False
    return True


def _any_eq(lst: Any, x: Any) -> bool:
    return any(_scalar_eq(el, x) for el in _leaves(lst))


def eq(a: Any, b: Any) -> bool:
    """``a == b`` for two values (neither a regex)."""
    if a is MISSING or b is MISSING:
        return False
    if _is_list(a):
        if _is_list(b):
            return deep_eq(a, b)
        return _any_eq(a, b)
    if _is_list(b):
        return _any_eq(b, a)
    return _scalar_eq(a, b)


def ne(a: Any, b: Any) -> bool:
    """``a != b``: false when either side is missing, else ``not a == b``."""
    return a is not MISSING and b is not MISSING and not eq(a, b)


# Fast-path companions: the generated code handles `str == "literal"` and `int == 5` inline and
# calls these for any other type on the left. `k` is the literal, already in its final form.


def eq_str(v: Any, k: str) -> bool:
    """``v == k`` for a non-numeric string literal ``k`` and ``v`` not a str."""
    if v is MISSING:
        return False
    t = type(v)
    if t is list or t is tuple:
        return _any_eq(v, k)
    return sform(v) == k


def ne_str(v: Any, k: str) -> bool:
    return v is not MISSING and not eq_str(v, k)


def eq_num(v: Any, k: int | float) -> bool:
    """``v == k`` for a numeric literal ``k`` (a number, or a numeric string turned into one)."""
    if v is MISSING:
        return False
    t = type(v)
    if t is list or t is tuple:
        return _any_eq(v, k)
    n = num(v)
    return n is not None and n == k


def ne_num(v: Any, k: int | float) -> bool:
    return v is not MISSING and not eq_num(v, k)


def eq_nil(v: Any) -> bool:
    """``v == nil``: JSON null (or a list holding one)."""
    if v is None:
        return True
    if _is_list(v):
        return any(el is None for el in _leaves(v))
    return False


def ne_nil(v: Any) -> bool:
    return v is not MISSING and not eq_nil(v)


def _order(a: Any, b: Any, op: Callable[[Any, Any], bool]) -> bool:
    if a is MISSING or b is MISSING:
        return False
    na = num(a)
    if na is not None:  # the common case: a number against a number
        nb = num(b)
        if nb is not None:
            return op(na, nb)
    left = _leaves(a) if _is_list(a) else (a,)
    right = _leaves(b) if _is_list(b) else (b,)
    for x in left:
        nx = num(x)
        for y in right:
            ny = num(y)
            if nx is not None and ny is not None:
                if op(nx, ny):
                    return True
            elif nx is None and ny is None and type(x) is str and type(y) is str and op(x, y):
                return True
    return False


def lt(a: Any, b: Any) -> bool:
    return _order(a, b, operator.lt)


def le(a: Any, b: Any) -> bool:
    return _order(a, b, operator.le)


def gt(a: Any, b: Any) -> bool:
    return _order(a, b, operator.gt)


def ge(a: Any, b: Any) -> bool:
    return _order(a, b, operator.ge)


ORDER: Final[dict[str, Callable[[Any, Any], bool]]] = {"<": lt, "<=": le, ">": gt, ">=": ge}


# Texts longer than this are "long": searching one (a regex, contains()) is charged to the
# entry's budget (kshark.kfl.budget), so that many such searches in one query cannot multiply
# with the size of the entry's texts. Shorter ones cost at most a few µs a search.
SHORT_TEXT: Final = 256


def scan_re(test: Callable[[str], bool], s: str, b: EntryBudget) -> bool | None:
    """A regex search in a long text, within the entry's budget: once per (regex, text) per
    entry; None (cannot tell) when the budget is spent."""
    key = (id(s), test)
    memo = b.memo
    hit = memo.get(key)
    if hit is not None:
        found: bool | None = hit[1]
        return found
    found = test(s) if b.spend_scan(len(s)) else None
    memo[key] = (s, found)
    return found


def scan_in(s: str, k: str, b: EntryBudget) -> bool | None:
    """``k in s`` for a long text ``s``, within the entry's budget; None when it is spent."""
    return (k in s) if b.spend_scan(len(s)) else None


def _search(test: Callable[[str], bool], v: Any, b: EntryBudget | None) -> bool | None:
    """Whether the regex is found in ``v``'s string form (any element, for a list); None when
    it is not found but a long text could not be searched (budget spent)."""
    values = _leaves(v) if _is_list(v) else (v,)
    unknown = False
    for el in values:
        s = sform(el)
        if s is None:
            continue
        found = scan_re(test, s, b) if b is not None and len(s) > SHORT_TEXT else test(s)
        if found:
            return True
        if found is None:
            unknown = True
    return None if unknown else False


def re_any(test: Callable[[str], bool], v: Any, b: EntryBudget | None = None) -> bool:
    """An unanchored regex search in ``v``'s string form (any element, for a list).

    ``test`` is a ``KflRegex.test``: true when the regex matches somewhere in the text. With
    the entry's budget ``b``, long texts are searched within it (a text it cannot afford does
    not match).
    """
    if v is MISSING:
        return False
    return _search(test, v, b) is True


def re_none(test: Callable[[str], bool], v: Any, b: EntryBudget | None = None) -> bool:
    """``v != r"..."``: present and not matching (false when a long text could not be searched:
    like a missing value, a text beyond the budget makes both == and != false)."""
    return v is not MISSING and _search(test, v, b) is False


def truthy(v: Any) -> bool:
    """bool as is; string, list, object non-empty; number non-zero; nil and missing false."""
    t = type(v)
    if t is bool:
        return v  # type: ignore[no-any-return]
    if t is str or t is list or t is dict or t is tuple:
        return len(v) != 0
    if t is int or t is float:
        return bool(v != 0)
    if isinstance(v, Mapping):
        return len(v) != 0
    return False


def str_pred(
    v: Any, k: str, test: Callable[[str, str], bool], b: EntryBudget | None = None
) -> bool:
    """``v.startsWith(k)`` and kin on ``v``'s string form; a list matches if any element does.

    With the entry's budget ``b`` (given for contains(), the one that reads the whole text),
    long texts are searched within it."""
    if v is MISSING:
        return False
    values = (v,) if type(v) is str else _leaves(v) if _is_list(v) else (v,)
    for el in values:
        s = sform(el)
        if s is None:
            continue
        if b is not None and len(s) > SHORT_TEXT:
            if scan_in(s, k, b):
                return True
        elif test(s, k):
            return True
    return False


def str_pred_dyn(
    v: Any, arg: Any, test: Callable[[str, str], bool], b: EntryBudget | None = None
) -> bool:
    """The same with an argument computed per entry (a selector)."""
    k = sform(arg)
    return k is not None and str_pred(v, k, test, b)


def contains(s: str, k: str) -> bool:
    return k in s


def size(v: Any) -> Any:
    """Length of a string, list or object; missing otherwise."""
    t = type(v)
    if t is str or t is list or t is dict or t is tuple or isinstance(v, Mapping):
        return len(v)
    return MISSING


def neg(v: Any) -> Any:
    """Unary minus: numbers and numeric strings; missing otherwise."""
    n = num(v)
    return MISSING if n is None else -n


def in_items(v: Any, items: tuple[Any, ...], b: EntryBudget | None = None) -> bool:
    """``v in [items]``: any item equals ``v``; a compiled regex item is searched in ``v``
    (long texts within the entry's budget ``b``, when given)."""
    if v is MISSING:
        return False
    for it in items:
        if type(it) is KflRegex:
            if re_any(it.test, v, b):
                return True
        elif eq(v, it):
            return True
    return False


def in_value(v: Any, container: Any, fold_case: bool) -> bool:
    """``v in selector``: list → an element equals v; object → v names a key; else ``==``.

    ``fold_case`` is set when the object is ``request.headers``/``response.headers``.
    """
    if v is MISSING or container is MISSING:
        return False
    if _is_list(container):
        return any(eq(v, el) for el in _leaves(container))
    if _is_object(container):
        names = [s for s in (sform(x) for x in (_leaves(v) if _is_list(v) else (v,))) if s]
        for name in names:
            if name in container:
                return True
            if fold_case:
                low = name.lower()
                for key in container:
                    if type(key) is str and key.lower() == low:
                        return True
        return False
    return eq(v, container)


def header(d: Any, low: str) -> Any:
    """A header by case-insensitive name (the exact name was already tried by the caller)."""
    if type(d) is dict or isinstance(d, Mapping):
        for key, value in d.items():
            if type(key) is str and key.lower() == low:
                return value
    return MISSING
