"""The first frame, the frames the server sends, and output shaping, without a network."""

from __future__ import annotations

import orjson
import pytest

from kshark.api.wire import (
    Projection,
    Shaper,
    StreamError,
    StreamRequest,
    compile_stream_query,
    error_frame,
    gap_frame,
    parse_first_frame,
)
from tests.support.api import make_entry


@pytest.mark.parametrize(
    "text",
    [
        "response.status > 300",
        "",
        "   ",
        '{"fields": ["id"]}',  # an object without "query" is KFL text
        "[1, 2]",
        '"http"',
        "{not json",
    ],
)
def test_anything_but_a_query_object_is_kfl_text(text):
    assert parse_first_frame(text) == StreamRequest(query=text)


def test_json_frame_with_every_key():
    frame = {
        "query": "http",
        "fields": ["id", "request.path"],
        "history": False,
        "since": "w:1/000000000001.pcap-0",
        "ordered": True,
    }
    assert parse_first_frame(orjson.dumps(frame)) == StreamRequest(
        query="http",
        fields=("id", "request.path"),
        history=False,
        since="w:1/000000000001.pcap-0",
        ordered=True,
        json_frame=True,
    )
    assert parse_first_frame('{"query": ""}') == StreamRequest(query="", json_frame=True)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ({"query": 1}, "query"),
        ({"query": "", "fields": "id"}, "fields"),
        ({"query": "", "fields": []}, "fields"),
        ({"query": "", "fields": ["id", 3]}, "fields"),
        ({"query": "", "fields": ["request..path"]}, "empty segment"),
        ({"query": "", "fields": ["x"] * 257}, "more than"),
        ({"query": "", "history": "false"}, "history"),
        ({"query": "", "ordered": 1}, "ordered"),
        ({"query": "", "since": 5}, "since"),
        ({"query": "", "feilds": ["id"]}, "feilds"),
    ],
)
def test_bad_json_frame_fields_are_request_errors(frame, words):
    with pytest.raises(StreamError) as err:
        parse_first_frame(orjson.dumps(frame).decode())
    assert err.value.type == "request"
    assert words in err.value.message
    assert orjson.loads(err.value.frame()) == {
        "error": {"type": "request", "message": err.value.message}
    }


def test_binary_first_frame_must_be_utf8():
    assert parse_first_frame(b"http") == StreamRequest(query="http")
    with pytest.raises(StreamError) as err:
        parse_first_frame(b"\xff\xfe")
    assert err.value.type == "request"


def test_kfl_error_becomes_a_positioned_error_frame():
    with pytest.raises(StreamError) as err:
        compile_stream_query("response.status ==")
    e = err.value
    assert e.type == "kfl" and e.line == 1 and e.column >= 1
    assert orjson.loads(e.frame()) == {
        "error": {"type": "kfl", "message": e.message, "line": e.line, "column": e.column}
    }
    assert e.message.startswith(f"1:{e.column}: ")


def test_frames_are_compact():
    assert error_frame("cursor", "unknown") == '{"error":{"message":"unknown","type":"cursor"}}'
    assert gap_frame(3) == '{"gap":{"missed":3,"reason":"retention"}}'


def test_projection_nests_paths_and_omits_missing_ones():
    entry = make_entry(7, 2, path="/a/b", status=503)
    project = Projection(("id", "request.path", "response.status", "request.nope", "x.y"))
    assert project(entry) == {
        "id": entry["id"],
        "request": {"path": "/a/b"},
        "response": {"status": 503},
    }
    # A shorter path takes the whole value, whatever the order given.
    assert Projection(("src.ip", "src"))(entry) == {"src": entry["src"]}
    # A path through a non-object is missing, and so is a parent left empty.
    assert Projection(("index.x", "id"))(entry) == {"id": entry["id"]}


def test_shaper_redacts_before_summarising_and_projecting():
    entry = make_entry(7, 0, path="/secret")
    query = compile_stream_query('redact("request.path")')
    shaped = orjson.loads(
        Shaper(
            query,
            ("summary", "id"),
            summarize=lambda e: {"summary": e["request"]["path"], "id": e["id"]},
        ).render(entry)
    )
    assert shaped == {"summary": "[REDACTED]", "id": entry["id"]}
    assert entry["request"]["path"] == "/secret"  # the stored entry is not changed
    assert Shaper(compile_stream_query("http"), None).passthrough
    assert not Shaper(compile_stream_query("http"), ("id",)).passthrough
    assert not Shaper(query, None).passthrough
