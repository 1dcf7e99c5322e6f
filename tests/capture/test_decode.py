"""Frame → Segment: capture/decode.py.

Oracles: dpkt's object decoder on every frame of every shared capture, field values printed by
tshark for frames dpkt cannot follow (L2TP), and frames crafted with scapy for every link type
and network-layer case.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, GRE, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from capture.decode import MAX_ENCAPSULATION, Decoder, DecodeStats, tcp_options
from capture.segment import ACK, FIN, PSH, RST, SYN, Segment
from capture.sources import CaptureFile

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT.parent / "shared" / "pcaps"
ALL_CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*"))
OUTCOMES = ("tcp", "non_ip", "non_tcp", "malformed", "unsupported_linktype", "fragments")
TS = 1_700_000_000_123_456_789


def check_partition(stats: DecodeStats) -> None:
    """Every frame lands in exactly one outcome."""
    d = stats.as_dict()
    assert sum(d[k] for k in OUTCOMES) == d["frames"]
    assert all(v >= 0 for v in d.values())


# -- dpkt as an independent oracle on the shared captures --------------------------------------

DPKT_LINK = {
    1: dpkt.ethernet.Ethernet,
    113: dpkt.sll.SLL,
    276: dpkt.sll2.SLL2,
    0: dpkt.loopback.Loopback,
    228: dpkt.ip.IP,
}


def dpkt_view(linktype: int, frame: bytes) -> tuple[object, ...] | str:
    """dpkt's reading of a frame: the Segment fields, or a word for why it is not TCP."""
    obj = DPKT_LINK[linktype](frame)
    while not isinstance(obj, dpkt.ip.IP | dpkt.ip6.IP6):
        obj = getattr(obj, "data", None)
        if obj is None or isinstance(obj, bytes):
            return "non-ip"
    ip = obj
    if isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset):
        return "fragment"
    if isinstance(ip, dpkt.ip.IP) and ip.p == 41:
        ip = ip.data
    tcp = ip.data
    if isinstance(tcp, dpkt.udp.UDP) and 1701 in (tcp.sport, tcp.dport):
        return "l2tp"  # dpkt does not follow L2TP; checked against tshark below
    if not isinstance(tcp, dpkt.tcp.TCP):
        return "non-tcp"
    family = 4 if isinstance(ip, dpkt.ip.IP) else 6
    return (
        family,
        bytes(ip.src),
        bytes(ip.dst),
        tcp.sport,
        tcp.dport,
        tcp.seq,
        tcp.ack,
        tcp.flags & 0xFF,
        bytes(tcp.data),
    )


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_every_frame_of_every_shared_capture_decodes_like_dpkt(name: str) -> None:
    dec = Decoder()
    compared = 0
    for ts, linktype, frame in CaptureFile(PCAPS / name):
        seg = dec.decode(ts, linktype, frame)
        expected = dpkt_view(linktype, frame)
        if expected == "l2tp":
            continue
        if isinstance(expected, str):
            assert seg is None, (name, compared, expected)
            continue
        assert seg is not None, (name, compared)
        assert isinstance(seg, Segment)
        assert seg.ts_ns == ts
        assert tuple(seg)[1:] == expected
        compared += 1
    check_partition(dec.stats)
    assert dec.stats.malformed == 0
    assert compared > 0


# Outcome counts for the captures that exercise a special link or encapsulation. The non-TCP
# frames are ARP (non_ip), DNS/ICMP (non_tcp), and for nb6 the PPP LCP frames inside L2TP
# (non_ip) and L2TP control messages (non_tcp); tshark's `frame.protocols` lists the same mix.
SPECIAL_CAPTURES = {
    "zeek-http-vlan-0.pcap": (14, {"tcp": 14}),
    "zeek-http-qinq-0.pcap": (14, {"tcp": 14}),
    "sv-decode-sll2-02.pcap": (159, {"tcp": 159}),
    "ndpi-log4j-webapp-exploit-sll.pcap": (426, {"tcp": 422, "non_ip": 4}),
    "sv-http-ipv6-null.pcap": (14, {"tcp": 14}),
    "zeek-te-cl-desync.pcap": (8, {"tcp": 8}),
    "dpkt-nb6-http.pcap": (62, {"tcp": 30, "non_ip": 12, "non_tcp": 20}),
    "zeek-cooper-grill-dvwa.pcapng": (64, {"tcp": 48, "non_ip": 16}),
    "zeek-1000-requests-one-dropped-response.pcap": (4102, {"tcp": 4102}),
}


@pytest.mark.parametrize("name", sorted(SPECIAL_CAPTURES))
def test_outcome_counts_of_special_link_captures(name: str) -> None:
    frames, outcomes = SPECIAL_CAPTURES[name]
    dec = Decoder()
    families = set()
    for ts, linktype, frame in CaptureFile(PCAPS / name):
        seg = dec.decode(ts, linktype, frame)
        if seg is not None:
            families.add(seg.family)
            assert len(seg.src) == len(seg.dst) == (4 if seg.family == 4 else 16)
    expected = (
        dict.fromkeys(OUTCOMES, 0)
        | dict.fromkeys(DecodeStats.FRAGMENT_FIELDS, 0)
        | outcomes
        | {"frames": frames, "truncated": 0, "udp": 0, "undecoded": 0}
    )
    assert dec.stats.as_dict() == expected
    v6 = {"sv-http-ipv6-null.pcap", "zeek-1000-requests-one-dropped-response.pcap"}
    assert families == ({6} if name in v6 else {4, 6} if name == "dpkt-nb6-http.pcap" else {4})


def test_nb6_ipv6_over_l2tp_over_pppoe_matches_tshark() -> None:
    # tshark -r dpkt-nb6-http.pcap -Y frame.number==53 -V: eth:pppoes:ppp:ip:udp:l2tp:ppp:ipv6:tcp,
    # 2a00:5e80:101:212d:504:7b1:2572:db22 port 37034 → 2606:f200:0:7:bad:f00d:d00d:1 port 80,
    # seq (raw) 0x1496479e, SYN, no payload.
    packets = list(CaptureFile(PCAPS / "dpkt-nb6-http.pcap"))
    ts, linktype, frame = packets[52]
    seg = Decoder().decode(ts, linktype, frame)
    assert seg == Segment(
        ts,
        6,
        socket.inet_pton(socket.AF_INET6, "2a00:5e80:101:212d:504:7b1:2572:db22"),
        socket.inet_pton(socket.AF_INET6, "2606:f200:0:7:bad:f00d:d00d:1"),
        37034,
        80,
        0x1496479E,
        0,
        SYN,
        b"",
    )
    # and the HTTP request that follows on that connection is delivered too
    dec = Decoder()
    v6 = [s for s in (dec.decode(*p) for p in packets) if s is not None and s.family == 6]
    assert len(v6) == 10
    assert any(s.payload.startswith(b"GET ") for s in v6)


# -- crafted frames ----------------------------------------------------------------------------

A4 = socket.inet_pton(socket.AF_INET, "10.1.2.3")
B4 = socket.inet_pton(socket.AF_INET, "192.168.7.9")
A6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
B6 = socket.inet_pton(socket.AF_INET6, "fd00::42:2")
BODY = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def tcp_layer(payload: bytes = BODY, flags: str = "PA", **kw: object) -> Packet:
    return TCP(sport=40000, dport=8080, seq=0xFFFFFFF0, ack=12345, flags=flags, **kw) / Raw(payload)


def ip4(**kw: object) -> Packet:
    return IP(src="10.1.2.3", dst="192.168.7.9", **kw)


def ip6(**kw: object) -> Packet:
    return IPv6(src="2001:db8::1", dst="fd00::42:2", **kw)


SEG4 = Segment(TS, 4, A4, B4, 40000, 8080, 0xFFFFFFF0, 12345, PSH | ACK, BODY)
SEG6 = SEG4._replace(family=6, src=A6, dst=B6)


def decode(linktype: int, frame: bytes | Packet) -> tuple[Segment | None, dict[str, int]]:
    dec = Decoder()
    seg = dec.decode(TS, linktype, bytes(frame))
    check_partition(dec.stats)
    assert dec.stats.frames == 1
    return seg, {k: v for k, v in dec.stats.as_dict().items() if v and k != "frames"}


def null_header(af: int, order: str) -> bytes:
    return struct.pack(order + "I", af)


ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

LINK_CASES = {
    "ethernet-ipv4": (1, ETH / ip4() / tcp_layer(), SEG4),
    "ethernet-ipv6": (1, ETH / ip6() / tcp_layer(), SEG6),
    "802.1q": (1, ETH / Dot1Q(vlan=7) / ip4() / tcp_layer(), SEG4),
    "802.1q-ipv6": (1, ETH / Dot1Q(vlan=7) / ip6() / tcp_layer(), SEG6),
    "qinq-88a8": (1, ETH / Dot1AD(vlan=100) / Dot1Q(vlan=7) / ip4() / tcp_layer(), SEG4),
    "qinq-9100": (
        1,
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x9100)
        / Dot1Q(vlan=100)
        / Dot1Q(vlan=7)
        / ip6()
        / tcp_layer(),
        SEG6,
    ),
    "three-tags": (
        1,
        ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / ip4() / tcp_layer(),
        SEG4,
    ),
    "pppoe": (1, ETH / PPPoE(sessionid=9) / PPP(proto=0x0021) / ip4() / tcp_layer(), SEG4),
    "pppoe-ipv6": (1, ETH / PPPoE(sessionid=9) / PPP(proto=0x0057) / ip6() / tcp_layer(), SEG6),
    "raw-101-v4": (101, ip4() / tcp_layer(), SEG4),
    "raw-101-v6": (101, ip6() / tcp_layer(), SEG6),
    "raw-12-v4": (12, ip4() / tcp_layer(), SEG4),
    "raw-14-v6": (14, ip6() / tcp_layer(), SEG6),
    "ipv4-228": (228, ip4() / tcp_layer(), SEG4),
    "ipv6-229": (229, ip6() / tcp_layer(), SEG6),
    "sll-v4": (113, CookedLinux(pkttype=0, proto=0x0800) / ip4() / tcp_layer(), SEG4),
    "sll-v6": (113, CookedLinux(pkttype=4, proto=0x86DD) / ip6() / tcp_layer(), SEG6),
    "sll-vlan": (113, CookedLinux(proto=0x8100) / Dot1Q(vlan=5) / ip4() / tcp_layer(), SEG4),
    "sll2-v4": (276, CookedLinuxV2(proto=0x0800) / ip4() / tcp_layer(), SEG4),
    "sll2-v6": (276, CookedLinuxV2(proto=0x86DD) / ip6() / tcp_layer(), SEG6),
}
for _af in (2,):
    for _order in "<>":
        LINK_CASES[f"null-af{_af}-{_order}"] = (
            0,
            null_header(_af, _order) + bytes(ip4() / tcp_layer()),
            SEG4,
        )
for _af in (24, 28, 30):
    for _order in "<>":
        LINK_CASES[f"null-af{_af}-{_order}"] = (
            0,
            null_header(_af, _order) + bytes(ip6() / tcp_layer()),
            SEG6,
        )
LINK_CASES["loop-108-v4"] = (108, null_header(2, ">") + bytes(ip4() / tcp_layer()), SEG4)


SACK = [("NOP", None), ("NOP", None), ("SAck", (0x01020304, 0x01020305))]
SACK_BYTES = b"\x01\x01\x05\x0a\x01\x02\x03\x04\x01\x02\x03\x05"


@pytest.mark.parametrize("case", sorted(c for c in LINK_CASES if not c.startswith("pppoe")))
def test_tcp_options_are_found_on_every_plain_link(case: str) -> None:
    """What the pipeline reads while the reassembler waits for a D-SACK (a keep-alive)."""
    linktype, frame, _ = LINK_CASES[case]
    if isinstance(frame, Packet):
        with_options = frame.copy()
        with_options[TCP].options = SACK
        raw = bytes(with_options)
    else:
        ip = ip6() if frame[4] >> 4 == 6 else ip4()
        raw = frame[:4] + bytes(ip / tcp_layer(options=SACK))
    assert tcp_options(linktype, raw) == SACK_BYTES
    assert tcp_options(linktype, bytes(frame)) == b""
    assert Decoder().decode(TS, linktype, raw) is not None


def test_tcp_options_of_other_frames_are_empty() -> None:
    assert tcp_options(1, bytes(ETH / ip4() / UDP() / Raw(b"x" * 40))) == b""
    assert tcp_options(1, bytes(ETH / ARP())) == b""
    assert tcp_options(147, b"\x00" * 60) == b""
    assert tcp_options(1, bytes(ETH / ip4() / tcp_layer(options=SACK))[:40]) == b""


@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_link_types(case: str) -> None:
    linktype, frame, expected = LINK_CASES[case]
    seg, counts = decode(linktype, frame if isinstance(frame, bytes) else bytes(frame))
    assert seg == expected
    assert counts == {"tcp": 1}


def test_ethernet_padding_is_not_payload() -> None:
    frame = bytes(ETH / ip4() / tcp_layer(b"ok"))
    assert len(frame) < 60
    padded = frame + b"\xee" * (60 - len(frame)) + b"FCS!"  # padding and a frame check sequence
    seg, _ = decode(1, padded)
    assert seg is not None
    assert seg.payload == b"ok"
    seg, _ = decode(1, bytes(ETH / ip6() / tcp_layer(b"")) + b"\x00" * 10)
    assert seg is not None
    assert seg.payload == b""


def test_ipv4_options_and_tcp_options_are_skipped() -> None:
    frame = (
        ETH
        / ip4(options=[b"\x94\x04\x00\x00", b"\x01\x01\x01\x00"])
        / tcp_layer(options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)])
    )
    pkt = bytes(frame)
    assert pkt[14] == 0x47  # IHL 7
    seg, counts = decode(1, pkt)
    assert seg == SEG4
    assert counts == {"tcp": 1}


def test_all_eight_tcp_flag_bits_are_kept() -> None:
    seg, _ = decode(1, ETH / ip4() / tcp_layer(flags="FSRPAUEC"))
    assert seg is not None
    assert seg.flags == 0xFF
    for flags, bits in (("S", SYN), ("SA", SYN | ACK), ("FA", FIN | ACK), ("R", RST)):
        seg, _ = decode(1, ETH / ip6() / tcp_layer(b"", flags=flags))
        assert seg is not None
        assert seg.flags == bits


@pytest.mark.parametrize(
    "ip",
    [ip4(flags="MF", frag=0), ip4(flags=0, frag=185), ip4(flags="MF", frag=10)],
    ids=["first", "last", "middle"],
)
def test_ipv4_fragments_are_counted_and_skipped(ip: Packet) -> None:
    assert decode(1, ETH / ip / tcp_layer()) == (None, {"fragments": 1})
    assert decode(228, ip / tcp_layer()) == (None, {"fragments": 1})


def test_ipv4_dont_fragment_is_not_a_fragment() -> None:
    assert decode(1, ETH / ip4(flags="DF") / tcp_layer())[0] == SEG4


@pytest.mark.parametrize(
    "exts",
    [
        [IPv6ExtHdrHopByHop()],
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=["2001:db8::9"])],
        [IPv6ExtHdrDestOpt(options=[]), IPv6ExtHdrDestOpt()],
        [IPv6ExtHdrFragment(offset=0, m=0, id=5)],  # atomic fragment (RFC 6946): not a fragment
        [AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12)],  # 24 bytes: (24 / 4) - 2
    ],
    ids=["hbh", "hbh-dst-rt", "two-dst", "atomic-frag", "ah"],
)
def test_ipv6_extension_headers_are_skipped(exts: list[Packet]) -> None:
    pkt: Packet = ip6()
    for e in exts:
        pkt = pkt / e
    pkt = pkt / tcp_layer()
    seg, counts = decode(1, ETH / pkt)
    assert seg == SEG6
    assert counts == {"tcp": 1}


@pytest.mark.parametrize("offset,m", [(0, 1), (100, 1), (100, 0)])
def test_ipv6_fragments_are_counted_and_skipped(offset: int, m: int) -> None:
    # 48 bytes: a non-last IPv6 fragment must be a multiple of 8 (RFC 8200 4.5) or it is refused
    frame = ETH / ip6() / IPv6ExtHdrFragment(offset=offset, m=m, id=5) / tcp_layer(BODY + b"\n")
    assert decode(1, frame) == (None, {"fragments": 1})


def test_tunnels_are_decapsulated() -> None:
    inner6 = ip6() / tcp_layer()
    inner4 = ip4() / tcp_layer()
    outer = IP(src="1.1.1.1", dst="2.2.2.2")
    outer6 = IPv6(src="::1", dst="::2")
    assert decode(1, ETH / outer / inner6) == (SEG6, {"tcp": 1})  # 6in4 (proto 41)
    assert decode(1, ETH / outer / inner4) == (SEG4, {"tcp": 1})  # 4in4 (proto 4)
    assert decode(1, ETH / outer6 / inner4) == (SEG4, {"tcp": 1})  # 4in6
    assert decode(1, ETH / outer6 / inner6) == (SEG6, {"tcp": 1})  # 6in6
    # the outer header's length bounds the inner datagram: trailing bytes are not payload
    assert decode(228, bytes(outer / inner6) + b"junk") == (SEG6, {"tcp": 1})


def test_l2tp_data_message_with_ppp_is_decapsulated() -> None:
    ppp_ipv6 = b"\xff\x03\x00\x57" + bytes(ip6() / tcp_layer())
    for l2tp in (
        struct.pack("!HHH", 0x0002, 7, 9),  # no optional fields
        struct.pack("!HHHH", 0x4002, 0, 7, 9),  # L: length
        struct.pack("!HHHHH", 0x0802, 7, 9, 1, 2),  # S: Ns, Nr
        struct.pack("!HHHH", 0x0202, 7, 9, 3) + b"pad",  # O: offset size + padding
    ):
        udp = UDP(sport=1701, dport=1701) / Raw(l2tp + ppp_ipv6)
        assert decode(1, ETH / ip4() / udp) == (SEG6, {"tcp": 1})
    control = UDP(sport=1701, dport=1701) / Raw(struct.pack("!HHHH", 0xC802, 12, 0, 0))
    assert decode(1, ETH / ip4() / control) == (None, {"non_tcp": 1})


def test_encapsulation_depth_is_bounded() -> None:
    pkt: Packet = ip4() / tcp_layer()
    for _ in range(MAX_ENCAPSULATION):
        pkt = IP(src="1.1.1.1", dst="2.2.2.2") / pkt
    assert decode(228, pkt) == (SEG4, {"tcp": 1})
    pkt = IP(src="1.1.1.1", dst="2.2.2.2") / pkt
    assert decode(228, pkt) == (None, {"malformed": 1})


def test_ipv4_total_length_zero_means_tso_and_uses_the_frame() -> None:
    frame = bytearray(bytes(ETH / ip4() / tcp_layer()))
    frame[16:18] = b"\x00\x00"
    assert decode(1, bytes(frame)) == (SEG4, {"tcp": 1})


def test_ipv6_payload_length_zero_uses_the_frame() -> None:
    frame = bytearray(bytes(ETH / ip6() / tcp_layer()))
    frame[18:20] = b"\x00\x00"
    assert decode(1, bytes(frame)) == (SEG6, {"tcp": 1})


@pytest.mark.parametrize("ip", [ip4(), ip6()], ids=["v4", "v6"])
def test_snaplen_cut_delivers_what_was_captured_and_counts_it(ip: Packet) -> None:
    frame = bytes(ETH / ip / tcp_layer())
    seg, counts = decode(1, frame[:-10])
    expected = SEG4 if ip.version == 4 else SEG6
    assert seg == expected._replace(payload=BODY[:-10])
    assert counts == {"tcp": 1, "truncated": 1}


@pytest.mark.parametrize(
    ("frame", "outcome"),
    [
        (ETH / ARP(), "non_ip"),
        (Ether(type=0x88CC) / Raw(b"\x00" * 40), "non_ip"),  # LLDP
        (Ether(dst="01:80:c2:00:00:00", type=0x26) / Raw(b"\x42" * 38), "non_ip"),  # 802.3 length
        (ETH / PPPoE(sessionid=1) / PPP(proto=0xC021) / Raw(b"\x01" * 10), "non_ip"),  # LCP
        (ETH / ip4() / UDP(sport=53, dport=53) / Raw(b"x" * 20), "non_tcp"),
        (ETH / ip4() / ICMP(), "non_tcp"),
        (ETH / ip6() / UDP(sport=5353, dport=5353), "non_tcp"),
        (ETH / ip6(nh=59), "non_tcp"),  # no next header
    ],
    ids=["arp", "lldp", "802.3", "lcp", "udp", "icmp", "udp6", "ipv6-no-next"],
)
def test_non_ip_and_non_tcp_frames_are_counted(frame: Packet, outcome: str) -> None:
    assert decode(1, frame) == (None, {outcome: 1})


def test_null_header_with_unknown_family_is_non_ip() -> None:
    assert decode(0, null_header(7, "<") + bytes(ip4() / tcp_layer())) == (None, {"non_ip": 1})


def test_raw_ip_with_bad_version_is_non_ip() -> None:
    assert decode(101, b"\x55" + bytes(40)) == (None, {"non_ip": 1})


@pytest.mark.parametrize("linktype", [147, 105, 127, 65535])
def test_unsupported_linktype_is_counted(linktype: int) -> None:
    assert decode(linktype, bytes(ETH / ip4() / tcp_layer())) == (
        None,
        {"unsupported_linktype": 1, "undecoded": 1, f"undecoded_linktype_{linktype}": 1},
    )


def _patched(pkt: Packet, offset: int, value: bytes) -> bytes:
    b = bytearray(bytes(pkt))
    b[offset : offset + len(value)] = value
    return bytes(b)


@pytest.mark.parametrize(
    "frame",
    [
        _patched(ETH / ip4() / tcp_layer(), 14, b"\x44"),  # IHL 4 < 5
        _patched(ETH / ip4() / tcp_layer(), 14, b"\x65"),  # version 6 under ethertype IPv4
        _patched(ETH / ip4() / tcp_layer(), 16, b"\x00\x10"),  # total length < header
        _patched(ETH / ip4() / tcp_layer(), 46, b"\x40"),  # TCP data offset 4 < 5
        _patched(ETH / ip4() / tcp_layer(b""), 46, b"\xf0"),  # data offset past the datagram
        _patched(ETH / ip6() / tcp_layer(), 14, b"\x40"),  # version 4 under ethertype IPv6
        bytes(ETH / ip4() / tcp_layer())[:40],  # cut inside the TCP header
        bytes(ETH / ip6() / tcp_layer())[:40],  # cut inside the IPv6 header
        bytes(ETH)[:10],  # not even an Ethernet header
        b"",
    ],
    ids=[
        "ihl",
        "v4-version",
        "total-len",
        "doff-small",
        "doff-past-end",
        "v6-version",
        "cut-tcp",
        "cut-ipv6",
        "cut-eth",
        "empty",
    ],
)
def test_malformed_frames_are_counted_never_raised(frame: bytes) -> None:
    assert decode(1, frame) == (None, {"malformed": 1})


def test_every_prefix_of_a_frame_decodes_without_raising() -> None:
    for frame in (
        bytes(ETH / Dot1Q() / ip6() / IPv6ExtHdrHopByHop() / tcp_layer()),
        bytes(ETH / PPPoE() / PPP(proto=0x21) / ip4() / UDP(sport=1701) / Raw(b"\x00\x02" * 8)),
    ):
        for n in range(len(frame) + 1):
            decode(1, frame[:n])  # partition and frames == 1 are checked inside


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999]),
    frame=st.binary(max_size=200),
)
def test_random_bytes_never_raise(linktype: int, frame: bytes) -> None:
    dec = Decoder()
    seg = dec.decode(TS, linktype, frame)
    check_partition(dec.stats)
    if seg is not None:
        assert seg.family in (4, 6)
        assert len(seg.src) == len(seg.dst) == (4 if seg.family == 4 else 16)
        assert seg.payload in frame


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=100),
    tags=st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=3),
    v6=st.booleans(),
    data=st.data(),
)
def test_mutated_headers_never_raise(
    payload: bytes, tags: list[int], v6: bool, data: st.DataObject
) -> None:
    """Valid frames with one random byte changed in the headers: decode may say anything, but
    only through a Segment or a counter."""
    inner = (ip6() if v6 else ip4()) / tcp_layer(payload)
    frame = bytearray(bytes(ETH / inner))
    # VLAN tags go between the MAC addresses and the ethertype: (TPID, TCI) pairs
    frame[12:12] = b"".join(struct.pack("!HH", t, 3) for t in tags)
    header_len = len(frame) - len(payload)
    i = data.draw(st.integers(0, header_len - 1))
    frame[i] = data.draw(st.integers(0, 255))
    dec = Decoder()
    dec.decode(TS, 1, bytes(frame))
    check_partition(dec.stats)
    assert dec.stats.frames == 1


def test_stats_as_dict_and_accumulation() -> None:
    dec = Decoder()
    frames = [
        bytes(ETH / ip4() / tcp_layer()),
        bytes(ETH / ARP()),
        bytes(ETH / ip4() / UDP()),
        b"",
        bytes(ETH / ip4(flags="MF") / tcp_layer()),
    ]
    for f in frames:
        dec.decode(TS, 1, f)
    dec.decode(TS, 4242, b"")
    assert dec.stats.as_dict() == {
        "frames": 6,
        "tcp": 1,
        "non_ip": 1,
        "non_tcp": 1,
        "malformed": 1,
        "unsupported_linktype": 1,
        "fragments": 1,
        "truncated": 0,
        "udp": 0,
        **dict.fromkeys(DecodeStats.FRAGMENT_FIELDS, 0),
        "undecoded": 1,
        "undecoded_linktype_4242": 1,
    }
    assert dec.stats.tcp == 1


# --- tunnels and NFLOG (issue 9) ------------------------------------------------------------------

OUTER = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b") / IP(
    src="192.0.2.1", dst="192.0.2.2"
)
INNER4 = ETH / ip4() / tcp_layer()
INNER6 = ETH / ip6() / tcp_layer()


def nflog(payload: bytes, family: int, order: str = "<") -> bytes:
    """A LINKTYPE_NFLOG record: header, then TLVs (host byte order, padded to 4 bytes)."""

    def tlv(kind: int, value: bytes) -> bytes:
        raw = struct.pack(order + "HH", 4 + len(value), kind) + value
        return raw + b"\x00" * (-len(raw) % 4)

    return (
        bytes([family, 0]) + struct.pack(">H", 7)
        + tlv(1, b"\x08\x00\x03\x00")  # NFULA_PACKET_HDR: hw protocol, hook
        + tlv(10, b"ipt-log\x00")  # NFULA_PREFIX
        + tlv(9, payload)  # NFULA_PAYLOAD
    )  # fmt: skip


TUNNELS = {
    "vxlan-4789": (1, OUTER / UDP(sport=51000, dport=4789) / VXLAN(vni=42) / INNER4, SEG4),
    "vxlan-8472-ipv6-inside": (1, OUTER / UDP(dport=8472) / VXLAN(vni=1) / INNER6, SEG6),
    "vxlan-over-ipv6": (
        1,
        Ether() / IPv6(src="2001:db8::a", dst="2001:db8::b") / UDP(dport=4789) / VXLAN() / INNER4,
        SEG4,
    ),
    "vxlan-vlan-inside": (
        1,
        OUTER / UDP(dport=4789) / VXLAN() / ETH / Dot1Q(vlan=3) / ip4() / tcp_layer(),
        SEG4,
    ),
    "geneve-ethernet": (1, OUTER / UDP(dport=6081) / GENEVE(proto=0x6558) / INNER4, SEG4),
    "geneve-ipv6-with-options": (
        1,
        OUTER
        / UDP(dport=6081)
        / (
            bytes([0x02, 0, 0x86, 0xDD, 0, 0, 1, 0])
            + bytes(range(1, 9))
            + bytes(ip6() / tcp_layer())
        ),
        SEG6,
    ),
    "gre-ipv4": (1, OUTER / GRE(proto=0x0800) / ip4() / tcp_layer(), SEG4),
    "gre-key-seq-ethernet": (
        1,
        OUTER
        / GRE(key_present=1, key=5, seqnum_present=1, sequence_number=9, proto=0x6558)
        / INNER6,
        SEG6,
    ),
    "gre-checksum-ipv6": (
        1,
        OUTER / GRE(chksum_present=1, proto=0x86DD) / ip6() / tcp_layer(),
        SEG6,
    ),
    "erspan-1": (1, OUTER / GRE(proto=0x88BE) / INNER4, SEG4),
    "erspan-2": (
        1,
        OUTER
        / GRE(seqnum_present=1, sequence_number=1, proto=0x88BE)
        / (b"\x10\x00\x00\x01" + bytes(4))
        / INNER4,
        SEG4,
    ),
    "erspan-3": (
        1,
        OUTER / GRE(seqnum_present=1, proto=0x22EB) / (bytes(11) + b"\x01" + bytes(8)) / INNER4,
        SEG4,
    ),
    "nflog-ipv4-le": (239, nflog(bytes(ip4() / tcp_layer()), 2), SEG4),
    "nflog-ipv4-be": (239, nflog(bytes(ip4() / tcp_layer()), 2, ">"), SEG4),
    "nflog-ipv6": (239, nflog(bytes(ip6() / tcp_layer()), 10), SEG6),
}


@pytest.mark.parametrize("case", sorted(TUNNELS))
def test_tunnels_and_nflog_are_decoded(case: str) -> None:
    linktype, frame, expected = TUNNELS[case]
    seg, counts = decode(linktype, bytes(frame))
    assert seg == expected
    assert counts == {"tcp": 1}


UNDECODED = {
    "esp": (1, Ether() / IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / (b"\x00" * 40), "esp", "non_tcp"),
    "l2tpv3": (1, Ether() / IP(proto=115) / (b"\x00" * 40), "l2tpv3", "non_tcp"),
    "gtp-u": (1, OUTER / UDP(dport=2152) / (b"\x30\xff" + bytes(40)), "gtp_u", "non_tcp"),
    "vxlan-gpe": (1, OUTER / UDP(dport=4790) / bytes(40), "vxlan_gpe", "non_tcp"),
    "mpls": (1, Ether(type=0x8847) / (b"\x00\x01\x01\x40" + bytes(ip4() / tcp_layer())), "mpls", "non_ip"),
    "gre-pptp": (1, Ether() / IP(proto=47) / (b"\x30\x81\x88\x0b" + bytes(40)), "gre", "non_tcp"),
    "gre-other-protocol": (1, OUTER / GRE(proto=0x0806) / bytes(28), "gre", "non_ip"),
    "geneve-other-protocol": (1, OUTER / UDP(dport=6081) / GENEVE(proto=0x0806) / bytes(28), "geneve", "non_ip"),
    "linktype-147": (147, bytes(INNER4), "linktype_147", "unsupported_linktype"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(UNDECODED))
def test_what_is_not_decoded_is_counted_by_kind(case: str) -> None:
    linktype, frame, kind, outcome = UNDECODED[case]
    seg, counts = decode(linktype, bytes(frame))
    assert seg is None
    assert counts == {outcome: 1, "undecoded": 1, f"undecoded_{kind}": 1}


def test_undecoded_kinds_are_bounded() -> None:
    dec = Decoder()
    for linktype in range(1000, 1100):
        dec.decode(TS, linktype, b"\x00" * 20)
    undecoded = dec.stats.undecoded
    assert len(undecoded) == 33 and undecoded["other"] == 100 - 32
    assert sum(undecoded.values()) == dec.stats.unsupported_linktype == 100


def test_tunnels_nested_past_the_limit_are_malformed_not_a_crash() -> None:
    frame = INNER4
    for _ in range(MAX_ENCAPSULATION + 1):
        frame = OUTER / UDP(dport=4789) / VXLAN() / frame
    seg, counts = decode(1, bytes(frame))
    assert seg is None and counts == {"malformed": 1}
    deep = bytes(INNER4)
    for _ in range(2000):  # far deeper than Python's recursion limit, were it followed
        deep = bytes(OUTER / UDP(dport=4789) / VXLAN()) + deep
    assert Decoder().decode(TS, 1, deep) is None
