"""The whole packet side in one synchronous object: frames in, entries and pcap records out.

Decode → reassembly → a dissector per connection → entries, chained by plain calls in one place
so that replay and live capture share every line of it (the Trio layer only feeds frames and
drains `Output`). Time is the packet's time; nothing here reads a clock, so a replay is
deterministic. UDP takes a shorter way: decode hands on the datagrams of the ports a UDP
dissector listens on, and each flow (5-tuple) gets its own dissector.

Which dissector a connection or flow gets is capture/dissectors.py's `Selection` (port hints
such as `--decode-as`, then content, then HTTP/1 as the fallback); what a dissector is, is
capture/dissect.py. A dissector may hand the connection over to another (`successor`: the
choice from the first bytes, HTTP/1.1 `Upgrade: h2c`, a CONNECT tunnel); the connection keeps
its stream and entry numbering. The limits are capture/limits.py's.

Cost: this runs for every captured packet, so the chain is plain calls with nothing between
them: in-order data goes from the reassembler straight to the connection's dissector
(`Reassembler(on_data=...)`, no Data event in between), and each connection keeps the
`EntryMaker` its dissector made when it recognised its protocol. scripts/bench_pipeline.py
measures it.

One connection seen at two capture points of a node (`--iface any`: a pod's veth, the bridge,
the uplink) is one connection: copies with the same 4-tuple are retransmissions to the
reassembler; copies rewritten by NAT (a Service's DNAT, between the pod's veth and the uplink)
have other addresses or ports but the same pair of initial sequence numbers, and only the first
of them to be recognised makes entries. The others are ignored from then on and counted in
`duplicate_views` (docs/kubernetes.md, "One request, one entry").

A connection gets its pcap stream number the first time its protocol is recognised, not when it
opens: most connections a node sees are not dissected (TLS, databases), and numbering them
would fill the data directory with pcaps no entry points to. Packets that arrive before
recognition are held, bounded per connection and in total (`PipelineLimits`). A UDP flow gets
its number with the first datagram its dissector accepts; datagrams it rejects before that are
not kept. Flows are bounded (`UdpLimits`) and end after `idle_timeout_ns` without a datagram.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capture.decode import Decoder
from capture.dissectors import DEFAULT_SPECS, DissectorSpec, Selection
from capture.entries import Identity
from capture.limits import PipelineLimits, UdpLimits
from capture.reassembly import Closed, Data, Gap, Opened, Reassembler
from capture.segment import TS_MAX_NS, TS_MIN_NS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from capture.dissect import EntryMaker, TcpDissector, UdpDissector
    from capture.segment import Datagram, Segment

__all__ = ["Output", "Pipeline", "PipelineLimits", "UdpLimits"]

_SECOND_NS = 1_000_000_000
CLOSED_REMEMBERED = 4096
# Two views of one connection are the same packets seen at two taps of one host: their first
# packets (the SYN) are microseconds apart, milliseconds behind a busy qdisc. Connections whose
# first packets are further apart are different connections, even with equal ISNs (crafted
# captures reuse fixed ISNs; real stacks pick them at random, RFC 6528).
VIEW_WINDOW_NS = _SECOND_NS


@dataclass(slots=True)
class Output:
    """What one batch produced; the store consumes it (see kshark/store.py)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    packets: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    closed_streams: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Conn:
    opened: Opened
    dissector: TcpDissector
    stream: int = 0  # 0 until the dissector recognises its protocol
    index: int = 0
    held: list[tuple[int, int, bytes]] = field(default_factory=list)
    held_bytes: int = 0
    # the current dissector's; made with stream, and by a successor when it first has exchanges
    maker: EntryMaker | None = None
    view: tuple[int, int] | None = None  # its (client ISN, server ISN) in Pipeline._views
    protocols: tuple[str, ...] = ()  # the protocols it was counted for (connections_<name>)


class _Flow:
    """One UDP 5-tuple; side 0 is the client (it sends to the hinted port). Has the fields of
    capture.entries.ConnectionEnds, for its EntryMaker."""

    __slots__ = (
        "client_ip",
        "client_port",
        "dissector",
        "family",
        "index",
        "key",
        "last_ns",
        "maker",
        "server_ip",
        "server_port",
        "spec",
        "stream",
    )

    def __init__(
        self, key: tuple[bytes, int, bytes, int], family: int, spec: DissectorSpec, d: UdpDissector
    ) -> None:
        self.key = key
        self.client_ip, self.client_port, self.server_ip, self.server_port = key
        self.family = family
        self.spec = spec
        self.dissector = d
        self.stream = 0
        self.index = 0
        self.last_ns = 0
        self.maker: EntryMaker | None = None


class Pipeline:
    """Frames → entries for one capture point (one worker)."""

    def __init__(
        self,
        identity: Identity,
        allocate_stream: Callable[[], int],
        limits: PipelineLimits | None = None,
        *,
        decode_as: Mapping[int, str] | None = None,
        specs: Sequence[DissectorSpec] = DEFAULT_SPECS,
    ) -> None:
        """`decode_as`: port → protocol name (`--decode-as`); `specs`: the dissectors to run
        (capture/dissectors.py). ValueError for a name no spec has."""
        self.limits = limits or PipelineLimits()
        self.identity = identity
        self._allocate_stream = allocate_stream
        self.selection = Selection(self.limits, specs, decode_as)
        self.decoder = Decoder(udp_ports=self.selection.udp_ports)
        # In-order data reaches _data directly, without a Data event (see Reassembler).
        self.reassembler = Reassembler(self.limits.reassembly, on_data=self._data)
        # bound once: called for every packet
        self._decode = self.decoder.decode
        self._reassemble = self.reassembler.feed
        self._conns: dict[int, _Conn] = {}
        # UDP flows by (client ip, client port, server ip, server port), least recently
        # active first (a datagram moves its flow to the end).
        self._flows: dict[tuple[bytes, int, bytes, int], _Flow] = {}
        # conn_id -> stream of recently closed HTTP connections, so packets the reassembler
        # still attributes to them (final ACKs, late retransmissions) reach their pcap.
        # Bounded by CLOSED_REMEMBERED; the oldest is forgotten first.
        self._closed: dict[int, int] = {}
        # (client ISN, server ISN) → conn_id of the open dissected connection first seen with
        # them; at most one per connection in _conns (removed when it closes): bounded with them.
        self._views: dict[tuple[int, int], int] = {}
        self._out = Output()
        self._held_bytes = 0
        self._next_expire_ns = 0
        self._last_ts_ns = 0
        self.counters: dict[str, int] = {
            "http_connections": 0,  # HTTP/1 (kept for compatibility: see connections_<name>)
            # TCP connections and UDP flows given a stream; connections_<protocol>: those that
            # carried it (one handed over, by Upgrade or CONNECT, counts for each protocol)
            "connections_dissected": 0,
            "entries": 0,
            "entries_with_error": 0,
            "held_packets_discarded": 0,
            "udp_flows": 0,
            "udp_flows_evicted": 0,
            "udp_datagrams_rejected": 0,
            "timestamps_clamped": 0,
            "duplicate_views": 0,
        }
        self.errors_by_type: dict[str, int] = {}

    # -- input ---------------------------------------------------------------------------

    def feed(self, ts_ns: int, linktype: int, frame: bytes) -> None:
        """One captured frame."""
        # TS_MIN_NS..TS_MAX_NS as literals: no global lookups for every packet when interpreted
        if ts_ns < 0 or ts_ns > 0xFFFFFFFF * 1_000_000_000 + 999_999_999:
            ts_ns = self._clamp_time(ts_ns)
        seg = self._decode(ts_ns, linktype, frame)
        if seg is None:
            if self.decoder.datagrams:  # a UDP datagram for a UDP dissector
                self._feed_datagrams(ts_ns, linktype, frame)
            return
        if self.reassembler.probing:  # a stream began with one byte: maybe a keep-alive
            self.reassembler.frame = (linktype, frame)  # its options are read if needed
        if self.decoder.reassembled:  # made from IP fragments: rare, see _feed_reassembled
            self._feed_reassembled(seg, linktype)
            return
        if ts_ns > self._last_ts_ns:
            self._last_ts_ns = ts_ns
        conn_id = self._reassemble(seg)
        if conn_id is not None:
            # File the packet before its queued events run: they may close the connection (the
            # last FIN, a RST), and its closing packets belong in its pcap too. In-order data
            # handed over directly (_data) has run already; that cannot close the connection,
            # and if it got HTTP recognised, the held packets were released before this one.
            conn = self._conns.get(conn_id)
            if conn is not None:
                if conn.stream:
                    self._out.packets.append((conn.stream, ts_ns, linktype, frame))
                elif conn.dissector.active:
                    self._hold(conn, ts_ns, linktype, frame)
                if self.reassembler.events:  # none for most pure ACKs
                    self._drain_events()
            else:
                self._drain_events()
                conn = self._conns.get(conn_id)
                if conn is not None:  # opened by this very packet
                    if conn.stream:
                        self._out.packets.append((conn.stream, ts_ns, linktype, frame))
                    elif conn.dissector.active:
                        self._hold(conn, ts_ns, linktype, frame)
                else:
                    stream = self._closed.get(conn_id)
                    if stream:  # the last ACK after both FINs: the reassembler lets it linger
                        self._out.packets.append((stream, ts_ns, linktype, frame))
        elif self.reassembler.events:
            self._drain_events()
        # (a clamped time is no clock: one damaged record must not time out every connection)
        if ts_ns >= self._next_expire_ns and ts_ns != TS_MAX_NS:
            self._expire(ts_ns)

    def _expire(self, ts_ns: int) -> None:
        self._next_expire_ns = ts_ns + self.limits.expire_every_ns
        self.reassembler.expire(ts_ns)
        self._drain_events()
        if self._flows:
            self._expire_flows(ts_ns)

    def _clamp_time(self, ts_ns: int) -> int:
        """A packet time no pcap record can hold (before 1970, after 2106: a damaged capture, a
        negative pcapng if_tsoffset, a 64-bit time near its maximum) becomes the nearer bound,
        counted in `timestamps_clamped`; entries whose times sit on a bound are flagged
        (capture/entries.py). Everything downstream then works with times it can represent."""
        self.counters["timestamps_clamped"] += 1
        return TS_MIN_NS if ts_ns < TS_MIN_NS else TS_MAX_NS

    def feed_many(self, frames: Iterable[tuple[int, int, bytes]]) -> int:
        """`feed` each (timestamp ns, link type, frame) in turn; how many there were. The loop
        is here rather than in the caller so that it runs compiled too (capture/__init__.py)."""
        feed = self.feed
        n = 0
        for ts_ns, linktype, frame in frames:
            feed(ts_ns, linktype, frame)
            n += 1
        return n

    def _feed_reassembled(self, seg: Segment, linktype: int) -> None:
        """`feed` for a Segment the decoder reassembled from IP fragments: every captured
        fragment of its datagram (decoder.pop_reassembled(), in arrival order) is filed where
        feed would file the one frame, so the connection's pcap holds them all."""
        records = self.decoder.pop_reassembled()
        ts_ns = seg.ts_ns
        if ts_ns > self._last_ts_ns:
            self._last_ts_ns = ts_ns
        conn_id = self._reassemble(seg)
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            if conn is None:
                self._drain_events()  # opened by this very packet, or already closed
                conn = self._conns.get(conn_id)
                if conn is None:
                    stream = self._closed.get(conn_id)
                    if stream:
                        for ts, frame in records:
                            self._out.packets.append((stream, ts, linktype, frame))
            if conn is not None:
                if conn.stream:
                    for ts, frame in records:
                        self._out.packets.append((conn.stream, ts, linktype, frame))
                elif conn.dissector.active:
                    for ts, frame in records:
                        self._hold(conn, ts, linktype, frame)
                if self.reassembler.events:
                    self._drain_events()
        elif self.reassembler.events:
            self._drain_events()
        if ts_ns >= self._next_expire_ns:
            self._expire(ts_ns)

    def _feed_datagrams(self, ts_ns: int, linktype: int, frame: bytes) -> None:
        """`feed` for a frame that decoded to a UDP datagram (one, or none if it only completed
        nothing); its captured frames (every fragment, if it was reassembled) go to the flow's
        pcap."""
        decoder = self.decoder
        records = decoder.pop_reassembled() if decoder.reassembled else [(ts_ns, frame)]
        if ts_ns > self._last_ts_ns:
            self._last_ts_ns = ts_ns
        for dg in decoder.datagrams:
            self._datagram(dg, linktype, records)
        decoder.datagrams.clear()
        if ts_ns >= self._next_expire_ns:
            self._expire(ts_ns)

    def _datagram(self, dg: Datagram, linktype: int, records: list[tuple[int, bytes]]) -> None:
        choice = self.selection.udp(dg.sport, dg.dport)
        if choice is None:
            return
        spec, from_client = choice
        if from_client:
            key = (dg.src, dg.sport, dg.dst, dg.dport)
            side = 0
        else:
            key = (dg.dst, dg.dport, dg.src, dg.sport)
            side = 1
        flows = self._flows
        flow = flows.pop(key, None)
        if flow is not None and flow.last_ns + self.limits.udp.idle_timeout_ns <= dg.ts_ns:
            self._end_flow(flow, "timeout", dg.ts_ns)  # idle too long: this one starts anew
            flow = None
        if flow is None:
            flow = _Flow(key, dg.family, spec, self.selection.make_udp(spec))
            self.counters["udp_flows"] += 1
            if len(flows) >= self.limits.udp.max_flows:
                self.counters["udp_flows_evicted"] += 1
                self._end_flow(flows.pop(next(iter(flows))), "evicted", dg.ts_ns)
        flows[key] = flow  # most recently active last
        flow.last_ns = dg.ts_ns
        d = flow.dissector
        accepted = d.datagram(side, dg.payload, dg.ts_ns)
        if not flow.stream:
            if not accepted:
                self.counters["udp_datagrams_rejected"] += 1
                if not d.exchanges:
                    return
            flow.stream = self._allocate_stream()
            flow.maker = d.entry_maker(
                flow, self.identity, flow.stream, self.limits.http.max_decoded
            )
            self.counters["connections_dissected"] += 1
            self._count_protocol(spec.name)
        append = self._out.packets.append
        for ts, frame in records:
            append((flow.stream, ts, linktype, frame))
        if d.exchanges:
            flow.index = self._write(d.pop_exchanges(), flow.maker, flow.index)

    def _expire_flows(self, now_ns: int) -> None:
        """Ends the flows idle for UdpLimits.idle_timeout_ns (the oldest are first)."""
        flows = self._flows
        idle = self.limits.udp.idle_timeout_ns
        while flows:
            key = next(iter(flows))
            flow = flows[key]
            if flow.last_ns + idle > now_ns:
                break
            del flows[key]
            self._end_flow(flow, "timeout", now_ns)

    def _end_flow(self, flow: _Flow, reason: str, ts_ns: int) -> None:
        d = flow.dissector
        d.end(reason, ts_ns)
        if flow.stream:
            if d.exchanges:
                flow.index = self._write(d.pop_exchanges(), flow.maker, flow.index)
            self._out.closed_streams.append(flow.stream)

    def advance(self, now_ns: int) -> None:
        """Let time pass without packets (live capture on a quiet link): expire idle connections
        and fragmented datagrams that will not complete."""
        self.reassembler.expire(now_ns)
        self.decoder.expire_fragments(now_ns)
        self._drain_events()
        if self._flows:
            self._expire_flows(now_ns)

    def finish(self, ts_ns: int | None = None) -> None:
        """End of input: every open connection and flow is closed and its pending exchanges
        written."""
        end_ns = self._last_ts_ns if ts_ns is None else ts_ns
        self.reassembler.close_all(end_ns)
        self._drain_events()
        flows, self._flows = self._flows, {}
        for flow in flows.values():
            self._end_flow(flow, "eof", end_ns)

    def pop_output(self) -> Output:
        out, self._out = self._out, Output()
        return out

    # -- statistics ----------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def stats(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for key, value in self.decoder.stats.as_dict().items():
            merged[f"decode_{key}"] = value
        for key, value in self.reassembler.stats.as_dict().items():
            merged[f"tcp_{key}"] = value
        for name, counters in self.selection.stats.items():  # each protocol's (dissect.py)
            for key, value in counters.as_dict().items():
                merged[f"{name}_{key}"] = value
        merged.update(self.counters)
        merged["open_connections"] = len(self._conns)
        merged["open_udp_flows"] = len(self._flows)
        for key, value in self.errors_by_type.items():
            merged[f"errors_{key.replace('-', '_')}"] = value
        return merged

    def connections_text(self) -> str:
        """ "9 connections (dns 3, http 6)" ("1 connection (http 1)"): TCP connections and UDP flows dissected, and per
        protocol those that carried it (see `counters`), for a summary line."""
        total = self.counters["connections_dissected"]
        text = f"{total} connection" if total == 1 else f"{total} connections"
        per = sorted(
            (key[12:], n)
            for key, n in self.counters.items()
            if key.startswith("connections_") and key != "connections_dissected" and n
        )
        if not per:
            return text
        return f"{text} ({', '.join(f'{name} {n}' for name, n in per)})"

    def undecoded_text(self) -> str:
        """ "N frames not decoded (linktype_147: 2, esp: 1)": traffic in link types or tunnels
        the decoder does not open (capture/decode.py), for a summary line."""
        undecoded = self.decoder.stats.undecoded
        total = sum(undecoded.values())
        if not total:
            return "0 frames not decoded"
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(undecoded.items()))
        return f"{total} frames not decoded ({kinds})"

    # -- internals -----------------------------------------------------------------------

    def _hold(self, conn: _Conn, ts_ns: int, linktype: int, frame: bytes) -> None:
        conn.held.append((ts_ns, linktype, frame))
        conn.held_bytes += len(frame)
        self._held_bytes += len(frame)
        limits = self.limits
        while conn.held and (
            len(conn.held) > limits.held_packets_per_conn
            or self._held_bytes > limits.held_bytes_total
        ):
            dropped = conn.held.pop(0)
            conn.held_bytes -= len(dropped[2])
            self._held_bytes -= len(dropped[2])
            self.counters["held_packets_discarded"] += 1

    def _release_held(self, conn: _Conn) -> None:
        stream = conn.stream
        append = self._out.packets.append
        for ts_ns, linktype, frame in conn.held:
            append((stream, ts_ns, linktype, frame))
        self._held_bytes -= conn.held_bytes
        conn.held = []
        conn.held_bytes = 0

    def _drop_held(self, conn: _Conn) -> None:
        self._held_bytes -= conn.held_bytes
        conn.held = []
        conn.held_bytes = 0

    def _data(self, conn_id: int, side: int, data: bytes, ts_ns: int) -> None:
        """A Data event's bytes (queued, or handed over directly by the reassembler)."""
        conn = self._conns.get(conn_id)
        if conn is not None:
            d = conn.dissector
            d.data(side, data, ts_ns)
            if not conn.stream:
                self._after_dissect(conn)
            elif d.exchanges or d.successor is not None:
                self._write_entries(conn)

    def _drain_events(self) -> None:
        conns = self._conns
        for ev in self.reassembler.pop_events():
            if type(ev) is Data:
                self._data(ev.conn_id, ev.side, ev.data, ev.ts_ns)
            elif type(ev) is Opened:
                conns[ev.conn_id] = _Conn(ev, self.selection.tcp(ev))
            elif type(ev) is Gap:
                conn = conns.get(ev.conn_id)
                if conn is not None:
                    conn.dissector.gap(ev.side, ev.length, ev.ts_ns)
                    self._after_dissect(conn)
            elif type(ev) is Closed:
                conn = conns.pop(ev.conn_id, None)
                if conn is not None:
                    if conn.view is not None and self._views.get(conn.view) == ev.conn_id:
                        del self._views[conn.view]
                    conn.dissector.end(ev.reason, ev.ts_ns)
                    self._after_dissect(conn)
                    if conn.stream:
                        self._out.closed_streams.append(conn.stream)
                        self._closed[ev.conn_id] = conn.stream
                        if len(self._closed) > CLOSED_REMEMBERED:
                            del self._closed[next(iter(self._closed))]
                    else:
                        self._drop_held(conn)

    def _after_dissect(self, conn: _Conn) -> None:
        d = conn.dissector
        if d.successor is not None:
            self._hand_over(conn)
            d = conn.dissector
        if not conn.stream:
            client_side = d.client_side
            if client_side is None:
                if not d.active and conn.held:
                    self._drop_held(conn)  # decided: not ours, its packets are not ours to keep
                return
            if self._second_view(conn):
                return
            conn.stream = self._allocate_stream()
            self.counters["connections_dissected"] += 1
            # The roles are known now and never change: the connection's entries can be
            # prepared (the EntryMaker works out once what they all share).
            self._maker(conn)
            self._release_held(conn)
        if d.exchanges:
            self._write_entries(conn)

    def _second_view(self, conn: _Conn) -> bool:
        """True if `conn` is another capture point's view of an open dissected connection (same
        initial sequence numbers, first packets within VIEW_WINDOW_NS): it is then forgotten,
        and its later packets and events find no connection and are ignored. Needs both SYNs;
        without them every view counts."""
        o = conn.opened
        key = self.reassembler.initial_seqs(o.client_ip, o.client_port, o.server_ip, o.server_port)
        if key is None:
            return False
        first = self._views.get(key)
        if first is not None and first != o.conn_id:
            other = self._conns.get(first)
            if other is None or abs(o.ts_ns - other.opened.ts_ns) > VIEW_WINDOW_NS:
                return False  # another connection that drew the same ISNs
            self._conns.pop(o.conn_id, None)  # already gone when recognised only as it closes
            self._drop_held(conn)
            self.counters["duplicate_views"] += 1
            return True
        if first is None and o.conn_id in self._conns:  # not when recognised only as it closes
            self._views[key] = o.conn_id
            conn.view = key
        return False

    def _hand_over(self, conn: _Conn) -> None:
        """The dissector passed the connection on (capture/dissect.py): write what it left,
        then carry on with its successor (following a chain of them). The successor's
        EntryMaker is made when it has exchanges: by then it knows the roles (a tunnel's
        dissector may learn them from the tunnel's first bytes)."""
        d = conn.dissector
        while d.successor is not None:
            if d.exchanges and conn.stream:
                conn.index = self._write(d.pop_exchanges(), self._maker(conn), conn.index)
            d = d.successor
            conn.dissector = d
            conn.maker = None

    def _maker(self, conn: _Conn) -> EntryMaker:
        """The EntryMaker of the connection's current dissector (made once it is needed), and
        the connection counted for that dissector's protocol."""
        maker = conn.maker
        if maker is None:
            d = conn.dissector
            maker = conn.maker = d.entry_maker(
                conn.opened, self.identity, conn.stream, self.limits.http.max_decoded
            )
            if d.name not in conn.protocols:
                conn.protocols = (*conn.protocols, d.name)
                self._count_protocol(d.name)
        return maker

    def _write_entries(self, conn: _Conn) -> None:
        d = conn.dissector
        if d.exchanges:
            maker = conn.maker
            if maker is None:  # a successor's first exchanges
                maker = self._maker(conn)
            conn.index = self._write(d.pop_exchanges(), maker, conn.index)
        if d.successor is not None:
            self._hand_over(conn)
            if conn.dissector.exchanges:
                self._write_entries(conn)

    def _write(self, exchanges: list[Any], maker: EntryMaker | None, index: int) -> int:
        """Builds and queues the entries of exchanges numbered from index; the next index."""
        assert maker is not None
        build = maker.build
        append = self._out.entries.append
        for ex in exchanges:
            entry = build(ex, index)
            append(entry)
            index += 1
            # The entry's error, not the exchange's: building it can add one (content that
            # could not be decoded), and every entry a user sees with `error` set counts.
            error = entry["error"]
            if error is not None:
                self.counters["entries_with_error"] += 1
                kind = error["type"]
                self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1
        self.counters["entries"] += len(exchanges)
        return index

    def _count_protocol(self, name: str) -> None:
        counters = self.counters
        key = f"connections_{name}"
        counters[key] = counters.get(key, 0) + 1
        if name == "http":
            counters["http_connections"] += 1
