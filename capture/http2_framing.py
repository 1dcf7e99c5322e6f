"""HTTP/2 framing: each direction's bytes cut into frames, and what each frame does to the
connection's streams (capture/http2_streams.py, the base class) and HPACK tables.

In sync a side expects a frame header at its buffer's start; DATA payloads are streamed into
their stream's body as they pass, other frames are buffered whole (bounded). A capture that
begins after the preface, or a gap whose end is not inside a known frame, leaves a side
searching for a frame boundary (capture/http2.py's docstring has the rules).
"""

from __future__ import annotations

from capture.carry import consume, ts_at
from capture.http2_frames import (
    _CONTINUATION,
    _DATA,
    _DEFAULT_MAX_FRAME,
    _END_HEADERS,
    _END_STREAM,
    _GOAWAY,
    _HEADER,
    _HEADERS,
    _PADDED,
    _PREFACE_LEN,
    _PRIORITY_FLAG,
    _PUSH_PROMISE,
    _RST_STREAM,
    _SETTINGS,
    _U32,
    MAX_CONTROL_FRAME,
    PREFACE,
    _plausible,
    _unpad,
)
from capture.http2_hpack import HpackDecoder
from capture.http2_streams import _DEAD, _FRAMES, _START, _SYNC, Http2Streams, _Side


class Http2Framing(Http2Streams):
    """Both directions' framing for one connection (see the module docstring)."""

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
                s.start_block(_HEADERS, sid, 0, frag, bool(flags & _END_STREAM), ts, len(payload))
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
                s.start_block(_PUSH_PROMISE, sid, promised, frag[4:], False, ts, len(payload))
        elif ftype == _GOAWAY and len(payload) >= 8:
            self.stats.goaways += 1
            last = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
            self._goaway(side, last, _U32.unpack_from(payload, 4)[0], payload[8:], ts)
        # PRIORITY, PING, WINDOW_UPDATE and unknown types carry nothing an entry shows.

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
        """A whole header block: decoded with the side's HPACK table, then to its stream."""
        res = s.hpack.decode(block)
        self._headers(side, btype, sid, promised, res, end_stream, ts, wire)

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

    def _stop(self) -> None:
        self.active = False
        for s in self._sides:
            s.state = _DEAD
            s.buf = bytearray()
            s.marks = []
