"""KFL regexes run on RE2, like Kubeshark's (Go regexp): linear time, RE2 syntax and meaning.

What a user relies on: a pathological pattern cannot stall a stream (it answers correctly on
long texts — RE2 guarantees time linear in the text, so no timing is asserted here), the
syntax and semantics are Go's where they differ from Python's ``re``, the fast paths and the
result memo never change an answer, and no user pattern ever reaches Python's ``re``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import re2

from kshark.kfl import KflError, compile_query, validate
from kshark.kfl.limits import MAX_QUERY_PROGRAM, MAX_REGEXES
from kshark.kfl.regex import MEMO_ENTRIES, MEMO_MAX_CHARS, compile_regex


def path_matches(pattern: str, path: str) -> bool:
    return compile_query(f"request.path == r{_quoted(pattern)}").match({"request": {"path": path}})


def _quoted(pattern: str) -> str:
    assert '"' not in pattern
    return f'"{pattern}"'


# --- catastrophic patterns: right answers on 10,000-character texts -----------------------------

LONG_A = "a" * 10_000

CATASTROPHIC: list[tuple[str, str, bool]] = [
    (r"^(a+)+$", LONG_A + "b", False),
    (r"^(a+)+$", LONG_A, True),
    (r"^(a|aa)+$", LONG_A + "!", False),
    (r"^(a|a?)+$", LONG_A + "b", False),
    (r"(a*)*b", LONG_A, False),
    (r"(a*)*b", LONG_A + "b", True),
    (r"^(x+x+)+y$", "x" * 10_000, False),
    (r"(.*a){12}c", LONG_A, False),
    (r"^(\w+\s?)*$", "word " * 2_000 + "!", False),
    (r"^([a-z0-9]+-?)+\.example$", "a-" * 5_000 + "x.exampl", False),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), CATASTROPHIC)
def test_pathological_patterns_answer_correctly_on_long_texts(
    pattern: str, text: str, expected: bool
) -> None:
    assert path_matches(pattern, text) is expected
    # The same text as an element of a list goes through the generic path.
    q = compile_query(f"request.pathSegments == r{_quoted(pattern)}")
    assert q.match({"request": {"pathSegments": ["!", text]}}) is expected


def test_the_stream_example_from_the_report() -> None:
    q = compile_query('request.path == r"^(a+)+$"')
    assert q.match({"request": {"path": "a" * 10_000 + "b"}}) is False
    assert q.match({"request": {"path": "a" * 10_000}}) is True
    assert compile_query('request.path != r"^(a+)+$"').match({"request": {"path": "aab"}}) is True


# --- RE2 semantics where Python's re differs (Go's regexp agrees with RE2 on each) -------------

SEMANTICS: list[tuple[str, str, bool]] = [
    # \d \w \s \b are ASCII, as in Go (Python's re: Unicode digits, letters, spaces).
    (r"^\d+$", "١٢٣", False),
    (r"^\d+$", "123", True),
    (r"^\w+$", "héllo", False),
    (r"^\w+$", "hello_1", True),
    (r"\s", "a\u00a0b", False),
    (r"\s", "a\vb", False),
    (r"\s", "a\tb", True),
    # Unicode classes and case folding are available explicitly.
    (r"^\pL+$", "héllo", True),
    (r"^\p{Greek}+$", "αβγ", True),
    (r"(?i)^ÉTÉ$", "été", True),
    (r"(?i)^k$", "\u212a", True),  # KELVIN SIGN folds to k, as in Go
    # . is one character (not a byte), and stops at a newline unless (?s).
    (r"^.$", "é", True),
    (r"^.$", "😀", True),
    (r"^.{3}$", "日本語", True),
    (r"^a.b$", "a\nb", False),
    (r"(?s)^a.b$", "a\nb", True),
    # $ is the end of the text (Python's re: also before a final newline).
    (r"abc$", "abc\n", False),
    (r"abc$", "abc", True),
    (r"(?m)abc$", "abc\nx", True),
    (r"abc\z", "abc", True),
    # a{,3} is literal text in RE2 and Go (Python 3.11: a{0,3}).
    (r"^a{,3}$", "a{,3}", True),
    (r"^a{,3}$", "aa", False),
    # RE2 and Go extras: \x{...}, \Q...\E, (?U) ungreedy, named groups in both spellings.
    (r"^\x{263a}$", "☺", True),
    (r"^\Qa.b(\E$", "a.b(", True),
    (r"^\Qa.b(\E$", "axb(", False),
    (r"(?U)^a+", "aaa", True),
    (r"^(?P<v>v[0-9]+)/(?<rest>.*)$", "v2/users", True),
    # Leftmost-first alternation, unanchored search, flags mid-pattern.
    (r"api|ap", "xapi", True),
    (r"a(?i)B", "ab", True),
    (r"a(?i)B", "Ab", False),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), SEMANTICS)
def test_re2_semantics(pattern: str, text: str, expected: bool) -> None:
    assert path_matches(pattern, text) is expected
    assert (re2.search(pattern, text) is not None) is expected  # the engine itself agrees


def test_the_documented_examples_still_match() -> None:
    e = {
        "request": {
            "path": "/api/v2/users",
            "url": "/api/v2/users?id=7",
            "method": "PATCH",
            "headers": {"User-Agent": "curl/8.4.0"},
        },
        "response": {"status": 404},
    }
    for query in (
        'request.path == r"^/api/v[0-9]+/"',
        'request.headers["user-agent"] == r"^curl/"',
        'response.status == r"^4"',
        'request.url.matches(r"v[0-9]+/")',
        'request.method in ["GET", r"^P"]',
        'request.path == r"(?i)^/API/"',
        'request.path == r"\\d+"',
        'request.path.matches("\\\\d+")',
    ):
        assert compile_query(query).match(e) is True, query
    for query in ('request.path == r"^/api/v[0-9]+$"', 'request.path != r"users$"'):
        assert compile_query(query).match(e) is False, query


# --- fast paths and the memo never change an answer ---------------------------------------------

TEXTS = [
    "",
    "a",
    "abc",
    "xabcx",
    "abc\n",
    "\nabc",
    "a.c",
    "a$",
    "^a",
    "/api/v1",
    "ABC",
    "日本語abc",
    "ab" * 200,
    "ac",
    "abbbc",
    "aa",
    "a{,3}",
    "x",
    "a.b",
    "a.bc",
    "/api/v12/x",
    "/api/vx",
    "$xy",
    "日本語",
    "aBc",
]
PATTERNS = [
    *("abc", "^abc", "abc$", "^abc$", "", "^", "$", "^$", r"a\.c", r"a\$", r"\^a", r"a\$$"),
    *(
        r"^/api/",
        r"^\/api\/v1$",
        "日本",
        "^日本語",
        "c$",
        "a.c",
        "^a.c$",
        "(?i)abc",
        "b+",
    ),  # Anchored with a literal start: RE2 behind a startswith check.
    *(r"^ab*", r"^ab+c", r"^ab?c", r"^a{2}", r"^a{,3}", r"^ab|^x", r"^a\.[a-z]$", r"^/api/v\d+"),
    *(r"^\$x.", r"^日本.", r"^(?i)ABC", r"^a(?i)BC$", r"^abc$a"),
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_agrees_with_re2_itself(pattern: str) -> None:
    rx = compile_regex(pattern, 1, 1)
    for text in TEXTS:
        assert rx.test(text) is (re2.search(pattern, text) is not None), (pattern, text)


def test_plain_literals_take_the_string_fast_path() -> None:
    expected = {
        "abc": ("contains", "abc"),
        "^/api/": ("prefix", "/api/"),
        r"\.json$": ("suffix", ".json"),
        "^GET$": ("equal", "GET"),
        r"^a\$": ("prefix", "a$"),
        "a.c": (None, ""),
        "(?i)abc": (None, ""),
        r"\d": (None, ""),
    }
    for pattern, (kind, literal) in expected.items():
        rx = compile_regex(pattern, 1, 1)
        assert (rx.literal_kind, rx.literal) == (kind, literal), pattern


def test_memo_keeps_answers_right_past_its_size() -> None:
    q = compile_query('request.path == r"^/v[0-9]+/[a-z]+$"')
    texts = [f"/v{i}/{'abc'[i % 3] * (i % 5 + 1)}" for i in range(MEMO_ENTRIES * 3)]
    texts += [f"/v{i}/x{i}" for i in range(50)]  # digits in the tail: no match
    want = [re2.search(r"^/v[0-9]+/[a-z]+$", t) is not None for t in texts]
    assert any(want) and not all(want)
    for _ in range(3):  # first pass fills and clears the memo; later passes hit it
        got = [q.match({"request": {"path": t}}) for t in texts]
        assert got == want


def test_long_texts_are_not_remembered_but_answered() -> None:
    q = compile_query('request.path == r"b[0-9]$"')
    long_hit = "a" * (MEMO_MAX_CHARS + 1) + "b7"
    long_miss = "a" * (MEMO_MAX_CHARS + 1) + "b"
    for _ in range(2):
        assert q.match({"request": {"path": long_hit}}) is True
        assert q.match({"request": {"path": long_miss}}) is False


def test_lone_surrogates_are_searched_as_replacement_characters() -> None:
    # Only json.loads of "\ud800" makes such text; Go's JSON decoder would hold U+FFFD there.
    e = {"x": "a\ud800b"}
    assert compile_query('x == r"^a.b$"').match(e) is True
    assert compile_query('x == r"^a\\x{fffd}b$"').match(e) is True
    assert compile_query('x == r"^ab$"').match(e) is False
    assert compile_query('x == r"b$"').match(e) is True
    assert compile_query('x == r"\\x{fffd}"').match({"x": "\udc00" * 300}) is True


# --- refusals, limits ----------------------------------------------------------------------------


def test_rejected_constructs_are_refused_by_validate_with_their_position() -> None:
    valid, message = validate('http and\n  request.path == r"^/(\\w+)/\\1$"')
    assert valid is False
    assert message == (
        "2:29: backreferences are not supported: KFL regexes are RE2, as in Kubeshark"
    )
    with pytest.raises(KflError) as info:
        compile_query('request.path == r"^/(\\w+)/\\1$"')
    assert (info.value.line, info.value.column) == (1, 27)
    assert info.value.as_dict()["type"] == "kfl"


def test_a_bad_regex_inside_a_macro_is_reported_at_the_macro_use() -> None:
    with pytest.raises(KflError) as info:
        compile_query("http and api", {"api": 'request.path == r"(?=/api)"'})
    assert str(info.value) == (
        '1:10: in macro "api": 1:19: lookahead (?= (?! is not supported: '
        "KFL regexes are RE2, as in Kubeshark"
    )


def test_regexes_per_query_are_limited_and_repeats_count_once() -> None:
    distinct = " or ".join(f'x == r"^v{i}$"' for i in range(MAX_REGEXES))
    compile_query(distinct)
    with pytest.raises(KflError) as info:
        compile_query(distinct + ' or y == r"^extra$"')
    assert info.value.message == f"too many regexes in one query (at most {MAX_REGEXES})"
    assert info.value.column == len(distinct) + 4 + 8  # the body of the extra r"..."
    # One pattern repeated (by hand or by a macro) is one regex.
    same = " or ".join('x == r"^v[0-9]+$"' for _ in range(MAX_REGEXES * 3))
    assert compile_query(same).match({"x": "v7"}) is True
    macro = {"ver": 'request.path == r"^/v[0-9]+/"'}
    assert compile_query(" and ".join(["ver"] * 100), macro).match({"request": {"path": "/v1/"}})


def test_the_regexes_of_one_query_share_a_program_budget() -> None:
    one = 'x == r".{1000}a"'  # ~8,000 RE2 instructions: "." is any UTF-8 sequence
    assert compile_query(one).match({"x": "é" * 1000 + "a"}) is True
    with pytest.raises(KflError) as info:
        compile_query(one + ' or y == r".{1000}b"')
    assert (info.value.line, info.value.column) == (1, len(one) + 12)
    assert info.value.message.startswith("regexes too large: this query's regexes compile to ")
    assert f"(at most {MAX_QUERY_PROGRAM}; this one has " in info.value.message
    # The same pattern twice is compiled once, so it counts once.
    assert compile_query(one + " or " + one.replace("x", "y")).match({"y": "b" * 1000 + "a"})


def test_no_user_pattern_reaches_pythons_re(monkeypatch: pytest.MonkeyPatch) -> None:
    compile_query('x == "warm up the parser"')  # lark's own token regexes compile here
    seen: list[Any] = []
    real_compile = re._compile  # type: ignore[attr-defined]

    def spy(pattern: Any, flags: Any) -> Any:
        seen.append(pattern)
        return real_compile(pattern, flags)

    monkeypatch.setattr(re, "_compile", spy)
    q = compile_query(
        'request.path == r"^(zq+)+$" or request.path.matches("zw[0-9]") '
        'or request.method in [r"^zx"] or request.path == r"zy"'
    )
    for path in ("/zqqq", "zw7", "none", "xzyx"):
        q.match({"request": {"path": path, "method": "zxGET"}})
    monkeypatch.undo()
    assert not [p for p in seen if isinstance(p, str) and p.startswith(("^(zq", "zw", "^zx", "zy"))]
