"""capture.http1: byte-level cases for every framing/pairing/gap rule, and split invariance.

A case is a list of packets in capture order: ("d", side, bytes, ts) data, ("g", side, length, ts)
a capture gap, ("e", reason, ts) the connection's end. `run` feeds packets whole; the invariance
tests feed the same packets byte by byte and cut at random points (pieces of one packet keep its
time, as reassembly does) and must get identical exchanges.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.http1 import Exchange, HttpConnection, HttpLimits, HttpStats, Message

Packet = tuple[Any, ...]

REQ = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
RESP5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def run(
    packets: list[Packet], limits: HttpLimits | None = None, split: Any = None
) -> tuple[HttpConnection, list[Exchange]]:
    """Feed packets (each cut into pieces by split(data) when given); end, pop everything."""
    conn = HttpConnection(limits or HttpLimits())
    out: list[Exchange] = []
    ended = False
    for p in packets:
        if p[0] == "d":
            _, side, data, ts = p
            for piece in split(data) if split else [data]:
                conn.data(side, piece, ts)
        elif p[0] == "g":
            conn.gap(p[1], p[2], p[3])
        else:
            conn.end(p[1], p[2])
            ended = True
        out.extend(conn.pop_exchanges())
    if not ended:
        conn.end("fin", 10**9)
        out.extend(conn.pop_exchanges())
    return conn, out


def d(side: int, data: bytes, ts: int = 1) -> Packet:
    return ("d", side, data, ts)


def summary(ex: Exchange) -> tuple[Any, ...]:
    req, resp = ex.request, ex.response
    return (
        req and (req.method, req.target, req.body),
        resp and (resp.status, resp.body),
        ex.error and ex.error[0],
    )


# --- recognition, roles, basic framing --------------------------------------------------------


def test_get_with_content_length_response() -> None:
    conn, exs = run([d(0, REQ, 10), d(1, RESP5, 20)])
    assert conn.client_side == 0
    assert len(exs) == 1
    ex = exs[0]
    assert ex.error is None
    assert ex.request == Message(
        "GET",
        "/a?x=1",
        None,
        None,
        "HTTP/1.1",
        [("Host", "h")],
        b"",
        0,
        False,
        len(REQ),
        10,
        10,
        None,
        (),
    )
    assert ex.response == Message(
        None,
        None,
        200,
        "OK",
        "HTTP/1.1",
        [("Content-Length", "5")],
        b"hello",
        5,
        False,
        len(RESP5),
        20,
        20,
        None,
        (),
    )


def test_roles_are_learnt_from_content_when_side_zero_is_the_server() -> None:
    conn, exs = run([d(1, REQ), d(0, RESP5)])
    assert conn.client_side == 1
    assert [summary(e) for e in exs] == [(("GET", "/a?x=1", b""), (200, b"hello"), None)]


def test_status_line_seen_first_also_decides_roles() -> None:
    # The response is delivered before its request (capture order across CPUs is not time
    # order) but its time is later: it answers that request.
    conn, exs = run([d(0, RESP5, 20), d(1, REQ, 10)])
    assert conn.client_side == 1
    assert [summary(e) for e in exs] == [(("GET", "/a?x=1", b""), (200, b"hello"), None)]


def test_http_is_recognised_on_any_side_and_odd_method_names() -> None:
    req = b"PROPFIND /dav HTTP/1.1\r\nDepth: 1\r\n\r\n"
    conn, exs = run([d(1, req), d(0, b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 0\r\n\r\n")])
    assert conn.client_side == 1
    assert exs[0].request is not None and exs[0].request.method == "PROPFIND"
    assert exs[0].response is not None and exs[0].response.reason == "Multi-Status"


def test_post_body_by_content_length() -> None:
    req = b"POST /f HTTP/1.1\r\nContent-Length: 7\r\n\r\nabc=def"
    _, exs = run([d(0, req), d(1, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")])
    assert exs[0].request is not None
    assert (exs[0].request.body, exs[0].request.body_size) == (b"abc=def", 7)
    assert exs[0].request.wire_size == len(req)


def test_chunked_with_extensions_and_trailers() -> None:
    body = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    _, exs = run([d(0, REQ), d(1, body)])
    resp = exs[0].response
    assert resp is not None
    assert resp.body == b"hello world"
    assert resp.body_size == 11
    assert resp.wire_size == len(body)
    # trailers are appended after the head's fields
    assert resp.headers == [("Transfer-Encoding", "chunked"), ("Trailer", "X-Sum"), ("X-Sum", "42")]
    assert exs[0].error is None


def test_chunked_request_body() -> None:
    req = b"POST /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    _, exs = run([d(0, req), d(1, RESP5)])
    assert exs[0].request is not None and exs[0].request.body == b"abc"
    assert exs[0].error is None


def test_head_response_has_no_body_even_with_content_length() -> None:
    reqs = b"HEAD / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
    resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + RESP5
    _, exs = run([d(0, reqs), d(1, resps)])
    assert [summary(e) for e in exs] == [
        (("HEAD", "/", b""), (200, b""), None),
        (("GET", "/2", b""), (200, b"hello"), None),
    ]


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    resps = b"HTTP/1.1 %d X\r\nContent-Length: 50\r\n\r\n" % status + RESP5
    _, exs = run([d(0, REQ + REQ), d(1, resps)])
    assert [(e.response.status, e.response.body) for e in exs if e.response] == [
        (status, b""),
        (200, b"hello"),
    ]


def test_interim_100_continue_is_skipped_and_the_final_response_paired() -> None:
    head = b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    _, exs = run(
        [
            d(0, head, 1),
            d(1, b"HTTP/1.1 100 Continue\r\n\r\n", 2),
            d(0, b"data", 3),
            d(1, b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + RESP5, 4),
        ]
    )
    assert len(exs) == 1
    assert summary(exs[0]) == (("POST", "/up", b"data"), (200, b"hello"), None)
    assert exs[0].response is not None and exs[0].response.wire_size == len(RESP5)


def test_pipelining_pairs_in_order() -> None:
    reqs = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(3))
    resps = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i for i in range(3))
    _, exs = run([d(0, reqs), d(1, resps)])
    assert [(e.request.target, e.response.body) for e in exs if e.request and e.response] == [
        ("/0", b"0"),
        ("/1", b"1"),
        ("/2", b"2"),
    ]


def test_http10_response_read_until_close() -> None:
    conn, exs = run(
        [
            d(0, b"GET / HTTP/1.0\r\n\r\n", 1),
            d(1, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", 2),
            d(1, b"def", 3),
            ("e", "fin", 4),
        ]
    )
    assert exs[0].error is None
    resp = exs[0].response
    assert resp is not None
    assert (resp.body, resp.body_size, resp.version, resp.ts_last_ns) == (
        b"abcdef",
        6,
        "HTTP/1.0",
        3,
    )
    assert not conn.active


@pytest.mark.parametrize(("reason", "kind"), [("rst", "connection"), ("timeout", "timeout")])
def test_close_delimited_body_not_ended_by_fin_is_an_error(reason: str, kind: str) -> None:
    _, exs = run([d(0, REQ), d(1, b"HTTP/1.0 200 OK\r\n\r\nabc"), ("e", reason, 9)])
    assert exs[0].error is not None and exs[0].error[0] == kind
    assert exs[0].response is not None and exs[0].response.body == b"abc"


def test_response_with_non_chunked_transfer_encoding_reads_until_close() -> None:
    _, exs = run([d(0, REQ), d(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz")])
    assert exs[0].response is not None and exs[0].response.body == b"xyz"


# --- Upgrade and CONNECT -----------------------------------------------------------------------


def test_upgrade_101_ends_http_parsing() -> None:
    req = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    conn, exs = run(
        [
            d(0, req + b"\x81\x85early-frame"),
            d(1, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"),
            d(0, b"GET /not-http HTTP/1.1\r\n\r\n"),
        ]
    )
    assert not conn.active
    assert [summary(e) for e in exs] == [(("GET", "/ws", b""), (101, b""), None)]


def test_connect_2xx_ends_http_parsing() -> None:
    conn, exs = run(
        [
            d(0, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"),
            d(1, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00"),
        ]
    )
    assert not conn.active
    assert [summary(e) for e in exs] == [(("CONNECT", "example.com:443", b""), (200, b""), None)]


def test_refused_connect_and_declined_upgrade_keep_parsing() -> None:
    conn, exs = run(
        [
            d(0, b"CONNECT x:443 HTTP/1.1\r\n\r\n"),
            d(1, b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n"),
            d(0, b"GET /h2 HTTP/1.1\r\nUpgrade: h2c\r\n\r\n" + REQ),
            d(1, RESP5 + RESP5),
        ]
    )
    assert conn.client_side == 0
    assert [summary(e) for e in exs] == [
        (("CONNECT", "x:443", b""), (407, b""), None),
        (("GET", "/h2", b""), (200, b"hello"), None),
        (("GET", "/a?x=1", b""), (200, b"hello"), None),
    ]


# --- leniency and anomalies ---------------------------------------------------------------------


def test_lenient_parsing_records_anomalies() -> None:
    req = b"GET / HTTP/1.\nHost: h\nX-Long: a\n  b\nBad : v\n\n"
    resp = b"HTTP/1.1 200\nContent-Length: 2\n\nok"
    _, exs = run([d(0, req), d(1, resp)])
    ex = exs[0]
    assert ex.error is None
    assert ex.request is not None and ex.response is not None
    assert ex.request.version == "HTTP/1."
    assert ex.request.headers == [("Host", "h"), ("X-Long", "a b"), ("Bad", "v")]
    assert set(ex.request.anomalies) == {
        "bare LF line endings",
        "odd HTTP version 'HTTP/1.'",
        "obs-fold continuation line",
        "whitespace before the colon of 'Bad'",
    }
    assert (ex.response.status, ex.response.reason, ex.response.body) == (200, "", b"ok")
    assert "status line without a reason phrase" in ex.response.anomalies


def test_malformed_request_lines_are_reported_and_still_paired() -> None:
    # zeek-methods.pcap shapes: each gets a 400 from the server; one exchange each.
    for line, method, target, version in [
        (b"GET/HTTP/1.1", "GET/HTTP/1.1", "", ""),
        (b"GET /HTTP/1.1", "GET", "/HTTP/1.1", ""),
        (b"OPTIONS", "OPTIONS", "", ""),
        ("\u00c3\u00c2 / HTTP/1.1".encode(), "\u00c3\u00c2", "/", "HTTP/1.1"),
    ]:
        bad = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
        conn, exs = run([d(0, line + b"\nHost: h\n\n"), d(1, bad)])
        assert conn.client_side == 0
        assert len(exs) == 1, line
        req = exs[0].request
        assert req is not None
        assert (req.method, req.target, req.version) == (method, target, version)
        assert exs[0].error is not None and exs[0].error[0] == "dissection"
        assert exs[0].response is not None and exs[0].response.body == b"bad"


def test_transfer_encoding_wins_over_content_length() -> None:
    # zeek-te-cl-desync.pcap: the chunked body ends early and a second ("smuggled") request follows.
    req = (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    _, exs = run([d(0, req)])
    assert [e.request.target for e in exs if e.request] == ["/", "/smuggled"]
    first = exs[0].request
    assert first is not None
    assert "Transfer-Encoding and Content-Length both present: chunked wins" in first.anomalies
    assert [e.error and e.error[0] for e in exs] == ["pair-not-found", "pair-not-found"]


def test_bad_chunk_size_is_a_dissection_error_then_resync() -> None:
    resps = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nfoo\r\n" + RESP5
    _, exs = run([d(0, REQ + REQ), d(1, resps)])
    assert exs[0].error is not None and exs[0].error[0] == "dissection"
    assert "bad chunk size" in exs[0].error[1]
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


def test_invalid_content_length_is_a_dissection_error_then_resync() -> None:
    resps = b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\ngarbage\r\n" + RESP5
    _, exs = run([d(0, REQ + REQ), d(1, resps)])
    assert exs[0].error is not None and exs[0].error[0] == "dissection"
    assert "invalid Content-Length" in exs[0].error[1]
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


# --- gaps ----------------------------------------------------------------------------------------


def test_gap_inside_a_known_length_body_keeps_framing() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    _, exs = run(
        [d(0, REQ + REQ, 1), d(1, head + b"abc", 2), ("g", 1, 4, 3), d(1, b"xyz" + RESP5, 4)]
    )
    resp = exs[0].response
    assert resp is not None
    assert (resp.body, resp.body_size, resp.body_truncated) == (b"abcxyz", 10, True)
    assert resp.wire_size == len(head) + 10
    assert exs[0].error == ("dissection", "4 bytes of the response body lost in a capture gap")
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


def test_gap_inside_a_chunk_keeps_framing() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, exs = run(
        [
            d(0, REQ + REQ),
            d(1, head + b"8\r\nab"),
            ("g", 1, 3, 1),
            d(1, b"xyz\r\n0\r\n\r\n" + RESP5),
        ]
    )
    resp = exs[0].response
    assert resp is not None and (resp.body, resp.body_size) == (b"abxyz", 8)
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


def test_whole_response_lost_in_a_gap_realigns_sequential_keep_alive() -> None:
    # zeek-1000-requests-one-dropped-response.pcap: without realignment every later pair would
    # be off by one. Request 2 was sent after the (lost) response 1, so response 2 answers it.
    _, exs = run(
        [
            d(0, b"GET /0 HTTP/1.1\r\n\r\n", 1),
            d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0", 2),
            d(0, b"GET /1 HTTP/1.1\r\n\r\n", 3),
            d(0, b"GET /2 HTTP/1.1\r\n\r\n", 5),
            ("g", 1, 40, 6),
            d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2", 6),
        ]
    )
    assert [summary(e) for e in exs] == [
        (("GET", "/0", b""), (200, b"0"), None),
        (("GET", "/1", b""), None, "pair-not-found"),
        (("GET", "/2", b""), (200, b"2"), None),
    ]
    assert exs[1].error is not None and "capture gap" in exs[1].error[1]


def test_lost_request_leaves_an_orphan_response() -> None:
    _, exs = run(
        [
            d(0, b"GET /0 HTTP/1.1\r\n\r\n", 1),
            d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0", 2),
            ("g", 0, 30, 3),
            d(1, b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", 4),
            d(0, b"GET /2 HTTP/1.1\r\n\r\n", 5),
            d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2", 6),
        ]
    )
    assert [summary(e) for e in exs] == [
        (("GET", "/0", b""), (200, b"0"), None),
        (None, (302, b""), "pair-not-found"),
        (("GET", "/2", b""), (200, b"2"), None),
    ]


def test_gap_in_a_head_reports_the_partial_message_and_resyncs() -> None:
    _, exs = run(
        [
            d(0, REQ + REQ),
            d(1, b"HTTP/1.1 500 Oops\r\nContent-Le"),
            ("g", 1, 100, 1),
            d(1, b"junk tail of a body\r\n" + RESP5),
        ]
    )
    assert exs[0].response is not None and exs[0].response.status == 500
    assert exs[0].error == ("dissection", "message head cut by a capture gap")
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


def test_midstream_capture_resyncs_on_the_next_status_line() -> None:
    # The capture starts inside a response body: skip to the next status line. That response
    # began before any captured request, so it answers none of them.
    conn, exs = run(
        [
            d(1, b"of a previous body</html>\r\n" + RESP5[:20], 1),
            d(1, RESP5[20:], 2),
            d(0, REQ, 3),
            d(1, RESP5, 4),
        ]
    )
    assert conn.client_side == 0
    assert conn.stats.bytes_discarded == len(b"of a previous body</html>\r\n")
    assert [summary(e) for e in exs] == [
        (None, (200, b"hello"), "pair-not-found"),
        (("GET", "/a?x=1", b""), (200, b"hello"), None),
    ]
    assert exs[0].error == (
        "pair-not-found",
        "no request seen for this response (request not captured)",
    )


def test_capture_starting_with_a_whole_response() -> None:
    # tests/golden response-without-request.pcap: entry 0 the response alone, entry 1 complete.
    conn, exs = run([d(1, RESP5, 1), d(0, REQ, 5), d(1, RESP5, 6)])
    assert conn.client_side == 0
    assert [summary(e) for e in exs] == [
        (None, (200, b"hello"), "pair-not-found"),
        (("GET", "/a?x=1", b""), (200, b"hello"), None),
    ]


# --- ends, limits, timestamps ---------------------------------------------------------------------


def test_unanswered_request_at_end_is_pair_not_found() -> None:
    _, exs = run([d(0, REQ), ("e", "fin", 5)])
    assert exs[0].response is None
    assert exs[0].error == (
        "pair-not-found",
        "no response seen for this request (connection ended (fin))",
    )


def test_connection_reset_in_a_body_is_a_connection_error() -> None:
    _, exs = run(
        [d(0, REQ), d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"), ("e", "rst", 7)]
    )
    resp = exs[0].response
    assert resp is not None and resp.body == b"partial"
    assert exs[0].error == (
        "connection",
        "connection ended (rst) in the response body (7 of 100 bytes)",
    )


@pytest.mark.parametrize("cut", [0, 100])  # whole (one-slice fast path) and streamed
def test_max_body_keeps_a_prefix_and_counts_the_rest(cut: int) -> None:
    body = bytes(range(256)) * 40
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    packets = [d(0, REQ), d(1, resp[:cut]), d(1, resp[cut:])] if cut else [d(0, REQ), d(1, resp)]
    _, exs = run(packets, limits=HttpLimits(max_body=1000))
    msg = exs[0].response
    assert msg is not None
    assert (msg.body, msg.body_size, msg.body_truncated) == (body[:1000], len(body), True)
    assert msg.wire_size == len(resp)
    assert exs[0].error is None


def test_head_longer_than_max_head_is_an_error_then_resync() -> None:
    big = b"GET /big HTTP/1.1\r\n" + b"X: " + b"a" * 300 + b"\r\n\r\n"
    _, exs = run([d(0, big + REQ), d(1, RESP5 + RESP5)], limits=HttpLimits(max_head=128))
    assert exs[0].request is not None and exs[0].request.target == "/big"
    assert exs[0].error is not None and exs[0].error[0] == "dissection"
    assert "max_head" in exs[0].error[1]
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


def test_max_pending_evicts_the_oldest_as_pair_not_found() -> None:
    reqs = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(5))
    conn = HttpConnection(HttpLimits(max_pending=3))
    conn.data(0, reqs, 1)
    early = conn.pop_exchanges()
    assert conn.stats.exchanges_evicted == 2
    assert [(e.request.target, e.error and e.error[0]) for e in early if e.request] == [
        ("/0", "pair-not-found"),
        ("/1", "pair-not-found"),
    ]
    # The responses of the evicted requests come out on their own; the rest still pair.
    resps = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i for i in range(5))
    conn.data(1, resps, 2)
    late = conn.pop_exchanges()
    assert [summary(e) for e in late] == [
        (None, (200, b"0"), "pair-not-found"),
        (None, (200, b"1"), "pair-not-found"),
        (("GET", "/2", b""), (200, b"2"), None),
        (("GET", "/3", b""), (200, b"3"), None),
        (("GET", "/4", b""), (200, b"4"), None),
    ]
    conn.end("fin", 3)
    assert conn.pop_exchanges() == []


def test_non_http_stream_is_given_up_after_max_probe() -> None:
    conn = HttpConnection(HttpLimits(max_probe=4096))
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 8
    for _ in range(4):
        conn.data(0, tls, 1)
        conn.data(1, tls, 2)
    assert conn.client_side is None
    assert not conn.active
    conn.end("fin", 3)
    assert conn.pop_exchanges() == []


def test_timestamps_are_those_of_the_first_and_last_byte() -> None:
    _, exs = run(
        [
            d(0, b"POST / HTTP/1.1\r\nCont", 100),
            d(0, b"ent-Length: 6\r\n\r\nab", 200),
            d(0, b"cdef", 300),
            d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 400),
        ]
    )
    req = exs[0].request
    assert req is not None and (req.ts_first_ns, req.ts_last_ns) == (100, 300)
    assert exs[0].response is not None and exs[0].response.ts_first_ns == 400


# --- split invariance ---------------------------------------------------------------------------

CASES: dict[str, list[Packet]] = {
    "get": [d(0, REQ, 1), d(1, RESP5, 2)],
    "flipped": [d(1, REQ, 1), d(0, RESP5, 2)],
    "chunked": [
        d(0, REQ, 1),
        d(
            1,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            2,
        ),
    ],
    "chunked-bare-lf": [
        d(0, REQ, 1),
        d(1, b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n" + RESP5, 2),
        d(0, REQ, 3),
    ],
    "head-204-304": [
        d(0, b"HEAD / HTTP/1.1\r\n\r\n" + REQ + REQ, 1),
        d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nHTTP/1.1 204 No\r\n\r\n", 2),
        d(1, b"HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n", 3),
    ],
    "continue": [
        d(0, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", 1),
        d(1, b"HTTP/1.1 100 Continue\r\n\r\n", 2),
        d(0, b"abc", 3),
        d(1, RESP5, 4),
    ],
    "pipelined": [
        d(0, REQ * 3, 1),
        d(1, RESP5 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + RESP5, 2),
    ],
    "http10-close": [
        d(0, b"GET / HTTP/1.0\r\n\r\n", 1),
        d(1, b"HTTP/1.0 200 OK\r\n\r\nabc\r\n\r\ndef", 2),
        ("e", "fin", 3),
    ],
    "upgrade": [
        d(0, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x01x", 1),
        d(1, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x01y", 2),
    ],
    "connect-refused": [
        d(0, b"CONNECT x:1 HTTP/1.1\r\n\r\n" + REQ, 1),
        d(1, b"HTTP/1.1 403 No\r\nContent-Length: 0\r\n\r\n" + RESP5, 2),
    ],
    "lenient": [
        d(0, b"\r\nGET / HTTP/1.\nA: 1\n  2\nB : 3\n\n", 1),
        d(1, b"HTTP/1.1 200\nContent-Length: 2\n\nok", 2),
    ],
    "malformed": [d(0, b"GET/HTTP/1.1\nHost: h\n\n", 1), d(1, b"HTTP/1.0 400 Bad\r\n\r\nbad", 2)],
    "te-cl": [
        d(
            0,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n0\r\n\r\n"
            + REQ,
            1,
        ),
    ],
    "bad-chunk": [
        d(0, REQ + REQ, 1),
        d(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + RESP5, 2),
    ],
    "gap-in-body": [
        d(0, REQ + REQ, 1),
        d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 2),
        ("g", 1, 4, 3),
        d(1, b"xyz" + RESP5, 4),
    ],
    "gap-lost-response": [
        d(0, b"GET /0 HTTP/1.1\r\n\r\n", 1),
        d(1, RESP5, 2),
        d(0, b"GET /1 HTTP/1.1\r\n\r\n", 3),
        d(0, b"GET /2 HTTP/1.1\r\n\r\n", 5),
        ("g", 1, 43, 6),
        d(1, b"partial body\r\n" + RESP5, 6),
    ],
    "gap-in-head": [
        d(0, REQ + REQ, 1),
        d(1, b"HTTP/1.1 500 Oops\r\nContent-Le", 2),
        ("g", 1, 100, 3),
        d(1, b"junk\r\n" + RESP5, 4),
    ],
    "midstream": [d(1, b"tail of a body\r\n" + RESP5, 1), d(0, REQ, 2), d(1, RESP5, 3)],
    "response-first": [d(1, RESP5, 2), d(0, REQ, 1)],
    "orphan-first": [d(1, RESP5, 1), d(0, REQ, 2), d(1, RESP5, 3)],
    "rst-in-body": [
        d(0, REQ, 1),
        d(1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", 2),
        ("e", "rst", 3),
    ],
    "cl-leading-zeros": [
        d(0, b"POST / HTTP/1.1\r\nContent-Length: 00000000000000000000003\r\n\r\nabc" + REQ, 1),
        d(1, RESP5 + RESP5, 2),
    ],
    "te-folded": [
        d(
            0,
            b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + REQ,
            1,
        ),
        d(1, RESP5 + RESP5, 2),
    ],
    "multi-packet": [
        d(0, b"POST /x HTTP/1.1\r\nCont", 1),
        d(0, b"ent-Length: 6\r\n\r\nab", 2),
        d(0, b"cdef", 3),
        d(1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", 4),
        d(1, b"cd\r\n0\r\n\r\n", 5),
    ],
}


def _whole(packets: list[Packet]) -> list[Exchange]:
    return run(packets)[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_byte_by_byte_equals_whole(name: str) -> None:
    expected = _whole(CASES[name])
    assert expected, "every case yields at least one exchange"
    got = run(CASES[name], split=lambda data: [data[i : i + 1] for i in range(len(data))])[1]
    assert got == expected


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**32 - 1))
def test_random_splits_equal_whole(name: str, seed: int) -> None:
    rnd = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 6))))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    assert run(CASES[name], split=split)[1] == _whole(CASES[name])


@pytest.mark.parametrize(
    "name",
    ["get", "chunked", "continue", "pipelined", "connect-refused", "upgrade", "te-cl", "malformed"],
)
def test_each_side_in_one_piece_equals_whole(name: str) -> None:
    """Without gaps or time differences, feeding all client bytes then all server bytes pairs the same."""
    packets = [(p[0], p[1], p[2], 1) for p in CASES[name] if p[0] == "d"]
    client = run(packets)[0].client_side
    streams = {side: b"".join(p[2] for p in packets if p[1] == side) for side in (0, 1)}
    merged = [
        d(client or 0, streams[client or 0], 1),
        d(1 - (client or 0), streams[1 - (client or 0)], 1),
    ]
    assert run(merged)[1] == run(packets)[1]


ERROR_TYPES = {"pair-not-found", "dissection", "connection", "timeout"}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**32 - 1))
def test_mutated_streams_never_raise_and_stay_split_invariant(name: str, seed: int) -> None:
    """Damaged input (bytes dropped, inserted, flipped; extra gaps) is data, never an exception."""
    rnd = random.Random(seed)
    packets: list[Packet] = []
    for p in CASES[name]:
        if p[0] != "d":
            packets.append(p)
            continue
        data = bytearray(p[2])
        for _ in range(rnd.randint(0, 4)):
            if not data:
                break
            i = rnd.randrange(len(data))
            op = rnd.randrange(3)
            if op == 0:
                del data[i]
            elif op == 1:
                data.insert(i, rnd.choice(b"\r\n :0aGHT/1\x00\xff"))
            else:
                data[i] = rnd.randrange(256)
        if data:
            packets.append(("d", p[1], bytes(data), p[3]))
        if rnd.random() < 0.15:
            packets.append(("g", rnd.randrange(2), rnd.randint(1, 50), p[3]))
    conn, exs = run(packets)
    assert not conn.active
    for ex in exs:
        assert ex.request is not None or ex.response is not None
        assert ex.error is None or ex.error[0] in ERROR_TYPES
        for msg in (ex.request, ex.response):
            if msg is not None:
                assert len(msg.body) <= msg.body_size <= msg.wire_size
                assert msg.body_truncated == (len(msg.body) < msg.body_size)

    def split(data: bytes) -> list[bytes]:
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 6))))
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    assert run(packets, split=split)[1] == exs


# --- hostile framing (issue 9) -------------------------------------------------------------------


@pytest.mark.parametrize("zeros", [1, 17, 30, 5000])
def test_content_length_with_any_number_of_leading_zeros_frames_the_body(zeros: int) -> None:
    """RFC 9110 8.6: Content-Length = 1*DIGIT. Only the value needs a bound, not the digits;
    a length check on the digits would let the request smuggled after the body go unseen."""
    body = b"x" * 50
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    req = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %s50\r\n\r\n%s%s" % (
        b"0" * zeros,
        body,
        smuggled,
    )
    _, exs = run([d(0, req)])
    reqs = [e.request for e in exs if e.request]
    assert [(r.target, r.body) for r in reqs] == [("/", body), ("/smuggled", b"")]
    assert "Content-Length with leading zeros" in reqs[0].anomalies


def test_content_length_beyond_the_bound_is_invalid_whatever_its_digits() -> None:
    resps = b"HTTP/1.1 200 OK\r\nContent-Length: 0001%s\r\n\r\ngarbage\r\n" % (b"0" * 19) + RESP5
    _, exs = run([d(0, REQ + REQ), d(1, resps)])
    assert exs[0].error is not None and "invalid Content-Length" in exs[0].error[1]
    assert summary(exs[1]) == (("GET", "/a?x=1", b""), (200, b"hello"), None)


@pytest.mark.parametrize("fold", [b"\r\n chunked", b"\r\n\tchunked", b" gzip,\r\n chunked"])
def test_obs_folded_transfer_encoding_reaches_the_framing_decision(fold: bytes) -> None:
    """RFC 9112 5.2: obs-fold is replaced by a space before the field is interpreted, so a
    folded `Transfer-Encoding:\\r\\n chunked` frames the body as chunked (as Zeek and a server
    that accepts obs-fold do); the fold is listed as an anomaly."""
    req = (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:%s\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n" % fold
    )
    resp = RESP5 + RESP5
    _, exs = run([d(0, req), d(1, resp)])
    assert [summary(e) for e in exs] == [
        (("POST", "/", b"hello"), (200, b"hello"), None),
        (("GET", "/next", b""), (200, b"hello"), None),
    ]
    first = exs[0].request
    assert first is not None and "obs-fold continuation line" in first.anomalies
    assert dict(first.headers)["Transfer-Encoding"].endswith("chunked")


def test_obs_folded_content_length_is_read_after_unfolding() -> None:
    req = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 5\r\n\r\nhello" + REQ
    _, exs = run([d(0, req), d(1, RESP5 + RESP5)])
    assert [summary(e)[0] for e in exs] == [("POST", "/", b"hello"), ("GET", "/a?x=1", b"")]


@pytest.mark.parametrize("size", [b"00000000000000000005", b"0" * 4000 + b"5"])
def test_chunk_size_with_any_number_of_leading_zeros(size: bytes) -> None:
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n0\r\n\r\n" % size
    _, exs = run([d(0, REQ + REQ), d(1, resp + RESP5)])
    assert [summary(e) for e in exs] == [
        (("GET", "/a?x=1", b""), (200, b"hello"), None),
        (("GET", "/a?x=1", b""), (200, b"hello"), None),
    ]


ATTACK = b"GET /cgi-bin/x;cat /etc/passwd|?data=Download HTTP/1.1\r\nHost: victim\r\n\r\n"


def test_request_target_with_spaces_and_no_response_is_kept_flagged() -> None:
    """Attack traffic: a target with spaces is not a valid request line, but it is plainly a
    request. With nothing from the server it must still be an exchange (flagged), not make
    the connection "not HTTP"."""
    conn, exs = run([d(0, ATTACK, 5)])
    assert conn.client_side == 0
    assert len(exs) == 1
    req = exs[0].request
    assert req is not None and exs[0].response is None
    assert (req.method, req.target, req.version) == (
        "GET",
        "/cgi-bin/x;cat /etc/passwd|?data=Download",
        "HTTP/1.1",
    )
    assert exs[0].error is not None and exs[0].error[0] == "pair-not-found"
    assert "whitespace inside the request target" in exs[0].error[1]


def test_request_target_with_spaces_is_a_dissection_error_when_answered() -> None:
    bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
    for packets in ([d(0, ATTACK, 1), d(1, bad, 2)], [d(0, REQ + ATTACK, 1), d(1, RESP5 + bad, 2)]):
        _, exs = run(packets)
        last = exs[-1]
        assert last.request is not None and last.request.target is not None
        assert " " in last.request.target
        assert last.response is not None and last.response.status == 400
        assert last.error is not None and last.error[0] == "dissection"
        assert "whitespace inside the request target" in last.error[1]


def test_request_target_with_spaces_is_found_when_resynchronising() -> None:
    _, exs = run([d(0, b"tail of something lost\r\n" + ATTACK, 1), d(1, RESP5, 2)])
    assert [e.request.target for e in exs if e.request] == [
        "/cgi-bin/x;cat /etc/passwd|?data=Download"
    ]


def test_pipelined_requests_without_responses_hold_bounded_bodies() -> None:
    """1,500 pipelined 600 KB POSTs and no response (issue 9 saw 2.5 GB). What a connection
    holds is bounded as HttpLimits says: the bodies of messages waiting for their other half
    stay within max_pending_body (the first one waiting keeps its whole body); the bytes cut
    are counted, and the messages say their body is truncated."""
    limits = HttpLimits()
    stats = HttpStats()
    conn = HttpConnection(limits, stats)
    body = b"v" * 600_000
    request = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 600000\r\n\r\n" + body
    out: list[Exchange] = []
    tracemalloc.start()
    try:
        for i in range(1500):
            conn.data(0, request, i)
            out.extend(conn.pop_exchanges())  # what the pipeline does after every data()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    conn.end("eof", 2000)
    out.extend(conn.pop_exchanges())
    assert len(out) == 1500 and all(e.error and e.error[0] == "pair-not-found" for e in out)
    reqs = [e.request for e in out if e.request]
    kept = [r for r in reqs if r.body == body]
    cut = [r for r in reqs if r.body != body]
    assert all(r.body_truncated and r.body_size == 600_000 for r in cut)
    assert stats.waiting_bodies_cut == len(cut) > 1000
    assert stats.waiting_body_bytes_dropped == sum(600_000 - len(r.body) for r in cut)
    assert len(kept) >= limits.max_pending_body // 600_000
    # the connection never held more than its waiting-body budget and one message being read
    # (plus the 1,500 messages' heads and the caller's buffers)
    assert peak < limits.max_pending_body + 3 * limits.max_body + (16 << 20)


def test_the_first_waiting_message_keeps_its_whole_body() -> None:
    conn = HttpConnection(HttpLimits(max_body=1000, max_pending_body=10), HttpStats())
    post = b"POST / HTTP/1.1\r\nContent-Length: 800\r\n\r\n" + b"p" * 800
    conn.data(0, post * 2, 1)
    conn.data(1, RESP5 * 2, 2)
    exs = conn.pop_exchanges()
    assert [len(e.request.body) for e in exs if e.request] == [800, 0]
    assert [e.error for e in exs] == [None, None]  # cut, not an error: both are paired
