"""Which dissectors exist, and which one a connection or UDP flow gets.

Each protocol is described by a `DissectorSpec` (its name, how it is made for TCP and/or UDP,
how it is recognised); `DEFAULT_SPECS` lists the ones kshark runs. A `Selection` (one per
pipeline) applies them, in this order, tshark's and Kubeshark's rules combined:

1. A port hint: `--decode-as PORT=PROTO` (tshark's `-d tcp.port==PORT,PROTO`), then the ports a
   protocol is known by without looking at content (`tcp_ports` / `udp_ports`: DNS on 53).
   Either end's port counts, the server's (as the reassembler guesses it) first.
2. Content: the TCP detectors, lowest `priority` first (Kubeshark's order), look at the first
   bytes of each direction; the first to say YES wins. Until each has said YES or NO (or
   `SNIFF_BYTES` per direction have been seen, or a gap or the end came), a `Sniffer` holds
   the bytes, then hands the connection over to the chosen dissector with all of them.
3. The fallback (HTTP/1, which scans for a request or status line itself and gives up after
   `HttpLimits.max_probe` bytes): what TCP gets when nothing else claims it. With no content
   detector registered a connection gets the fallback at once, with no Sniffer in between.

A CONNECT tunnel (HTTP/1 `CONNECT host:port` answered 2xx) is chosen for the same way, as
tshark does: the HTTP/1 dissector hands the connection over (capture/dissect.py) to what
`Selection.tunnel` picks for the tunnel, a connection whose server port is the CONNECT target's
(a port hint for it applies), then by content, then the fallback. h2c or gRPC through a proxy
is dissected so; a TLS tunnel (HTTPS through a proxy) is not, as anything else unrecognised.

UDP has no content step: a datagram is dissected only when one of its ports is hinted (the
decoder hands on only those, `Selection.udp_ports`), as tshark does for DNS.

mDNS (UDP 5353) is not DNS here, as in tshark (which calls it `mdns`): its multicast answers do
not pair by 5-tuple. `--decode-as 5353=dns` dissects it as DNS anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from capture.dissect import MORE, YES, TcpDissector, UdpDissector, as_tcp, as_udp
from capture.dissect_dns import DnsStats, DnsTcp, DnsUdp
from capture.http1 import HttpConnection, HttpStats, Message
from capture.http2 import Http2Connection, Http2Stats
from capture.http2 import detect as detect_http2

if TYPE_CHECKING:
    from capture.reassembly import Opened

# Bytes per direction a content detector may look at; a detector still asking for more after
# this many counts as "no".
SNIFF_BYTES = 512


@dataclass(frozen=True, slots=True)
class DissectorSpec:
    """One protocol, as the pipeline sees it. Factories take the `Selection` (its `limits` is
    the pipeline's PipelineLimits; `upgrades` the Upgrade hand-overs, bound; `stats[name]` the
    protocol's counters) and, for TCP, the connection. What they return is a TcpDissector /
    UdpDissector, or a plain-Python object with the same contract (it is wrapped:
    capture/dissect.py)."""

    name: str  # what --decode-as calls it, e.g. "http", "http2", "dns"
    priority: int = 0  # content detection order, lowest first (Kubeshark's protocol.priority)
    tcp: Callable[[Selection, Opened], Any] | None = None
    udp: Callable[[Selection], Any] | None = None
    # (first bytes of side 0, of side 1, the connection) -> NO / YES / MORE (capture.dissect)
    detect: Callable[[bytes, bytes, Opened], int] | None = None
    tcp_ports: frozenset[int] = frozenset()  # chosen by port, before content detection
    udp_ports: frozenset[int] = frozenset()  # dissected on these UDP ports
    # An HTTP/1.1 Upgrade token (lower case) that hands the connection over to this protocol,
    # and the factory: (selection, upgrade request, 101 response, client side) -> dissector.
    upgrade: str = ""
    upgraded: Callable[[Selection, Message | None, Message, int], Any] | None = None
    fallback: bool = False  # TCP gets this one when nothing else matched
    # Makes the protocol's counters (a DissectorStats, or any object with `as_dict()`), one per
    # pipeline, shared by every dissector of the protocol: Selection.stats[name].
    stats: Callable[[], Any] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other --decode-as names


def _http1(sel: Selection, conn: Opened) -> TcpDissector:
    return HttpConnection(
        sel.limits.http, sel.stats["http"], sel.upgrades or None, partial(sel.tunnel, conn)
    )


def _dns_tcp(sel: Selection, conn: Opened) -> TcpDissector:
    return DnsTcp(sel.limits.dns, sel.stats["dns"])


def _dns_udp(sel: Selection) -> UdpDissector:
    return DnsUdp(sel.limits.dns, sel.stats["dns"])


HTTP1 = DissectorSpec(name="http", tcp=_http1, fallback=True, stats=HttpStats)


def _http2(sel: Selection, conn: Opened) -> TcpDissector:
    return Http2Connection(sel.limits.http2, sel.limits.protobuf, sel.stats["http2"])


def _h2c(sel: Selection, request: Message | None, response: Message, client_side: int) -> Any:
    d = Http2Connection(sel.limits.http2, sel.limits.protobuf, sel.stats["http2"])
    d.upgrade(request, client_side, response.ts_first_ns)
    return d


# HTTP/2 by the client preface (or, mid-connection, its frames); gRPC is HTTP/2 (capture/http2.py)
HTTP2 = DissectorSpec(
    name="http2",
    tcp=_http2,
    detect=detect_http2,
    upgrade="h2c",
    upgraded=_h2c,
    aliases=("grpc", "h2c"),
    stats=Http2Stats,
)
# DNS by port only, as tshark: 53 over both transports (RFC 1035 4.2). Kubeshark's priority 4.
DNS = DissectorSpec(
    name="dns",
    priority=4,
    tcp=_dns_tcp,
    udp=_dns_udp,
    tcp_ports=frozenset({53}),
    udp_ports=frozenset({53}),
    stats=DnsStats,
)

DEFAULT_SPECS: tuple[DissectorSpec, ...] = (HTTP1, HTTP2, DNS)


def spec_names(specs: Sequence[DissectorSpec] = DEFAULT_SPECS) -> list[str]:
    names: list[str] = []
    for spec in specs:
        names.append(spec.name)
        names.extend(spec.aliases)
    return sorted(names)


def parse_decode_as(text: str, specs: Sequence[DissectorSpec] = DEFAULT_SPECS) -> tuple[int, str]:
    """`"50051=http2"` → (50051, "http2"); ValueError with a one-line reason otherwise."""
    port_text, sep, name = text.partition("=")
    name = name.strip().lower()
    known = spec_names(specs)
    port_text = port_text.strip()
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: expected PORT=PROTOCOL with PORT 1-65535 (e.g. 50051=http2)")
    if name not in known:
        raise ValueError(f"{text!r}: unknown protocol {name!r} (known: {', '.join(known)})")
    return int(port_text), name


class Inert(TcpDissector):
    """What a connection gets when no dissector applies: wants nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        pass

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        pass

    def end(self, reason: str, ts_ns: int) -> None:
        pass


class Selection:
    """The dissector choice of one pipeline (see the module docstring)."""

    def __init__(
        self,
        limits: Any,
        specs: Sequence[DissectorSpec] = DEFAULT_SPECS,
        decode_as: Mapping[int, str] | None = None,
    ) -> None:
        self.limits = limits  # the pipeline's PipelineLimits
        # protocol name -> its counters, shared by its dissectors (Pipeline.stats: <name>_*)
        self.stats: dict[str, Any] = {s.name: s.stats() for s in specs if s.stats is not None}
        by_name: dict[str, DissectorSpec] = {}
        for spec in specs:
            for name in (spec.name, *spec.aliases):
                by_name[name] = spec
        tcp_hint: dict[int, DissectorSpec] = {}
        udp_hint: dict[int, DissectorSpec] = {}
        for spec in sorted(specs, key=lambda s: -s.priority):  # lower priority wins a port
            for port in spec.tcp_ports:
                tcp_hint[port] = spec
            for port in spec.udp_ports:
                udp_hint[port] = spec
        for port, name in (decode_as or {}).items():
            hinted = by_name.get(name)
            if hinted is None:
                raise ValueError(f"--decode-as {port}={name}: unknown protocol")
            if hinted.tcp is not None:
                tcp_hint[port] = hinted
            else:
                tcp_hint.pop(port, None)
            if hinted.udp is not None:
                udp_hint[port] = hinted
            else:
                udp_hint.pop(port, None)
        self._tcp_hint = tcp_hint
        self._udp_hint = udp_hint
        # The decoder hands on UDP datagrams from or to these ports (capture/decode.py).
        self.udp_ports = frozenset(udp_hint)
        self.detectors = [
            s for s in sorted(specs, key=lambda s: s.priority) if s.detect is not None and s.tcp
        ]
        fallbacks = [s for s in specs if s.fallback and s.tcp is not None]
        self.fallback: DissectorSpec | None = fallbacks[0] if fallbacks else None
        self.upgrades: dict[str, Callable[[Message | None, Message, int], TcpDissector]] = {}
        for spec in specs:
            if spec.upgrade and spec.upgraded is not None:
                self.upgrades[spec.upgrade] = partial(_upgraded, spec.upgraded, self)

    def tcp(self, conn: Opened) -> TcpDissector:
        """The dissector a new TCP connection starts with."""
        hints = self._tcp_hint
        if hints:
            spec = hints.get(conn.server_port) or hints.get(conn.client_port)
            if spec is not None:
                return self.make_tcp(spec, conn)
        if self.detectors:
            return Sniffer(self, conn)
        return self.make_tcp(self.fallback, conn)

    def make_tcp(self, spec: DissectorSpec | None, conn: Opened) -> TcpDissector:
        if spec is None or spec.tcp is None:
            return Inert()
        return as_tcp(spec.tcp(self, conn))

    def tunnel(
        self, conn: Opened, request: Message | None, response: Message, client_side: int
    ) -> TcpDissector:
        """What the bytes of a CONNECT tunnel on `conn` go to (see the module docstring): the
        choice for a connection to the target's port (`host:port` in the request)."""
        port = _target_port(request.target) if request is not None and request.target else 0
        if port:
            # Opened's side 0 is the client; the CONNECT's client is the tunnel's.
            if client_side == 0:
                conn = replace(conn, server_port=port, ts_ns=response.ts_first_ns)
            else:
                conn = replace(conn, client_port=port, ts_ns=response.ts_first_ns)
        return self.tcp(conn)

    def make_udp(self, spec: DissectorSpec) -> UdpDissector:
        assert spec.udp is not None
        return as_udp(spec.udp(self))

    def udp(self, sport: int, dport: int) -> tuple[DissectorSpec, bool] | None:
        """The spec for a datagram between these ports, and whether its sender is the client
        (it sent to the hinted port); None when neither port is hinted."""
        hints = self._udp_hint
        spec = hints.get(dport)
        if spec is not None:
            return spec, True
        spec = hints.get(sport)
        if spec is not None:
            return spec, False
        return None


def _target_port(target: str) -> int:
    """The port of a CONNECT request's `host:port` (RFC 9110 9.3.6; `[v6]:port`), else 0."""
    port = target.rpartition(":")[2]
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else 0


def _upgraded(
    factory: Callable[[Selection, Message | None, Message, int], Any],
    sel: Selection,
    request: Message | None,
    response: Message,
    client_side: int,
) -> TcpDissector:
    return as_tcp(factory(sel, request, response, client_side))


class Sniffer(TcpDissector):
    """Holds a connection's first bytes until a content detector claims them, then hands the
    connection (and the bytes) over to the chosen dissector, or the fallback."""

    def __init__(self, selection: Selection, conn: Opened) -> None:
        super().__init__()
        self._sel = selection
        self._conn = conn
        self._first = [b"", b""]  # up to SNIFF_BYTES of each direction
        self._held: list[tuple[int, bytes, int]] = []  # (side, data, ts) to replay

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        if self.successor is not None:
            _current(self).data(side, data, ts_ns)
            return
        self._held.append((side, data, ts_ns))
        first = self._first[side]
        if len(first) < SNIFF_BYTES:
            self._first[side] = (first + data)[:SNIFF_BYTES]
        self._decide(False)

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        self._decide(True)
        _current(self).gap(side, length, ts_ns)

    def end(self, reason: str, ts_ns: int) -> None:
        self._decide(True)
        _current(self).end(reason, ts_ns)

    def _decide(self, final: bool) -> None:
        if self.successor is not None:
            return
        first0, first1 = self._first
        sel = self._sel
        chosen = sel.fallback
        waiting = False
        for spec in sel.detectors:
            detect = spec.detect
            assert detect is not None
            answer = detect(first0, first1, self._conn)
            if answer == YES:
                chosen = spec
                waiting = False
                break
            if answer == MORE:
                waiting = True
        if waiting and not final and len(first0) < SNIFF_BYTES and len(first1) < SNIFF_BYTES:
            return
        succ = sel.make_tcp(chosen, self._conn)
        self.successor = succ
        self.active = False
        held, self._held = self._held, []
        for side, data, ts_ns in held:
            _current(succ).data(side, data, ts_ns)  # it may hand over in turn (Upgrade)


def _current(d: TcpDissector) -> TcpDissector:
    """The end of a chain of hand-overs."""
    while d.successor is not None:
        d = d.successor
    return d
