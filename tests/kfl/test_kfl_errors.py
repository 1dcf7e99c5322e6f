"""A bad KFL text is rejected before streaming, with line, column and what is wrong there.

KFL.md "Errors": a text that does not parse, an unknown helper, a helper with the wrong
arguments, or a regex that does not compile → ``KflError`` whose ``str()`` is
``"line:column: message"``. (Kubeshark: a regex or helper error surfaced only when the stream
was prepared, and the stream closed silently.)
"""

from __future__ import annotations

import pickle

import pytest

from kshark.kfl import KflError, compile_query, validate

RE2 = "KFL regexes are RE2, as in Kubeshark"

ERRORS: list[tuple[str, str]] = [
    # --- syntax --------------------------------------------------------------------------------
    ('src.namespace == == "x"', '1:18: unexpected token "==" (expected a value)'),
    ("response.status == == 200", '1:20: unexpected token "==" (expected a value)'),
    ("request.path ==", "1:16: unexpected end of query (expected a value)"),
    ("(http and tls", '1:14: unexpected end of query (expected ")")'),
    (
        "invalid filter",
        '1:9: unexpected token "filter" (expected an operator or the end of the query)',
    ),
    ("a == b == c", '1:8: unexpected token "==" (comparisons do not chain: join them with "and")'),
    ("x = 1", '1:3: unexpected character "=" (use == to compare)'),
    ("x === 1", '1:5: unexpected character "=" (use == to compare)'),
    ("x & y", '1:3: unexpected character "&" (use && or and)'),
    ("x | y", '1:3: unexpected character "|" (use || or or)'),
    ("x #", '1:3: unexpected character "#"'),
    (
        'request.path == "abc',
        "1:17: unterminated string (strings end on the same line with the quote they began with)",
    ),
    ("x[", '1:3: unexpected end of query (expected a key in quotes, an index or "*")'),
    ("x.", '1:3: unexpected end of query (expected a field name or "*")'),
    ("x..", "1:4: unexpected end of query (expected a field name)"),
    ("x.1", '1:3: unexpected number 1 (expected a field name or "*")'),
    ("x in [1, 2", '1:11: unexpected end of query (expected "]" or ",")'),
    ("size(x, 2", '1:10: unexpected end of query (expected ")" or ",")'),
    ('request.headers["a"]["b"', '1:25: unexpected end of query (expected "]")'),
    ('x == "a" "b"', '1:10: unexpected string "b" (expected an operator or the end of the query)'),
    ("x == 1 2", "1:8: unexpected number 2 (expected an operator or the end of the query)"),
    (")", '1:1: unexpected token ")" (expected a value)'),
    ("x and", "1:6: unexpected end of query (expected a value)"),
    ("not", "1:4: unexpected end of query (expected a value)"),
    ("request.path\n  and\n  == 5", '3:3: unexpected token "==" (expected a value)'),
    ("\n\nx ==", "3:5: unexpected end of query (expected a value)"),
    (
        "x and and",
        '1:7: unexpected keyword "and" (expected a value; a field named so is written ["and"] '
        "after its parent)",
    ),
    ("request.path[3.14] == 1", "1:14: an index must be a whole number, not 3.14"),
    ("!" * 60 + "x", "1:13: the query nests too deeply (at most 48 levels)"),
    # --- string escapes and regexes -------------------------------------------------------------
    (
        'request.path == "\\d+"',
        '1:18: unknown escape "\\d" in a string (write \\\\ for a backslash; '
        'regexes take raw bodies: r"\\d")',
    ),
    ('x == "\\u12"', "1:7: \\u needs four hex digits (\\u00e9)"),
    ('x == "\\ud800"', "1:6: a \\u escape leaves half a surrogate pair"),
    ('request.path == r"("', "1:19: invalid regex: missing ), unterminated group"),
    ('x == r"(a|(b)"', "1:8: invalid regex: missing ), unterminated group"),
    ('x == r"a)"', "1:9: invalid regex: unexpected ), no group to close"),
    ('x == r"[a-"', "1:8: invalid regex: missing ], unterminated character class"),
    ('x == r"a{2,1}"', "1:9: invalid regex: invalid repetition size: {2,1}"),
    ('x == r"ab{1001}"', "1:10: invalid regex: invalid repetition size: {1001}"),
    ('x == r"a**"', "1:9: invalid regex: bad repetition operator: **"),
    ('x == r"\\p{Nope}"', "1:8: invalid regex: invalid character class range: \\p{Nope}"),
    ('x.matches("(")', "1:11: invalid regex: missing ), unterminated group"),
    # --- what RE2 (Go's regexp, Kubeshark's engine) leaves out: said so, at the construct ------
    ('request.path == r"(a)\\1"', f"1:22: backreferences are not supported: {RE2}"),
    ('x == r"(?P<n>a)(?P=n)"', f"1:16: backreferences are not supported: {RE2}"),
    ('x == r"(?<n>a)\\k<n>"', f"1:15: backreferences are not supported: {RE2}"),
    ('x == r"a(?=b)"', f"1:9: lookahead (?= (?! is not supported: {RE2}"),
    ('x == r"(?!b)"', f"1:8: lookahead (?= (?! is not supported: {RE2}"),
    ('x == r"a(?<=b)"', f"1:9: lookbehind (?<= (?<! is not supported: {RE2}"),
    ('x == r"[(](?<!b)"', f"1:11: lookbehind (?<= (?<! is not supported: {RE2}"),
    ('x == r"(?>a+)b"', f"1:8: atomic groups (?> are not supported: {RE2}"),
    ('x == r"a++"', f"1:10: possessive quantifiers (*+ ++ ?+) are not supported: {RE2}"),
    ('x == r"\\d{2}+"', f"1:13: possessive quantifiers (*+ ++ ?+) are not supported: {RE2}"),
    ('x == r"(a)?(?(1)b|c)"', f"1:12: conditional groups (?( are not supported: {RE2}"),
    ('x == r"a(?#note)"', f"1:9: comments (?#...) are not supported: {RE2}"),
    ('x == r"a\\Z"', f"1:9: \\Z is not supported: write \\z for the end of the text ({RE2})"),
    ('x == r"\\u00e9"', f"1:8: \\u is not supported: write a character as \\x{{00e9}} ({RE2})"),
    ('x == r"(?x) a"', f'1:10: flag "x" is not supported: RE2 flags are i, m, s, U ({RE2})'),
    ('x.matches("(a)\\\\1")', f"1:14: backreferences are not supported: {RE2}"),
    (
        'x == r"\\pL{1000}"',
        "1:8: regex too large: RE2 gives one regex 4 MiB for its program and matching state",
    ),
    (
        'x == r"[\\p{L}\\p{N}]{1,100}"',
        "1:8: regexes too large: this query's regexes compile to 134303 RE2 instructions "
        "(at most 10000; this one has 134303)",
    ),
    ('r"a" == r"b"', "1:6: cannot compare two regexes"),
    ('x < r"a"', "1:5: a regex can only be compared with == or !="),
    (
        'r"a"',
        '1:1: a regex can only be compared (== or !=), listed after "in", or given to matches()',
    ),
    # --- helpers -------------------------------------------------------------------------------
    ("foo(1)", '1:1: unknown helper "foo"'),
    ("Size(x) > 1", '1:1: unknown helper "Size" (did you mean "size"?)'),
    ('x.startswith("a")', '1:3: unknown helper "startswith" (did you mean "startsWith"?)'),
    ('x.startsWith("a")\n.foo("b")', '2:2: unknown helper "foo"'),
    ("x.startsWith()", "1:3: startsWith() takes 1 argument (0 given)"),
    ('x.endsWith("a", "b")', "1:3: endsWith() takes 1 argument (2 given)"),
    ('x.contains(r"a")', '1:12: contains() takes a text (for a regex use matches(r"..."))'),
    ("x.matches(y)", '1:11: matches() takes a regex in quotes: matches(r"^/api/")'),
    ("size()", "1:1: size() takes 1 argument (0 given)"),
    ("x.size()", "1:3: size() is a function, not a method: write size(...)"),
    ('startsWith(x, "a")', "1:1: startsWith() is a method: write sel.startsWith(...)"),
    ("x.json(1)", "1:3: json() takes no arguments"),
    ("now(1)", "1:1: now() takes 0 arguments (1 given)"),
    ("timestamp > minutes()", "1:13: minutes() takes 1 argument (0 given)"),
    ('minutes("5")', "1:9: minutes() takes a number, like minutes(-5)"),
    ("weeks(x)", "1:7: weeks() takes a number, like weeks(-5)"),
    (
        'timestamp > datetime("2021-10-19")',
        '1:22: datetime() takes a date and time like "10/19/2021, 6:29:02.593 PM" (UTC)',
    ),
    (
        'datetime("2/30/2021, 6:29:02.593 PM")',
        '1:10: datetime() takes a date and time like "10/19/2021, 6:29:02.593 PM" (UTC)',
    ),
    (
        'datetime("10/19/2021, 13:29:02.593 PM")',
        '1:10: datetime() takes a date and time like "10/19/2021, 6:29:02.593 PM" (UTC)',
    ),
    ("http and limit(0)", "1:16: limit() takes a whole number of entries, like limit(100)"),
    ("limit(1.5)", "1:7: limit() takes a whole number of entries, like limit(100)"),
    ("redact()", "1:1: redact() takes at least one path"),
    (
        "redact(request.path)",
        '1:8: redact() takes paths in quotes, like redact("request.headers.Authorization")',
    ),
    ('redact("")', "1:8: redact(): bad path '' at offset 0: empty path"),
    ('redact("a", "b[")', "1:13: redact(): bad path 'b[' at offset 1: unclosed \"[\""),
    (
        'redact("a[x]")',
        "1:8: redact(): bad path 'a[x]' at offset 1: expected [N], [\"key\"] or [*]",
    ),
    # --- lists and in ------------------------------------------------------------------------------
    ("[1, 2]", '1:1: a list is only allowed on the right of "in"'),
    ("x == [1]", '1:6: a list is only allowed on the right of "in"'),
    ("[1] in x", '1:1: a list cannot be on the left of "in"'),
    ('r"a" in [1]', '1:1: a regex cannot be on the left of "in"'),
    ('x in "abc"', '1:6: "in" needs a list or a field on its right: x in ["a", "b"]'),
    ("x in [[1]]", "1:7: lists do not nest"),
    ('-"abc" == 1', "1:1: unary minus needs a number"),
]


@pytest.mark.parametrize(("query", "message"), ERRORS, ids=[q[:40] for q, _ in ERRORS])
def test_error_message_and_position(query: str, message: str) -> None:
    with pytest.raises(KflError) as info:
        compile_query(query)
    assert str(info.value) == message
    line, column, text = message.split(":", 2)
    assert (info.value.line, info.value.column) == (int(line), int(column))
    assert info.value.message == text[1:]
    assert validate(query) == (False, message)


@pytest.mark.parametrize(
    ("query", "token"),
    [
        ('src.namespace == == "x"', "=="),
        ("invalid filter", "filter"),
        ("x.startsWith()", "startsWith"),
        ("foo(1)", "foo"),
        ("request.path\n  and\n  == 5", "=="),
        ('a == 1 and\nb == r"(x"', 'r"(x"'[2:]),
        ("x\n\t.matches(y)", "y"),
    ],
)
def test_the_position_points_at_the_offending_token(query: str, token: str) -> None:
    with pytest.raises(KflError) as info:
        compile_query(query)
    line = query.split("\n")[info.value.line - 1]
    assert line[info.value.column - 1 :].startswith(token)


def test_macro_errors_point_at_the_macro_use() -> None:
    with pytest.raises(KflError) as info:
        compile_query("http and broken", {"broken": "x =="})
    assert str(info.value) == (
        '1:10: in macro "broken": 1:5: unexpected end of query (expected a value)'
    )
    with pytest.raises(KflError) as info:
        compile_query("true and\n  oops", {"oops": "nosuch(1)"})
    assert str(info.value) == '2:3: in macro "oops": 1:1: unknown helper "nosuch"'
    with pytest.raises(KflError, match="the expansion is empty"):
        compile_query("empty", {"empty": "  "})


def test_error_object_carries_its_fields() -> None:
    err = KflError(3, 7, "something")
    assert (err.line, err.column, err.message) == (3, 7, "something")
    assert str(err) == "3:7: something"
    assert isinstance(err, ValueError)
    assert err.as_dict() == {"type": "kfl", "message": "3:7: something", "line": 3, "column": 7}
    again = pickle.loads(pickle.dumps(err))
    assert (again.line, again.column, again.message) == (3, 7, "something")


def test_validate_accepts_good_queries_without_reading_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    def no_clock() -> int:
        raise AssertionError("validate() must not read the clock")

    monkeypatch.setattr(time, "time_ns", no_clock)
    assert validate("") == (True, "")
    assert validate("http and timestamp >= minutes(-5)") == (True, "")
    assert validate("custom", {"custom": "tls"}) == (True, "")


def test_overlong_and_non_text_queries_are_refused() -> None:
    with pytest.raises(
        KflError, match=r"^1:1: query too long \(70000 characters; at most 65536\)$"
    ):
        compile_query("x" * 70_000)
    with pytest.raises(TypeError):
        compile_query(b"http")  # type: ignore[arg-type]
