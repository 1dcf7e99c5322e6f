"""KFL semantics, row by row of ../shared/KFL.md: (query, entry, expected).

Rows that deliberately differ from Kubeshark carry ``kubeshark=``: what the original does with
the same text, so that each difference is stated where it is tested. Entries are ENTRY.md-shaped
(tests/support/kfl_samples.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kshark.kfl import compile_query
from tests.support.kfl_samples import ENTRIES

# The example entry's timestamp is 1703019067482; "now" is fixed 2 s later.
NOW = 1703019067482 + 2000


@dataclass(frozen=True)
class Case:
    query: str
    entry: str
    expected: bool
    kubeshark: str = ""  # set on Deviations rows: the original's behaviour for this text


C = Case
CASES: list[Case] = [
    # --- syntax: empty query, keywords, both operator spellings, precedence -------------------
    C("", "get", True),
    C("   \n\t ", "get", True),
    C("", "empty", True),
    C("true", "empty", True),
    C("false", "empty", False),
    C("true and false", "empty", False),
    C("true && true", "empty", True),
    C("false or true", "empty", True),
    C("false || false", "empty", False),
    C("not false", "empty", True),
    C("!true", "empty", False),
    C("not not true", "empty", True),
    C("!!false", "empty", False),
    C("(false or true) and true", "empty", True),
    C("false or true and false", "empty", False),
    C(
        "false and false or true",
        "empty",
        True,
        kubeshark="and/or share one level grouped right: false and (false or true) → false",
    ),
    C(
        "http and response.status == 500 or dns",
        "dns",
        True,
        kubeshark="http and (status == 500 or dns): never returns DNS entries",
    ),
    C("http and response.status == 500 or dns", "get", False),
    C("http and response.status == 500 or dns", "post", True),
    C("http\n  and response.status == 200\n  and request.method == 'GET'", "get", True),
    C("((((http))))", "get", True),
    C("!(http)", "get", False),
    C(
        "not response.status == 200",
        "get",
        False,
        kubeshark="! binds tighter than ==: (!status) == 200",
    ),
    C(
        '!request.headers["User-Agent"] == "curl/8.4.0"',
        "post",
        False,
        kubeshark="(!header) == text; ! is a no-op on strings, so this matches when EQUAL",
    ),
    C('!request.headers["User-Agent"] == "curl/8.4.0"', "get", True),
    C("TRUE", "empty", False),  # keywords are case-sensitive: TRUE is a (missing) field
    C("null == nil", "empty", True),
    # --- selectors ------------------------------------------------------------------------------
    C('request.path == "/catalogue"', "get", True),
    C('src.ip == "10.0.53.77"', "get", True),
    C('node.name == "ip-10-0-41-65.ec2.internal"', "get", True),
    C('request.headers["Content-Type"] == "application/json"', "post", True),
    C('request.pathSegments[0] == "api"', "post", True),
    C('request.pathSegments[2] == "orders"', "post", True),
    C('request.pathSegments[3] == "x"', "post", False),
    C("!request.pathSegments[3]", "post", True),
    C('request.path[0] == "/"', "get", False),  # an index applies to lists, not to text
    C('request.queryString.* == "blue"', "get", True),
    C('request.queryString.* == "a"', "post", True),  # repeated param: a list inside
    C('request.queryString.item == "b"', "post", True),
    C(
        'request.queryString[*] == "5"',
        "get",
        True,
        kubeshark='[*] is a key literally named "*": never matches',
    ),
    C("response.content.size > 50", "get", True),  # a field named like the size() helper
    C('request["httpVersion"] == "HTTP/1.1"', "get", True),
    C('protocol.ports[1] == "443"', "get", True),
    C('protocol.ports == "8080"', "get", True),
    C('request.pathSegments.* == "v1"', "post", True),
    C("objs.*.x > 2", "car", True),
    C("objs.*.x > 3", "car", False),
    C("empty.*", "car", False),  # no child: missing
    C("!empty.*", "car", True),
    C('request..Host == "catalogue"', "get", True),
    C('similar..name == "Chevrolet"', "car", True),
    C("request.headers.Host.x == 1", "get", False),
    C("id == similar.id", "car", False),
    C("model == similar.model", "car", True),
    C("brand.name == similar.brand.name", "car", True),
    C("dst.name == src.name", "get", True),
    C('request.headers.Accept == request.headers["Accept"]', "get", True),
    C("request.in == 1", "get", False),  # a keyword after a dot is just a key
    # --- header keys: case-insensitive under request/response.headers -------------------------
    C('request.headers["content-type"] == "application/json"', "post", True),
    C('request.headers["CONTENT-TYPE"] == "application/json"', "post", True),
    C('request.headers.host == "catalogue"', "get", True),
    C("response.headers['content-length'] == 77", "get", True),
    C('request.headers["User-Agent"] == "grpc-go/1.5"', "h2", True),
    C('request.headers[":path"] == "/catalogue"', "h2", True),
    C('request.cookies["SESSION"] == "abc123"', "post", False),  # cookies keep their case
    C('request.cookies["session"] == "abc123"', "post", True),
    C('"authorization" in request.headers', "post", True),
    C('"x-missing" in request.headers', "post", False),
    C('request.headers["X-Missing"]', "post", False),
    C('!request.headers["X-Missing"]', "post", True),
    C('response.headers.* == "a, b"', "post", True),
    C('request.headers.cookie.contains("session")', "post", True),
    # --- missing fields -------------------------------------------------------------------------
    C("missing", "get", False),
    C("!missing", "get", True),
    C("missing == 1", "get", False),
    C("missing != 1", "get", False),
    C("missing == nil", "get", False),
    C("missing != nil", "get", False),
    C(
        "missing == 1 or true",
        "get",
        True,
        kubeshark="a missing field collapses the whole enclosing group: false",
    ),
    C("(missing == 1) or true", "get", True),
    C("true and !(missing == 1)", "get", True),
    C("response.status == 200", "noresp", False),
    C("response.status != 200", "noresp", False),
    C("!(response.status == 200)", "noresp", True),
    C('response.status >= 400 or error.type == "pair-not-found"', "noresp", True),
    C("missing < 1", "get", False),
    C("missing >= 1", "get", False),
    C("missing in [1, 2]", "get", False),
    C(
        'missing.startsWith("fa")',
        "get",
        False,
        kubeshark='a helper on a missing path sees the text "false": true',
    ),
    C('missing.contains("")', "get", False),
    C("size(missing) == 0", "get", False),
    C("-missing < 0", "get", False),
    # --- == and != with coercion ---------------------------------------------------------------
    C("dst.port == 80", "get", True),
    C('dst.port == "80"', "get", True),
    C('response.status == "200"', "get", True),
    C("response.status == 200.0", "get", True),
    C("response.status != 200", "get", False),
    C('response.status != "404"', "get", True),
    C('elapsedTime == "2"', "get", True),
    C("numText == 7", "car", True),
    C('numText == "7"', "car", True),  # two numeric strings compare as numbers
    C('model == "Camaro"', "car", True),
    C('model == "camaro"', "car", False),
    C("tls == false", "get", True),
    C('tls == "false"', "get", True),
    C("tls == 0", "get", False),  # a bool is not a number
    C("outgoing == true", "post", True),
    C("error == nil", "get", True),
    C("error != nil", "get", False),
    C("error != nil", "noresp", True),
    C("nothing == nil", "car", True),
    C("nothing == null", "car", True),
    C(
        'nothing == "null"',
        "car",
        False,
        kubeshark='nil compares as the text "null", so JSON null == "null" is true',
    ),
    C("nothing != nil", "car", False),
    C("nothing == 0", "car", False),
    C("nothing == false", "car", False),
    C("src.pod == null", "get", True),
    C(
        "timestamp == 1703019067482",
        "get",
        True,
        kubeshark="numbers compare through %g, 6 significant digits: never true",
    ),
    C("big == 1678675066172", "car", True),
    C("big == 1678675066173", "car", False),
    C("float == 3.14", "car", True),
    C(
        "float == 3.1400001",
        "car",
        False,
        kubeshark="3.1400001 and 3.14 print the same with 6 digits: true",
    ),
    C(
        'brand == ""',
        "car",
        False,
        kubeshark='an object\'s string form is "": true',
    ),
    C("brand == similar.brand", "car", True),
    C('"abc" == "abc"', "empty", True),
    C("5 == 5", "empty", True),
    C("3 == 5", "empty", False),
    C('"5" == 5', "empty", True),
    C('request.path == "/catalogue/"', "get", False),
    C('request.url == "/catalogue?size=5&tags=blue"', "get", True),
    C("request.pathSegments == request.pathSegments", "post", True),
    C('request.pathSegments != "api"', "post", False),  # list != x: true only if none equals
    C('request.pathSegments != "v2"', "post", True),
    C('request.pathSegments != r"^v"', "post", False),
    # --- regexes ----------------------------------------------------------------------------------
    C('request.path == r"^/cat"', "get", True),
    C('r"^/cat" == request.path', "get", True),
    C('request.path != r"^/cat"', "get", False),
    C('request.path != r"^/dog"', "get", True),
    C('response.status == r"^2"', "get", True),
    C('response.status == r"4.*"', "post", False),
    C('response.status == r"0"', "post", True),  # unanchored: anywhere in "500"
    C(
        'request.headers["User-Agent"] == r"/\\d+\\.\\d+$"',
        "get",
        True,
        kubeshark="\\d is an invalid escape in a string: a syntax error",
    ),
    C("request.path == r'(?i)^/CATALOGUE$'", "get", True),
    C('request.pathSegments == r"^v[0-9]$"', "post", True),
    C('tls == r"^f"', "get", True),
    C('nothing == r"null"', "car", False),
    C('missing != r"x"', "get", False),
    C('request.path.matches("^/cat")', "get", True),
    C('request.path.matches(r"^/dog")', "get", False),
    C('request.url.matches("v\\\\d/")', "post", True),  # "\\d" in a plain string is \d
    C(
        'escaped == "say \\"hi\\"\\n\\tnow\\\\"',
        "car",
        True,
        kubeshark="strings are not unescaped: the value keeps its backslashes",
    ),
    C("escaped.contains('\"hi\"')", "car", True),
    C(
        "model == 'Camaro'",
        "car",
        True,
        kubeshark="single-quoted text keeps its apostrophes: 'Camaro' never matches",
    ),
    C('escaped.endsWith("\\u006eow\\\\")', "car", True),
    # --- ordering ---------------------------------------------------------------------------------
    C("response.status > 199", "get", True),
    C("response.status >= 200", "get", True),
    C("response.status < 200", "get", False),
    C("response.status <= 200", "get", True),
    C('response.status > "199"', "get", True),
    C("dst.port < 1024", "get", True),
    C("src.port > 50000", "get", True),
    C(
        'request.method < "HEAD"',
        "get",
        True,
        kubeshark="ordering converts text to numbers (0): false",
    ),
    C('request.method > "HEAD"', "get", False),
    C("request.path > 5", "get", False),  # text against a number: false
    C("tls < 1", "get", False),
    C("path.* > 2", "car", True),
    C("path > 4", "car", False),
    C("path.* < 0", "car", False),
    C("path >= neg", "car", True),
    C("neg.* > path.*", "car", False),
    C("minus < 0", "car", True),
    C(
        "-minus > 0",
        "car",
        True,
        kubeshark="unary minus only negates float literals; a JSON int passes through",
    ),
    C("-300 < 42", "empty", True),
    C("-float < -3", "car", True),
    C("nothing < 1", "car", False),
    C("timestamp >= 1703019067482 and timestamp < 1703019067483", "get", True),
    # --- lists and in ----------------------------------------------------------------------------
    C('request.method in ["GET", "POST"]', "get", True),
    C('request.method in ["GET", "POST"]', "post", True),
    C('request.method in ["GET", "POST"]', "h10", False),
    C("response.status in [200, 201]", "get", True),
    C('response.status in ["200"]', "get", True),
    C("dst.port in [80, 443]", "get", True),
    C("dst.port in [80, 443]", "h10", True),
    C("request.method in []", "get", False),
    C('request.path in [r"^/cat", r"^/dog"]', "get", True),
    C('request.method in [src.name, "GET"]', "get", True),
    C('"catalogue" in request.pathSegments', "get", True),
    C('"v2" in request.pathSegments', "post", False),
    C('request.pathSegments in ["v1"]', "post", True),
    C("nothing in [nil]", "car", True),
    C('"a" in nested', "car", True),
    C("1 in path", "car", True),
    C("4 in path", "car", False),
    C('"Host" in request.headers', "get", True),
    C('"Host" in request.cookies', "get", False),
    C('"name" in brand', "car", True),
    C('"Name" in brand', "car", False),  # only header objects fold case
    C('request.method in ["get"]', "get", False),
    # --- truthiness -------------------------------------------------------------------------------
    C("tls", "get", False),
    C("tls", "h10", True),
    C("request.path", "get", True),
    C("emptyText", "car", False),
    C("zero", "car", False),
    C("minus", "car", True, kubeshark="a number is truthy only when > 0: false"),
    C("float", "car", True),
    C("brand", "car", True, kubeshark="an object is never truthy: false"),
    C("emptyObj", "car", False),
    C("empty", "car", False),
    C("path", "car", True),
    C("nothing", "car", False),
    C("response", "noresp", False),
    C("response", "get", True),
    C('"x"', "empty", True),
    C('""', "empty", False),
    C("0", "empty", False),
    C("-1", "empty", True),
    C("nil", "empty", False),
    # --- string helpers ---------------------------------------------------------------------------
    C('request.path.startsWith("/cat")', "get", True),
    C('request.path.startsWith("cat")', "get", False),
    C('request.path.endsWith("logue")', "get", True),
    C('request.path.contains("talog")', "get", True),
    C('request.path.contains("dog")', "get", False),
    C('response.status.startsWith("2")', "get", True),
    C('request.pathSegments.startsWith("ord")', "post", True),
    C('request.queryString.item.contains("b")', "post", True),
    C('brand.startsWith("")', "car", False),  # an object has no string form
    C("request.url.startsWith(request.path)", "get", True),
    C('tls.startsWith("f")', "get", True),
    C('request.path.startsWith("/cat") and request.path.endsWith("ue")', "get", True),
    # --- json() / xml() ---------------------------------------------------------------------------
    C('response.content.text.json()[0].name == "Colourful"', "get", True),
    C("response.content.text.json()[0].price == 18", "get", True),
    C('response.content.text.json()[0].id.startsWith("3395")', "get", True),
    C('response.content.text.json()[1].name == "Colourful"', "get", False),
    C('request.postData.text.json().order.items[1].sku == "Y-9"', "post", True),
    C("request.postData.text.json().order.items.*.qty > 1", "post", True),
    C('request.postData.text.json()..password == "s3cret"', "post", True),
    C('request.postData.text.json().order.id == "7"', "post", True),
    C('request.postData.text.json()["password"] == "hunter2"', "post", True),
    C("response.content.text.json() == nil", "post", False),  # XML body: missing, not null
    C("!response.content.text.json()", "post", True),
    C(
        'response.content.text.json().missing != "x"',
        "get",
        False,
        kubeshark="a missing path under json() is the value false, so != is true",
    ),
    C(
        'response.content.text.xml().bookstore.book[1].title == "Harry Potter"',
        "post",
        True,
    ),
    C(
        'response.content.text.xml().bookstore.book[1].title == "Lord of the Rings"',
        "post",
        False,
    ),
    C('response.content.text.xml().bookstore.book[0].title["@lang"] == "en"', "post", True),
    C('response.content.text.xml().bookstore.book[0]["@category"] == "cooking"', "post", True),
    C("response.content.text.xml().bookstore.book.*.price > 29.99", "post", True),
    C("response.content.text.xml().bookstore.book.*.price > 30", "post", False),
    C('response.content.text.xml()..author == "J K. Rowling"', "post", True),
    C("!response.content.text.xml()", "get", True),  # a JSON body is not XML
    # the same decoded body used twice is decoded once per entry, even if first skipped
    C(
        'response.content.text.json()[0].name == "Colourful" '
        "and response.content.text.json()[0].price == 18",
        "get",
        True,
    ),
    C(
        "false and response.content.text.json()[0].price == 1 "
        "or response.content.text.json()[0].price == 18",
        "get",
        True,
    ),
    C(
        'response.content.text.xml().bookstore.book[0].title == "Everyday Italian" '
        'and response.content.text.xml().bookstore.book[1].title == "Harry Potter"',
        "post",
        True,
    ),
    # --- size, datetime, now, seconds…weeks ------------------------------------------------------
    C("size(request.pathSegments) == 3", "post", True),
    C("size(request.path) == 10", "get", True),
    C("size(request.headers) == 3", "get", True),
    C("size(tls) == 0", "get", False),
    C("size(request.queryString.*) == 2", "get", True),
    C('timestamp >= datetime("12/19/2023, 8:51:07.482 PM")', "get", True),
    C('timestamp > datetime("12/19/2023, 8:51:07.482 PM")', "get", False),
    C('timestamp < datetime("12/19/2023, 8:51:07.483 PM")', "get", True),
    C('timestamp > datetime("12/19/2023, 8:51:07 PM")', "get", True),
    C('datetime("1/1/1970, 12:00:00.000 AM") == 0', "empty", True),
    C('datetime("1/1/1970, 12:00:00.000 PM") == 43200000', "empty", True),
    C("timestamp <= now()", "get", True),
    C("timestamp >= now()", "get", False),
    C("timestamp >= seconds(-5)", "get", True),
    C("timestamp >= seconds(-1)", "get", False),
    C("timestamp >= minutes(-5)", "get", True),
    C("timestamp <= hours(1)", "get", True),
    C("timestamp >= days(-1)", "get", True),
    C("timestamp >= weeks(-1)", "get", True),
    C("timestamp > minutes(0.5)", "get", False),
    # --- limit and redact: always true; they act on the stream, not on the test ------------------
    C("http and limit(100)", "get", True),
    C("limit(5) or false", "empty", True),
    C('redact("request.headers.Authorization")', "post", True),
    C(
        'redact("id") and id == 114905',
        "car",
        True,
        kubeshark="redact() rewrites the record before later clauses run: false",
    ),
    # --- macros -----------------------------------------------------------------------------------
    C("http", "get", True),
    C("http", "dns", False),
    C("http2", "h2", True),
    C("http2", "get", False),
    C("dns", "dns", True),
    C("udp", "dns", True),
    C("tcp", "get", True),
    C("grpc or gql or amqp or kafka or redis", "get", False),
    C("tls", "h10", True),
    C("!dns and !udp", "get", True),
    C(
        'request.httpVersion == "HTTP/1.1"',
        "get",
        True,
        kubeshark='macros replace substrings: request.(protocol.abbr == "HTTP")Version, an error',
    ),
    C('protocol.macro == "http"', "get", True),  # "http" in a string is text
    C("http.x", "get", False),  # a macro name followed by a step is a field path
    # --- normal scoping after ["key"]. and json(). ----------------------------------------------
    C(
        'request.headers["User-Agent"].startsWith("curl") and request.method == "POST"',
        "post",
        True,
        kubeshark="the text after [..]. is a sub-expression under that key: always false",
    ),
    C(
        'response.content.text.json()[0].price == 18 and request.method == "GET"',
        "get",
        True,
        kubeshark="the text after json(). is evaluated inside the body: request.method missing",
    ),
]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 150
    assert sum(1 for c in CASES if c.kubeshark) >= 8


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{c.query[:60]!r}@{c.entry}" + ("-DEVIATION" if c.kubeshark else "") for c in CASES],
)
def test_case(case: Case) -> None:
    entry = ENTRIES[case.entry]()
    got = compile_query(case.query, now_ms=NOW).match(entry)
    assert got is case.expected, case.kubeshark or case.query


def test_limit_is_reported_and_the_smallest_wins() -> None:
    assert compile_query("http and limit(100)").limit == 100
    assert compile_query("limit(100) and http and limit(7)").limit == 7
    assert compile_query("http").limit is None
    # Kubeshark: limit(n) counts per worker. kshark: the Query carries one n for the whole
    # stream; the hub and the worker both stop after n entries sent on that stream.
    assert compile_query("not limit(3)").limit == 3


def test_match_does_not_modify_the_entry() -> None:
    for make in ENTRIES.values():
        entry = make()
        before = make()
        compile_query('redact("..name") and request.path.json().x == 1 or tls').match(entry)
        assert entry == before


def test_deviation_a_bad_query_is_reported_with_its_position() -> None:
    # Kubeshark: a bad query closed the stream silently (the worker only logged it). kshark:
    # compiling raises KflError, whose as_dict() is the error frame body the server sends
    # before closing with 1008.
    from kshark.kfl import KflError

    try:
        compile_query("http and response.status == == 500")
    except KflError as err:
        assert err.as_dict() == {
            "type": "kfl",
            "message": '1:29: unexpected token "==" (expected a value)',
            "line": 1,
            "column": 29,
        }
    else:
        raise AssertionError("a bad query compiled")
