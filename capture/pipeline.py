"""The whole packet side in one synchronous object: frames in, entries and pcap records out.

Decode → reassembly → HTTP/1.x → entries, chained by plain calls in one place so that replay and
live capture share every line of it (the Trio layer only feeds frames and drains `Output`). Time
is the packet's time; nothing here reads a clock, so a replay is deterministic.

Cost: this runs for every captured packet, so the chain is plain calls with nothing between
them: in-order data goes from the reassembler straight to the connection's HTTP dissector
(`Reassembler(on_data=...)`, no Data event in between), and each HTTP connection keeps an
`EntryBuilder` made when HTTP is recognised. scripts/bench_pipeline.py measures it.

One connection seen at two capture points of a node (`--iface any`: a pod's veth, the bridge,
the uplink) is one connection: copies with the same 4-tuple are retransmissions to the
reassembler; copies rewritten by NAT (a Service's DNAT, between the pod's veth and the uplink)
have other addresses or ports but the same pair of initial sequence numbers, and only the first
of them to be recognised as HTTP makes entries. The others are ignored from then on and counted
in `duplicate_views` (docs/kubernetes.md, "One request, one entry").

A connection gets its pcap stream number the first time HTTP is recognised on it, not when it
opens: most connections a node sees are not HTTP (TLS, DNS over TCP, databases), and numbering
them would fill the data directory with pcaps no entry points to. Packets that arrive before
recognition are held, bounded per connection and in total (`PipelineLimits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capture.decode import Decoder
from capture.entries import EntryBuilder, Identity
from capture.http1 import HttpConnection, HttpLimits, HttpStats
from capture.reassembly import Closed, Data, Gap, Opened, Reassembler, ReassemblyLimits
from capture.segment import TS_MAX_NS, TS_MIN_NS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from capture.segment import Segment

_SECOND_NS = 1_000_000_000
CLOSED_REMEMBERED = 4096
# Two views of one connection are the same packets seen at two taps of one host: their first
# packets (the SYN) are microseconds apart, milliseconds behind a busy qdisc. Connections whose
# first packets are further apart are different connections, even with equal ISNs (crafted
# captures reuse fixed ISNs; real stacks pick them at random, RFC 6528).
VIEW_WINDOW_NS = _SECOND_NS


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Every bound the packet side keeps, with what happens when it is reached.

    held_packets_per_conn / held_bytes_total: packets of a connection not yet recognised as HTTP
    are held so its pcap can start at the SYN. Past either bound the oldest held packet of that
    connection is discarded and counted in `held_packets_discarded` (the pcap then starts later;
    entries are unaffected).
    expire_every_ns: how often (in packet time) idle connections are looked for.
    """

    reassembly: ReassemblyLimits = field(default_factory=ReassemblyLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    held_packets_per_conn: int = 64
    held_bytes_total: int = 32 << 20
    expire_every_ns: int = _SECOND_NS


@dataclass(slots=True)
class Output:
    """What one batch produced; the store consumes it (see kshark/store.py)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    packets: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    closed_streams: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Conn:
    opened: Opened
    http: HttpConnection
    stream: int = 0  # 0 until HTTP is recognised
    index: int = 0
    held: list[tuple[int, int, bytes]] = field(default_factory=list)
    held_bytes: int = 0
    builder: EntryBuilder | None = None  # set with stream
    view: tuple[int, int] | None = None  # its (client ISN, server ISN) in Pipeline._views


class Pipeline:
    """Frames → entries for one capture point (one worker)."""

    def __init__(
        self,
        identity: Identity,
        allocate_stream: Callable[[], int],
        limits: PipelineLimits | None = None,
    ) -> None:
        self.limits = limits or PipelineLimits()
        self.identity = identity
        self._allocate_stream = allocate_stream
        self.decoder = Decoder()
        # In-order data reaches _data directly, without a Data event (see Reassembler).
        self.reassembler = Reassembler(self.limits.reassembly, on_data=self._data)
        # bound once: called for every packet
        self._decode = self.decoder.decode
        self._reassemble = self.reassembler.feed
        self._conns: dict[int, _Conn] = {}
        # conn_id -> stream of recently closed HTTP connections, so packets the reassembler
        # still attributes to them (final ACKs, late retransmissions) reach their pcap.
        # Bounded by CLOSED_REMEMBERED; the oldest is forgotten first.
        self._closed: dict[int, int] = {}
        # (client ISN, server ISN) → conn_id of the open HTTP connection first seen with them;
        # at most one per connection in _conns (removed when it closes), so bounded with them.
        self._views: dict[tuple[int, int], int] = {}
        self._out = Output()
        self._held_bytes = 0
        self._next_expire_ns = 0
        self._last_ts_ns = 0
        self.counters: dict[str, int] = {
            "http_connections": 0,
            "entries": 0,
            "entries_with_error": 0,
            "held_packets_discarded": 0,
            "duplicate_views": 0,
            "timestamps_clamped": 0,
        }
        self.errors_by_type: dict[str, int] = {}
        # what every connection's dissector counts (bodies cut by HttpLimits.max_pending_body)
        self.http_stats = HttpStats()

    # -- input ---------------------------------------------------------------------------

    def feed(self, ts_ns: int, linktype: int, frame: bytes) -> None:
        """One captured frame."""
        # TS_MIN_NS..TS_MAX_NS as literals: no global lookups for every packet when interpreted
        if ts_ns < 0 or ts_ns > 0xFFFFFFFF * 1_000_000_000 + 999_999_999:
            ts_ns = self._clamp_time(ts_ns)
        seg = self._decode(ts_ns, linktype, frame)
        if seg is None:
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
                elif conn.http.active:
                    self._hold(conn, ts_ns, linktype, frame)
                if self.reassembler.events:  # none for most pure ACKs
                    self._drain_events()
            else:
                self._drain_events()
                conn = self._conns.get(conn_id)
                if conn is not None:  # opened by this very packet
                    if conn.stream:
                        self._out.packets.append((conn.stream, ts_ns, linktype, frame))
                    elif conn.http.active:
                        self._hold(conn, ts_ns, linktype, frame)
                else:
                    stream = self._closed.get(conn_id)
                    if stream:  # the last ACK after both FINs: the reassembler lets it linger
                        self._out.packets.append((stream, ts_ns, linktype, frame))
        elif self.reassembler.events:
            self._drain_events()
        # (a clamped time is no clock: one damaged record must not time out every connection)
        if ts_ns >= self._next_expire_ns and ts_ns != TS_MAX_NS:
            self._next_expire_ns = ts_ns + self.limits.expire_every_ns
            self.reassembler.expire(ts_ns)
            self._drain_events()

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
                elif conn.http.active:
                    for ts, frame in records:
                        self._hold(conn, ts, linktype, frame)
                if self.reassembler.events:
                    self._drain_events()
        elif self.reassembler.events:
            self._drain_events()
        if ts_ns >= self._next_expire_ns:
            self._next_expire_ns = ts_ns + self.limits.expire_every_ns
            self.reassembler.expire(ts_ns)
            self._drain_events()

    def advance(self, now_ns: int) -> None:
        """Let time pass without packets (live capture on a quiet link): expire idle connections
        and fragmented datagrams that will not complete."""
        self.reassembler.expire(now_ns)
        self.decoder.expire_fragments(now_ns)
        self._drain_events()

    def finish(self, ts_ns: int | None = None) -> None:
        """End of input: every open connection is closed and its pending exchanges written."""
        self.reassembler.close_all(self._last_ts_ns if ts_ns is None else ts_ns)
        self._drain_events()

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
        for key, value in self.http_stats.as_dict().items():
            merged[f"http_{key}"] = value
        merged.update(self.counters)
        merged["open_connections"] = len(self._conns)
        for key, value in self.errors_by_type.items():
            merged[f"errors_{key.replace('-', '_')}"] = value
        return merged

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
            http = conn.http
            http.data(side, data, ts_ns)
            if not conn.stream:
                self._after_http(conn)
            elif http.exchanges:
                self._write_entries(conn)

    def _drain_events(self) -> None:
        conns = self._conns
        for ev in self.reassembler.pop_events():
            if type(ev) is Data:
                self._data(ev.conn_id, ev.side, ev.data, ev.ts_ns)
            elif type(ev) is Opened:
                conns[ev.conn_id] = _Conn(ev, HttpConnection(self.limits.http, self.http_stats))
            elif type(ev) is Gap:
                conn = conns.get(ev.conn_id)
                if conn is not None:
                    conn.http.gap(ev.side, ev.length, ev.ts_ns)
                    self._after_http(conn)
            elif type(ev) is Closed:
                conn = conns.pop(ev.conn_id, None)
                if conn is not None:
                    if conn.view is not None and self._views.get(conn.view) == ev.conn_id:
                        del self._views[conn.view]
                    conn.http.end(ev.reason, ev.ts_ns)
                    self._after_http(conn)
                    if conn.stream:
                        self._out.closed_streams.append(conn.stream)
                        self._closed[ev.conn_id] = conn.stream
                        if len(self._closed) > CLOSED_REMEMBERED:
                            del self._closed[next(iter(self._closed))]
                    else:
                        self._drop_held(conn)

    def _after_http(self, conn: _Conn) -> None:
        http = conn.http
        if not conn.stream:
            if http.client_side is None:
                if not http.active and conn.held:
                    self._drop_held(conn)  # decided: not HTTP, its packets are not ours to keep
                return
            if self._second_view(conn):
                return
            conn.stream = self._allocate_stream()
            # The roles are known now and never change: the connection's entries can be
            # prepared (EntryBuilder works out once what they all share).
            conn.builder = EntryBuilder(
                conn.opened,
                http.client_side,
                self.identity,
                conn.stream,
                self.limits.http.max_decoded,
                self.limits.http.max_body,  # decoded bodies are bounded like wire bodies
            )
            self.counters["http_connections"] += 1
            self._release_held(conn)
        if http.exchanges:
            self._write_entries(conn)

    def _second_view(self, conn: _Conn) -> bool:
        """True if `conn` is another capture point's view of an open HTTP connection (same
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

    def _write_entries(self, conn: _Conn) -> None:
        exchanges = conn.http.pop_exchanges()
        builder = conn.builder
        assert builder is not None  # made with conn.stream
        build = builder.build
        append = self._out.entries.append
        index = conn.index
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
        conn.index = index
        self.counters["entries"] += len(exchanges)
