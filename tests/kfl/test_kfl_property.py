"""Property tests: evaluation never raises, and the generated fast paths mean what KFL.md says.

Random JSON documents (entry-like keys, hostile values: NaN, huge ints, numeric and base64
strings, XML, deep nesting) are fed to randomly generated *valid* queries compiled with the
safety net off, so a runtime helper that raised would fail here instead of being swallowed.
Each result is also checked against a small tree-walking evaluator built directly from the
generic rules in kshark.kfl.values — the compiler's inlined comparisons, sets and subscript
chains must agree with it.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kshark.kfl import compile_query
from kshark.kfl import values as V
from kshark.kfl.ast import (
    And,
    Call,
    Compare,
    Expr,
    In,
    ListLit,
    Literal,
    Method,
    Neg,
    Not,
    Or,
    Regex,
    Select,
)
from kshark.kfl.budget import EntryBudget
from kshark.kfl.compiler import compile_ast
from kshark.kfl.fragments import STR_TESTS
from kshark.kfl.helpers import UNIT_MS, parse_datetime
from kshark.kfl.macros import BUILTIN_MACROS
from kshark.kfl.parser import parse
from kshark.kfl.selectors import header_fold_at, is_headers_object, selector_ops
from kshark.kfl.walk import walk

NOW = 1_700_000_000_000
KEYS = ["a", "b", "request", "headers", "Content-Type", "content-type", "status", "x", "1", "*"]

# --- documents --------------------------------------------------------------------------------

_texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "200",
            "007",
            "-1.5e3",
            "abc",
            "true",
            "null",
            '{"a": 1, "b": [1, "2"]}',
            base64.b64encode(b'[{"x": 7}]').decode(),
            "<r a='1'><b>t</b><b>u</b></r>",
            base64.b64encode(b"<r><x>1</x></r>").decode(),
            "[" * 2000,
            "9" * 5000,
        ]
    ),
)
# A small pool of values that the literals below also use, so that comparisons often hit.
_POOL: list[Any] = [
    *(0, 1, 7, -1, 7.0, 0.5, True, False, None),
    *("a", "b", "A", "1", "7", "007", "7.0", "", "true"),
]
_lists_of_pool = st.lists(st.sampled_from(_POOL), max_size=3)
_scalars = st.one_of(
    st.sampled_from(_POOL),
    st.sampled_from(_POOL),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    _texts,
)
documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        _lists_of_pool,
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), inner, max_size=5),
    ),
    max_leaves=25,
)
_pooled = st.one_of(st.sampled_from(_POOL), _lists_of_pool, documents)
entries = st.fixed_dictionaries(
    {"a": _pooled, "b": _pooled, "x": _pooled},
    optional={k: documents for k in KEYS if k not in ("a", "b", "x")},
)


def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v] if n % 2 else {"a": v}
    return v


# Far deeper than Python's recursion limit: nothing may recurse on entry data.
DEEP = ({"a": _deep(3000), "x": _deep(3001), "request": _deep(3001)},)


# --- queries ----------------------------------------------------------------------------------


def kstr(s: str) -> str:
    return json.dumps(s)


_key = st.sampled_from(KEYS)
_step = st.one_of(
    _key.filter(lambda k: k.isidentifier()).map(lambda k: "." + k),
    _key.map(lambda k: f"[{kstr(k)}]"),
    st.integers(0, 3).map(lambda n: f"[{n}]"),
    st.sampled_from([".*", "[*]", ".json()", ".xml()", "..a", "..x"]),
)
selectors = st.one_of(
    st.sampled_from(["a", "b", "x", "a.b", "a[0]", "a.*", 'request.headers["content-type"]']),
    st.builds(
        lambda root, steps: root + "".join(steps),
        st.sampled_from(["a", "b", "request", "x", "status", "http", "tls"]),
        st.lists(_step, max_size=4),
    ),
)
_number_lit = st.one_of(
    st.integers(0, 10**15).map(str), st.floats(0, 1e6).map(lambda f: repr(float(f)))
)
literals = st.one_of(
    st.sampled_from(["0", "1", "7", "-1", "7.0", "0.5", '"a"', '"A"', '"1"', '"007"', '""', "'b'"]),
    st.sampled_from(["true", "false", "nil", '"true"', '"7"']),
    _texts.map(kstr),
    _number_lit,
    _number_lit.map(lambda n: "-" + n),
    st.sampled_from(["true", "false", "nil", "null"]),
)
# Literal forms (r"a", r"^a", r"0$", r"^7$", r"\.") take the string-method fast path; the
# others go to RE2. The reference below searches every one with the re2 module's own API.
regexes = st.sampled_from(
    ['r"^a"', 'r"\\d+"', 'r"(?i)TRUE"', 'r"."', 'r"^$"', "r'0$'", 'r"a"', 'r"^7$"', 'r"\\."']
)
values = st.one_of(
    selectors,
    literals,
    selectors.map(lambda s: f"size({s})"),
    selectors.map(lambda s: f"-{s}"),
    st.sampled_from(["now()", "minutes(-5)", "hours(1.5)", 'datetime("1/2/2023, 3:04:05.006 PM")']),
)


_ops_st = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
_kind = st.sampled_from([0, 0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10])
_simple = st.sampled_from(["a", "b", "x", "a.b", "a[0]", "a.*", "b[1]"])
_pool_literal = st.sampled_from(
    ["0", "1", "7", "-1", "7.0", "0.5", '"a"', '"A"', '"1"', '"007"', '""', '"true"', "true", "nil"]
)
_str_list = st.lists(st.sampled_from(['"a"', '"b"', '"A"', '""', '"true"', "'x'"]), max_size=3)
_num_list = st.lists(st.sampled_from(["0", "1", "7", "7.0", '"1"', '"007"', "-1"]), max_size=3)
_bool = st.booleans()
_item_lists = st.lists(st.one_of(values, regexes), max_size=4)
_str_helpers = st.sampled_from(["startsWith", "endsWith", "contains"])
_patterns = st.one_of(regexes, st.just(kstr("^a|1")))
_plain = st.one_of(selectors, literals)
_stream = st.sampled_from(["limit(3)", 'redact("a.b", "..x")', "http", "dns", "tls"])


def _compare(draw: st.DrawFn) -> str:
    op = draw(_ops_st)
    left = draw(values)
    if op in ("==", "!=") and draw(_bool):
        return f"{left} {op} {draw(regexes)}"
    return f"{left} {op} {draw(values)}"


@st.composite
def atoms(draw: st.DrawFn) -> str:
    kind = draw(_kind)
    if kind == 0:
        return f"{draw(_simple)} {draw(_ops_st)} {draw(_pool_literal)}"
    if kind == 8:
        return f"{draw(_pool_literal)} {draw(_ops_st)} {draw(_simple)}"
    if kind == 9:
        return f"{draw(_simple)} in [{', '.join(draw(_str_list))}]"
    if kind == 10:
        return f"{draw(_simple)} in [{', '.join(draw(_num_list))}]"
    if kind == 1:
        return f"{draw(values)} in [{', '.join(draw(_item_lists))}]"
    if kind == 2:
        return f"{draw(values)} in {draw(selectors)}"
    if kind == 3:
        return f"{draw(selectors)}.{draw(_str_helpers)}({draw(values)})"
    if kind == 4:
        return f"{draw(selectors)}.matches({draw(_patterns)})"
    if kind == 5:
        return draw(_plain)
    if kind == 6:
        return draw(_stream)
    return _compare(draw)


queries = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        inner.map(lambda q: f"!({q})"),
        inner.map(lambda q: f"not {q}"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} and {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} && {t[1]} or {t[2]}"),
    ),
    max_leaves=6,
)

# --- the reference evaluator ------------------------------------------------------------------


def ref_value(node: Expr, e: Any) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Select):
        if node.bare and node.base is None and node.steps[0].name in BUILTIN_MACROS:  # type: ignore[union-attr]
            name = node.steps[0].name  # type: ignore[union-attr]
            if name != "tls":
                tree = parse(BUILTIN_MACROS[name])
                assert tree is not None
                return ref_pred(tree, e)
        base = e if node.base is None else ref_value(node.base, e)
        ops, xml = selector_ops(node.steps, header_fold_at(node.base, node.steps), 0, False)
        if xml:
            ops.append(("L", None))
        return walk(base, tuple(ops), EntryBudget())
    if isinstance(node, Call):
        if node.name == "size":
            return V.size(ref_value(node.args[0], e))
        if node.name == "now":
            return NOW
        if node.name in UNIT_MS:
            return NOW + round(node.args[0].value * UNIT_MS[node.name])  # type: ignore[union-attr,operator]
        if node.name == "datetime":
            return parse_datetime(node.args[0].value)  # type: ignore[union-attr,arg-type]
        return True  # limit, redact
    if isinstance(node, Neg):
        return V.neg(ref_value(node.operand, e))
    return ref_pred(node, e)


class RefSearch:
    """A regex test through the re2 package's public API: no fast path, no memo."""

    def __init__(self, source: str) -> None:
        self.regex = re2.compile(source)

    def __call__(self, text: str) -> bool:
        return self.regex.search(text) is not None


def ref_in_items(v: Any, items: tuple[Any, ...]) -> bool:
    if v is V.MISSING:
        return False
    return any(V.re_any(it, v) if isinstance(it, RefSearch) else V.eq(v, it) for it in items)


def ref_pred(node: Expr, e: Any) -> bool:
    if isinstance(node, And):
        return all(ref_pred(op, e) for op in node.operands)
    if isinstance(node, Or):
        return any(ref_pred(op, e) for op in node.operands)
    if isinstance(node, Not):
        return not ref_pred(node.operand, e)
    if isinstance(node, Compare):
        left, right = node.left, node.right
        if isinstance(left, Regex):
            left, right = right, left
        if isinstance(right, Regex):
            hit = V.re_any(RefSearch(right.source), ref_value(left, e))
            if node.op == "==":
                return hit
            return ref_value(left, e) is not V.MISSING and not hit
        fn = {"==": V.eq, "!=": V.ne}.get(node.op) or V.ORDER[node.op]
        return fn(ref_value(left, e), ref_value(right, e))
    if isinstance(node, In):
        v = ref_value(node.left, e)
        if isinstance(node.right, ListLit):
            items = tuple(
                RefSearch(it.source) if isinstance(it, Regex) else ref_value(it, e)
                for it in node.right.items
            )
            return ref_in_items(v, items)
        return V.in_value(v, ref_value(node.right, e), is_headers_object(node.right))
    if isinstance(node, Method):
        v = ref_value(node.receiver, e)
        if node.name == "matches":
            arg = node.args[0]
            source = arg.source if isinstance(arg, Regex) else arg.value  # type: ignore[union-attr]
            return V.re_any(RefSearch(source), v)  # type: ignore[arg-type]
        k = V.sform(ref_value(node.args[0], e))
        return k is not None and V.str_pred(v, k, STR_TESTS[node.name])
    return V.truthy(ref_value(node, e))


# --- properties ---------------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
@given(query=queries, docs=st.lists(entries, min_size=1, max_size=4))
def test_random_queries_never_raise_and_agree_with_the_reference(
    query: str, docs: list[dict[str, Any]]
) -> None:
    tree = parse(query)
    compiled = compile_ast(tree, now_ms=NOW, safety_net=False)
    for doc in docs:
        before = copy.deepcopy(doc)
        got = compiled.match(doc)
        assert type(got) is bool
        assert got is ref_pred(tree, doc) if tree is not None else got is True, query
        assert _same(doc, before)  # matching never modifies the entry


@SETTINGS
@given(query=queries, doc=documents)
def test_any_json_value_as_the_entry_is_survived(query: str, doc: Any) -> None:
    compiled = compile_ast(parse(query), now_ms=NOW, safety_net=False)
    assert type(compiled.match(doc)) is bool
    for deep in DEEP:
        assert type(compiled.match(deep)) is bool


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=entries,
    paths=st.lists(
        st.sampled_from(
            [
                "a",
                "a.b",
                "..x",
                "a.*",
                "a[0]",
                "request.headers.content-type",
                "x.json().a",
                "x.xml().r.b",
                "b.json()..x",
                "*",
                "a[*].b",
                'request["headers"]',
            ]
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_redact_never_raises_and_never_touches_the_original(
    doc: dict[str, Any], paths: list[str]
) -> None:
    q = compile_query("redact(" + ", ".join(kstr(p) for p in paths) + ")")
    before = copy.deepcopy(doc)
    out = q.redact(doc)
    assert _same(doc, before)
    assert out is not doc
    assert type(out) is dict


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself (hypothesis puts NaN in documents)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- exhaustive: every inlined fast path against the generic rules ----------------------------

_TRICKY: list[Any] = [
    *_POOL,
    *([], ["a"], [1, "7"], [True], [None], [["a"]], [[7]], {}, {"a": 1}, {"A": "a"}),
    *("7e0", " 7", "x7", "+7", ".5", "1" * 5000, 10**20, 2**63, -0.0),
    *(float("nan"), float("inf"), "inf", "NaN", "A", "\u0661"),
]
_LITERALS = ["0", "1", "7", "-1", "7.0", "0.5", "1e1", '"a"', '"A"', '"1"', '"007"', '""']
_LITERALS += ['"true"', "true", "false", "nil", '" 7"', "'+7'", '"7e0"', "10000000000000000000"]
# Every literal form (contains, prefix, suffix, equal; escaped metacharacters; empty) and a few
# that only RE2 can decide.
_FAST_REGEXES = (
    *('r"^a"', 'r"7"', 'r"(?i)true"', 'r"^$"', 'r""', 'r"^"', 'r"$"', 'r"a$"', 'r"^a$"'),
    *('r"^7\\.0$"', 'r"\\.5"', 'r"^\\+7"', 'r"e0$"', 'r"00"', 'r"^1+$"', 'r"^\\d$"'),
)
_FAST_QUERIES = [
    *(f"a {op} {lit}" for op in ("==", "!=", "<", "<=", ">", ">=") for lit in _LITERALS),
    *(f"{lit} {op} a" for op in ("==", "!=", "<", ">=") for lit in _LITERALS),
    *(f"a {op} {rx}" for op in ("==", "!=") for rx in _FAST_REGEXES),
    *(f"a.matches({rx})" for rx in _FAST_REGEXES),
    f"a in [{', '.join(_FAST_REGEXES)}]",
    *(f"a.{h}({lit})" for h in ("startsWith", "endsWith", "contains") for lit in _LITERALS),
    'a in ["a", "b", "A"]',
    'a in ["", "true"]',
    "a in [1, 7]",
    'a in [7.0, "1", -1]',
    'a in ["007"]',
    'a in ["a", 1, nil, r"^x"]',
    "a in []",
    "a in b",
    'a.matches("^[0-9]+$")',
    "a",
    "!a",
    "-a < 0",
    "size(a) == 1",
    'a[0] == "a"',
    "a[0] == 7",
    "a.* == 7",
    'h["X-Key"] == "a"',
    'request.headers["x-key"] == "a"',
    'request.headers["x-key"] == 7',
    '"X-KEY" in request.headers',
]


def test_fast_paths_agree_with_the_generic_rules_exhaustively() -> None:
    docs: list[dict[str, Any]] = [{}]
    for v in _TRICKY:
        docs.append({"a": v, "b": v, "h": {"x-key": v}, "request": {"headers": {"X-Key": v}}})
        docs.append({"a": v, "b": [v, "a"], "request": {"headers": {"x-key": v}}})
    for query in _FAST_QUERIES:
        tree = parse(query)
        assert tree is not None
        match = compile_ast(tree, now_ms=NOW, safety_net=False).match
        for doc in docs:
            assert match(doc) is ref_pred(tree, doc), (query, doc)


def test_the_exhaustive_table_can_fail() -> None:
    # The reference itself must discriminate: a bool is not the number 1, "7" is 7, etc.
    assert ref_pred(parse("a == 1"), {"a": True}) is False  # type: ignore[arg-type]
    assert ref_pred(parse("a == 7"), {"a": "7"}) is True  # type: ignore[arg-type]
    assert ref_pred(parse('a in ["a"]'), {"a": ["a"]}) is True  # type: ignore[arg-type]
