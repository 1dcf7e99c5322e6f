"""capture.http2: frame-level cases for every framing, pairing, reset and gap rule; split
invariance and robustness (hypothesis) on the fixtures' byte streams.

A case is a list of packets in capture order: ("d", side, bytes, ts) data, ("g", side, length, ts)
a capture gap, ("e", reason, ts) the connection's end, as in tests/capture/test_http1.py. Header
blocks are encoded by a real HPACK encoder (one per direction, as on a connection).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.decode import Decoder
from capture.http1 import Message
from capture.http2 import PREFACE, Http2Connection, Http2Exchange, Http2Limits, looks_like_http2
from capture.reassembly import Closed, Data, Gap, Reassembler
from capture.sources import CaptureFile

Packet = tuple[Any, ...]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "h2"

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
END_STREAM, END_HEADERS, PADDED, PRIO = 0x1, 0x4, 0x8, 0x20


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload
    )


class Side:
    """One direction's HPACK encoder, making frames."""

    def __init__(self) -> None:
        self.enc = Encoder()

    def headers(
        self, sid: int, fields: list[tuple[str, str]], end: bool = False, flags: int = 0
    ) -> bytes:
        return frame(
            HEADERS, END_HEADERS | (END_STREAM if end else 0) | flags, sid, self.enc.encode(fields)
        )

    def block(self, fields: list[tuple[str, str]]) -> bytes:
        return self.enc.encode(fields)


def req(
    path: str = "/a", method: str = "GET", extra: list[tuple[str, str]] = ()
) -> list[tuple[str, str]]:  # type: ignore[assignment]
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", "h.example"),
        (":path", path),
        *extra,
    ]


def resp(status: str = "200", extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    return [(":status", status), *extra]


def d(side: int, data: bytes, ts: int = 1) -> Packet:
    return ("d", side, data, ts)


def run(
    packets: list[Packet], limits: Http2Limits | None = None, split: Any = None
) -> tuple[Http2Connection, list[Http2Exchange]]:
    conn = Http2Connection(limits or Http2Limits())
    out: list[Http2Exchange] = []
    ended = False
    for p in packets:
        if p[0] == "d":
            _, side, data, ts = p
            for piece in split(data) if split else [data]:
                conn.data(side, piece, ts)
        elif p[0] == "g":
            conn.gap(p[1], p[2], p[3])
        elif p[0] == "u":
            conn.upgrade(p[1], p[2], p[3])
        else:
            conn.end(p[1], p[2])
            ended = True
        out.extend(conn.pop_exchanges())
    if not ended:
        conn.end("fin", 10**9)
        out.extend(conn.pop_exchanges())
    return conn, out


def summary(ex: Http2Exchange) -> tuple[Any, ...]:
    q, r = ex.request, ex.response
    return (
        ex.stream_id,
        q and (q.method, q.target, q.body),
        r and (r.status, r.body),
        ex.error and ex.error[0],
    )


def start() -> tuple[Side, Side, list[Packet]]:
    c, s = Side(), Side()
    return (
        c,
        s,
        [
            d(0, PREFACE + frame(SETTINGS, 0, 0)),
            d(1, frame(SETTINGS, 0, 0) + frame(SETTINGS, 1, 0)),
        ],
    )


# --- basics ---------------------------------------------------------------------------------


def test_prior_knowledge_get_becomes_one_exchange_in_the_http1_shape() -> None:
    c, s, pk = start()
    answer = s.headers(1, resp(extra=[("content-type", "text/plain")])) + frame(
        DATA, END_STREAM, 1, b"hello"
    )
    pk += [
        d(0, c.headers(1, req("/items?x=1", extra=[("user-agent", "t/1")]), end=True), 10),
        d(1, answer, 25),
    ]
    conn, exs = run(pk)
    assert conn.client_side == 0 and conn.recognised
    [ex] = exs
    q, r = ex.request, ex.response
    assert isinstance(q, Message) and isinstance(r, Message)
    assert (q.method, q.target, q.status, q.version) == ("GET", "/items?x=1", None, "HTTP/2.0")
    assert q.headers == req("/items?x=1", extra=[("user-agent", "t/1")])
    assert (r.status, r.reason, r.version, r.body, r.body_size) == (
        200,
        "OK",
        "HTTP/2.0",
        b"hello",
        5,
    )
    assert (q.ts_first_ns, r.ts_first_ns, r.ts_last_ns) == (10, 25, 25)
    assert r.wire_size == len(answer)
    assert (ex.error, ex.stream_id, ex.request_messages) == (None, 1, -1)


def test_the_preface_on_side_one_makes_side_one_the_client() -> None:
    c, s = Side(), Side()
    conn, exs = run(
        [
            d(1, PREFACE + frame(SETTINGS, 0, 0) + c.headers(1, req(), end=True)),
            d(0, frame(SETTINGS, 0, 0) + s.headers(1, resp("204"), end=True)),
        ]
    )
    assert conn.client_side == 1
    assert [summary(e) for e in exs] == [(1, ("GET", "/a", b""), (204, b""), None)]


def test_continuation_padding_priority_and_padded_data() -> None:
    c, s, pk = start()
    block = c.block(req(extra=[("x-big", "v" * 300)]))
    pad = 6
    headers = bytes([pad]) + b"\x00\x00\x00\x00\x10" + block[:100] + b"\x00" * pad
    pk += [
        d(
            0,
            frame(HEADERS, PADDED | PRIO, 1, headers)
            + frame(CONT, 0, 1, block[100:200])
            + frame(CONT, END_HEADERS | END_STREAM * 0, 1, block[200:]),
        ),
        d(0, frame(DATA, PADDED | END_STREAM, 1, bytes([3]) + b"body" + b"\0\0\0")),
        d(
            1,
            s.headers(1, resp())
            + frame(DATA, PADDED, 1, bytes([0]) + b"ok")
            + frame(DATA, END_STREAM, 1),
        ),
    ]
    _, [ex] = run(pk)
    assert ex.request is not None and ex.request.headers[-1] == ("x-big", "v" * 300)
    assert ex.request.body == b"body"
    assert ex.response is not None and ex.response.body == b"ok"
    assert ex.error is None


def test_trailers_are_appended_and_grpc_messages_counted() -> None:
    c, s, pk = start()
    msg = b"\x00\x00\x00\x00\x03abc"
    grpc = [("content-type", "application/grpc")]
    pk += [
        d(0, c.headers(1, req("/pkg.Svc/Do", "POST", grpc)) + frame(DATA, END_STREAM, 1, msg * 2)),
        d(
            1,
            s.headers(1, resp(extra=grpc))
            + frame(DATA, 0, 1, msg[:3])
            + frame(DATA, 0, 1, msg[3:] + msg),
        ),
        d(1, frame(HEADERS, END_HEADERS | END_STREAM, 1, s.block([("grpc-status", "0")]))),
    ]
    _, [ex] = run(pk)
    assert ex.response is not None and ex.response.headers[-1] == ("grpc-status", "0")
    assert (ex.request_messages, ex.response_messages) == (2, 2)


def test_interim_100_continue_is_skipped() -> None:
    c, s, pk = start()
    pk += [
        d(0, c.headers(1, req("/up", "POST", [("expect", "100-continue")]))),
        d(1, s.headers(1, resp("100"))),
        d(0, frame(DATA, END_STREAM, 1, b"payload")),
        d(1, s.headers(1, resp("201"), end=True)),
    ]
    _, exs = run(pk)
    assert [summary(e) for e in exs] == [(1, ("POST", "/up", b"payload"), (201, b""), None)]


def test_many_concurrent_streams_pair_by_stream_id_whatever_the_order() -> None:
    c, s, pk = start()
    sids = list(range(1, 80, 2))
    pk.append(d(0, b"".join(c.headers(i, req(f"/p{i}"), end=True) for i in sids)))
    pk.append(d(1, b"".join(s.headers(i, resp()) for i in reversed(sids))))
    for k in range(3):
        pk.append(
            d(
                1,
                b"".join(
                    frame(DATA, END_STREAM if k == 2 else 0, i, f"{i}.{k};".encode()) for i in sids
                ),
            )
        )
    _, exs = run(pk)
    assert sorted(summary(e) for e in exs) == sorted(
        (i, ("GET", f"/p{i}", b""), (200, f"{i}.0;{i}.1;{i}.2;".encode()), None) for i in sids
    )


def test_a_data_frame_larger_than_the_default_max_frame_size_is_read_in_sync() -> None:
    c, s, pk = start()
    body = bytes(range(256)) * 300  # 76,800 bytes in one frame, as sv-http2-long-frame has
    pk += [
        d(0, c.headers(1, req(), end=True)),
        d(1, s.headers(1, resp()) + frame(DATA, END_STREAM, 1, body)),
    ]
    _, [ex] = run(pk)
    assert ex.response is not None and ex.response.body == body


# --- resets, GOAWAY, end --------------------------------------------------------------------


def test_rst_stream_is_a_connection_error_unless_the_response_was_complete() -> None:
    c, s, pk = start()
    pk += [
        d(
            0,
            c.headers(1, req("/slow"), end=True)
            + c.headers(3, req("/up", "POST"))
            + frame(DATA, 0, 3, b"x" * 10),
        ),
        d(1, s.headers(1, resp()) + frame(DATA, 0, 1, b"partial")),
        d(0, frame(RST, 0, 1, (8).to_bytes(4, "big"))),
        d(1, s.headers(3, resp("413"), end=True) + frame(RST, 0, 3, b"\0\0\0\0")),
        d(0, c.headers(5, req("/x"), end=True)),
        d(1, frame(RST, 0, 5, (7).to_bytes(4, "big")) + frame(RST, 0, 3, (8).to_bytes(4, "big"))),
    ]
    conn, exs = run(pk)
    got = {e.stream_id: e for e in exs}
    assert got[1].error == ("connection", "stream 1 reset by the client: CANCEL (0x8)")
    assert got[1].response is not None and got[1].response.body == b"partial"
    assert got[3].error is None and got[3].response is not None and got[3].response.status == 413
    assert got[5].error == ("connection", "stream 5 reset by the server: REFUSED_STREAM (0x7)")
    assert got[5].response is None
    assert len(exs) == 3 and conn.stats.resets == 4  # the late reset of stream 3 changed nothing


def test_goaway_ends_the_streams_it_did_not_process() -> None:
    c, s, pk = start()
    pk += [
        d(0, b"".join(c.headers(i, req(f"/{i}"), end=True) for i in (1, 3, 5))),
        d(1, s.headers(1, resp(), end=True)),
        d(1, frame(GOAWAY, 0, 0, (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"bye")),
    ]
    conn, exs = run(pk, split=None)
    got = {e.stream_id: e.error for e in exs}
    assert got[1] is None
    assert got[5] == (
        "connection",
        "stream 5 not processed: GOAWAY INTERNAL_ERROR (0x2) from the server (bye), last stream 3",
    )
    # stream 3 was processed but never answered: the connection's end names the GOAWAY
    assert got[3] == ("pair-not-found", "stream 3: no response")
    assert conn.stats.goaways == 1


@pytest.mark.parametrize(("reason", "kind"), [("fin", "connection"), ("timeout", "timeout")])
def test_connection_end_reports_unfinished_and_unanswered_streams(reason: str, kind: str) -> None:
    c, s, pk = start()
    pk += [
        d(0, c.headers(1, req("/a"), end=True) + c.headers(3, req("/b"), end=True)),
        d(1, s.headers(1, resp()) + frame(DATA, 0, 1, b"half")),
        ("e", reason, 99),
    ]
    _, exs = run(pk)
    got = {e.stream_id: e.error for e in exs}
    assert got[1] == (kind, f"connection ended ({reason}) in stream 1")
    assert got[3] == ("pair-not-found", "stream 3: no response")


def test_server_push_makes_the_promised_request() -> None:
    c, s, pk = start()
    promise = (2).to_bytes(4, "big") + s.block(req("/style.css"))
    pk += [
        d(0, c.headers(1, req("/index.html"), end=True)),
        d(1, frame(PUSH, END_HEADERS, 1, promise) + s.headers(1, resp(), end=True)),
        d(
            1,
            s.headers(2, resp(extra=[("content-type", "text/css")]))
            + frame(DATA, END_STREAM, 2, b"css"),
        ),
    ]
    _, exs = run(pk)
    assert sorted(summary(e) for e in exs) == [
        (1, ("GET", "/index.html", b""), (200, b""), None),
        (2, ("GET", "/style.css", b""), (200, b"css"), None),
    ]


def test_upgrade_makes_the_http1_request_stream_one() -> None:
    upgrade = Message(
        "GET", "/robots.txt", None, None, "HTTP/1.1", [("Host", "h")], b"", 0, False, 60, 5, 5, None
    )
    c, s = Side(), Side()
    conn, exs = run(
        [
            ("u", upgrade, 0, 5),
            d(
                1,
                frame(SETTINGS, 0, 0) + s.headers(1, resp()) + frame(DATA, END_STREAM, 1, b"rules"),
                7,
            ),
            d(0, PREFACE + frame(SETTINGS, 0, 0) + c.headers(3, req("/h"), end=True), 8),
            d(1, s.headers(3, resp("404"), end=True), 9),
        ]
    )
    assert conn.client_side == 0
    [one, three] = sorted(exs, key=lambda e: e.stream_id)
    assert one.request is upgrade and one.response is not None and one.response.body == b"rules"
    assert one.error is None
    assert summary(three) == (3, ("GET", "/h", b""), (404, b""), None)


# --- limits ---------------------------------------------------------------------------------


def test_max_body_keeps_a_prefix_and_counts_the_rest() -> None:
    c, s, pk = start()
    pk += [
        d(0, c.headers(1, req(), end=True)),
        d(
            1,
            s.headers(1, resp())
            + frame(DATA, 0, 1, b"a" * 700)
            + frame(DATA, END_STREAM, 1, b"b" * 700),
        ),
    ]
    _, [ex] = run(pk, Http2Limits(max_body=1000))
    r = ex.response
    assert r is not None and (r.body, r.body_size, r.body_truncated) == (
        b"a" * 700 + b"b" * 300,
        1400,
        True,
    )
    assert ex.error is None  # cut on purpose, not lost


def test_max_body_total_bounds_what_concurrent_streams_keep_together() -> None:
    c, s, pk = start()
    pk += [
        d(0, c.headers(1, req("/a"), end=True) + c.headers(3, req("/b"), end=True)),
        d(1, s.headers(1, resp()) + s.headers(3, resp())),
        d(1, frame(DATA, 0, 1, b"a" * 700) + frame(DATA, END_STREAM, 3, b"b" * 700)),
        d(0, c.headers(5, req("/c"), end=True)),
        d(
            1,
            frame(DATA, END_STREAM, 1, b"a" * 10)
            + s.headers(5, resp())
            + frame(DATA, END_STREAM, 5, b"c" * 700),
        ),
    ]
    conn, exs = run(pk, Http2Limits(max_body=800, max_body_total=1000))
    got = {e.stream_id: e.response for e in exs}
    assert all(r is not None for r in got.values())
    bodies = {sid: (len(r.body), r.body_size, r.body_truncated) for sid, r in got.items() if r}
    # 3 got what 1's 700 left of the budget; once 3 ended its bytes were free again, for the
    # rest of 1 and for 5.
    assert bodies == {1: (710, 710, False), 3: (300, 700, True), 5: (700, 700, False)}
    assert conn.body_bytes == 0


def test_max_streams_evicts_the_oldest_as_pair_not_found() -> None:
    c, s, pk = start()
    pk += [d(0, b"".join(c.headers(i, req(f"/{i}"), end=True) for i in (1, 3, 5)))]
    pk += [d(1, b"".join(s.headers(i, resp(), end=True) for i in (3, 5)))]
    conn, exs = run(pk, Http2Limits(max_streams=2))
    assert conn.stats.streams_evicted == 1
    got = {e.stream_id: e.error for e in exs}
    assert got == {
        1: (
            "pair-not-found",
            "stream 1: no response (given up: more than max_streams=2 streams in progress)",
        ),
        3: None,
        5: None,
    }


def test_an_oversized_header_block_is_skipped_and_never_decoded_wrong_after() -> None:
    c, s, pk = start()
    pk += [
        d(0, c.headers(1, req(extra=[("x-a", "1")]), end=True)),
        d(0, c.headers(3, req(extra=[("x-big", "z" * 3000)]), end=True)),  # over the limit
        d(0, c.headers(5, req(extra=[("x-a", "1"), ("x-c", "2")]), end=True)),
        d(1, b"".join(s.headers(i, resp(), end=True) for i in (1, 3, 5))),
    ]
    _, exs = run(pk, Http2Limits(max_header_block=1000))
    got = {e.stream_id: e for e in exs}
    assert got[1].error is None
    assert got[3].request is None and got[3].error is not None
    # x-a and :authority are references to entries the skipped block moved: unknown, not wrong
    five = got[5]
    assert five.request is not None and ("x-c", "2") in five.request.headers
    assert ("x-a", "1") not in five.request.headers
    assert five.error is not None and "referenced HPACK entries" in five.error[1]


def test_bytes_that_are_not_http2_are_given_up_after_max_probe() -> None:
    rng = random.Random(5)
    noise = bytes(rng.randrange(256) for _ in range(3000))
    conn, exs = run([d(0, noise), d(1, noise)], Http2Limits(max_probe=4000))
    assert not conn.active and exs == []


# --- gaps and mid-stream --------------------------------------------------------------------


def test_gap_inside_a_data_frame_keeps_framing() -> None:
    c, s, pk = start()
    body = frame(DATA, END_STREAM, 1, b"0123456789" * 10)
    pk += [
        d(0, c.headers(1, req(), end=True) + c.headers(3, req("/b"), end=True)),
        d(1, s.headers(1, resp()) + body[:30]),
        ("g", 1, 40, 5),
        d(1, body[70:] + s.headers(3, resp(), end=True)),
    ]
    _, exs = run(pk)
    got = {e.stream_id: e for e in exs}
    r = got[1].response
    assert r is not None and (len(r.body), r.body_size, r.body_truncated) == (60, 100, True)
    assert got[1].error == ("dissection", "40 bytes of the response body lost in a capture gap")
    assert got[3].error is None


def test_gap_across_frames_realigns_and_flags_open_streams() -> None:
    c, s, pk = start()
    lost = s.headers(3, resp()) + frame(DATA, 0, 3, b"gone")
    pk += [
        d(
            0,
            c.headers(1, req(), end=True)
            + c.headers(3, req("/b"), end=True)
            + c.headers(5, req("/c"), end=True),
        ),
        d(1, s.headers(1, resp())),
        ("g", 1, len(lost), 5),  # ends exactly on a frame boundary: the framing is unknown
        d(1, frame(DATA, END_STREAM, 1, b"one") + s.headers(5, [(":status", "202")], end=True)),
    ]
    _, exs = run(pk)
    got = {e.stream_id: e for e in exs}
    assert (
        got[1].error is not None
        and "lost in a capture gap while the stream was open" in got[1].error[1]
    )
    assert got[1].response is not None and got[1].response.body == b"one"
    assert got[3].error == ("pair-not-found", "stream 3: no response")
    assert got[5].error is None and got[5].response is not None and got[5].response.status == 202


def test_mid_stream_start_inside_a_frame_realigns_on_the_next_frames() -> None:
    c, s = Side(), Side()
    c.block(req("/old", extra=[("x-t", "acme")]))  # entries inserted before the capture
    s.block(resp(extra=[("x-s", "a")]))
    tail = frame(DATA, END_STREAM, 1, b"q" * 500)[120:]  # the capture starts inside this frame
    conn, exs = run(
        [
            d(0, tail + c.headers(3, req("/new", extra=[("x-t", "acme")]), end=True)),
            d(1, s.headers(3, resp(extra=[("x-s", "a")]), end=True)),
        ]
    )
    assert conn.stats.bytes_skipped == len(tail)
    [ex] = exs
    assert ex.request is not None and (ex.request.method, ex.request.target) == ("GET", "/new")
    assert ex.response is not None and ex.response.status == 200
    assert ex.error is not None and ex.error[0] == "dissection"
    assert "2 request and 1 response header field(s)" in ex.error[1]


def test_continuation_without_its_headers_is_ignored() -> None:
    c, s, pk = start()
    pk += [
        d(0, frame(CONT, END_HEADERS, 1, b"\x82\x86") + c.headers(3, req(), end=True)),
        d(1, s.headers(3, resp(), end=True)),
    ]
    _, exs = run(pk)
    assert [summary(e) for e in exs] == [(3, ("GET", "/a", b""), (200, b""), None)]


def test_looks_like_http2() -> None:
    assert looks_like_http2(PREFACE) and looks_like_http2(PREFACE[:5])
    assert not looks_like_http2(b"GET / HTTP/1.1\r\n") and not looks_like_http2(b"")


# --- split invariance and robustness on the fixtures ----------------------------------------


def _streams(name: str) -> list[list[Packet]]:
    """The reassembled events of each TCP connection of a fixture, as packets."""
    dec, r = Decoder(), Reassembler()
    conns: dict[int, list[Packet]] = {}
    for ts, lt, fr in CaptureFile(FIXTURES / name):
        seg = dec.decode(ts, lt, fr)
        if seg is not None:
            r.feed(seg)
    r.close_all(0)
    for ev in r.pop_events():
        pk = conns.setdefault(ev.conn_id, [])
        if isinstance(ev, Data):
            pk.append(("d", ev.side, ev.data, ev.ts_ns))
        elif isinstance(ev, Gap):
            pk.append(("g", ev.side, ev.length, ev.ts_ns))
        elif isinstance(ev, Closed):
            pk.append(("e", ev.reason, ev.ts_ns))
    return list(conns.values())


PRIOR_KNOWLEDGE = sorted(
    p.name
    for p in FIXTURES.glob("*.pcap")
    if p.name != "h2-upgrade.pcap"  # that one starts as HTTP/1
)
_CASES = {name: _streams(name)[0] for name in PRIOR_KNOWLEDGE}


@pytest.mark.parametrize("name", PRIOR_KNOWLEDGE)
def test_fixture_byte_by_byte_equals_whole(name: str) -> None:
    whole = run(_CASES[name])[1]
    assert whole, name
    assert (
        run(_CASES[name], split=lambda data: [data[i : i + 1] for i in range(len(data))])[1]
        == whole
    )


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PRIOR_KNOWLEDGE), st.integers(min_value=0, max_value=2**32))
def test_random_splits_equal_whole(name: str, seed: int) -> None:
    rng = random.Random(seed)

    def split(data: bytes) -> list[bytes]:
        cuts = (
            sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(4))))
            if len(data) > 1
            else []
        )
        return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    assert run(_CASES[name], split=split)[1] == run(_CASES[name])[1]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(PRIOR_KNOWLEDGE), st.integers(min_value=0, max_value=2**32))
def test_mutated_streams_never_raise_and_stay_split_invariant(name: str, seed: int) -> None:
    rng = random.Random(seed)
    packets = []
    for p in _CASES[name]:
        if p[0] == "d" and rng.random() < 0.3:
            buf = bytearray(p[2])
            for _ in range(rng.randrange(1, 6)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            p = ("d", p[1], bytes(buf), p[3])
        elif p[0] == "d" and rng.random() < 0.1:
            p = ("g", p[1], len(p[2]), p[3])  # a lost segment
        packets.append(p)
    conn, exs = run(packets)
    assert len(exs) <= 200
    assert not conn.active

    def split(data: bytes) -> list[bytes]:
        k = rng.randrange(len(data) + 1)
        return [data[:k], data[k:]]

    assert run(packets, split=split)[1] == exs


# --- content detection (capture/dissectors.py asks this with each side's first bytes) ---------


def test_detect_from_the_preface_and_from_headers_frames() -> None:
    from capture.dissect import MORE, NO, YES
    from capture.http2 import detect

    c, s = Side(), Side()
    assert detect(PREFACE + frame(SETTINGS, 0, 0), b"", None) == YES
    assert detect(PREFACE[:10], b"", None) == MORE  # could still be the preface
    assert detect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"", None) == NO  # no need to wait
    assert detect(b"", b"HTTP/1.1 200 OK\r\n", None) == NO
    assert detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"", None) == NO  # TLS
    # mid-connection: a HEADERS frame with pseudo-headers, at the start or after a frame's tail
    headers = c.headers(7, req("/x"), end=True)
    assert detect(headers, b"", None) == YES
    assert detect(b"q" * 40 + headers, b"", None) == YES
    assert detect(b"", frame(WINDOW, 0, 0, b"\0\0\0\x10") + s.headers(7, resp()), None) == YES
    # plausible frames so far, no header block yet: wait for more
    assert detect(frame(DATA, 0, 3, b"abc"), b"", None) == MORE
    assert detect(frame(DATA, 0, 3, b"abc") + b"\xff" * 9, b"", None) == MORE  # side 1 unheard
    assert detect(frame(DATA, 0, 3, b"abc") + b"\xff" * 9, b"\xfe" * 20, None) == NO
    # a HEADERS frame whose block has no pseudo-header (a trailer block) proves nothing yet
    assert (
        detect(frame(HEADERS, END_HEADERS, 3, c.block([("grpc-status", "0")])), b"", None) == MORE
    )
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(512))
    assert detect(noise, noise[::-1], None) == NO
