"""Sans-IO HTTP/2 over cleartext (h2c) dissection of one TCP connection, streams paired.

Bytes and packet times go in per side (`data`, `gap`, `end`, like capture.http1's
HttpConnection), finished `Http2Exchange`s come out (`pop_exchanges`), one per HTTP/2 stream:
the request and response as capture.http1 `Message`s (version "HTTP/2.0"), so that entries are
built the same way. Nothing here reads a clock or touches a socket.

Why hand-written and not `h2` (python-hyper): h2 is an endpoint's state machine; it must be
driven as one peer, refuses what a peer must refuse (a 70,000-byte DATA frame over the default
max frame size, as sv-http2-long-frame has, is a connection error to it and tshark still reads
it), and cannot start in the middle of a connection. Framing is 9-byte headers; the work worth
a library is HPACK, see capture/http2_hpack.py. hyperframe (h2's framer) builds an object per
frame; here a DATA payload is sliced straight into its stream's body.

How a connection starts:
* Prior knowledge: the client's first bytes are the preface `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`,
  the server's a SETTINGS frame. Both HPACK tables start empty.
* Upgrade (`upgrade()`): the HTTP/1 dissector saw `Upgrade: h2c` answered by 101; that request
  is stream 1's request, the response comes as HTTP/2 on stream 1; then the client's preface.
* Mid-stream (capture began after the preface): each side looks for a frame boundary: a frame
  header that is plausible (known type, its fixed length, flags and stream-id rules, length within
  the max frame size) followed by another plausible one, or ending exactly where the data ends
  (segments usually end on frame ends). Bytes skipped are counted (`Http2Stats`). That side's HPACK
  table is then *partial* (http2_hpack): fields that reference entries from before the capture
  are counted, not guessed, and the message gets a dissection error naming how many.
Roles come from the preface, a `:method` or `:status` pseudo-header, or a PUSH_PROMISE; until
then side 0 (the reassembler's guess) is assumed the client.

Streams and pairing: a stream's request is what the client sent on it, its response what the
server sent; an exchange is emitted when both ended (END_STREAM each way), when the stream is
reset, or when the connection ends. Interim 1xx responses are skipped; a second HEADERS block in
a direction is its trailers, appended to the message's headers (as HTTP/1 chunked trailers).
PUSH_PROMISE makes the promised stream's request. Emission order is completion order.

Errors (Exchange.error, the one field a Kubeshark client filters on):
* RST_STREAM with either half unfinished: ("connection", "stream reset by the client: CANCEL
  (0x8)"). A server's RST_STREAM(NO_ERROR) after its complete response is RFC 9113 §8.1's "stop
  sending the request" and not an error.
* GOAWAY: streams the sender did not process (initiated by its peer, id > last-stream-id) end at
  once with ("connection", "not processed: GOAWAY ..."); streams still open when the connection
  ends after a GOAWAY carry its error code in their message.
* Connection end: unfinished streams get ("connection"|"timeout", ...); a stream with only one
  half (its request was never seen, or never answered) gets ("pair-not-found", ...).
* Lost bytes: a capture gap inside a DATA frame keeps the framing (the body is marked truncated,
  as HTTP/1 does); a gap in a header block loses that direction's HPACK table (it becomes
  partial); a gap whose end is not inside a known frame loses the framing: the side realigns as
  at a mid-stream start and every stream open in that direction gets a dissection error.

Bounds (`Http2Limits`, each with its behaviour when reached): body bytes kept per message
(`max_body`, the rest counted) and by all open streams together (`max_body_total`, likewise),
header block bytes (`max_header_block`: the block is skipped, its stream flagged, the HPACK
table of that direction becomes partial), streams in progress
(`max_streams`: the oldest is emitted early as pair-not-found, counted), the HPACK
table (`max_table_bytes`), control frames (`MAX_CONTROL_FRAME`: larger ones are skipped), closed
stream ids remembered (`CLOSED_REMEMBERED`), bytes searched for a frame boundary before the
connection is declared not HTTP/2 (`max_probe`). What each bound dropped is counted in
`Http2Stats`, summed over a pipeline's connections (its /status shows them as `http2_*`).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple

from capture.carry import consume, ts_at
from capture.dissect import MORE, NO, YES, DissectorStats, TcpDissector
from capture.grpc import MessageTally, is_grpc_content_type
from capture.http1 import Message
from capture.http2_entries import Http2EntryBuilder
from capture.http2_hpack import HpackDecoder

if TYPE_CHECKING:
    from capture.dissect import EntryMaker
    from capture.entries import ConnectionEnds, Identity
    from capture.protobuf import ProtoDecoder

__all__ = [
    "PREFACE",
    "Http2Connection",
    "Http2Exchange",
    "Http2Limits",
    "Http2Stats",
    "detect",
    "error_code_name",
    "looks_like_http2",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PREFACE_LEN = len(PREFACE)


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

    __slots__ = (
        "body_bytes_dropped",
        "bytes_skipped",
        "frames_oversized",
        "goaways",
        "header_blocks_lost",
        "hpack_unknown_fields",
        "resets",
        "streams_evicted",
    )

    def __init__(self) -> None:
        self.streams_evicted = 0  # emitted early as pair-not-found by max_streams
        self.bytes_skipped = 0  # looking for a frame boundary (mid-stream start, lost framing)
        # header fields that referenced HPACK entries we do not have (their names are unknown)
        self.hpack_unknown_fields = 0
        self.header_blocks_lost = 0  # not decoded: cut by a gap, over max_header_block, malformed
        self.frames_oversized = 0  # longer than max_header_block / MAX_CONTROL_FRAME: skipped
        self.body_bytes_dropped = 0  # DATA not kept by max_body / max_body_total (counted)
        self.resets = 0  # RST_STREAM frames
        self.goaways = 0  # GOAWAY frames

    def as_dict(self) -> dict[str, int]:
        return {
            "streams_evicted": self.streams_evicted,
            "bytes_skipped": self.bytes_skipped,
            "hpack_unknown_fields": self.hpack_unknown_fields,
            "header_blocks_lost": self.header_blocks_lost,
            "frames_oversized": self.frames_oversized,
            "body_bytes_dropped": self.body_bytes_dropped,
            "resets": self.resets,
            "goaways": self.goaways,
        }


MAX_CONTROL_FRAME = 1 << 16  # SETTINGS/GOAWAY/unknown-type payloads longer are skipped unread
CLOSED_REMEMBERED = 1024  # stream ids of ended streams whose late frames are ignored
_DEFAULT_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's initial value
_MAX_SYNC_STREAM_ID = 1 << 24  # realignment only: a plausible frame's stream id is below this

_DATA = 0
_HEADERS = 1
_PRIORITY = 2
_RST_STREAM = 3
_SETTINGS = 4
_PUSH_PROMISE = 5
_PING = 6
_GOAWAY = 7
_WINDOW_UPDATE = 8
_CONTINUATION = 9

_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

# Realignment: the flags each type defines (others make a header implausible) and which types
# need a stream id (1), none (0), or either (2).
_SYNC_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)
_SYNC_SID = (1, 1, 1, 1, 0, 1, 0, 0, 2, 1)

_ERROR_CODES = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)

_HEADER = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, R + stream id
_U32 = struct.Struct(">I")

# side states
_START = 0  # nothing parsed yet: the preface, a frame, or a search for a frame boundary
_FRAMES = 1  # in sync: a frame header is expected at the buffer's start
_SYNC = 2  # framing lost or not found yet: searching for a frame boundary
_DEAD = 3


def error_code_name(code: int) -> str:
    name = _ERROR_CODES[code] if 0 <= code < len(_ERROR_CODES) else "UNKNOWN_ERROR"
    return f"{name} (0x{code:x})"


def detect(first0: bytes, first1: bytes, conn: object) -> int:
    """Content detection (capture/dissectors.py): YES when either side starts with the client
    preface, or with plausible frames up to a HEADERS frame whose block decodes (with an
    unknown HPACK table) to pseudo-headers: a capture that began after the preface. NO as soon
    as a side's first bytes cannot be frames; MORE while a side's frames are plausible so far."""
    if first0.startswith(_NOT_HTTP2) or first1.startswith(_NOT_HTTP2):
        return NO  # HTTP/1 or TLS from its first byte: no need to hear the other side
    answer = NO
    for data in (first0, first1):
        got = _detect_side(data)
        if got == YES:
            return YES
        if got == MORE:
            answer = MORE
    return answer


def _detect_side(data: bytes) -> int:
    n = len(data)
    if n == 0:
        return MORE
    k = min(n, _PREFACE_LEN)
    if data[:k] == PREFACE[:k]:
        return YES if n >= _PREFACE_LEN else MORE
    first = _walk_frames(data, 0)
    if first != NO:
        return first
    # The side's data may begin inside a frame (a capture joining a connection): frames found
    # further on count only if they reach a HEADERS block with pseudo-headers.
    for pos in range(1, n - 8):
        if _plausible(data, pos, _DEFAULT_MAX_FRAME) and _walk_frames(data, pos) == YES:
            return YES
    return NO


def _walk_frames(data: bytes, pos: int) -> int:
    """YES: plausible frames from pos up to a HEADERS block that decodes (with an unknown
    HPACK table) to pseudo-headers; NO: an implausible frame first; MORE: the data ends first."""
    n = len(data)
    while n - pos >= 9:
        if not _plausible(data, pos, _DEFAULT_MAX_FRAME):
            return NO
        end = pos + 9 + ((data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2])
        if end > n:
            return MORE
        flags = data[pos + 4]
        if data[pos + 3] == _HEADERS and flags & _END_HEADERS:
            block = _unpad(data[pos + 9 : end], flags)
            if block is None:
                return NO
            if flags & _PRIORITY_FLAG:
                block = block[5:]
            res = HpackDecoder(partial=True).decode(block)
            if res.error is not None:
                return NO
            if any(name in _PSEUDO for name, _ in res.fields):
                return YES
        pos = end
    return MORE


_PSEUDO = frozenset((":method", ":path", ":scheme", ":authority", ":status"))
# Starts of a side that is surely not HTTP/2 (a request or status line, a TLS handshake record).
_NOT_HTTP2 = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"HTTP/1.",
    b"\x16\x03",
)


def looks_like_http2(data: bytes) -> bool:
    """Does a side's first data start with the client connection preface (or a prefix of it)?"""
    n = min(len(data), _PREFACE_LEN)
    return n > 0 and data[:n] == PREFACE[:n]


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


_DEFAULT_LIMITS = Http2Limits()


class Http2Connection(TcpDissector):
    """HTTP/2 dissector and stream pairer for one TCP connection (see the module docstring).

    A TcpDissector (capture/dissect.py): `client_side` is set once the roles are known (the
    preface, a pseudo-header, a PUSH_PROMISE, or at the latest when the first exchange is
    emitted: side 0, the reassembler's guess); `exchanges` holds `Http2Exchange`s.
    """

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
        self.frames = 0  # frames parsed
        self.goaway: tuple[int, str] | None = None  # last GOAWAY: (sender side, description)
        self._sides = (_Side(limits.max_table_bytes), _Side(limits.max_table_bytes))
        self._streams: dict[int, _Stream] = {}
        self._closed: deque[int] = deque()
        self._closed_set: set[int] = set()
        self._probe_budget = limits.max_probe
        self._max_body = limits.max_body
        self._max_body_total = limits.max_body_total
        self.body_bytes = 0  # body bytes kept by the streams in progress (max_body_total)

    # ------------------------------------------------------------------ public API

    def entry_maker(
        self, conn: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        client_side = self.client_side if self.client_side is not None else 0
        return Http2EntryBuilder(conn, identity, stream, max_decoded, client_side, self._protos)

    def upgrade(self, request: Message | None, client_side: int, ts_ns: int) -> None:
        """HTTP/1.1 `Upgrade: h2c` answered by 101: `request` is stream 1's request
        (RFC 9113 §3.2, RFC 7540 §3.2; None if it was not captured); the client's next bytes
        are the preface."""
        self._learn_roles(client_side)
        self.recognised = True
        st = self._streams[1] = _Stream(1)
        if request is not None:
            st.upgraded = request
            half = st.halves[client_side] = _Half(request.ts_first_ns)
            half.started = True
            half.ended = True
            half.ts_last = request.ts_last_ns
        # Both sides start a fresh HTTP/2 connection: both HPACK tables are empty.
        for s in self._sides:
            s.hpack = HpackDecoder(self.limits.max_table_bytes)

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        if not self.active or not data:
            return
        s = self._sides[side]
        if s.state == _DEAD:
            return
        buf = s.buf
        if buf:
            carried = len(buf)
            buf += data
            s.marks.append((carried, ts_ns))
            pos = self._parse(s, side, buf, ts_ns, carried)
            if s.buf is buf and pos:
                s.marks = consume(s.buf, s.marks, pos)
        else:
            pos = self._parse(s, side, data, ts_ns, 0)
            if pos < len(data) and s.state != _DEAD:
                s.buf += memoryview(data)[pos:]
                s.marks = [(0, ts_ns)]
        if not self.recognised:
            self._probe_budget -= len(data)
            if self._probe_budget < 0:
                self._stop()

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        if not self.active or length <= 0:
            return
        s = self._sides[side]
        if s.state == _DEAD:
            return
        if s.state == _SYNC and s.buf:
            # The data before the gap ends here: a frame ending exactly here is accepted, as at
            # the connection's end (where the gap falls does not depend on segmentation).
            self._take_final(s, side, ts_ns)
        if s.state == _FRAMES:
            if s.skip and not s.buf:
                if length <= s.skip:
                    self._lose_payload(s, length, ts_ns)
                    return
            elif len(s.buf) >= 9 and s.block is None:
                # A frame cut by the gap: if the gap ends inside it, its end is still known.
                hdr = _HEADER.unpack_from(s.buf, 0)
                remaining = 9 + ((hdr[0] << 8) | hdr[1]) - len(s.buf)
                if remaining >= length and hdr[2] != _DATA:
                    ftype = hdr[2]
                    sid = hdr[4] & 0x7FFFFFFF
                    s.buf = bytearray()
                    s.marks = []
                    s.skip = remaining - length
                    s.pad = 0
                    s.skip_half = None
                    if ftype in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                        self._block_lost(s, side, sid, ts_ns, "header block lost in a capture gap")
                    return
        # The framing is lost: whole frames may have vanished, header blocks among them.
        self._lose_framing(s, side, length, ts_ns)

    def end(self, reason: str, ts_ns: int) -> None:
        if not self.active:
            return
        etype = "timeout" if reason == "timeout" else "connection"
        after = f" after {self.goaway[1]}" if self.goaway is not None else ""
        for side, s in enumerate(self._sides):
            if s.state == _SYNC and s.buf:
                self._take_final(s, side, ts_ns)
        for s in self._sides:
            if s.block is not None and s.block_sid in self._streams:
                half = self._half(self._streams[s.block_sid], self._sides.index(s), ts_ns)
                half.error("connection ended in a header block")
            s.state = _DEAD
            s.buf = bytearray()
            s.marks = []
        for st in list(self._streams.values()):
            self._finish(
                st, (etype, f"connection ended ({reason}){after} in stream {st.sid}"), at_end=True
            )
        self.active = False

    # ------------------------------------------------------------------ framing

    def _take_final(self, s: _Side, side: int, ts_ns: int) -> None:
        """Frames held back for want of a next frame header to confirm the alignment, when no
        more data follows (a gap or the end): a frame ending exactly at the buffer's end."""
        buf = s.buf
        pos = self._parse(s, side, buf, ts_ns, len(buf), final=True)
        if s.buf is buf and pos:
            s.marks = consume(s.buf, s.marks, pos)

    def _parse(
        self,
        s: _Side,
        side: int,
        buf: bytes | bytearray,
        ts_ns: int,
        carried: int,
        final: bool = False,
    ) -> int:
        """Consume what can be consumed of buf; return the position reached."""
        pos = 0
        end = len(buf)
        if s.state == _START:
            pos = self._start(s, side, buf)
            if s.state == _START:
                return pos
        if s.state == _SYNC:
            pos = self._sync(s, buf, pos, final)
            if s.state == _SYNC:
                return pos
        max_block = self.limits.max_header_block
        while True:
            skip = s.skip
            if skip:
                take = end - pos
                if take <= 0:
                    return pos
                if take > skip:
                    take = skip
                half = s.skip_half
                if half is not None:
                    data_left = skip - s.pad
                    if data_left > 0:
                        self._body(half, buf, pos, pos + (take if take < data_left else data_left))
                pos += take
                s.skip = skip = skip - take
                if skip == 0:
                    if half is not None:
                        half.ts_last = ts_ns
                        if s.skip_end:
                            self._end_half(s.skip_sid, side, half, ts_ns)
                    s.skip_half = None
                continue
            if end - pos < 9:
                return pos
            a, b, ftype, flags, sid = _HEADER.unpack_from(buf, pos)
            length = (a << 8) | b
            sid &= 0x7FFFFFFF
            self.frames += 1
            fts = ts_ns if pos >= carried else ts_at(s.marks, pos)
            if s.block is not None and ftype != _CONTINUATION:
                # RFC 9113 §6.10: nothing may come between a header block's frames.
                self._block_lost(s, side, s.block_sid, fts, "header block interrupted by a frame")
                s.block = None
            if ftype == _DATA:
                pad = 0
                if flags & _PADDED:
                    if end - pos < 10:
                        self.frames -= 1
                        return pos
                    pad = buf[pos + 9]
                    if length < 1 or pad > length - 1:
                        self._skip_frame(s, length)
                        pos += 9
                        continue
                    pos += 1
                    length -= 1
                pos += 9
                half = self._data_half(sid, side, fts)
                if half is not None:
                    half.wire += 9 + length + (1 if flags & _PADDED else 0)
                    if half.tally is not None:
                        half.tally.frame_start()
                s.skip = length
                s.pad = pad
                s.skip_half = half
                s.skip_sid = sid
                s.skip_end = bool(flags & _END_STREAM)
                if length == 0 and half is not None:
                    half.ts_last = fts
                    if s.skip_end:
                        self._end_half(sid, side, half, fts)
                continue
            limit = (
                max_block
                if ftype in (_HEADERS, _CONTINUATION, _PUSH_PROMISE)
                else MAX_CONTROL_FRAME
            )
            if length > limit:
                pos += 9
                self._oversized(s, side, ftype, flags, sid, length, fts)
                continue
            if end - pos < 9 + length:
                self.frames -= 1
                return pos
            payload = bytes(buf[pos + 9 : pos + 9 + length])
            pos += 9 + length
            self._frame(s, side, ftype, flags, sid, payload, fts)

    def _start(self, s: _Side, side: int, buf: bytes | bytearray) -> int:
        n = len(buf)
        k = min(n, _PREFACE_LEN)
        if buf[:k] == PREFACE[:k]:
            if n < _PREFACE_LEN:
                return 0  # wait for the rest of it
            self._learn_roles(side)
            self.recognised = True
            s.hpack = HpackDecoder(self.limits.max_table_bytes)
            s.state = _FRAMES
            return _PREFACE_LEN
        if n < 9:
            return 0
        if buf[3] == _SETTINGS and _plausible(buf, 0, s.max_frame) and not buf[4] & 1:
            # A SETTINGS frame first: the server's connection preface, a fresh HPACK table.
            s.hpack = HpackDecoder(self.limits.max_table_bytes)
            s.state = _FRAMES
            return 0
        s.state = _SYNC
        return 0

    def _sync(self, s: _Side, buf: bytes | bytearray, pos: int, final: bool = False) -> int:
        """Look for a frame boundary from pos; the position to parse from (or to keep from)."""
        end = len(buf)
        start = pos
        max_frame = s.max_frame
        while end - pos >= 9:
            if _plausible(buf, pos, max_frame):
                nxt = pos + 9 + ((buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2])
                if (end - nxt >= 9 and _plausible(buf, nxt, max_frame)) or (final and nxt == end):
                    s.state = _FRAMES
                    self.stats.bytes_skipped += pos - start
                    self.recognised = True
                    return pos
                if end - nxt < 9 and not final:
                    # Wait for the next frame header to confirm this one: accepting a frame
                    # because the data ends where it ends would depend on how the bytes were
                    # cut into segments (at the connection's end it is accepted: `final`).
                    break
            pos += 1
        # Keep at most one frame's worth to search on when more data comes.
        keep_from = max(pos, end - (9 + max_frame + 9))
        self.stats.bytes_skipped += keep_from - start
        return keep_from

    def _skip_frame(self, s: _Side, length: int) -> None:
        s.skip = length
        s.pad = 0
        s.skip_half = None

    def _oversized(
        self, s: _Side, side: int, ftype: int, flags: int, sid: int, length: int, ts: int
    ) -> None:
        """A frame longer than we buffer: its payload is skipped."""
        self.stats.frames_oversized += 1
        self._skip_frame(s, length)
        if ftype in (_HEADERS, _PUSH_PROMISE):
            self._block_lost(s, side, sid, ts, "header block over max_header_block skipped")
            if not flags & _END_HEADERS:
                s.block = bytearray()
                s.block_sid = sid
                s.block_over = True
                s.block_type = ftype
            if ftype == _HEADERS and flags & _END_STREAM and sid:
                st = self._streams.get(sid)
                if st is not None:
                    self._end_half(sid, side, self._half(st, side, ts), ts)
        elif ftype == _CONTINUATION:
            self._block_lost(
                s, side, s.block_sid or sid, ts, "header block over max_header_block skipped"
            )
            s.block_over = True
            if flags & _END_HEADERS:
                self._end_block_over(s, side, ts)

    def _frame(
        self, s: _Side, side: int, ftype: int, flags: int, sid: int, payload: bytes, ts: int
    ) -> None:
        if ftype == _HEADERS:
            if not sid:
                return
            frag = _unpad(payload, flags)
            if frag is None:
                self._block_lost(s, side, sid, ts, "malformed HEADERS frame (padding)")
                return
            if flags & _PRIORITY_FLAG:
                frag = frag[5:]
            if flags & _END_HEADERS:
                self._block(
                    s, side, _HEADERS, sid, 0, frag, bool(flags & _END_STREAM), ts, 9 + len(payload)
                )
            else:
                s.block = bytearray(frag)
                s.block_sid = sid
                s.block_type = _HEADERS
                s.block_end_stream = bool(flags & _END_STREAM)
                s.block_promised = 0
                s.block_over = False
                s.block_ts = ts
                s.block_wire = 9 + len(payload)
        elif ftype == _CONTINUATION:
            block = s.block
            if block is None or sid != s.block_sid:
                if block is not None:
                    self._block_lost(s, side, s.block_sid, ts, "CONTINUATION on another stream")
                    s.block = None
                # A CONTINUATION without its HEADERS (lost, or before the capture): the block
                # cannot be decoded and its insertions are unknown.
                if s.hpack.known_entries or not s.hpack.partial:
                    s.hpack.forget()
                return
            s.block_wire += 9 + len(payload)
            if not s.block_over:
                if len(block) + len(payload) > self.limits.max_header_block:
                    self._block_lost(s, side, sid, ts, "header block over max_header_block skipped")
                    s.block_over = True
                    block.clear()
                else:
                    block += payload
            if flags & _END_HEADERS:
                if s.block_over:
                    self._end_block_over(s, side, ts)
                else:
                    s.block = None
                    self._block(
                        s, side, s.block_type, sid, s.block_promised, bytes(block),
                        s.block_end_stream, s.block_ts, s.block_wire,
                    )  # fmt: skip
        elif ftype == _RST_STREAM:
            if sid and len(payload) == 4:
                self.stats.resets += 1
                self._reset(sid, side, _U32.unpack(payload)[0], ts)
        elif ftype == _SETTINGS:
            if not flags & 1 and len(payload) % 6 == 0:
                for i in range(0, len(payload), 6):
                    ident = (payload[i] << 8) | payload[i + 1]
                    if ident == 5:  # SETTINGS_MAX_FRAME_SIZE: what the *peer* may send
                        value = _U32.unpack_from(payload, i + 2)[0]
                        if _DEFAULT_MAX_FRAME <= value < 1 << 24:
                            self._sides[1 - side].max_frame = value
        elif ftype == _PUSH_PROMISE:
            frag = _unpad(payload, flags)
            if frag is None or len(frag) < 4:
                self._block_lost(s, side, sid, ts, "malformed PUSH_PROMISE frame")
                return
            promised = _U32.unpack_from(frag, 0)[0] & 0x7FFFFFFF
            self._learn_roles(1 - side)
            if flags & _END_HEADERS:
                self._block(
                    s, side, _PUSH_PROMISE, sid, promised, frag[4:], False, ts, 9 + len(payload)
                )
            else:
                s.block = bytearray(frag[4:])
                s.block_sid = sid
                s.block_type = _PUSH_PROMISE
                s.block_end_stream = False
                s.block_promised = promised
                s.block_over = False
                s.block_ts = ts
                s.block_wire = 9 + len(payload)
        elif ftype == _GOAWAY and len(payload) >= 8:
            self.stats.goaways += 1
            last = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
            self._goaway(side, last, _U32.unpack_from(payload, 4)[0], payload[8:], ts)
        # PRIORITY, PING, WINDOW_UPDATE and unknown types carry nothing an entry shows.

    def _end_block_over(self, s: _Side, side: int, ts: int) -> None:
        s.block = None
        s.block_over = False
        if s.block_type == _HEADERS and s.block_end_stream:
            st = self._streams.get(s.block_sid)
            if st is not None:
                self._end_half(s.block_sid, side, self._half(st, side, ts), ts)

    def _lose_payload(self, s: _Side, length: int, ts: int) -> None:
        """A gap inside the payload now passing: the framing holds."""
        half = s.skip_half
        if half is not None:
            data_left = s.skip - s.pad
            lost = length if length < data_left else max(data_left, 0)
            if lost:
                half.lost += lost
                half.body_size += lost
                if half.tally is not None:
                    half.tally.gap(lost)
            half.ts_last = ts
        s.skip -= length
        if s.skip == 0:
            if half is not None and s.skip_end:
                self._end_half(s.skip_sid, self._sides.index(s), half, ts)
            s.skip_half = None

    def _lose_framing(self, s: _Side, side: int, length: int, ts: int) -> None:
        if s.skip_half is not None:
            s.skip_half.lost += s.skip - s.pad
            s.skip_half.body_size += s.skip - s.pad
        s.skip = 0
        s.pad = 0
        s.skip_half = None
        s.buf = bytearray()
        s.marks = []
        s.block = None
        s.hpack.forget()
        s.state = _SYNC
        text = f"{length} bytes of the connection lost in a capture gap while the stream was open"
        for st in self._streams.values():
            half = st.halves[side]
            if half is not None and not half.ended:
                half.error(text)
                if half.tally is not None:
                    half.tally.lose()

    def _block_lost(self, s: _Side, side: int, sid: int, ts: int, why: str) -> None:
        """A header block was not decoded: its insertions into the table are unknown."""
        self.stats.header_blocks_lost += 1
        s.hpack.forget()
        st = self._streams.get(sid) if sid else None
        if st is None and sid and sid not in self._closed_set:
            st = self._open(sid, ts)
        if st is not None:
            self._half(st, side, ts).error(why)

    # ------------------------------------------------------------------ streams

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

    def _block(
        self,
        s: _Side,
        side: int,
        btype: int,
        sid: int,
        promised: int,
        block: bytes,
        end_stream: bool,
        ts: int,
        wire: int,
    ) -> None:
        res = s.hpack.decode(block)
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
        pseudo_method = pseudo_status = False
        status = ""
        for name, value in fields:
            if name[:1] != ":":
                break
            if name == ":method":
                pseudo_method = True
            elif name == ":status":
                pseudo_status = True
                status = value
        if pseudo_method:
            self._learn_roles(side)
        elif pseudo_status:
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
            if pseudo_status and status[:1] == "1" and len(status) == 3 and not end_stream:
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

    def _stop(self) -> None:
        self.active = False
        for s in self._sides:
            s.state = _DEAD
            s.buf = bytearray()
            s.marks = []


def _exact(half: _Half | None) -> bool:
    return half is None or half.tally is None or not half.tally.lost


def _count(half: _Half | None) -> int:
    if half is None or half.tally is None:
        return -1
    return half.tally.count


def _message(half: _Half, is_request: bool) -> Message:
    method = target = None
    status: int | None = None
    reason: str | None = None
    authority = None
    errors = half.errors
    for name, value in half.fields:
        if name[:1] != ":":
            break
        if name == ":method":
            method = value
        elif name == ":path":
            target = value
        elif name == ":authority":
            authority = value
        elif name == ":status" and len(value) == 3 and value.isdigit():
            status = int(value)
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = ""
    if is_request:
        if target is None and method == "CONNECT":
            target = authority
        if method is None:
            method = ""
        if target is None:
            target = ""
        status = None
        reason = None
    else:
        method = target = None
        if status is None:
            status = 0
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


def _unpad(payload: bytes, flags: int) -> bytes | None:
    if not flags & _PADDED:
        return payload
    if not payload:
        return None
    pad = payload[0]
    if pad > len(payload) - 1:
        return None
    return payload[1 : len(payload) - pad]


def _plausible(buf: bytes | bytearray, pos: int, max_frame: int) -> bool:
    """Could a frame header start at buf[pos]? (Realignment only; in sync anything goes.)"""
    length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    ftype = buf[pos + 3]
    if ftype > _CONTINUATION or length > max_frame:
        return False
    flags = buf[pos + 4]
    if flags & ~_SYNC_FLAGS[ftype]:
        return False
    sid = (buf[pos + 5] << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
    if sid >= _MAX_SYNC_STREAM_ID:  # also rejects the reserved bit
        return False
    rule = _SYNC_SID[ftype]
    if (rule == 1 and not sid) or (rule == 0 and sid):
        return False
    if ftype == _DATA:
        return length > 0 or bool(flags & _END_STREAM)
    if ftype == _PRIORITY:
        return length == 5
    if ftype in (_RST_STREAM, _WINDOW_UPDATE):
        return length == 4
    if ftype == _SETTINGS:
        return length % 6 == 0 and not (flags & 1 and length)
    if ftype == _PING:
        return length == 8
    if ftype == _GOAWAY:
        return length >= 8
    return ftype != _CONTINUATION  # a block's continuation cannot be decoded without its start
