"""TCP reassembly: Segments in, Opened/Data/Gap/Closed out (capture/reassembly.py)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.decode import Decoder
from capture.reassembly import (
    Closed,
    Data,
    Event,
    Gap,
    Opened,
    Reassembler,
    ReassemblyLimits,
)
from capture.segment import ACK, FIN, PSH, RST, SYN, Segment
from capture.sources import CaptureFile

M = 0xFFFFFFFF
CLIENT = bytes([10, 0, 0, 1])
SERVER = bytes([10, 0, 0, 2])
T0 = 1_700_000_000_000_000_000
SEC = 1_000_000_000


class Flow:
    """Builds the segments of one client↔server connection by stream offset.

    Offsets count payload bytes from the start of each direction's stream (0 = the first byte
    after the SYN), so tests read as "bytes 10..20 of the request" whatever the ISNs are.
    """

    def __init__(
        self,
        cisn: int = 1000,
        sisn: int = 5000,
        cport: int = 40000,
        sport: int = 80,
        cip: bytes = CLIENT,
        sip: bytes = SERVER,
    ) -> None:
        self.cisn = cisn
        self.sisn = sisn
        self.cport = cport
        self.sport = sport
        self.cip = cip
        self.sip = sip
        self.ts = T0

    def _tick(self) -> int:
        self.ts += 1000
        return self.ts

    def syn(self) -> Segment:
        return Segment(
            self._tick(), 4, self.cip, self.sip, self.cport, self.sport, self.cisn, 0, SYN, b""
        )

    def synack(self) -> Segment:
        return Segment(
            self._tick(),
            4,
            self.sip,
            self.cip,
            self.sport,
            self.cport,
            self.sisn,
            (self.cisn + 1) & M,
            SYN | ACK,
            b"",
        )

    def c(self, off: int, data: bytes = b"", ack: int = 0, flags: int = ACK) -> Segment:
        """Client → server segment at client stream offset ``off``, ACKing server offset ``ack``."""
        return Segment(
            self._tick(),
            4,
            self.cip,
            self.sip,
            self.cport,
            self.sport,
            (self.cisn + 1 + off) & M,
            (self.sisn + 1 + ack) & M,
            flags,
            data,
        )

    def s(self, off: int, data: bytes = b"", ack: int = 0, flags: int = ACK) -> Segment:
        """Server → client segment at server stream offset ``off``, ACKing client offset ``ack``."""
        return Segment(
            self._tick(),
            4,
            self.sip,
            self.cip,
            self.sport,
            self.cport,
            (self.sisn + 1 + off) & M,
            (self.cisn + 1 + ack) & M,
            flags,
            data,
        )

    def handshake(self) -> list[Segment]:
        return [self.syn(), self.synack(), self.c(0)]


def feed_all(r: Reassembler, segs: Iterable[Segment]) -> list[Event]:
    for seg in segs:
        r.feed(seg)
    return r.pop_events()


def side_items(events: list[Event], side: int, conn_id: int | None = None) -> list[bytes | int]:
    """One side's output as a list: bytes for (merged, adjacent) Data, int for each Gap."""
    out: list[bytes | int] = []
    for ev in events:
        if conn_id is not None and getattr(ev, "conn_id", None) != conn_id:
            continue
        if type(ev) is Data and ev.side == side:
            assert ev.data, "zero-length Data"
            if out and isinstance(out[-1], bytes):
                out[-1] += ev.data
            else:
                out.append(ev.data)
        elif type(ev) is Gap and ev.side == side:
            assert ev.length > 0
            out.append(ev.length)
    return out


def closed(events: list[Event]) -> list[tuple[int, str]]:
    return [(ev.conn_id, ev.reason) for ev in events if type(ev) is Closed]


def opened(events: list[Event]) -> list[Opened]:
    return [ev for ev in events if type(ev) is Opened]


# --- the basics ---------------------------------------------------------------------------------


def test_in_order_exchange_opened_fields_and_fin_close() -> None:
    f = Flow(cport=43210, sport=8080)
    r = Reassembler()
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    resp1 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    resp2 = b"hello"
    segs = [
        *f.handshake(),
        f.c(0, req, ack=0, flags=ACK | PSH),
        f.s(0, ack=len(req)),  # pure ACK
        f.s(0, resp1, ack=len(req)),
        f.s(len(resp1), resp2, ack=len(req), flags=ACK | PSH),
        f.c(len(req), ack=len(resp1) + len(resp2)),
    ]
    cids = [r.feed(s) for s in segs]
    assert len(set(cids)) == 1 and cids[0] is not None
    cid = cids[0]
    events = r.pop_events()
    assert events[0] == Opened(cid, T0 + 1000, 4, CLIENT, 43210, SERVER, 8080, True)
    datas = [ev for ev in events if type(ev) is Data]
    # in-order payloads leave as they came: one Data each, the very same bytes object
    assert [(d.side, d.data) for d in datas] == [(0, req), (1, resp1), (1, resp2)]
    assert datas[0].data is segs[3].payload
    assert [d.ts_ns for d in datas] == [segs[3].ts_ns, segs[5].ts_ns, segs[6].ts_ns]
    assert not closed(events)

    fin_c = f.c(len(req), ack=len(resp1) + len(resp2), flags=ACK | FIN)
    assert r.feed(fin_c) == cid
    assert r.pop_events() == []  # one FIN: half closed only
    fin_s = f.s(len(resp1) + len(resp2), ack=len(req) + 1, flags=ACK | FIN)
    assert r.feed(fin_s) == cid
    assert r.pop_events() == [Closed(cid, "fin", fin_s.ts_ns)]
    # the last ACK still belongs to the connection, and produces nothing
    assert r.feed(f.c(len(req) + 1, ack=len(resp1) + len(resp2) + 1)) == cid
    assert r.pop_events() == []
    st = r.stats.as_dict()
    assert st["connections"] == 1 and st["closed_fin"] == 1 and st["open_connections"] == 0
    assert st["gaps"] == 0 and st["lingering"] == 1


def test_events_are_frozen_slotted_dataclasses() -> None:
    f = Flow()
    r = Reassembler()
    events = feed_all(r, [*f.handshake(), f.c(0, b"abc")])
    data = events[-1]
    assert type(data) is Data and data == Data(1, 0, b"abc", data.ts_ns)
    assert dataclasses.is_dataclass(data) and not hasattr(data, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.side = 1  # type: ignore[misc]
    assert repr(data) == f"Data(conn_id=1, side=0, data=b'abc', ts_ns={data.ts_ns})"


def test_conn_ids_increase_and_stats_have_documented_names() -> None:
    r = Reassembler()
    a = Flow(cport=1111)
    b = Flow(cport=2222)
    assert r.feed(a.syn()) == 1
    assert r.feed(b.syn()) == 2
    assert r.feed(a.synack()) == 1
    d = r.stats.as_dict()
    for name in ("gap_bytes", "evicted", "overflow_flushes", "connections", "buffered_bytes"):
        assert name in d
    assert d["connections"] == 2 and d["open_connections"] == 2


# --- order, retransmission, overlap -------------------------------------------------------------


def test_out_of_order_is_held_until_the_hole_fills_each_piece_with_its_capture_time() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, f.handshake())
    late = f.c(10, b"KLMNOPQRST")
    later = f.c(20, b"UVWXYZ")
    assert feed_all(r, [late, later]) == []
    assert r.stats.out_of_order == 2 and r.stats.buffered_bytes == 16
    fill = f.c(0, b"ABCDEFGHIJ")
    # In stream order, each piece stamped with the time its bytes were captured (ENTRY.md: an
    # entry's time is the capture time of its first byte, wherever in the stream it starts).
    assert feed_all(r, [fill]) == [
        Data(1, 0, b"ABCDEFGHIJ", fill.ts_ns),
        Data(1, 0, b"KLMNOPQRST", late.ts_ns),
        Data(1, 0, b"UVWXYZ", later.ts_ns),
    ]
    assert r.stats.buffered_bytes == 0 and r.stats.gaps == 0


def test_data_after_a_hole_given_up_carries_the_capture_time_of_its_bytes() -> None:
    """A one-direction capture (only the server's packets: no ACK can reveal a loss) with a
    lost segment: what follows the hole is buffered until the hole is given up, here minutes
    later at the end of input. Each byte keeps the time it was captured, not that moment."""
    f = Flow()
    r = Reassembler()
    first = f.s(0, b"HTTP/1.1 200 OK\r\n")
    # bytes 17..99 lost by the capture
    f.ts += 60 * SEC
    a = f.s(100, b"HTTP/1.1 201 A\r\n")
    f.ts += 60 * SEC
    b = f.s(116, b"HTTP/1.1 202 B\r\n")
    events = feed_all(r, [first, a, b])
    assert [type(e) for e in events] == [Opened, Data]
    end = b.ts_ns + 240 * SEC
    r.close_all(end)
    assert r.pop_events() == [
        Gap(1, 1, 83, end),
        Data(1, 1, a.payload, a.ts_ns),
        Data(1, 1, b.payload, b.ts_ns),
        Closed(1, "eof", end),
    ]


def test_retransmissions_and_partial_overlaps_are_trimmed() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, f.handshake())
    events = feed_all(
        r,
        [
            f.c(0, b"0123456789"),
            f.c(0, b"0123456789"),  # exact retransmission
            f.c(5, b"56789abcde"),  # overlaps 5 delivered bytes
            f.c(0, b"0123"),  # old, inside delivered data
        ],
    )
    assert [ev.data for ev in events if type(ev) is Data] == [b"0123456789", b"abcde"]
    assert r.stats.retrans_bytes == 10 + 5 + 4


def test_first_received_bytes_win_over_later_overlapping_bytes() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, f.handshake())
    assert feed_all(r, [f.c(10, b"x" * 10)]) == []  # bytes 10..19 buffered first
    assert feed_all(r, [f.c(5, b"y" * 20)]) == []  # 5..24: only 5..9 and 20..24 are new
    assert feed_all(r, [f.c(22, b"w" * 6)]) == []  # 22..27 starts inside 20..24: 25..27 new
    assert r.stats.overlap_bytes == 10 + 3 and r.stats.buffered_bytes == 23
    events = feed_all(r, [f.c(0, b"Z" * 7)])  # 0..6: 5 and 6 were buffered already
    assert side_items(events, 0) == [b"ZZZZZ" + b"yyyyy" + b"x" * 10 + b"yyyyy" + b"www"]
    assert r.stats.overlap_bytes == 15 and r.stats.buffered_bytes == 0
    events = feed_all(r, [f.c(0, b"Q" * 30)])  # delivered bytes win too; 28..29 are new
    assert side_items(events, 0) == [b"QQ"]
    assert r.stats.retrans_bytes == 28 and r.stats.gaps == 0


def test_a_retransmission_with_different_bytes_does_not_rewrite_delivered_data() -> None:
    f = Flow()
    r = Reassembler()
    events = feed_all(r, [*f.handshake(), f.c(0, b"original"), f.c(0, b"REWRITTEN!")])
    assert side_items(events, 0) == [b"original" + b"N!"]


# --- connections without a handshake ------------------------------------------------------------


def test_mid_stream_start_client_is_the_higher_port() -> None:
    f = Flow(cport=51000, sport=443)
    r = Reassembler()
    # the capture starts with the server's data: the server is still side 1
    first = f.s(100, b"response bytes", ack=50)
    cid = r.feed(first)
    assert cid is not None
    events = feed_all(r, [f.c(50, b"next request", ack=114)])
    assert events[0] == Opened(cid, first.ts_ns, 4, CLIENT, 51000, SERVER, 443, False)
    assert side_items(events, 1) == [b"response bytes"]
    assert side_items(events, 0) == [b"next request"]


def test_mid_stream_equal_ports_the_first_sender_is_the_client() -> None:
    f = Flow(cport=7000, sport=7000)
    r = Reassembler()
    events = feed_all(r, [f.s(0, b"first"), f.c(0, b"second")])
    o = opened(events)[0]
    assert (o.client_ip, o.server_ip, o.syn_seen) == (SERVER, CLIENT, False)
    assert side_items(events, 0) == [b"first"] and side_items(events, 1) == [b"second"]


def test_mid_stream_a_pure_ack_tells_where_the_peer_stream_starts() -> None:
    f = Flow()
    r = Reassembler()
    # a client ACK says the server's bytes from offset 300 on are still expected ...
    feed_all(r, [f.c(40, ack=300)])
    # ... so server bytes at 300 are in order, and a segment from 310 on waits for 300..309
    events = feed_all(r, [f.s(310, b"later"), f.s(300, b"0123456789")])
    assert side_items(events, 1) == [b"0123456789later"]


def test_mid_stream_keep_alive_probe_is_not_a_lost_byte() -> None:
    f = Flow()
    r = Reassembler()
    # a keep-alive probe is sent one byte below the sender's next byte; the ACK names that byte
    events = feed_all(r, [f.c(99, ack=10), f.s(10, ack=100), f.c(100, b"GET", ack=10)])
    assert side_items(events, 0) == [b"GET"] and r.stats.gaps == 0
    # the same shape after real data is a lost byte
    g = Flow(cport=50001)
    events = feed_all(r, [g.c(98, b"x", ack=10), g.s(10, ack=100)])
    assert side_items(events, 0) == [b"x", 1]


def dsack(left: int, right: int) -> bytes:
    """TCP options: NOP, NOP, SACK with one block (a D-SACK when it lies below the ACK)."""
    return b"\x01\x01\x05\x0a" + (left & M).to_bytes(4, "big") + (right & M).to_bytes(4, "big")


def test_capture_starting_with_a_one_byte_keep_alive_the_peer_dsacks() -> None:
    """Windows sends keep-alives as one stale byte at SND.NXT - 1. As the first packet of a
    capture it looks like data; the peer's D-SACK of exactly that byte (RFC 2883: a SACK block
    below the cumulative ACK reports a duplicate) says it was not, as Wireshark's keep-alive
    rule (one byte, one below the next expected sequence number) would say had it seen more."""
    f = Flow()
    r = Reassembler()
    probe = f.c(99, b"\x00", ack=10)
    assert feed_all(r, [probe])[1:] == []  # held: not data yet
    assert r.probing == 1
    r.tcp_options = dsack(f.cisn + 1 + 99, f.cisn + 1 + 100)
    feed_all(r, [f.s(10, ack=100)])
    r.tcp_options = b""
    events = feed_all(r, [f.c(100, b"GET / HTTP/1.1\r\n\r\n", ack=10)])
    assert side_items(events, 0) == [b"GET / HTTP/1.1\r\n\r\n"]
    assert r.stats.keepalives == 1 and r.stats.gaps == 0 and r.probing == 0


def test_a_first_segment_of_one_byte_without_dsack_is_data() -> None:
    f = Flow()
    r = Reassembler()
    events = feed_all(r, [f.c(99, b"G", ack=10), f.s(10, ack=100), f.c(100, b"ET /", ack=10)])
    assert side_items(events, 0) == [b"GET /"]
    assert r.stats.keepalives == 0 and r.probing == 0
    # repeated probes, then the D-SACK: still one stale byte, no data
    g = Flow(cport=50002)
    feed_all(r, [g.c(99, b"\x00", ack=10), g.c(99, b"\x00", ack=10)])
    r.tcp_options = dsack(g.cisn + 100, g.cisn + 101)
    events = feed_all(r, [g.s(10, ack=100)])
    r.tcp_options = b""
    events += feed_all(r, [g.c(100, b"GET", ack=10)])
    assert side_items(events, 0, conn_id=2) == [b"GET"] and r.stats.keepalives == 1
    # a probe never answered: at the end of the capture it is delivered as the data it may be
    h = Flow(cport=50003)
    events = feed_all(r, [h.c(99, b"Z", ack=10)])
    r.close_all(h.ts + 1)
    assert side_items(r.pop_events(), 0, conn_id=3) == [b"Z"] and r.probing == 0


def test_lost_syn_the_syn_ack_sender_is_the_server() -> None:
    f = Flow(cport=80, sport=33333)  # odd ports on purpose: the handshake decides, not ports
    r = Reassembler()
    synack = f.synack()
    events = feed_all(r, [synack, f.c(0, b"hi"), f.s(0, b"yo", ack=2)])
    assert events[0] == Opened(1, synack.ts_ns, 4, CLIENT, 80, SERVER, 33333, True)
    assert side_items(events, 0) == [b"hi"] and side_items(events, 1) == [b"yo"]


def test_syn_data_is_delivered_after_the_syn() -> None:
    f = Flow()
    r = Reassembler()
    syn = f.syn()._replace(payload=b"fastopen")
    events = feed_all(r, [syn, f.synack(), f.c(8, b"+more")])
    assert side_items(events, 0) == [b"fastopen+more"]


# --- gaps ---------------------------------------------------------------------------------------


def test_ack_past_a_hole_turns_the_hole_into_a_gap_then_delivers() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"aaaa")])
    cccc = f.c(10, b"cccc")
    feed_all(r, [cccc])  # 4..9 lost by the capture
    ack = f.s(0, ack=14)  # the server got everything
    events = feed_all(r, [ack])
    # the gap is found now; the bytes after it were captured earlier, and keep that time
    assert events == [Gap(1, 0, 6, ack.ts_ns), Data(1, 0, b"cccc", cccc.ts_ns)]
    assert r.stats.ack_gaps == 1 and r.stats.gap_bytes == 6


def test_ack_past_everything_reports_a_lost_tail() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"aaaa")])
    events = feed_all(r, [f.s(0, ack=9), f.c(9, b"next")])
    assert side_items(events, 0) == [5, b"next"]


def test_a_filled_hole_never_becomes_a_gap() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"aaaa"), f.c(10, b"cccc"), f.c(4, b"bbbbbb")])
    events = feed_all(r, [f.s(0, ack=14)])
    r.close_all(f.ts)
    assert events == [] and r.stats.gaps == 0


def test_close_time_gap_rst_flushes_buffered_data_behind_a_gap() -> None:
    f = Flow()
    r = Reassembler()
    events = feed_all(r, [*f.handshake(), f.c(0, b"aa"), f.c(5, b"ff"), f.s(0, b"srv", ack=2)])
    rst = f.c(7, ack=3, flags=RST)
    events += feed_all(r, [rst])
    assert side_items(events, 0) == [b"aa", 3, b"ff"]
    assert side_items(events, 1) == [b"srv"]
    assert closed(events) == [(1, "rst")]
    assert events[-1] == Closed(1, "rst", rst.ts_ns)
    # nothing after the RST produces events, but packets are still attributed
    assert r.feed(f.c(7, b"late", ack=3)) == 1
    assert r.pop_events() == []


def test_close_time_gap_up_to_a_fin_whose_data_was_lost() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"head")])
    feed_all(r, [f.c(20, flags=ACK | FIN)])  # the FIN says the stream is 20 bytes long
    r.close_all(f.ts + 1)
    events = r.pop_events()
    assert side_items(events, 0) == [16]
    assert events[-1] == Closed(1, "eof", f.ts + 1)


# --- FIN and RST ------------------------------------------------------------------------------


def test_fin_before_its_last_data_waits_for_the_data() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"abc"), f.s(0, b"xyz", ack=3)])
    events = feed_all(r, [f.s(3, ack=3, flags=ACK | FIN), f.c(6, ack=4, flags=ACK | FIN)])
    assert closed(events) == []  # the client's bytes 3..5 are still missing
    events = feed_all(r, [f.c(3, b"def", ack=4)])
    assert side_items(events, 0) == [b"def"]
    assert closed(events) == [(1, "fin")]


def test_data_at_or_after_a_fin_is_ignored() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(3, flags=ACK | FIN)])  # the FIN arrives first
    events = feed_all(r, [f.c(0, b"abcdef"), f.c(4, b"after")])
    assert side_items(events, 0) == [b"abc"]
    assert r.stats.after_fin_bytes == 3 + 5


def test_a_fin_cuts_buffered_bytes_beyond_it() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(10, b"0123456789")])  # 10..19 buffered
    feed_all(r, [f.c(15, flags=ACK | FIN)])  # ... but the stream ends at 15
    assert r.stats.after_fin_bytes == 5 and r.stats.buffered_bytes == 5
    events = feed_all(r, [f.c(0, b"abcdefghij"), f.s(0, ack=16, flags=ACK | FIN)])
    assert side_items(events, 0) == [b"abcdefghij01234"]
    assert closed(events) == [(1, "fin")]


def test_rst_ends_the_connection_at_once_and_unknown_rst_is_ignored() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"req")])
    rst = f.s(0, ack=3, flags=RST | ACK)
    assert feed_all(r, [rst]) == [Closed(1, "rst", rst.ts_ns)]
    assert r.stats.closed_rst == 1
    other = Flow(cport=999)
    assert r.feed(other.c(0, flags=RST)) is None
    assert r.pop_events() == [] and r.stats.ignored == 1


# --- sequence wrap-around -----------------------------------------------------------------------


def test_wrap_around_in_order_out_of_order_and_ack_gap() -> None:
    f = Flow(cisn=2**32 - 5, sisn=2**32 - 1)
    r = Reassembler()
    feed_all(r, f.handshake())
    # client bytes 0..9 straddle 2**32; 10..14 arrive early; 15..19 are lost; 20..24 follow
    events = feed_all(r, [f.c(10, b"KLMNO"), f.c(20, b"UVWXY"), f.c(0, b"ABCDEFGHIJ")])
    assert side_items(events, 0) == [b"ABCDEFGHIJKLMNO"]
    events = feed_all(r, [f.s(0, b"server", ack=25)])  # server seq starts exactly at 0
    assert side_items(events, 0) == [5, b"UVWXY"]
    assert side_items(events, 1) == [b"server"]
    events = feed_all(r, [f.c(25, ack=6, flags=ACK | FIN), f.s(6, ack=26, flags=ACK | FIN)])
    assert closed(events) == [(1, "fin")]


# --- idle expiry --------------------------------------------------------------------------------


def test_idle_connections_expire_by_packet_time() -> None:
    limits = ReassemblyLimits(idle_timeout_ns=60 * SEC)
    r = Reassembler(limits)
    quiet = Flow(cport=1000)
    busy = Flow(cport=2000)
    feed_all(r, [*quiet.handshake(), quiet.c(0, b"a"), quiet.c(5, b"buffered")])
    feed_all(r, busy.handshake())
    start = quiet.ts
    # the busy connection keeps talking; the quiet one does not
    busy.ts = start + 50 * SEC
    feed_all(r, [busy.c(0, b"x")])
    r.expire(start + 59 * SEC)
    assert r.pop_events() == []
    r.expire(start + 61 * SEC)
    events = r.pop_events()
    assert side_items(events, 0) == [4, b"buffered"]
    assert closed(events) == [(1, "timeout")]
    assert events[-1].ts_ns == start + 61 * SEC
    assert r.stats.closed_timeout == 1 and r.stats.open_connections == 1
    r.expire(start + 111 * SEC)
    assert closed(r.pop_events()) == [(2, "timeout")]
    # a timed-out connection is forgotten: its next packet opens a new, mid-stream one
    assert r.feed(quiet.c(13, b"more")) == 3
    o = opened(r.pop_events())
    assert len(o) == 1 and not o[0].syn_seen and o[0].client_port == 1000


def test_lingering_closed_connections_are_forgotten_after_closed_linger() -> None:
    r = Reassembler(ReassemblyLimits(closed_linger_ns=10 * SEC))
    f = Flow()
    feed_all(r, [*f.handshake(), f.c(0, flags=ACK | RST)])
    assert r.stats.lingering == 1
    r.expire(f.ts + 9 * SEC)
    assert r.feed(f.c(0, b"x")) == 1 and r.pop_events() == []
    r.expire(f.ts + 11 * SEC)
    assert r.stats.lingering == 0
    assert r.feed(f.c(0, b"x")) == 2


# --- connection reuse ---------------------------------------------------------------------------


def test_new_syn_after_close_starts_a_new_connection() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(
        r,
        [*f.handshake(), f.c(0, b"one", flags=ACK | FIN), f.s(0, ack=4, flags=ACK | FIN)],
    )
    assert r.feed(f.c(4, ack=1)) == 1  # the last ACK lingers with the old connection
    g = Flow(cisn=777_777, sisn=888_888)  # same 4-tuple, new ISNs
    events = feed_all(r, [*g.handshake(), g.c(0, b"two")])
    assert [o.conn_id for o in opened(events)] == [2]
    assert side_items(events, 0, conn_id=2) == [b"two"]
    assert r.stats.reused == 1 and r.stats.connections == 2


def test_syn_with_a_new_isn_after_one_fin_ends_the_old_connection() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"one"), f.s(0, ack=3, flags=ACK | FIN)])
    g = Flow(cisn=123)
    syn = g.syn()
    events = feed_all(r, [syn])
    assert events[0] == Closed(1, "fin", syn.ts_ns)
    assert opened(events)[0].conn_id == 2 and opened(events)[0].syn_seen


def test_syn_with_a_new_isn_on_an_open_connection_is_reuse_after_a_lost_end() -> None:
    f = Flow()
    r = Reassembler()
    feed_all(r, [*f.handshake(), f.c(0, b"one")])
    events = feed_all(r, [Flow(cisn=99).syn()])
    assert closed(events) == [(1, "eof")] and [o.conn_id for o in opened(events)] == [2]


def test_retransmitted_syn_and_syn_ack_do_not_start_a_new_connection() -> None:
    f = Flow()
    r = Reassembler()
    events = feed_all(r, [f.syn(), f.syn(), f.synack(), f.synack(), f.c(0, b"x")])
    assert len(opened(events)) == 1 and closed(events) == []
    assert side_items(events, 0) == [b"x"] and r.stats.reused == 0


# --- limits -------------------------------------------------------------------------------------


def test_per_connection_buffer_limit_flushes_the_oldest_hole_as_a_gap() -> None:
    r = Reassembler(ReassemblyLimits(max_buffered_per_conn=100))
    f = Flow()
    feed_all(r, f.handshake())
    events = feed_all(r, [f.c(10, b"a" * 60), f.c(80, b"b" * 30)])
    assert events == [] and r.stats.buffered_bytes == 90
    events = feed_all(r, [f.c(120, b"c" * 20)])  # 110 > 100: the hole 0..9 is given up
    assert side_items(events, 0) == [10, b"a" * 60]
    assert r.stats.conn_limit_flushes == 1 and r.stats.overflow_flushes == 1
    assert r.stats.buffered_bytes == 50 and r.stats.gap_bytes == 10
    events = feed_all(r, [f.c(70, b"z" * 10)])  # fills 70..79; 110..119 is still a hole
    assert side_items(events, 0) == [b"z" * 10 + b"b" * 30]


def test_total_buffer_limit_flushes_the_connection_that_started_buffering_first() -> None:
    r = Reassembler(ReassemblyLimits(max_buffered_total=100))
    first = Flow(cport=1111)
    second = Flow(cport=2222)
    feed_all(r, [*first.handshake(), *second.handshake()])
    feed_all(r, [first.c(5, b"1" * 40)])
    second.ts = first.ts
    feed_all(r, [second.c(5, b"2" * 40)])
    events = feed_all(r, [second.c(50, b"3" * 30)])  # 110 > 100
    assert side_items(events, 0, conn_id=1) == [5, b"1" * 40]
    assert side_items(events, 0, conn_id=2) == []
    assert r.stats.total_limit_flushes == 1 and r.stats.buffered_bytes == 70
    assert r.stats.buffered_peak == 110


def test_max_connections_evicts_the_least_recently_active() -> None:
    r = Reassembler(ReassemblyLimits(max_connections=2))
    a = Flow(cport=1001)
    b = Flow(cport=1002)
    c = Flow(cport=1003)
    feed_all(r, [*a.handshake(), a.c(0, b"a"), a.c(3, b"buffered")])
    b.ts = a.ts
    feed_all(r, b.handshake())
    a.ts = b.ts
    feed_all(r, [a.c(1, b"A")])  # a is older but was active last
    c.ts = a.ts
    syn = c.syn()
    events = feed_all(r, [syn])
    assert events == [
        Closed(2, "evicted", syn.ts_ns),
        Opened(3, syn.ts_ns, 4, CLIENT, 1003, SERVER, 80, True),
    ]
    assert r.stats.evicted == 1 and r.stats.open_connections == 2
    # evicting a connection flushes what it buffered behind a gap
    d = Flow(cport=1004)
    d.ts = c.ts
    events = feed_all(r, [d.syn()])
    assert side_items(events, 0, conn_id=1) == [1, b"buffered"]
    assert closed(events) == [(1, "evicted")] and r.stats.evicted == 2


def test_max_lingering_forgets_the_oldest_closed_connection() -> None:
    r = Reassembler(ReassemblyLimits(max_lingering=1))
    a = Flow(cport=1001)
    b = Flow(cport=1002)
    feed_all(r, [a.syn(), a.c(0, flags=RST)])
    b.ts = a.ts
    feed_all(r, [b.syn(), b.c(0, flags=RST)])
    assert r.stats.lingering == 1 and r.stats.linger_dropped == 1
    assert r.feed(b.c(0, b"late")) == 2  # b still lingers
    assert r.feed(a.c(0, b"late")) == 3  # a was forgotten: a new connection


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ReassemblyLimits(max_connections=0)
    with pytest.raises(ValueError):
        ReassemblyLimits(max_buffered_total=-1)


def test_close_all_closes_every_open_connection_in_id_order() -> None:
    r = Reassembler()
    flows = [Flow(cport=3000 + i) for i in range(3)]
    for fl in reversed(flows):
        feed_all(r, fl.handshake())
    r.close_all(T0 + 99)
    assert r.pop_events() == [Closed(i, "eof", T0 + 99) for i in (1, 2, 3)]
    assert r.stats.open_connections == 0 and r.stats.closed_eof == 3


# --- properties ---------------------------------------------------------------------------------

ISNS = st.one_of(st.integers(0, M), st.integers(M - 2000, M))  # half of them wrap mid-stream


@st.composite
def segmentations(draw: st.DrawFn, length: int, min_pieces: int = 1) -> list[tuple[int, int]]:
    """A random split of [0, length) into consecutive (start, end) pieces."""
    if length == 0:
        return []
    cuts = (
        draw(
            st.lists(st.integers(1, length - 1), unique=True, min_size=min_pieces - 1, max_size=12)
        )
        if length > 1
        else []
    )
    bounds = [0, *sorted(cuts), length]
    return list(pairwise(bounds))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_order_with_duplicates_and_resegmentation_gives_the_original_bytes(
    data: st.DataObject,
) -> None:
    cisn = data.draw(ISNS)
    sisn = data.draw(ISNS)
    f = Flow(cisn=cisn, sisn=sisn)
    cstream = data.draw(st.binary(max_size=400))
    sstream = data.draw(st.binary(max_size=400))
    pieces: list[Segment] = []
    for stream, make in ((cstream, f.c), (sstream, f.s)):
        # one complete split, so every byte is sent at least once ...
        for a, b in data.draw(segmentations(len(stream))):
            pieces.append(make(a, stream[a:b]))
        # ... and parts of other splits, overlapping it at other boundaries
        for _ in range(data.draw(st.integers(0, 2))):
            for a, b in data.draw(segmentations(len(stream))):
                if data.draw(st.booleans()):
                    pieces.append(make(a, stream[a:b]))
    # FINs, ACKing only the handshake, may come anywhere
    pieces.append(f.c(len(cstream), flags=ACK | FIN))
    pieces.append(f.s(len(sstream), flags=ACK | FIN))
    dupes = data.draw(st.lists(st.sampled_from(pieces), max_size=6))
    order = data.draw(st.permutations(pieces + dupes))
    r = Reassembler()
    for i, seg in enumerate([*f.handshake(), *order]):
        assert r.feed(seg._replace(ts_ns=T0 + i)) == 1
    events = r.pop_events()
    assert side_items(events, 0) == ([cstream] if cstream else [])
    assert side_items(events, 1) == ([sstream] if sstream else [])
    assert not any(type(ev) is Gap for ev in events)
    assert closed(events) == [(1, "fin")] and type(events[-1]) is Closed
    assert r.stats.buffered_bytes == 0


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_dropped_segment_becomes_exactly_one_gap_of_its_length(data: st.DataObject) -> None:
    f = Flow(cisn=data.draw(ISNS), sisn=data.draw(ISNS))
    stream = data.draw(st.binary(min_size=2, max_size=600))
    split = data.draw(segmentations(len(stream), min_pieces=2))
    lost = data.draw(st.integers(0, len(split) - 1))
    a, b = split[lost]
    sent = [f.c(x, stream[x:y]) for i, (x, y) in enumerate(split) if i != lost]
    order = data.draw(st.permutations(sent))
    how = data.draw(st.sampled_from(["ack", "fin-then-eof", "fin-then-ack"]))
    r = Reassembler()
    feed_all(r, f.handshake())
    events = feed_all(r, order)
    if how == "ack":
        events += feed_all(r, [f.s(0, ack=len(stream))])
    elif how == "fin-then-eof":
        events += feed_all(r, [f.c(len(stream), flags=ACK | FIN)])
        r.close_all(f.ts + 1)
        events += r.pop_events()
    else:
        events += feed_all(
            r, [f.c(len(stream), flags=ACK | FIN), f.s(0, ack=len(stream) + 1, flags=ACK | FIN)]
        )
        assert closed(events) == [(1, "fin")]
    expected: list[bytes | int] = [x for x in (stream[:a], b - a, stream[b:]) if x]
    assert side_items(events, 0) == expected
    assert r.stats.gaps == 1 and r.stats.gap_bytes == b - a


# --- real captures (../shared/pcaps), decoded by capture.decode ----------------------------------

PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "pcaps"


def capture_segments(name: str) -> list[Segment]:
    decoder = Decoder()
    segs = []
    for ts, linktype, frame in CaptureFile(PCAPS / name):
        seg = decoder.decode(ts, linktype, frame)
        if seg is not None:
            segs.append(seg)
    return segs


Streams = dict[tuple[int, int], list[bytes | int]]


def reassemble(segs: list[Segment]) -> tuple[Streams, list[Event], dict[str, int]]:
    """Per (conn_id, side) items as in side_items, all events, and the stats."""
    r = Reassembler()
    for seg in segs:
        r.feed(seg)
    r.close_all(segs[-1].ts_ns)
    events = r.pop_events()
    sides = {(o.conn_id, side) for o in opened(events) for side in (0, 1)}
    streams = {k: side_items(events, k[1], conn_id=k[0]) for k in sorted(sides)}
    return streams, events, r.stats.as_dict()


def test_real_capture_with_and_without_handshake_gives_the_same_streams() -> None:
    full, events, _ = reassemble(capture_segments("zeek-get.pcap"))
    nosyn, events2, _ = reassemble(capture_segments("zeek-get_nosyn.pcap"))
    assert full == nosyn
    request, response = full[(1, 0)], full[(1, 1)]
    assert len(request) == 1 and isinstance(request[0], bytes)
    assert request[0].startswith(b"GET /download/CHANGES.bro-aux.txt HTTP/1.1\r\n")
    assert isinstance(response[0], bytes) and response[0].startswith(b"HTTP/1.1 200 OK\r\n")
    o, o2 = opened(events)[0], opened(events2)[0]
    assert (o.client_port, o.server_port, o.syn_seen) == (59856, 80, True)
    assert (o2.client_port, o2.server_port, o2.syn_seen) == (59856, 80, False)
    assert closed(events) == closed(events2) == [(1, "fin")]


def test_real_capture_lost_segments_become_gaps() -> None:
    streams, _, stats = reassemble(capture_segments("zeek-1000-requests-one-dropped-response.pcap"))
    response = streams[(1, 1)]
    assert [x for x in response if isinstance(x, int)] == [238]  # the one dropped segment
    assert all(isinstance(x, bytes) for x in streams[(1, 0)])
    assert stats["ack_gaps"] == 1
    streams, _, _ = reassemble(capture_segments("zeek-zero-length-bodies-with-drops.pcap"))
    assert sum(isinstance(x, int) for items in streams.values() for x in items) == 3


def test_real_capture_starting_with_a_keep_alive_has_no_gap() -> None:
    _, events, _ = reassemble(capture_segments("zeek-cooper-grill-dvwa.pcapng"))
    assert not any(type(ev) is Gap for ev in events)
    assert len(opened(events)) == 4


@pytest.mark.parametrize(
    "name", ["zeek-pipelined-requests.pcap", "zeek-http-post-large.pcap", "zeek-iso-download.pcap"]
)
def test_real_capture_is_invariant_to_duplicates_and_local_reordering(name: str) -> None:
    segs = capture_segments(name)
    expected, _, _ = reassemble(segs)
    rng = random.Random(name)
    shuffled = list(segs)
    # swap neighbours sent in the same direction (their ACKs stay valid), duplicate some
    for i in range(len(shuffled) - 1):
        a, b = shuffled[i], shuffled[i + 1]
        same_direction = (a.src, a.sport) == (b.src, b.sport)
        if same_direction and not (a.flags | b.flags) & (SYN | FIN | RST) and rng.random() < 0.5:
            shuffled[i], shuffled[i + 1] = b, a
    noisy = []
    for seg in shuffled:
        noisy.append(seg)
        if rng.random() < 0.2:
            noisy.append(seg)
    assert noisy != segs
    got, events, stats = reassemble(noisy)
    assert got == expected
    assert not any(type(ev) is Gap for ev in events)
    assert stats["out_of_order"] > 0 and stats["retrans_bytes"] > 0
