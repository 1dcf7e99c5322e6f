"""Sans-IO HTTP/1.x dissection of one TCP connection, with request/response pairing.

Bytes and packet times go in (`data`, `gap`, `end`), finished `Exchange`s come out
(`pop_exchanges`). Nothing here reads a clock or touches a socket.

Why hand-written and not a library parser:

* httptools (llhttp) is fast, but it rejects the odd requests a passive sniffer must still report
  (0 of 27 requests of zeek-methods.pcap in strict mode, 15 of 27 with every leniency on), and a
  parser that raised cannot resynchronise inside the same stream after a capture gap.
* h11 is a conversation endpoint, not an observer: both peers' state machines must be driven, it
  refuses malformed input, and it measured ~14x slower end to end (reference/perf-baseline.md).
* HTTP/1.x framing is small. `bytes.find` locates heads and chunk lines in C; Python only touches
  head lines and chunk-size lines, never body bytes one at a time. Bodies are sliced, not copied
  byte-wise, and a body longer than `max_body` is counted but not kept.
* Speed: the usual data holds one whole message with a clean head, and `_quick` takes it in one
  function (no state machine steps); anything else goes the general way (`_parse`/`_head`), and
  the split-invariance tests check that both agree. Heads repeat a great deal (the same request
  polled, the same response head for as long as its Date stays the same), so what `_quick`
  parsed is cached by the raw head, and by the raw line for heads that differ in a line or two
  (see `_Parsed`: module-wide, bounded by HEAD_CACHE_* / LINE_CACHE_*, emptied when full; the
  result never depends on what they hold).

Policies (what a Zeek user would expect of a passive analyser; see also docs/internals.md):

* Roles are learnt from content: the side that sends a request line is the client. Until one side
  shows a recognisable request or status line the connection is "probing"; once `max_probe`
  bytes (both sides) went by without one, the connection is declared not HTTP (`active = False`).
  A first line that does not look like either is kept until the other side's first line tells the
  roles, so a malformed request answered by "400 Bad Request" is still reported.
* Framing follows RFC 9112 section 6.3: HEAD responses, 1xx, 204 and 304 have no body;
  Transfer-Encoding with chunked last wins over Content-Length (recorded as an anomaly); a response
  with neither is read until the connection closes; a request with neither has no body.
  Chunk trailers are appended to the message's `headers` after the head's own fields.
* Interim 1xx responses (100 Continue, 103 Early Hints) are consumed and never paired. 101
  Switching Protocols, and a 2xx answer to CONNECT, end HTTP on the connection: the exchange is
  emitted and `active` becomes False. A request carrying `Upgrade` (or a CONNECT) pauses parsing
  of the client side until its response says whether the protocol switched. A 101 to an upgrade
  token with a dissector in `upgrades` (`h2c`) hands the connection over to it instead
  (capture/dissect.py): the successor gets the upgrade request (its response comes in the new
  protocol, e.g. on HTTP/2 stream 1, so no HTTP/1 exchange is emitted for it), then the bytes
  that followed the upgrade request and the 101.
* Pairing: the n-th request pairs with the n-th final response (keep-alive and pipelining), with
  two corrections by packet time, because a passive capture can miss or reorder messages:
  - a response delivered before any request is waiting answers the next request only if it began
    after that request began (capture order across CPUs is not time order); one that began
    earlier answers a request the capture does not have (it started mid-connection, or lost it),
    and is reported alone as pair-not-found;
  - after a gap or resynchronisation on the response side, on a connection that has not
    pipelined, a response that began after a later request began cannot answer the earlier one,
    so the earlier request's response is declared lost (pair-not-found). Without this, one lost
    response would shift every later pair by one (zeek-1000-requests-one-dropped-response.pcap).
* Leniency: bare LF line endings, a missing reason phrase, odd methods, `HTTP/1.` versions,
  obs-fold continuation lines and whitespace before the colon are accepted and listed in
  `Message.anomalies`. A malformed request line (no version, no target, a method that is not a
  token, spaces inside the target) still yields a request, framed as usual, with
  `Exchange.error = ("dissection", ...)`; one with a known method, a version and spaces in its
  target (attack traffic) is recognised as a request even with no response to confirm it.
* Framing values, not their spelling, are bounded: a Content-Length or chunk size may have any
  number of leading zeros (RFC 9110 8.6, RFC 9112 7.1; "Content-Length with leading zeros" is
  listed as an anomaly), the value must stay below 10**18 (Content-Length) or 16**15 (chunk).
  obs-fold lines are unfolded (replaced by a space, RFC 9112 5.2) before Content-Length and
  Transfer-Encoding are read, so a folded `Transfer-Encoding:\r\n chunked` frames as chunked,
  as Zeek and a server that accepts obs-fold would read it.
  Input that cannot be framed (bad Content-Length, bad chunk size, an unparsable status line, a
  head over `max_head`) ends the message with a dissection error, and the side resynchronises on
  the next request or status line at the start of a line.
* Capture gaps: bytes lost inside a body whose extent is known (Content-Length, inside a chunk, or
  a close-delimited body) keep the framing, as Zeek does: the transaction is still reported whole
  (method, status, headers, pairing), `body_truncated` is True, `body_size` and `wire_size` count
  the lost bytes, and `body` holds only captured bytes (nothing is invented). The exchange gets
  ("dissection", "N bytes of the ... body lost in a capture gap") because `error` is the one field
  a Kubeshark client can filter on, and a body with a hole (its content.text cut, its gzip
  undecodable) must not pass as complete. A gap in a head, a chunk-size line or trailers loses
  framing: the message in progress ends with a dissection error and the side resynchronises.
* Times: `ts_first_ns` is the time of the data that carried a message's first byte, `ts_last_ns`
  of the data that carried its last byte (a message completed by a gap takes the gap's time; one
  cut by `end` keeps the time of its last data).
* Connection end (`end`): a close-delimited body ends normally on "fin"; any other message still in
  progress gets ("connection", ...) (or ("timeout", ...) when the reason is "timeout"). Requests
  never answered and responses with no request become ("pair-not-found", ...).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeAlias, TypeVar

from capture.dissect import DissectorStats, EntryMaker, TcpDissector
from capture.entries import EntryBuilder

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from capture.entries import ConnectionEnds, Identity

__all__ = ["Exchange", "HttpConnection", "HttpLimits", "HttpStats", "Message", "UpgradeFactory"]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-connection bounds. Each says what happens when it is reached.

    Memory of one connection is bounded by them: one message being read per direction (its
    head up to max_head, its body up to max_body), and up to max_pending exchanges waiting for
    their other half whose bodies hold at most max(max_pending_body, max_body) bytes together
    (plus their heads). Pipelined requests that are never answered, or the responses of a
    one-direction capture, therefore cost max_pending_body, not max_pending × max_body.
    """

    # Body bytes kept per message; the rest is counted in body_size and dropped
    # (body_truncated=True). Memory per connection stays O(max_body) whatever the Content-Length.
    max_body: int = 1 << 20
    # A head (start line + fields, or a trailer section) longer than this is a dissection error;
    # the side resynchronises. It also bounds a partial line kept while probing or resyncing.
    max_head: int = 64 << 10
    # Not used by the dissector: the cap entries.build_entry/content.decode_body put on decoded
    # bodies (a decompression bomb past it is an error text, never an out-of-memory).
    max_decoded: int = 10 << 20
    # Exchanges waiting for their other half (pipelined requests, early responses). When one more
    # would be needed, the oldest is emitted as pair-not-found (HttpStats.exchanges_evicted).
    max_pending: int = 1024
    # Body bytes kept by the messages waiting for their other half, together. A message that
    # would go past it keeps only what is left (body_truncated; HttpStats counts the message
    # and the bytes dropped); one waiting alone always keeps its body (up to max_body).
    max_pending_body: int = 8 << 20
    # Bytes seen (both sides together, gaps not counted) without finding a request or status
    # line: past this the connection is declared not HTTP (active=False) and ignored from then on.
    max_probe: int = 256 << 10


class Message(NamedTuple):
    """One request or response as seen on the wire.

    A NamedTuple (immutable, cheap to build) rather than a frozen dataclass: two are built per
    exchange on the hot path and a frozen dataclass's __init__ costs ~1 µs more each.
    Requests have method/target set and status/reason None; responses the reverse.
    """

    method: str | None
    target: str | None
    status: int | None
    reason: str | None
    version: str  # as sent: "HTTP/1.1", "HTTP/1.0", "HTTP/1." ... ("" if the line had none)
    headers: list[tuple[str, str]]  # raw order and case; trailers appended after the head's
    body: bytes  # de-chunked, at most max_body bytes, captured bytes only (gaps are not filled)
    body_size: int  # de-chunked body length on the wire, including bytes lost in gaps
    body_truncated: bool  # body holds less than body_size (max_body cap or capture gap)
    wire_size: int  # head + body bytes on the wire (chunk framing, trailers, lost bytes included)
    ts_first_ns: int  # time of the data that carried the first byte
    ts_last_ns: int  # time of the data that carried the last byte (or of the gap that ended it)
    error: str | None  # why the message is incomplete or malformed, None when it is whole
    anomalies: tuple[str, ...] = ()  # tolerated deviations (bare LF, obs-fold, ...)


class HttpStats(DissectorStats):
    """Counters shared by the connections of one pipeline (pass the same object to each)."""

    __slots__ = (
        "bytes_discarded",
        "exchanges_evicted",
        "waiting_bodies_cut",
        "waiting_body_bytes_dropped",
    )

    def __init__(self) -> None:
        # messages whose body was cut because waiting bodies reached max_pending_body
        self.waiting_bodies_cut = 0
        self.waiting_body_bytes_dropped = 0  # ... and the bytes not kept
        self.exchanges_evicted = 0  # pushed out early as pair-not-found by max_pending
        # bytes skipped while probing or resynchronising (capture gaps not included)
        self.bytes_discarded = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "waiting_bodies_cut": self.waiting_bodies_cut,
            "waiting_body_bytes_dropped": self.waiting_body_bytes_dropped,
            "exchanges_evicted": self.exchanges_evicted,
            "bytes_discarded": self.bytes_discarded,
        }


class Exchange(NamedTuple):
    """A request and its response; either may be None (then error is pair-not-found)."""

    request: Message | None
    response: Message | None
    # ("pair-not-found" | "dissection" | "connection" | "timeout", human-readable message)
    error: tuple[str, str] | None


_DEFAULT_LIMITS = HttpLimits()
# NamedTuple.__new__ is a Python function; tuple.__new__(Cls, values) builds the same object
# ~3x faster, which matters for two messages and one exchange per pair.
_new = tuple.__new__

# --- side states -----------------------------------------------------------------------------
_PROBE = 0  # roles unknown: looking for a request or status line
_HEAD = 1  # in sync, expecting a start line
_LEN = 2  # body with a known remaining length
_CSIZE = 3  # chunked: expecting a chunk-size line
_CDATA = 4  # chunked: inside chunk data
_CEND = 5  # chunked: expecting the CRLF after chunk data
_TRAILER = 6  # chunked: trailer fields until an empty line
_CLOSE = 7  # body delimited by the connection's end
_SYNC = 8  # framing lost: scanning for the next start line at a line start
_PAUSED = 9  # client side after an Upgrade/CONNECT request, waiting for the response
_DEAD = 10  # no more HTTP on this side

_REQ = 0
_RESP = 1

# Pairing-slot half states
_NONE = 0  # not seen yet
_OPEN = 1  # head seen, message in progress
_DONE = 2  # message complete
_LOST = 3  # will never be seen

# Strict start-line shapes: used to recognise HTTP and to resynchronise, never to parse.
_REQ_LINE = re.compile(
    rb"[A-Za-z][!#$%&'*+.^_`|~0-9A-Za-z-]{0,31} [^\x00-\x20\x7f]+ HTTP/1\.[0-9]?\r?\n"
)
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] [0-9]{3}[ \r\n]")
# A request line whose target holds spaces (attack traffic: "GET /x;cat /etc/passwd| HTTP/1.1"):
# not valid, but plainly a request when a known method starts it and a version ends it. It is
# recognised like a strict one (else an unanswered one would leave the connection "not HTTP"
# and vanish) and reported with a dissection error.
_SPACED_REQ_LINE = re.compile(
    rb"(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|PROPFIND) "
    rb"[^\x00-\x1f\x7f]+? HTTP/1\.[0-9]?\r?\n"
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
# Bounds on framing values, not on how many digits spell them (RFC 9110 8.6 and RFC 9112 7.1
# allow any number of leading zeros; a cap on the digits let a request smuggled behind
# "Content-Length: 000…050" go unseen). A larger value is invalid framing.
_MAX_LENGTH_DIGITS = 18  # Content-Length below 10**18 bytes
_MAX_CHUNK_DIGITS = 15  # chunk size below 16**15 bytes
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND"}
)
_MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer than this is malformed


_K = TypeVar("_K", str, bytes)
_V = TypeVar("_V")


class _Parsed(Generic[_K, _V]):
    """A bounded cache of parsed head text: what `_quick` parsed before, by the raw text.

    Heads repeat a great deal: a client polling a URL or a load generator sends the same head
    every time, a server answers with the same head for as long as its Date line stays the
    same (a second), and even heads that differ share most lines (Host, Server, Content-Type,
    Connection ...). A hit replaces decoding, splitting, checking and building tuples by one
    dict lookup, and the parsed tuples are shared between messages (they are immutable; the
    header list a Message gets is always its own). Only what `_quick` accepts is stored (a
    clean head: no bare LF, tab, folding or space before a colon; ordinary framing), so a hit
    needs no further check and the result never depends on what a cache holds.

    Bounded: keys longer than `max_key` are not stored, and when `max_items` are held the cache
    is emptied and refills with what is in use now (a Date line, for one, changes every
    second). The caches are module-wide: every connection profits from what any of them saw.
    """

    __slots__ = ("get", "items", "max_items", "max_key")

    def __init__(self, max_items: int, max_key: int) -> None:
        self.items: dict[_K, _V] = {}
        self.get: Callable[[_K], _V | None] = self.items.get  # the lookup, bound once
        self.max_items = max_items
        self.max_key = max_key

    def put(self, key: _K, parsed: _V) -> None:
        if len(key) <= self.max_key:
            items = self.items
            if len(items) >= self.max_items:
                items.clear()
            items[key] = parsed


# What _quick_head returns: method, target, status, reason, version, fields, length
# (length: the Content-Length, -2 chunked, -3 read until close; 0 for a request without either).
_QuickHead = tuple[
    str | None, str | None, int | None, str | None, str, tuple[tuple[str, str], ...], int
]


# The caches' bounds (see _Parsed): a few MB in all, whatever the traffic.
HEAD_CACHE_SIZE = 1024  # heads per cache (one for requests, one for responses)
HEAD_CACHE_KEY = 1024  # bytes: a longer head is parsed every time
LINE_CACHE_SIZE = 4096  # lines per cache (request lines, status lines, field lines)
LINE_CACHE_KEY = 256  # characters: a longer line is parsed every time

# Whole heads (the bytes before the blank line) → _quick_head()'s result.
_REQUEST_HEADS: _Parsed[bytes, _QuickHead] = _Parsed(HEAD_CACHE_SIZE, HEAD_CACHE_KEY)
_RESPONSE_HEADS: _Parsed[bytes, _QuickHead] = _Parsed(HEAD_CACHE_SIZE, HEAD_CACHE_KEY)
# Lines, for heads not seen whole before. "GET / HTTP/1.1" → ("GET", "/", "HTTP/1.1")
_REQUEST_LINES: _Parsed[str, tuple[str, str, str]] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)
# "HTTP/1.1 200 OK" → ("HTTP/1.1", 200, "OK")
_STATUS_LINES: _Parsed[str, tuple[str, int, str]] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)
# "Host: a" → ("Host", "a"); never Content-Length, Transfer-Encoding or Upgrade lines (framing
# reads those, so their lines are always parsed).
_FIELD_LINES: _Parsed[str, tuple[str, str]] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)


def _clean_start_line(line: str) -> bool:
    return "\n" not in line and "\t" not in line and " :" not in line


def _quick_request_line(line: str) -> tuple[str, str, str] | None:
    """A request line `_quick` may take: a known method (not CONNECT), HTTP/1.1 or 1.0."""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not _clean_start_line(line):
        return None
    method, target, version = parts
    if method not in _KNOWN_METHODS or method == "CONNECT" or not target or " " in target:
        return None
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        return None
    parsed = (method, target, version)
    _REQUEST_LINES.put(line, parsed)
    return parsed


def _quick_status_line(line: str) -> tuple[str, int, str] | None:
    """A status line `_quick` may take: HTTP/1.1 or 1.0, a final status (not 1xx)."""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not _clean_start_line(line):
        return None
    version, code, reason = parts
    if len(code) != 3 or not (code.isdigit() and code.isascii()) or code[0] == "1":
        return None  # interim and 101 responses take the general path
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        return None
    parsed = (version, int(code), reason)
    _STATUS_LINES.put(line, parsed)
    return parsed


def _quick_head(head: bytes | bytearray, is_req: bool) -> _QuickHead | None:
    """Parse a head (without its blank line) the way `_quick` may take it, else None.

    None means the head needs `HttpConnection._head`: a start line or field it does not
    accept, an anomaly to record (bare LF, folding, odd spacing), or framing that is not
    plain (both Content-Length and chunked, a bad or repeated Content-Length, Upgrade, a
    Transfer-Encoding other than chunked).
    """
    lines = head.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if is_req:
        start = _REQUEST_LINES.get(first) or _quick_request_line(first)
        if start is None:
            return None
        method, target, version = start
        status = None
        reason = None
    else:
        response = _STATUS_LINES.get(first) or _quick_status_line(first)
        if response is None:
            return None
        version, status, reason = response
        method = None
        target = None
    fields: list[tuple[str, str]] = []
    append = fields.append
    cl: str | None = None
    chunked = False
    known = _FIELD_LINES.get
    for j in range(1, len(lines)):
        line = lines[j]
        pair = known(line)
        if pair is None:
            # Not seen before (or a framing field, never cached): check and parse it here.
            if "\n" in line or "\t" in line or " :" in line or line[:1] == " ":
                return None  # bare LF, folding or odd spacing: anomalies to record
            name, colon, value = line.partition(":")
            if not colon or not name:
                return None
            pair = (name, value.strip())
            ln = len(name)
            low = name.lower() if ln == 14 or ln == 17 or ln == 7 else ""
            if low == "content-length":
                if cl is not None:
                    return None
                cl = pair[1]
            elif low == "transfer-encoding":
                if chunked or pair[1].lower() != "chunked":
                    return None
                chunked = True
            elif low == "upgrade":
                return None
            else:
                _FIELD_LINES.put(line, pair)
        append(pair)
    if chunked:
        if cl is not None:
            return None  # both: an anomaly to record
        length = -2
    elif cl is not None:
        if not (cl.isdigit() and cl.isascii() and len(cl) <= 18) or (cl[0] == "0" and len(cl) > 1):
            return None  # leading zeros: an anomaly the general path records
        length = int(cl)
    else:
        length = 0 if is_req else -3  # a response without length reads until close
    return method, target, status, reason, version, tuple(fields), length


class _Txn:
    """One pairing slot: the n-th request and the n-th final response.

    A plain class with class-level defaults: one is made per exchange, and an instance only
    stores the attributes that differ from the defaults.
    """

    req: Message | None = None
    resp: Message | None = None
    req_st = _NONE
    resp_st = _NONE
    req_err = ""  # error type of the request message ("" when none)
    resp_err = ""
    method: str | None = None  # request method, known from the request head
    req_ts = 0  # ts_first_ns of the request / response, for realignment after gaps
    resp_ts = 0
    note = ""  # why a half is missing, for the pair-not-found message
    detached = False  # not in the pending deque (evicted, or emitted on its own)
    emitted = False  # a detached slot's exchange is out: later completions are dropped


_DETACHED = _Txn()  # placeholder slot of a message not yet assigned
_DETACHED.detached = True
_DETACHED.emitted = True


class _Msg:
    """A message being assembled (plain class with defaults, like _Txn)."""

    parts: list[bytes | bytearray] | None = None
    kept = 0  # body bytes in parts
    size = 0  # de-chunked body bytes so far, lost ones included
    lost = 0  # body bytes lost in capture gaps
    remaining = 0  # of the body (or the current chunk)
    trailer_bytes = 0
    wire = 0
    ts_first = 0
    ts_last = 0
    error: str | None = None
    err_type = ""
    # request: pause the client side after it (Upgrade/CONNECT);
    # response: HTTP ends after it (101, CONNECT 2xx)
    switch = False
    txn = _DETACHED

    def __init__(
        self,
        is_req: bool,
        method: str | None,
        target: str | None,
        status: int | None,
        reason: str | None,
        version: str,
    ) -> None:
        self.is_req = is_req
        self.method = method
        self.target = target
        self.status = status
        self.reason = reason
        self.version = version
        self.headers: list[tuple[str, str]]  # set by _fields
        self.anomalies: list[str] | None = None


class _Side:
    """Parser state for one direction."""

    __slots__ = ("buf", "fresh", "gap_pending", "marks", "msg", "role", "state")

    def __init__(self) -> None:
        self.buf = bytearray()  # bytes carried over between data() calls (partial lines only)
        # (offset in buf, ts) for each data chunk held in buf, so a message starting in an
        # earlier chunk gets that chunk's time.
        self.marks: list[tuple[int, int]] = []
        self.state = _PROBE
        self.role = -1  # _REQ or _RESP once learnt
        self.msg: _Msg | None = None
        self.fresh = True  # nothing discarded and no gap yet: buf starts at the stream's start
        self.gap_pending = False  # bytes lost or skipped since the last message head here


# Makes the dissector an HTTP/1.1 `Upgrade` (or a CONNECT tunnel) hands the connection over to:
# (the upgrade or CONNECT request, None if it was not captured; the 101 or 2xx response; the
# client's side) → the successor. Upgrades are registered per token (lower case, e.g. "h2c") by
# capture/dissectors.py, which also makes the tunnel's (content detection).
UpgradeFactory: TypeAlias = "Callable[[Message | None, Message, int], TcpDissector]"


class HttpConnection(TcpDissector):
    """HTTP/1.x dissector and pairer for one TCP connection (see the module docstring)."""

    def __init__(
        self,
        limits: HttpLimits = _DEFAULT_LIMITS,
        stats: HttpStats | None = None,
        upgrades: Mapping[str, UpgradeFactory] | None = None,
        tunnel: UpgradeFactory | None = None,
    ) -> None:
        super().__init__("http")
        self.limits = limits
        self.stats = HttpStats() if stats is None else stats
        self._upgrades = upgrades
        self._tunnel = tunnel  # what a CONNECT answered 2xx hands the connection over to
        self._sides = (_Side(), _Side())
        self._txns: deque[_Txn] = deque()
        self._base = 0  # absolute index of _txns[0]
        self._req_next = 0  # absolute index of the next request's slot
        self._resp_next = 0  # absolute index of the next final response's slot
        self._pipelined = False  # a request was seen before the previous response ended
        self._paused: _Txn | None = None  # slot of the Upgrade/CONNECT request being waited on
        self._probe_budget = limits.max_probe
        # limits read by _quick for every message (limits is frozen)
        self._max_head = limits.max_head
        self._max_body = limits.max_body
        self._max_pending = limits.max_pending

    # ------------------------------------------------------------------ public API

    def entry_maker(
        self, conn: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        # decoded bodies are bounded like wire bodies (--max-body)
        return EntryBuilder(
            conn, self.client_side or 0, identity, stream, max_decoded, self.limits.max_body
        )

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        if not self.active or not data:
            return
        s = self._sides[side]
        buf = s.buf
        if buf or s.state == _PAUSED:
            cur = len(buf)
            buf += data
            s.marks.append((cur, ts_ns))
            if s.state == _PAUSED:
                if len(buf) > self.limits.max_head:
                    self._unpause(s, side)
                return
            self._consume(s, self._parse(s, side, buf, cur, ts_ns), buf)
        else:
            # Fast path: nothing carried over, parse the caller's bytes in place. Most data
            # starts with a head and holds one whole message: `_quick` takes it all at once.
            n = len(data)
            pos = self._quick(s, data, 0, n, ts_ns) if s.state == _HEAD else -1
            if pos == n:
                return  # roles are known in _HEAD: no probe budget to count
            pos = self._parse(s, side, data, 0, ts_ns, pos if pos > 0 else 0)
            if pos < n and s.state != _DEAD:
                buf += memoryview(data)[pos:]
                s.marks = [(0, ts_ns)]
        if self.client_side is None:
            self._probe_budget -= len(data)
            if self._probe_budget < 0 and self.active:
                self._stop()  # nothing HTTP-like in max_probe bytes: not HTTP

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        if not self.active or length <= 0:
            return
        s = self._sides[side]
        s.fresh = False
        st = s.state
        m = s.msg
        if m is not None:
            if st == _CLOSE or (st in (_LEN, _CDATA) and length <= m.remaining):
                # Lost inside a body of known extent: count the bytes, keep the framing.
                m.lost += length
                m.size += length
                m.wire += length
                if st != _CLOSE:
                    m.remaining -= length
                    if m.remaining == 0:
                        m.ts_last = ts_ns
                        if st == _LEN:
                            s.state = _HEAD
                            self._finish(s, m)
                        else:
                            s.state = _CEND
                return
            m.ts_last = ts_ns
            if st == _LEN:
                # The gap runs past the body's end: the body is complete (minus lost bytes),
                # but where the next message starts is unknown.
                m.lost += m.remaining
                m.size += m.remaining
                m.wire += m.remaining
                m.remaining = 0
            else:
                self._fail(m, "chunked framing lost in a capture gap")
            s.state = _SYNC
            self._finish(s, m)
        elif st == _HEAD and s.buf:
            self._partial_head(s, "message head cut by a capture gap", "dissection", ts_ns)
        # Framing is lost from here: whole messages may have vanished in the gap.
        s.gap_pending = True
        if s.buf:
            self.stats.bytes_discarded += len(s.buf)
            s.buf.clear()
            s.marks.clear()
        if s.state == _HEAD:
            s.state = _SYNC

    def end(self, reason: str, ts_ns: int) -> None:
        if not self.active:
            return
        etype = "timeout" if reason == "timeout" else "connection"
        for s in self._sides:
            m = s.msg
            st = s.state
            if m is not None:
                if st != _CLOSE or reason != "fin":
                    what = "request" if m.is_req else "response"
                    if st == _CLOSE:
                        detail = f"before the close-delimited {what} body ended"
                    elif st == _LEN:
                        detail = f"in the {what} body ({m.size} of {m.size + m.remaining} bytes)"
                    else:
                        detail = f"in the chunked {what} body ({m.size} bytes)"
                    m.error = f"connection ended ({reason}) {detail}"
                    m.err_type = etype
                s.state = _DEAD
                self._finish(s, m)
            elif st == _HEAD and s.buf.strip():
                self._partial_head(
                    s, f"connection ended ({reason}) in a message head", etype, ts_ns
                )
            s.state = _DEAD
            s.buf = bytearray()
            s.marks = []
        self._flush(f"connection ended ({reason})")
        self.active = False

    # ------------------------------------------------------------------ parsing

    def _consume(self, s: _Side, pos: int, buf: bytearray) -> None:
        """Drop the first pos bytes of the carried-over buffer (and their time marks)."""
        if s.buf is not buf:  # the side was reset while parsing (protocol switch, not HTTP)
            return
        if pos >= len(buf):
            buf.clear()
            s.marks.clear()
        elif pos:
            del buf[:pos]
            keep = [(0, s.marks[0][1])]
            for off, t in s.marks:
                if off <= pos:
                    keep[0] = (0, t)
                else:
                    keep.append((off - pos, t))
            s.marks = keep

    def _parse(
        self, s: _Side, side: int, buf: bytes | bytearray, cur: int, ts: int, pos: int = 0
    ) -> int:
        """Consume what can be consumed of buf from pos; returns the offset of the first unused
        byte.

        Bytes at offsets >= cur arrived with the current data (time `ts`); earlier ones were
        carried over in s.buf and have their times in s.marks.
        """
        n = len(buf)
        max_body = self.limits.max_body
        while pos < n:
            st = s.state
            if st == _HEAD:
                r = self._quick(s, buf, pos, n, ts) if pos >= cur else -1
                if r < 0:
                    r = self._head(s, buf, pos, cur, ts)
                    if r < 0:
                        break
                pos = r
            elif st in (_LEN, _CDATA, _CLOSE):
                m = s.msg
                assert m is not None
                take = n - pos if st == _CLOSE or m.remaining > n - pos else m.remaining
                room = max_body - m.kept
                if room > 0:
                    piece = buf[pos : pos + (take if take <= room else room)]
                    if m.parts is None:
                        m.parts = [piece]
                    else:
                        m.parts.append(piece)
                    m.kept += len(piece)
                pos += take
                m.size += take
                m.wire += take
                m.ts_last = ts if pos > cur else self._ts_at(s, pos - 1)
                if st != _CLOSE:
                    m.remaining -= take
                    if m.remaining == 0:
                        if st == _LEN:
                            s.state = _HEAD
                            self._finish(s, m)
                        else:
                            s.state = _CEND
            elif st == _CSIZE:
                r = self._chunk_size(s, buf, pos, cur, ts)
                if r < 0:
                    break
                pos = r
            elif st == _CEND:
                m = s.msg
                assert m is not None
                c = buf[pos]
                if c == 13:
                    if pos + 1 >= n:
                        break
                    if buf[pos + 1] == 10:
                        pos += 2
                        m.wire += 2
                    else:
                        self._anomaly(m, "chunk data not followed by CRLF")
                elif c == 10:
                    pos += 1
                    m.wire += 1
                    self._anomaly(m, "bare LF in chunked framing")
                else:
                    self._anomaly(m, "chunk data not followed by CRLF")
                s.state = _CSIZE
            elif st == _TRAILER:
                r = self._trailer(s, buf, pos, cur, ts)
                if r < 0:
                    break
                pos = r
            elif st in (_SYNC, _PROBE):
                r = self._scan(s, side, buf, pos)
                if r < 0:
                    pos = n + r + 1  # keep the last -r-1 bytes: a line that may become a start line
                    break
                pos = r
            else:  # _PAUSED: hold bytes until the response decides; _DEAD: drop them
                if st == _DEAD:
                    return n
                break
            if not self.active:
                succ = self.successor
                if succ is not None and pos < n:  # what followed the 101 (e.g. HTTP/2 frames)
                    succ.data(side, bytes(buf[pos:n]), ts if pos >= cur else self._ts_at(s, pos))
                return n
        return pos

    def _ts_at(self, s: _Side, p: int) -> int:
        t = 0
        for off, mt in s.marks:
            if off > p:
                break
            t = mt
        return t

    def _quick(self, s: _Side, buf: bytes | bytearray, pos: int, n: int, ts: int) -> int:
        """The common case in one function: a clean head, ordinary framing, in-order pairing.

        Returns the offset after what it consumed, or -1 to let `_head` (which handles every
        case) do it; it gives up before changing any state, so the result is the same either
        way (the split-invariance tests compare the two). All bytes are from the current data.
        A head seen before comes parsed from a cache (see `_Parsed`).
        """
        txns = self._txns
        is_req = s.role == _REQ
        if s.gap_pending:
            return -1
        if is_req:
            k = self._req_next - self._base
            if k != len(txns) or k >= self._max_pending:
                return -1  # a response came first, or eviction is due
            t = None
        else:
            k = self._resp_next - self._base
            if not 0 <= k < len(txns):
                return -1
            t = txns[k]
        i = buf.find(b"\r\n\r\n", pos, pos + self._max_head)
        if i < 0:
            return -1
        head = buf[pos:i]
        heads = _REQUEST_HEADS if is_req else _RESPONSE_HEADS
        # (a bytearray, from data carried over, cannot be a key)
        parsed = heads.get(head) if type(head) is bytes else None
        if parsed is None:
            parsed = _quick_head(head, is_req)
            if parsed is None:
                return -1
            if type(head) is bytes:
                heads.put(head, parsed)
        method, target, status, reason, version, fields, length = parsed
        headers = list(fields)  # each message its own list (trailers are appended to it)
        hend = i + 4
        if t is not None:
            if t.method == "CONNECT":
                return -1
            if t.method == "HEAD" or status == 204 or status == 304:
                length = 0
        # From here on the message is this function's.
        if t is None:
            t = _Txn()
            txns.append(t)
            self._req_next += 1
            t.method = method
            t.req_ts = ts
        else:
            self._resp_next += 1
            t.resp_ts = ts
        end = hend + length
        if length < 0 or end > n:  # the body continues past this data: stream it
            m = _Msg(is_req, method, target, status, reason, version)
            m.headers = headers
            m.wire = hend - pos
            m.ts_first = m.ts_last = ts
            m.txn = t
            s.msg = m
            if length == -2:
                s.state = _CSIZE
            elif length == -3:
                s.state = _CLOSE
            else:
                m.remaining = length
                s.state = _LEN
            if is_req:
                t.req_st = _OPEN
            else:
                t.resp_st = _OPEN
            return hend
        keep = self._max_body
        body = buf[hend : end if length <= keep else hend + keep] if length else b""
        if type(body) is not bytes:
            body = bytes(body)
        msg = _new(
            Message,
            (
                method, target, status, reason, version, headers, body, length,
                len(body) < length, end - pos, ts, ts, None, (),
            ),
        )  # fmt: skip
        if is_req:
            if body and len(txns) > 1:
                msg = self._fit_waiting(msg)
            t.req = msg
            t.req_st = _DONE  # its slot is new: no response to pair with yet
            return end
        if body and len(txns) > 1 and (k or t.req_st < _DONE):
            msg = self._fit_waiting(msg)  # it waits: for its request, or for earlier exchanges
        t.resp = msg
        t.resp_st = _DONE
        if not self._pipelined and k + 1 < len(txns) and txns[k + 1].req_st != _NONE:
            self._pipelined = True  # the next request was sent before this response ended
        if self._paused is t and self.client_side is not None:
            self._unpause(self._sides[self.client_side], self.client_side)
        if k == 0 and t.req_st >= _DONE:
            txns.popleft()
            self._base += 1
            req = t.req
            assert req is not None
            # The usual exchange, built here; _exchange words the errors of the others.
            self.exchanges.append(
                _new(Exchange, (req, msg, None)) if req.error is None else self._exchange(t)
            )
            if txns:
                self._emit()
        return end

    def _head(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> int:
        n = len(buf)
        c = buf[pos]
        if c == 13 or c == 10:  # empty lines before a message are ignored (RFC 9112 2.2)
            while pos < n and buf[pos] in b"\r\n":
                pos += 1
            if pos >= n:
                return n
        max_head = self.limits.max_head
        anomalies: list[str] | None = None
        lines: list[str] | None = None
        text = ""
        hend = -1
        stop = pos + max_head + 4  # never search (or decode) further than a head may reach
        i = buf.find(b"\r\n\r\n", pos, stop)
        if i >= 0:  # the usual shape: CRLF line endings only
            text = buf[pos:i].decode("utf-8", "replace")
            lines = text.split("\r\n")
            if text.count("\n") == len(lines) - 1:
                hend = i + 4
            else:
                lines = None  # a bare LF somewhere: the head may end earlier
        if lines is None:
            i = buf.find(b"\n\r\n", pos, stop)
            j = buf.find(b"\n\n", pos, stop if i < 0 else i + 1)
            if j >= 0:
                end, hend = j, j + 2
            elif i >= 0:
                end, hend = i, i + 3
            else:
                k = buf.find(b"\n", pos)
                if k >= 0 and self._bad_start(s, buf, pos, k):
                    return self._not_a_head(s, buf, pos, k)
                if n - pos > max_head:
                    self._head_error(s, buf, pos, cur, ts)
                    return self._not_a_head(s, buf, pos, k)
                return -1
            text = buf[pos:end].decode("utf-8", "replace")
            if text[-1:] == "\r":
                text = text[:-1]
            lines = [ln[:-1] if ln[-1:] == "\r" else ln for ln in text.split("\n")]
            if j >= 0 or text.count("\n") != text.count("\r\n"):
                anomalies = ["bare LF line endings"]
        if hend - pos > max_head:
            self._head_error(s, buf, pos, cur, ts)
            return self._not_a_head(s, buf, pos, buf.find(b"\n", pos))
        if s.role == _REQ:
            m, cl, te = self._request(lines, anomalies, text)
        else:
            r, cl, te = self._response(lines, anomalies, text)
            if r is None:  # interim 1xx: consumed, never paired
                return hend
            m = r
        if m.error is not None and not self._plausible(s, buf, pos):
            return self._not_a_head(s, buf, pos, buf.find(b"\n", pos))
        m.wire = hend - pos
        m.ts_first = ts if pos >= cur else self._ts_at(s, pos)
        m.ts_last = ts if hend > cur else self._ts_at(s, hend - 1)
        self._start(s, m, cl, te)
        if s.state == _LEN and hend + m.remaining <= n:
            # The whole body is already here: take it in one slice.
            size = m.remaining
            end = hend + size
            keep = self.limits.max_body
            m.parts = [buf[hend : end if size <= keep else hend + keep]]
            m.kept = size if size <= keep else keep
            m.size = size
            m.wire += size
            m.remaining = 0
            m.ts_last = ts if end > cur else self._ts_at(s, end - 1)
            s.state = _HEAD
            self._finish(s, m)
            return end
        return hend

    def _not_a_head(self, s: _Side, buf: bytes | bytearray, pos: int, k: int) -> int:
        """The bytes at pos cannot start a message: skip that line and resynchronise."""
        s.msg = None
        s.state = _SYNC
        nxt = len(buf) if k < 0 else k + 1
        self._skip(s, nxt - pos)
        return nxt

    def _bad_start(self, s: _Side, buf: bytes | bytearray, pos: int, k: int) -> bool:
        """While a head is incomplete: would its (complete) first line be rejected once it is?

        The same test as for a complete head (a start line that does not parse and is not even
        plausible), so that where a packet boundary falls never changes the outcome.
        """
        if (_REQ_LINE if s.role == _REQ else _STATUS_LINE).match(buf, pos):
            return False  # a well-formed start line (the usual head cut by a packet boundary)
        if s.role == _REQ and _SPACED_REQ_LINE.match(buf, pos):
            return False
        line = buf[pos:k].decode("utf-8", "replace")
        if line[-1:] == "\r":
            line = line[:-1]
        if s.role == _REQ:
            m: _Msg | None = self._request([line], None, "\t")[0]
        else:
            m = self._response([line], None, "\t")[0]
        return m is not None and m.error is not None and not self._plausible(s, buf, pos)

    def _plausible(self, s: _Side, buf: bytes | bytearray, pos: int) -> bool:
        """Could the line at pos start a (possibly malformed) message of s's role?"""
        limit = pos + self.limits.max_head
        k = buf.find(b"\n", pos, limit)
        line = buf[pos : k if k >= 0 else limit]
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line or _CTL.search(line):
            return False
        if s.role == _RESP:
            return line[:5] == b"HTTP/"
        return line[:1] not in b" \t"

    @staticmethod
    def _fields(
        m: _Msg, lines: list[str], anomalies: list[str] | None, text: str
    ) -> tuple[list[str] | None, str | None]:
        """Parse field lines into m.headers; returns (Content-Length values, Transfer-Encoding)."""
        cl: list[str] | None = None
        te: str | None = None
        if len(lines) < 2:
            m.headers = []
            m.anomalies = anomalies
            return cl, te
        if anomalies is None and "\n " not in text and " :" not in text and "\t" not in text:
            # Fast path: no folding, no whitespace around names (checked on the whole head).
            # One plain loop: cheaper than comprehensions here (measured ~2x).
            headers: list[tuple[str, str]] = []
            append = headers.append
            for k in range(1, len(lines)):
                name, colon, value = lines[k].partition(":")
                if not colon or not name:
                    break  # a line without a name: the careful loop below reports it
                value = value.strip()
                append((name, value))
                ln = len(name)
                if ln == 14 or ln == 17 or ln == 7:
                    low = name.lower()
                    if low == "content-length":
                        if cl is None:
                            cl = [value]
                        else:
                            cl.append(value)
                    elif low == "transfer-encoding":
                        te = value if te is None else f"{te}, {value}"
                    elif low == "upgrade" and m.is_req:
                        m.switch = True
            else:
                m.headers = headers
                return cl, te
            cl = None
            te = None
            m.switch = False
        headers = m.headers = []
        unfolded = False
        for k in range(1, len(lines)):
            line = lines[k]
            i = line.find(":")
            c = line[:1]
            if i <= 0 or c == " " or c == "\t":
                if (c == " " or c == "\t") and headers:
                    name, value = headers[-1]
                    folded = line.strip()
                    headers[-1] = (name, f"{value} {folded}" if value else folded)
                    anomalies = _add(anomalies, "obs-fold continuation line")
                    unfolded = True
                elif line.strip():
                    anomalies = _add(anomalies, f"field line without a name: {line[:64]!r}")
                continue
            name = line[:i]
            value = line[i + 1 :].strip()
            if name[-1] == " " or name[-1] == "\t":
                name = name.rstrip()
                anomalies = _add(anomalies, f"whitespace before the colon of {name!r}")
            headers.append((name, value))
            ln = len(name)
            if ln == 14 or ln == 17 or ln == 7:
                low = name.lower()
                if low == "content-length":
                    if cl is None:
                        cl = [value]
                    else:
                        cl.append(value)
                elif low == "transfer-encoding":
                    te = value if te is None else f"{te}, {value}"
                elif low == "upgrade" and m.is_req:
                    m.switch = True
        if unfolded:
            # RFC 9112 5.2: obs-fold is replaced by a space before the value is interpreted
            # (what a server that accepts it, and Zeek, do): framing reads the unfolded values,
            # so `Transfer-Encoding:\r\n chunked` is chunked.
            cl = None
            te = None
            for name, value in headers:
                low = name.lower()
                if low == "content-length":
                    cl = [value] if cl is None else [*cl, value]
                elif low == "transfer-encoding":
                    te = value if te is None else f"{te}, {value}"
        m.anomalies = anomalies
        return cl, te

    def _request(
        self, lines: list[str], anomalies: list[str] | None, text: str
    ) -> tuple[_Msg, list[str] | None, str | None]:
        line = lines[0]
        parts = line.split(" ")
        errors: list[str] | None = None
        if len(parts) == 3 and parts[2][:7] == "HTTP/1." and parts[1]:
            method, target, version = parts
            if len(version) != 8:
                anomalies = _add(anomalies, f"odd HTTP version {version!r}")
        else:
            method, _, rest = line.partition(" ")
            rest = rest.strip()
            head, _, last = rest.rpartition(" ")
            if last[:5] == "HTTP/":
                target, version = head.strip(), last
            else:
                target, version = rest, ""
                errors = _add(errors, "request line without an HTTP version")
            if not target:
                errors = _add(errors, "request line without a target")
            elif " " in target or "\t" in target:
                errors = _add(errors, "whitespace inside the request target")
            if version and version[:7] != "HTTP/1.":
                errors = _add(errors, f"unsupported HTTP version {version[:20]!r}")
            elif version and len(version) != 8:
                anomalies = _add(anomalies, f"odd HTTP version {version!r}")
            if len(parts) > 3 and not errors:
                anomalies = _add(anomalies, "extra whitespace in the request line")
        if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
            errors = _add(errors, f"invalid method {method[:40]!r}")
        m = _Msg(True, method, target, None, None, version)
        if method == "CONNECT":
            m.switch = True
        if errors:
            m.error = f"malformed request line {line[:120]!r}: {', '.join(errors)}"
            m.err_type = "dissection"
        cl, te = self._fields(m, lines, anomalies, text)
        return m, cl, te

    def _response(
        self, lines: list[str], anomalies: list[str] | None, text: str
    ) -> tuple[_Msg | None, list[str] | None, str | None]:
        line = lines[0]
        parts = line.split(" ", 2)
        error = None
        status = 0
        reason = ""
        code = parts[1] if len(parts) >= 2 else ""
        if len(code) != 3 or not (code.isdigit() and code.isascii()):
            p = line.split(None, 2)
            code = p[1] if len(p) >= 2 else ""
            if len(code) == 3 and code.isdigit() and code.isascii():
                parts = p
                anomalies = _add(anomalies, "extra whitespace in the status line")
            else:
                error = f"malformed status line {line[:120]!r}"
        if error is None:
            status = int(code)
            if len(parts) == 3:
                reason = parts[2]
            else:
                anomalies = _add(anomalies, "status line without a reason phrase")
        version = parts[0]
        if error is None:
            if version[:7] != "HTTP/1.":
                error = f"unsupported HTTP version {version[:20]!r}"
            elif len(version) != 8:
                anomalies = _add(anomalies, f"odd HTTP version {version!r}")
            elif 100 <= status < 200 and status != 101:
                return None, None, None  # interim response (100 Continue, 103 Early Hints)
        m = _Msg(False, None, None, status, reason, version)
        if error is not None:
            m.error = error
            m.err_type = "dissection"
        cl, te = self._fields(m, lines, anomalies, text)
        return m, cl, te

    def _start(self, s: _Side, m: _Msg, cl: list[str] | None, te: str | None) -> None:
        """A head was parsed: give the message its slot and choose the body framing."""
        s.msg = m
        if m.is_req:
            self._assign_request(s, m)
        else:
            t = self._assign_response(s, m)
            if m.error is not None:  # unparsable status line: framing unknown
                s.state = _SYNC
                self._finish(s, m)
                return
            status = m.status
            assert status is not None
            if status == 101 or (t.method == "CONNECT" and 200 <= status < 300):
                m.switch = True
                s.state = _HEAD
                self._finish(s, m)
                return
            if t.method == "HEAD" or status == 204 or status == 304:
                s.state = _HEAD
                self._finish(s, m)
                return
        if te is not None:
            if te.rsplit(",", 1)[-1].strip().lower() == "chunked":
                if cl is not None:
                    self._anomaly(
                        m, "Transfer-Encoding and Content-Length both present: chunked wins"
                    )
                s.state = _CSIZE
            elif m.is_req:  # RFC 9112 6.3: the request's length cannot be determined
                self._fail(m, f"request Transfer-Encoding {te[:40]!r} does not end in chunked")
                s.state = _SYNC
                self._finish(s, m)
            else:  # a response whose final coding is not chunked is read until close
                s.state = _CLOSE
            return
        if cl is not None:
            v = cl[0]
            if (
                len(cl) == 1
                and v.isdigit()
                and v.isascii()
                and len(v) <= _MAX_LENGTH_DIGITS
                and (v[0] != "0" or len(v) == 1)
            ):
                length = int(v)  # the common case, without a call
            else:
                length = self._content_length(m, cl)
            if length < 0:
                s.state = _SYNC
                self._finish(s, m)
            elif length:
                m.remaining = length
                s.state = _LEN
            else:
                s.state = _HEAD
                self._finish(s, m)
            return
        if m.is_req:
            s.state = _HEAD
            self._finish(s, m)
        else:
            s.state = _CLOSE

    def _content_length(self, m: _Msg, values: list[str]) -> int:
        """The Content-Length, or -1 (message failed) when it cannot frame the body.

        Any number of digits is valid (leading zeros are recorded as an anomaly); the value is
        what must stay below 10**18. The same value repeated (list or fields) is accepted, as
        RFC 9110 8.6 allows; different values are invalid."""
        seen: set[str] = set()
        zeros = False
        for value in values:
            for v in value.split(","):
                v = v.strip()
                if v.isdigit() and v.isascii():
                    digits = v.lstrip("0") or "0"
                    zeros = zeros or len(digits) < len(v)
                    v = digits
                seen.add(v)
        if len(seen) == 1:
            v = seen.pop()
            if v.isdigit() and v.isascii() and len(v) <= _MAX_LENGTH_DIGITS:
                if len(values) > 1 or "," in values[0]:
                    self._anomaly(m, "repeated Content-Length")
                if zeros:
                    self._anomaly(m, "Content-Length with leading zeros")
                return int(v)
        self._fail(m, f"invalid Content-Length {', '.join(values)[:60]!r}")
        return -1

    def _chunk_size(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> int:
        m = s.msg
        assert m is not None
        k = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
        if k < 0:
            if len(buf) - pos >= _MAX_CHUNK_LINE:
                self._fail(m, "chunk-size line too long")
                s.state = _SYNC
                self._finish(s, m)
                return pos
            return -1
        line = buf[pos:k]
        size_text = line.split(b";", 1)[0].strip()
        if _HEX.fullmatch(size_text):
            size_text = size_text.lstrip(b"0") or b"0"  # any number of digits: bound the value
        if len(size_text) > _MAX_CHUNK_DIGITS or not _HEX.fullmatch(size_text):
            self._fail(m, f"bad chunk size line {bytes(line[:40])!r}")
            s.state = _SYNC
            self._finish(s, m)
            return pos  # the line itself may be the next start line
        if line[-1:] != b"\r":
            self._anomaly(m, "bare LF in chunked framing")
        m.wire += k + 1 - pos
        m.ts_last = ts if k >= cur else self._ts_at(s, k)
        size = int(size_text, 16)
        if size:
            m.remaining = size
            s.state = _CDATA
        else:
            s.state = _TRAILER
        return k + 1

    def _trailer(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> int:
        m = s.msg
        assert m is not None
        k = buf.find(b"\n", pos)
        if k < 0:
            if len(buf) - pos + m.trailer_bytes > self.limits.max_head:
                self._fail(m, f"trailer section longer than max_head ({self.limits.max_head})")
                s.state = _SYNC
                self._finish(s, m)
                return len(buf)
            return -1
        m.wire += k + 1 - pos
        m.trailer_bytes += k + 1 - pos
        m.ts_last = ts if k >= cur else self._ts_at(s, k)
        if m.trailer_bytes > self.limits.max_head:
            self._fail(m, f"trailer section longer than max_head ({self.limits.max_head})")
            s.state = _SYNC
            self._finish(s, m)
            return k + 1
        line = buf[pos:k].decode("utf-8", "replace")
        if line[-1:] == "\r":
            line = line[:-1]
        if not line:
            s.state = _HEAD
            self._finish(s, m)
            return k + 1
        name, colon, value = line.partition(":")
        if colon and name.strip():
            m.headers.append((name.strip(), value.strip()))
        else:
            self._anomaly(m, f"malformed trailer line {line[:64]!r}")
        return k + 1

    def _scan(self, s: _Side, side: int, buf: bytes | bytearray, pos: int) -> int:
        """Find the next start line (PROBE: either kind; SYNC: the side's role).

        Returns its offset (the side is then in HEAD), or -1-k to keep only the last k bytes (a
        partial line that may still grow into a start line); skipped bytes are discarded.
        """
        n = len(buf)
        if s.state == _PROBE:
            if s.fresh:
                while pos < n and buf[pos] in b"\r\n":  # blank lines before the first message
                    pos += 1
                if pos >= n:
                    return n
                # At the start of the stream the first line decides (a status or request line);
                # wait until it is complete.
                if _REQ_LINE.match(buf, pos) or _SPACED_REQ_LINE.match(buf, pos):
                    self._learn_roles(side, _REQ)
                    return pos
                if _STATUS_LINE.match(buf, pos):
                    self._learn_roles(side, _RESP)
                    return pos
                if buf.find(b"\n", pos) < 0 and n - pos <= self.limits.max_head:
                    return -1 - (n - pos)
            found, role = self._find_start(buf, pos, -1)
            if found >= 0:
                self._skip(s, found - pos)
                if self.active:
                    self._learn_roles(side, role)
                return found
            if s.fresh and n - pos <= self.limits.max_head:
                # Perhaps a malformed request: the other side's first line will tell. Keep it.
                return -1 - (n - pos)
        else:
            found, _ = self._find_start(buf, pos, s.role)
            if found >= 0:
                self._skip(s, found - pos)
                s.state = _HEAD
                return found
        # Nothing found: keep the last partial line if it could still grow into a start line.
        k = buf.rfind(b"\n", pos)
        keep_from = pos if k < 0 else k + 1
        if n - keep_from > self.limits.max_head:
            keep_from = n
        self._skip(s, keep_from - pos)
        return -1 - (n - keep_from)

    @staticmethod
    def _find_start(buf: bytes | bytearray, pos: int, role: int) -> tuple[int, int]:
        """Offset and role of the first strict start line at a line start (pos counts as one)."""
        best = -1
        best_role = -1
        if role != _REQ:
            i = buf.find(b"HTTP/1.", pos)
            while i >= 0:
                if (i == pos or buf[i - 1] == 10) and _STATUS_LINE.match(buf, i):
                    best, best_role = i, _RESP
                    break
                i = buf.find(b"HTTP/1.", i + 1)
        if role != _RESP:
            stop = best if best >= 0 else len(buf)
            i = buf.find(b" HTTP/1.", pos, stop)
            while i >= 0:
                ls = buf.rfind(b"\n", pos, i) + 1
                if _REQ_LINE.match(buf, ls or pos) or _SPACED_REQ_LINE.match(buf, ls or pos):
                    return ls or pos, _REQ
                i = buf.find(b" HTTP/1.", i + 1, stop)
        return best, best_role

    def _skip(self, s: _Side, count: int) -> None:
        if count <= 0:
            return
        self.stats.bytes_discarded += count
        s.fresh = False
        s.gap_pending = True

    def _learn_roles(self, side: int, role: int) -> None:
        client = side if role == _REQ else 1 - side
        self.client_side = client
        for k in (0, 1):
            self._sides[k].role = _REQ if k == client else _RESP
        self._sides[side].state = _HEAD
        other = self._sides[1 - side]
        if other.state == _PROBE:
            other.state = _HEAD if other.fresh else _SYNC
            if other.buf:
                self._reparse(other, 1 - side)

    def _reparse(self, s: _Side, side: int) -> None:
        """Parse bytes already held in s.buf (after roles were learnt or a pause ended)."""
        buf = s.buf
        if buf:
            self._consume(s, self._parse(s, side, buf, len(buf) + 1, 0), buf)

    def _stop(self) -> None:
        """No more HTTP on this connection (not HTTP, or the protocol switched)."""
        self.active = False
        for s in self._sides:
            s.state = _DEAD
            s.msg = None
            s.buf = bytearray()
            s.marks = []

    def _head_error(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> None:
        """A head longer than max_head: report what it starts with as a failed message."""
        if self._plausible(s, buf, pos):
            self._fragment(
                s,
                buf[pos : pos + self.limits.max_head],
                f"message head longer than max_head ({self.limits.max_head} bytes)",
                "dissection",
                ts if pos >= cur else self._ts_at(s, pos),
                ts,
            )

    def _partial_head(self, s: _Side, why: str, etype: str, ts: int) -> None:
        """An unfinished head is being dropped: report it if it starts like a message."""
        buf = s.buf
        k = 0
        while k < len(buf) and buf[k] in b"\r\n":
            k += 1
        if k < len(buf) and self._plausible(s, buf, k):
            self._fragment(s, buf[k:], why, etype, self._ts_at(s, k), ts)

    def _fragment(
        self, s: _Side, frag: bytes | bytearray, why: str, etype: str, ts_first: int, ts_last: int
    ) -> None:
        lines = frag.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        if len(lines) > 1:
            lines.pop()  # the last line may be cut anywhere
        if s.role == _REQ:
            m, _, _ = self._request(lines, None, "\t")
        else:
            r, _, _ = self._response(lines, None, "\t")
            if r is None:
                return
            m = r
        m.wire = len(frag)
        m.ts_first = ts_first
        m.ts_last = ts_last
        m.error = why
        m.err_type = etype
        m.switch = False
        if m.is_req:
            self._assign_request(s, m)
        else:
            self._assign_response(s, m)
        self._finish(s, m)

    # ------------------------------------------------------------------ pairing

    def _slot(self, idx: int) -> _Txn:
        k = idx - self._base
        txns = self._txns
        if k < 0:
            t = _Txn()  # its slot was evicted: this half is emitted on its own
            t.detached = True
            t.req_st = t.resp_st = _LOST
            t.note = "its other half was evicted (max_pending)"
            return t
        while k >= len(txns):
            txns.append(_Txn())
            if len(txns) > self.limits.max_pending:
                self._evict()
                k -= 1
        return txns[k]

    def _evict(self) -> None:
        t = self._txns.popleft()
        self._base += 1
        self.stats.exchanges_evicted += 1
        t.detached = True
        t.emitted = True
        t.note = f"evicted: more than max_pending={self.limits.max_pending} exchanges waiting"
        self.exchanges.append(self._exchange(t))

    def _assign_request(self, s: _Side, m: _Msg) -> None:
        idx = self._req_next
        txns = self._txns
        s.gap_pending = False
        if idx - self._base < len(txns):
            # Responses were seen before this request. One that began before this request began
            # cannot answer it: it answered a request the capture does not have (lost in a gap,
            # or sent before the capture started). One that began later is this request's, only
            # delivered first (capture order across CPUs is not time order).
            skipped = False
            while 0 <= idx - self._base < len(txns):
                t = txns[idx - self._base]
                if t.req_st != _NONE or t.resp_st == _NONE or t.resp_ts >= m.ts_first:
                    break
                t.req_st = _LOST
                t.note = "request not captured"
                idx += 1
                skipped = True
            if skipped:
                self._emit()
        if idx - self._base == len(txns) and len(txns) < self.limits.max_pending:
            t = _Txn()  # the common case: a new slot at the end
            txns.append(t)
        else:
            t = self._slot(idx)
        self._req_next = idx + 1
        t.req_st = _OPEN
        t.method = m.method
        t.req_ts = m.ts_first
        m.txn = t

    def _assign_response(self, s: _Side, m: _Msg) -> _Txn:
        idx = self._resp_next
        if s.gap_pending:
            s.gap_pending = False
            if not self._pipelined:
                # Sequential keep-alive: the request answered is the last one sent before this
                # response began; responses to the earlier ones were lost in the gap.
                txns = self._txns
                first = idx - self._base
                best = first
                k = first
                while 0 <= k < len(txns):
                    t = txns[k]
                    if t.req_st == _NONE or t.req_ts > m.ts_first:
                        break
                    best = k
                    k += 1
                if best > first:
                    for k in range(first, best):
                        t = txns[k]
                        t.resp_st = _LOST
                        t.note = "response not captured (capture gap)"
                    idx = self._base + best
                    self._emit()
        k = idx - self._base
        txns = self._txns
        t = txns[k] if 0 <= k < len(txns) else self._slot(idx)
        self._resp_next = idx + 1
        t.resp_st = _OPEN
        t.resp_ts = m.ts_first
        m.txn = t
        return t

    def _finish(self, s: _Side, m: _Msg) -> None:
        """A message is complete (or abandoned with m.error set): store it in its slot."""
        if s.msg is m:
            s.msg = None
        if m.lost and m.error is None:
            what = "request" if m.is_req else "response"
            m.error = f"{m.lost} bytes of the {what} body lost in a capture gap"
            m.err_type = "dissection"
        parts = m.parts
        if parts is None:
            body = b""
        else:
            b = parts[0] if len(parts) == 1 else b"".join(parts)
            body = b if type(b) is bytes else bytes(b)
        msg = _new(
            Message,
            (
                m.method,
                m.target,
                m.status,
                m.reason,
                m.version,
                m.headers,
                body,
                m.size,
                m.kept < m.size,
                m.wire,
                m.ts_first,
                m.ts_last,
                m.error,
                tuple(m.anomalies) if m.anomalies else (),
            ),
        )
        t = m.txn
        if body and not t.detached and len(self._txns) > 1:
            other = t.resp_st if m.is_req else t.req_st
            if other < _DONE or self._txns[0] is not t:
                msg = self._fit_waiting(msg)  # it will wait in its slot
        if m.is_req:
            t.req = msg
            t.req_st = _DONE
            if m.err_type:
                t.req_err = m.err_type
            if m.switch and s.state == _HEAD and not m.error:
                s.state = _PAUSED  # Upgrade/CONNECT: wait for the response before going on
                self._paused = t
            if t.resp_st < _DONE:
                return  # the common case: the response is still to come
        else:
            t.resp = msg
            t.resp_st = _DONE
            if m.err_type:
                t.resp_err = m.err_type
            if not self._pipelined:
                nxt = self._resp_next - self._base
                if 0 <= nxt < len(self._txns) and self._txns[nxt].req_st != _NONE:
                    self._pipelined = True  # the next request was sent before this one ended
            if m.switch:
                self._switch(t, msg)
                return
            if self._paused is t and self.client_side is not None:
                self._unpause(self._sides[self.client_side], self.client_side)
        if t.detached:
            if not t.emitted and t.req_st >= _DONE and t.resp_st >= _DONE:
                t.emitted = True
                self.exchanges.append(self._exchange(t))
        else:
            self._emit()

    def _fit_waiting(self, msg: Message) -> Message:
        """msg is about to wait in a slot: keep only what max_pending_body leaves of its body.

        Walks the waiting slots (there are more than one only when pipelining, early
        responses or a one-direction capture make messages wait), rather than keeping a
        running total every path that emits or drops a slot would have to maintain."""
        held = 0
        for t in self._txns:
            if t.req is not None:
                held += len(t.req.body)
            if t.resp is not None:
                held += len(t.resp.body)
        body = msg.body
        room = self.limits.max_pending_body - held
        if len(body) <= room or held == 0:
            return msg  # (the only body waiting is always kept: max_body bounds it)
        keep = room if room > 0 else 0
        self.stats.waiting_bodies_cut += 1
        self.stats.waiting_body_bytes_dropped += len(body) - keep
        return _new(
            Message,
            (*msg[:6], body[:keep], msg.body_size, True, *msg[9:]),
        )

    def _emit(self) -> None:
        txns = self._txns
        while txns:
            t = txns[0]
            if t.req_st >= _DONE and t.resp_st >= _DONE:
                txns.popleft()
                self._base += 1
                self.exchanges.append(self._exchange(t))
            else:
                break

    def _flush(self, why: str) -> None:
        """Emit every slot as it stands (the connection is over or the protocol switched)."""
        txns = self._txns
        while txns:
            t = txns.popleft()
            self._base += 1
            if not t.note:
                t.note = why
            if t.req is not None or t.resp is not None:
                self.exchanges.append(self._exchange(t))
        self._req_next = self._resp_next = self._base

    @staticmethod
    def _exchange(t: _Txn) -> Exchange:
        req = t.req
        resp = t.resp
        if req is not None and resp is not None:
            if req.error is None and resp.error is None:
                return _new(Exchange, (req, resp, None))
            if req.error is not None and resp.error is not None:
                return _new(Exchange, (req, resp, (t.req_err, f"{req.error}; {resp.error}")))
            if req.error is not None:
                return _new(Exchange, (req, resp, (t.req_err, req.error)))
            return _new(Exchange, (req, resp, (t.resp_err, resp.error or "")))
        if req is None and resp is None:
            why = "no message completed"
        elif req is None:
            why = "no request seen for this response"
        else:
            why = "no response seen for this request"
        if t.note:
            why = f"{why} ({t.note})"
        for msg in (req, resp):
            if msg is not None and msg.error is not None:
                why = f"{why}; {msg.error}"
        return _new(Exchange, (req, resp, ("pair-not-found", why)))

    # ------------------------------------------------------------------ upgrade / CONNECT

    def _switch(self, t: _Txn, resp: Message) -> None:
        """A 101, or a 2xx to CONNECT: HTTP/1 ends on this connection. The connection goes on
        with the dissector of the upgrade token (the 101's response is then the successor's
        to emit: it comes in the new protocol) or of the tunnel (the CONNECT is an exchange of
        its own), when there is one; the bytes the client sent after the request, held until
        this response, are its first."""
        client = self.client_side
        succ: TcpDissector | None = None
        if client is not None:
            if resp.status == 101:
                factory = self._upgrades.get(_upgrade_token(t, resp)) if self._upgrades else None
                if factory is not None:
                    succ = factory(t.req, resp, client)
                    if not t.detached:
                        self._txns.remove(t)
                        t.detached = t.emitted = True
            elif self._tunnel is not None:
                succ = self._tunnel(t.req, resp, client)
        if t.detached and not t.emitted:
            t.emitted = True
            self.exchanges.append(self._exchange(t))
        self._flush("the protocol switched")
        pending = b""
        ts = resp.ts_first_ns
        if client is not None:
            held = self._sides[client]
            if held.state == _PAUSED and held.buf:
                pending = bytes(held.buf)
                ts = held.marks[0][1]
        self._stop()
        if succ is not None:
            self.successor = succ
            if pending:  # sent after the request, held until the response (e.g. the preface)
                succ.data(client if client is not None else 0, pending, ts)

    def _unpause(self, s: _Side, side: int) -> None:
        """The response did not switch protocols (or never came): parse what was held."""
        self._paused = None
        if s.state != _PAUSED:
            return
        s.state = _HEAD if s.fresh or not s.gap_pending else _SYNC
        self._reparse(s, side)

    # ------------------------------------------------------------------ small helpers

    @staticmethod
    def _anomaly(m: _Msg, text: str) -> None:
        m.anomalies = _add(m.anomalies, text)

    @staticmethod
    def _fail(m: _Msg, text: str) -> None:
        if m.error is None:
            m.error = text
            m.err_type = "dissection"


def _upgrade_token(t: _Txn, resp: Message) -> str:
    """The protocol a 101 switched to: the response's Upgrade, else the request's (lower case)."""
    for msg in (resp, t.req):
        if msg is not None:
            for name, value in msg.headers:
                if name.lower() == "upgrade":
                    return value.split(",", 1)[0].strip().lower()
    return ""


def _add(items: list[str] | None, text: str) -> list[str]:
    """Append text to a lazily created list, once (anomaly lists stay short)."""
    if items is None:
        return [text]
    if text not in items:
        items.append(text)
    return items
