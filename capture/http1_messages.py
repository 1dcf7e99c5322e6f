"""What the HTTP/1 modules share: the messages and exchanges they produce, the limits and
counters, and the state of a connection being read (its two sides, its pairing slots, the message
in progress).

capture/http1.py is the dissector (its docstring says how HTTP/1 is read and why); its work is
split by concern: capture/http1_heads.py (heads: parsing and its caches), http1_framing.py (the
per-direction framing state machine) and http1_pairing.py (requests to responses). Names with a
leading underscore are private to those modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from capture.dissect import DissectorStats

if TYPE_CHECKING:
    from collections.abc import Callable

    from capture.dissect import TcpDissector


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
    exchange on the hot path, and a frozen dataclass's __init__ costs more than the rest of
    building them (scripts/bench_pipeline.py).
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

    # messages whose body was cut because waiting bodies reached max_pending_body
    waiting_bodies_cut: int
    waiting_body_bytes_dropped: int  # ... and the bytes not kept
    exchanges_evicted: int  # pushed out early as pair-not-found by max_pending
    bytes_discarded: int  # skipped while probing or resynchronising (capture gaps not included)

    def __init__(self) -> None:
        super().__init__(_HTTP_COUNTERS)


_HTTP_COUNTERS = "waiting_bodies_cut waiting_body_bytes_dropped exchanges_evicted bytes_discarded"


class Exchange(NamedTuple):
    """A request and its response; either may be None (then error is pair-not-found)."""

    request: Message | None
    response: Message | None
    # ("pair-not-found" | "dissection" | "connection" | "timeout", human-readable message)
    error: tuple[str, str] | None


_DEFAULT_LIMITS = HttpLimits()
# NamedTuple.__new__ is a Python function; tuple.__new__(Cls, values) builds the same object
# several times faster, which matters for two messages and one exchange per pair.
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


def _anomaly(m: _Msg, text: str) -> None:
    m.anomalies = _add(m.anomalies, text)


def _fail(m: _Msg, text: str) -> None:
    if m.error is None:
        m.error = text
        m.err_type = "dissection"


def _add(items: list[str] | None, text: str) -> list[str]:
    """Append text to a lazily created list, once (anomaly lists stay short)."""
    if items is None:
        return [text]
    if text not in items:
        items.append(text)
    return items
