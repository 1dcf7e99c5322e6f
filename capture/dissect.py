"""The dissector contract: what a protocol module implements and what the pipeline calls.

A protocol is a sans-IO module (bytes and packet timestamps in, exchanges out) with one class
per transport it runs on:

* `TcpDissector`: one instance per TCP connection. The pipeline feeds it the reassembler's
  events for that connection, per direction (`data` / `gap`), then `end` once. It sets
  `client_side` when it recognises its protocol (the pipeline then numbers the connection's
  pcap and starts writing entries), `active = False` when it decides the bytes are not its
  protocol (or it is done), and appends completed request/response pairs to `exchanges`.
* `UdpDissector`: one instance per UDP flow (5-tuple, side 0 = the client, i.e. the side that
  is not on the service port). `datagram` gets each whole datagram's payload and says whether
  it was this protocol; `end` is the flow's end (idle for `UdpLimits.idle_timeout_ns`, evicted,
  or end of input). Timeouts inside a flow are the dissector's, in packet time, checked when
  a datagram arrives and at the end.
* `EntryMaker`: turns one connection's (or flow's) exchanges into entry dicts (ENTRY.md). The
  dissector makes it (`entry_maker`) once it is recognised: it alone knows the shape of its
  exchanges. An exchange is any object its EntryMaker understands.
* `DissectorStats`: the protocol's counters (drops, cuts, unpaired messages), one object per
  protocol and pipeline, shared by all its dissectors (each gets it when it is made).

Hand-over: a dissector may pass the connection to another by setting `successor` (and then
becoming inactive). The pipeline replaces it, keeping the connection's stream and entry
numbering. Two things use it: the choice of a dissector from a connection's first bytes
(capture/dissectors.py's `Sniffer` hands over to the one chosen) and a protocol switch
mid-stream (HTTP/1.1 `Upgrade: h2c`: the HTTP/1 dissector makes the HTTP/2 one with the upgrade
request and feeds it the bytes that followed). A successor made after recognition must have
`client_side` set; bytes it should see first are fed to it by its predecessor before the
predecessor returns.

Why base classes rather than a typing.Protocol: the pipeline calls `data` for nearly every
packet, and compiled (capture/__init__.py) a method of a native base class is a direct C call
through a vtable, while a Protocol-typed call is a generic Python attribute lookup. mypyc does
not let an interpreted class inherit from a compiled one, so only a module compiled with these
(listed in `capture.NATIVE_MODULES`) may subclass them. A dissector written in plain Python
(a module not compiled, a test's fake) does not subclass: it has the same attributes and
methods, and `as_tcp` / `as_udp` / `as_maker` wrap it in an adapter that calls it generically.
(Allowing interpreted subclasses on the bases instead was measured with
scripts/bench_pipeline.py: it made every HTTP/1 packet slower, by more than the noise.)

Rules every dissector keeps (docs/internals.md, "The dissector contract"): sans-IO (no clock,
no I/O), bounded buffers with a documented behaviour when full, never raise on bad input (mark
the exchange's error, or give up with `active = False`), time only from the events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from capture.counters import Counters

if TYPE_CHECKING:
    from capture.entries import ConnectionEnds, Identity

# What a content detector answers (capture/dissectors.py): this protocol / not it / more bytes.
NO = 0
YES = 1
MORE = 2


class DissectorStats(Counters):
    """Counters the dissectors of one protocol share in a pipeline: what each connection or
    flow dropped, cut or could not pair, summed per protocol.

    capture/dissectors.py makes one per protocol (`DissectorSpec.stats`) and hands it to every
    dissector it makes for that protocol, which adds to an attribute where it counts: the cost
    is that int add, and nothing per connection is left to collect when it ends.
    `Pipeline.stats()` shows them as `<protocol>_<counter>` (the worker's /status and /metrics).
    A subclass declares its counters as capture/counters.py says.
    """


class EntryMaker:
    """Builds the entries of one connection or UDP flow; made by its dissector."""

    __slots__ = ()

    def build(self, ex: Any, index: int) -> dict[str, Any]:
        """The entry (ENTRY.md) of the exchange numbered `index` on this connection."""
        raise NotImplementedError


class TcpDissector:
    """Base of every per-connection TCP dissector (see the module docstring)."""

    def __init__(self, name: str = "") -> None:
        # The protocol's name (its DissectorSpec's), for counters: "http", "dns", ...
        self.name = name
        # The side (0/1, as in the reassembler's events) the client is on, once the protocol
        # is recognised; None while it is not (yet).
        self.client_side: int | None = None
        # False once the dissector wants no more bytes (not its protocol, or finished).
        self.active = True
        # Completed exchanges not popped yet. Read-only for callers: a cheap "anything to
        # pop?" test after every call; pop_exchanges() takes them.
        self.exchanges: list[Any] = []
        # Set (with active = False) to hand the connection over to another dissector.
        self.successor: TcpDissector | None = None

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        """In-order bytes from one direction; `ts_ns` is the packet time they arrived at."""
        raise NotImplementedError

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        """`length` bytes of that direction were lost before its next data."""
        raise NotImplementedError

    def end(self, reason: str, ts_ns: int) -> None:
        """The connection is over ("fin", "rst", "timeout", "evicted", "eof"): emit everything
        pending, with errors for what is incomplete."""
        raise NotImplementedError

    def pop_exchanges(self) -> list[Any]:
        out = self.exchanges
        if not out:
            return []  # never hand out the internal list: later exchanges would appear in it
        self.exchanges = []
        return out

    def entry_maker(
        self, conn: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        """The EntryMaker for this connection's exchanges (called once `client_side` is set).
        `conn`'s client/server are the reassembler's guess; `client_side` corrects it."""
        raise NotImplementedError


class UdpDissector:
    """Base of every per-flow UDP dissector (see the module docstring)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.exchanges: list[Any] = []

    def datagram(self, side: int, payload: bytes, ts_ns: int) -> bool:
        """One datagram's payload from `side` (0 = client). False when it is not this
        protocol: the pipeline does not count the flow as recognised for it."""
        raise NotImplementedError

    def end(self, reason: str, ts_ns: int) -> None:
        """The flow is over ("timeout", "evicted", "eof"): emit everything pending."""
        raise NotImplementedError

    def pop_exchanges(self) -> list[Any]:
        out = self.exchanges
        if not out:
            return []
        self.exchanges = []
        return out

    def entry_maker(
        self, flow: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        """The EntryMaker for this flow (`flow`'s client is side 0)."""
        raise NotImplementedError


# --- dissectors written in plain Python -----------------------------------------------------


def as_tcp(d: Any) -> TcpDissector:
    """`d` itself if it is a TcpDissector, else an adapter calling it (same contract)."""
    return d if isinstance(d, TcpDissector) else PyTcpDissector(d)


def as_udp(d: Any) -> UdpDissector:
    return d if isinstance(d, UdpDissector) else PyUdpDissector(d)


def as_maker(m: Any) -> EntryMaker:
    return m if isinstance(m, EntryMaker) else PyEntryMaker(m)


class PyEntryMaker(EntryMaker):
    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def build(self, ex: Any, index: int) -> dict[str, Any]:
        out: dict[str, Any] = self._inner.build(ex, index)
        return out


class PyTcpDissector(TcpDissector):
    """Runs a plain-Python TCP dissector; its state is copied after every call."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.name)
        self._inner = inner
        self._sync()

    def _sync(self) -> None:
        inner = self._inner
        self.client_side = inner.client_side
        self.active = inner.active
        self.exchanges = inner.exchanges
        if self.successor is None and inner.successor is not None:
            self.successor = as_tcp(inner.successor)

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        self._inner.data(side, data, ts_ns)
        self._sync()

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        self._inner.gap(side, length, ts_ns)
        self._sync()

    def end(self, reason: str, ts_ns: int) -> None:
        self._inner.end(reason, ts_ns)
        self._sync()

    def pop_exchanges(self) -> list[Any]:
        out: list[Any] = self._inner.pop_exchanges()
        self.exchanges = self._inner.exchanges
        return out

    def entry_maker(
        self, conn: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        return as_maker(self._inner.entry_maker(conn, identity, stream, max_decoded))


class PyUdpDissector(UdpDissector):
    """Runs a plain-Python UDP dissector."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner.name)
        self._inner = inner
        self.exchanges = inner.exchanges

    def datagram(self, side: int, payload: bytes, ts_ns: int) -> bool:
        ok = bool(self._inner.datagram(side, payload, ts_ns))
        self.exchanges = self._inner.exchanges
        return ok

    def end(self, reason: str, ts_ns: int) -> None:
        self._inner.end(reason, ts_ns)
        self.exchanges = self._inner.exchanges

    def pop_exchanges(self) -> list[Any]:
        out: list[Any] = self._inner.pop_exchanges()
        self.exchanges = self._inner.exchanges
        return out

    def entry_maker(
        self, flow: ConnectionEnds, identity: Identity, stream: int, max_decoded: int
    ) -> EntryMaker:
        return as_maker(self._inner.entry_maker(flow, identity, stream, max_decoded))
