"""TCP reassembly: Segments in, per-connection byte-stream events out (sans-IO).

What comes out (see docs/internals.md): ``Opened`` once per connection, then for each side an
ordered mix of ``Data`` (bytes in stream order) and ``Gap`` (a number of bytes the capture lost),
and finally one ``Closed``. This is Zeek's split of DeliverStream / Undelivered / EndpointEOF: the
HTTP layer never sees sequence numbers, only bytes and holes it can resynchronise after.

Policies, and why:

* **Keys.** One dict maps the directed 4-tuple ``(src, sport, dst, dport)`` to that direction's
  state (``_Half``), so a packet costs one tuple and one lookup. Both directions of a connection
  point at the same ``_Conn``.
* **Sides.** Side 0 is the client. A bare SYN's sender is the client; a SYN-ACK's sender is the
  server. Without a handshake the higher ("ephemeral-looking") port is the client, and with equal
  ports the sender of the first segment. ``Opened.syn_seen`` is True when the connection started
  with a SYN or SYN-ACK (so both stream starts are known); the HTTP layer corrects a wrong guess.
* **Stream starts.** After a SYN the stream starts at ISN+1 (SYN takes one sequence number, FIN
  one too). Without a SYN a direction starts at the first sequence number seen from it, or at the
  first ACK number the peer sends for it, whichever comes first (the peer's ACK says where the
  bytes it still expects begin). Bytes before the start are taken as retransmissions. If that
  first segment was bare and the peer then ACKs exactly one byte more, it was a TCP keep-alive
  probe (sent at SND.NXT - 1) and the start moves up by one without a gap.
* **Keep-alives of one byte** (Windows and BSD stacks send one stale byte at SND.NXT - 1).
  Inside a stream they are retransmissions like any other. As the first segment of a direction
  seen without its SYN they would be taken for data (a mid-connection capture of a long-lived
  connection then reads "\0GET ..."), so such a one-byte segment is held back (``probing``
  counts the directions holding one) until the peer answers: an ACK carrying a D-SACK of
  exactly that byte (RFC 2883: a SACK block below the cumulative ACK reports a duplicate) makes
  it a keep-alive, dropped and counted in ``keepalives``; this is Wireshark's rule (one byte,
  one below the next expected sequence number), the peer's ACK telling what "next" is. Any
  other answer (the first ACK of that byte without a D-SACK: a peer without SACK cannot tell
  us), more data from that side, its FIN or the connection's end delivers the byte as the data
  it then is. A Segment carries no TCP options (decode stays cheap), so while ``probing`` the
  caller sets ``frame`` to the (link type, frame) of each segment before ``feed``, and only when
  an answer is examined are its options read (``capture.decode.tcp_options``); a caller without
  frames can set ``tcp_options`` instead.
* **All sequence arithmetic is mod 2**32**: ``(a - b) & 0xFFFFFFFF`` below 2**31 means "a is
  at or after b". Nothing ever compares raw sequence numbers with ``<``.
* **Retransmissions and overlaps: the first bytes received win** (what Linux and most stacks do
  with their out-of-order queue). Bytes before the next expected sequence number were delivered
  already and are dropped (``retrans_bytes``). Out-of-order pieces are kept non-overlapping: a
  new segment only fills the holes between what is buffered (``overlap_bytes`` counts the rest).
* **In-order data is delivered at once**, one ``Data`` per segment holding the segment's own
  ``payload`` object (no copy). When a segment fills a hole (or a hole is given up as a gap),
  it and every buffered piece that is now contiguous leave in stream order, each piece (joined
  with its neighbours when they came in the same packet) with the ``ts_ns`` of the packet that
  brought its bytes: ENTRY.md times an entry by the capture of its first byte, and the moment
  a hole is given up can be minutes later (a one-direction capture has no ACK to reveal a
  loss; the hole waits for a buffer limit or the connection's end). No zero-length ``Data``
  is ever emitted.
* **Gaps.** Lost bytes become one ``Gap(length)`` before the bytes that follow them, when
  (a) the other direction ACKs past the next byte we expect (it received bytes the capture lost),
  (b) a buffer limit is hit (below), or (c) the connection ends (FIN both ways via (a), RST,
  idle timeout, eviction, end of input) while data is buffered beyond a hole or the FIN's
  position is beyond what was delivered. A gap at the very end of a direction can only be
  reported when an ACK or FIN told us how long it was. (a) trusts that a segment is captured
  before the ACK for it, which holds for a capture on one host or one link; a merge of two taps
  could break it and turn late segments into gaps plus ``retrans_bytes``.
* **FIN / RST.** A FIN marks the end of its direction: bytes at or after it are ignored
  (``after_fin_bytes``), and once every byte before it was delivered (or given up as a gap) that
  direction is finished. Both directions finished → ``Closed("fin")``. A RST ends the connection
  at once: buffered data is flushed (gaps first), then ``Closed("rst")``. A RST for an unknown
  4-tuple is ignored (``feed`` returns None); every other first segment opens a connection.
* **After the end.** A connection closed by FIN or RST stays known for ``closed_linger_ns`` so
  that its late packets (the last ACK, retransmitted FINs) are attributed to it (``feed`` returns
  its id) without events, instead of opening a phantom mid-stream connection.
* **Reuse.** A SYN on a 4-tuple whose connection is closed, or a bare SYN whose sequence number is
  not the ISN already known for that side (any SYN on a seen side is a new connection: a live
  stack answers a SYN inside an established connection with a challenge ACK, not a new stream),
  starts a new connection with a new conn_id. The old one, if still open, is first closed:
  "fin" if a FIN had been seen, else "eof" (its end was not captured). ``reused`` counts these.
* **Time** is packet time only. ``expire(now_ns)`` closes connections idle for
  ``idle_timeout_ns`` (``Closed("timeout")``) and forgets lingering ones. Open connections are
  kept in order of their last segment (fed order), so expiry and eviction look only at the
  front of that order.

Limits (``ReassemblyLimits``), each with what happens when it is hit:

* ``max_buffered_per_conn``: out-of-order bytes held for one connection (both directions). Over
  it, the oldest buffered direction's first hole is declared lost: ``Gap`` for the hole, then the
  buffered bytes up to the next hole are delivered; repeated until under the limit
  (``conn_limit_flushes``).
* ``max_buffered_total``: the same over all connections; the direction that started buffering
  first is flushed first (``total_limit_flushes``). Both add to ``overflow_flushes``.
* ``max_connections``: open connections. Opening one more evicts the least recently active one
  (its buffers flushed as above, then ``Closed("evicted")``; ``evicted``). Evicted and timed-out
  connections are not remembered: a later packet opens a new, mid-stream connection.
* ``max_lingering``: closed connections remembered for late packets; over it the oldest is
  forgotten (``linger_dropped``).
* The event list holds only what the calls since the last ``pop_events`` produced; the pipeline
  drains it after every ``feed``.

Speed: ``feed`` is the hot path (an object-per-flow design measured several times slower:
../shared/reference/perf-baseline.md). A pure ACK or an in-order data segment with no flags but
ACK/PSH is handled inline: one tuple key, one dict lookup, one ``OrderedDict.move_to_end`` (exact
LRU order for eviction and expiry, for the price of one C call), a few slot reads and integer
compares, and for data one ``Data`` built without the frozen dataclass ``__init__`` (see
``capture/reassembly_events.py``). Everything else (handshake, FIN, RST, out-of-order, ACK past a
hole) goes to helper methods; the out-of-order buffers are capture/reassembly_buffers.py's.
scripts/bench_reassembly.py measures it (BENCHMARKS.md).

Direct delivery (``on_data``, optional): most segments of an HTTP capture are exactly that
in-order data, and queueing each as a ``Data`` event only for the caller to pop it at once costs
about as much as the rest of the fast path (the event object, the list, the caller's loop and
lookup). Given ``on_data``, the fast path calls ``on_data(conn_id, side, data, ts_ns)`` instead,
from inside ``feed``, when no event is pending; otherwise the ``Data`` is queued as usual. Either
way a consumer sees the same bytes in the same order relative to every other event (nothing
queued is ever overtaken). ``on_data`` must not call back into the reassembler. The pipeline
uses it; without it every byte comes out as ``Data`` events.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from capture.decode import tcp_options as _frame_options
from capture.reassembly_buffers import _HALF, _MASK, ReassemblyBuffers, _Conn, _Half
from capture.reassembly_events import (
    Closed,
    CloseReason,
    Data,
    Event,
    Gap,
    Opened,
    ReassemblyLimits,
    ReassemblyStats,
    _new_data,
)
from capture.segment import ACK, FIN, RST, SYN, Segment

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CloseReason",
    "Closed",
    "Data",
    "Event",
    "Gap",
    "Opened",
    "Reassembler",
    "ReassemblyLimits",
    "ReassemblyStats",
]

_CTRL = SYN | FIN | RST  # flags that take a segment off the fast path
_DEFAULT_LIMITS = ReassemblyLimits()


class Reassembler(ReassemblyBuffers):
    """Feed Segments in capture order; drain events with ``pop_events``."""

    def __init__(
        self,
        limits: ReassemblyLimits = _DEFAULT_LIMITS,
        on_data: Callable[[int, int, bytes, int], object] | None = None,
    ) -> None:
        super().__init__(limits)
        # Direct delivery (see "Speed" in the module doc): on_data(conn_id, side, data, ts_ns)
        # receives the in-order segments the fast path would queue as the only pending event.
        self.on_data = on_data
        # directed 4-tuple → that direction's state, for open and lingering connections
        self._halves: dict[tuple[bytes, int, bytes, int], _Half] = {}
        # Open connections, least recently active first: every segment moves its connection to
        # the back (one C call), so eviction and idle expiry only ever look at the front.
        self._lru: OrderedDict[_Conn, None] = OrderedDict()
        # bound once: the fast path calls them for every segment
        self._half_of = self._halves.get
        self._touch = self._lru.move_to_end
        # Connections closed by FIN/RST, oldest close first.
        self._linger: OrderedDict[_Conn, None] = OrderedDict()
        self._next_id = 1
        # Directions holding a first one-byte segment (maybe a keep-alive, see the module doc);
        # while non-zero the caller sets `frame` (or `tcp_options`) before each feed.
        self.probing = 0
        self.frame: tuple[int, bytes] | None = None
        self.tcp_options = b""

    # -- public API ------------------------------------------------------------------------------

    def feed(self, seg: Segment) -> int | None:
        """Process one segment; return the conn_id it belongs to (None: ignored)."""
        ts, _family, src, dst, sport, dport, seq, ack, flags, payload = seg
        h = self._half_of((src, sport, dst, dport))
        if h is None or flags & _CTRL:
            return self._feed_slow(seg, h)
        # Fast path: a known 4-tuple, only ACK/PSH/URG flags. A closed connection's halves have
        # nxt == -1, so both checks below send it to the helpers, which ignore it. A deliberate
        # fast path: the ACK test is _feed_slow's again, inline (no call per segment).
        c = h.conn
        c.last = ts
        try:  # noqa: SIM105 (contextlib.suppress costs a context manager per packet)
            self._touch(c)
        except KeyError:
            pass  # a closed connection, still lingering (not in the LRU)
        if flags & ACK:
            p = h.peer
            pn = p.nxt
            d = (ack - pn) & _MASK
            # ACK past the peer's next expected byte (or the peer's start still unknown)
            if d and (d < _HALF or pn < 0):
                self._acked(p, ack, ts)
        if payload:
            if seq == h.nxt and not h.bufn and h.fin < 0:
                h.nxt = (seq + len(payload)) & _MASK
                if self.on_data is not None and not self.events:
                    # Nothing queued before it: handing the bytes over now keeps the order.
                    self.on_data(h.cid, h.side, payload, ts)
                    return h.cid
                self.events.append(_new_data(h.cid, h.side, payload, ts))
            else:
                self._data(h, seq, payload, ts)
        return h.cid

    def initial_seqs(
        self, client_ip: bytes, client_port: int, server_ip: bytes, server_port: int
    ) -> tuple[int, int] | None:
        """(client ISN, server ISN) of the connection open on this 4-tuple (as ``Opened`` gave
        it), or None unless both of its SYNs were seen. NAT rewrites addresses and ports, never
        sequence numbers: the pipeline uses the pair to recognise one connection captured at
        two points of a node (before and after a Service's DNAT)."""
        h = self._half_of((client_ip, client_port, server_ip, server_port))
        if h is None or h.conn.closed:
            return None
        c = h.conn
        if c.h0.isn < 0 or c.h1.isn < 0:
            return None
        return (c.h0.isn, c.h1.isn)

    def expire(self, now_ns: int) -> None:
        """Close connections idle for ``idle_timeout_ns`` (packet time), forget old closed ones."""
        cutoff = now_ns - self.limits.idle_timeout_ns
        lru = self._lru
        while lru:
            c = next(iter(lru))
            if c.last > cutoff:
                break
            self._close(c, "timeout", now_ns)
        cutoff = now_ns - self.limits.closed_linger_ns
        linger = self._linger
        while linger:
            c = next(iter(linger))
            if c.closed_ts > cutoff:
                break
            self._forget(c)

    def close_all(self, ts_ns: int) -> None:
        """End of input: every open connection is flushed and closed with "eof"."""
        for c in sorted(self._lru, key=lambda c: c.cid):
            self._close(c, "eof", ts_ns)
        for c in list(self._linger):
            self._forget(c)

    def pop_events(self) -> list[Event]:
        """The events produced since the last call, in order."""
        events = self.events
        self.events = []
        return events

    # -- segments off the fast path --------------------------------------------------------------

    def _feed_slow(self, seg: Segment, h: _Half | None) -> int | None:
        ts, _family, _src, _dst, _sport, _dport, seq, ack, flags, payload = seg
        if h is None:
            if flags & RST:
                self.stats.ignored += 1
                return None
            h = self._open(seg)
        else:
            c = h.conn
            if flags & SYN and seq != h.isn and (c.closed or not flags & ACK):
                # A SYN that is not a retransmission of the one we know. It is the first SYN of
                # a side never heard from (simultaneous open) only if the connection is open,
                # finless and that side has no known start; otherwise the 4-tuple was reused.
                if c.closed or h.isn >= 0 or h.nxt >= 0 or c.h0.fin >= 0 or c.h1.fin >= 0:
                    self._reuse(c, ts)
                    h = self._open(seg)
            elif c.closed:
                return c.cid  # a late packet of a finished connection
        c = h.conn
        c.last = ts
        self._lru.move_to_end(c)
        if flags & SYN:
            if h.isn < 0:
                h.isn = seq
            if h.nxt < 0:
                h.nxt = (seq + 1) & _MASK
            seq = (seq + 1) & _MASK  # the SYN takes one sequence number; data follows it
        if flags & ACK:
            p = h.peer
            pn = p.nxt
            d = (ack - pn) & _MASK
            if d and (d < _HALF or pn < 0):
                self._acked(p, ack, ts)
        if c.closed:
            return c.cid
        if flags & RST:
            # RST ends the connection at once; its payload (a diagnostic, if any) is not stream.
            self._close(c, "rst", ts)
            return c.cid
        if payload:
            self._data(h, seq, payload, ts)
        if flags & FIN and not c.closed:
            self._fin(h, (seq + len(payload)) & _MASK, ts)
        return c.cid

    def _open(self, seg: Segment) -> _Half:
        """A new connection for ``seg``'s 4-tuple; returns the sender's half."""
        ts, family, src, dst, sport, dport, seq, ack, flags, payload = seg
        if len(self._lru) >= self.limits.max_connections:
            self._evict(ts)
        # SYN: the sender is the client; SYN-ACK: the server. No handshake: the higher port is the
        # client, and with equal ports the sender of this first segment.
        sender_is_client = not flags & ACK if flags & SYN else sport >= dport
        cid = self._next_id
        self._next_id = cid + 1
        c = _Conn(cid, ts)
        fwd = (src, sport, dst, dport)
        rev = (dst, dport, src, sport)
        if sender_is_client:
            h = c.h0 = _Half(c, 0, fwd)
            p = c.h1 = _Half(c, 1, rev)
            opened = Opened(cid, ts, family, src, sport, dst, dport, bool(flags & SYN))
        else:
            p = c.h0 = _Half(c, 0, rev)
            h = c.h1 = _Half(c, 1, fwd)
            opened = Opened(cid, ts, family, dst, dport, src, sport, bool(flags & SYN))
        h.peer = p
        p.peer = h
        if not flags & SYN and (len(payload) != 1 or flags & FIN):
            # No SYN: this direction starts here (the SYN path sets ISN+1). A lone byte may be
            # a keep-alive: _data holds it and the start stays unknown until the peer answers.
            h.nxt = seq
            if not payload:
                h.probe = seq
        if flags & ACK:
            p.nxt = ack  # the peer's bytes this side still expects start here
        self._halves[fwd] = h
        self._halves[rev] = p
        self._lru[c] = None
        st = self.stats
        st.connections += 1
        st.open_connections += 1
        self.events.append(opened)
        return h

    def _reuse(self, c: _Conn, ts: int) -> None:
        """A new SYN on ``c``'s 4-tuple: end ``c`` (if still open) and forget it."""
        self.stats.reused += 1
        if not c.closed:
            fin = c.h0.fin >= 0 or c.h1.fin >= 0
            self._close(c, "fin" if fin else "eof", ts)
        self._forget(c)

    def _acked(self, p: _Half, ack: int, ts: int) -> None:
        """The other side ACKed ``ack`` of ``p``'s stream, at or past ``p.nxt``."""
        c = p.conn
        if c.closed:
            return
        if p.held and not self._answered(p, ack):
            return
        nxt = p.nxt
        if nxt < 0:
            p.nxt = ack  # first word on where this direction starts
            return
        if p.fin_done or (ack - nxt) & _MASK >= _HALF:
            return
        fin = p.fin
        if fin >= 0 and (ack - fin) & _MASK < _HALF:
            ack = fin  # the FIN's own sequence number is not a lost byte
        if ack == nxt:
            return
        if nxt == p.probe and ack == (nxt + 1) & _MASK and not p.bufn:
            # This side was first seen as a bare segment one byte below what the peer expects:
            # a TCP keep-alive probe (sent at SND.NXT - 1). Its peer's ACK gives the real start;
            # no byte was lost. (zeek-cooper-grill-dvwa.pcapng starts like this.)
            p.nxt = ack
            p.probe = -1
            return
        # The peer received bytes the capture never showed us: give them up as a gap (and
        # deliver whatever is buffered below ``ack`` on the way).
        self.stats.ack_gaps += 1
        self._skip_to(p, ack, ts)
        if c.h0.fin_done and c.h1.fin_done:
            self._close(c, "fin", ts)

    def _answered(self, p: _Half, ack: int) -> bool:
        """The peer ACKed ``ack`` while ``p`` holds a first one-byte segment (module doc, "Keep-
        alives"): a D-SACK of exactly that byte drops it; any other answer delivers it.
        Returns whether the ACK is still to be processed as usual."""
        seq = p.held_seq
        after = (seq + 1) & _MASK
        if ack == after:
            frame = self.frame
            options = self.tcp_options if frame is None else _frame_options(frame[0], frame[1])
            if _dsacks(options, seq, after):
                p.held = b""
                p.nxt = after
                self.probing -= 1
                self.stats.keepalives += 1
            else:
                self._release(p)
            return False
        if (ack - seq) & _MASK >= _HALF:
            return False  # an ACK from before the byte: says nothing about it
        self._release(p)
        return True

    def _release(self, h: _Half) -> None:
        """Deliver a held first byte as data: it was not shown to be a keep-alive."""
        data = h.held
        h.held = b""
        self.probing -= 1
        h.nxt = (h.held_seq + 1) & _MASK
        self.events.append(_new_data(h.cid, h.side, data, h.held_ts))

    def _data(self, h: _Half, seq: int, payload: bytes, ts: int) -> None:
        """Payload that is not simply the next in-order segment of an unbuffered direction."""
        c = h.conn
        if c.closed:
            return
        st = self.stats
        n = len(payload)
        if h.held:
            if seq == h.held_seq and n == 1:
                st.retrans_bytes += 1  # the same probe again
                return
            self._release(h)
        nxt = h.nxt
        if nxt < 0:
            if n == 1 and h.isn < 0:
                h.held = payload  # a first segment of one byte: maybe a keep-alive
                h.held_seq = seq
                h.held_ts = ts
                self.probing += 1
                return
            h.nxt = nxt = seq
        r = (seq - nxt) & _MASK
        if r >= _HALF:  # starts before nxt: the front was delivered already
            back = (nxt - seq) & _MASK
            if back >= n:
                st.retrans_bytes += n
                return
            st.retrans_bytes += back
            payload = payload[back:]
            n -= back
            seq = nxt
            r = 0
        fin = h.fin
        if fin >= 0:
            room = (fin - seq) & _MASK
            if room >= _HALF or room == 0:  # at or after the FIN (or the FIN was consumed)
                st.after_fin_bytes += n
                return
            if n > room:
                st.after_fin_bytes += n - room
                payload = payload[:room]
                n = room
        if r == 0 and not h.bufn:
            h.nxt = (seq + n) & _MASK
            self.events.append(_new_data(h.cid, h.side, payload, ts))
            self._fin_check(h)
        else:
            self._insert(h, seq, payload, ts)
            if r == 0:
                self._drain(h)
            else:
                st.out_of_order += 1
            self._enforce_limits(h, ts)
        if c.h0.fin_done and c.h1.fin_done and not c.closed:
            self._close(c, "fin", ts)

    def _fin(self, h: _Half, fseq: int, ts: int) -> None:
        if h.held:
            self._release(h)
        if h.fin >= 0:
            return  # retransmitted FIN: the first one counts
        if h.nxt < 0:
            h.nxt = fseq
        elif (fseq - h.nxt) & _MASK >= _HALF:
            fseq = h.nxt  # a FIN before bytes already delivered: end the stream where it is
        h.fin = fseq
        if h.bufn:  # drop buffered bytes at or after the FIN
            self._trim_buffer_to(h, fseq)
        self._fin_check(h)
        c = h.conn
        if c.h0.fin_done and c.h1.fin_done:
            self._close(c, "fin", ts)

    # -- ends of connections ---------------------------------------------------------------------

    def _flush(self, h: _Half, ts: int) -> None:
        """Connection over: every hole below buffered bytes or below the FIN becomes a gap."""
        if h.held:
            self._release(h)
        if h.nxt < 0 or h.fin_done:
            return
        if h.fin >= 0:
            self._skip_to(h, h.fin, ts)
        elif h.bufn:
            last = h.bseq[-1]
            self._skip_to(h, (last + len(h.bdat[-1])) & _MASK, ts)

    def _close(self, c: _Conn, reason: CloseReason, ts: int) -> None:
        c.closed = True
        h0 = c.h0
        h1 = c.h1
        self._flush(h0, ts)
        self._flush(h1, ts)
        h0.nxt = h1.nxt = -1
        del self._lru[c]
        st = self.stats
        st.open_connections -= 1
        if reason == "fin":
            st.closed_fin += 1
        elif reason == "rst":
            st.closed_rst += 1
        elif reason == "timeout":
            st.closed_timeout += 1
        elif reason == "evicted":
            st.evicted += 1
        else:
            st.closed_eof += 1
        self.events.append(Closed(c.cid, reason, ts))
        if reason in ("fin", "rst") and self.limits.closed_linger_ns and self.limits.max_lingering:
            c.closed_ts = ts
            self._linger[c] = None
            st.lingering += 1
            while len(self._linger) > self.limits.max_lingering:
                st.linger_dropped += 1
                self._forget(next(iter(self._linger)))
        else:
            self._unregister(c)

    def _evict(self, ts: int) -> None:
        """Close the least recently active connection."""
        self._close(next(iter(self._lru)), "evicted", ts)

    def _forget(self, c: _Conn) -> None:
        if c in self._linger:
            del self._linger[c]
            self.stats.lingering -= 1
        self._unregister(c)

    def _unregister(self, c: _Conn) -> None:
        halves = self._halves
        for h in (c.h0, c.h1):
            if halves.get(h.key) is h:
                del halves[h.key]


def _dsacks(options: bytes, left: int, right: int) -> bool:
    """Whether TCP ``options`` hold a SACK block exactly [left, right)."""
    i = 0
    n = len(options)
    while i < n:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2:
            break
        size = options[i + 1]
        if kind == 5:
            for b in range(i + 2, min(i + size, n) - 7, 8):
                if (
                    int.from_bytes(options[b : b + 4], "big") == left
                    and int.from_bytes(options[b + 4 : b + 8], "big") == right
                ):
                    return True
        i += size
    return False
