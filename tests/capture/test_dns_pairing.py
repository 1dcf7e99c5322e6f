"""DNS dissectors (capture/dissect_dns.py): pairing, timeouts, TCP framing, entries, summaries.

Driven directly (a dissector per flow/connection, as the pipeline drives it) with messages built
by scapy; the pipeline's side (ports, flows, pcaps) is in tests/golden/test_proto_pcaps.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from capture.dissect_dns import MAX_PROBE, DnsEntryMaker, DnsLimits, DnsTcp, DnsUdp
from capture.entries import Identity, summarize
from capture.reassembly import Opened
from kshark.kfl import compile_query

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S
IDENTITY = Identity(worker="10.0.0.9:30001", node_ip="10.0.0.9", node_name="node-a",
                    local_ips=frozenset({"10.1.0.1"}))  # fmt: skip
FLOW = Opened(
    conn_id=1,
    ts_ns=T0,
    family=4,
    client_ip=socket.inet_aton("10.1.0.1"),
    client_port=40000,
    server_ip=socket.inet_aton("10.96.0.10"),
    server_port=53,
    syn_seen=True,
)


def query(ident: int, name: str = "svc.ns.svc.cluster.local", qtype: str = "A") -> bytes:
    return bytes(DNS(id=ident, rd=1, qd=[DNSQR(qname=name, qtype=qtype)]))


def answer(
    ident: int,
    name: str = "svc.ns.svc.cluster.local",
    ips: tuple[str, ...] = ("10.0.0.1",),
    rcode: int = 0,
    tc: int = 0,
) -> bytes:
    an = [DNSRR(rrname=name, type="A", rdata=ip, ttl=30) for ip in ips]
    return bytes(DNS(id=ident, qr=1, rd=1, ra=1, rcode=rcode, tc=tc, qd=[DNSQR(qname=name)], an=an))


def udp(*datagrams: tuple[int, bytes, int], limits: DnsLimits | None = None) -> DnsUdp:
    d = DnsUdp(limits or DnsLimits())
    for side, payload, ts in datagrams:
        assert d.datagram(side, payload, ts)
    return d


def entries(d: Any, ends: Any = FLOW, tcp: bool = False) -> list[dict[str, Any]]:
    maker = DnsEntryMaker(ends, IDENTITY, 7, tcp=tcp)
    return [maker.build(ex, i) for i, ex in enumerate(d.pop_exchanges())]


def shape(e: dict[str, Any]) -> tuple[Any, ...]:
    req, resp = e["request"], e["response"]
    return (req.get("id"), resp.get("id"), (e["error"] or {}).get("type"))


# --- pairing --------------------------------------------------------------------------------


def test_a_query_pairs_with_its_response_into_one_entry() -> None:
    d = udp((0, query(0x1234), T0), (1, answer(0x1234, ips=("10.0.0.1", "10.0.0.2")), T0 + 3 * MS))
    (e,) = entries(d)
    assert e["request"] == {
        "id": 0x1234,
        "opCode": "Query",
        "questions": [{"class": "IN", "name": "svc.ns.svc.cluster.local", "type": "A"}],
    }
    resp = e["response"]
    assert [a["ip"] for a in resp["answers"]] == ["10.0.0.1", "10.0.0.2"]
    assert (resp["code"], resp["rcode"], resp["truncated"], resp["authoritative"]) == (
        "No Error", 0, False, False,
    )  # fmt: skip
    assert resp["authorities"] == [] and resp["additionals"] == []
    assert e["elapsedTime"] == 3 and e["timestamp"] == T0 // MS and e["error"] is None
    assert e["src"]["ip"] == "10.1.0.1" and e["src"]["port"] == "40000"
    assert e["dst"]["ip"] == "10.96.0.10" and e["dst"]["port"] == "53"
    assert e["outgoing"] is True
    assert e["requestSize"] == len(query(0x1234))
    assert e["stream"] == "000000000007.pcap" and e["id"] == "10.0.0.9:30001/000000000007.pcap-0"
    assert e["entryFile"] == "000000000007_pcap-0_entry.json"
    assert e["protocol"] == {
        "abbr": "DNS", "backgroundColor": "#606060", "fontSize": 12,
        "foregroundColor": "#ffffff", "layer3": "ip", "layer4": "udp",
        "longName": "Domain Name System", "macro": "dns", "name": "dns", "ports": [],
        "priority": 4,
        "referenceLink": "https://www.iana.org/assignments/dns-parameters/dns-parameters.xhtml",
        "version": "0",
    }  # fmt: skip


def test_pairing_needs_the_same_id_from_the_other_side() -> None:
    d = udp(
        (0, query(1), T0),
        (0, answer(1), T0 + MS),  # from the querier's own side: not its answer
        (1, answer(2), T0 + 2 * MS),  # another id
        (1, answer(1), T0 + 3 * MS),
    )
    got = [shape(e) for e in entries(d)]
    assert got == [(None, 1, "pair-not-found"), (None, 2, "pair-not-found"), (1, 1, None)]


def test_the_first_waiting_query_of_an_id_gets_the_answer_and_a_copy_waits() -> None:
    d = udp(
        (0, query(9), T0),
        (0, query(9), T0 + 1 * S),  # retransmitted before any answer
        (1, answer(9), T0 + 1 * S + 2 * MS),
        (1, answer(9), T0 + 1 * S + 3 * MS),  # answers the copy
        (1, answer(9), T0 + 1 * S + 4 * MS),  # a third answer has nothing to answer
    )
    es = entries(d)
    assert [shape(e) for e in es] == [(9, 9, None), (9, 9, None), (None, 9, "pair-not-found")]
    assert [e["elapsedTime"] for e in es] == [1002, 3, 0]


def test_an_unanswered_query_times_out_and_a_late_answer_is_alone() -> None:
    limits = DnsLimits(query_timeout_ns=5 * S)
    d = udp((0, query(1), T0), (0, query(2), T0 + 5 * S), (1, answer(1), T0 + 6 * S), limits=limits)
    es = entries(d)
    assert [shape(e) for e in es] == [(1, None, "timeout"), (None, 1, "pair-not-found")]
    assert es[0]["error"]["msg"] == "no response within 5 s (id 1)"
    assert es[0]["response"] == {} and es[0]["responseSize"] == 0
    # A lone response's entry puts the responder in dst: src is the side that asked.
    assert es[1]["src"]["ip"] == "10.1.0.1" and es[1]["request"] == {}
    assert (d.stats.queries_timeout, d.stats.responses_unpaired) == (1, 1)
    d.end("eof", T0 + 7 * S)
    (e,) = entries(d)
    assert shape(e) == (2, None, "pair-not-found")
    assert e["error"]["msg"] == "no response seen for this query (id 2; the capture ended)"
    assert (d.stats.queries_unanswered, d.stats.flows_evicted) == (1, 0)


def test_a_flow_evicted_with_queries_waiting_is_counted() -> None:
    d = udp((0, query(1), T0), (0, query(2), T0 + MS))
    d.end("evicted", T0 + 2 * MS)
    assert [shape(e) for e in entries(d)] == [
        (1, None, "pair-not-found"),
        (2, None, "pair-not-found"),
    ]
    assert (d.stats.flows_evicted, d.stats.queries_unanswered) == (1, 2)


def test_queries_still_waiting_when_a_flow_idles_out_are_timeouts() -> None:
    d = udp((0, query(1), T0))
    d.end("timeout", T0 + 10 * S)
    assert [shape(e) for e in entries(d)] == [(1, None, "timeout")]


def test_too_many_waiting_queries_evict_the_oldest() -> None:
    d = udp(*((0, query(i), T0 + i * MS) for i in range(4)), limits=DnsLimits(max_pending=3))
    (e,) = entries(d)
    assert shape(e) == (0, None, "pair-not-found")
    assert e["error"]["msg"] == "evicted: more than max_pending=3 queries waiting"
    assert d.stats.queries_evicted == 1


def test_udp_rejects_what_is_not_dns() -> None:
    d = DnsUdp(DnsLimits())
    assert d.datagram(0, b"\x00" * 11, T0) is False  # shorter than a header
    assert d.datagram(0, struct.pack("!HHHHHH", 1, 0x7800, 1, 0, 0, 0), T0) is False  # opcode 15
    assert d.datagram(0, struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab", T0) is False
    assert d.exchanges == []
    assert d.stats.messages_rejected == 3


def test_damage_after_the_question_is_kept_as_a_dissection_error() -> None:
    cut = answer(3, ips=("10.0.0.1", "10.0.0.2"))[:-2]
    d = udp((0, query(3), T0), (1, cut, T0 + MS))
    (e,) = entries(d)
    assert e["error"]["type"] == "dissection"
    assert "answer 2 of 2: A record data runs past the end" in e["error"]["msg"]
    assert [a["ip"] for a in e["response"]["answers"]] == ["10.0.0.1"]
    assert d.stats.messages_malformed == 1


def test_a_truncated_answer_says_so() -> None:
    d = udp((0, query(4), T0), (1, answer(4, ips=(), tc=1), T0 + MS))
    (e,) = entries(d)
    assert e["response"]["truncated"] is True and e["response"]["answers"] == []
    assert e["error"] is None


# --- TCP --------------------------------------------------------------------------------------


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


def tcp_run(chunks: list[tuple[int, bytes]], end: str = "fin") -> DnsTcp:
    d = DnsTcp(DnsLimits())
    for i, (side, data) in enumerate(chunks):
        d.data(side, data, T0 + i * MS)
    d.end(end, T0 + len(chunks) * MS)
    return d


QUERIES = [query(i, f"{i}.example") for i in range(1, 6)]
ANSWERS = [answer(i, f"{i}.example", rcode=3) for i in range(1, 6)]


def test_tcp_several_messages_in_one_segment_and_one_across_segments() -> None:
    stream = framed(*ANSWERS)
    d = tcp_run([(0, framed(*QUERIES)), (1, stream[:5]), (1, stream[5:70]), (1, stream[70:])])
    es = entries(d, tcp=True)
    assert [shape(e) for e in es] == [(i, i, None) for i in range(1, 6)]
    assert all(e["response"]["code"] == "Non-Existent Domain" for e in es)
    assert {e["protocol"]["layer4"] for e in es} == {"tcp"}
    assert d.client_side == 0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_tcp_any_split_of_the_streams_gives_the_same_entries(data: st.DataObject) -> None:
    streams = [framed(*QUERIES), framed(*ANSWERS)]
    whole = [shape(e) for e in entries(tcp_run([(0, streams[0]), (1, streams[1])]), tcp=True)]
    chunks: list[tuple[int, bytes]] = []
    for side, stream in enumerate(streams):
        cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
        bounds = [0, *cuts, len(stream)]
        chunks += [(side, stream[a:b]) for a, b in itertools.pairwise(bounds)]
    # Each direction keeps its order; the two interleave with every query before its answer.
    assert [shape(e) for e in entries(tcp_run(chunks), tcp=True)] == whole


def test_tcp_roles_come_from_the_first_message() -> None:
    d = tcp_run([(0, framed(ANSWERS[0])), (1, framed(QUERIES[1])), (0, framed(ANSWERS[1]))])
    assert d.client_side == 1
    es = entries(d, tcp=True)
    assert [shape(e) for e in es] == [(None, 1, "pair-not-found"), (2, 2, None)]
    assert es[1]["src"]["ip"] == "10.96.0.10"  # side 1 asked: the reassembler's guess was wrong


def test_tcp_gap_resynchronises_on_the_next_message_start() -> None:
    d = DnsTcp(DnsLimits())
    d.data(0, framed(QUERIES[0], QUERIES[1])[:-4], T0)  # the second query's end is lost
    d.gap(0, 4, T0 + MS)
    d.data(0, framed(QUERIES[1])[5:], T0 + 2 * MS)  # mid-message: skipped
    d.data(0, framed(QUERIES[2]), T0 + 3 * MS)
    d.data(1, framed(ANSWERS[0], ANSWERS[2]), T0 + 4 * MS)
    d.end("fin", T0 + 5 * MS)
    assert [shape(e) for e in entries(d, tcp=True)] == [(1, 1, None), (3, 3, None)]
    assert d.skipped == len(framed(QUERIES[1])) - 4 + len(framed(QUERIES[1])) - 5
    assert d.stats.bytes_skipped == d.skipped


def test_tcp_capture_starting_mid_connection_finds_the_first_whole_message() -> None:
    d = tcp_run([(0, framed(QUERIES[0])[7:]), (0, framed(QUERIES[1])), (1, framed(ANSWERS[1]))])
    assert [shape(e) for e in entries(d, tcp=True)] == [(2, 2, None)]


def test_tcp_that_is_not_dns_is_given_up() -> None:
    d = DnsTcp(DnsLimits())
    junk = b"\x16\x03\x01\x02\x00" + b"\x01" * 1000  # a TLS ClientHello on port 53
    for i in range(MAX_PROBE // len(junk) + 1):
        assert d.active
        d.data(0, junk, T0 + i * MS)
    assert not d.active and d.client_side is None and d.exchanges == []


# --- entries, KFL and the summary form ----------------------------------------------------------


def _dns_entries() -> list[dict[str, Any]]:
    aaaa = bytes(
        DNS(
            id=2,
            qr=1,
            qd=[DNSQR(qname="v6.example", qtype="AAAA")],
            an=[DNSRR(rrname="v6.example", type="AAAA", rdata="2001:db8::1")],
        )
    )
    d = udp(
        (0, query(1), T0),
        (1, answer(1, ips=("10.0.0.7",)), T0 + MS),
        (0, query(2, "v6.example", "AAAA"), T0 + 2 * MS),
        (1, aaaa, T0 + 3 * MS),
        (0, query(3, "nope.example"), T0 + 4 * MS),
        (1, answer(3, "nope.example", ips=(), rcode=3), T0 + 5 * MS),
    )
    return entries(d)


def test_kfl_field_paths_on_dns_entries() -> None:
    es = _dns_entries()

    def ids(q: str) -> list[int]:
        cq = compile_query(q)
        return [e["request"]["id"] for e in es if cq.match(e)]

    assert ids("dns") == [1, 2, 3]
    assert ids("dns and udp") == [1, 2, 3]
    assert ids('dns and response.answers[0].ip == "10.0.0.7"') == [1]
    assert ids('dns and request.questions[0].type == "AAAA"') == [2]
    assert ids("dns and response.rcode == 3") == [3]
    assert ids('response.code == "Non-Existent Domain"') == [3]
    assert ids('request.questions[0].name.endsWith(".example")') == [2, 3]
    assert ids("http or tcp") == []


def test_summary_form_of_dns_entries() -> None:
    first, _, nx = (summarize(e) for e in _dns_entries())
    assert (first["method"], first["summary"], first["status"]) == (
        "A", "svc.ns.svc.cluster.local", 0,
    )  # fmt: skip
    assert first["methodQuery"] == 'request.questions[0].type == "A"'
    assert first["summaryQuery"] == 'request.questions[0].name == "svc.ns.svc.cluster.local"'
    assert first["statusQuery"] == "response.rcode == 0"
    assert (nx["summary"], nx["status"]) == ("nope.example", 3)
    assert first["proto"]["abbr"] == "DNS"
    # Each query the summary gives selects the entry it came from.
    e = _dns_entries()[2]
    s = summarize(e)
    for key in ("methodQuery", "summaryQuery", "statusQuery"):
        assert compile_query(s[key]).match(e), key


def test_summary_of_a_lone_response_and_of_an_unanswered_query() -> None:
    d = udp((1, answer(5, "only.example"), T0), (0, query(6, "waits.example"), T0 + MS))
    d.end("eof", T0 + 2 * MS)
    lone, waiting = (summarize(e) for e in entries(d))
    assert (lone["summary"], lone["summaryQuery"]) == (
        "only.example",
        'response.questions[0].name == "only.example"',
    )
    assert (waiting["summary"], waiting["status"], waiting["statusQuery"]) == (
        "waits.example", 0, "",
    )  # fmt: skip


def test_ipv6_and_tcp_variants_of_the_protocol_object() -> None:
    v6 = dataclasses.replace(
        FLOW,
        family=6,
        client_ip=socket.inet_pton(socket.AF_INET6, "fd00::1"),
        server_ip=socket.inet_pton(socket.AF_INET6, "fd00::a"),
    )
    d = tcp_run([(0, framed(QUERIES[0])), (1, framed(ANSWERS[0]))])
    (e,) = entries(d, v6, tcp=True)
    assert (e["protocol"]["layer3"], e["protocol"]["layer4"]) == ("ipv6", "tcp")
    assert e["src"]["ip"] == "fd00::1"
