"""The real HTTP/2 and gRPC captures of ../shared/pcaps-proto, through the pipeline, against tshark.

The oracle (`oracle/<name>.tsv`, README.md there) has one row per HTTP/2 header block tshark
4.0.17 decoded: requests, responses and trailer blocks, with their stream id, method, path,
authority, status, content type, grpc-status and number of header fields. An entry holds one
stream's request and response, so the comparisons are:

* counts: entries with a request == tshark's requests (plus the HTTP/1.1 `Upgrade: h2c`
  requests the README lists apart: their response comes on h2 stream 1, their request is the
  HTTP/1.1 one), entries with a response == tshark's responses, gRPC entries == tshark's gRPC
  calls (requests whose content-type is application/grpc);
* contents: the multiset of (h2 stream, method, path, authority, content-type) of requests and
  of (h2 stream, HTTP status, content-type) of responses; grpc-status of every trailer block
  tshark saw is the gRPC entry's `response.status`;
* HPACK: per connection and h2 stream, the number of header fields decoded equals tshark's
  (105 dynamic-table references in sv-http2-compression-bug alone), from the dissector's own
  exchanges.

No port hints: detection is from the preface, or (the three df-* snippets that start
mid-connection) from HEADERS frames. Where kshark differs, `DEVIATIONS` says why and a test
checks the claim.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from capture.decode import Decoder
from capture.entries import Identity
from capture.http2 import Http2Connection, Http2Exchange
from capture.pipeline import Pipeline
from capture.reassembly import Closed, Data, Gap, Opened, Reassembler
from capture.sources import CaptureFile

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT.parent / "shared" / "pcaps-proto"
ORACLE = PCAPS / "oracle"
H2_CAPTURES = sorted(
    p.name
    for p in PCAPS.iterdir()
    if p.suffix in (".pcap", ".pcapng")
    and p.name.startswith(("sv-http2", "df-grpc", "df-h2c", "ndpi-http2"))
)
# HTTP/1.1 requests answered on h2 stream 1 (README: "+N HTTP/1.1 upgrade request(s)").
UPGRADES = {"sv-http2-keywords2-input.pcap": 1, "sv-http2-range.pcap": 3}
# name -> (requests, responses, gRPC calls) kshark finds, and why that differs from tshark's.
DEVIATIONS: dict[str, tuple[int, int, int, str]] = {}


_KEYS = (
    "h2_stream",
    "method",
    "path",
    "authority",
    "status",
    "content_type",
    "grpc_status",
    "nheaders",
)


def _fields(text: str) -> dict[str, str]:
    # Values may contain spaces ("text/plain; charset=utf-8"): split on " key=".
    out = {}
    for part in re.split(f" (?=(?:{'|'.join(_KEYS)})=)", text):
        key, _, value = part.partition("=")
        out[key] = value
    return out


def oracle_rows(name: str) -> list[dict[str, Any]]:
    with (ORACLE / f"{name}.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [{"tcp": int(r["stream"]), "kind": r["kind"], **_fields(r["fields"])} for r in rows]


def run_capture(path: Path) -> list[dict[str, Any]]:
    ident = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="golden")
    counter = iter(range(1, 1 << 40))
    pipeline = Pipeline(ident, allocate_stream=lambda: next(counter))
    entries: list[dict[str, Any]] = []
    for ts_ns, linktype, frame in CaptureFile(path):
        pipeline.feed(ts_ns, linktype, frame)
        entries.extend(pipeline.pop_output().entries)
    pipeline.finish()
    entries.extend(pipeline.pop_output().entries)
    return entries


def h2_entries(name: str) -> list[dict[str, Any]]:
    return [e for e in run_capture(PCAPS / name) if e["protocol"]["version"] == "2.0"]


def test_the_corpus_is_there() -> None:
    assert len(H2_CAPTURES) == 14, f"expected the 14 HTTP/2 and gRPC captures in {PCAPS}"


@pytest.mark.parametrize("name", H2_CAPTURES)
def test_counts_match_tshark(name: str) -> None:
    entries = h2_entries(name)
    got = (
        sum(1 for e in entries if e["request"]),
        sum(1 for e in entries if e["response"]),
        sum(1 for e in entries if e["protocol"]["abbr"] == "gRPC"),
    )
    rows = oracle_rows(name)
    want = (
        sum(r["kind"] == "request" for r in rows) + UPGRADES.get(name, 0),
        sum(r["kind"] == "response" for r in rows),
        sum(
            r["kind"] == "request" and r.get("content_type", "").startswith("application/grpc")
            for r in rows
        ),
    )
    if name in DEVIATIONS:
        assert got == DEVIATIONS[name][:3]
    else:
        assert got == want


@pytest.mark.parametrize("name", H2_CAPTURES)
def test_requests_and_responses_are_the_ones_tshark_decoded(name: str) -> None:
    entries = h2_entries(name)
    rows = oracle_rows(name)
    want_req = Counter(
        (int(r["h2_stream"]), r["method"], r["path"], r["authority"], r.get("content_type"))
        for r in rows
        if r["kind"] == "request"
    )
    want_resp = Counter(
        (int(r["h2_stream"]), int(r["status"]), r.get("content_type"))
        for r in rows
        if r["kind"] == "response"
    )
    got_req = Counter(
        (
            e["request"]["streamId"],
            e["request"]["method"],
            e["request"]["url"],
            e["request"]["headers"][":authority"],
            e["request"]["headers"].get("Content-Type"),
        )
        for e in entries
        if e["request"] and e["request"]["httpVersion"] == "HTTP/2.0"
    )
    got_resp = Counter(
        (
            e["response"]["streamId"],
            int(e["response"]["headers"][":status"]),
            e["response"]["headers"].get("Content-Type"),
        )
        for e in entries
        if e["response"]
    )
    assert got_req == want_req
    assert got_resp == want_resp


@pytest.mark.parametrize("name", H2_CAPTURES)
def test_grpc_status_from_the_trailers_is_the_response_status(name: str) -> None:
    entries = h2_entries(name)
    want = sorted(
        (int(r["h2_stream"]), int(r["grpc_status"]))
        for r in oracle_rows(name)
        if "grpc_status" in r
    )
    got = sorted(
        (e["response"]["streamId"], e["response"]["status"])
        for e in entries
        if e["response"].get("grpc", {}).get("statusSource") == "grpc-status"
    )
    assert got == want


def test_upgraded_requests_are_the_http1_ones() -> None:
    for name, count in UPGRADES.items():
        upgraded = [e for e in h2_entries(name) if e["request"].get("httpVersion") == "HTTP/1.1"]
        assert len(upgraded) == count
        for e in upgraded:
            assert e["request"]["streamId"] == 1 and e["request"]["headers"]["Upgrade"] == "h2c"
            assert e["response"]["httpVersion"] == "HTTP/2.0" and e["error"] is None


def test_h2c_inside_a_connect_tunnel_is_dissected() -> None:
    """One gRPC call seen on two legs: client→proxy (:8888) inside an HTTP/1.1 CONNECT tunnel,
    and proxy→server (:6233). The CONNECT stays an entry of its own; the tunnel's bytes go to
    content detection (the h2c preface), as tshark dissects them."""
    entries = run_capture(PCAPS / "sv-http2-errorcode-input.pcap")
    connect = [e for e in entries if e["request"].get("method") == "CONNECT"]
    assert len(connect) == 1 and connect[0]["protocol"]["abbr"] == "HTTP"
    assert connect[0]["response"]["status"] == 200 and connect[0]["error"] is None
    assert connect[0]["request"]["url"] == "127.0.0.1:6233"
    calls = [e for e in entries if e["protocol"]["abbr"] == "gRPC"]
    assert sorted(e["dst"]["port"] for e in calls) == ["6233", "8888"]
    tunnelled = next(e for e in calls if e["dst"]["port"] == "8888")
    # The same connection, its pcap and entry numbering going on after the CONNECT.
    assert (tunnelled["stream"], tunnelled["index"]) == (connect[0]["stream"], 1)
    assert tunnelled["request"]["grpc"]["method"] == "SayHello"
    assert (tunnelled["response"]["status"], tunnelled["error"]) == (0, None)


def test_grpc_calls_in_detail() -> None:
    (call,) = h2_entries("df-h2c_ascii.pcap")
    assert call["request"]["grpc"]["service"] == "hipstershop.CartService"
    assert call["request"]["grpc"]["method"] == "GetCart"
    assert call["request"]["grpc"]["messages"][0]["fields"] == {
        "1": {"string": "23c6f77d-9e74-44e5-ad2a-617d18bf19dc"}
    }
    assert (call["response"]["status"], call["response"]["statusText"]) == (0, "OK")
    (stream,) = h2_entries("df-grpc-server-stream.pcap")
    # README: 6 gRPC messages, 1 request and 5 streamed responses. Three small server segments
    # (17 bytes each, before frames 6-8, tshark's "previous segment not captured") are missing
    # from the snippet: kshark cannot know they held no message, so the count is marked inexact
    # and the entry says bytes were lost; counting resumed at the next DATA frames.
    assert stream["request"]["grpc"]["messageCount"] == 1
    assert stream["response"]["grpc"]["messageCount"] == 5
    assert stream["response"]["grpc"]["messageCountExact"] is False
    assert "17 bytes of the connection lost in a capture gap" in stream["error"]["msg"]
    (client_stream,) = h2_entries("df-grpc-service-name.pcap")
    assert client_stream["request"]["grpc"]["messageCount"] == 3  # README: 4 messages in all
    assert client_stream["response"]["grpc"]["messageCount"] == 1
    # A snippet whose trailers were not captured: not reported as OK.
    (unary,) = h2_entries("df-grpc-unary.pcap")
    assert (unary["response"]["status"], unary["response"]["statusText"]) == (2, "UNKNOWN")
    assert unary["error"]["type"] == "connection"


# --- HPACK: header fields per stream, from the dissector itself -----------------------------


def _exchanges(path: Path) -> dict[int, list[Http2Exchange]]:
    """Every connection of the capture through Http2Connection alone (no HTTP/1 in front: the
    upgrade and CONNECT connections realign on their first frames), by order of appearance."""
    dec, r = Decoder(), Reassembler()
    conns: dict[int, Http2Connection] = {}
    order: list[int] = []

    def drain() -> None:
        for ev in r.pop_events():
            if isinstance(ev, Opened):
                conns[ev.conn_id] = Http2Connection()
                order.append(ev.conn_id)
            elif isinstance(ev, Data):
                conns[ev.conn_id].data(ev.side, ev.data, ev.ts_ns)
            elif isinstance(ev, Gap):
                conns[ev.conn_id].gap(ev.side, ev.length, ev.ts_ns)
            elif isinstance(ev, Closed):
                conns[ev.conn_id].end(ev.reason, ev.ts_ns)

    for ts, lt, frame in CaptureFile(path):
        seg = dec.decode(ts, lt, frame)
        if seg is not None:
            r.feed(seg)
            drain()
    r.close_all(0)
    drain()
    return {i: conns[cid].pop_exchanges() for i, cid in enumerate(order)}


@pytest.mark.parametrize("name", H2_CAPTURES)
def test_header_fields_per_stream_equal_tsharks(name: str) -> None:
    want: Counter[tuple[int, int]] = Counter()
    for row in oracle_rows(name):
        want[row["tcp"], int(row["h2_stream"])] += int(row["nheaders"])
    got: Counter[tuple[int, int]] = Counter()
    for tcp, exchanges in _exchanges(PCAPS / name).items():
        for ex in exchanges:
            for msg in (ex.request, ex.response):
                if msg is not None and msg.version == "HTTP/2.0":
                    got[tcp, ex.stream_id] += len(msg.headers)
    assert +got == +want
