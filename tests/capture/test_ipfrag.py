"""IP fragment reassembly: capture/ipfrag.py on its own, and through capture/decode.py.

The oracle for the decoder tests is the decoder itself on the datagram before it was cut: a
datagram that arrives in fragments, in any order and with duplicates, must give exactly the
Segment the whole datagram gives, with the time of the fragment that completed it. Fragments
are cut here with struct (RFC 791 / RFC 8200 layouts) and, for a cross-check, with scapy's
``fragment``/``fragment6``.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, Dot1Q, Ether
from scapy.packet import Raw

from capture.decode import Decoder, DecodeStats
from capture.entries import Identity
from capture.ipfrag import FragmentLimits, FragmentReassembler
from capture.pipeline import Pipeline
from capture.segment import Segment
from capture.sources import CaptureFile

S = 1_000_000_000
TS = 1_700_000_000 * S
A4 = socket.inet_pton(socket.AF_INET, "10.1.0.11")
B4 = socket.inet_pton(socket.AF_INET, "10.2.0.20")
A6 = socket.inet_pton(socket.AF_INET6, "2001:db8:10::11")
B6 = socket.inet_pton(socket.AF_INET6, "2001:db8:20::80")
OUTCOMES = ("tcp", "non_ip", "non_tcp", "malformed", "unsupported_linktype", "fragments")
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
ETH = bytes(Ether(**MACS, type=0x0800))
ETH6 = bytes(Ether(**MACS, type=0x86DD))
KEY = (A4, B4, 6, 0x1234)


# -- cutting datagrams --------------------------------------------------------------------------


def tcp_segment(payload: bytes, seq: int = 1000) -> bytes:
    """A TCP header (no options, checksum not checked by the decoder) and its payload."""
    return struct.pack("!HHIIBBHHH", 40123, 80, seq, 77, 0x50, 0x18, 502, 0, 0) + payload


def ipv4_header(length: int, ident: int, flags_offset: int, proto: int = 6) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, flags_offset, 64, proto, 0, A4, B4
    )


def ipv4_whole(data: bytes, proto: int = 6) -> bytes:
    return ipv4_header(len(data), 0x1234, 0x4000, proto) + data  # DF


def ipv4_fragments(data: bytes, size: int, ident: int = 0x1234, proto: int = 6) -> list[bytes]:
    """``data`` (what follows the IP header) cut into ``size``-byte fragments (size % 8 == 0)."""
    assert size % 8 == 0
    out = []
    for pos in range(0, len(data), size):
        piece = data[pos : pos + size]
        more = 0x2000 if pos + size < len(data) else 0
        out.append(ipv4_header(len(piece), ident, more | pos >> 3, proto) + piece)
    return out


def ipv6_header(length: int, nxt: int) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, length, nxt, 64, A6, B6)


def ipv6_whole(data: bytes, nxt: int = 6) -> bytes:
    return ipv6_header(len(data), nxt) + data


def ipv6_fragments(data: bytes, size: int, ident: int = 0xC0FFEE, nxt: int = 6) -> list[bytes]:
    assert size % 8 == 0
    out = []
    for pos in range(0, len(data), size):
        piece = data[pos : pos + size]
        more = 1 if pos + size < len(data) else 0
        frag = struct.pack("!BBHI", nxt, 0, pos | more, ident)
        out.append(ipv6_header(8 + len(piece), 44) + frag + piece)
    return out


def run(frames: list[bytes], linktype: int = 228, dec: Decoder | None = None) -> list[Segment]:
    """Decodes frames one second apart (from TS); returns the Segments, checks the outcome
    partition after every frame."""
    dec = dec or Decoder()
    out = []
    for i, frame in enumerate(frames):
        seg = dec.decode(TS + i * S, linktype, frame)
        if seg is not None:
            out.append(seg)
        check_partition(dec.stats)
    return out


def check_partition(stats: DecodeStats) -> None:
    d = stats.as_dict()
    assert sum(d[k] for k in OUTCOMES) == d["frames"]


def whole_segment(frame: bytes, linktype: int = 228, ts: int = TS) -> Segment:
    seg = Decoder().decode(ts, linktype, frame)
    assert seg is not None
    return seg


# -- the reassembler on its own -----------------------------------------------------------------


def pieces(data: bytes, cuts: list[int]) -> list[tuple[int, bool, bytes]]:
    """(offset, more, bytes) for ``data`` cut at the given offsets."""
    bounds = [0, *cuts, len(data)]
    return [(a, b < len(data), data[a:b]) for a, b in itertools.pairwise(bounds)]


def feed(
    r: FragmentReassembler,
    frags: list[tuple[int, bool, bytes]],
    key: tuple[object, ...] = KEY,
    ts: int = TS,
) -> list[bytes | None]:
    """Adds each fragment (tagged with its index) and returns what each call returned."""
    out: list[bytes | None] = []
    for i, (offset, more, data) in enumerate(frags):
        done = r.add(ts + i, key, offset, more, data, 0, len(data), tag=i)
        out.append(None if done is None else done.payload)
    return out


DATA = bytes(range(256)) * 4  # 1024 bytes


def test_in_order_fragments_complete_at_the_last_one() -> None:
    r = FragmentReassembler()
    got = feed(r, pieces(DATA, [256, 512, 768]))
    assert got == [None, None, None, DATA]
    assert r.stats.as_dict() == dict.fromkeys(r.stats.FIELDS, 0) | {"reassembled": 1}
    assert (r.pending_datagrams, r.pending_fragments, r.buffered_bytes) == (0, 0, 0)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_every_order_gives_the_same_datagram_and_tags(order: tuple[int, ...]) -> None:
    frags = pieces(DATA, [8, 520, 1000])
    r = FragmentReassembler()
    done = None
    for n, i in enumerate(order):
        offset, more, data = frags[i]
        done = r.add(TS, KEY, offset, more, data, 0, len(data), tag=i)
        assert (done is None) == (n < 3)
    assert done is not None
    assert done.payload == DATA
    assert done.tags == list(order)  # arrival order


def test_slices_of_a_larger_buffer_are_used_in_place() -> None:
    frame = b"HEADER" + DATA[:512] + b"TRAILER"
    r = FragmentReassembler()
    assert r.add(TS, KEY, 512, False, b"xx" + DATA[512:], 2, 514) is None
    done = r.add(TS, KEY, 0, True, frame, 6, 6 + 512)
    assert done is not None and done.payload == DATA
    # the whole buffer is what is held, so it is what is counted
    r.add(TS, KEY, 0, True, frame, 6, 6 + 512)
    assert r.buffered_bytes == len(frame)


def test_a_duplicate_is_ignored_and_the_first_copy_wins() -> None:
    r = FragmentReassembler()
    frags = pieces(DATA, [512])
    assert feed(r, frags[:1]) == [None]
    forged = bytes(512)  # same range, other bytes: RFC 5722 errata 3089 says ignore it
    assert r.add(TS, KEY, 0, True, forged, 0, 512, tag="dup") is None
    done = r.add(TS, KEY, 512, False, frags[1][2], 0, 512, tag="last")
    assert done is not None
    assert done.payload == DATA
    assert done.tags == [0, "dup", "last"]  # duplicates keep their frame for the pcap
    assert (r.stats.duplicate, r.stats.reassembled, r.stats.dropped) == (1, 1, 0)


def test_a_fragment_inside_a_run_of_two_is_a_duplicate() -> None:
    # Linux's test: contained in a contiguous run of received bytes, not in a single fragment.
    r = FragmentReassembler()
    feed(r, [(0, True, DATA[:256]), (256, True, DATA[256:512])])
    assert r.add(TS, KEY, 128, True, DATA[128:384], 0, 256) is None
    assert r.stats.duplicate == 1 and r.stats.overlap == 0
    done = r.add(TS, KEY, 512, False, DATA[512:], 0, 512)
    assert done is not None and done.payload == DATA


@pytest.mark.parametrize(
    ("offset", "length"),
    [(256, 512), (0, 768), (504, 16), (760, 16)],
    ids=["straddles-a-hole", "covers-a-hole", "into-the-hole", "into-the-last-fragment"],
)
def test_a_partial_overlap_discards_the_datagram(offset: int, length: int) -> None:
    # held: [0, 512) and [768, 1024) (the last fragment); hole: [512, 768)
    r = FragmentReassembler()
    feed(r, [(0, True, DATA[:512]), (768, False, DATA[768:])])
    more = offset + length < len(DATA)
    assert r.add(TS, KEY, offset, more, DATA[offset : offset + length], 0, length) is None
    assert r.stats.as_dict() == dict.fromkeys(r.stats.FIELDS, 0) | {"overlap": 1, "dropped": 3}
    assert r.pending_datagrams == 0 and r.buffered_bytes == 0
    # The missing piece, arriving now, starts a new datagram that cannot complete.
    assert r.add(TS, KEY, 512, True, DATA[512:768], 0, 256) is None
    assert r.pending_datagrams == 1 and r.stats.reassembled == 0


def test_ipv6_overlap_discards_the_datagram() -> None:
    r = FragmentReassembler()
    data = DATA[:64]
    frame0 = data[:32]
    assert r.ipv6(TS, A6, B6, 7, 6, 0 | 1, frame0, 0, 32, 0) is None
    assert r.ipv6(TS, A6, B6, 7, 6, 24 | 1, data[24:48], 0, 24, 0) is None  # overlaps [24, 32)
    assert r.ipv6(TS, A6, B6, 7, 6, 48, data[48:], 0, 16, 0) is None
    assert r.stats.overlap == 1
    assert r.stats.reassembled == 0


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ((256, False, DATA[256:512]), (512, False, DATA[512:768]), "two last fragments disagree"),
        ((512, True, DATA[512:768]), (0, False, DATA[:256]), "last ends before bytes held"),
        ((256, False, DATA[256:512]), (512, True, DATA[512:768]), "a fragment past the end"),
        ((0, True, DATA[:512]), (512, False, b""), "empty fragment"),
    ],
    ids=["two-lengths", "last-before-held-bytes", "past-the-end", "empty"],
)
def test_inconsistent_fragments_discard_the_datagram(
    first: tuple[int, bool, bytes], second: tuple[int, bool, bytes], reason: str
) -> None:
    r = FragmentReassembler()
    assert feed(r, [first, second]) == [None, None], reason
    assert (r.stats.invalid, r.stats.dropped, r.pending_datagrams) == (1, 2, 0), reason


def test_ipv4_non_last_fragment_is_cut_to_a_multiple_of_8_like_linux() -> None:
    data = DATA[:40]
    r = FragmentReassembler()
    # 21 bytes with MF: only the first 16 count; the last fragment then starts at 16.
    assert r.ipv4(TS, A4, B4, 17, 5, 0x2000, data[:21], 0, 21, 20) is None
    done = r.ipv4(TS, A4, B4, 17, 5, 16 >> 3, data[16:], 0, 24, 20)
    assert done is not None and done.payload == data and done.nxt == -1


def test_ipv6_non_last_fragment_not_a_multiple_of_8_is_refused() -> None:
    r = FragmentReassembler()
    assert r.ipv6(TS, A6, B6, 9, 6, 1, DATA[:16], 0, 16, 0) is None
    assert r.ipv6(TS, A6, B6, 9, 6, 16 | 1, DATA[16:37], 0, 21, 0) is None  # RFC 8200 4.5
    assert (r.stats.invalid, r.stats.dropped, r.pending_datagrams) == (1, 2, 0)


def test_a_fragment_cut_by_the_snap_length_discards_its_datagram() -> None:
    r = FragmentReassembler()
    feed(r, [(0, True, DATA[:512])])
    assert r.add(TS, KEY, 512, False, DATA[512:600], 0, 88, cut=True) is None
    assert (r.stats.invalid, r.stats.dropped, r.pending_datagrams) == (1, 2, 0)


def test_ipv6_keeps_the_next_header_of_the_first_fragment() -> None:
    r = FragmentReassembler()
    # RFC 8200 4.5: later fragments' next header fields are ignored
    assert r.ipv6(TS, A6, B6, 3, 99, 8, DATA[8:16], 0, 8, 0) is None
    done = r.ipv6(TS, A6, B6, 3, 17, 1, DATA[:8], 0, 8, 0)
    assert done is not None and (done.nxt, done.payload) == (17, DATA[:16])


def test_datagrams_are_told_apart_by_their_identity() -> None:
    r = FragmentReassembler()
    half = DATA[:512]
    # Same id, but another source, protocol or family: four different datagrams.
    assert r.ipv4(TS, A4, B4, 6, 1, 0x2000, half, 0, 512, 20) is None
    assert r.ipv4(TS, B4, A4, 6, 1, 64, half, 0, 512, 20) is None
    assert r.ipv4(TS, A4, B4, 17, 1, 64, half, 0, 512, 20) is None
    assert r.ipv6(TS, A6, B6, 1, 6, 512, half, 0, 512, 0) is None
    assert r.pending_datagrams == 4
    done = r.ipv4(TS, A4, B4, 6, 1, 64, DATA[512:], 0, 512, 20)
    assert done is not None and done.payload == DATA
    assert r.pending_datagrams == 3


# -- limits -------------------------------------------------------------------------------------


def test_too_many_fragments_discard_the_datagram() -> None:
    r = FragmentReassembler(FragmentLimits(max_fragments=4))
    frags = pieces(DATA, [8, 16, 24, 32])  # five fragments
    assert feed(r, frags) == [None] * 5
    assert (r.stats.too_large, r.stats.dropped, r.pending_datagrams) == (1, 5, 0)
    # four are fine
    r = FragmentReassembler(FragmentLimits(max_fragments=4))
    assert feed(r, pieces(DATA, [8, 16, 24]))[-1] == DATA


def test_duplicates_count_against_the_fragment_limit() -> None:
    # Their frames are kept (for the connection's pcap), so they must be bounded too.
    r = FragmentReassembler(FragmentLimits(max_fragments=3))
    first = (0, True, DATA[:512])
    assert feed(r, [first, first, first, first]) == [None] * 4
    assert (r.stats.duplicate, r.stats.too_large, r.stats.dropped) == (2, 1, 4)


def test_a_datagram_past_max_datagram_bytes_is_discarded() -> None:
    r = FragmentReassembler()
    assert r.ipv4(TS, A4, B4, 6, 1, 0x2000, DATA, 0, 1024, 20) is None
    # the last fragment would make the IPv4 total length 65,536
    tail = 65_535 - 20 - 1024 + 1
    assert r.ipv4(TS, A4, B4, 6, 1, 1024 >> 3, bytes(tail), 0, tail, 20) is None
    assert (r.stats.too_large, r.stats.dropped, r.pending_datagrams) == (1, 2, 0)
    # exactly 65,535 is a valid datagram
    assert r.ipv4(TS, A4, B4, 6, 2, 0x2000, DATA, 0, 1024, 20) is None
    done = r.ipv4(TS, A4, B4, 6, 2, 1024 >> 3, bytes(tail - 1), 0, tail - 1, 20)
    assert done is not None and len(done.payload) + 20 == 65_535
    # a smaller configured bound applies the same way
    small = FragmentReassembler(FragmentLimits(max_datagram_bytes=1000))
    assert small.add(TS, KEY, 0, False, DATA, 0, 1024) is None
    assert small.stats.too_large == 1


def test_the_oldest_datagram_is_evicted_past_max_datagrams() -> None:
    r = FragmentReassembler(FragmentLimits(max_datagrams=2))
    for ident in (1, 2, 3):
        assert r.add(TS + ident, ("k", ident), 0, True, DATA[:512], 0, 512) is None
    assert (r.stats.evicted, r.stats.dropped, r.pending_datagrams) == (1, 1, 2)
    # 1 was evicted: its last fragment starts a new datagram; 2 and 3 still complete
    assert r.add(TS, ("k", 1), 512, False, DATA[512:], 0, 512) is None
    assert r.stats.evicted == 2  # ...which evicted 2, the oldest now
    done = r.add(TS, ("k", 3), 512, False, DATA[512:], 0, 512)
    assert done is not None and done.payload == DATA


def test_old_datagrams_are_evicted_past_max_buffered_bytes() -> None:
    r = FragmentReassembler(FragmentLimits(max_buffered_bytes=65_535))
    frame = bytes(20_000)
    for ident in range(3):
        assert r.add(TS, ("k", ident), 0, True, frame, 0, 8) is None
    assert r.buffered_bytes == 60_000 and r.stats.evicted == 0
    assert r.add(TS, ("k", 3), 0, True, frame, 0, 8) is None  # 80,000 > 65,535
    assert (r.stats.evicted, r.buffered_bytes, r.pending_datagrams) == (1, 60_000, 3)
    # the datagram that brought the bytes is kept, even as the oldest
    r2 = FragmentReassembler(FragmentLimits(max_buffered_bytes=65_535))
    r2.add(TS, ("k", 0), 0, True, frame, 0, 8)
    r2.add(TS, ("k", 1), 0, True, frame, 0, 8)
    r2.add(TS, ("k", 0), 8, True, bytes(40_000), 0, 8)  # 80,000: evicts k1, not k0
    assert r2.stats.evicted == 1 and r2.pending_datagrams == 1
    done = r2.add(TS, ("k", 0), 16, False, b"12345678", 0, 8)
    assert done is not None and len(done.payload) == 24


def test_a_datagram_times_out_after_30_s_of_packet_time() -> None:
    r = FragmentReassembler()
    assert r.limits.timeout_ns == 30 * S
    frags = pieces(DATA, [512])
    r.add(TS, KEY, *frags[0][:2], frags[0][2], 0, 512)
    # exactly 30 s later it is still waiting
    done = r.add(TS + 30 * S, KEY, frags[1][0], False, frags[1][2], 0, 512)
    assert done is not None and done.payload == DATA
    r.add(TS, KEY, *frags[0][:2], frags[0][2], 0, 512)
    assert r.add(TS + 30 * S + 1, KEY, frags[1][0], False, frags[1][2], 0, 512) is None
    assert (r.stats.timeout, r.stats.dropped, r.pending_datagrams) == (1, 1, 1)


def test_expire_discards_only_what_is_older_than_the_timeout() -> None:
    r = FragmentReassembler(FragmentLimits(timeout_ns=5 * S))
    r.add(TS, ("k", 1), 0, True, DATA, 0, 16)
    r.add(TS + 2 * S, ("k", 2), 0, True, DATA, 0, 16)
    r.add(TS + 2 * S, ("k", 2), 16, True, DATA, 16, 32)
    r.expire(TS + 5 * S)
    assert r.pending_datagrams == 2
    r.expire(TS + 6 * S)
    assert (r.pending_datagrams, r.stats.timeout, r.stats.dropped) == (1, 1, 1)
    r.expire(TS + 8 * S)
    assert (r.pending_datagrams, r.stats.timeout, r.stats.dropped) == (0, 2, 3)
    assert r.buffered_bytes == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_datagram_bytes": 65_536},
        {"max_datagram_bytes": 4},
        {"max_fragments": 0},
        {"max_datagrams": 0},
        {"timeout_ns": 0},
        {"max_buffered_bytes": 1000},
    ],
)
def test_limits_that_could_never_work_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FragmentLimits(**kwargs)


# -- property: any order, any duplicates --------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4000),
    size=st.integers(1, 200).map(lambda n: n * 8),
    draw=st.data(),
)
def test_any_fragment_order_with_duplicates_gives_the_same_datagram(
    data: bytes, size: int, draw: st.DataObject
) -> None:
    frags = [
        (pos, pos + size < len(data), data[pos : pos + size]) for pos in range(0, len(data), size)
    ]
    order = draw.draw(st.permutations(range(len(frags))))
    # duplicates: copies of any fragment, placed anywhere in the arrival order
    dups = draw.draw(st.lists(st.integers(0, len(frags) - 1), max_size=len(frags)))
    arrival = list(order)
    for d in dups:
        arrival.insert(draw.draw(st.integers(0, len(arrival))), d)
    r = FragmentReassembler()
    seen: set[int] = set()
    results = []
    for n, i in enumerate(arrival):
        offset, more, piece = frags[i]
        done = r.add(TS + n, KEY, offset, more, piece, 0, len(piece), tag=n)
        seen.add(i)
        results.append(done)
        if done is not None:
            break
    # it completes exactly when the last missing fragment arrives, with the original bytes
    assert len(seen) == len(frags)
    assert all(x is None for x in results[:-1])
    done = results[-1]
    assert done is not None
    assert done.payload == data
    assert done.tags == list(range(len(results)))
    assert r.stats.duplicate == len(results) - len(frags)
    assert (r.pending_datagrams, r.buffered_bytes, r.stats.dropped) == (0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    size=st.integers(1, 100).map(lambda n: n * 8),
    v6=st.booleans(),
    draw=st.data(),
)
def test_decoding_any_fragment_order_gives_the_unfragmented_segment(
    payload: bytes, size: int, v6: bool, draw: st.DataObject
) -> None:
    l4 = tcp_segment(payload)
    whole = ipv6_whole(l4) if v6 else ipv4_whole(l4)
    frames = ipv6_fragments(l4, size) if v6 else ipv4_fragments(l4, size)
    frames = draw.draw(st.permutations(frames))
    if len(frames) > 1 and draw.draw(st.booleans()):
        frames.insert(draw.draw(st.integers(0, len(frames) - 1)), frames[-1])  # a duplicate
    linktype = 229 if v6 else 228
    dec = Decoder()
    segs = run(frames, linktype, dec)
    if len(frames) == 1:  # an unfragmented datagram after all (one piece, MF=0, offset 0)
        assert segs == [whole_segment(whole, linktype)]
        return
    completed_at = max(frames.index(f) for f in set(frames))
    assert segs == [whole_segment(whole, linktype, TS + completed_at * S)]
    # every other frame is a fragment that completed nothing (a late duplicate starts anew)
    assert dec.stats.fragments == len(frames) - 1
    assert dec.stats.frag.reassembled == 1


# -- through the decoder ------------------------------------------------------------------------

BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + bytes(range(200)) * 10


def test_ipv4_fragments_out_of_order_decode_like_the_whole_datagram() -> None:
    l4 = tcp_segment(BODY)
    frames = [ETH + f for f in ipv4_fragments(l4, 600)]
    assert len(frames) == 4
    order = [2, 0, 3, 1]
    dec = Decoder()
    segs = run([frames[i] for i in order], 1, dec)
    assert segs == [whole_segment(ETH + ipv4_whole(l4), 1, TS + 3 * S)]
    assert segs[0].payload == BODY
    stats = dec.stats
    assert (stats.frames, stats.tcp, stats.fragments, stats.frag.reassembled) == (4, 1, 3, 1)
    # the captured frames behind the Segment, in arrival order, for the connection's pcap
    assert dec.pop_reassembled() == [(TS + n * S, frames[i]) for n, i in enumerate(order)]
    assert dec.reassembled == []


def test_scapy_fragments_agree() -> None:
    """An independent cutter: scapy's ``fragment`` (IPv4, with options copied as it sees fit)."""
    pkt = (
        IP(src="10.1.0.11", dst="10.2.0.20", id=4321)
        / TCP(sport=40123, dport=80, seq=9, flags="PA")
        / Raw(BODY)
    )
    frags = fragment(pkt, fragsize=512)
    assert len(frags) > 2
    segs = run([bytes(f) for f in reversed(frags)])
    assert segs == [whole_segment(bytes(pkt), 228, TS + (len(frags) - 1) * S)]


def test_ipv6_fragments_with_extension_headers_before_and_after() -> None:
    """Hop-by-hop before the fragment header (unfragmentable part), destination options after
    it (fragmentable): the next header chain goes on in the reassembled bytes."""
    inner = IPv6ExtHdrDestOpt() / TCP(sport=40123, dport=8080, seq=5, flags="PA") / Raw(BODY)
    fragmentable = bytes(inner)
    base = IPv6(src="2001:db8:10::11", dst="2001:db8:20::80") / IPv6ExtHdrHopByHop()
    frames = []
    for pos in range(0, len(fragmentable), 800):
        piece = fragmentable[pos : pos + 800]
        more = int(pos + 800 < len(fragmentable))
        frag = IPv6ExtHdrFragment(nh=60, offset=pos // 8, m=more, id=77)
        frames.append(bytes(Ether(**MACS) / base / frag / Raw(piece)))
    whole = bytes(Ether(**MACS) / IPv6(src="2001:db8:10::11", dst="2001:db8:20::80") / inner)
    dec = Decoder()
    segs = run(frames[::-1], 1, dec)
    assert segs == [whole_segment(whole, 1, TS + (len(frames) - 1) * S)]
    assert segs[0].family == 6 and segs[0].payload == BODY


@pytest.mark.parametrize(
    "link",
    [
        (1, bytes(Ether(**MACS) / Dot1Q(vlan=7, type=0x0800))),
        (113, bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800))),
    ],
    ids=["vlan", "sll"],
)
def test_fragments_reassemble_on_other_links(link: tuple[int, bytes]) -> None:
    linktype, header = link
    l4 = tcp_segment(BODY)
    frames = [header + f for f in ipv4_fragments(l4, 1024)]
    segs = run(frames[::-1], linktype)
    assert segs == [whole_segment(header + ipv4_whole(l4), linktype, TS + 2 * S)]


def test_a_fragmented_tunnel_carrying_a_fragmented_datagram() -> None:
    """6in4 whose outer IPv4 datagram is fragmented, and whose inner IPv6 datagram is a
    fragment too: the Segment comes when both are complete, with every captured frame."""
    l4 = tcp_segment(BODY)
    inner = ipv6_fragments(l4, 1200)  # two inner fragments
    outer_frames = []
    for ident, datagram in enumerate(inner):
        outer_frames.extend(ipv4_fragments(datagram, 512, ident=100 + ident, proto=41))
    dec = Decoder()
    frames = outer_frames[::-1]
    segs = run(frames, 228, dec)
    assert segs == [whole_segment(ipv6_whole(l4), 229, TS + (len(frames) - 1) * S)]
    assert dec.stats.frag.reassembled == 3  # two outer datagrams, one inner
    assert sorted(dec.pop_reassembled()) == sorted((TS + n * S, f) for n, f in enumerate(frames))


def test_a_reassembled_datagram_that_is_not_tcp_is_counted_as_such() -> None:
    udp = bytes(UDP(sport=53, dport=5353) / Raw(b"x" * 3000))
    dec = Decoder()
    assert run(ipv4_fragments(udp, 1480, proto=17), 228, dec) == []
    assert (dec.stats.non_tcp, dec.stats.fragments, dec.stats.frag.reassembled) == (1, 2, 1)
    assert dec.reassembled == []  # no Segment: nothing to file


def test_a_lost_fragment_holds_the_rest_until_the_timeout() -> None:
    l4 = tcp_segment(BODY)
    frames = ipv4_fragments(l4, 512)
    dec = Decoder()
    assert run([frames[0], frames[1], frames[3]], 228, dec) == []  # frames[2] never came
    assert (dec.stats.fragments, dec.fragments.pending_datagrams) == (3, 1)
    dec.expire_fragments(TS + 32 * S)  # first fragment at TS: more than 30 s ago
    assert (dec.stats.frag.timeout, dec.stats.frag.dropped) == (1, 3)
    assert dec.fragments.pending_datagrams == 0
    # a later packet carries on normally
    assert run([ipv4_whole(l4)], 228, dec) == [whole_segment(ipv4_whole(l4))]


def test_a_truncated_fragment_is_dropped_with_its_datagram() -> None:
    l4 = tcp_segment(BODY)
    frames = ipv4_fragments(l4, 1024)
    dec = Decoder()
    assert run([frames[0], frames[1][:300], frames[2]], 228, dec) == []
    assert (dec.stats.frag.invalid, dec.stats.frag.dropped) == (1, 2)
    assert dec.stats.truncated == 0


def test_an_ipv6_fragment_header_past_the_payload_is_malformed() -> None:
    frame = ipv6_header(4, 44) + struct.pack("!BBHI", 6, 0, 1, 5)  # payload length 4 < 8
    dec = Decoder()
    assert dec.decode(TS, 229, frame) is None
    assert dec.stats.malformed == 1 and dec.fragments.pending_datagrams == 0


def test_stats_list_the_fragment_counters() -> None:
    dec = Decoder(FragmentLimits(max_datagrams=1))
    assert dec.fragments.limits.max_datagrams == 1
    d = dec.stats.as_dict()
    names = list(d)
    first = names.index("fragments_reassembled")  # after the outcomes, before "undecoded"
    assert names[first : first + 8] == list(DecodeStats.FRAGMENT_FIELDS)
    assert names[first + 8 :] == ["undecoded"]
    assert DecodeStats.FRAGMENT_FIELDS == (
        "fragments_reassembled",
        "fragments_dropped",
        "fragments_duplicate",
        "fragments_timeout",
        "fragments_overlap",
        "fragments_too_large",
        "fragments_evicted",
        "fragments_invalid",
    )
    for name in DecodeStats.FRAGMENT_FIELDS:
        assert getattr(dec.stats.frag, name.removeprefix("fragments_")) == d[name] == 0


def test_unfragmented_frames_never_reach_the_reassembler() -> None:
    """DF and unfragmented IPv4/IPv6 on every path leave it untouched (no buffering, no
    tags), and reassembled stays empty."""
    l4 = tcp_segment(b"GET / HTTP/1.1\r\n\r\n")
    frames = [
        (228, ipv4_whole(l4)),
        (229, ipv6_whole(l4)),
        (1, ETH + ipv4_whole(l4)),
        (1, ETH6 + ipv6_whole(l4)),
        (
            229,
            bytes(IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment(nh=6, m=0, offset=0) / Raw(l4)),
        ),
    ]
    dec = Decoder()
    for lt, frame in frames:
        assert dec.decode(TS, lt, frame) is not None
    assert dec.stats.fragments == 0
    assert dec.fragments.stats.as_dict() == dict.fromkeys(dec.fragments.stats.FIELDS, 0)
    assert dec.reassembled == []


# -- the golden captures with fragments ---------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
WITH_FRAGMENTS = sorted(name for name, spec in EXPECTED.items() if "decode" in spec)


def test_the_fragment_fixtures_are_there() -> None:
    assert WITH_FRAGMENTS == ["fragment-missing.pcap", "ip-fragments.pcap", "ipv6-fragments.pcap"]


@pytest.mark.parametrize("name", WITH_FRAGMENTS)
def test_fixture_fragment_counts(name: str) -> None:
    """What scripts/make_fixtures.py fragmented, duplicated and lost, as the pipeline's
    decode_* counters (the lost datagram of fragment-missing.pcap times out 31 s later)."""
    counter = itertools.count(1)
    ident = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="t")
    pipeline = Pipeline(ident, allocate_stream=lambda: next(counter))
    for ts, linktype, frame in CaptureFile(FIXTURES / name):
        pipeline.feed(ts, linktype, frame)
    pipeline.finish()
    stats = pipeline.stats()
    want = EXPECTED[name]["decode"]
    assert {k: stats[f"decode_{k}"] for k in want} == want
    assert stats["decode_frames"] == EXPECTED[name]["records"]
    assert stats["decode_fragments_overlap"] == stats["decode_fragments_invalid"] == 0
    assert pipeline.decoder.fragments.pending_datagrams == 0
