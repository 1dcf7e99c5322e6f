"""Each direction's out-of-order bytes in the TCP reassembler: kept until the hole before them
fills, delivered in stream order when it does, given up as a `Gap` when it will not (an ACK
past it, a buffer limit, the connection's end). capture/reassembly.py's docstring has the
policies ("Retransmissions and overlaps", "In-order data", "Gaps", the limits).

`ReassemblyBuffers` is the base of `capture.reassembly.Reassembler`, holding the state both
use; a base class rather than a helper object, so that compiled (capture/__init__.py) the
per-segment path reaches it as directly as before.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict

from capture.reassembly_events import (
    CloseReason,
    Event,
    Gap,
    ReassemblyLimits,
    ReassemblyStats,
    _new_data,
)

_MASK = 0xFFFFFFFF  # sequence numbers are mod 2**32
_HALF = 0x80000000  # (a - b) & _MASK below this: a is at or after b


class _Conn:
    __slots__ = ("cid", "closed", "closed_ts", "h0", "h1", "last")

    def __init__(self, cid: int, ts: int) -> None:
        self.cid = cid
        self.last = ts  # packet time of the connection's latest segment
        self.closed = False
        self.closed_ts = 0
        # set right after construction (the halves need the conn first)
        self.h0: _Half
        self.h1: _Half


# Never mutated: every mutation of a direction's buffer happens after ``_insert`` gave the
# direction its own lists (``_take`` and ``_trim_buffer_to`` only run with bytes buffered).
_NO_SEQS: list[int] = []
_NO_DATA: list[bytes] = []
_NO_TIMES: list[int] = []


class _Half:
    """One direction: the bytes ``side`` sends. ``nxt`` is -1 until the stream start is known,
    and -1 again once the connection is closed (so the fast path never matches a closed one)."""

    __slots__ = (  # noqa: RUF023 (grouped by meaning)
        "conn",
        "cid",
        "side",
        "peer",
        "key",
        "nxt",  # next sequence number expected (everything before was delivered or gapped)
        "isn",  # sequence number of this side's SYN, -1 if none seen
        "fin",  # sequence number of this side's FIN, -1 if none seen
        "fin_done",  # every byte before the FIN was delivered/gapped, FIN consumed
        "probe",  # start guessed from a bare segment without SYN (maybe a keep-alive), else -1
        "held",  # a first segment of one byte without SYN (maybe a keep-alive), else b""
        "held_seq",  # ... its sequence number
        "held_ts",  # ... and time
        "bseq",  # out-of-order pieces: sequence numbers, sorted by distance from nxt ...
        "bdat",  # ... and their bytes; never overlapping, all strictly after nxt ...
        "btim",  # ... and the capture time of the packet each piece came in
        "bufn",  # bytes in bdat
        "bsince",  # packet time at which bdat became non-empty (oldest-first flushing)
    )

    def __init__(self, conn: _Conn, side: int, key: tuple[bytes, int, bytes, int]) -> None:
        self.conn = conn
        self.cid = conn.cid
        self.side = side
        self.key = key
        self.nxt = -1
        self.isn = -1
        self.fin = -1
        self.fin_done = False
        self.probe = -1
        self.held = b""
        self.held_seq = 0
        self.held_ts = 0
        # shared empty lists until the first out-of-order piece (most directions never buffer)
        self.bseq: list[int] = _NO_SEQS
        self.bdat: list[bytes] = _NO_DATA
        self.btim: list[int] = _NO_TIMES
        self.bufn = 0
        self.bsince = 0
        self.peer: _Half


class ReassemblyBuffers:
    """The out-of-order buffers of every connection (see the module docstring)."""

    def __init__(self, limits: ReassemblyLimits) -> None:
        self.limits = limits
        self.stats = ReassemblyStats()
        # Events not popped yet. Read-only for callers: a cheap "anything to pop?" test (the
        # pipeline asks after every segment); pop_events takes them.
        self.events: list[Event] = []
        # Directions holding out-of-order bytes, in the order they started buffering.
        self._buffering: OrderedDict[_Half, None] = OrderedDict()

    def _close(self, c: _Conn, reason: CloseReason, ts: int) -> None:
        """End the connection (capture/reassembly.py)."""
        raise NotImplementedError

    def _insert(self, h: _Half, seq: int, payload: bytes, ts: int) -> None:
        """Buffer ``payload`` at ``seq`` (at or after nxt), filling only holes: first bytes win."""
        nxt = h.nxt
        if not h.bufn:
            h.bseq = []
            h.bdat = []
            h.btim = []
        bseq = h.bseq
        bdat = h.bdat
        btim = h.btim

        def rel(s: int) -> int:
            return (s - nxt) & _MASK

        r = rel(seq)
        end = r + len(payload)
        start = r
        overlap = 0
        i = bisect_right(bseq, r, key=rel)
        if i:
            prev_end = rel(bseq[i - 1]) + len(bdat[i - 1])
            if prev_end > start:
                overlap += min(prev_end, end) - start
                start = prev_end
        added = 0
        while start < end:
            if i < len(bseq):
                ns = rel(bseq[i])
                if ns < end:
                    if ns > start:  # the hole before the next piece
                        piece = payload[start - r : ns - r]
                        bseq.insert(i, (nxt + start) & _MASK)
                        bdat.insert(i, piece)
                        btim.insert(i, ts)
                        added += len(piece)
                        i += 1
                    ne = ns + len(bdat[i])
                    overlap += min(ne, end) - ns
                    start = ne
                    i += 1
                    continue
            piece = payload if start == r else payload[start - r :]
            bseq.insert(i, (nxt + start) & _MASK)
            bdat.insert(i, piece)
            btim.insert(i, ts)
            added += len(piece)
            break
        st = self.stats
        st.overlap_bytes += overlap
        if added:
            if not h.bufn:
                h.bsince = ts
                self._buffering[h] = None
            h.bufn += added
            st.buffered_bytes += added
            if st.buffered_bytes > st.buffered_peak:
                st.buffered_peak = st.buffered_bytes

    def _take(self, h: _Half, k: int) -> tuple[list[bytes], list[int]]:
        """Remove the first ``k`` buffered pieces; return their bytes and capture times."""
        chunks = h.bdat[:k]
        times = h.btim[:k]
        del h.bseq[:k]
        del h.bdat[:k]
        del h.btim[:k]
        size = sum(map(len, chunks))
        h.bufn -= size
        self.stats.buffered_bytes -= size
        if not h.bufn:
            del self._buffering[h]
        return chunks, times

    def _drain(self, h: _Half) -> None:
        """Deliver the buffered pieces contiguous with nxt: one Data per run of pieces that
        came in the same packet, with that packet's time (see "In-order data")."""
        bseq = h.bseq
        bdat = h.bdat
        nxt = h.nxt
        k = 0
        n = len(bseq)
        while k < n and bseq[k] == nxt:
            nxt = (nxt + len(bdat[k])) & _MASK
            k += 1
        if k:
            chunks, times = self._take(h, k)
            h.nxt = nxt
            events = self.events
            start = 0
            for j in range(1, k + 1):
                if j == k or times[j] != times[start]:
                    data = chunks[start] if j - start == 1 else b"".join(chunks[start:j])
                    events.append(_new_data(h.cid, h.side, data, times[start]))
                    start = j
        self._fin_check(h)

    def _trim_buffer_to(self, h: _Half, limit: int) -> None:
        """Drop buffered bytes at or after sequence number ``limit`` (the FIN)."""
        nxt = h.nxt
        room = (limit - nxt) & _MASK
        bseq = h.bseq
        bdat = h.bdat
        dropped = 0
        k = len(bseq)
        while k:
            s = (bseq[k - 1] - nxt) & _MASK
            e = s + len(bdat[k - 1])
            if e <= room:
                break
            if s >= room:
                dropped += e - s
                k -= 1
                continue
            bdat[k - 1] = bdat[k - 1][: room - s]
            dropped += e - room
            break
        del bseq[k:]
        del bdat[k:]
        del h.btim[k:]
        if dropped:
            self.stats.after_fin_bytes += dropped
            h.bufn -= dropped
            self.stats.buffered_bytes -= dropped
            if not h.bufn:
                del self._buffering[h]

    def _gap(self, h: _Half, n: int, ts: int) -> None:
        st = self.stats
        st.gaps += 1
        st.gap_bytes += n
        self.events.append(Gap(h.cid, h.side, n, ts))

    def _flush_hole(self, h: _Half, ts: int) -> None:
        """Give up the hole before ``h``'s first buffered piece; deliver what follows it."""
        first = h.bseq[0]
        self._gap(h, (first - h.nxt) & _MASK, ts)
        h.nxt = first
        self._drain(h)

    def _skip_to(self, h: _Half, target: int, ts: int) -> None:
        """Advance ``h`` to ``target``: holes become gaps, buffered bytes on the way are
        delivered. Stops early if buffered bytes reach past ``target``."""
        while True:
            t = (target - h.nxt) & _MASK
            if t == 0 or t >= _HALF:
                break
            if h.bufn:
                first = h.bseq[0]
                r = (first - h.nxt) & _MASK
                if r <= t:
                    self._gap(h, r, ts)
                    h.nxt = first
                    self._drain(h)
                    continue
            self._gap(h, t, ts)
            h.nxt = target
            self._fin_check(h)
            break

    def _fin_check(self, h: _Half) -> None:
        """Consume ``h``'s FIN once every byte before it is accounted for. Closing is left to
        the caller, so loops over buffers never see the connection vanish under them."""
        if h.nxt == h.fin and h.fin >= 0 and not h.fin_done:
            h.fin_done = True
            h.nxt = (h.fin + 1) & _MASK

    def _enforce_limits(self, h: _Half, ts: int) -> None:
        limits = self.limits
        st = self.stats
        p = h.peer
        lim = limits.max_buffered_per_conn
        while h.bufn + p.bufn > lim:
            victim = h if h.bufn and (not p.bufn or h.bsince <= p.bsince) else p
            self._flush_hole(victim, ts)
            st.conn_limit_flushes += 1
            st.overflow_flushes += 1
        lim = limits.max_buffered_total
        while st.buffered_bytes > lim:
            victim = next(iter(self._buffering))
            self._flush_hole(victim, ts)
            st.total_limit_flushes += 1
            st.overflow_flushes += 1
            vc = victim.conn
            if vc is not h.conn and vc.h0.fin_done and vc.h1.fin_done:
                self._close(vc, "fin", ts)
