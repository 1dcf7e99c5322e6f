"""DNS in the real captures of ../shared/pcaps-proto against tshark, and the DNS fixtures.

The oracle (`../shared/pcaps-proto/oracle/<name>.tsv`, its README says how tshark 4.0.17 made
it) lists every DNS message tshark dissected: query or response, id, first question, and for
responses the RCODE, ANCOUNT and TC bit. An entry holds one query and/or one response, so what
is compared is the multiset of messages our entries hold, field by field, and the number of
matched pairs (entries with both), counted by the README's rule from the oracle rows.

mDNS is not DNS by default, as in tshark (which calls it `mdns`); with `--decode-as 5353=dns`
its messages match tshark's and the one deviation, in pairing, is stated and checked below.

The fixtures (fixtures/dns/, scripts/make_dns_fixtures.py) cover what the real captures lack:
DNS over TCP split and pipelined, a truncated UDP answer and its TCP retry, an unanswered query
(timeout), IPv6.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from capture import dns
from capture.entries import Identity
from capture.pipeline import Output, Pipeline
from capture.sources import CaptureFile
from tests.support.generated import check_generated

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT.parent / "shared" / "pcaps-proto"
ORACLE = PROTO / "oracle"
FIXTURES = ROOT / "fixtures" / "dns"

DNS_CAPTURES = [
    "df-dns-tcp-multi.pcap",
    "df-nxdomain.pcap",
    "ndpi-dns_fragmented.pcap",
    "sv-dns-tcp-multirequest-buffer.pcap",
    "sv-dns-udp-eve-log-srv-input.pcap",
    "sv-dns-udp-google.com-a-aaaa-mx.pcap",
    "sv-dns-udp-nxdomain-soa.pcap",
    "zeek-dns-edns-ecs.pcap",
    "zeek-dns-two-responses.pcap",
    "zeek-long-connection.pcap",
]
IDENTITY = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="golden")

Message = tuple[str, int, str, str, int | None, int | None, bool]


def run(path: Path, **kw: Any) -> tuple[Output, dict[str, int]]:
    counter = iter(range(1, 1 << 40))
    pipeline = Pipeline(IDENTITY, allocate_stream=lambda: next(counter), **kw)
    out = Output()
    for ts_ns, linktype, frame in CaptureFile(path):
        pipeline.feed(ts_ns, linktype, frame)
        _add(out, pipeline.pop_output())
    pipeline.finish()
    _add(out, pipeline.pop_output())
    return out, pipeline.stats()


def _add(out: Output, more: Output) -> None:
    out.entries += more.entries
    out.packets += more.packets
    out.closed_streams += more.closed_streams


def oracle_rows(name: str) -> list[dict[str, str]]:
    rows = []
    with (ORACLE / f"{name}.tsv").open(newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            fields: dict[str, str] = {}
            for part in row["fields"].split(" "):
                key, _, value = part.partition("=")
                fields[key] = value
            rows.append({**row, **fields})
    return rows


def oracle_messages(name: str) -> Counter[Message]:
    out: Counter[Message] = Counter()
    for r in oracle_rows(name):
        response = r["kind"] == "response"
        out[
            (
                r["kind"],
                int(r["id"], 16),
                "" if r["qname"] == "-" else r["qname"].split(",")[0],
                "" if r["qtype"] == "-" else r["qtype"].split(",")[0],
                int(r["rcode"]) if response else None,
                int(r["answers"]) if response else None,
                r.get("tc") == "1",
            )
        ] += 1
    return out


def oracle_pairs(name: str) -> int:
    """The README's rule: a response with the id of an earlier unmatched query of the same
    tshark conversation; a repeated response is not counted twice."""
    waiting: Counter[tuple[str, str]] = Counter()
    pairs = 0
    for r in oracle_rows(name):
        key = (r["stream"], r["id"])
        if r["kind"] == "query":
            waiting[key] += 1
        elif waiting[key]:
            waiting[key] -= 1
            pairs += 1
    return pairs


_QTYPES = {name: number for number, name in dns.TYPES.items()}


def _qtype(questions: list[dict[str, Any]]) -> str:
    """The first question's type as tshark's oracle writes it (a number)."""
    if not questions:
        return ""
    t = questions[0]["type"]
    return str(_QTYPES[t]) if t in _QTYPES else t.removeprefix("TYPE")


def our_messages(entries: list[dict[str, Any]]) -> Counter[Message]:
    out: Counter[Message] = Counter()
    for e in entries:
        q, r = e["request"], e["response"]
        if q:
            name = q["questions"][0]["name"] if q["questions"] else ""
            out[("query", q["id"], name, _qtype(q["questions"]), None, None, False)] += 1
        if r:
            name = r["questions"][0]["name"] if r["questions"] else ""
            row = ("response", r["id"], name, _qtype(r["questions"]), r["rcode"],
                   len(r["answers"]), r["truncated"])  # fmt: skip
            out[row] += 1
    return out


def dns_entries(out: Output) -> list[dict[str, Any]]:
    return [e for e in out.entries if e["protocol"]["name"] == "dns"]


@pytest.mark.parametrize("name", DNS_CAPTURES)
def test_dns_messages_and_pairs_match_tshark(name: str) -> None:
    out, stats = run(PROTO / name)
    entries = dns_entries(out)
    assert len(entries) == len(out.entries)
    assert our_messages(entries) == oracle_messages(name)
    assert sum(1 for e in entries if e["request"] and e["response"]) == oracle_pairs(name)
    # Every frame of these captures is DNS (or a fragment or TCP segment of it): all filed.
    assert len(out.packets) == stats["decode_frames"]
    assert sorted(out.closed_streams) == sorted({s for s, _, _, _ in out.packets})


@pytest.mark.parametrize("name", [*DNS_CAPTURES, "fixtures/dns-unanswered-v6.pcap"])
def test_what_went_unpaired_is_counted_in_the_stats(name: str) -> None:
    """/status's `dns_*` counters (capture/dissect_dns.py's DnsStats, summed over flows) agree
    with the entries a user sees."""
    out, stats = run(FIXTURES / name[9:] if name.startswith("fixtures/") else PROTO / name)
    kinds = Counter(
        (bool(e["request"]), bool(e["response"]), e["error"]["type"] if e["error"] else None)
        for e in out.entries
    )
    assert stats["dns_queries_timeout"] == kinds[True, False, "timeout"]
    assert stats["dns_queries_unanswered"] == kinds[True, False, "pair-not-found"]
    assert stats["dns_responses_unpaired"] == kinds[False, True, "pair-not-found"]
    assert stats["dns_queries_evicted"] == stats["dns_flows_evicted"] == 0
    assert stats["dns_bytes_skipped"] == stats["dns_messages_rejected"] == 0


def test_dns_counters_of_a_capture_with_every_kind() -> None:
    _, stats = run(PROTO / "zeek-dns-edns-ecs.pcap")  # resolver side: mostly answers
    assert (stats["dns_responses_unpaired"], stats["dns_queries_timeout"]) == (50, 5)
    _, stats = run(PROTO / "zeek-dns-two-responses.pcap")
    assert stats["dns_responses_unpaired"] == 1  # the second answer to the one query


def test_ip_fragmented_answers_are_reassembled_and_filed_whole() -> None:
    out, stats = run(PROTO / "ndpi-dns_fragmented.pcap")
    assert stats["decode_fragments_reassembled"] == 7
    big = [e for e in dns_entries(out) if e["responseSize"] > 1500]
    assert len(big) == 7 and all(e["error"] is None for e in big)
    for e in big:
        stream = int(e["stream"].removesuffix(".pcap"))
        assert sum(1 for s, _, _, _ in out.packets if s == stream) >= 3  # query + 2 fragments


def test_dns_over_tcp_says_tcp() -> None:
    out, _ = run(PROTO / "sv-dns-tcp-multirequest-buffer.pcap")
    entries = dns_entries(out)
    assert {e["protocol"]["layer4"] for e in entries} == {"tcp"}
    assert [e["request"]["questions"][0]["name"] for e in entries] == [
        f"{i}.google.com" for i in range(20)
    ]
    assert {e["response"]["code"] for e in entries} == {"Non-Existent Domain"}


def test_mdns_is_not_dns_unless_asked() -> None:
    out, stats = run(PROTO / "zeek-mdns.pcap")
    assert out.entries == [] and stats["decode_udp"] == 0


def test_mdns_decoded_as_dns_matches_tshark_but_for_pairing() -> None:
    out, _ = run(PROTO / "zeek-mdns.pcap", decode_as={5353: "dns"})
    entries = dns_entries(out)
    assert our_messages(entries) == oracle_messages("zeek-mdns.pcap")
    # Deviation: tshark counts 6 pairs (id 0, same conversation), kshark none. The evidence:
    # each of those responses was multicast by the querier itself (same address and port,
    # same direction, to 224.0.0.251 / ff02::fb), so it answers no query of the flow: a DNS
    # answer comes from the other end.
    assert oracle_pairs("zeek-mdns.pcap") == 6
    assert sum(1 for e in entries if e["request"] and e["response"]) == 0
    queriers = {(e["stream"], e["src"]["ip"]) for e in entries if e["request"]}
    lone = [e for e in entries if e["response"]]
    assert len(lone) == 6
    assert all((e["stream"], e["dst"]["ip"]) in queriers for e in lone)
    assert {e["src"]["ip"] for e in lone} == {"224.0.0.251", "ff02::fb"}


# --- fixtures ---------------------------------------------------------------------------------

EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dns_fixture(name: str) -> None:
    spec = EXPECTED[name]
    out, stats = run(FIXTURES / name)
    assert stats["decode_frames"] == spec["packets"] == len(out.packets)
    got = []
    for e in out.entries:
        q, r = e["request"], e["response"]
        questions = (q or r)["questions"]
        got.append(
            {
                "layer4": e["protocol"]["layer4"],
                "id": (q or r)["id"],
                "question": [questions[0]["name"], questions[0]["type"]],
                "query": bool(q),
                "answers": [
                    a["ip"] or a["srv"] or a["cname"] for a in r["answers"]
                ] if r else None,
                "rcode": r["rcode"] if r else 0,
                "truncated": r["truncated"] if r else False,
                "error": e["error"]["type"] if e["error"] else None,
                "elapsedTime": e["elapsedTime"],
                "timestamp": e["timestamp"],
                "src": e["src"]["ip"],
            }
        )  # fmt: skip
    assert got == spec["entries"]


def test_dns_fixtures_are_what_the_script_writes(tmp_path: Path) -> None:
    check_generated("make_dns_fixtures.py", FIXTURES, tmp_path)


# DNS inside the HTTP corpus (../shared/pcaps, whose oracle is HTTP only): (queries, responses)
# as tshark 4.0.17's `-Y dns` lists them, and the one difference explained.
HTTP_CORPUS_DNS = {"cs-http_espn.pcapng": (14, 14), "dpkt-nb6-http.pcap": (8, 8)}


@pytest.mark.parametrize("name", sorted(HTTP_CORPUS_DNS))
def test_dns_in_the_http_corpus(name: str) -> None:
    out, _ = run(ROOT.parent / "shared" / "pcaps" / name)
    entries = dns_entries(out)
    got = (sum(1 for e in entries if e["request"]), sum(1 for e in entries if e["response"]))
    assert got == HTTP_CORPUS_DNS[name]
    if name == "dpkt-nb6-http.pcap":
        # tshark lists 8 queries and 9 responses: its 9th is frame 34, an ICMP port-unreachable quoting the
        # second answer to id 0x56bb (the client had closed its socket). A quoted copy inside
        # an ICMP error is not a DNS message on the wire; kshark has the two real answers.
        answers = [e for e in entries if e["response"] and e["response"]["id"] == 0x56BB]
        assert len(answers) == 2
