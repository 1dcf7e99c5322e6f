"""Sans-IO HTTP/1.x dissection of one TCP connection, with request/response pairing.

Bytes and packet times go in (`data`, `gap`, `end`), finished `Exchange`s come out
(`pop_exchanges`). Nothing here reads a clock or touches a socket.

`HttpConnection` is the dissector; its work is split by concern: capture/http1_framing.py cuts
each direction into messages, capture/http1_heads.py parses heads (and caches them),
capture/http1_pairing.py pairs requests with responses and ends HTTP/1 at a protocol switch,
capture/http1_messages.py holds what they share. This module has the public methods and the
policies below, which hold for all of them.

Why hand-written and not a library parser:

* httptools (llhttp) is fast, but it rejects the odd requests a passive sniffer must still report
  (0 of 27 requests of zeek-methods.pcap in strict mode, 15 of 27 with every leniency on), and a
  parser that raised cannot resynchronise inside the same stream after a capture gap.
* h11 is a conversation endpoint, not an observer: both peers' state machines must be driven, it
  refuses malformed input, and it measured an order of magnitude slower end to end
  (../shared/reference/perf-baseline.md).
* HTTP/1.x framing is small. `bytes.find` locates heads and chunk lines in C; Python only touches
  head lines and chunk-size lines, never body bytes one at a time. Bodies are sliced, not copied
  byte-wise, and a body longer than `max_body` is counted but not kept.
* Speed: the usual data holds one whole message with a clean head, and the framing's `_quick`
  takes it in one function (no state machine steps); anything else goes the general way
  (`_parse`/`_head`), and the split-invariance tests check that both agree. Heads repeat a great
  deal (the same request polled, the same response head for as long as its Date stays the same),
  so what `_quick` parsed is cached by the raw head, and by the raw line for heads that differ in
  a line or two (http1_heads.py's `_Parsed`: module-wide, bounded, emptied when full; the result
  never depends on what they hold).

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

from typing import TYPE_CHECKING

from capture.entries import EntryBuilder
from capture.http1_framing import HttpFraming
from capture.http1_messages import (
    _CDATA,
    _CEND,
    _CLOSE,
    _DEAD,
    _HEAD,
    _LEN,
    _PAUSED,
    _SYNC,
    Exchange,
    HttpLimits,
    HttpStats,
    Message,
    UpgradeFactory,
    _fail,
)

if TYPE_CHECKING:
    from capture.dissect import EntryMaker
    from capture.entries import ConnectionEnds, Identity

__all__ = ["Exchange", "HttpConnection", "HttpLimits", "HttpStats", "Message", "UpgradeFactory"]


class HttpConnection(HttpFraming):
    """HTTP/1.x dissector and pairer for one TCP connection (see the module docstring).

    `HttpConnection(limits, stats, upgrades, tunnel)` (capture/http1_pairing.py's
    `HttpPairing`): `stats` is shared by a pipeline's connections; `upgrades` maps an Upgrade
    token to the dissector a 101 hands the connection over to, `tunnel` makes the one a CONNECT
    answered 2xx hands it over to (capture/dissect.py, "Hand-over")."""

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
                _fail(m, "chunked framing lost in a capture gap")
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
