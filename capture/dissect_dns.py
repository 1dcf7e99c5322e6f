"""DNS over UDP and TCP as dissectors (capture/dissect.py): pairing, timeouts, entries.

A query pairs with the first response that carries its id and comes from the other side of
the same UDP flow (5-tuple) or TCP connection, as tshark pairs them (and the golden tests hold
us to tshark's counts). Queries wait at most `DnsLimits.query_timeout_ns` (packet time): past
it a query becomes an entry of its own with a "timeout" error, and a response that arrives
later is a response without a query ("pair-not-found"), as is a second answer to one query. A
query still waiting when its flow or connection ends gets "pair-not-found" (or "timeout" if
it waited that long). A retransmitted query (same id, not yet answered) waits as a query of its
own: the response answers the first, the copy times out: each query sent is an entry.

Over TCP (RFC 1035 4.2.2, RFC 7766) each message has a 2-byte length prefix and one segment
may hold several (pipelined queries) or part of one; each direction is reassembled into
messages. A gap, or a message that is not plausible (an unassigned opcode, a question section
that does not parse), loses the message boundary: the direction skips data until a chunk
starts with a plausible length-prefixed message (`dns.plausible_header`), counting what it
skipped (`skipped`); a capture that starts mid-connection resynchronises the same way. Roles
are learnt from the QR bit of the first message (a query's sender is the client). A
connection that shows no message in `MAX_PROBE` bytes is given up (`active = False`).

Over UDP a datagram is one message. One that is too short for a header, or is not plausible,
is rejected (not DNS: the flow is not recognised for it); damage past the question section is
kept and reported as the entry's dissection error.

Limits (`DnsLimits`): `max_pending` queries waiting per flow or connection (past it the oldest
is emitted as "pair-not-found", evicted); a TCP message is at most 65,535 bytes by its framing,
so a direction buffers at most one message plus one chunk. What was dropped, could not be
paired or read is counted in `DnsStats`, summed over a pipeline's flows (/status: `dns_*`).

The entry (docs/entries.md, "DNS"): Kubeshark's shape — `request = {"opCode", "questions"}`,
`response = {"code", "answers", ...}` — plus `id`, `rcode`, `truncated`, `authoritative`,
`authorities`, `additionals` and the response's `questions`. `requestSize`/`responseSize` are
the DNS messages' lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from capture.dissect import DissectorStats, EntryMaker, TcpDissector, UdpDissector
from capture.dns import OPCODES, DnsMessage, parse, plausible_header, rcode_text
from capture.entry_fields import _endpoint, _ip_text, rfc3339_ns

if TYPE_CHECKING:
    from capture.entries import ConnectionEnds, Identity

_SECOND_NS = 1_000_000_000
# Bytes a TCP connection on a DNS port may show without one DNS message before it is given up.
MAX_PROBE = 64 << 10


@dataclass(frozen=True, slots=True)
class DnsLimits:
    """query_timeout_ns: a query with no response after this long (packet time) is reported
    with a "timeout" error. max_pending: queries waiting per flow/connection; past it the
    oldest is reported as "pair-not-found" (evicted)."""

    query_timeout_ns: int = 10 * _SECOND_NS
    max_pending: int = 1024


class DnsStats(DissectorStats):
    """What the DNS flows and connections of a pipeline could not pair, dropped or could not
    read (one object shared by all of them: capture/dissect.py)."""

    queries_timeout: int  # no response within query_timeout_ns
    queries_unanswered: int  # still waiting when the flow or connection ended
    queries_evicted: int  # pushed out by max_pending
    responses_unpaired: int  # no waiting query of its id (late, duplicate, before the capture)
    messages_malformed: int  # damaged past the question section: kept, entry flagged
    # not a DNS message: a datagram rejected, a TCP message that lost the framing
    messages_rejected: int
    bytes_skipped: int  # TCP: looking for a message boundary again
    flows_evicted: int  # flows / connections ended early by their table's bound

    def __init__(self) -> None:
        super().__init__(_DNS_COUNTERS)


_DNS_COUNTERS = (
    "queries_timeout queries_unanswered queries_evicted responses_unpaired messages_malformed "
    "messages_rejected bytes_skipped flows_evicted"
)


class DnsExchange(NamedTuple):
    """A query and its response; either may be None (then error says why)."""

    query: DnsMessage | None
    query_ts: int
    response: DnsMessage | None
    response_ts: int
    client_side: int  # the query's sender (for a lone response, the other side)
    error: tuple[str, str] | None


def _protocol(layer3: str, layer4: str) -> dict[str, Any]:
    # Kubeshark's DNS protocol object (kubeshark/worker's dns dissector), with layer3/layer4 as
    # captured: Kubeshark says "udp" for every DNS entry; ours over TCP say "tcp".
    return {
        "abbr": "DNS",
        "backgroundColor": "#606060",
        "fontSize": 12,
        "foregroundColor": "#ffffff",
        "layer3": layer3,
        "layer4": layer4,
        "longName": "Domain Name System",
        "macro": "dns",
        "name": "dns",
        "ports": [],
        "priority": 4,
        "referenceLink": "https://www.iana.org/assignments/dns-parameters/dns-parameters.xhtml",
        "version": "0",
    }


# Shared by every DNS entry of that variant (read-only, like capture/entries.py's).
PROTOCOLS = {(v6, tcp): _protocol("ipv6" if v6 else "ip", "tcp" if tcp else "udp")
             for v6 in (False, True) for tcp in (False, True)}  # fmt: skip


# NamedTuple.__new__ is a Python function; tuple.__new__ builds the same object faster.
_new = tuple.__new__
# A query waiting for its response: (message, sender side, time).
_Waiting = tuple[DnsMessage, int, int]


class _Pairing:
    """The queries of one flow or connection waiting for their response, in arrival (= time)
    order. One list, scanned: a flow has one or two queries waiting (a lookup's A and AAAA),
    and the scan is bounded by max_pending. Few objects per flow matter more than lookups
    here: a node has a flow per lookup, and each object kept is work for the collector.
    What comes out is appended to `out`: the dissector's `exchanges`."""

    __slots__ = ("limits", "pending", "stats")

    def __init__(self, limits: DnsLimits, stats: DnsStats) -> None:
        self.limits = limits
        self.stats = stats
        self.pending: list[_Waiting] = []

    def message(self, msg: DnsMessage, side: int, ts: int, out: list[Any]) -> None:
        pending = self.pending
        if pending and pending[0][2] <= ts - self.limits.query_timeout_ns:
            self.expire(ts, out)
        if msg.error is not None:
            self.stats.messages_malformed += 1
        if not msg.qr:
            pending.append((msg, side, ts))
            if len(pending) > self.limits.max_pending:
                self.stats.queries_evicted += 1
                why = f"evicted: more than max_pending={self.limits.max_pending} queries waiting"
                self._drop(pending.pop(0), "pair-not-found", why, out)
            return
        ident = msg.id
        for i, waiting in enumerate(pending):
            query, qside, qts = waiting
            if query.id == ident and qside != side:
                del pending[i]
                error: tuple[str, str] | None = None
                if query.error is not None or msg.error is not None:
                    texts = [m.error for m in (query, msg) if m.error is not None]
                    error = ("dissection", "; ".join(texts))
                out.append(_new(DnsExchange, (query, qts, msg, ts, qside, error)))
                return
        self.stats.responses_unpaired += 1
        why = f"no query seen for this response (id {ident})"
        out.append(_new(DnsExchange, (None, 0, msg, ts, 1 - side, ("pair-not-found", why))))

    def expire(self, now: int, out: list[Any]) -> None:
        """Reports the queries that waited `query_timeout_ns` or more by `now`."""
        pending = self.pending
        limit = now - self.limits.query_timeout_ns
        n = 0
        while n < len(pending) and pending[n][2] <= limit:
            n += 1
        if n:
            expired = pending[:n]
            del pending[:n]
            secs = self.limits.query_timeout_ns / _SECOND_NS
            self.stats.queries_timeout += n
            for q in expired:
                self._drop(q, "timeout", f"no response within {secs:g} s (id {q[0].id})", out)

    def end(self, reason: str, ts: int, out: list[Any]) -> None:
        self.expire(ts, out)
        if reason == "evicted":
            self.stats.flows_evicted += 1
        rest, self.pending = self.pending, []
        self.stats.queries_unanswered += len(rest)
        for q in rest:
            why = f"no response seen for this query (id {q[0].id}; {_ENDED[reason]})"
            self._drop(q, "pair-not-found", why, out)

    @staticmethod
    def _drop(q: _Waiting, kind: str, why: str, out: list[Any]) -> None:
        query, side, ts = q
        if query.error is not None:
            why = f"{why}; {query.error}"
        out.append(_new(DnsExchange, (query, ts, None, 0, side, (kind, why))))


_ENDED = {
    "fin": "the connection closed",
    "rst": "the connection was reset",
    "timeout": "the flow went idle",
    "evicted": "the flow was evicted",
    "eof": "the capture ended",
}


class DnsUdp(UdpDissector):
    """DNS on one UDP flow."""

    def __init__(self, limits: DnsLimits, stats: DnsStats | None = None) -> None:
        super().__init__("dns")
        self.stats = DnsStats() if stats is None else stats  # shared by a pipeline's
        self._pairing = _Pairing(limits, self.stats)

    def datagram(self, side: int, payload: bytes, ts_ns: int) -> bool:
        msg = parse(payload)
        if msg is None or not _plausible(msg):
            self.stats.messages_rejected += 1
            return False
        self._pairing.message(msg, side, ts_ns, self.exchanges)
        return True

    def end(self, reason: str, ts_ns: int) -> None:
        self._pairing.end(reason, ts_ns, self.exchanges)

    def entry_maker(
        self, flow: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        return DnsEntryMaker(flow, identity, stream, tcp=False)


class DnsTcp(TcpDissector):
    """DNS on one TCP connection (length-prefixed messages, RFC 7766)."""

    def __init__(self, limits: DnsLimits, stats: DnsStats | None = None) -> None:
        super().__init__("dns")
        self.stats = DnsStats() if stats is None else stats  # shared by a pipeline's
        self._pairing = _Pairing(limits, self.stats)
        self._bufs = (bytearray(), bytearray())
        self._ts = [0, 0]  # time of the data that carried the first buffered byte, per side
        self._lost = [False, False]  # framing lost: looking for a message boundary again
        self.skipped = 0  # bytes dropped while resynchronising

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        if not self.active:
            return
        if self._lost[side]:
            if not _starts_message(data):
                self._skip(len(data))
                return
            self._lost[side] = False
        buf = self._bufs[side]
        old = len(buf)
        if not old:
            self._ts[side] = ts_ns
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if n - pos - 2 < length:
                if n - pos >= 14 and not plausible_header(buf, pos + 2, length):
                    self.stats.messages_rejected += 1
                    del buf[:pos]
                    self._lose(side)  # cannot be a message: do not wait for its end
                    return
                break
            start = pos
            msg = parse(bytes(buf[pos + 2 : pos + 2 + length])) if length >= 12 else None
            pos += 2 + length
            if msg is None or not _plausible(msg):
                self.stats.messages_rejected += 1
                del buf[:start]
                self._lose(side)  # not a message: where the next one starts is unknown
                return
            if self.client_side is None:
                self.client_side = side if not msg.qr else 1 - side
            self._pairing.message(
                msg, side, self._ts[side] if start < old else ts_ns, self.exchanges
            )
        if pos:
            del buf[:pos]
            if buf and pos >= old:
                self._ts[side] = ts_ns

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        if self.active:
            self._lose(side)

    def end(self, reason: str, ts_ns: int) -> None:
        if not self.active:
            return
        self._pairing.end(reason, ts_ns, self.exchanges)
        self.active = False

    def _lose(self, side: int) -> None:
        buf = self._bufs[side]
        self._skip(len(buf))
        buf.clear()
        self._lost[side] = True

    def _skip(self, count: int) -> None:
        self.skipped += count
        self.stats.bytes_skipped += count
        if self.client_side is None and self.skipped > MAX_PROBE:
            self.active = False  # no DNS message in sight: not DNS
            self._bufs = (bytearray(), bytearray())

    def entry_maker(
        self, conn: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        return DnsEntryMaker(conn, identity, stream, tcp=True)


def _plausible(msg: DnsMessage) -> bool:
    """A message whose opcode is assigned and whose question section parsed."""
    return msg.opcode in OPCODES and len(msg.questions) == msg.counts[0]


def _starts_message(data: bytes) -> bool:
    """Does this chunk (after a gap) start with a length-prefixed message that parses?"""
    if len(data) < 14:
        return False
    length = (data[0] << 8) | data[1]
    if length < 12 or not plausible_header(data, 2, length):
        return False
    if len(data) >= 2 + length:
        msg = parse(data[2 : 2 + length])
        return msg is not None and _plausible(msg)
    return True


class DnsEntryMaker(EntryMaker):
    """The entries of one DNS flow or connection (see the module doc). Keeps only references:
    a UDP flow usually has one or two entries, so there is nothing to gain from preparing
    shared parts per flow (as capture/entries.py does per HTTP connection), and every object a
    flow keeps is work for the garbage collector while it is open."""

    __slots__ = ("_ends", "_identity", "_stream", "_tcp")

    def __init__(self, ends: ConnectionEnds, identity: Identity, stream: int, tcp: bool) -> None:
        self._ends = ends
        self._identity = identity
        self._stream = stream
        self._tcp = tcp

    def build(self, ex: DnsExchange, index: int) -> dict[str, Any]:
        q, q_ts, r, r_ts, client_side, err = ex
        ends = self._ends
        identity = self._identity
        client = _endpoint(_ip_text(ends.client_ip), ends.client_port)
        server = _endpoint(_ip_text(ends.server_ip), ends.server_port)
        src, dst = (client, server) if client_side == 0 else (server, client)
        ts = q_ts if q is not None else r_ts
        delta = r_ts - q_ts if q is not None and r is not None else 0
        digits = f"{self._stream:012d}"
        return {
            "dst": dst,
            "elapsedTime": (delta + 500_000) // 1_000_000 if delta > 0 else 0,
            "entryFile": f"{digits}_pcap-{index}_entry.json",
            "error": None if err is None else {"type": err[0], "msg": err[1]},
            "failed": False,
            "id": f"{identity.worker}/{digits}.pcap-{index}",
            "index": index,
            "node": {"ip": identity.node_ip, "name": identity.node_name},
            "outgoing": src["ip"] in identity.local_ips,
            "passed": False,
            "protocol": PROTOCOLS[ends.family != 4, self._tcp],
            "record": "",
            "request": {}
            if q is None
            else {"id": q.id, "opCode": OPCODES.get(q.opcode, "Unknown"), "questions": q.questions},
            "requestSize": 0 if q is None else q.size,
            "response": {}
            if r is None
            else {
                "additionals": r.additionals,
                "answers": r.answers,
                "authoritative": r.authoritative,
                "authorities": r.authorities,
                "code": rcode_text(r.rcode),
                "id": r.id,
                "questions": r.questions,
                "rcode": r.rcode,
                "truncated": r.truncated,
            },
            "responseSize": 0 if r is None else r.size,
            "src": src,
            "startTime": rfc3339_ns(ts),
            "stream": f"{digits}.pcap",
            "timestamp": ts // 1_000_000,
            "tls": False,
            "worker": identity.worker,
        }
