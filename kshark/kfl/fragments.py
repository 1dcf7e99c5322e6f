"""The only text a generated KFL function is made of, besides names the compiler numbers: the
helpers it may call (`RUNTIME`, its module globals) and fixed source fragments. No text of a
query is ever in them (kshark.kfl.compiler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from . import values
from .budget import EntryBudget, decode_json_in, decode_xml_in
from .decoders import decode_json, decode_xml, xml_leaf
from .walk import walk


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

# What generated code may call: module-level helpers, reached as globals of the generated module.
RUNTIME: Final[dict[str, Any]] = {
    "_M": values.MISSING,
    "_U": UNSET,
    "_eq": values.eq,
    "_ne": values.ne,
    "_eq_str": values.eq_str,
    "_ne_str": values.ne_str,
    "_eq_num": values.eq_num,
    "_ne_num": values.ne_num,
    "_eq_nil": values.eq_nil,
    "_ne_nil": values.ne_nil,
    "_lt": values.lt,
    "_le": values.le,
    "_gt": values.gt,
    "_ge": values.ge,
    "_re_any": values.re_any,
    "_re_none": values.re_none,
    "_truthy": values.truthy,
    "_str_pred": values.str_pred,
    "_str_pred_dyn": values.str_pred_dyn,
    "_size": values.size,
    "_neg": values.neg,
    "_in_items": values.in_items,
    "_in_value": values.in_value,
    "_hdr": values.header,
    "_walk": walk,
    "_dj": decode_json_in,
    "_dx": decode_xml_in,
    "_djs": decode_json,
    "_dxs": decode_xml,
    "_B": EntryBudget,
    "_SHORT": values.SHORT_TEXT,
    "_scan_re": values.scan_re,
    "_scan_in": values.scan_in,
    "_xleaf": xml_leaf,
}
ORDER_FN: Final = {"<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
FLIP: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
# The operator text that goes into generated source comes from this table, never from the query.
PY_OP: Final = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
STR_TESTS: Final[dict[str, Callable[[str, str], bool]]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": values.contains,
}
STR_INLINE: Final = {
    "startsWith": "{a}.startswith({k})",
    "endsWith": "{a}.endswith({k})",
    "contains": "({k} in {a})",
}
LITERAL_INLINE: Final = {
    "contains": "({k} in {a})",  # a search: long texts go to _scan_in (see _Gen.scanning)
    "prefix": "{a}.startswith({k})",
    "suffix": "{a}.endswith({k})",
    "equal": "({a} == {k})",
}
# The entry's budget (kshark.kfl.budget), made on first use: a query that decodes, walks or
# searches long texts makes one per entry only when an entry needs it.
BUDGET: Final = "(bud or (bud := _B()))"
