"""redact(): what a stream sends has the named values replaced; the entry itself is untouched."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from kshark.kfl import compile_query
from tests.support.kfl_samples import car, h2_lowercase, http_get, http_post

R = "[REDACTED]"


def redacted(query: str, entry: dict[str, Any]) -> dict[str, Any]:
    before = json.dumps(entry, sort_keys=True)
    out = compile_query(query).redact(entry)
    assert json.dumps(entry, sort_keys=True) == before, "the original entry was modified"
    return out


def test_without_redact_the_entry_itself_is_returned() -> None:
    q = compile_query("http and limit(3)")
    entry = http_get()
    assert q.has_redactions is False
    assert q.redact(entry) is entry


def test_a_header_is_redacted_in_a_copy() -> None:
    entry = http_post()
    q = compile_query('http and redact("request.headers.Authorization")')
    assert q.has_redactions is True
    out = redacted('http and redact("request.headers.Authorization")', entry)
    assert out["request"]["headers"]["Authorization"] == R
    assert entry["request"]["headers"]["Authorization"] == "Bearer eyJhbGciOi.secret"
    out["request"]["headers"]["Authorization"] = "x"
    del out["request"]["headers"]["Host"]
    out["request"]["pathSegments"].append("more")
    assert entry["request"]["headers"]["Host"] == "orders:8080"  # a deep copy, not a view
    assert entry["request"]["pathSegments"] == ["api", "v1", "orders"]
    rest = {k: v for k, v in out.items() if k != "request"}
    assert rest == {k: v for k, v in entry.items() if k != "request"}


def test_header_names_match_case_insensitively() -> None:
    out = redacted('redact("request.headers.authorization")', http_post())
    assert out["request"]["headers"]["Authorization"] == R
    out = redacted('redact("request.headers.User-Agent")', h2_lowercase())
    assert out["request"]["headers"]["user-agent"] == R
    assert out["request"]["headers"]["content-type"] == "application/grpc"
    out = redacted(
        'redact(\'request.headers["x-request-id"]\', "response.headers.set-cookie")', http_post()
    )
    assert out["request"]["headers"]["X-Request-Id"] == R
    assert out["response"]["headers"]["Set-Cookie"] == R


def test_any_depth_lists_indexes_and_wildcards() -> None:
    out = redacted('redact("model", "..name")', car())
    assert out["model"] == R
    assert out["brand"]["name"] == R
    assert out["similar"]["brand"]["name"] == R
    assert out["similar"]["model"] == "Camaro"  # only the top-level model was named
    out = redacted('redact("request.pathSegments")', http_post())
    assert out["request"]["pathSegments"] == R  # a list is replaced as a whole
    out = redacted('redact("request.pathSegments[1]", "request.queryString.*")', http_post())
    assert out["request"]["pathSegments"] == ["api", R, "orders"]
    assert out["request"]["queryString"] == {"item": R, "debug": R}
    out = redacted('redact("objs[*].x")', car())
    assert out["objs"] == [{"x": R}, {"x": R}, {"x": R}]


def test_missing_paths_are_skipped() -> None:
    entry = http_get()
    out = redacted(
        'redact("nope.x", "request.headers.X-None", "request.pathSegments[9]", "..zz")', entry
    )
    assert out == entry
    assert out is not entry


def test_inside_a_plain_json_body() -> None:
    out = redacted('redact("request.postData.text.json()..password")', http_post())
    body = json.loads(out["request"]["postData"]["text"])
    assert body["password"] == R
    assert body["user"] == {"name": "ann", "password": R}
    assert body["order"]["items"][0] == {"sku": "X-1", "qty": 2}


def test_inside_a_base64_json_body_it_stays_base64() -> None:
    out = redacted('redact("response.content.text.json()[0].id")', http_get())
    text = out["response"]["content"]["text"]
    assert json.loads(base64.b64decode(text, validate=True)) == [
        {"id": R, "name": "Colourful", "price": 18}
    ]


def test_inside_a_base64_xml_body() -> None:
    out = redacted('redact("response.content.text.xml().bookstore.book[1].title")', http_post())
    xml = base64.b64decode(out["response"]["content"]["text"], validate=True).decode()
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert "Harry Potter" not in xml
    assert "<title>[REDACTED]</title>" in xml
    assert '<title lang="en">Everyday Italian</title>' in xml
    assert "<author>J K. Rowling</author>" in xml


def test_a_decoded_object_already_in_the_entry_is_redacted_in_place_of_the_copy() -> None:
    entry = {"a": {"x": 1, "y": 2}}
    assert redacted('redact("a.json().x")', entry) == {"a": {"x": R, "y": 2}}


def test_a_body_that_cannot_be_re_encoded_is_redacted_whole() -> None:
    # orjson parses 1024 levels but writes only 254: the redacted document cannot be written
    # back, so the whole body goes rather than the secret.
    deep = '{"a":' * 300 + '{"password": "pw"}' + "}" * 300
    out = redacted('redact("body.json()..password")', {"body": deep})
    assert out["body"] == R


def test_a_path_ending_in_a_decoder_redacts_the_body() -> None:
    out = redacted('redact("request.postData.text.json()")', http_post())
    assert out["request"]["postData"]["text"] == R


def test_matching_sees_the_original_values() -> None:
    # Kubeshark: redact() rewrites the record before later clauses run, so this was false.
    q = compile_query('redact("request.method") and request.method == "POST"')
    entry = http_post()
    assert q.match(entry) is True
    assert q.redact(entry)["request"]["method"] == R
    assert q.match(entry) is True


def test_redaction_applies_to_every_entry_sent_wherever_redact_stands() -> None:
    # KFL.md: "in every entry sent on this stream". Even behind a short-circuit.
    q = compile_query('true or redact("id")')
    assert q.redact(car())["id"] == R
    q = compile_query('redact("id") and redact("year", "model")')
    out = q.redact(car())
    assert (out["id"], out["year"], out["model"]) == (R, R, R)


@pytest.mark.parametrize(
    "odd", [None, [], "text", 5, {"request": None}, {"request": {"headers": 1}}]
)
def test_odd_entries_do_not_break_redaction(odd: Any) -> None:
    q = compile_query('redact("request.headers.Authorization", "..x", "request.json().a")')
    out = q.redact(odd)  # type: ignore[arg-type]
    assert out == odd


def test_mappings_and_tuples_inside_an_entry_are_redacted_too() -> None:
    from collections import OrderedDict
    from types import MappingProxyType

    inner = OrderedDict(Authorization="secret", Host="h")
    entry = {"request": {"headers": inner}, "list": ({"x": 1},), "ro": MappingProxyType({"x": 2})}
    out = compile_query('redact("request.headers.authorization", "..x")').redact(entry)
    assert out["request"]["headers"] == {"Authorization": R, "Host": "h"}
    assert out["list"] == [{"x": R}]
    assert out["ro"] == {"x": R}
    assert inner["Authorization"] == "secret"
    assert entry["list"][0]["x"] == 1
