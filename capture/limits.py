"""Every bound the packet side keeps, in one place: `PipelineLimits` gathers each stage's
(reassembly, HTTP/1, HTTP/2, DNS, UDP flows) with the pipeline's own. Each says what happens
when it is reached; the worker builds one from its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capture.dissect_dns import DnsLimits
from capture.http1_messages import HttpLimits
from capture.http2_streams import Http2Limits
from capture.protobuf import ProtoDecoder
from capture.reassembly_events import ReassemblyLimits

_SECOND_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class UdpLimits:
    """UDP flows (5-tuples) being dissected.

    max_flows: past it the least recently active flow ends ("evicted", counted in
    `udp_flows_evicted`): its pending exchanges are emitted with errors and its pcap closes.
    idle_timeout_ns: a flow with no datagram for this long (packet time) ends ("timeout"); a
    later datagram of the same 5-tuple starts a new flow with a new pcap.
    """

    max_flows: int = 65_536
    idle_timeout_ns: int = 10 * _SECOND_NS


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Every bound the packet side keeps, with what happens when it is reached.

    held_packets_per_conn / held_bytes_total: packets of a connection not yet recognised as HTTP
    are held so its pcap can start at the SYN. Past either bound the oldest held packet of that
    connection is discarded and counted in `held_packets_discarded` (the pcap then starts later;
    entries are unaffected).
    expire_every_ns: how often (in packet time) idle connections are looked for.
    """

    reassembly: ReassemblyLimits = field(default_factory=ReassemblyLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    http2: Http2Limits = field(default_factory=Http2Limits)
    # Decodes gRPC messages to JSON in HTTP/2 entries (--proto-descriptor); None: raw fields.
    protobuf: ProtoDecoder | None = None
    dns: DnsLimits = field(default_factory=DnsLimits)
    udp: UdpLimits = field(default_factory=UdpLimits)
    held_packets_per_conn: int = 64
    held_bytes_total: int = 32 << 20
    expire_every_ns: int = _SECOND_NS
