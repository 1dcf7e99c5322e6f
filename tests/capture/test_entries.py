"""capture.entries: the ENTRY.md shape, field by field, and the summary form."""

from __future__ import annotations

import base64
import gzip
import json
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

from capture.entries import Identity, build_entry, summarize
from capture.entry_fields import canonical_header, rfc3339_ns
from capture.http1 import Exchange, Message
from capture.reassembly import Opened

ENTRY_MD = Path(__file__).resolve().parents[2].parent / "shared" / "ENTRY.md"
T0 = 1703019067482113205  # 2023-12-19T20:51:07.482113205Z
IDENT = Identity(
    "10.0.41.65:30001", "10.0.41.65", "ip-10-0-41-65.ec2.internal", frozenset({"10.0.41.65"})
)
CONN = Opened(
    7, T0, 4, socket.inet_aton("10.0.53.77"), 51846, socket.inet_aton("10.0.53.101"), 80, True
)
MAX = 10 << 20


def request(
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    method: str = "GET",
    version: str = "HTTP/1.1",
    ts: int = T0,
    truncated: bool = False,
) -> Message:
    return Message(
        method,
        target,
        None,
        None,
        version,
        headers or [],
        body,
        len(body),
        truncated,
        100,
        ts,
        ts,
        None,
    )


def response(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    reason: str = "OK",
    version: str = "HTTP/1.1",
    ts: int = T0 + 1_000_000,
    truncated: bool = False,
) -> Message:
    return Message(
        None,
        None,
        status,
        reason,
        version,
        headers or [],
        body,
        len(body),
        truncated,
        200,
        ts,
        ts,
        None,
    )


def entry(
    ex: Exchange, conn: Any = CONN, client_side: int = 0, ident: Identity = IDENT
) -> dict[str, Any]:
    return build_entry(ex, conn, client_side, ident, 20017, 3, MAX)


def test_the_entry_md_example_is_reproduced_exactly() -> None:
    text = ENTRY_MD.read_text()
    want = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    body = b'[{"id":"3395a43e-2d88-40de-b95f-e00e1502085b","name":"Colourful","price":18}]'
    req = Message(
        "GET",
        "/catalogue?size=5&tags=blue",
        None,
        None,
        "HTTP/1.1",
        [
            ("Host", "catalogue"),
            ("User-Agent", "Go-http-client/1.1"),
            ("Accept", "application/json"),
        ],
        b"",
        0,
        False,
        152,
        T0,
        T0,
        None,
    )
    resp = Message(
        None,
        None,
        200,
        "OK",
        "HTTP/1.1",
        [("Content-Length", "77"), ("Content-Type", "application/json; charset=utf-8")],
        body,
        77,
        False,
        237,
        T0 + 2_400_000,
        T0 + 2_500_000,
        None,
    )
    got = build_entry(Exchange(req, resp, None), CONN, 0, IDENT, 20017, 0, MAX)
    dump = orjson.OPT_SORT_KEYS
    assert orjson.dumps(got, option=dump) == orjson.dumps(want, option=dump)


def test_identity_fields() -> None:
    e = entry(Exchange(request(), response(), None))
    assert e["stream"] == "000000020017.pcap"
    assert e["index"] == 3
    assert e["id"] == "10.0.41.65:30001/000000020017.pcap-3"
    assert e["entryFile"] == "000000020017_pcap-3_entry.json"
    assert e["node"] == {"ip": "10.0.41.65", "name": "ip-10-0-41-65.ec2.internal"}
    assert (e["tls"], e["passed"], e["failed"], e["record"], e["error"]) == (
        False,
        False,
        False,
        "",
        None,
    )


def test_client_side_one_swaps_src_and_dst() -> None:
    e = entry(Exchange(request(), response(), None), client_side=1)
    assert (e["src"]["ip"], e["src"]["port"]) == ("10.0.53.101", "80")
    assert (e["dst"]["ip"], e["dst"]["port"]) == ("10.0.53.77", "51846")
    assert e["dst"] == {
        "endpointSlice": None,
        "ip": "10.0.53.77",
        "name": "",
        "namespace": "",
        "pod": None,
        "port": "51846",
        "service": None,
    }


def test_outgoing_when_the_client_is_a_local_address() -> None:
    local = Identity("w:1", "10.0.53.77", "n", frozenset({"10.0.53.77"}))
    assert entry(Exchange(request(), response(), None), ident=local)["outgoing"] is True
    assert entry(Exchange(request(), response(), None))["outgoing"] is False


def test_ipv6_and_http10_protocol_variants() -> None:
    v6 = Opened(
        1,
        T0,
        6,
        socket.inet_pton(socket.AF_INET6, "fd00::1"),
        40000,
        socket.inet_pton(socket.AF_INET6, "fd00::2"),
        8000,
        True,
    )
    e = entry(Exchange(request(version="HTTP/1.0"), response(version="HTTP/1.0"), None), conn=v6)
    assert e["src"]["ip"] == "fd00::1"
    assert e["protocol"]["layer3"] == "ipv6"
    assert e["protocol"]["version"] == "1.0"
    assert e["protocol"]["longName"] == "Hypertext Transfer Protocol -- HTTP/1.0"
    assert e["protocol"]["referenceLink"] == "https://datatracker.ietf.org/doc/html/rfc1945"
    assert e["request"]["httpVersion"] == "HTTP/1.0"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("content-type", "Content-Type"),
        ("X-REQUEST-ID", "X-Request-Id"),
        ("www-authenticate", "Www-Authenticate"),
        ("x--y", "X--Y"),
        ("bad header", "bad header"),  # Go leaves a name with invalid bytes alone
        ("näme", "näme"),
    ],
)
def test_canonical_header_names_like_go(raw: str, canonical: str) -> None:
    assert canonical_header(raw) == canonical


def test_headers_join_repeats_and_cookies_come_from_each_line() -> None:
    req = request(
        headers=[("cookie", 'a=1; b="two"'), ("Cookie", "c=3"), ("accept", "x"), ("Accept", "y")]
    )
    resp = response(
        headers=[
            ("Set-Cookie", "s=1; Path=/; Expires=Wed, 09 Jun 2021 10:18:14 GMT"),
            ("set-cookie", 'id="abc"; HttpOnly'),
            ("Set-Cookie", "novalue"),
        ]
    )
    e = entry(Exchange(req, resp, None))
    assert e["request"]["headers"] == {"Cookie": 'a=1; b="two", c=3', "Accept": "x, y"}
    assert e["request"]["cookies"] == {"a": "1", "b": "two", "c": "3"}
    assert e["response"]["headers"]["Set-Cookie"] == (
        's=1; Path=/; Expires=Wed, 09 Jun 2021 10:18:14 GMT, id="abc"; HttpOnly, novalue'
    )
    assert e["response"]["cookies"] == {"s": "1", "id": "abc"}


def test_query_string_like_go_parse_query() -> None:
    e = entry(Exchange(request("/p?a=1&a=2&b=%20x+y&c&bad=%zz&s=1;2&&u=%C3%A9"), response(), None))
    assert e["request"]["queryString"] == {"a": ["1", "2"], "b": " x y", "c": "", "u": "é"}
    assert e["request"]["path"] == "/p"
    assert (
        e["request"]["url"]
        == e["request"]["targetUri"]
        == "/p?a=1&a=2&b=%20x+y&c&bad=%zz&s=1;2&&u=%C3%A9"
    )


@pytest.mark.parametrize(
    ("target", "path", "segments"),
    [
        ("/", "/", [""]),
        ("/a/b?q=1", "/a/b", ["a", "b"]),
        ("/a/b/", "/a/b/", ["a", "b", ""]),
        ("*", "*", ["*"]),
        ("http://proxy.example/x/y?z", "/x/y", ["x", "y"]),
    ],
)
def test_path_and_segments(target: str, path: str, segments: list[str]) -> None:
    e = entry(Exchange(request(target), response(), None))
    assert (e["request"]["path"], e["request"]["pathSegments"]) == (path, segments)


def test_post_data_text_form_and_binary() -> None:
    form = request(
        method="POST",
        headers=[("Content-Type", "Application/X-WWW-Form-Urlencoded; charset=utf-8")],
        body=b"a=1&b=x+y&a=%41",
    )
    e = entry(Exchange(form, response(), None))
    assert e["request"]["bodySize"] == 15
    assert e["request"]["postData"] == {
        "mimeType": "application/x-www-form-urlencoded",
        "text": "a=1&b=x+y&a=%41",
        "params": [
            {"name": "a", "value": "1"},
            {"name": "b", "value": "x y"},
            {"name": "a", "value": "A"},
        ],
    }
    binary = request(
        method="PUT", headers=[("Content-Type", "application/octet-stream")], body=b"\xff\x00\x81"
    )
    post = entry(Exchange(binary, response(), None))["request"]["postData"]
    assert post == {
        "mimeType": "application/octet-stream",
        "text": "/wCB",
        "encoding": "base64",
        "params": [],
    }
    gz = request(
        method="POST", headers=[("Content-Encoding", "gzip")], body=gzip.compress(b'{"k":1}')
    )
    assert entry(Exchange(gz, response(), None))["request"]["postData"]["text"] == '{"k":1}'
    assert "postData" not in entry(Exchange(request(), response(), None))["request"]


def test_response_content_is_decoded_and_base64() -> None:
    raw = b"<html>" + b"x" * 500 + b"</html>"
    resp = response(
        headers=[("Content-Type", "text/html; charset=UTF-8"), ("Content-Encoding", "gzip")],
        body=gzip.compress(raw),
    )
    e = entry(Exchange(request(), resp, None))["response"]
    assert e["bodySize"] == len(resp.body)
    assert e["content"] == {
        "encoding": "base64",
        "mimeType": "text/html; charset=UTF-8",
        "size": len(raw),
        "text": base64.b64encode(raw).decode(),
    }
    assert (e["status"], e["statusText"], e["headersSize"], e["redirectURL"]) == (200, "OK", -1, "")


def test_empty_body_leaves_text_out_and_redirect_url_for_3xx_only() -> None:
    e = entry(Exchange(request(), response(301, [("Location", "/new")], reason="Moved"), None))
    assert e["response"]["content"] == {"encoding": "base64", "mimeType": "", "size": 0}
    assert e["response"]["redirectURL"] == "/new"
    ok = entry(Exchange(request(), response(201, [("Location", "/made")]), None))
    assert ok["response"]["redirectURL"] == ""


def test_undecodable_content_is_raw_and_flagged() -> None:
    resp = response(
        headers=[("Content-Encoding", "gzip")], body=b"\x1f\x8b\x08\x00garbage-bytes-here"
    )
    e = entry(Exchange(request(), resp, None))
    assert base64.b64decode(e["response"]["content"]["text"]) == resp.body
    assert e["error"]["type"] == "dissection"
    assert e["error"]["msg"].startswith("response content not decoded: corrupt gzip stream")


def test_content_cut_by_max_body_decodes_as_far_as_it_goes_without_error() -> None:
    raw = bytes(range(256)) * 200
    wire = gzip.compress(raw, 1)
    resp = response(
        headers=[("Content-Encoding", "gzip")], body=wire[: len(wire) // 2], truncated=True
    )
    e = entry(Exchange(request(), resp, None))
    text = base64.b64decode(e["response"]["content"]["text"])
    assert 0 < len(text) < len(raw) and raw.startswith(text)
    assert e["error"] is None


def test_missing_halves_and_exchange_errors() -> None:
    lonely = entry(Exchange(request(), None, ("pair-not-found", "no response seen")))
    assert lonely["response"] == {}
    assert lonely["responseSize"] == 0
    assert lonely["elapsedTime"] == 0
    assert lonely["error"] == {"type": "pair-not-found", "msg": "no response seen"}
    orphan = entry(Exchange(None, response(ts=T0), ("pair-not-found", "no request")))
    assert orphan["request"] == {}
    assert orphan["requestSize"] == 0
    assert orphan["timestamp"] == T0 // 1_000_000  # the response's time when there is no request


@pytest.mark.parametrize(
    ("delta_ns", "elapsed"), [(2_499_999, 2), (2_500_000, 3), (0, 0), (-5_000_000, 0)]
)
def test_elapsed_time_is_rounded_ms_never_negative(delta_ns: int, elapsed: int) -> None:
    e = entry(Exchange(request(ts=T0), response(ts=T0 + delta_ns), None))
    assert e["elapsedTime"] == elapsed


def test_timestamps() -> None:
    e = entry(Exchange(request(ts=T0), response(), None))
    assert (e["timestamp"], e["startTime"]) == (1703019067482, "2023-12-19T20:51:07.482113205Z")
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_ns(951782400_000000001) == "2000-02-29T00:00:00.000000001Z"


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (-(1 << 70), "0001-01-01T00:00:00.000000000Z"),
        ((1 << 64) * 1_000_000_000, "9999-12-31T23:59:59.999999999Z"),
        (253402300799_999999999, "9999-12-31T23:59:59.999999999Z"),
    ],
)
def test_rfc3339_ns_never_raises_and_clamps_to_the_years_it_can_write(
    ts_ns: int, text: str
) -> None:
    assert rfc3339_ns(ts_ns) == text


def test_summary_form() -> None:
    full = entry(Exchange(request('/say"hi"\\'), response(404), None))
    full["src"]["pod"] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"hostIP": "10.1.1.1"},
    }
    full["dst"]["service"] = {"metadata": {"name": "svc", "namespace": "ns", "labels": {}}}
    s = summarize(full)
    assert sorted(s) == sorted(
        [
            "id",
            "worker",
            "stream",
            "index",
            "node",
            "proto",
            "src",
            "dst",
            "method",
            "summary",
            "status",
            "methodQuery",
            "summaryQuery",
            "statusQuery",
            "timestamp",
            "elapsedTime",
            "requestSize",
            "responseSize",
            "tls",
            "outgoing",
            "error",
            "passed",
            "failed",
            "record",
        ]
    )
    assert (s["method"], s["summary"], s["status"]) == ("GET", '/say"hi"\\', 404)
    assert s["methodQuery"] == 'request.method == "GET"'
    assert s["summaryQuery"] == 'request.path == "/say\\"hi\\"\\\\"'
    assert s["statusQuery"] == "response.status == 404"
    assert s["proto"] == full["protocol"]
    assert s["src"]["pod"] == {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1"},
        "status": {"hostIp": "10.1.1.1"},
    }
    assert s["dst"]["service"] == {"metadata": {"name": "svc", "namespace": "ns"}}
    assert s["dst"]["pod"] is None
    assert full["src"]["pod"]["metadata"]["uid"] == "u"  # the full entry is not modified
    unanswered = summarize(entry(Exchange(request(), None, ("pair-not-found", "x"))))
    assert (unanswered["status"], unanswered["statusQuery"]) == (0, "response.status == 0")


def test_summarize_survives_a_redacted_entry() -> None:
    """`redact("request")` on /api/ws leaves strings where objects were; the summary still works."""
    from capture.entries import summarize

    entry = {
        "request": "[REDACTED]",
        "response": "[REDACTED]",
        "src": "[REDACTED]",
        "dst": {
            "ip": "10.0.0.2",
            "port": "80",
            "name": "",
            "namespace": "",
            "pod": None,
            "service": None,
            "endpointSlice": None,
        },
        "id": "w:1/000000000001.pcap-0",
    }
    summary = summarize(entry)
    assert summary["method"] == ""
    assert summary["status"] == 0
    assert summary["src"] == "[REDACTED]"
    assert summary["dst"]["ip"] == "10.0.0.2"
    assert summary["id"] == "w:1/000000000001.pcap-0"


# --- bodies bounded by --max-body (issue 9) ------------------------------------------------------


def test_decoded_content_is_cut_to_max_body_with_its_whole_size_and_a_mark() -> None:
    """A gzip body that decodes to 10 MiB keeps --max-body of it; content.size is the whole
    decoded size (HAR: "length of the returned content"); `_truncated` (HAR custom fields
    start with "_") says text is a prefix."""
    big = bytes(range(256)) * (40 << 10)
    gz = gzip.compress(big, 1)
    resp = response(headers=[("Content-Encoding", "gzip")], body=gz)
    keep = 1 << 20
    e = build_entry(Exchange(request(), resp, None), CONN, 0, IDENT, 1, 0, MAX, max_keep=keep)
    content = e["response"]["content"]
    assert content["size"] == len(big)
    assert base64.b64decode(content["text"]) == big[:keep]
    assert content["_truncated"] is True
    assert e["error"] is None
    # a request body the same way
    post = request(method="POST", headers=[("Content-Encoding", "gzip")], body=gz)
    e = build_entry(Exchange(post, response(), None), CONN, 0, IDENT, 1, 0, MAX, max_keep=keep)
    assert e["request"]["postData"]["_truncated"] is True
    assert base64.b64decode(e["request"]["postData"]["text"]) == big[:keep]
    assert e["request"]["bodySize"] == len(gz)


def test_a_body_cut_on_the_wire_is_marked_and_sized_as_sent() -> None:
    whole = b"x" * 5000
    resp = response(body=whole[:1000], truncated=True)._replace(body_size=len(whole))
    e = build_entry(Exchange(request(), resp, None), CONN, 0, IDENT, 1, 0, MAX, max_keep=1000)
    content = e["response"]["content"]
    assert (content["size"], content["_truncated"]) == (5000, True)
    assert base64.b64decode(content["text"]) == whole[:1000]
    # whole bodies carry no mark
    e = build_entry(Exchange(request(), response(body=b"ok"), None), CONN, 0, IDENT, 1, 0, MAX)
    assert "_truncated" not in e["response"]["content"] and e["response"]["content"]["size"] == 2
