"""The speed-ups of the packet pipeline change nothing a user can see.

Each fast path is checked against the general code it short-cuts: the HTTP head caches (a head
parsed from a cache, parsed afresh, or parsed byte by byte by the general path gives the same
exchanges; the caches stay within their bounds), the per-connection EntryBuilder (the same
entries as build_entry, each with its own src/dst/headers objects), the reassembler's direct
data delivery (the same bytes in the same order as Data events) and the cheap time formatting.
"""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from capture import http1_heads as http1
from capture.entries import EntryBuilder, Identity, build_entry
from capture.entry_fields import rfc3339_ns
from capture.http1 import Exchange, HttpConnection, Message
from capture.reassembly import Data, Event, Gap, Opened, Reassembler
from capture.segment import ACK, FIN, PSH, SYN, Segment

# --- HTTP head caches ---------------------------------------------------------------------------

# Heads the quick path takes, heads it must refuse (anomalies, odd framing), and heads that share
# clean lines with refused ones: a cached line must never hide an anomaly of the head it is in.
STREAMS: dict[str, tuple[bytes, bytes]] = {
    "clean": (
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        b"hello",
    ),
    "bare-lf-in-one-field": (
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\nAccept: */*\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Type: text/plain\nContent-Length: 5\r\n\r\nhello",
    ),
    "fold": (  # continuation lines that look like fields
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n  b: c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nX-Long: a\r\n\tb: c\r\nContent-Length: 5\r\n\r\nhello",
    ),
    "space-before-colon": (
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nAccept : */*\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer : s\r\nContent-Length: 5\r\n\r\nhello",
    ),
    "tab": (
        b"GET /a?x=1 HTTP/1.1\r\nHost:\th\r\nAccept\t: */*\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nX-Tab:\tv\r\nContent-Length: 5\r\n\r\nhello",
    ),
    "framing": (
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    "te-and-cl": (
        b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n"
        b"\r\n0\r\n\r\n",
    ),
    "head-and-304": (
        b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 5\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nServer: s\r\nContent-Length: 5\r\n\r\n",
    ),
    "odd-start-lines": (
        b"get /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200\r\nServer: s\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1  200 OK\r\nServer: s\r\nContent-Length: 0\r\n\r\n",
    ),
    "close-delimited": (
        b"GET /a?x=1 HTTP/1.0\r\nHost: h\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nServer: s\r\n\r\nuntil the end",
    ),
    "non-utf8": (
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Raw: \xff\xfe\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nServer: \xe9t\xe9\r\nContent-Length: 2\r\n\r\nok",
    ),
}


def _clear_caches() -> None:
    for cache in (
        http1._REQUEST_HEADS,
        http1._RESPONSE_HEADS,
        http1._REQUEST_LINES,
        http1._STATUS_LINES,
        http1._FIELD_LINES,
    ):
        cache.items.clear()


def _exchanges(request: bytes, response: bytes, piece: int = 0) -> list[Exchange]:
    """One connection: the request bytes, then the response bytes, then FIN. piece > 0 feeds
    pieces of that many bytes (the general path: no piece is a whole head)."""
    conn = HttpConnection()
    for side, data, ts in ((0, request, 1), (1, response, 2)):
        step = piece or len(data)
        for i in range(0, len(data), step):
            conn.data(side, data[i : i + step], ts)
    conn.end("fin", 3)
    return conn.pop_exchanges()


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_head_caches_never_change_what_is_parsed(name: str) -> None:
    request, response = STREAMS[name]
    _clear_caches()
    cold = _exchanges(request, response)
    warm = _exchanges(request, response)  # now from the caches
    general = _exchanges(request, response, piece=1)  # byte by byte: never the quick path
    assert cold == warm == general
    assert cold, "every stream yields an exchange"


def test_cached_lines_do_not_hide_anomalies_of_other_heads() -> None:
    _clear_caches()
    clean = _exchanges(*STREAMS["clean"])
    assert clean[0].request is not None and clean[0].request.anomalies == ()
    # The same Host/Accept lines (cached now) in a head with a bare LF elsewhere.
    odd = _exchanges(*STREAMS["bare-lf-in-one-field"])
    assert odd[0].request is not None
    assert "bare LF line endings" in odd[0].request.anomalies
    assert odd[0].response is not None
    assert "bare LF line endings" in odd[0].response.anomalies


def test_messages_with_the_same_head_get_their_own_header_lists() -> None:
    _clear_caches()
    first = _exchanges(*STREAMS["clean"])[0]
    second = _exchanges(*STREAMS["clean"])[0]
    assert first.request is not None and second.request is not None
    assert first.request.headers == second.request.headers
    first.request.headers.append(("X-Mine", "1"))
    assert ("X-Mine", "1") not in second.request.headers
    assert ("X-Mine", "1") not in _exchanges(*STREAMS["clean"])[0].request.headers  # type: ignore[union-attr]


def test_parse_caches_are_bounded() -> None:
    cache: http1._Parsed[str, tuple[str, str]] = http1._Parsed(max_items=3, max_key=8)
    for key in ("a", "b", "c"):
        cache.put(key, (key, key))
    assert len(cache.items) == 3 and cache.get("a") == ("a", "a")
    cache.put("d", ("d", "d"))  # full: emptied, then refilled with what is in use now
    assert list(cache.items) == ["d"]
    cache.put("x" * 9, ("long", ""))  # longer than max_key: never stored
    assert "x" * 9 not in cache.items and cache.get("x" * 9) is None
    for cache_in_use in (http1._REQUEST_HEADS, http1._RESPONSE_HEADS):
        assert cache_in_use.max_items == http1.HEAD_CACHE_SIZE == 1024
        assert cache_in_use.max_key == http1.HEAD_CACHE_KEY == 1024
    for cache_in_use in (http1._REQUEST_LINES, http1._STATUS_LINES, http1._FIELD_LINES):
        assert cache_in_use.max_items == http1.LINE_CACHE_SIZE == 4096
        assert cache_in_use.max_key == http1.LINE_CACHE_KEY == 256


def test_many_distinct_heads_keep_the_caches_bounded_and_results_exact() -> None:
    _clear_caches()
    conn = HttpConnection()
    for i in range(3000):
        req = f"GET /item/{i} HTTP/1.1\r\nHost: h\r\nX-Request-Id: {i}\r\n\r\n".encode()
        resp = f"HTTP/1.1 200 OK\r\nX-Id: {i}\r\nContent-Length: {len(str(i))}\r\n\r\n{i}"
        conn.data(0, req, 2 * i)
        conn.data(1, resp.encode(), 2 * i + 1)
    exchanges = conn.pop_exchanges()
    assert [ex.request.target for ex in exchanges] == [f"/item/{i}" for i in range(3000)]  # type: ignore[union-attr]
    assert [ex.response.body for ex in exchanges] == [str(i).encode() for i in range(3000)]  # type: ignore[union-attr]
    assert all(len(c.items) <= c.max_items for c in (http1._REQUEST_HEADS, http1._FIELD_LINES))


# --- entries ------------------------------------------------------------------------------------

T0 = 1703019067482113205
IDENT = Identity("10.0.0.9:30001", "10.0.0.9", "node-a", frozenset({"10.0.0.1"}))
CONN = Opened(3, T0, 4, socket.inet_aton("10.0.0.1"), 51000, socket.inet_aton("10.0.0.2"), 80, True)
CONN6 = Opened(4, T0, 6, socket.inet_pton(socket.AF_INET6, "fd00::1"), 51000,
               socket.inet_pton(socket.AF_INET6, "fd00::2"), 8080, False)  # fmt: skip


def _msg(req: bool, headers: list[tuple[str, str]], body: bytes, ts: int, version: str) -> Message:
    return Message(
        "POST" if req else None,
        "/api/v1/x?a=1&b=2" if req else None,
        None if req else 201,
        None if req else "Created",
        version,
        headers,
        body,
        len(body),
        False,
        100 + len(body),
        ts,
        ts,
        None,
    )


def _exchanges_for_entries() -> Iterator[Exchange]:
    req_h = [("Host", "h"), ("content-type", "application/json"), ("Cookie", "a=1; b=2")]
    resp_h = [("Content-Type", "text/plain"), ("set-cookie", "s=3; Path=/"), ("X-A", "1")]
    for i, version in enumerate(("HTTP/1.1", "HTTP/1.0")):
        req = _msg(True, list(req_h), b'{"k": %d}' % i, T0 + i, version)
        resp = _msg(False, [*resp_h, ("X-A", "2")], b"\xff\x00binary", T0 + i + 3_000_000, version)
        yield Exchange(req, resp, None)
        yield Exchange(req, None, ("pair-not-found", "no response seen for this request"))
        yield Exchange(None, resp, ("pair-not-found", "no request seen for this response"))


@pytest.mark.parametrize("client_side", [0, 1])
@pytest.mark.parametrize("conn", [CONN, CONN6])
def test_entry_builder_builds_what_build_entry_builds(conn: Opened, client_side: int) -> None:
    builder = EntryBuilder(conn, client_side, IDENT, 12, 1 << 20)
    for index, ex in enumerate(_exchanges_for_entries()):
        assert builder.build(ex, index) == build_entry(
            ex, conn, client_side, IDENT, 12, index, 1 << 20
        )


def test_entries_of_one_connection_do_not_share_what_a_consumer_may_change() -> None:
    builder = EntryBuilder(CONN, 0, IDENT, 12, 1 << 20)
    ex = next(_exchanges_for_entries())
    a, b = builder.build(ex, 0), builder.build(ex, 1)
    a["src"]["pod"] = {"metadata": {"name": "p"}}
    a["dst"]["service"] = {"metadata": {"name": "svc"}}
    a["request"]["headers"]["Host"] = "changed"
    a["response"]["headers"]["X-A"] = "changed"
    assert b["src"]["pod"] is None and b["dst"]["service"] is None
    assert b["request"]["headers"]["Host"] == "h"
    assert b["response"]["headers"]["X-A"] == "1, 2"
    assert builder.build(ex, 2)["src"]["pod"] is None
    assert (a["id"], b["id"]) == ("10.0.0.9:30001/000000000012.pcap-0", "10.0.0.9:30001/000000000012.pcap-1")  # fmt: skip
    assert b["entryFile"] == "000000000012_pcap-1_entry.json" and b["index"] == 1


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (999_999_999, "1970-01-01T00:00:00.999999999Z"),
        (1_000_000_000, "1970-01-01T00:00:01.000000000Z"),
        (1_000_000_007, "1970-01-01T00:00:01.000000007Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (T0, "2023-12-19T20:51:07.482113205Z"),
        (T0 + 1, "2023-12-19T20:51:07.482113206Z"),  # same second: the cached prefix
        (T0 + 10**9 - 482113205, "2023-12-19T20:51:08.000000000Z"),
    ],
)
def test_rfc3339_ns_formats_every_nanosecond(ts_ns: int, text: str) -> None:
    assert rfc3339_ns(ts_ns) == text


# --- reassembly: direct delivery ----------------------------------------------------------------

CLIENT = bytes([10, 0, 0, 1])
SERVER = bytes([10, 0, 0, 2])
M = 0xFFFFFFFF


class _Flow:
    """Segments of one connection by stream offset (0 = the first byte after the SYN)."""

    def __init__(self, cport: int, rng: random.Random, t0: int) -> None:
        self.cport = cport
        self.cisn = rng.randrange(1 << 32)
        self.sisn = rng.randrange(1 << 32)
        self.ts = itertools.count(t0, 1000)

    def syn(self) -> Segment:
        return Segment(next(self.ts), 4, CLIENT, SERVER, self.cport, 80, self.cisn, 0, SYN, b"")

    def synack(self) -> Segment:
        ack = (self.cisn + 1) & M
        return Segment(next(self.ts), 4, SERVER, CLIENT, 80, self.cport, self.sisn, ack, SYN | ACK, b"")  # fmt: skip

    def c(self, off: int, data: bytes = b"", ack: int = 0, flags: int = ACK) -> Segment:
        seq, ackn = (self.cisn + 1 + off) & M, (self.sisn + 1 + ack) & M
        return Segment(next(self.ts), 4, CLIENT, SERVER, self.cport, 80, seq, ackn, flags, data)

    def s(self, off: int, data: bytes = b"", ack: int = 0, flags: int = ACK) -> Segment:
        seq, ackn = (self.sisn + 1 + off) & M, (self.cisn + 1 + ack) & M
        return Segment(next(self.ts), 4, SERVER, CLIENT, 80, self.cport, seq, ackn, flags, data)


def _segments(seed: int) -> list[Segment]:
    """Two interleaved connections: in-order data, a lost segment (the client ACKs past it: a
    Gap), a segment buffered ahead of that hole, and FINs."""
    rng = random.Random(seed)
    flows = []
    for k, cport in enumerate((40001, 40002)):
        f = _Flow(cport, rng, 1_700_000_000_000_000_000 + k)
        flows.append(
            [
                f.syn(),
                f.synack(),
                f.c(0),
                f.c(0, b"GET / HTTP/1.1\r\n", 0, ACK | PSH),
                f.c(16, b"\r\n", 0, ACK | PSH),
                f.s(0, b"HTTP/1.1 200 OK\r\n", 18),  # server bytes 0..16
                # bytes 17..35 ("Content-Length: 5\r\n") are never captured
                f.s(36, b"\r\nhello", 18),  # ahead of the hole: buffered
                f.c(18, b"", 43),  # ACKs past the hole: a Gap, then the buffered bytes
                f.s(43, b"more", 18),
                f.c(18, b"bye", 47, ACK | FIN),
                f.s(47, b"", 22, ACK | FIN),
            ]
        )
    order = [k for k, segs in enumerate(flows) for _ in segs]
    rng.shuffle(order)  # interleave the connections, each in its own order
    its = [iter(segs) for segs in flows]
    return [next(its[k]) for k in order]


def _flatten(events: list[Event]) -> list[Any]:
    return [("data", e.conn_id, e.side, e.data, e.ts_ns) if type(e) is Data else e for e in events]


@pytest.mark.parametrize("seed", range(5))
def test_direct_delivery_is_the_same_stream_as_data_events(seed: int) -> None:
    segs = _segments(seed)
    queued = Reassembler()
    expected: list[Any] = []
    cids = []
    for seg in segs:
        cids.append(queued.feed(seg))
        expected += _flatten(queued.pop_events())

    got: list[Any] = []
    direct = Reassembler(on_data=lambda *args: got.append(("data", *args)))
    calls = 0
    for seg, cid in zip(segs, cids, strict=True):
        before = len(got)
        assert direct.feed(seg) == cid
        calls += len(got) - before
        got += _flatten(direct.pop_events())
    assert got == expected
    assert calls > 0, "in-order data went the direct way"
    assert sum(1 for e in got if type(e) is Gap) == 2  # one per connection
    assert direct.stats.as_dict() == queued.stats.as_dict()


def test_direct_delivery_never_overtakes_a_queued_event() -> None:
    segs = _segments(0)
    calls: list[Any] = []
    r = Reassembler(on_data=lambda *args: calls.append(args))
    for seg in segs:  # nothing is popped: every later Data must queue behind the first Opened
        r.feed(seg)
    assert calls == []
    events = r.pop_events()
    assert [type(e) for e in events].count(Data) >= 8
