"""What the decoder (capture/decode.py) finds inside frames: tunnels and encapsulations, and the
Ethernet header (VLAN tags, PPPoE) that a captured frame and a tunnel's inner frame both start with.

The tunnels Kubernetes overlays and mirroring use: VXLAN (UDP 4789, and 8472, the Linux
kernel's default that Flannel and Cilium use), Geneve (UDP 6081) and GRE (IP 47: IPv4, IPv6,
transparent Ethernet, ERSPAN types I to III); L2TPv2 data over UDP port 1701 carrying PPP (an
ISP's IPv6 tunnel, as in dpkt-nb6-http.pcap), PPPoE sessions, and Linux NFLOG (link type 239:
TLVs in the capturing host's byte order, the packet in the NFULA_PAYLOAD one). Each unwraps
to an Ethernet frame or an IP packet and hands it back to the decoder, up to
``MAX_ENCAPSULATION`` levels; what is not opened (ESP, L2TPv3, MPLS, GTP-U, VXLAN-GPE, other
GRE payloads) is counted by kind. UDP that is no tunnel is handed on as a ``Datagram`` when a
UDP dissector listens on its port.

``TunnelDecoding`` is the base of ``capture.decode.Decoder``: a base class rather than a
helper, so that compiled (capture/__init__.py) a tunnel's inner frame goes back to the
decoder's methods by direct calls.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from capture.segment import Datagram, Segment

if TYPE_CHECKING:
    from capture.decode import DecodeStats

# How many IP-in-IP layers we peel. Real tunnels nest once or twice; the bound keeps a crafted
# frame of nested headers from costing thousands of iterations. Deeper frames count as malformed.
MAX_ENCAPSULATION = 4

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_PPPOE_SESSION = 0x8864
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad (QinQ outer), legacy QinQ
_MPLS = (0x8847, 0x8848)
_PPP_IPV4 = 0x0021
_PPP_IPV6 = 0x0057
_L2TP_PORT = 1701
# UDP ports of tunnels: decoded ones, then ones only counted
_VXLAN_PORTS = (4789, 8472)  # IANA's, and the Linux kernel's default (Flannel, Cilium)
_GENEVE_PORT = 6081
_UNDECODED_UDP = {4790: "vxlan_gpe", 2152: "gtp_u"}
_ETH_TEB = 0x6558  # transparent Ethernet bridging: GRE/Geneve carrying an Ethernet frame
_ERSPAN_2 = 0x88BE  # ERSPAN type I (no header) or II (8-byte header: GRE sequence bit set)
_ERSPAN_3 = 0x22EB
_NFULA_PAYLOAD = 9
_AF_INET = 2
_AF_INET6_LINUX = 10

_U16 = struct.Struct("!H").unpack_from
_UDP_PORTS = struct.Struct("!HH").unpack_from
_PPPOE_LEN = struct.Struct("!4xH").unpack_from
_new_segment = tuple.__new__


class TunnelDecoding:
    """The tunnels of ``capture.decode.Decoder`` (see the module docstring)."""

    __slots__ = ("datagrams", "stats", "udp_ports")

    def __init__(self, stats: DecodeStats, udp_ports: frozenset[int]) -> None:
        self.stats = stats
        # UDP datagrams from or to these ports are handed on: decode() returns None for them
        # and appends them here (the caller takes them). Off the TCP paths entirely: only
        # frames that are not TCP look at it.
        self.udp_ports = udp_ports
        self.datagrams: list[Datagram] = []

    def _ether(
        self,
        ts_ns: int,
        frame: bytes,
        type_at: int,
        payload_at: int = -1,
        depth: int = 0,
        limit: int = -1,
    ) -> Segment | None:
        """EtherType at ``type_at``; network header at ``payload_at`` (default: right after it),
        after any number of VLAN tags (each tag is TPID+TCI: the next type sits 4 bytes on).
        ``limit``: where the frame's data ends (an Ethernet frame inside a tunnel), else its end."""
        off = type_at + 2 if payload_at < 0 else payload_at
        end = len(frame) if limit < 0 else limit
        etype = _U16(frame, type_at)[0]
        while etype in _VLAN_TPIDS:
            etype = _U16(frame, off + 2)[0]
            off += 4
        if etype == _ETH_IPV4:
            return self._ipv4(ts_ns, frame, off, end, depth)
        if etype == _ETH_IPV6:
            return self._ipv6(ts_ns, frame, off, end, depth)
        if etype == _ETH_PPPOE_SESSION:
            # PPPoE session header: ver/type, code, session id, payload length; then PPP.
            stop = off + 6 + _PPPOE_LEN(frame, off)[0]
            return self._ppp(ts_ns, frame, off + 6, min(stop, end), depth)
        if etype in _MPLS:
            self.stats.count_undecoded("mpls")
        self.stats.non_ip += 1
        return None

    # What a tunnel carries goes back to the decoder's IP layers (capture/decode.py).

    def _ipv4(self, ts_ns: int, frame: bytes, off: int, limit: int, depth: int) -> Segment | None:
        raise NotImplementedError

    def _ipv6(self, ts_ns: int, frame: bytes, off: int, limit: int, depth: int) -> Segment | None:
        raise NotImplementedError

    def _ppp(self, ts_ns: int, frame: bytes, off: int, limit: int, depth: int) -> Segment | None:
        """A PPP frame (PPPoE, L2TP): optional ff 03 address/control, 1- or 2-byte protocol."""
        if frame[off] == 0xFF and frame[off + 1] == 0x03:
            off += 2
        if frame[off] & 1:  # protocol-field compression: one byte
            proto = frame[off]
            off += 1
        else:
            proto = _U16(frame, off)[0]
            off += 2
        if proto == _PPP_IPV4:
            return self._ipv4(ts_ns, frame, off, limit, depth)
        if proto == _PPP_IPV6:
            return self._ipv6(ts_ns, frame, off, limit, depth)
        self.stats.non_ip += 1  # LCP, IPCP, CHAP, …
        return None

    def _udp(
        self,
        ts_ns: int,
        frame: bytes,
        off: int,
        end: int,
        depth: int,
        family: int,
        src: bytes,
        dst: bytes,
    ) -> Segment | None:
        """UDP as a tunnel: VXLAN and Geneve carry the overlay networks' frames (pod to pod
        traffic between nodes), L2TPv2 data messages carry PPP (e.g. IPv6 over an ISP's L2TP,
        as in dpkt-nb6-http.pcap). A datagram for a port in `udp_ports` goes to `datagrams`
        (payload bounded by the UDP length, or cut where the capture was cut). Everything else
        is just non-TCP."""
        sport, dport = _UDP_PORTS(frame, off)
        if dport in _VXLAN_PORTS:
            return self._vxlan(ts_ns, frame, off + 8, end, depth)
        if dport == _GENEVE_PORT:
            return self._geneve(ts_ns, frame, off + 8, end, depth)
        udp_ports = self.udp_ports
        if sport in udp_ports or dport in udp_ports:
            length = _U16(frame, off + 4)[0]
            stop = off + length
            if length < 8 or off + 8 > end:
                self.stats.malformed += 1
                return None
            self.datagrams.append(
                _new_segment(
                    Datagram,
                    (ts_ns, family, src, dst, sport, dport, frame[off + 8 : min(stop, end)]),
                )
            )
            self.stats.non_tcp += 1
            self.stats.udp += 1
            return None
        if sport != _L2TP_PORT and dport != _L2TP_PORT:
            kind = _UNDECODED_UDP.get(dport)
            if kind is not None:
                self.stats.count_undecoded(kind)
            self.stats.non_tcp += 1
            return None
        pos = off + 8
        flags = _U16(frame, pos)[0]
        if flags & 0x8000 or flags & 0x000F != 2:  # control message, or not L2TPv2
            self.stats.non_tcp += 1
            return None
        pos += 6  # flags/version, tunnel id, session id
        if flags & 0x4000:  # L: length field present
            pos += 2
        if flags & 0x0800:  # S: Ns and Nr present
            pos += 4
        if flags & 0x0200:  # O: offset size, then that much padding
            pos += 2 + _U16(frame, pos)[0]
        if depth >= MAX_ENCAPSULATION or pos + 2 > end:
            self.stats.malformed += 1
            return None
        return self._ppp(ts_ns, frame, pos, end, depth + 1)

    def _vxlan(self, ts_ns: int, frame: bytes, pos: int, end: int, depth: int) -> Segment | None:
        """VXLAN (RFC 7348): 8 bytes (flags with the I bit, VNI), then an Ethernet frame."""
        if depth >= MAX_ENCAPSULATION or pos + 8 + 14 > end or not frame[pos] & 0x08:
            self.stats.malformed += 1
            return None
        return self._ether(ts_ns, frame, pos + 8 + 12, -1, depth + 1, end)

    def _geneve(self, ts_ns: int, frame: bytes, pos: int, end: int, depth: int) -> Segment | None:
        """Geneve (RFC 8926): 8 bytes + options (length in 4-byte words), then the protocol
        its type names: an Ethernet frame (0x6558), IPv4 or IPv6."""
        first = frame[pos]
        proto = _U16(frame, pos + 2)[0]
        inner = pos + 8 + ((first & 0x3F) << 2)
        if depth >= MAX_ENCAPSULATION or first >> 6 != 0 or inner > end:
            self.stats.malformed += 1
            return None
        return self._inner(ts_ns, frame, proto, inner, end, depth, "geneve")

    def _gre(self, ts_ns: int, frame: bytes, pos: int, end: int, depth: int) -> Segment | None:
        """GRE (RFC 2784/2890): flags and version, protocol type, then optional checksum, key
        and sequence number; ERSPAN (port mirroring) rides on it with an 0x88BE/0x22EB type."""
        flags = _U16(frame, pos)[0]
        proto = _U16(frame, pos + 2)[0]
        if flags & 0x4007:  # routing present (RFC 1701), or version 1 (PPTP): not opened
            self.stats.count_undecoded("gre")
            self.stats.non_tcp += 1
            return None
        inner = pos + 4 + 4 * ((flags >> 15 & 1) + (flags >> 13 & 1) + (flags >> 12 & 1))
        if proto == _ERSPAN_2:
            if flags & 0x1000:  # type II: an 8-byte ERSPAN header (type I has none)
                inner += 8
            proto = _ETH_TEB
        elif proto == _ERSPAN_3:
            # type III: 12 bytes, and 8 more of platform-specific data when its O bit is set
            inner += 12 + (8 if frame[inner + 11] & 1 else 0)
            proto = _ETH_TEB
        if depth >= MAX_ENCAPSULATION or inner > end:
            self.stats.malformed += 1
            return None
        return self._inner(ts_ns, frame, proto, inner, end, depth, "gre")

    def _inner(
        self, ts_ns: int, frame: bytes, proto: int, pos: int, end: int, depth: int, tunnel: str
    ) -> Segment | None:
        """What a tunnel carries, by EtherType: an Ethernet frame, IPv4 or IPv6."""
        if proto == _ETH_TEB:
            if pos + 14 > end:
                self.stats.malformed += 1
                return None
            return self._ether(ts_ns, frame, pos + 12, -1, depth + 1, end)
        if proto == _ETH_IPV4:
            return self._ipv4(ts_ns, frame, pos, end, depth + 1)
        if proto == _ETH_IPV6:
            return self._ipv6(ts_ns, frame, pos, end, depth + 1)
        self.stats.count_undecoded(tunnel)
        self.stats.non_ip += 1
        return None

    def _nflog(self, ts_ns: int, frame: bytes) -> Segment | None:
        """Linux NFLOG (link type 239): a 4-byte header (address family, version, resource
        id), then TLVs (length including its 4-byte header, type; in the capturing host's
        byte order, padded to 4 bytes); the packet is the NFULA_PAYLOAD one, from its IP
        header. The byte order is whichever makes the first TLV fit the frame."""
        n = len(frame)
        family = frame[0]
        order = "<"
        if n >= 8:
            first = struct.unpack_from("<H", frame, 4)[0]
            if first < 4 or 4 + first > n:
                order = ">"
        tlv = struct.Struct(order + "HH").unpack_from
        pos = 4
        while pos + 4 <= n:
            length, kind = tlv(frame, pos)
            if length < 4 or pos + length > n:
                self.stats.malformed += 1
                return None
            if kind & 0x3FFF == _NFULA_PAYLOAD:
                start = pos + 4
                stop = pos + length
                version = frame[start] >> 4 if start < stop else 0
                if family == _AF_INET or (family != _AF_INET6_LINUX and version == 4):
                    return self._ipv4(ts_ns, frame, start, stop, 0)
                if family == _AF_INET6_LINUX or version == 6:
                    return self._ipv6(ts_ns, frame, start, stop, 0)
                self.stats.non_ip += 1
                return None
            pos += (length + 3) & ~3
        self.stats.non_ip += 1  # no packet in it (NFLOG can log headers only elsewhere)
        return None
