"""The HTTP/2 and gRPC fixtures (scripts/make_h2_fixtures.py → fixtures/h2/) through the whole
pipeline, against what the script says each must produce (fixtures/h2/expected.json, derived
from what it sent), and the committed files against the script's output."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from capture.entries import Identity
from capture.pipeline import Pipeline, PipelineLimits
from capture.protobuf import ProtoDecoder
from capture.sources import CaptureFile
from tests.support.generated import check_generated

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "h2"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())


def test_committed_fixtures_match_the_generator_and_it_is_deterministic(tmp_path: Path) -> None:
    check_generated("make_h2_fixtures.py", FIXTURES, tmp_path)


def run(
    name: str, protos: ProtoDecoder | None = None, decode_as: dict[int, str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    counter = iter(range(1, 1 << 40))
    pipeline = Pipeline(
        Identity("127.0.0.1:30001", "127.0.0.1", "golden"),
        lambda: next(counter),
        PipelineLimits(protobuf=protos),
        decode_as=decode_as,
    )
    entries: list[dict[str, Any]] = []
    for ts_ns, linktype, frame in CaptureFile(FIXTURES / name):
        pipeline.feed(ts_ns, linktype, frame)
        entries.extend(pipeline.pop_output().entries)
    pipeline.finish()
    entries.extend(pipeline.pop_output().entries)
    return entries, pipeline.stats()


def _body(part: dict[str, Any]) -> bytes:
    text = part.get("content", {}).get("text")
    return base64.b64decode(text) if text else b""


def _check(entry: dict[str, Any], want: dict[str, Any]) -> None:
    q, r = entry["request"], entry["response"]
    assert entry["protocol"]["version"] == "2.0"
    if want.get("method") is None:
        assert q == {}
    else:
        assert (q["method"], q["url"]) == (want["method"], want["path"])
        assert q["httpVersion"] == want.get("httpVersion", "HTTP/2.0")
    if want.get("status") is None:
        assert r == {}
    else:
        assert r["status"] == want["status"]
        if "statusText" in want:
            assert r["statusText"] == want["statusText"]
    err = entry["error"]
    assert (err and err["type"]) == want["error"]
    if "errorText" in want:
        assert err["msg"] == want["errorText"]
    if "errorContains" in want:
        assert want["errorContains"] in err["msg"]
    if "responseBody" in want:
        assert _body(r).decode() == want["responseBody"]
    if "responseBodySize" in want:
        assert r["bodySize"] == want["responseBodySize"]
        assert _body(r)[: len(want["responseBodyPrefix"]) // 2].hex() == want["responseBodyPrefix"]
    for key, part in (("requestHeaders", q), ("responseHeaders", r)):
        for name, value in want.get(key, {}).items():
            assert part["headers"].get(name) == value, (key, name)
    for name, length in want.get("requestHeaderLengths", {}).items():
        assert len(q["headers"][name]) == length
    g = want.get("grpc")
    if g is not None:
        assert entry["protocol"]["abbr"] == "gRPC"
        assert (q["grpc"]["service"], q["grpc"]["method"]) == (g["service"], g["method"])
        assert q["grpc"]["messageCount"] == g["requestMessages"]
        assert r["grpc"]["messageCount"] == g["responseMessages"]
        assert r["grpc"]["message"] == g["message"]
        if "compressed" in g:
            assert sum(m["compressed"] for m in r["grpc"]["messages"]) == len(r["grpc"]["messages"])
        if "requestJson" in g:
            assert [m["json"] for m in q["grpc"]["messages"]] == g["requestJson"]
        if "responseJson" in g:
            assert [m["json"] for m in r["grpc"]["messages"]] == g["responseJson"]


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED))
def test_fixture_entries(name: str) -> None:
    protos = (
        ProtoDecoder((FIXTURES / "shop.desc").read_bytes()) if name.startswith("grpc") else None
    )
    hint = {int(port): proto for port, proto in EXPECTED[name].get("decodeAs", {}).items()}
    entries, stats = run(name, protos, hint)
    want = EXPECTED[name]["entries"]
    got = {(e["request"] or e["response"])["streamId"]: e for e in entries}
    assert sorted(got) == sorted(w["stream"] for w in want), EXPECTED[name]["what"]
    assert len(entries) == len(want)
    for w in want:
        _check(got[w["stream"]], w)
    assert stats["entries"] == len(want)


def test_grpc_without_a_descriptor_set_shows_raw_fields() -> None:
    entries, _ = run("grpc-calls.pcap")
    (get,) = [e for e in entries if e["request"]["streamId"] == 1]
    assert get["request"]["grpc"]["messages"][0]["fields"] == {"1": {"varint": 1007}}
    fields = get["response"]["grpc"]["messages"][0]["fields"]
    assert fields["2"] == {"string": "item-7"} and fields["4"] == [
        {"string": "blue"},
        {"string": "t1"},
    ]
    assert "fixed64" in fields["3"]  # the price, a double: 17.5 as its 8 raw bytes


@pytest.mark.parametrize(
    ("query", "streams"),
    [
        ("grpc and response.status != 0", [5, 7]),
        ('grpc and response.statusText == "NOT_FOUND"', [5]),
        ('grpc and request.grpc.method == "ListItems"', [3]),
        ("grpc and response.grpc.messageCount > 10", [3]),
        ('grpc and request.grpc.messages[0].json.id == "42"', [5]),
        ('grpc and response.headers[":status"] == "200"', [1, 3, 5, 7]),
        ("http2", []),  # gRPC entries are gRPC, not plain HTTP/2 (Kubeshark's abbr)
        ("http", []),
    ],
)
def test_kfl_on_grpc_entries(query: str, streams: list[int]) -> None:
    from kshark.kfl import compile_query

    entries, _ = run("grpc-calls.pcap", ProtoDecoder((FIXTURES / "shop.desc").read_bytes()))
    q = compile_query(query)
    assert sorted(e["request"]["streamId"] for e in entries if q.match(e)) == streams


def test_kfl_and_summaries_on_http2_entries() -> None:
    from capture.entries import summarize
    from kshark.kfl import compile_query

    entries, _ = run("h2-rst-stream.pcap")
    q = compile_query('http2 and error.type == "connection"')
    assert sorted(e["request"]["streamId"] for e in entries if q.match(e)) == [1, 5]
    s = summarize(next(e for e in entries if e["request"]["streamId"] == 3))
    assert (s["method"], s["summary"], s["status"]) == ("POST", "/upload", 413)
    assert s["proto"]["abbr"] == "HTTP/2"


def test_what_the_dissectors_counted_is_in_the_pipeline_stats() -> None:
    """/status shows each protocol's counters (capture/dissect.py's DissectorStats) as
    `http2_*`, summed over the connections."""
    _, stats = run("h2-rst-stream.pcap")
    assert stats["http2_resets"] == 3  # the script's three RST_STREAM frames
    _, stats = run("h2-goaway.pcap")
    assert stats["http2_goaways"] == 1
    entries, stats = run("h2-midstream.pcap", decode_as={8080: "http2"})
    # The capture joined a 9 + 4000-byte DATA frame 1000 bytes in: the rest is skipped while
    # looking for a frame boundary.
    assert stats["http2_bytes_skipped"] == 9 + 4000 - 1000
    flagged = [
        int(n)
        for e in entries
        if e["error"] is not None
        for n in re.findall(r"(\d+) (?:request|response)\b", e["error"]["msg"].split(" header")[0])
    ]
    assert flagged and stats["http2_hpack_unknown_fields"] == sum(flagged)
    assert stats["http2_streams_evicted"] == stats["http2_body_bytes_dropped"] == 0


def test_limit_cuts_are_counted() -> None:
    from capture.http2 import Http2Limits

    counter = iter(range(1, 1 << 40))
    pipeline = Pipeline(
        Identity("127.0.0.1:30001", "127.0.0.1", "golden"),
        lambda: next(counter),
        PipelineLimits(http2=Http2Limits(max_streams=4, max_body=100, max_header_block=4096)),
    )
    entries: list[dict[str, Any]] = []
    for ts_ns, linktype, frame in CaptureFile(FIXTURES / "h2-concurrent.pcap"):
        pipeline.feed(ts_ns, linktype, frame)
        entries.extend(pipeline.pop_output().entries)
    pipeline.finish()
    entries.extend(pipeline.pop_output().entries)
    stats = pipeline.stats()
    evicted = [e for e in entries if "more than max_streams=4" in (e["error"] or {}).get("msg", "")]
    assert stats["http2_streams_evicted"] == len(evicted) > 0
    # the 20 KB header block (CONTINUATION frames) is over max_header_block: one block skipped
    assert stats["http2_header_blocks_lost"] == 1
    kept = sum(len(_body(part)) for e in entries for part in (e["request"], e["response"]) if part)
    sizes = sum(part["bodySize"] for e in entries for part in (e["request"], e["response"]) if part)
    assert stats["http2_body_bytes_dropped"] == sizes - kept > 0
