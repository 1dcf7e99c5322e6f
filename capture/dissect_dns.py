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
so a direction buffers at most one message plus one chunk.

The entry (docs/entries.md, "DNS"): Kubeshark's shape — `request = {"opCode", "questions"}`,
`response = {"code", "answers", ...}` — plus `id`, `rcode`, `truncated`, `authoritative`,
`authorities`, `additionals` and the response's `questions`. `requestSize`/`responseSize` are
the DNS messages' lengths.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from capture.dissect import EntryMaker, TcpDissector, UdpDissector
from capture.dns import OPCODES, DnsMessage, parse, plausible_header, rcode_text
from capture.entries import _endpoint, _ip_text, rfc3339_ns

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


class _Query:
    __slots__ = ("done", "msg", "side", "ts")

    def __init__(self, msg: DnsMessage, side: int, ts: int) -> None:
        self.msg = msg
        self.side = side
        self.ts = ts
        self.done = False


class _Pairing:
    """The queries of one flow or connection waiting for their response."""

    def __init__(self, limits: DnsLimits, out: list[Any]) -> None:
        self.limits = limits
        self.out = out  # the dissector's exchanges list (appended to in place)
        self.by_id: dict[int, list[_Query]] = {}
        self.order: deque[_Query] = deque()  # arrival (= time) order, answered ones skipped
        self.waiting = 0

    def message(self, msg: DnsMessage, side: int, ts: int) -> None:
        self.expire(ts)
        if not msg.qr:
            q = _Query(msg, side, ts)
            self.by_id.setdefault(msg.id, []).append(q)
            self.order.append(q)
            self.waiting += 1
            if self.waiting > self.limits.max_pending:
                self._evict()
            return
        waiting = self.by_id.get(msg.id)
        if waiting:
            for i, q in enumerate(waiting):
                if q.side != side:
                    del waiting[i]
                    if not waiting:
                        del self.by_id[msg.id]
                    q.done = True
                    self.waiting -= 1
                    errors = [m.error for m in (q.msg, msg) if m.error is not None]
                    error = ("dissection", "; ".join(errors)) if errors else None
                    self.out.append(DnsExchange(q.msg, q.ts, msg, ts, q.side, error))
                    return
        self.out.append(
            DnsExchange(
                None,
                0,
                msg,
                ts,
                1 - side,
                ("pair-not-found", f"no query seen for this response (id {msg.id})"),
            )
        )

    def expire(self, now: int) -> None:
        """Reports the queries that waited `query_timeout_ns` or more by `now`."""
        order = self.order
        limit = now - self.limits.query_timeout_ns
        while order and (order[0].done or order[0].ts <= limit):
            q = order.popleft()
            if not q.done:
                secs = self.limits.query_timeout_ns / _SECOND_NS
                self._drop(q, ("timeout", f"no response within {secs:g} s (id {q.msg.id})"))

    def end(self, reason: str, ts: int) -> None:
        self.expire(ts)
        while self.order:
            q = self.order.popleft()
            if not q.done:
                why = f"no response seen for this query (id {q.msg.id}; {_ENDED[reason]})"
                self._drop(q, ("pair-not-found", why))

    def _evict(self) -> None:
        while self.order:
            q = self.order.popleft()
            if not q.done:
                why = f"evicted: more than max_pending={self.limits.max_pending} queries waiting"
                self._drop(q, ("pair-not-found", why))
                return

    def _drop(self, q: _Query, error: tuple[str, str]) -> None:
        q.done = True
        self.waiting -= 1
        waiting = self.by_id[q.msg.id]
        waiting.remove(q)
        if not waiting:
            del self.by_id[q.msg.id]
        if q.msg.error is not None:
            error = (error[0], f"{error[1]}; {q.msg.error}")
        self.out.append(DnsExchange(q.msg, q.ts, None, 0, q.side, error))


_ENDED = {
    "fin": "the connection closed",
    "rst": "the connection was reset",
    "timeout": "the flow went idle",
    "evicted": "the flow was evicted",
    "eof": "the capture ended",
}


class DnsUdp(UdpDissector):
    """DNS on one UDP flow."""

    def __init__(self, limits: DnsLimits) -> None:
        super().__init__("dns")
        self._pairing = _Pairing(limits, self.exchanges)

    def datagram(self, side: int, payload: bytes, ts_ns: int) -> bool:
        msg = parse(payload)
        if msg is None or not _plausible(msg):
            return False
        self._pairing.message(msg, side, ts_ns)
        return True

    def end(self, reason: str, ts_ns: int) -> None:
        self._pairing.end(reason, ts_ns)

    def pop_exchanges(self) -> list[Any]:
        out = self.exchanges
        if not out:
            return []
        self.exchanges = []
        self._pairing.out = self.exchanges
        return out

    def entry_maker(
        self, flow: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        return DnsEntryMaker(flow, identity, stream, tcp=False)


class DnsTcp(TcpDissector):
    """DNS on one TCP connection (length-prefixed messages, RFC 7766)."""

    def __init__(self, limits: DnsLimits) -> None:
        super().__init__("dns")
        self._pairing = _Pairing(limits, self.exchanges)
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
                    del buf[:pos]
                    self._lose(side)  # cannot be a message: do not wait for its end
                    return
                break
            start = pos
            msg = parse(bytes(buf[pos + 2 : pos + 2 + length])) if length >= 12 else None
            pos += 2 + length
            if msg is None or not _plausible(msg):
                del buf[:start]
                self._lose(side)  # not a message: where the next one starts is unknown
                return
            if self.client_side is None:
                self.client_side = side if not msg.qr else 1 - side
            self._pairing.message(msg, side, self._ts[side] if start < old else ts_ns)
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
        self._pairing.end(reason, ts_ns)
        self.active = False

    def _lose(self, side: int) -> None:
        buf = self._bufs[side]
        self._skip(len(buf))
        buf.clear()
        self._lost[side] = True

    def _skip(self, count: int) -> None:
        self.skipped += count
        if self.client_side is None and self.skipped > MAX_PROBE:
            self.active = False  # no DNS message in sight: not DNS
            self._bufs = (bytearray(), bytearray())

    def pop_exchanges(self) -> list[Any]:
        out = self.exchanges
        if not out:
            return []
        self.exchanges = []
        self._pairing.out = self.exchanges
        return out

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
    """The entries of one DNS flow or connection (see the module doc)."""

    __slots__ = ("_ends", "_file_prefix", "_id_prefix", "_local", "_protocol", "_template")

    def __init__(self, ends: ConnectionEnds, identity: Identity, stream: int, tcp: bool) -> None:
        client = _endpoint(_ip_text(ends.client_ip), ends.client_port)
        server = _endpoint(_ip_text(ends.server_ip), ends.server_port)
        self._ends = (client, server)
        digits = f"{stream:012d}"
        self._file_prefix = f"{digits}_pcap-"
        self._id_prefix = f"{identity.worker}/{digits}.pcap-"
        self._protocol = PROTOCOLS[ends.family != 4, tcp]
        self._template: dict[str, Any] = {
            "error": None,
            "failed": False,
            "node": {"ip": identity.node_ip, "name": identity.node_name},
            "passed": False,
            "protocol": self._protocol,
            "record": "",
            "stream": f"{digits}.pcap",
            "tls": False,
            "worker": identity.worker,
        }
        self._local = identity.local_ips

    def build(self, ex: DnsExchange, index: int) -> dict[str, Any]:
        q, q_ts, r, r_ts, client_side, err = ex
        entry = self._template.copy()
        src, dst = self._ends if client_side == 0 else (self._ends[1], self._ends[0])
        entry["src"] = src.copy()
        entry["dst"] = dst.copy()
        entry["outgoing"] = src["ip"] in self._local
        if q is None:
            entry["request"] = {}
            entry["requestSize"] = 0
        else:
            entry["request"] = {
                "id": q.id,
                "opCode": OPCODES.get(q.opcode, "Unknown"),
                "questions": q.questions,
            }
            entry["requestSize"] = q.size
        if r is None:
            entry["response"] = {}
            entry["responseSize"] = 0
        else:
            entry["response"] = {
                "additionals": r.additionals,
                "answers": r.answers,
                "authoritative": r.authoritative,
                "authorities": r.authorities,
                "code": rcode_text(r.rcode),
                "id": r.id,
                "questions": r.questions,
                "rcode": r.rcode,
                "truncated": r.truncated,
            }
            entry["responseSize"] = r.size
        ts = q_ts if q is not None else r_ts
        delta = r_ts - q_ts if q is not None and r is not None else 0
        entry["elapsedTime"] = (delta + 500_000) // 1_000_000 if delta > 0 else 0
        entry["timestamp"] = ts // 1_000_000
        entry["startTime"] = rfc3339_ns(ts)
        entry["entryFile"] = f"{self._file_prefix}{index}_entry.json"
        entry["id"] = f"{self._id_prefix}{index}"
        entry["index"] = index
        if err is not None:
            entry["error"] = {"type": err[0], "msg": err[1]}
        return entry
