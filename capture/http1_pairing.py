"""HTTP/1 pairing: which request a response answers, and the exchanges that come out.

The n-th request pairs with the n-th final response (keep-alive, pipelining), corrected by
packet time where a capture lost or reordered messages (capture/http1.py's docstring has the
rules and why). Slots (`_Txn`) wait in a deque bounded by `HttpLimits.max_pending`; bodies
waiting in them are bounded together by `max_pending_body`. A 101 or a CONNECT answered 2xx
ends HTTP/1 on the connection and may hand it over to another dissector (capture/dissect.py).

`HttpPairing` is the base of `capture.http1.HttpConnection`: one object per connection, its code
split by concern as a chain of classes (pairing, then framing in capture/http1_framing.py, then
the public methods). A chain rather than helper objects: compiled (capture/__init__.py) an
inherited attribute or method is reached as directly as the class's own, where a helper would
add a lookup to every message.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from capture.dissect import TcpDissector
from capture.http1_messages import (
    _DEAD,
    _DEFAULT_LIMITS,
    _DONE,
    _HEAD,
    _LOST,
    _NONE,
    _OPEN,
    _PAUSED,
    _PROBE,
    _REQ,
    _RESP,
    _SYNC,
    Exchange,
    HttpLimits,
    HttpStats,
    Message,
    _Msg,
    _new,
    _Side,
    _Txn,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from capture.http1_messages import UpgradeFactory


class HttpPairing(TcpDissector):
    """Requests to responses for one connection (see the module docstring)."""

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
        self._probe_budget = limits.max_probe  # bytes left before "not HTTP" (roles unknown)
        # limits read by the framing's _quick for every message (limits is frozen)
        self._max_head = limits.max_head
        self._max_body = limits.max_body
        self._max_pending = limits.max_pending

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
        """Parse the bytes held in s.buf (capture/http1_framing.py)."""
        raise NotImplementedError

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

    def _stop(self) -> None:
        """No more HTTP on this connection (not HTTP, or the protocol switched)."""
        self.active = False
        for s in self._sides:
            s.state = _DEAD
            s.msg = None
            s.buf = bytearray()
            s.marks = []


def _upgrade_token(t: _Txn, resp: Message) -> str:
    """The protocol a 101 switched to: the response's Upgrade, else the request's (lower case)."""
    for msg in (resp, t.req):
        if msg is not None:
            for name, value in msg.headers:
                if name.lower() == "upgrade":
                    return value.split(",", 1)[0].strip().lower()
    return ""
