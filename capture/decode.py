"""Link-layer frame → TCP ``Segment`` (or ``None``), with counters for everything else.

Hand-written ``struct`` decoding, on purpose: dpkt's object decode of Ethernet/IP/TCP costs an
order of magnitude more than precompiled ``struct.Struct.unpack_from`` over the frame, and
scapy's two orders (measured in ../shared/reference/perf-baseline.md). Decode runs once
per captured packet, so it is the second-hottest loop after the capture reader. The shape
follows from that: one method, a fast path for the common Ethernet → IPv4 → TCP frame with no
helper calls, integer comparisons instead of dict dispatch, and ``tuple.__new__`` to build the
``Segment`` (the generated ``NamedTuple.__new__`` is a Python-level call). dpkt is used only in
the tests, as an independent oracle.

Supported link types: 0 NULL/loopback and 108 LOOP (address family in either byte order),
1 Ethernet (any stack of 802.1Q 0x8100 / 802.1ad 0x88a8 / 0x9100 tags), 12, 14 and 101 raw IP
(version from the first nibble), 228 raw IPv4, 229 raw IPv6, 113 Linux SLL, 276 Linux SLL2,
239 Linux NFLOG (``iptables -j NFLOG`` / ``tcpdump -i nflog``). Also PPPoE sessions (ethertype
0x8864) on any of the Ethernet-like links. Network layer: IPv4 with options, IPv6 with extension
headers, IPv6-in-IPv4 (41) / IPv4-in-IPv4 (4) tunnels (also inside IPv6), and the tunnels
capture/decode_tunnels.py opens (VXLAN, Geneve, GRE with ERSPAN, L2TPv2); all decapsulated up
to ``MAX_ENCAPSULATION`` levels.

What is not decoded is counted, never silently dropped: a frame of a link type we do not read,
or carried in a tunnel we do not open (ESP, L2TPv3, MPLS, GTP-U, VXLAN-GPE, other GRE payloads)
counts in its outcome (``unsupported_linktype``, ``non_tcp``, ``non_ip``) *and* in
``stats.undecoded`` by kind ("linktype_147", "esp", "gre", ...; at most ``MAX_UNDECODED_KINDS``
kinds, the rest as "other"), which the pipeline reports as ``decode_undecoded_<kind>`` and the
worker's summary line prints: traffic kshark cannot see is said, not hidden.

IP fragments (IPv4, and IPv6 fragment headers, at any encapsulation level) go to a
`capture.ipfrag.FragmentReassembler` (``Decoder.fragments``; its module docstring has the
policy: any order, duplicates ignored, overlaps and inconsistent fragments discard the
datagram as Linux does, bounded fragments, bytes, datagrams and a 30 s timeout in packet
time). A fragment that does not complete its datagram returns ``None`` and counts in
``stats.fragments``. The one that does is decoded as if the datagram had come whole, with that
fragment's timestamp: a header without the fragment fields is put in front of the reassembled
bytes and the ordinary ``_ipv4``/``_ipv6`` code runs on it, so tunnels, extension headers and
the TCP checks behave exactly as for an unfragmented packet. A discarded datagram never
reaches TCP, whose reassembler reports its bytes as a gap, as for a lost packet. The
unfragmented paths do no extra work: fragments branch off where the old code counted them.
The captured frames of a datagram that became a Segment are in ``Decoder.reassembled`` until
``pop_reassembled()`` (the pipeline files them all in the connection's pcap). An IPv6 "atomic"
fragment header (offset 0, no more fragments; RFC 6946) is not a fragment and is decoded
normally.

The IP header's length field bounds the TCP payload, so Ethernet padding and trailers (FCS) are
never taken as data. Two exceptions, both real: a length of 0 means the capture came from a TSO/GSO
or jumbo sender and the frame length is used; a length larger than the captured frame means
the capture was cut at a snap length, and the captured part is handed on (counted in
``stats.truncated``) so the reassembler still sees flags and sequence numbers and reports the
rest as a gap.

Bad bytes never raise: anything that does not parse is counted in ``stats.malformed``.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from capture.counters import Counters
from capture.decode_tunnels import (
    _AF_INET,
    _ETH_IPV4,
    _ETH_IPV6,
    _VLAN_TPIDS,
    MAX_ENCAPSULATION,
    TunnelDecoding,
)
from capture.ipfrag import FragmentLimits, FragmentReassembler, FragmentStats, Reassembled
from capture.segment import Segment

# BSD address-family values found in NULL/LOOP headers (they differ per OS).
_AF_INET6 = frozenset((24, 28, 30, 10))  # NetBSD/OpenBSD, FreeBSD, Darwin, Linux

_PROTO_IPIP = 4
_PROTO_TCP = 6
_PROTO_UDP = 17
_PROTO_IPV6 = 41
_PROTO_GRE = 47
# IP protocols that carry other traffic we do not open: counted by name in stats.undecoded
_UNDECODED_PROTOS = {50: "esp", 97: "etherip", 115: "l2tpv3", 137: "mpls"}
_LINKTYPE_NFLOG = 239
# stats.undecoded holds at most this many kinds; further ones count as "other"
MAX_UNDECODED_KINDS = 32
# IPv6 extension headers with the generic (next, len in 8-octet units - 1) layout.
# hop-by-hop, routing, destination options, mobility, HIP, shim6
_IPV6_EXT_GENERIC = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_FRAGMENT = 44
_IPV6_AH = 51  # length in 4-octet units - 2

# The fast path's whole Ethernet + 20-byte IPv4 + TCP header: (ethertype, version/IHL, TOS),
# total length, (flags/fragment offset, TTL, protocol), src, dst, then the TCP fields below.
_ETH_IPV4_TCP = struct.Struct("!12xIH2xI2x4s4sHHIIBB").unpack_from
# The same for Ethernet + 40-byte IPv6 + TCP: ethertype, version/class/flow label, payload
# length, next header, src, dst, then the TCP fields.
_ETH_IPV6_TCP = struct.Struct("!12xHIHBx16s16sHHIIBB").unpack_from
_IPV4_HDR = struct.Struct("!BxHxxHxBxx4s4s").unpack_from
_IPV6_HDR = struct.Struct("!IHBx16s16s").unpack_from
# sport, dport, seq, ack, data offset byte, flags byte
_TCP_HDR = struct.Struct("!HHIIBB").unpack_from
_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32 = struct.Struct("!I").unpack_from
# The headers put in front of a reassembled datagram: IPv4 without options, id, flags or
# offset (version/IHL, TOS, total length, id, flags/offset, TTL, protocol, checksum, src, dst);
# IPv6 with the first fragment's next header (version, payload length, next header, hop limit).
_WHOLE_IPV4 = struct.Struct("!BBHHHBBH4s4s").pack
_WHOLE_IPV6 = struct.Struct("!IHBB16s16s").pack

_new_segment = tuple.__new__


_DECODE_COUNTERS = "frames non_ip non_tcp malformed unsupported_linktype fragments truncated udp"


class DecodeStats(Counters):
    """Counters. Every frame counts in ``frames`` and in exactly one of: ``tcp`` (a Segment was
    returned), ``non_ip``, ``non_tcp``, ``malformed``, ``unsupported_linktype``, ``fragments``
    (an IP fragment that did not complete a datagram: held, or discarded). The fragment that
    completes one counts as what the whole datagram decoded to. ``truncated`` counts TCP
    segments whose IP datagram was cut by the snap length (also in ``tcp``). ``udp`` counts the
    UDP datagrams handed on in ``Decoder.datagrams`` (also in ``non_tcp``).

    The reassembler's counters (`capture.ipfrag.FragmentStats`) are read through as
    ``fragments_<name>``: ``fragments_reassembled`` datagrams completed; ``fragments_dropped``
    fragments whose bytes were discarded; ``fragments_duplicate`` fragments that brought no new
    bytes; and datagrams discarded by reason: ``fragments_timeout``, ``fragments_overlap``,
    ``fragments_too_large``, ``fragments_evicted``, ``fragments_invalid``.

    ``tcp`` is derived (frames minus the other outcomes) rather than counted: that keeps one
    attribute increment off the per-packet fast path.
    """

    # ClassVar: mypyc (scripts/build_native.py) makes a plain class-level name an instance field.
    FRAGMENT_FIELDS: ClassVar[tuple[str, ...]] = tuple(
        f"fragments_{name}" for name in FragmentStats.FIELDS
    )
    frames: int
    non_ip: int
    non_tcp: int
    malformed: int
    unsupported_linktype: int
    fragments: int
    truncated: int
    udp: int

    def __init__(self, frag: FragmentStats | None = None) -> None:
        super().__init__(_DECODE_COUNTERS)
        self.frag = FragmentStats() if frag is None else frag
        # frames in an encapsulation or link type we do not decode, by kind (module doc);
        # they are also in their outcome above (unsupported_linktype, non_tcp or non_ip)
        self.undecoded: dict[str, int] = {}

    def count_undecoded(self, kind: str) -> None:
        undecoded = self.undecoded
        if kind not in undecoded and len(undecoded) >= MAX_UNDECODED_KINDS:
            kind = "other"
        undecoded[kind] = undecoded.get(kind, 0) + 1

    @property
    def tcp(self) -> int:
        return self.frames - (
            self.non_ip + self.non_tcp + self.malformed + self.unsupported_linktype + self.fragments
        )

    def as_dict(self) -> dict[str, int]:
        out = super().as_dict()
        out = {"frames": out.pop("frames"), "tcp": self.tcp, **out}
        for name, value in self.frag.as_dict().items():
            out[f"fragments_{name}"] = value
        out["undecoded"] = sum(self.undecoded.values())
        for kind, value in self.undecoded.items():
            out[f"undecoded_{kind}"] = value
        return out


class Decoder(TunnelDecoding):
    """Stateless apart from its counters and the fragments it holds; one per pipeline."""

    __slots__ = ("_whole", "_whole_records", "fragments", "reassembled")

    def __init__(
        self,
        fragment_limits: FragmentLimits | None = None,
        udp_ports: frozenset[int] = frozenset(),
    ) -> None:
        self.fragments = FragmentReassembler(fragment_limits)
        super().__init__(DecodeStats(self.fragments.stats), udp_ports)
        # (ts_ns, frame) of every captured fragment of the datagram behind the Segment that
        # decode() just returned, in arrival order (it is the last); empty for other Segments.
        self.reassembled: list[tuple[int, bytes]] = []
        # While a reassembled datagram is decoded: its buffer and its frames, so a fragment
        # found inside it (fragmented tunnel in a fragmented tunnel) is tagged with the
        # captured frames rather than with the buffer.
        self._whole: bytes | None = None
        self._whole_records: list[tuple[int, bytes]] = []

    def pop_reassembled(self) -> list[tuple[int, bytes]]:
        """Takes `reassembled` (the captured fragments of the datagram behind the last Segment).
        A caller filing packets per connection reads it after every Segment: testing the list
        is the cheap check, and it must be popped before the next decode()."""
        records, self.reassembled = self.reassembled, []
        return records

    def expire_fragments(self, now_ns: int) -> None:
        """Discards fragmented datagrams older than the timeout (packet time), for a caller
        whose time moves on without fragments (decode() does it when a fragment arrives)."""
        self.fragments.expire(now_ns)

    def decode(self, ts_ns: int, linktype: int, frame: bytes) -> Segment | None:
        stats = self.stats
        stats.frames += 1
        try:
            if linktype == 1:
                # frame[12] is the ethertype's high byte: 0x08 for IPv4 (and ARP), 0x86 for IPv6;
                # testing it first spares other frames the wasted fast-path unpack. IPv4 first:
                # it is the bulk of real traffic.
                high = frame[12]
                n = len(frame)
                if high == 0x08 and n >= 54:
                    # Fast path: untagged Ethernet + unfragmented IPv4 without options + TCP, in
                    # one unpack. ``evt`` is ethertype, version/IHL and TOS; ``fproto`` is
                    # flags/fragment offset, TTL and protocol, so one mask tests "not a fragment
                    # and TCP". Anything else (including TSO, snap-length cuts and bad lengths)
                    # is decoded again by the general path, which knows why.
                    evt, total, fproto, src, dst, sport, dport, seq, ack, doff, flags = (
                        _ETH_IPV4_TCP(frame, 0)
                    )
                    if evt >> 8 == 0x080045 and fproto & 0x3FFF00FF == _PROTO_TCP:
                        end = 14 + total
                        data = 34 + ((doff >> 4) << 2)
                        if doff >= 0x50 and data <= end <= n:
                            payload = frame[data:end]
                            fields = (ts_ns, 4, src, dst, sport, dport, seq, ack, flags, payload)
                            return _new_segment(Segment, fields)
                elif high == 0x86 and n >= 74:
                    # Fast path: untagged Ethernet + IPv6 with TCP as first next header. A
                    # deliberate fast path: the IPv4 one's steps again, inline (no call per packet).
                    etype, vtcfl, plen, nxt, src, dst, sport, dport, seq, ack, doff, flags = (
                        _ETH_IPV6_TCP(frame, 0)
                    )
                    if etype == _ETH_IPV6 and nxt == _PROTO_TCP and vtcfl >> 28 == 6:
                        end = 54 + plen
                        data = 54 + ((doff >> 4) << 2)
                        if doff >= 0x50 and data <= end <= n:
                            payload = frame[data:end]
                            fields = (ts_ns, 6, src, dst, sport, dport, seq, ack, flags, payload)
                            return _new_segment(Segment, fields)
                return self._ether(ts_ns, frame, 12)
            if linktype in (101, 12, 14):
                version = frame[0] >> 4
                if version == 4:
                    return self._ipv4(ts_ns, frame, 0, len(frame), 0)
                if version == 6:
                    return self._ipv6(ts_ns, frame, 0, len(frame), 0)
                stats.non_ip += 1
                return None
            if linktype == 228:
                return self._ipv4(ts_ns, frame, 0, len(frame), 0)
            if linktype == 229:
                return self._ipv6(ts_ns, frame, 0, len(frame), 0)
            if linktype == 276:  # SLL2: protocol first, 20-byte header
                return self._ether(ts_ns, frame, 0, 20)
            if linktype == 113:  # SLL: 16-byte header, protocol last
                return self._ether(ts_ns, frame, 14, 16)
            if linktype in (0, 108):
                # 4-byte address family in the capturing host's byte order (LOOP: network
                # order). The values are small, so a big-endian one reads as >= 2**16 in LE.
                af = _U32_LE(frame, 0)[0]
                if af > 0xFFFF:
                    af = int.from_bytes(frame[0:4], "big")
                if af == _AF_INET:
                    return self._ipv4(ts_ns, frame, 4, len(frame), 0)
                if af in _AF_INET6:
                    return self._ipv6(ts_ns, frame, 4, len(frame), 0)
                stats.non_ip += 1
                return None
            if linktype == _LINKTYPE_NFLOG:
                return self._nflog(ts_ns, frame)
            stats.unsupported_linktype += 1
            stats.count_undecoded(f"linktype_{linktype}")
            return None
        except (struct.error, IndexError):
            # A header ran past the end of the frame.
            stats.malformed += 1
            return None

    def _ipv4(self, ts_ns: int, frame: bytes, off: int, limit: int, depth: int) -> Segment | None:
        """IPv4 header at ``off``; ``limit`` is where the enclosing layer's data ends."""
        stats = self.stats
        vihl, total, frag, proto, src, dst = _IPV4_HDR(frame, off)
        ihl = (vihl & 0x0F) << 2
        truncated = False
        if vihl >> 4 != 4 or ihl < 20 or off + ihl > limit:
            stats.malformed += 1
            return None
        if total == 0:
            end = limit  # TSO/GSO super-packet: the length field is not filled in
        elif total < ihl:
            stats.malformed += 1
            return None
        else:
            end = off + total
            if end > limit:
                end = limit
                truncated = True
        if frag & 0x3FFF:  # more-fragments flag or a non-zero offset
            return self._ipv4_fragment(
                ts_ns, frame, off, ihl, end, frag, proto, src, dst, truncated, depth
            )
        if proto == _PROTO_TCP:
            seg = self._tcp(ts_ns, 4, src, dst, frame, off + ihl, end)
            if seg is not None and truncated:
                stats.truncated += 1
            return seg
        if proto in (_PROTO_IPV6, _PROTO_IPIP):
            if depth >= MAX_ENCAPSULATION:
                stats.malformed += 1
                return None
            if proto == _PROTO_IPV6:
                return self._ipv6(ts_ns, frame, off + ihl, end, depth + 1)
            return self._ipv4(ts_ns, frame, off + ihl, end, depth + 1)
        if proto == _PROTO_UDP:
            return self._udp(ts_ns, frame, off + ihl, end, depth, 4, src, dst)
        if proto == _PROTO_GRE:
            return self._gre(ts_ns, frame, off + ihl, end, depth)
        kind = _UNDECODED_PROTOS.get(proto)
        if kind is not None:
            stats.count_undecoded(kind)
        stats.non_tcp += 1
        return None

    def _ipv6(self, ts_ns: int, frame: bytes, off: int, limit: int, depth: int) -> Segment | None:
        stats = self.stats
        vtcfl, plen, nxt, src, dst = _IPV6_HDR(frame, off)
        if vtcfl >> 28 != 6 or off + 40 > limit:
            stats.malformed += 1
            return None
        pos = off + 40
        truncated = False
        if plen == 0:
            end = limit  # jumbogram or TSO/GSO super-packet: no length in the header
        else:
            end = pos + plen
            if end > limit:
                end = limit
                truncated = True
        while True:
            if nxt == _PROTO_TCP:
                seg = self._tcp(ts_ns, 6, src, dst, frame, pos, end)
                if seg is not None and truncated:
                    stats.truncated += 1
                return seg
            if nxt in _IPV6_EXT_GENERIC:
                nxt = frame[pos]
                pos += (frame[pos + 1] + 1) << 3
            elif nxt == _IPV6_FRAGMENT:
                offset_flags = _U16(frame, pos + 2)[0]
                if offset_flags & 0xFFF9:  # offset (13 bits) or the M flag
                    return self._ipv6_fragment(
                        ts_ns, frame, off, pos, end, offset_flags, src, dst, truncated, depth
                    )
                nxt = frame[pos]
                pos += 8
            elif nxt == _IPV6_AH:
                nxt = frame[pos]
                pos += (frame[pos + 1] + 2) << 2
            elif nxt in (_PROTO_IPV6, _PROTO_IPIP):
                if depth >= MAX_ENCAPSULATION:
                    stats.malformed += 1
                    return None
                if nxt == _PROTO_IPV6:
                    return self._ipv6(ts_ns, frame, pos, end, depth + 1)
                return self._ipv4(ts_ns, frame, pos, end, depth + 1)
            elif nxt == _PROTO_UDP:
                return self._udp(ts_ns, frame, pos, end, depth, 6, src, dst)
            elif nxt == _PROTO_GRE:
                return self._gre(ts_ns, frame, pos, end, depth)
            else:
                kind = _UNDECODED_PROTOS.get(nxt)
                if kind is not None:
                    stats.count_undecoded(kind)
                stats.non_tcp += 1  # includes 59 "no next header", ICMPv6, ESP
                return None
            if pos > end:
                stats.malformed += 1
                return None

    # -- fragments (off the unfragmented paths) -------------------------------------------------

    def _ipv4_fragment(
        self,
        ts_ns: int,
        frame: bytes,
        off: int,
        ihl: int,
        end: int,
        frag: int,
        proto: int,
        src: bytes,
        dst: bytes,
        cut: bool,
        depth: int,
    ) -> Segment | None:
        """An IPv4 fragment whose header is at ``off``: hold it, or decode its completed
        datagram."""
        tag = self._whole_records if frame is self._whole else [(ts_ns, frame)]
        done = self.fragments.ipv4(
            ts_ns, src, dst, proto, _U16(frame, off + 4)[0], frag, frame, off + ihl, end, ihl,
            tag, cut,
        )  # fmt: skip
        if done is None:
            self.stats.fragments += 1
            return None
        payload = done.payload
        whole = _WHOLE_IPV4(0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src, dst) + payload
        return self._decode_whole(ts_ns, done, whole, 4, depth)

    def _ipv6_fragment(
        self,
        ts_ns: int,
        frame: bytes,
        off: int,
        pos: int,
        end: int,
        offset_flags: int,
        src: bytes,
        dst: bytes,
        cut: bool,
        depth: int,
    ) -> Segment | None:
        """An IPv6 fragment header at ``pos`` (the IPv6 header at ``off``)."""
        if pos + 8 > end:
            self.stats.malformed += 1
            return None
        tag = self._whole_records if frame is self._whole else [(ts_ns, frame)]
        done = self.fragments.ipv6(
            ts_ns, src, dst, _U32(frame, pos + 4)[0], frame[pos], offset_flags, frame, pos + 8,
            end, pos - (off + 40), tag, cut,
        )  # fmt: skip
        if done is None:
            self.stats.fragments += 1
            return None
        payload = done.payload
        whole = _WHOLE_IPV6(0x60000000, len(payload), done.nxt, 64, src, dst) + payload
        return self._decode_whole(ts_ns, done, whole, 6, depth)

    def _decode_whole(
        self, ts_ns: int, done: Reassembled, whole: bytes, version: int, depth: int
    ) -> Segment | None:
        """Decodes a reassembled datagram (``whole``: a plain header and its payload) as if it
        had been captured that way, and notes the frames it came in."""
        records = [record for tag in done.tags for record in tag]
        completed = self.fragments.stats.reassembled
        datagrams = len(self.datagrams)
        self._whole, self._whole_records = whole, records
        try:
            if version == 4:
                seg = self._ipv4(ts_ns, whole, 0, len(whole), depth)
            else:
                seg = self._ipv6(ts_ns, whole, 0, len(whole), depth)
        finally:
            self._whole, self._whole_records = None, []
        # A datagram inside this one that completed too (nested fragmentation) has noted its
        # own frames, which include these. A UDP datagram handed on is filed like a Segment.
        if (seg is not None or len(self.datagrams) > datagrams) and (
            self.fragments.stats.reassembled == completed
        ):
            self.reassembled = records
        return seg

    def _tcp(
        self, ts_ns: int, family: int, src: bytes, dst: bytes, frame: bytes, off: int, end: int
    ) -> Segment | None:
        sport, dport, seq, ack, doff, flags = _TCP_HDR(frame, off)
        data = off + ((doff >> 4) << 2)
        if doff < 0x50 or data > end:
            self.stats.malformed += 1
            return None
        return _new_segment(
            Segment, (ts_ns, family, src, dst, sport, dport, seq, ack, flags, frame[data:end])
        )


def tcp_options(linktype: int, frame: bytes) -> bytes:
    """The TCP options of a frame's segment (b"" when it has none, or when the frame is not a
    plain link / IPv4 or IPv6 / TCP one: tunnels, fragments and IPv6 extension headers are not
    followed). Decode leaves options out of `Segment` to stay cheap; the pipeline asks for them
    only while the reassembler waits for a peer's SACK (capture/reassembly.py, "Keep-alives")."""
    try:
        if linktype in (1, 113, 276):
            # where the EtherType is, and where what it names starts (as in Decoder._ether)
            type_at, off = (12, 14) if linktype == 1 else (14, 16) if linktype == 113 else (0, 20)
            etype = _U16(frame, type_at)[0]
            while etype in _VLAN_TPIDS:
                etype = _U16(frame, off + 2)[0]
                off += 4
        elif linktype in (101, 12, 14, 228, 229):
            etype, off = (_ETH_IPV6 if frame[0] >> 4 == 6 else _ETH_IPV4), 0
        elif linktype in (0, 108):
            etype, off = (
                (_ETH_IPV4 if frame[0] == _AF_INET or frame[3] == _AF_INET else _ETH_IPV6),
                4,
            )
        else:
            return b""
        if etype == _ETH_IPV4:
            if frame[off + 9] != _PROTO_TCP:
                return b""
            off += (frame[off] & 0x0F) << 2
        elif etype == _ETH_IPV6:
            if frame[off + 6] != _PROTO_TCP:
                return b""
            off += 40
        else:
            return b""
        return frame[off + 20 : off + ((frame[off + 12] >> 4) << 2)]
    except IndexError:
        return b""
