"""KFL AST → one generated Python function per query.

Why generated source: a KFL filter runs once per entry per subscriber, so it must cost about
what a hand-written ``entry["response"]["status"] == 500`` costs. A tree of closures pays a call
per node; a generated function inlines selector chains (``e[k0][k1]`` inside one ``try``) and
literal comparisons (``v == k2 if type(v) is int else <slow path>``), and calls
:mod:`kshark.kfl.values` only off the fast path.

Why it is safe: no text from the query ever reaches the generated source. Every key, literal,
regex and list is passed to the factory as an argument (``k0``, ``k1``, …, closure cells); the
source is made only of this module's own fragments and of names it numbers itself. A test
(tests/kfl/test_kfl_codegen.py) checks this with hostile keys, strings and regexes.

The parts: what generated code is made of and may call (fragments.py), the bounds of a query
(limits.py), how selectors become walk ops (selectors.py), KFL's helpers (calls.py); here the
generator, which translates the tree recursively, and `compile_ast`.

Purity: compiling reads no clock unless the query uses ``now()``, ``seconds()`` … ``years()``;
then it reads it exactly once (``time.time_ns()``), unless ``now_ms`` was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from . import values
from .ast import (
    And,
    Call,
    Compare,
    Decode,
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
    Step,
)
from .calls import Known, call, method
from .errors import KflError
from .fragments import BUDGET, FLIP, LITERAL_INLINE, ORDER_FN, PY_OP, RUNTIME
from .limits import MAX_CODE_NODES, MAX_INDENT, MAX_QUERY_PROGRAM, MAX_REGEXES
from .macros import BUILTIN_MACROS, MAX_MACRO_DEPTH
from .parser import parse
from .redact import RedactPath
from .regex import KflRegex, compile_regex
from .selectors import count_decodes, header_fold_at, is_headers_object, selector_ops
from .walk import Op

_T = TypeVar("_T")


@dataclass
class Compiled:
    """What compiling one query yields (wrapped by kshark.kfl.query.Query)."""

    match: Callable[[Mapping[str, Any]], bool]
    limit: int | None
    redactions: tuple[RedactPath, ...]
    source: str
    now_ms: int | None


@dataclass
class _Gen:
    """Code generation state for one query: emitted lines, constants, temporaries, findings."""

    macros: Mapping[str, str]
    now_ms: int | None
    lines: list[str] = field(default_factory=list)
    consts: list[Any] = field(default_factory=list)
    const_ids: dict[Any, str] = field(default_factory=dict)
    ntmp: int = 0
    lazy: dict[tuple[Step, ...], str] = field(default_factory=dict)
    shared_decodes: set[tuple[Step, ...]] = field(default_factory=set)
    expanding: list[str] = field(default_factory=list)
    macro_asts: dict[str, Expr] = field(default_factory=dict)
    limit: int | None = None
    redactions: list[RedactPath] = field(default_factory=list)
    clock_used: bool = False
    regexes: dict[str, KflRegex] = field(default_factory=dict)
    program_size: int = 0  # RE2 instructions in self.regexes
    nodes: int = 0  # parts of the query generated so far (MAX_CODE_NODES)
    uses_budget: bool = False  # the code decodes or walks: each entry gets an EntryBudget

    # --- emission ------------------------------------------------------------------------------

    def emit(self, ind: int, text: str) -> None:
        self.lines.append("    " * ind + text)

    def budget(self) -> str:
        """The expression for this entry's EntryBudget (declares it in the function)."""
        self.uses_budget = True
        return BUDGET

    def scanning(self, short: str, a: str, long: str, negate: bool) -> str:
        """``short`` (a search in the str ``a``) for short texts; for long ones ``long``, a call
        that answers None past the entry's budget, which makes the test false either way."""
        if negate:
            return f"((not {short}) if len({a}) <= _SHORT else {long} is False)"
        return f"({short} if len({a}) <= _SHORT else {long} is True)"

    def count(self, node: Expr, n: int = 1) -> None:
        """Count ``n`` parts of the query at ``node`` against MAX_CODE_NODES."""
        self.nodes += n
        if self.nodes > MAX_CODE_NODES:
            raise KflError(
                node.line,
                node.column,
                f"the query is too large (more than {MAX_CODE_NODES} parts: operators, "
                "selectors and their steps, helpers; macros expanded)",
            )

    def tmp(self, prefix: str = "v") -> str:
        self.ntmp += 1
        return f"{prefix}{self.ntmp}"

    def const(self, value: Any) -> str:
        """The closure name holding ``value`` (shared between equal scalar constants)."""
        try:
            key: Any = (type(value), value) if type(value) in (str, int, float) else id(value)
            hash(key)
        except TypeError:
            key = id(value)
        name = self.const_ids.get(key)
        if name is None:
            name = f"k{len(self.consts)}"
            self.consts.append(value)
            self.const_ids[key] = name
        return name

    def regex(self, source: str, line: int, column: int) -> KflRegex:
        """The compiled regex for ``source`` (one per distinct pattern in the query).

        ``column`` is where the pattern's text starts. A pattern repeated (by hand or through
        macros) is compiled once; distinct ones count against ``MAX_REGEXES`` and
        ``MAX_QUERY_PROGRAM``.
        """
        rx = self.regexes.get(source)
        if rx is None:
            if len(self.regexes) >= MAX_REGEXES:
                raise KflError(
                    line, column, f"too many regexes in one query (at most {MAX_REGEXES})"
                )
            rx = compile_regex(source, line, column)
            self.program_size += rx.program_size
            if self.program_size > MAX_QUERY_PROGRAM:
                raise KflError(
                    line,
                    column,
                    f"regexes too large: this query's regexes compile to {self.program_size} RE2 "
                    f"instructions (at most {MAX_QUERY_PROGRAM}; this one has {rx.program_size})",
                )
            self.regexes[source] = rx
        return rx

    def regex_node(self, node: Regex) -> KflRegex:
        return self.regex(node.source, node.line, node.column + 2)  # after r"

    def now(self) -> int:
        self.clock_used = True
        if self.now_ms is None:
            self.now_ms = time.time_ns() // 1_000_000  # the one documented clock read
        return self.now_ms

    def root(self, node: Expr, ind: int) -> None:
        """The function body: a top-level and/or returns as soon as its outcome is known."""
        if isinstance(node, And | Or):
            early = (
                ("if not {}:", "return False")
                if isinstance(node, And)
                else ("if {}:", "return True")
            )
            for op in node.operands[:-1]:
                self.emit(ind, early[0].format(self.pred(op, ind)))
                self.emit(ind + 1, early[1])
            node = node.operands[-1]
        self.emit(ind, f"return {self.pred(node, ind)}")

    # --- predicates: return a side-effect-free Python expression that is a bool ---------------

    def pred(self, node: Expr, ind: int) -> str:
        if ind > MAX_INDENT:
            raise KflError(node.line, node.column, "the query nests too deeply")
        self.count(node)
        if isinstance(node, And | Or):
            r = self.tmp("r")
            self.emit(ind, f"{r} = {self.pred(node.operands[0], ind)}")
            test = f"if {r}:" if isinstance(node, And) else f"if not {r}:"
            for op in node.operands[1:]:
                self.emit(ind, test)
                self.emit(ind + 1, f"{r} = {self.pred(op, ind + 1)}")
            return r
        if isinstance(node, Not):
            return f"(not {self.pred(node.operand, ind)})"
        if isinstance(node, Compare):
            return self.compare(node, ind)
        if isinstance(node, In):
            return self.in_(node, ind)
        if isinstance(node, Method):
            return method(self, node, ind)
        if isinstance(node, Select) and self._is_macro(node):
            return self.expand(node, ind, self.pred)
        atom, known = self.value(node, ind)
        if known is not None:
            return "True" if values.truthy(known.value) else "False"
        return f"({atom} if type({atom}) is bool else _truthy({atom}))"

    # --- values: return (atom, known) where atom is a name or literal safe to repeat ----------

    def value(self, node: Expr, ind: int) -> tuple[str, Known | None]:
        if isinstance(node, Literal):  # a constant: no code, not a part (long `in` lists are)
            v = node.value
            if v is None or type(v) is bool:
                return repr(v), Known(v)  # None/True/False: Python keywords, not query text
            return self.const(v), Known(v)
        self.count(node)
        if isinstance(node, Regex):
            raise KflError(
                node.line,
                node.column,
                'a regex can only be compared (== or !=), listed after "in", or given to matches()',
            )
        if isinstance(node, ListLit):
            raise KflError(node.line, node.column, 'a list is only allowed on the right of "in"')
        if isinstance(node, Select):
            if self._is_macro(node):
                return self.expand(node, ind, self.value)
            return self.select(node, ind), None
        if isinstance(node, Call):
            return call(self, node, ind)
        if isinstance(node, Neg):
            atom, known = self.value(node.operand, ind)
            if known is not None:
                v = values.neg(known.value)
                if v is values.MISSING:
                    raise KflError(node.line, node.column, "unary minus needs a number")
                return self.const(v), Known(v)
            t = self.tmp()
            self.emit(ind, f"{t} = _neg({atom})")
            return t, None
        # A predicate used as a value: (a == 1) == true
        expr = self.pred(node, ind)
        t = self.tmp()
        self.emit(ind, f"{t} = {expr}")
        return t, None

    # --- selectors ------------------------------------------------------------------------------

    def select(self, node: Select, ind: int) -> str:
        self.count(node, len(node.steps))
        fold_at = header_fold_at(node.base, node.steps)
        steps = node.steps
        start = 0
        src = "e"
        xml = False
        if node.base is None:
            # The longest decoded prefix used more than once is computed once per entry.
            for i in range(len(steps) - 1, -1, -1):
                if isinstance(steps[i], Decode) and steps[: i + 1] in self.shared_decodes:
                    src = self.lazy_decode(steps[: i + 1], fold_at, ind)
                    start = i + 1
                    xml = steps[i].kind == "xml"  # type: ignore[union-attr]
                    break
        else:
            src, known = self.value(node.base, ind)
            if known is not None:  # `true.x`: through a name, or Python warns at True[...]
                src, const = self.tmp(), src
                self.emit(ind, f"{src} = {const}")
        ops, xml = selector_ops(steps[start:], fold_at, start, xml)
        if xml:
            ops.append(("L", None))
        target = self.tmp()
        self.fetch(src, ops, target, ind)
        return target

    def lazy_decode(self, prefix: tuple[Step, ...], fold_at: int, ind: int) -> str:
        var = self.lazy.get(prefix)
        if var is None:
            var = self.lazy[prefix] = self.tmp("d")
        self.emit(ind, f"if {var} is _U:")
        inner = Select(None, prefix, line=0, column=0)
        self.shared_decodes.discard(prefix)  # the prefix's own fetch must not use itself
        try:
            got = self.select(inner, ind + 1)
        finally:
            self.shared_decodes.add(prefix)
        self.emit(ind + 1, f"{var} = {got}")
        return var

    def fetch(self, src: str, ops: list[Op], target: str, ind: int) -> None:
        stmts: list[str] = []
        expr = src
        for idx, (code, arg) in enumerate(ops):
            if code == "k":
                expr = f"{expr}[{self.const(arg)}]"
                continue
            if expr != target:
                stmts.append(f"{target} = {expr}")
                expr = target
            if code == "h":
                k, low = self.const(arg[0]), self.const(arg[1])
                stmts.append(
                    f"{target} = {target}[{k}] if {k} in {target} else _hdr({target}, {low})"
                )
            elif code == "i":
                n = self.const(arg)
                stmts.append(f"{target} = {target}[{n}] if type({target}) is list else _M")
            elif code in ("j", "x"):
                # Short texts are decoded outright (cheap at that size); long ones once per
                # entry, within its budget.
                plain, budgeted = ("_djs", "_dj") if code == "j" else ("_dxs", "_dx")
                stmts.append(
                    f"{target} = {plain}({target}) if type({target}) is not str or "
                    f"len({target}) <= _SHORT else {budgeted}({target}, {self.budget()})"
                )
            elif code == "L":
                stmts.append(f"{target} = _xleaf({target})")
            else:  # "w" / "d": the rest applies to many values
                ops_k = self.const(tuple(ops[idx:]))
                stmts.append(f"{target} = _walk({target}, {ops_k}, {self.budget()})")
                break
        if expr != target:
            stmts.append(f"{target} = {expr}")
        self.emit(ind, "try:")
        for s in stmts:
            self.emit(ind + 1, s)
        self.emit(ind, "except Exception:")
        self.emit(ind + 1, f"{target} = _M")

    # --- macros ---------------------------------------------------------------------------------

    def _is_macro(self, node: Select) -> bool:
        if not node.bare or node.base is not None:
            return False
        name = node.steps[0].name  # type: ignore[union-attr]
        return name in self.macros and name not in self.expanding

    def expand(self, node: Select, ind: int, how: Callable[[Expr, int], _T]) -> _T:
        name: str = node.steps[0].name  # type: ignore[union-attr]
        if len(self.expanding) >= MAX_MACRO_DEPTH:
            raise KflError(node.line, node.column, f'macro "{name}" expands too deeply')
        try:
            tree = self.macro_asts.get(name)
            if tree is None:
                parsed = parse(self.macros[name])
                if parsed is None:
                    raise KflError(1, 1, "the expansion is empty")
                tree = self.macro_asts[name] = parsed
            self.expanding.append(name)
            try:
                return how(tree, ind)
            finally:
                self.expanding.pop()
        except KflError as err:
            if self.expanding:  # let the outermost macro use report it
                raise
            raise KflError(node.line, node.column, f'in macro "{name}": {err}') from None

    # --- comparisons ----------------------------------------------------------------------------

    def compare(self, node: Compare, ind: int) -> str:
        op, left, right = node.op, node.left, node.right
        if isinstance(left, Regex) and isinstance(right, Regex):
            raise KflError(node.line, node.column, "cannot compare two regexes")
        if isinstance(left, Regex):
            left, right = right, left
        if isinstance(right, Regex):
            if op not in ("==", "!="):
                raise KflError(
                    right.line, right.column, "a regex can only be compared with == or !="
                )
            return self.regex_test(left, self.regex_node(right), op == "!=", ind)
        for side in (left, right):
            if isinstance(side, ListLit):
                raise KflError(
                    side.line, side.column, 'a list is only allowed on the right of "in"'
                )
        a, ka = self.value(left, ind)
        b, kb = self.value(right, ind)
        if ka is not None and kb is not None:
            fn = {"==": values.eq, "!=": values.ne}.get(op) or values.ORDER[op]
            return "True" if fn(ka.value, kb.value) else "False"
        if ka is not None:
            a, b, kb, op = b, a, ka, FLIP[op]
        if kb is None:
            fn_name = {"==": "_eq", "!=": "_ne"}.get(op) or ORDER_FN[op]
            return f"{fn_name}({a}, {b})"
        k = kb.value
        n = values.num(k)
        if n is not None:  # a number, or a string that spells one: numeric compare
            kn = self.const(n)
            slow = {"==": "_eq_num", "!=": "_ne_num"}.get(op) or ORDER_FN[op]
            return f"(({a} {PY_OP[op]} {kn}) if type({a}) is int else {slow}({a}, {kn}))"
        if type(k) is str and op in ("==", "!="):
            slow = "_eq_str" if op == "==" else "_ne_str"
            return f"(({a} {PY_OP[op]} {b}) if type({a}) is str else {slow}({a}, {b}))"
        if k is None and op in ("==", "!="):
            return f"{'_eq_nil' if op == '==' else '_ne_nil'}({a})"
        fn_name = {"==": "_eq", "!=": "_ne"}.get(op) or ORDER_FN[op]
        return f"{fn_name}({a}, {b})"

    def regex_test(self, subject: Expr, rx: KflRegex, negate: bool, ind: int) -> str:
        if isinstance(subject, ListLit):
            raise KflError(
                subject.line, subject.column, 'a list is only allowed on the right of "in"'
            )
        a, known = self.value(subject, ind)
        if known is not None:
            hit = values.re_any(rx.test, known.value)
            return "True" if hit != negate else "False"
        s = self.const(rx.test)
        bud = self.budget()
        if rx.literal_kind is not None:  # a plain literal: the string operation, inlined
            k = self.const(rx.literal)
            inline = LITERAL_INLINE[rx.literal_kind].format(a=a, k=k)
            if rx.literal_kind == "contains":  # reads the whole text
                inline = self.scanning(inline, a, f"_scan_in({a}, {k}, {bud})", negate)
            elif negate:
                inline = f"(not {inline})"
        else:
            inline = self.scanning(f"{s}({a})", a, f"_scan_re({s}, {a}, {bud})", negate)
        if negate:
            return f"({inline} if type({a}) is str else _re_none({s}, {a}, {bud}))"
        return f"({inline} if type({a}) is str else _re_any({s}, {a}, {bud}))"

    def in_(self, node: In, ind: int) -> str:
        left, right = node.left, node.right
        if isinstance(left, ListLit | Regex):
            raise KflError(
                left.line,
                left.column,
                f"a {'list' if isinstance(left, ListLit) else 'regex'} "
                'cannot be on the left of "in"',
            )
        if isinstance(right, Regex | Literal):
            raise KflError(
                right.line,
                right.column,
                '"in" needs a list or a field on its right: x in ["a", "b"]',
            )
        a, known = self.value(left, ind)
        if not isinstance(right, ListLit):
            b, _ = self.value(right, ind)
            fold = "True" if is_headers_object(right) else "False"
            return f"_in_value({a}, {b}, {fold})"
        items: list[tuple[str, Known | None]] = []
        for item in right.items:
            if isinstance(item, ListLit):
                raise KflError(item.line, item.column, "lists do not nest")
            if isinstance(item, Regex):
                rx = self.regex_node(item)
                items.append((self.const(rx), Known(rx)))
            else:
                items.append(self.value(item, ind))
        if not items:
            return "False"
        regex_items = any(isinstance(item, Regex) for item in right.items)
        bud = f", {self.budget()}" if regex_items else ""
        if any(k is None for _, k in items):
            return f"_in_items({a}, ({', '.join(atom for atom, _ in items)},){bud})"
        consts = tuple(k.value for _, k in items if k is not None)
        if known is not None:
            return "True" if values.in_items(known.value, consts) else "False"
        kitems = self.const(consts)
        if all(type(v) is str and values.num(v) is None for v in consts):
            kset = self.const(frozenset(consts))
            return f"(({a} in {kset}) if type({a}) is str else _in_items({a}, {kitems}))"
        nums = [values.num(v) for v in consts]
        if all(n is not None for n in nums):
            kset = self.const(frozenset(nums))
            return f"(({a} in {kset}) if type({a}) is int else _in_items({a}, {kitems}))"
        return f"_in_items({a}, {kitems}{bud})"


def _match_all(_entry: Mapping[str, Any]) -> bool:
    return True


_MATCH_ALL_SOURCE: Final = "def match(e):\n    return True\n"


def compile_ast(
    tree: Expr | None,
    macros: Mapping[str, str] | None = None,
    *,
    now_ms: int | None = None,
    safety_net: bool = True,
) -> Compiled:
    """Generate and compile the predicate for ``tree``.

    ``safety_net`` wraps the body in ``try/except Exception: return False`` (free in CPython
    3.11 until something raises). The runtime helpers are written never to raise; the property
    tests compile with ``safety_net=False`` so that a helper that does raise is caught there.
    """
    all_macros = dict(BUILTIN_MACROS)
    if macros:
        all_macros.update(macros)
    gen = _Gen(all_macros, now_ms)
    if tree is None:
        return Compiled(_match_all, None, (), _MATCH_ALL_SOURCE, None)
    counts: dict[tuple[Step, ...], int] = {}
    count_decodes(tree, counts)
    gen.shared_decodes = {k for k, c in counts.items() if c > 1}
    body_ind = 3 if safety_net else 2
    gen.root(tree, body_ind)
    head = [f"def _factory({', '.join(f'k{i}' for i in range(len(gen.consts)))}):"]
    head.append("    def match(e):")
    head.extend(f"        {var} = _U" for var in gen.lazy.values())
    if gen.uses_budget:
        head.append("        bud = None")  # this entry's EntryBudget, made on first use
    if safety_net:
        head.append("        try:")
        tail = ["        except Exception:", "            return False"]
    else:
        tail = []
    tail.append("    return match")
    source = "\n".join([*head, *gen.lines, *tail]) + "\n"
    namespace = dict(RUNTIME)
    exec(compile(source, "<kfl>", "exec"), namespace)  # source holds no query text; see above
    match = namespace["_factory"](*gen.consts)
    return Compiled(
        match,
        gen.limit,
        tuple(gen.redactions),
        source,
        gen.now_ms if gen.clock_used else None,
    )
