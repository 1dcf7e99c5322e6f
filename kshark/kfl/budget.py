"""What evaluating one entry may cost, whatever the query says.

A filter runs on the worker's event loop, once per entry per stream, so its cost per entry must
be bounded by something other than the client's good will. The query's own code costs in
proportion to the query, which is bounded (kshark.kfl.parser, MAX_CODE_NODES in
kshark.kfl.compiler). What could multiply with the entry's size are the helpers that reach into
it: ``json()``/``xml()`` parse a text, ``*``/``..key`` visit many values, and a regex or
``contains()`` reads a whole text, however long. A query that uses any of them gives each
evaluation one :class:`EntryBudget` (made on first use):

- a long text (over ``values.SHORT_TEXT`` characters; shorter ones cost a few µs to decode and
  are decoded outright) is decoded at most once per entry, however many selectors reach it
  (``a.json().x``, ``a.json().y``, ``a.*.json()``, ``..a.json()``: one parse). The memo is keyed
  by the identity of the text, which the memo itself keeps alive for the evaluation, so an id
  cannot be reused;
- at most ``MAX_DECODE_CHARS_PER_ENTRY`` characters are decoded per entry, all texts together;
  a decode past that is MISSING (as a text over the per-text limit already is);
- at most ``MAX_WALK_VISITS_PER_ENTRY`` values are visited by ``*`` and ``..key`` per entry; a
  walk that would go past it is MISSING;
- texts longer than ``values.SHORT_TEXT`` are searched (regexes, ``contains()``) for at most
  ``MAX_SCAN_CHARS_PER_ENTRY`` characters per entry, all searches together, a regex at most once
  per text; a search past that cannot tell, and its comparison is false (``==`` and ``!=``
  alike, as with a missing value). Shorter texts are never charged: a search of one costs at
  most a few µs, and the query's size bounds how many there are.

So one entry's evaluation costs at most about one parse of its bodies, a bounded walk and a
bounded amount of searching, and the limits, like the per-text ones, only ever make a value
missing or a comparison false: they never raise.
"""

from __future__ import annotations

from typing import Any, Final

from .decoders import MAX_DECODE_CHARS, decode_json, decode_xml
from .values import MISSING

# Characters of text json()/xml() may parse for one entry, all texts together: one text of the
# largest size decode accepts (about 35 ms of orjson for 4 MiB of base64'd JSON on the dev VM).
MAX_DECODE_CHARS_PER_ENTRY: Final = MAX_DECODE_CHARS
# Values `*` and `..key` may visit for one entry, all walks together (a 1 MiB JSON body of
# small objects has ~40,000 containers; a visit costs ~0.2-0.5 µs).
MAX_WALK_VISITS_PER_ENTRY: Final = 50_000
# Characters of long texts searched for one entry (regexes and contains(), all together): two
# bodies of the default --max-body, base64'd. RE2 takes 1-20 ns a character depending on the
# pattern (kshark/kfl/regex.py), `in` well under 1.
MAX_SCAN_CHARS_PER_ENTRY: Final = 4 * 1024 * 1024


class EntryBudget:
    """One entry's evaluation: what it may still decode and walk, and what it decoded."""

    __slots__ = ("chars", "memo", "scans", "visits")

    def __init__(self) -> None:
        self.chars = MAX_DECODE_CHARS_PER_ENTRY
        self.visits = MAX_WALK_VISITS_PER_ENTRY
        self.scans = MAX_SCAN_CHARS_PER_ENTRY
        # (id(text), what) → (text, result), `what` being "j"/"x" for a decode or a regex's
        # test: the text is held so that its id stays its own while the entry is evaluated.
        self.memo: dict[tuple[int, object], tuple[Any, Any]] = {}

    def spend_scan(self, n: int) -> bool:
        """Take ``n`` characters of searching; False (and nothing taken) when fewer are left."""
        if n > self.scans:
            return False
        self.scans -= n
        return True

    def spend_visits(self, n: int) -> bool:
        """Take ``n`` visits; False (and nothing taken) when fewer are left."""
        if n > self.visits:
            self.visits = -1  # spent: later walks stop at once too
            return False
        self.visits -= n
        return True


def _decode(v: Any, b: EntryBudget, kind: str) -> Any:
    if type(v) is not str:
        return decode_json(v) if kind == "j" else decode_xml(v)  # pass-through or MISSING
    key = (id(v), kind)
    hit = b.memo.get(key)
    if hit is not None:
        return hit[1]
    if len(v) > b.chars:
        out: Any = MISSING
    else:
        b.chars -= len(v)
        out = decode_json(v) if kind == "j" else decode_xml(v)
    b.memo[key] = (v, out)
    return out


def decode_json_in(v: Any, b: EntryBudget) -> Any:
    """``sel.json()`` within one entry's budget (see the module docstring)."""
    return _decode(v, b, "j")


def decode_xml_in(v: Any, b: EntryBudget) -> Any:
    """``sel.xml()`` within one entry's budget."""
    return _decode(v, b, "x")
