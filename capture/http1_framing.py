"""HTTP/1 framing: the state machine that cuts each direction's bytes into messages.

Per side: probing for the first start line (roles unknown), a head, a body of known length,
chunked (size lines, data, trailers), a body read until the connection closes, resynchronising
after a gap or bad framing, paused while an Upgrade/CONNECT waits for its answer (capture/
http1.py's docstring has the policies). Heads are parsed by capture/http1_heads.py; complete
messages go to the pairing (capture/http1_pairing.py, the base class).

Speed: the usual data holds one whole message with a clean head, and `_quick` takes it in one
function (head from the cache, body sliced, paired in order); anything else goes the general
way (`_parse` / `_head`), and the split-invariance tests check that both agree.
"""

from __future__ import annotations

from capture.carry import consume, ts_at
from capture.http1_heads import (
    _HEX,
    _MAX_CHUNK_DIGITS,
    _MAX_CHUNK_LINE,
    _MAX_LENGTH_DIGITS,
    _REQ_LINE,
    _REQUEST_HEADS,
    _RESPONSE_HEADS,
    _SPACED_REQ_LINE,
    _STATUS_LINE,
    _bad_start,
    _content_length,
    _find_start,
    _plausible_start,
    _quick_head,
    _request,
    _response,
)
from capture.http1_messages import (
    _CDATA,
    _CEND,
    _CLOSE,
    _CSIZE,
    _DEAD,
    _DONE,
    _HEAD,
    _LEN,
    _NONE,
    _OPEN,
    _PROBE,
    _REQ,
    _RESP,
    _SYNC,
    _TRAILER,
    Exchange,
    Message,
    _anomaly,
    _fail,
    _Msg,
    _new,
    _Side,
    _Txn,
)
from capture.http1_pairing import HttpPairing


class HttpFraming(HttpPairing):
    """Both directions' framing for one connection (see the module docstring)."""

    def _consume(self, s: _Side, pos: int, buf: bytearray) -> None:
        """Drop the first pos bytes of the carried-over buffer (and their time marks)."""
        if s.buf is buf:  # else the side was reset while parsing (protocol switch, not HTTP)
            s.marks = consume(buf, s.marks, pos)

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
                m.ts_last = ts if pos > cur else ts_at(s.marks, pos - 1)
                if st != _CLOSE:
                    m.remaining -= take
                    if m.remaining == 0:
                        if st == _LEN:
                            s.state = _HEAD
                            self._finish(s, m)
                        else:
                            s.state = _CEND
            elif st in (_CSIZE, _CEND, _TRAILER):
                r = self._chunked(s, st, buf, pos, cur, ts)
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
                    succ.data(side, bytes(buf[pos:n]), ts if pos >= cur else ts_at(s.marks, pos))
                return n
        return pos

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
                if k >= 0 and _bad_start(s.role, buf, pos, k, max_head):
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
            m, cl, te = _request(lines, anomalies, text)
        else:
            r, cl, te = _response(lines, anomalies, text)
            if r is None:  # interim 1xx: consumed, never paired
                return hend
            m = r
        if m.error is not None and not _plausible_start(s.role, buf, pos, max_head):
            return self._not_a_head(s, buf, pos, buf.find(b"\n", pos))
        m.wire = hend - pos
        m.ts_first = ts if pos >= cur else ts_at(s.marks, pos)
        m.ts_last = ts if hend > cur else ts_at(s.marks, hend - 1)
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
            m.ts_last = ts if end > cur else ts_at(s.marks, end - 1)
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
                    _anomaly(m, "Transfer-Encoding and Content-Length both present: chunked wins")
                s.state = _CSIZE
            elif m.is_req:  # RFC 9112 6.3: the request's length cannot be determined
                _fail(m, f"request Transfer-Encoding {te[:40]!r} does not end in chunked")
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
                length = _content_length(m, cl)
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

    def _chunked(
        self, s: _Side, st: int, buf: bytes | bytearray, pos: int, cur: int, ts: int
    ) -> int:
        """The chunked framing between chunk data: a size line, the CRLF after a chunk, the
        trailer lines. The offset to go on from, or -1 to wait for more bytes."""
        if st == _CSIZE:
            return self._chunk_size(s, buf, pos, cur, ts)
        if st == _TRAILER:
            return self._trailer(s, buf, pos, cur, ts)
        m = s.msg
        assert m is not None
        c = buf[pos]
        if c == 13:
            if pos + 1 >= len(buf):
                return -1
            if buf[pos + 1] == 10:
                pos += 2
                m.wire += 2
            else:
                _anomaly(m, "chunk data not followed by CRLF")
        elif c == 10:
            pos += 1
            m.wire += 1
            _anomaly(m, "bare LF in chunked framing")
        else:
            _anomaly(m, "chunk data not followed by CRLF")
        s.state = _CSIZE
        return pos

    def _chunk_size(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> int:
        m = s.msg
        assert m is not None
        k = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
        if k < 0:
            if len(buf) - pos >= _MAX_CHUNK_LINE:
                _fail(m, "chunk-size line too long")
                s.state = _SYNC
                self._finish(s, m)
                return pos
            return -1
        line = buf[pos:k]
        size_text = line.split(b";", 1)[0].strip()
        if _HEX.fullmatch(size_text):
            size_text = size_text.lstrip(b"0") or b"0"  # any number of digits: bound the value
        if len(size_text) > _MAX_CHUNK_DIGITS or not _HEX.fullmatch(size_text):
            _fail(m, f"bad chunk size line {bytes(line[:40])!r}")
            s.state = _SYNC
            self._finish(s, m)
            return pos  # the line itself may be the next start line
        if line[-1:] != b"\r":
            _anomaly(m, "bare LF in chunked framing")
        m.wire += k + 1 - pos
        m.ts_last = ts if k >= cur else ts_at(s.marks, k)
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
                _fail(m, f"trailer section longer than max_head ({self.limits.max_head})")
                s.state = _SYNC
                self._finish(s, m)
                return len(buf)
            return -1
        m.wire += k + 1 - pos
        m.trailer_bytes += k + 1 - pos
        m.ts_last = ts if k >= cur else ts_at(s.marks, k)
        if m.trailer_bytes > self.limits.max_head:
            _fail(m, f"trailer section longer than max_head ({self.limits.max_head})")
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
            _anomaly(m, f"malformed trailer line {line[:64]!r}")
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
            found, role = _find_start(buf, pos, -1)
            if found >= 0:
                self._skip(s, found - pos)
                if self.active:
                    self._learn_roles(side, role)
                return found
            if s.fresh and n - pos <= self.limits.max_head:
                # Perhaps a malformed request: the other side's first line will tell. Keep it.
                return -1 - (n - pos)
        else:
            found, _ = _find_start(buf, pos, s.role)
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

    def _skip(self, s: _Side, count: int) -> None:
        if count <= 0:
            return
        self.stats.bytes_discarded += count
        s.fresh = False
        s.gap_pending = True

    def _reparse(self, s: _Side, side: int) -> None:
        """Parse bytes already held in s.buf (after roles were learnt or a pause ended)."""
        buf = s.buf
        if buf:
            self._consume(s, self._parse(s, side, buf, len(buf) + 1, 0), buf)

    def _head_error(self, s: _Side, buf: bytes | bytearray, pos: int, cur: int, ts: int) -> None:
        """A head longer than max_head: report what it starts with as a failed message."""
        if _plausible_start(s.role, buf, pos, self.limits.max_head):
            self._fragment(
                s,
                buf[pos : pos + self.limits.max_head],
                f"message head longer than max_head ({self.limits.max_head} bytes)",
                "dissection",
                ts if pos >= cur else ts_at(s.marks, pos),
                ts,
            )

    def _partial_head(self, s: _Side, why: str, etype: str, ts: int) -> None:
        """An unfinished head is being dropped: report it if it starts like a message."""
        buf = s.buf
        k = 0
        while k < len(buf) and buf[k] in b"\r\n":
            k += 1
        if k < len(buf) and _plausible_start(s.role, buf, k, self.limits.max_head):
            self._fragment(s, buf[k:], why, etype, ts_at(s.marks, k), ts)

    def _fragment(
        self, s: _Side, frag: bytes | bytearray, why: str, etype: str, ts_first: int, ts_last: int
    ) -> None:
        lines = frag.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
        if len(lines) > 1:
            lines.pop()  # the last line may be cut anywhere
        if s.role == _REQ:
            m, _, _ = _request(lines, None, "\t")
        else:
            r, _, _ = _response(lines, None, "\t")
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
