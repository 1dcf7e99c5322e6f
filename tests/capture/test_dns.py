"""DNS messages from bytes (capture/dns.py): every record type an entry shows, names, damage.

Messages are built with scapy's DNS layer, an encoder independent of our parser.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from scapy.layers.dns import (
    DNS,
    DNSQR,
    DNSRR,
    DNSRRMX,
    DNSRROPT,
    DNSRRSOA,
    DNSRRSRV,
    EDNS0TLV,
)

from capture import dns


def _set(rr: dict[str, Any]) -> dict[str, Any]:
    """A record's fields that are filled (the others must be "")."""
    return {k: v for k, v in rr.items() if v != ""}


def test_every_record_type_an_entry_shows() -> None:
    answers = [
        DNSRR(rrname="a.example", type="A", rdata="192.0.2.7", ttl=30),
        DNSRR(rrname="a.example", type="AAAA", rdata="2001:db8::7", ttl=31),
        DNSRR(rrname="www.example", type="CNAME", rdata="a.example", ttl=32),
        DNSRRSRV(
            rrname="_grpc._tcp.example", priority=10, weight=5, port=50051, target="a.example"
        ),
        DNSRR(rrname="7.2.0.192.in-addr.arpa", type="PTR", rdata="a.example"),
        DNSRR(rrname="example", type="TXT", rdata=["v=spf1 ", "-all"]),
        DNSRRMX(rrname="example", preference=10, exchange="mx.example"),
        DNSRR(rrname="example", type="NS", rdata="ns1.example"),
    ]
    soa = DNSRRSOA(
        rrname="example", mname="ns1.example", rname="hostmaster.example",
        serial=2024030101, refresh=7200, retry=900, expire=1209600, minimum=300, ttl=60,
    )  # fmt: skip
    wire = bytes(
        DNS(
            id=0xBEEF,
            qr=1,
            aa=1,
            rd=1,
            ra=1,
            qd=[DNSQR(qname="a.example", qtype="A")],
            an=answers,
            ns=[soa],
        )
    )
    m = dns.parse(wire)
    assert m is not None and m.error is None
    assert (m.id, m.qr, m.authoritative, m.truncated, m.rcode) == (0xBEEF, True, True, False, 0)
    assert m.questions == [{"class": "IN", "name": "a.example", "type": "A"}]
    assert [_set(rr) for rr in m.answers] == [
        {"class": "IN", "name": "a.example", "type": "A", "ttl": 30, "ip": "192.0.2.7"},
        {"class": "IN", "name": "a.example", "type": "AAAA", "ttl": 31, "ip": "2001:db8::7"},
        {"class": "IN", "name": "www.example", "type": "CNAME", "ttl": 32, "cname": "a.example"},
        {"class": "IN", "name": "_grpc._tcp.example", "type": "SRV", "ttl": 0,
         "srv": "10 5 50051 a.example"},
        {"class": "IN", "name": "7.2.0.192.in-addr.arpa", "type": "PTR", "ttl": 0,
         "ptr": "a.example"},
        {"class": "IN", "name": "example", "type": "TXT", "ttl": 0, "txts": "v=spf1 -all"},
        {"class": "IN", "name": "example", "type": "MX", "ttl": 0, "mx": "10 mx.example"},
        {"class": "IN", "name": "example", "type": "NS", "ttl": 0, "ns": "ns1.example"},
    ]  # fmt: skip
    assert [_set(rr) for rr in m.authorities] == [
        {"class": "IN", "name": "example", "type": "SOA", "ttl": 60,
         "soa": "ns1.example hostmaster.example 2024030101 7200 900 1209600 300"},
    ]  # fmt: skip
    # Every record has all 14 keys of Kubeshark's shape.
    keys = {"name", "type", "class", "ttl", "ip", "ns", "cname", "ptr", "txts", "soa", "srv",
            "mx", "opt", "uri"}  # fmt: skip
    assert all(set(rr) == keys for rr in m.answers + m.authorities)
    assert m.counts == (1, 8, 1, 0) and m.size == len(wire)


def test_opt_record_extended_rcode_and_options() -> None:
    # Extended RCODE 1 (upper bits) with header RCODE 0 is BADVERS (16), RFC 6891 6.1.3.
    opt = DNSRROPT(
        rclass=1232, extrcode=1, z=0, rdata=[EDNS0TLV(optcode=10, optdata=b"\x01\x02\xfe")]
    )
    m = dns.parse(bytes(DNS(id=1, qr=1, qd=[DNSQR(qname="x.example")], ar=[opt])))
    assert m is not None and m.error is None
    assert m.rcode == 16 and dns.rcode_text(m.rcode) == "Bad OPT Version"
    assert _set(m.additionals[0]) == {
        "class": "CLASS1232", "type": "OPT", "ttl": 1 << 24, "opt": "Cookie=0102fe",
    }  # fmt: skip


def test_uri_record_and_unknown_types() -> None:
    uri = struct.pack("!HH", 1, 2) + b"https://example/"
    head = struct.pack("!HHHHHH", 9, 0x8000, 0, 2, 0, 0)
    rr_uri = b"\x00" + struct.pack("!HHIH", 256, 1, 5, len(uri)) + uri
    rr_x = b"\x00" + struct.pack("!HHIH", 65280, 3, 6, 2) + b"\xab\xcd"
    m = dns.parse(head + rr_uri + rr_x)
    assert m is not None and m.error is None
    assert _set(m.answers[0]) == {
        "class": "IN", "type": "URI", "ttl": 5, "uri": "1 2 https://example/",
    }  # fmt: skip
    assert _set(m.answers[1]) == {"class": "CH", "type": "TYPE65280", "ttl": 6}


def test_compression_pointers_are_followed() -> None:
    # scapy compresses repeated names; check the wire really has pointers.
    wire = bytes(
        DNS(
            id=2,
            qr=1,
            qd=[DNSQR(qname="svc.ns.svc.cluster.local")],
            an=[DNSRR(rrname="svc.ns.svc.cluster.local", type="A", rdata="10.0.0.1")],
        ).compress()
    )
    assert b"\xc0\x0c" in wire
    m = dns.parse(wire)
    assert m is not None and m.answers[0]["name"] == "svc.ns.svc.cluster.local"


@pytest.mark.parametrize(
    ("name_bytes", "text"),
    [
        (b"\x00", ""),  # the root
        (b"\x03a.b\x03com\x00", "a\\.b.com"),
        (b"\x02\x00\xff\x00", "\\000\\255"),
        (b"\x04a\\bc\x00", "a\\\\bc"),
    ],
)
def test_names_are_one_readable_unambiguous_line(name_bytes: bytes, text: str) -> None:
    wire = struct.pack("!HHHHHH", 3, 0, 1, 0, 0, 0) + name_bytes + b"\x00\x01\x00\x01"
    m = dns.parse(wire)
    assert m is not None and m.error is None
    assert m.questions[0]["name"] == text


@pytest.mark.parametrize(
    ("question", "why"),
    [
        (b"\xc0\x0c\x00\x01\x00\x01", "name pointer does not point back"),  # points at itself
        (b"\x01a\xc0\x0e\x00\x01\x00\x01", "name pointer does not point back"),  # forward/loop
        (b"\x01a\x40\x00", "unsupported label type 0x40"),
        (b"\x3fabc", "label runs past the end"),
        (b"\x01a", "name runs past the end"),
        (b"\x01a\x00\x00", "question runs past the end"),
        ((b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", "name longer than 255 octets"),
    ],
)
def test_damaged_names_are_reported_not_raised(question: bytes, why: str) -> None:
    wire = struct.pack("!HHHHHH", 4, 0, 1, 0, 0, 0) + question
    m = dns.parse(wire)
    assert m is not None
    assert m.questions == []
    assert m.error is not None and why in m.error and "question 1 of 1" in m.error


def test_a_cut_message_keeps_what_was_read() -> None:
    wire = bytes(
        DNS(
            id=5,
            qr=1,
            qd=[DNSQR(qname="a.example")],
            an=[DNSRR(rrname="a.example", type="A", rdata=f"10.0.0.{i}") for i in range(3)],
        )
    )
    m = dns.parse(wire[:-3])  # the third answer's address is cut
    assert m is not None
    assert [rr["ip"] for rr in m.answers] == ["10.0.0.0", "10.0.0.1"]
    assert m.error == (
        f"malformed DNS message: answer 3 of 3: A record data runs past the end "
        f"(message of {len(wire) - 3} bytes)"
    )


def test_shorter_than_a_header_is_not_dns() -> None:
    assert dns.parse(b"\x00" * 11) is None


def test_names_of_codes() -> None:
    assert dns.type_name(65) == "HTTPS" and dns.type_name(4242) == "TYPE4242"
    assert dns.class_name(255) == "ANY" and dns.class_name(77) == "CLASS77"
    assert dns.rcode_text(3) == "Non-Existent Domain" and dns.rcode_text(12) == "RCODE12"


@pytest.mark.parametrize(
    ("flags", "qdcount", "plausible"),
    [(0x0100, 1, True), (0x8180, 1, True), (0x3800, 1, False), (0x0140, 1, False),
     (0x0100, 17, False)],
)  # fmt: skip
def test_plausible_header(flags: int, qdcount: int, plausible: bool) -> None:
    assert dns.plausible_header(struct.pack("!HHHHHH", 1, flags, qdcount, 0, 0, 0)) is plausible


def test_plausible_header_counts_must_fit_the_length() -> None:
    head = struct.pack("!HHHHHH", 1, 0, 1, 2, 0, 0)  # 1 question, 2 answers: >= 39 bytes
    assert dns.plausible_header(head, 0, 39) is True
    assert dns.plausible_header(head, 0, 38) is False
