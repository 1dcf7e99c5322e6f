"""The dissector interface (capture/dissect.py, capture/dissectors.py) as the pipeline applies it.

Fake protocols stand in for real ones here, so what is tested is the contract: which dissector
a connection gets (port hint, content, fallback), the hand-over from one dissector to another
(content choice, HTTP/1.1 Upgrade) keeping the connection's stream and entry numbering, and UDP
datagrams reaching per-flow dissectors with their own pcap streams.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from capture.dissect import MORE, NO, YES
from capture.dissectors import (
    DEFAULT_SPECS,
    HTTP1,
    DissectorSpec,
    Selection,
    parse_decode_as,
)
from capture.entries import Identity
from capture.http1 import Message
from capture.pipeline import Output, Pipeline, PipelineLimits

IDENTITY = Identity(worker="10.0.0.9:30001", node_ip="10.0.0.9", node_name="n")
T0 = 1_700_000_000 * 1_000_000_000
MS = 1_000_000
CLIENT = ("10.1.0.1", 40000)
SERVER = ("10.1.0.2", 80)


class _Conv:
    """Frames of one TCP connection (handshake, then data either way, then FINs)."""

    def __init__(self, client: tuple[str, int] = CLIENT, server: tuple[str, int] = SERVER) -> None:
        self.c, self.s = client, server
        self.seq = [1000, 5000]
        self.t = T0
        self.frames: list[tuple[int, int, bytes]] = []
        self._pkt(0, "S", b"")
        self._pkt(1, "SA", b"")
        self._pkt(0, "A", b"")

    def _pkt(self, side: int, flags: str, data: bytes) -> None:
        src, dst = (self.c, self.s) if side == 0 else (self.s, self.c)
        seq = self.seq[side]
        ack = self.seq[1 - side]
        f = (
            Ether()
            / IP(src=src[0], dst=dst[0])
            / TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack if "A" in flags else 0, flags=flags)
        )
        if data:
            f = f / data
        self.frames.append((self.t, 1, bytes(f)))
        self.t += MS
        self.seq[side] += len(data) + (1 if "S" in flags or "F" in flags else 0)

    def send(self, side: int, data: bytes) -> _Conv:
        self._pkt(side, "PA", data)
        return self

    def close(self) -> _Conv:
        self._pkt(0, "FA", b"")
        self._pkt(1, "FA", b"")
        self._pkt(0, "A", b"")
        return self


def _run(frames: list[tuple[int, int, bytes]], **kw: Any) -> tuple[Output, Pipeline]:
    counter = itertools.count(1)
    p = Pipeline(IDENTITY, allocate_stream=lambda: next(counter), limits=PipelineLimits(), **kw)
    for ts, lt, fr in frames:
        p.feed(ts, lt, fr)
    p.finish()
    return p.pop_output(), p


# --- a fake TCP protocol: every data chunk is one exchange ---------------------------------


class _EchoMaker:
    def __init__(self, stream: int, client_side: int) -> None:
        self.stream = stream
        self.client_side = client_side

    def build(self, ex: Any, index: int) -> dict[str, Any]:
        side, data = ex
        return {
            "stream": self.stream,
            "index": index,
            "proto": "echo",
            "fromClient": side == self.client_side,
            "data": data,
            "error": None,
        }


class Echo:
    """Recognised at once; every data chunk is an exchange; records what it was given. Plain
    Python, not a TcpDissector subclass: what a module that is not compiled writes (it runs
    through capture.dissect's adapter)."""

    made: ClassVar[list[Echo]] = []

    def __init__(self, upgrade_request: Message | None = None, client_side: int = 0) -> None:
        self.name = "echo"
        self.active = True
        self.successor = None
        self.exchanges: list[Any] = []
        self.client_side = client_side
        self.upgrade_request = upgrade_request
        self.seen: list[tuple[str, int, Any]] = []
        Echo.made.append(self)

    def data(self, side: int, data: bytes, ts_ns: int) -> None:
        self.seen.append(("data", side, data))
        self.exchanges.append((side, data.decode()))

    def gap(self, side: int, length: int, ts_ns: int) -> None:
        self.seen.append(("gap", side, length))

    def end(self, reason: str, ts_ns: int) -> None:
        self.seen.append(("end", -1, reason))
        self.active = False

    def pop_exchanges(self) -> list[Any]:
        out, self.exchanges = self.exchanges, []
        return out

    def entry_maker(self, conn: Any, identity: Identity, stream: int, max_decoded: int) -> Any:
        return _EchoMaker(stream, self.client_side or 0)


def _echo_detect(first0: bytes, first1: bytes, conn: Any) -> int:
    first = first0 or first1
    if len(first) < 4:
        return MORE
    return YES if first.startswith(b"ECHO") else NO


ECHO = DissectorSpec(
    name="echo",
    tcp=lambda sel, conn: Echo(),
    detect=_echo_detect,
    upgrade="echo-proto",
    upgraded=lambda sel, req, resp, client: Echo(req, client),
)
SPECS = (HTTP1, ECHO)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


@pytest.fixture(autouse=True)
def _reset() -> None:
    Echo.made.clear()


def test_content_detection_picks_the_protocol_and_replays_the_first_bytes() -> None:
    conv = _Conv().send(0, b"EC").send(0, b"HO one").send(1, b"two").close()
    out, p = _run(conv.frames, specs=SPECS)
    assert [e["data"] for e in out.entries] == ["EC", "HO one", "two"]
    assert [e["index"] for e in out.entries] == [0, 1, 2]
    assert {e["stream"] for e in out.entries} == {1}
    assert Echo.made[0].seen[-1] == ("end", -1, "fin")
    assert p.stats()["connections_echo"] == 1
    # The whole connection, handshake included, is in its pcap.
    assert len([pkt for pkt in out.packets if pkt[0] == 1]) == len(conv.frames)


def test_without_a_match_the_connection_falls_back_to_http1() -> None:
    out, p = _run(_Conv().send(0, GET).send(1, OK).close().frames, specs=SPECS)
    assert [e["request"]["path"] for e in out.entries] == ["/"]
    assert out.entries[0]["response"]["status"] == 200
    assert not Echo.made
    assert p.stats()["connections_http"] == p.stats()["http_connections"] == 1


def test_each_protocols_counters_are_summed_into_the_pipeline_stats() -> None:
    """A spec's `stats` object is shared by every dissector of its protocol; Pipeline.stats
    (/status) shows it as `<protocol>_<counter>`."""

    class EchoStats:
        def __init__(self) -> None:
            self.chunks = 0

        def as_dict(self) -> dict[str, int]:
            return {"chunks": self.chunks}

    class CountingEcho(Echo):
        def __init__(self, stats: EchoStats) -> None:
            super().__init__()
            self.stats = stats

        def data(self, side: int, data: bytes, ts_ns: int) -> None:
            super().data(side, data, ts_ns)
            self.stats.chunks += 1

    counted = DissectorSpec(
        name="echo",
        tcp=lambda sel, conn: CountingEcho(sel.stats["echo"]),
        detect=_echo_detect,
        stats=EchoStats,
    )
    junk = b"\x00\x01binary junk\r\n\r\n"  # before the status line: skipped by HTTP/1
    frames = [
        *_Conv().send(0, b"ECHO 1").send(1, b"two").close().frames,
        *_Conv(client=("10.1.0.3", 40001)).send(0, b"ECHO 3").close().frames,
        *_Conv(client=("10.1.0.4", 40002)).send(1, junk).send(0, GET).send(1, OK).close().frames,
        *_Conv(client=("10.1.0.5", 40003)).send(1, junk).send(0, GET).send(1, OK).close().frames,
    ]
    _, p = _run(frames, specs=(HTTP1, counted))
    stats = p.stats()
    assert stats["echo_chunks"] == 3
    assert stats["http_bytes_discarded"] == 2 * len(junk)
    assert stats["connections_echo"] == stats["connections_http"] == 2


def test_a_gap_ends_the_wait_for_more_bytes() -> None:
    conv = _Conv().send(0, b"EC")
    conv.seq[0] += 100  # 100 bytes never captured
    conv.send(0, b"late").close()
    out, _ = _run(conv.frames, specs=SPECS)
    # "EC" is not enough to tell, the gap forces the choice: the fallback (HTTP/1) gets it
    # and, finding no request line, gives up: no entries, no pcap.
    assert out.entries == []
    assert not Echo.made
    assert out.packets == []


def test_decode_as_hint_wins_over_content() -> None:
    conv = _Conv(server=("10.1.0.2", 9999)).send(0, GET).send(1, OK).close()
    out, _ = _run(conv.frames, specs=SPECS, decode_as={9999: "echo"})
    assert [e["data"] for e in out.entries] == [GET.decode(), OK.decode()]
    out, _ = _run(conv.frames, specs=SPECS)
    assert [e["request"]["path"] for e in out.entries] == ["/"]


def test_upgrade_hands_the_connection_over_mid_stream() -> None:
    upgrade = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n"
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n"
    )
    conv = (
        _Conv()
        .send(0, GET)
        .send(1, OK)
        .send(0, upgrade + b"client-first")  # bytes right after the upgrade request: held
        .send(1, switch + b"server-first")  # bytes after the 101 in the same segment
        .send(0, b"later")
        .close()
    )
    out, _ = _run(conv.frames, specs=SPECS)
    first, *rest = out.entries
    assert first["request"]["path"] == "/" and first["index"] == 0
    # No HTTP/1 entry for the upgrade request: it is the successor's, with its client side.
    (echo,) = Echo.made
    assert echo.upgrade_request is not None and echo.upgrade_request.target == "/up"
    assert echo.client_side == 0
    assert [(e["data"], e["fromClient"]) for e in rest] == [
        ("client-first", True),
        ("server-first", False),
        ("later", True),
    ]
    assert [e["index"] for e in rest] == [1, 2, 3]
    assert first["stream"] == "000000000001.pcap"
    assert {e["stream"] for e in rest} == {1}


def test_upgrade_without_a_registered_protocol_ends_http_as_before() -> None:
    upgrade = b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n"
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n"
    out, _ = _run(_Conv().send(0, upgrade).send(1, switch + b"xx").close().frames, specs=SPECS)
    assert [(e["request"]["path"], e["response"]["status"]) for e in out.entries] == [("/up", 101)]
    assert not Echo.made


CONNECT = b"CONNECT svc.local:7777 HTTP/1.1\r\nHost: svc.local:7777\r\n\r\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def test_a_connect_tunnel_hands_its_bytes_to_content_detection() -> None:
    conv = (
        _Conv(server=("10.1.0.2", 3128))
        .send(0, GET)
        .send(1, OK)
        .send(0, CONNECT + b"ECHO one")  # sent before the answer: held until it comes
        .send(1, ESTABLISHED + b"two")  # the tunnel's first bytes in the answer's segment
        .send(0, b"three")
        .close()
    )
    out, p = _run(conv.frames, specs=SPECS)
    get, connect, *tunnel = out.entries
    assert (get["request"]["path"], connect["request"]["method"]) == ("/", "CONNECT")
    assert (connect["response"]["status"], connect["error"]) == (200, None)
    assert [(e["data"], e["fromClient"]) for e in tunnel] == [
        ("ECHO one", True),
        ("two", False),
        ("three", True),
    ]
    # One connection: its stream and entry numbering go on through the tunnel.
    assert [e["index"] for e in out.entries] == [0, 1, 2, 3, 4]
    assert {e["stream"] for e in tunnel} == {1}
    assert len([pkt for pkt in out.packets if pkt[0] == 1]) == len(conv.frames)
    stats = p.stats()
    assert (stats["connections_dissected"], stats["connections_http"]) == (1, 1)
    assert stats["connections_echo"] == 1
    assert p.connections_text() == "1 connection (echo 1, http 1)"


def test_http1_inside_a_tunnel_and_a_refused_connect() -> None:
    refused = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    conv = (
        _Conv(server=("10.1.0.2", 3128))
        .send(0, CONNECT)
        .send(1, refused)  # not a tunnel: HTTP/1 goes on
        .send(0, CONNECT)
        .send(1, ESTABLISHED)
        .send(0, GET)  # HTTP inside the tunnel: a new HTTP/1 dissector for it
        .send(1, OK)
        .close()
    )
    out, p = _run(conv.frames, specs=SPECS)
    assert [
        (e["request"]["method"], e["request"]["path"], e["response"]["status"], e["index"])
        for e in out.entries
    ] == [
        ("CONNECT", "svc.local:7777", 407, 0),
        ("CONNECT", "svc.local:7777", 200, 1),
        ("GET", "/", 200, 2),
    ]
    assert not Echo.made
    assert p.connections_text() == "1 connection (http 1)"  # counted once for HTTP


def test_a_tls_tunnel_is_the_connect_entry_alone() -> None:
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
    conv = _Conv(server=("10.1.0.2", 3128)).send(0, CONNECT).send(1, ESTABLISHED)
    conv.send(0, hello).send(1, b"\x16\x03\x03\x00\x7a\x02" + bytes(40)).close()
    out, _ = _run(conv.frames, specs=SPECS)
    assert [e["request"]["method"] for e in out.entries] == ["CONNECT"]
    assert len(out.packets) == len(conv.frames)  # the whole connection still in its pcap


@pytest.mark.parametrize("client_side", [0, 1])
def test_a_tunnel_is_a_connection_to_the_connect_target_port(client_side: int) -> None:
    """Detectors and port hints see the tunnel as a connection to the CONNECT target's port
    (tshark's rule), on the side of the tunnel's server."""
    seen: list[tuple[int, int]] = []

    def detect(first0: bytes, first1: bytes, conn: Any) -> int:
        seen.append((conn.client_port, conn.server_port))
        return NO

    spec = DissectorSpec(name="seer", tcp=lambda sel, conn: Echo(), detect=detect)
    sel = Selection(PipelineLimits(), (HTTP1, spec))
    opened = _opened()
    request = Message("CONNECT", "[fd00::1]:7777", None, None, "HTTP/1.1", [], b"", 0, False,
                      0, T0, T0, None)  # fmt: skip
    response = Message(None, None, 200, "OK", "HTTP/1.1", [], b"", 0, False, 0, T0, T0, None)
    d = sel.tunnel(opened, request, response, client_side)
    d.data(client_side, b"hello", T0)
    assert seen[-1] == ((40000, 7777) if client_side == 0 else (7777, 80))
    # A port hint for the target port applies to the tunnel, without looking at content.
    hinted = Selection(PipelineLimits(), (HTTP1, ECHO), {7777: "echo"})
    hinted.tunnel(opened, request, response, client_side).data(client_side, b"hi", T0)
    assert [echo.seen for echo in Echo.made] == [[("data", client_side, b"hi")]]


def _opened() -> Any:
    from capture.reassembly import Opened

    return Opened(1, T0, 4, b"\x0a\x01\x00\x01", 40000, b"\x0a\x01\x00\x02", 80, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("50051=http", (50051, "http")), (" 53 = HTTP ", (53, "http"))],
)
def test_parse_decode_as(text: str, expected: tuple[int, str]) -> None:
    assert parse_decode_as(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("50051", "expected PORT=PROTOCOL"),
        ("0=http", "PORT 1-65535"),
        ("65536=http", "PORT 1-65535"),
        ("x=http", "PORT 1-65535"),
        ("80=gopher", "unknown protocol 'gopher' (known: "),
    ],
)
def test_parse_decode_as_refuses_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        parse_decode_as(text)


def test_selection_refuses_an_unknown_decode_as_name() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        Selection(PipelineLimits(), DEFAULT_SPECS, {80: "gopher"})


# --- UDP ------------------------------------------------------------------------------------


class Count:
    """Accepts datagrams starting with b"Q" or b"R"; pairs Q with the next R of the flow."""

    ends: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.name = "count"
        self.exchanges: list[Any] = []
        self.pending: list[tuple[int, bytes]] = []

    def datagram(self, side: int, payload: bytes, ts_ns: int) -> bool:
        if payload[:1] == b"Q":
            self.pending.append((side, payload))
        elif payload[:1] == b"R" and self.pending:
            q = self.pending.pop(0)
            self.exchanges.append((q, (side, payload)))
        else:
            return False
        return True

    def end(self, reason: str, ts_ns: int) -> None:
        Count.ends.append(reason)
        self.exchanges.extend((q, None) for q in self.pending)
        self.pending = []

    def pop_exchanges(self) -> list[Any]:
        out, self.exchanges = self.exchanges, []
        return out

    def entry_maker(self, flow: Any, identity: Identity, stream: int, max_decoded: int) -> Any:
        return _FlowMaker(flow, stream)


class _FlowMaker:
    def __init__(self, flow: Any, stream: int) -> None:
        self.client = (flow.client_ip, flow.client_port)
        self.stream = stream

    def build(self, ex: Any, index: int) -> dict[str, Any]:
        q, r = ex
        return {
            "stream": self.stream,
            "index": index,
            "client": self.client,
            "q": q[1].decode(),
            "r": r[1].decode() if r else None,
            "error": None if r else {"type": "timeout", "msg": "no answer"},
        }


COUNT = DissectorSpec(name="count", udp=lambda sel: Count(), udp_ports=frozenset({5300}))


def _udp(t: int, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> tuple[int, int, bytes]:
    f = Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / data
    return (T0 + t * MS, 1, bytes(f))


def test_udp_flows_pair_and_time_out_with_a_pcap_each() -> None:
    Count.ends.clear()
    a, b, srv = ("10.1.0.1", 1111), ("10.1.0.1", 2222), ("10.1.0.53", 5300)
    frames = [
        _udp(0, a, srv, b"Q1"),
        _udp(1, srv, a, b"R1"),
        _udp(2, b, srv, b"junk"),  # not the protocol: no flow stream, not filed
        _udp(3, b, srv, b"Q2"),
        _udp(4, ("10.1.0.1", 3333), ("10.1.0.2", 9), b"Q-other-port"),  # not dissected
        # 20 s later (over UdpLimits.idle_timeout_ns): flow b ends with Q2 unanswered, and a
        # new datagram of a's 5-tuple starts a new flow.
        _udp(20_000, a, srv, b"Q3"),
    ]
    out, p = _run(frames, specs=(COUNT,))
    got = [(e["stream"], e["index"], e["q"], e["r"]) for e in out.entries]
    assert got == [(1, 0, "Q1", "R1"), (2, 0, "Q2", None), (3, 0, "Q3", None)]
    assert out.entries[0]["client"] == (bytes([10, 1, 0, 1]), 1111)
    assert Count.ends == ["timeout", "timeout", "eof"]
    assert sorted(out.closed_streams) == [1, 2, 3]
    assert [(s, ts) for s, ts, _, _ in out.packets] == [
        (1, T0),
        (1, T0 + MS),
        (2, T0 + 3 * MS),
        (3, T0 + 20_000 * MS),
    ]
    stats = p.stats()
    assert stats["udp_flows"] == 3
    assert stats["udp_datagrams_rejected"] == 1
    assert stats["decode_udp"] == 5


def test_udp_flows_past_the_limit_evict_the_least_recently_active() -> None:
    from capture.pipeline import UdpLimits

    Count.ends.clear()
    srv = ("10.1.0.53", 5300)
    frames = [_udp(i, ("10.1.0.1", 1000 + i), srv, b"Q%d" % i) for i in range(3)]
    counter = itertools.count(1)
    limits = PipelineLimits(udp=UdpLimits(max_flows=2))
    p = Pipeline(IDENTITY, allocate_stream=lambda: next(counter), limits=limits, specs=(COUNT,))
    for ts, lt, fr in frames:
        p.feed(ts, lt, fr)
    assert [e["q"] for e in p.pop_output().entries] == ["Q0"]
    assert Count.ends == ["evicted"]
    assert p.stats()["udp_flows_evicted"] == 1
