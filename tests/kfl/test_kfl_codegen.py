"""The compiler generates Python source; no literal, key or regex from a query can inject code.

The proof is structural: the generated source is tokenized and must contain no string or
number literal at all, and only names from a fixed vocabulary (Python keywords, the runtime's
helper names, and the compiler's own numbered names k0/v1/r2/d3). Every value from the query
therefore travels as data (a closure constant), whatever characters it holds — which the tests
below also check by matching entries that contain exactly those hostile keys and values.
"""

from __future__ import annotations

import io
import json
import keyword
import re
import tokenize

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kshark.kfl import compile_query
from kshark.kfl.fragments import RUNTIME

_GENERATED_NAME = re.compile(r"(?:k|v|r|d)[0-9]+\Z")
_ALLOWED_NAMES = {
    *keyword.kwlist,
    *RUNTIME,
    *("_factory", "match", "e", "bud", "type", "str", "int", "list", "Exception"),
    *("startswith", "endswith", "bool", "len"),
}


def assert_source_is_ours(source: str) -> None:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        assert tok.type not in (tokenize.STRING, tokenize.NUMBER), (
            f"literal {tok.string!r} in generated source"
        )
        if tok.type == tokenize.NAME:
            assert tok.string in _ALLOWED_NAMES or _GENERATED_NAME.match(tok.string), (
                f"unexpected name {tok.string!r} in generated source"
            )
        if tok.type == tokenize.OP:
            assert tok.string in set("()[]:,.=") | {"==", "!=", "<", "<=", ">", ">=", ":="}, (
                tok.string
            )


def kfl_string(text: str) -> str:
    """A KFL string literal for any text (JSON's escapes are a subset of KFL's)."""
    return json.dumps(text)


HOSTILE = [
    '"); import os; os._exit(1); ("',
    "'''; __import__('os').system('false') #",
    '"""\nraise SystemExit\n"""',
    '\\"\\\\ {0} {e} %s %(x)s',
    "\n\r\t\x00\x7f",
    "k0",
    "e[k0]",
    "}} ]] )) ;; #",
    "名前 😀 \u2028 \ufeff",
]


def test_hostile_keys_values_and_regexes_stay_data() -> None:
    for text in HOSTILE:
        key = kfl_string(text)
        entry = {"request": {"headers": {text: text}, text: [text]}, text: {"x": text}}
        queries = [
            f"request[{key}] == {key}",
            f"request.headers[{key}] == {key}",
            f"{key} in request.headers",
            f"request[{key}].contains({key})",
            f"request[{key}].matches({kfl_string(re.escape(text))})",
            f"request[{key}] in [{key}, 'x']",
            f"request.headers.*.startsWith({key}) and request.headers.*.endsWith({key})",
            f"size(request[{key}]) == 1 and redact({kfl_string('..' + re.sub(r'[.[]', '', text))})",
        ]
        for query in queries:
            q = compile_query(query, {"m": f"request[{key}] == {key}"})
            assert_source_is_ours(q.source)
            assert q.match(entry) is True, query
            assert text not in q.source or text in ("k0", "e[k0]")  # those two are our own names
        assert compile_query("m", {"m": f"request[{key}] == {key}"}).match(entry) is True


def test_regex_bodies_with_quotes_and_code_stay_data() -> None:
    query = r'request.path == r"\"\)\]; import os #" or request.path == r"^a\{0\}$"'
    q = compile_query(query)
    assert_source_is_ours(q.source)
    assert q.match({"request": {"path": '")]; import os #'}}) is True
    assert q.match({"request": {"path": "a{0}"}}) is True
    assert q.match({"request": {"path": "import os"}}) is False


def test_generated_source_for_a_large_query_is_ours() -> None:
    query = (
        'http and request.method in ["GET", "HEAD", r"^P"] and !(response.status >= 500) '
        'and request.headers["User-Agent"] == r"(?i)curl/\\d" and src.ip != "10.0.0.1" '
        "and response.content.text.json().items[0].id == 7 or response.content.text.json()..x "
        "or size(request.queryString.*) > 2 and timestamp >= minutes(-5) and tls == false "
        "or -elapsedTime < -100 and request.pathSegments[1] == 3.5 and nil == error "
        'or response.content.text.xml().a.b["@c"] == "d" and limit(10) and redact("..password")'
    )
    assert_source_is_ours(compile_query(query, now_ms=0).source)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(max_size=30), value=st.text(max_size=30))
def test_any_text_as_key_or_value_is_data(key: str, value: str) -> None:
    k, v = kfl_string(key), kfl_string(value)
    pattern = kfl_string(re.escape(value))
    q = compile_query(f"a[{k}] == {v} and a[{k}].startsWith({v}) and a[{k}].matches({pattern})")
    assert_source_is_ours(q.source)
    assert q.match({"a": {key: value}}) is True
    assert q.match({"a": {key: value + "!"}}) is False  # == fails, the other two still hold
