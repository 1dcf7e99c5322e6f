"""What the TCP reassembler (capture/reassembly.py) puts out and is bounded by: its events
(`Opened`, `Data`, `Gap`, `Closed`), its limits and its counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from capture.counters import Counters

_MiB = 1 << 20
_SECOND_NS = 1_000_000_000

CloseReason: TypeAlias = Literal["fin", "rst", "timeout", "evicted", "eof"]


@dataclass(frozen=True)
class ReassemblyLimits:
    """Every buffer the reassembler keeps, with its bound (overflow behaviour in the module doc)."""

    # Open connections; one more evicts the least recently active (Closed("evicted")).
    max_connections: int = 100_000
    # Out-of-order bytes held per connection (both sides); over it the oldest hole becomes a Gap.
    max_buffered_per_conn: int = 4 * _MiB
    # Out-of-order bytes held over all connections; over it the oldest buffering side is flushed.
    max_buffered_total: int = 256 * _MiB
    # A connection with no packet for this long (packet time) is closed with "timeout".
    idle_timeout_ns: int = 300 * _SECOND_NS
    # A connection closed by FIN/RST is remembered this long so late packets are attributed to
    # it. 30 s covers retransmitted FINs and last ACKs; reuse by a new SYN is recognised anyway.
    closed_linger_ns: int = 30 * _SECOND_NS
    # Closed connections remembered at once; the oldest is forgotten first.
    max_lingering: int = 100_000

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in (
            "max_buffered_per_conn",
            "max_buffered_total",
            "idle_timeout_ns",
            "closed_linger_ns",
            "max_lingering",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """A new connection. Side 0 is the client (see the module doc for how it is chosen)."""

    conn_id: int
    ts_ns: int
    family: int
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    syn_seen: bool


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes of one side's stream, in order, directly after the previous Data/Gap of that side."""

    conn_id: int
    side: int
    data: bytes
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Gap:
    """``length`` bytes of one side's stream were lost before its next Data."""

    conn_id: int
    side: int
    length: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection ended; no more events carry its conn_id."""

    conn_id: int
    reason: CloseReason
    ts_ns: int


Event: TypeAlias = Opened | Data | Gap | Closed


class _DataBuilder:
    """Same slots as ``Data``, but mutable: built with a plain ``__init__``, then re-classed.

    The frozen dataclass ``__init__`` sets each field through ``object.__setattr__``: that cost
    more than the rest of the reassembler's fast path together (scripts/bench_reassembly.py).
    Assigning ``__class__`` between two classes with identical ``__slots__`` is a supported
    CPython operation; the result is an ordinary, immutable ``Data`` (``type(ev) is Data``).
    """

    __slots__ = ("conn_id", "side", "data", "ts_ns")  # noqa: RUF023 (Data's field order)

    def __init__(self, conn_id: int, side: int, data: bytes, ts_ns: int) -> None:
        self.conn_id = conn_id
        self.side = side
        self.data = data
        self.ts_ns = ts_ns


# True when this module runs compiled by mypyc (capture/__init__.py). There a frozen dataclass
# is built by a C constructor as fast as anything, and re-classing is refused (compiled classes
# have fixed layouts), so the trick above is for the interpreter only.
_COMPILED = not __file__.endswith(".py")


def _new_data(conn_id: int, side: int, data: bytes, ts_ns: int) -> Data:
    if _COMPILED:
        return Data(conn_id, side, data, ts_ns)
    ev = _DataBuilder(conn_id, side, data, ts_ns)
    ev.__class__ = Data  # type: ignore[assignment]
    return ev  # type: ignore[return-value]


# --- stats --------------------------------------------------------------------------------------


class ReassemblyStats(Counters):
    """Counters (and three gauges: open_connections, lingering, buffered_bytes)."""

    connections: int  # connections opened
    open_connections: int  # gauge
    lingering: int  # gauge: closed connections still remembered
    closed_fin: int
    closed_rst: int
    closed_timeout: int
    closed_eof: int
    evicted: int  # closed because max_connections was reached
    reused: int  # a SYN started a new connection on a known 4-tuple
    ignored: int  # segments attributed to no connection (RST for an unknown 4-tuple)
    out_of_order: int  # segments buffered ahead of a hole
    retrans_bytes: int  # bytes dropped because they were delivered already
    overlap_bytes: int  # bytes dropped because buffered bytes already covered them
    after_fin_bytes: int  # bytes at or after their side's FIN, dropped
    gaps: int  # Gap events
    gap_bytes: int  # bytes reported lost
    ack_gaps: int  # gaps found because the peer ACKed bytes we never saw
    keepalives: int  # one-byte keep-alive probes found at a stream's start and dropped
    overflow_flushes: int  # holes given up because a buffer limit was hit (both kinds)
    conn_limit_flushes: int
    total_limit_flushes: int
    buffered_bytes: int  # gauge: out-of-order bytes held now
    buffered_peak: int
    linger_dropped: int  # closed connections forgotten early because of max_lingering

    def __init__(self) -> None:
        super().__init__(_REASSEMBLY_COUNTERS)


# In the order as_dict reports them, grouped by meaning.
_REASSEMBLY_COUNTERS = (
    "connections open_connections lingering closed_fin closed_rst closed_timeout closed_eof "
    "evicted reused ignored out_of_order retrans_bytes overlap_bytes after_fin_bytes gaps "
    "gap_bytes ack_gaps keepalives overflow_flushes conn_limit_flushes total_limit_flushes "
    "buffered_bytes buffered_peak linger_dropped"
)
