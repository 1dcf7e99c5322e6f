"""HTTP/2 streams: each stream's request and response assembled from its frames, paired, and
emitted as an `Http2Exchange` when both ended, when it is reset or refused by a GOAWAY, when
it is evicted, or when the connection ends (capture/http2.py's docstring has the rules).

`Http2Streams` is the base of `capture.http2.Http2Connection`: one object per connection, its
code split by concern as a chain of classes (streams, then framing in capture/http2_framing.py,
then the public methods), as capture/http1_pairing.py explains for HTTP/1. It makes all of the
connection's state, the framing's per-direction `_Side` too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple

from capture.dissect import DissectorStats, TcpDissector
from capture.grpc import MessageTally, is_grpc_content_type
from capture.http1_messages import Message
from capture.http2_frames import _DEFAULT_MAX_FRAME, _HEADERS, _PUSH_PROMISE, error_code_name
from capture.http2_hpack import HpackDecoder

if TYPE_CHECKING:
    from capture.http2_hpack import HpackResult
    from capture.protobuf import ProtoDecoder


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """Per-connection bounds. Each says what happens when it is reached."""

    # Body bytes kept per message (the DATA payloads of one direction of a stream); the rest is
    # counted in body_size and dropped (body_truncated=True).
    max_body: int = 1 << 20
    # Body bytes kept by all the streams in progress of a connection together (many concurrent
    # downloads): past it, new body bytes are counted but not kept, as past max_body.
    max_body_total: int = 16 << 20
    # A header block (HEADERS or PUSH_PROMISE plus CONTINUATIONs, HPACK-compressed) longer than
    # this is skipped: its stream gets a dissection error and that direction's HPACK table
    # becomes partial (the block's insertions are unknown).
    max_header_block: int = 256 << 10
    # Streams in progress per connection. One more evicts the oldest: it is emitted at once with
    # ("pair-not-found", ...) and counted (Http2Stats).
    max_streams: int = 1024
    # HPACK dynamic table bytes kept per direction (RFC 7541 sizes). An encoder allowed a larger
    # table keeps entries past this; fields referencing them are counted as unknown.
    max_table_bytes: int = 64 << 10
    # Bytes (both sides) searched for a frame boundary without finding one before the connection
    # is declared not HTTP/2 (active=False).
    max_probe: int = 256 << 10
    # Not used by the dissector: the cap entries put on content-decoded bodies.
    max_decoded: int = 10 << 20


class Http2Stats(DissectorStats):
    """What the HTTP/2 connections of a pipeline dropped, cut or could not read (one object
    shared by all of them: capture/dissect.py)."""

    streams_evicted: int  # emitted early as pair-not-found by max_streams
    bytes_skipped: int  # looking for a frame boundary (mid-stream start, lost framing)
    # header fields that referenced HPACK entries we do not have (their names are unknown)
    hpack_unknown_fields: int
    header_blocks_lost: int  # not decoded: cut by a gap, over max_header_block, malformed
    frames_oversized: int  # longer than max_header_block / MAX_CONTROL_FRAME: skipped
    body_bytes_dropped: int  # DATA not kept by max_body / max_body_total (counted)
    resets: int  # RST_STREAM frames
    goaways: int  # GOAWAY frames

    def __init__(self) -> None:
        super().__init__(_HTTP2_COUNTERS)


_HTTP2_COUNTERS = (
    "streams_evicted bytes_skipped hpack_unknown_fields header_blocks_lost frames_oversized "
    "body_bytes_dropped resets goaways"
)


CLOSED_REMEMBERED = 1024  # stream ids of ended streams whose late frames are ignored


class Http2Exchange(NamedTuple):
    """One stream: its request and response (either may be None: then error says why)."""

    request: Message | None
    response: Message | None
    # ("pair-not-found" | "dissection" | "connection" | "timeout", human-readable message)
    error: tuple[str, str] | None
    stream_id: int
    # gRPC Length-Prefixed-Messages seen per direction (-1: not a gRPC body), and whether bytes
    # of that body were lost so the count is a lower bound.
    request_messages: int = -1
    response_messages: int = -1
    # False when bytes were lost where messages may have been: the count is a lower bound
    request_messages_exact: bool = True
    response_messages_exact: bool = True


class _Half:
    """One direction of one stream: the message being assembled."""

    __slots__ = (
        "body",
        "body_size",
        "ended",
        "errors",
        "fields",
        "interim",
        "lost",
        "started",
        "tally",
        "trailers",
        "ts_first",
        "ts_last",
        "unknown",
        "wire",
    )

    def __init__(self, ts_ns: int) -> None:
        self.fields: list[tuple[str, str]] = []
        self.trailers = 0  # fields appended after the head as trailers
        self.body = bytearray()
        self.body_size = 0
        self.lost = 0  # body bytes lost in capture gaps
        self.wire = 0  # frame bytes (headers + payload) of this message
        self.ts_first = ts_ns
        self.ts_last = ts_ns
        self.started = False  # the (final) header block was seen
        self.ended = False  # END_STREAM seen
        self.interim = 0  # 1xx responses skipped
        self.errors: list[str] | None = None
        self.tally: MessageTally | None = None
        self.unknown = 0  # header fields that referenced HPACK entries we do not have

    def error(self, text: str) -> None:
        if self.errors is None:
            self.errors = [text]
        elif text not in self.errors:
            self.errors.append(text)


class _Stream:
    __slots__ = ("error", "halves", "pushed", "sid", "upgraded")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.halves: list[_Half | None] = [None, None]  # by side
        self.error: tuple[str, str] | None = None  # stream-level (reset, GOAWAY, end)
        self.upgraded: Message | None = None  # stream 1 after Upgrade: the HTTP/1.1 request
        self.pushed = False  # opened by PUSH_PROMISE


# side states
_START = 0  # nothing parsed yet: the preface, a frame, or a search for a frame boundary
_FRAMES = 1  # in sync: a frame header is expected at the buffer's start
_SYNC = 2  # framing lost or not found yet: searching for a frame boundary
_DEAD = 3


class _Side:
    __slots__ = (
        "block",
        "block_end_stream",
        "block_over",
        "block_promised",
        "block_sid",
        "block_ts",
        "block_type",
        "block_wire",
        "buf",
        "hpack",
        "marks",
        "max_frame",
        "pad",
        "skip",
        "skip_end",
        "skip_half",
        "skip_sid",
        "state",
    )

    def __init__(self, max_table_bytes: int) -> None:
        self.state = _START
        self.buf = bytearray()
        # (offset in buf, time) of each data() that added to buf: a frame's time is that of
        # the data carrying its first byte.
        self.marks: list[tuple[int, int]] = []
        self.hpack = HpackDecoder(max_table_bytes, partial=True)
        # Frames this side may send: the peer's SETTINGS_MAX_FRAME_SIZE (realignment only).
        self.max_frame = _DEFAULT_MAX_FRAME
        # The frame whose payload is passing now (DATA streamed into its half; others skipped)
        self.skip = 0  # payload bytes left (data + padding)
        self.pad = 0  # of which padding, at the end
        self.skip_half: _Half | None = None  # DATA: the half its bytes go to (None: discard)
        self.skip_sid = 0
        self.skip_end = False  # DATA with END_STREAM: end the half when the payload is done
        # A header block waiting for CONTINUATION frames
        self.block: bytearray | None = None
        self.block_sid = 0
        self.block_type = _HEADERS
        self.block_end_stream = False
        self.block_promised = 0
        self.block_over = False  # longer than max_header_block: being skipped
        self.block_ts = 0
        self.block_wire = 0

    def start_block(
        self, btype: int, sid: int, promised: int, frag: bytes, end_stream: bool, ts: int, n: int
    ) -> None:
        """A HEADERS or PUSH_PROMISE frame (`n` payload bytes) whose block CONTINUATION
        frames go on: `frag` is its first fragment."""
        self.block = bytearray(frag)
        self.block_sid = sid
        self.block_type = btype
        self.block_end_stream = end_stream
        self.block_promised = promised
        self.block_over = False
        self.block_ts = ts
        self.block_wire = 9 + n


_DEFAULT_LIMITS = Http2Limits()


class Http2Streams(TcpDissector):
    """The streams of one connection (see the module docstring)."""

    def __init__(
        self,
        limits: Http2Limits = _DEFAULT_LIMITS,
        protos: ProtoDecoder | None = None,
        stats: Http2Stats | None = None,
    ) -> None:
        super().__init__("http2")
        self.limits = limits
        self._protos = protos  # decodes gRPC messages in entries (--proto-descriptor)
        self.stats = Http2Stats() if stats is None else stats  # shared by a pipeline's
        self.recognised = False  # a preface or a valid frame was seen: this is HTTP/2
        self.goaway: tuple[int, str] | None = None  # last GOAWAY: (sender side, description)
        self._streams: dict[int, _Stream] = {}
        self._closed: deque[int] = deque()
        self._closed_set: set[int] = set()
        self._max_body = limits.max_body
        self._max_body_total = limits.max_body_total
        self.body_bytes = 0  # body bytes kept by the streams in progress (max_body_total)
        # the framing's (capture/http2_framing.py)
        self.frames = 0  # frames parsed
        self._sides = (_Side(limits.max_table_bytes), _Side(limits.max_table_bytes))
        self._probe_budget = limits.max_probe

    def _learn_roles(self, client_side: int) -> None:
        if self.client_side is None:
            self.client_side = client_side

    def _open(self, sid: int, ts: int) -> _Stream:
        st = self._streams[sid] = _Stream(sid)
        if len(self._streams) > self.limits.max_streams:
            oldest = next(iter(self._streams.values()))
            self.stats.streams_evicted += 1
            self._finish(
                oldest,
                (
                    "pair-not-found",
                    f"given up: more than max_streams={self.limits.max_streams} streams in "
                    "progress",
                ),
            )
        return st

    def _stream(self, sid: int, ts: int) -> _Stream | None:
        st = self._streams.get(sid)
        if st is None and sid not in self._closed_set:
            st = self._open(sid, ts)
        return st

    @staticmethod
    def _half(st: _Stream, side: int, ts: int) -> _Half:
        half = st.halves[side]
        if half is None:
            half = st.halves[side] = _Half(ts)
        return half

    def _data_half(self, sid: int, side: int, ts: int) -> _Half | None:
        if not sid:
            return None
        st = self._streams.get(sid)
        if st is None:
            if sid in self._closed_set:
                return None
            st = self._open(sid, ts)
        half = st.halves[side]
        if half is None:
            half = st.halves[side] = _Half(ts)
        elif half.ended:
            return None  # DATA after END_STREAM: a protocol error; nothing to add to
        return half

    def _body(self, half: _Half, buf: bytes | bytearray, start: int, stop: int) -> None:
        n = stop - start
        half.body_size += n
        room = self._max_body - len(half.body)
        if room > 0:
            shared = self._max_body_total - self.body_bytes
            if shared < room:
                room = shared
        if room >= n:
            half.body += buf[start:stop]
            self.body_bytes += n
        else:
            take = room if room > 0 else 0
            if take:
                half.body += buf[start : start + take]
                self.body_bytes += take
            self.stats.body_bytes_dropped += n - take
        tally = half.tally
        if tally is not None:
            tally.feed(buf, start, stop)

    def _headers(
        self,
        side: int,
        btype: int,
        sid: int,
        promised: int,
        res: HpackResult,
        end_stream: bool,
        ts: int,
        wire: int,
    ) -> None:
        """A header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) that `side` sent,
        decoded (`wire`: its frames' bytes)."""
        fields = res.fields
        if res.unknown:
            self.stats.hpack_unknown_fields += res.unknown
        if btype == _PUSH_PROMISE:
            if not promised or promised in self._streams or promised in self._closed_set:
                return
            pst = self._open(promised, ts)
            pst.pushed = True
            half = self._half(pst, 1 - side, ts)  # the promised request is the client's
            half.started = True
            half.ended = True
            half.fields = fields
            half.wire = wire
            self._note_block(half, res.unknown, res.error, sid)
            return
        pseudo = _pseudo(fields)
        status = pseudo.get(":status")
        if ":method" in pseudo:
            self._learn_roles(side)
        elif status is not None:
            self._learn_roles(1 - side)
        self.recognised = True
        st = self._stream(sid, ts)
        if st is None:
            return  # a late block on an ended stream (its HPACK effects are applied above)
        half = self._half(st, side, ts)
        if half.ended:
            half.error("header block after END_STREAM")
            return
        half.wire += wire
        half.ts_last = ts
        if not half.started:
            if status is not None and status[:1] == "1" and len(status) == 3 and not end_stream:
                half.interim += 1  # 1xx: skipped, the final response follows
            else:
                half.started = True
                half.ts_first = ts
                half.fields = fields
                for name, value in fields:
                    if name == "content-type":
                        if is_grpc_content_type(value):
                            half.tally = MessageTally()
                        break
        else:
            half.fields += fields
            half.trailers += len(fields)
        self._note_block(half, res.unknown, res.error, sid)
        if end_stream:
            self._end_half(sid, side, half, ts)

    @staticmethod
    def _note_block(half: _Half, unknown: int, error: str | None, sid: int) -> None:
        half.unknown += unknown
        if error is not None:
            half.error(error)

    def _end_half(self, sid: int, side: int, half: _Half, ts: int) -> None:
        half.ended = True
        half.ts_last = ts
        st = self._streams.get(sid)
        if st is None:
            return
        other = st.halves[1 - side]
        if other is not None and other.ended:
            self._finish(st, None)

    def _reset(self, sid: int, side: int, code: int, ts: int) -> None:
        st = self._streams.get(sid)
        if st is None:
            return
        client = self.client_side if self.client_side is not None else 0
        resp = st.halves[1 - client]
        if code == 0 and resp is not None and resp.ended:
            self._finish(st, None)  # RFC 9113 §8.1: the response is complete, stop the request
            return
        who = "client" if side == client else "server"
        self._finish(
            st, ("connection", f"stream {sid} reset by the {who}: {error_code_name(code)}")
        )

    def _goaway(self, side: int, last: int, code: int, debug: bytes, ts: int) -> None:
        text = f"GOAWAY {error_code_name(code)} from the " + (
            "client"
            if side == (self.client_side if self.client_side is not None else 0)
            else "server"
        )
        if debug:
            text += f" ({debug[:200].decode('utf-8', 'replace')})"
        self.goaway = (side, text)
        # Streams the sender's peer initiated past last-stream-id were not processed.
        peer_parity = 1 if side != (self.client_side if self.client_side is not None else 0) else 0
        for st in list(self._streams.values()):
            if st.sid > last and st.sid % 2 == peer_parity:
                self._finish(
                    st, ("connection", f"stream {st.sid} not processed: {text}, last stream {last}")
                )

    def _finish(self, st: _Stream, error: tuple[str, str] | None, at_end: bool = False) -> None:
        """The stream is over: emit its exchange. `error` is the stream's own (reset, GOAWAY,
        eviction, connection end); the halves' problems are added to it."""
        sid = st.sid
        if self._streams.pop(sid, None) is None:
            return
        for h in st.halves:
            if h is not None:
                self.body_bytes -= len(h.body)
        self._closed.append(sid)
        self._closed_set.add(sid)
        if len(self._closed) > CLOSED_REMEMBERED:
            self._closed_set.discard(self._closed.popleft())
        if self.client_side is None:
            self.client_side = 0  # never learnt: the reassembler's guess (its SYN sender)
        client = self.client_side
        qh = st.halves[client]
        ph = st.halves[1 - client]
        request: Message | None
        if st.upgraded is not None:
            request = st.upgraded
        else:
            request = _message(qh, True) if qh is not None and qh.started else None
        response = _message(ph, False) if ph is not None and ph.started else None
        problems: list[str] = []
        unknown: list[str] = []
        for h, what in ((qh, "request"), (ph, "response")):
            if h is not None:
                if h.unknown:
                    unknown.append(f"{h.unknown} {what}")
                if h.errors:
                    problems.extend(h.errors)
                if h.lost:
                    problems.append(f"{h.lost} bytes of the {what} body lost in a capture gap")
        if unknown:
            problems.insert(
                0,
                f"{' and '.join(unknown)} header field(s) of stream {sid} referenced HPACK "
                "entries from before the capture",
            )
        if request is None or response is None:
            if error is None or at_end or error[0] == "pair-not-found":
                missing, h = ("request", qh) if request is None else ("response", ph)
                why = (
                    f"stream {sid}: the {missing} headers were not captured"
                    if h is not None
                    else f"stream {sid}: no {missing}"
                )
                if error is not None and error[0] == "pair-not-found":
                    why = f"{why} ({error[1]})"  # why it was emitted early (max_streams)
                error = ("pair-not-found", why)
        elif error is None and problems:
            error = ("dissection", problems.pop(0))
        if error is not None and problems:
            error = (error[0], "; ".join([error[1], *problems]))
        self.exchanges.append(
            Http2Exchange(
                request, response, error, sid, _count(qh), _count(ph), _exact(qh), _exact(ph)
            )
        )


def _exact(half: _Half | None) -> bool:
    return half is None or half.tally is None or not half.tally.lost


def _count(half: _Half | None) -> int:
    if half is None or half.tally is None:
        return -1
    return half.tally.count


def _pseudo(fields: list[tuple[str, str]]) -> dict[str, str]:
    """The pseudo-header fields (":method", ":status", ...) a header block starts with."""
    out: dict[str, str] = {}
    for name, value in fields:
        if name[:1] != ":":
            break
        out[name] = value
    return out


def _message(half: _Half, is_request: bool) -> Message:
    method: str | None = None
    target: str | None = None
    status: int | None = None
    reason: str | None = None
    errors = half.errors
    pseudo = _pseudo(half.fields)
    if is_request:
        method = pseudo.get(":method", "")
        target = pseudo.get(":path")
        if target is None:
            target = pseudo.get(":authority", "") if method == "CONNECT" else ""
    else:
        code = pseudo.get(":status", "")
        status = int(code) if len(code) == 3 and code.isdigit() else 0
        try:
            reason = HTTPStatus(status).phrase if status else ""
        except ValueError:
            reason = ""
    body = bytes(half.body)
    return Message(
        method,
        target,
        status,
        reason,
        "HTTP/2.0",
        half.fields,
        body,
        half.body_size,
        half.body_size > len(body),
        half.wire,
        half.ts_first,
        half.ts_last,
        "; ".join(errors) if errors else None,
    )
