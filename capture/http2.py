"""Sans-IO HTTP/2 over cleartext (h2c) dissection of one TCP connection, streams paired.

Bytes and packet times go in per side (`data`, `gap`, `end`, like capture.http1's
HttpConnection), finished `Http2Exchange`s come out (`pop_exchanges`), one per HTTP/2 stream:
the request and response as capture.http1 `Message`s (version "HTTP/2.0"), so that entries are
built the same way. Nothing here reads a clock or touches a socket.

`Http2Connection` is the dissector; its work is split by concern: capture/http2_frames.py is
the wire format and detection, capture/http2_framing.py cuts each direction into frames and
applies them, capture/http2_streams.py assembles and pairs each stream's messages (HPACK:
capture/http2_hpack.py; gRPC bodies: capture/grpc.py; entries: capture/http2_entries.py). This
module has the public methods and the rules below, which hold for all of them.

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

from typing import TYPE_CHECKING

from capture.carry import consume
from capture.http2_entries import Http2EntryBuilder
from capture.http2_frames import (
    _CONTINUATION,
    _DATA,
    _HEADER,
    _HEADERS,
    _PUSH_PROMISE,
    PREFACE,
    detect,
    error_code_name,
    looks_like_http2,
)
from capture.http2_framing import Http2Framing
from capture.http2_hpack import HpackDecoder
from capture.http2_streams import (
    _DEAD,
    _FRAMES,
    _SYNC,
    Http2Exchange,
    Http2Limits,
    Http2Stats,
    _Half,
    _Stream,
)

if TYPE_CHECKING:
    from capture.dissect import EntryMaker
    from capture.entries import ConnectionEnds, Identity
    from capture.http1_messages import Message

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


class Http2Connection(Http2Framing):
    """HTTP/2 dissector and stream pairer for one TCP connection (see the module docstring).

    A TcpDissector (capture/dissect.py): `client_side` is set once the roles are known (the
    preface, a pseudo-header, a PUSH_PROMISE, or at the latest when the first exchange is
    emitted: side 0, the reassembler's guess); `exchanges` holds `Http2Exchange`s.
    `Http2Connection(limits, protos, stats)`: `protos` decodes gRPC messages in entries
    (--proto-descriptor); `stats` is shared by a pipeline's connections.
    """

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
