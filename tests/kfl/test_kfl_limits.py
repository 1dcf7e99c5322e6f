"""A query's cost is bounded: compiling it, and evaluating it against one entry (issue 9, item 3).

Compiling: every shape a 64 KiB text can take is either compiled or refused with a KflError
that says where (`line:col`) and why — never another exception (before: a 3,500-step selector
hit Python's recursion limit, a 5,000-digit number int()'s digit limit, 8,000 `.json()` took
seconds and ~150 MB). Evaluating: whatever the query, one entry costs at most one parse of each
long text, a bounded walk and a bounded amount of searching (kshark.kfl.budget); past a limit a
value is missing or a comparison false, never an exception and never a stall.
"""

from __future__ import annotations

import base64
import contextlib
import random
import warnings
from typing import Any

import orjson
import pytest

from kshark.kfl import KflError, compile_query, decoders, validate
from kshark.kfl import budget as B
from kshark.kfl.limits import MAX_CODE_NODES, MAX_REDACT_PATHS
from kshark.kfl.parser import MAX_NUMBER_CHARS, MAX_QUERY_CHARS, MAX_SELECTOR_STEPS
from kshark.kfl.values import SHORT_TEXT

# --- compiling ------------------------------------------------------------------------------

REFUSED = [
    # What the issue found, and its class: one long selector chain, in every step form.
    (
        "a" + ".b" * 3500,
        f"1:129: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:1)",
    ),
    (
        "response.content.text" + ".json()" * 8000,
        f"1:450: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:1)",
    ),
    ("x" + "[0]" * 100, f"1:192: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:1)"),
    (
        "x == y" + '["k"]' * 100,
        f"1:323: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:6)",
    ),
    ("x" + ".*" * 100, f"1:129: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:1)"),
    ("x" + "..k" * 100, f"1:193: selector too long (at most {MAX_SELECTOR_STEPS} steps after 1:1)"),
    # Numbers: too many digits for int(), or not finite.
    ("x == " + "9" * 5000, f"1:6: number too long (5000 characters; at most {MAX_NUMBER_CHARS})"),
    (
        "x[" + "1" * 5000 + "]",
        f"1:3: number too long (5000 characters; at most {MAX_NUMBER_CHARS})",
    ),
    ("x == 1e999", "1:6: number out of range: 1e999"),
    ("timestamp > minutes(1e308)", "1:21: minutes() out of range: 1e+308"),
    (
        "x == 1" + "0" * 400 + ".5",
        f"1:6: number too long (403 characters; at most {MAX_NUMBER_CHARS})",
    ),
    # Too many parts: each is generated code and work per entry.
    (
        " or ".join(["x == 1"] * 2000),
        f"1:16661: the query is too large (more than {MAX_CODE_NODES} parts: operators, "
        "selectors and their steps, helpers; macros expanded)",
    ),
    (
        "redact(" + ", ".join(['"a"'] * (MAX_REDACT_PATHS + 1)) + ")",
        f"1:{8 + 5 * MAX_REDACT_PATHS}: too many redact() paths in one query "
        f"(at most {MAX_REDACT_PATHS})",
    ),
]


@pytest.mark.parametrize(("query", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_oversized_queries_are_refused_with_a_position(query: str, message: str) -> None:
    with pytest.raises(KflError) as info:
        compile_query(query)
    assert str(info.value) == message
    assert validate(query) == (False, message)
    # The position is the offending token: the step past the limit, the number.
    col = info.value.column
    if "selector too long" in message:
        assert query[col - 2] in ".[", query[col - 2 : col + 8]
    elif "number" in message:
        assert query[col - 1].isdigit()


def test_macros_that_multiply_are_bounded_too() -> None:
    # Each macro doubles the one before: 2**14 comparisons once expanded.
    macros = {"m0": "x == 1"} | {f"m{i}": f"m{i - 1} or m{i - 1}" for i in range(1, 15)}
    with pytest.raises(KflError, match=r"^1:1: in macro \"m14\": .*the query is too large"):
        compile_query("m14", macros)


def test_just_under_the_limits_compiles_and_works() -> None:
    entry: dict[str, Any] = {"x": 1}
    node = entry
    for _ in range(MAX_SELECTOR_STEPS - 2):
        node["b"] = {}
        node = node["b"]
    node["b"] = 7
    # The root name is a step too.
    text = "x" + ".b" * (MAX_SELECTOR_STEPS - 1) + " == 7"
    assert compile_query(text).match({"x": entry}) is True
    digits = "1" * MAX_NUMBER_CHARS
    assert compile_query(f"x == {digits}").match({"x": int(digits)}) is True
    assert compile_query("x == 1e308").match({"x": 1e308}) is True
    # Constant lists are not parts: a long allowlist is fine.
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(4000)]
    text = "src.ip in [" + ", ".join(f'"{ip}"' for ip in ips) + "]"
    assert len(text) < MAX_QUERY_CHARS
    assert compile_query(text).match({"src": {"ip": "10.0.15.159"}}) is True


@pytest.mark.parametrize(
    "query",
    [
        "(" * 30_000 + "x" + ")" * 30_000,
        "-" * 60_000 + "1",
        "!" * 60_000 + "x",
        "x in [" + "[" * 30_000,
        "x" + "(" * 60_000,
        '"' + "\\\\" * 30_000 + '"',
        "x." * 30_000,
        "x == " + "-" * 60_000,
    ],
    ids=["parens", "minus", "not", "lists", "calls", "escapes", "dots", "minus-end"],
)
def test_deep_or_long_text_never_raises_anything_but_a_kfl_error(query: str) -> None:
    # lark's LALR parser and the tree transformer keep their own stacks: no recursion limit.
    with contextlib.suppress(KflError):
        compile_query(query)


# --- evaluating -----------------------------------------------------------------------------


def b64(obj: Any) -> str:
    return base64.b64encode(orjson.dumps(obj)).decode()


class CountingOrjson:
    """orjson with its loads counted (what decoding a body costs)."""

    JSONDecodeError = orjson.JSONDecodeError

    def __init__(self) -> None:
        self.loads_calls = 0

    def loads(self, data: Any) -> Any:
        self.loads_calls += 1
        return orjson.loads(data)


def test_a_long_text_is_decoded_once_per_entry_however_many_selectors_reach_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = CountingOrjson()
    monkeypatch.setattr(decoders, "orjson", counting)
    body = {"items": [{"id": i, "name": "n" * 40} for i in range(50)]}
    entry = {"response": {"content": {"text": b64(body)}}}
    assert len(entry["response"]["content"]["text"]) > SHORT_TEXT
    q = compile_query(
        "response.content.text.json().items[1].id == 5"
        " or response.*.text.json().items[2].id == 5"
        " or response..text.json().items[3].id == 5"
        " or response.content.text.json().items[49].id == 49"
    )
    assert q.match(entry) is True
    assert counting.loads_calls == 1
    assert q.match(entry) is True
    assert counting.loads_calls == 2  # once per entry: nothing is kept between entries


def test_decoding_past_the_entry_budget_is_missing() -> None:
    # Two texts that each fit the per-text limit, but not both in one entry's budget.
    text = b64({"pad": "x" * (B.MAX_DECODE_CHARS_PER_ENTRY // 2), "k": 1})
    assert B.MAX_DECODE_CHARS_PER_ENTRY // 2 < len(text) <= decoders.MAX_DECODE_CHARS
    entry = {"a": text, "b": "".join([text[:10], text[10:]])}  # equal, but two texts
    assert entry["a"] is not entry["b"]
    assert compile_query("a.json().k == 1").match(entry) is True
    assert compile_query("b.json().k == 1").match(entry) is True
    assert compile_query("a.json().k == 1 and b.json().k == 1").match(entry) is False
    # The same text reached twice is one decode: within the budget.
    assert compile_query("a.json().k == 1 and a.*.k == 1 or a.json().k == 1").match(entry)


def test_walking_past_the_entry_budget_is_missing() -> None:
    many = [{"k": i} for i in range(B.MAX_WALK_VISITS_PER_ENTRY + 1)]
    entry = {"doc": many, "small": [{"k": 1}]}
    assert compile_query("small..k == 1").match(entry) is True
    assert compile_query("doc[5].k == 5").match(entry) is True  # no walk: not charged
    q = compile_query("doc..k == 5")  # one visit per container: more than the budget
    assert q.match(entry) is False
    assert compile_query("!(doc..k)").match(entry) is True  # missing
    q = compile_query("doc.*.k == 5")  # * yields every element: the budget is spent at once
    assert q.match(entry) is False


def test_searching_long_texts_past_the_entry_budget_is_false_both_ways() -> None:
    half = B.MAX_SCAN_CHARS_PER_ENTRY // 2 + 1
    entry = {"a": "x" * half, "b": "x" * half + "needle"}
    assert compile_query('b.contains("needle")').match(entry) is True
    assert compile_query('b == r"ne+dle"').match(entry) is True
    # a is searched first and spends half the budget: b can no longer be searched.
    assert compile_query('a.contains("zz") or b.contains("needle")').match(entry) is False
    assert compile_query('a == r"z+z" or b == r"ne+dle"').match(entry) is False
    assert compile_query('a == r"z+z" or b != r"ne+dle"').match(entry) is False
    assert compile_query('a == r"z+z" or b != r"absent"').match(entry) is False
    assert compile_query('a.contains("zz") or b in [r"need"]').match(entry) is False
    # Short texts are never charged, and one regex searches one text once per entry.
    entry["c"] = "short needle"
    assert compile_query('a.contains("zz") or b.contains("zz") or c.contains("needle")').match(
        entry
    )
    q = compile_query(" or ".join(['b == r"ne+dle"'] * 20))
    assert q.match(entry) is True
    # Lists: every element counts.
    entry["l"] = ["x" * half, "x" * half + "needle"]
    assert compile_query('l.contains("needle")').match({"l": entry["l"]}) is False
    assert compile_query('l == r"needle"').match({"l": entry["l"]}) is False
    assert compile_query('l == r"needle"').match({"l": ["short", "a needle"]}) is True


def test_redacting_past_the_entry_budget_replaces_the_body_whole() -> None:
    secret = {"pad": "x" * (B.MAX_DECODE_CHARS_PER_ENTRY // 2), "token": "s3cret"}
    entry = {
        "request": {"postData": {"text": b64(secret)}},
        "response": {"content": {"text": b64(secret)}},
    }
    q = compile_query(
        'redact("request.postData.text.json().token", "response.content.text.json().token")'
    )
    out = q.redact(entry)
    first = orjson.loads(base64.b64decode(out["request"]["postData"]["text"]))
    assert first["token"] == "[REDACTED]" and first["pad"] == secret["pad"]
    assert out["response"]["content"]["text"] == "[REDACTED]"  # failed closed, unread
    assert "s3cret" not in orjson.dumps(out).decode()


_SOUP = [
    *("x", "a.b", "request.path", "response.content.text", ".json()", ".xml()", ".*", "..k"),
    *("[0]", '["k"]', "[*]", "==", "!=", "<", ">=", "in", "and", "or", "not", "!", "-"),
    *("(", ")", "[", "]", ",", "1", "1.5", "1e308", "9" * 60, '"s"', "'t'", 'r"a+"', 'r"("'),
    *("true", "nil", "size(", "now()", "minutes(", "datetime(", "limit(", "redact(", '"a.b"'),
    *(".startsWith(", ".contains(", ".matches(", "http", "tls", "1e-400", "0", "-0"),
]


def test_token_soup_compiles_or_is_a_kfl_error_and_never_warns() -> None:
    """Random sequences of KFL's tokens: a KflError or a working query, nothing else (before:
    minutes(1e308) was an OverflowError; `true.x` made Python warn at compile time)."""
    rng = random.Random(9)
    entry = {"x": [1, "a"], "a": {"b": 2}, "response": {"content": {"text": "eyJrIjoxfQ=="}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3000):
            text = " ".join(rng.choice(_SOUP) for _ in range(rng.randint(1, 12)))
            try:
                q = compile_query(text, now_ms=0)
            except KflError:
                continue
            assert type(q.match(entry)) is bool, text
            q.redact({"a": {"b": 1}})
        assert compile_query("true.x == 1").match({}) is False
        with pytest.raises(KflError, match="minutes"):
            compile_query("timestamp > minutes(1e308)")
