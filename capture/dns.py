"""DNS messages (RFC 1035 and its updates) from bytes, in the shape Kubeshark's entries use.

`parse(message)` reads one whole message (a UDP payload, or one message of a TCP stream with
its length prefix removed) into a `DnsMessage`: the header fields, and each section's records
already as the dicts an entry carries (Kubeshark's DNS shape, researched from its dissector and
documented samples; see docs/entries.md): a question is `{"name", "type", "class"}`, a
resource record `{"name", "type", "class", "ttl", "ip", "ns", "cname", "ptr", "txts", "soa",
"srv", "mx", "opt", "uri"}` with the one field its type fills and "" in the others.

Hand-written rather than a library: dnspython's `from_wire` raises on the first malformed byte
and keeps nothing, while a passive dissector must report what a cut or damaged message does
hold (a snap length or a truncated answer ends mid-record); and reading the 14 fields above
costs less than converting dnspython's objects. The format is small and fixed.

Policies:
* Names: labels joined with ".", no trailing dot; the root is "" (as Kubeshark, whose Go
  library gives that). Compression pointers are followed only backwards (RFC 1035 4.1.4 lets
  them point to a prior occurrence), at most `MAX_POINTERS` of them per name, and a name longer
  than 255 octets on the wire is malformed: crafted loops cost nothing. A byte that is not
  printable ASCII, and "." or "\\" inside a label, are written `\\DDD` / `\\.` / `\\\\` as in a
  zone file, so a name is always one readable, unambiguous line.
* Type and class names: the IANA mnemonics (`A`, `AAAA`, `HTTPS`, ...), `TYPE<n>` / `CLASS<n>`
  for others (RFC 3597). Response codes and opcodes: the texts Kubeshark shows ("No Error",
  "Non-Existent Domain", "Query") with the extended RCODE of an OPT record folded in.
* Record data: A/AAAA → `ip`; NS, CNAME, PTR → the name; MX → "preference exchange"; SRV →
  "priority weight port target"; SOA → "mname rname serial refresh retry expire minimum" (the
  zone-file order); TXT → its character-strings concatenated (RFC 7208 3.3); URI → "priority
  weight target"; OPT → "Name=hex" per option, comma-separated (as Kubeshark's library prints
  them). Other types fill none of the fields; their type and TTL are still there.
* Damage: parsing stops at the first record that runs past the message's end or cannot be
  read; what was read is kept and `error` says where and why. A message shorter than its
  12-byte header is not DNS (`parse` returns None).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, NamedTuple

MAX_POINTERS = 32  # compression pointers followed in one name
MAX_NAME = 255  # octets of a name on the wire (RFC 1035 3.1)

_HEADER = struct.Struct("!HHHHHH").unpack_from
_U16 = struct.Struct("!H").unpack_from
_RR_FIXED = struct.Struct("!HHIH").unpack_from  # type, class, ttl, rdlength
_SOA_TAIL = struct.Struct("!IIIII").unpack_from
_SRV_HEAD = struct.Struct("!HHH").unpack_from

TYPES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 36: "KX",
    37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY",
    46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM",
    52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY",
    62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF", 108: "EUI48", 109: "EUI64",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY",
    256: "URI", 257: "CAA",
}  # fmt: skip
CLASSES = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
OPCODES = {0: "Query", 1: "Inverse Query", 2: "Status", 4: "Notify", 5: "Update", 6: "DSO"}
# The response-code texts of Kubeshark's entries (its Go DNS library's), RFC 6895 numbering.
RCODES = {
    0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
    4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
    7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
    9: "Server Not Authoritative for zone", 10: "Name not contained in zone",
    16: "Bad OPT Version", 17: "Key not recognized", 18: "Signature out of time window",
    19: "Bad TKEY Mode", 20: "Duplicate key name", 21: "Algorithm not supported",
    22: "Bad Truncation", 23: "Bad Cookie",
}  # fmt: skip
OPTIONS = {
    3: "NSID", 5: "DAU", 6: "DHU", 7: "N3U", 8: "EDNSClientSubnet", 9: "EDNSExpire",
    10: "Cookie", 11: "EDNSKeepAlive", 12: "Padding", 13: "Chain", 14: "EDNSKeyTag",
    15: "ExtendedDNSError", 16: "EDNSClientTag", 17: "EDNSServerTag",
}  # fmt: skip

_T_A, _T_NS, _T_CNAME, _T_SOA, _T_PTR, _T_MX, _T_TXT = 1, 2, 5, 6, 12, 15, 16
_T_AAAA, _T_SRV, _T_OPT, _T_URI = 28, 33, 41, 256

# Label bytes written as themselves: printable ASCII except "." and "\\".
_PLAIN = frozenset(range(0x21, 0x7F)) - {0x2E, 0x5C}
# What a name made only of such labels (joined by ".") consists of: deleted, nothing is left.
_NAME_BYTES = bytes(sorted(_PLAIN | {0x2E}))


def type_name(t: int) -> str:
    return TYPES.get(t) or f"TYPE{t}"


def class_name(c: int) -> str:
    return CLASSES.get(c) or f"CLASS{c}"


def rcode_text(rcode: int) -> str:
    return RCODES.get(rcode) or f"RCODE{rcode}"


class DnsMessage(NamedTuple):
    """One DNS message as parsed. Sections hold entry-ready dicts (see the module doc)."""

    id: int
    qr: bool  # a response
    opcode: int
    authoritative: bool
    truncated: bool  # the TC bit
    recursion_desired: bool
    recursion_available: bool
    rcode: int  # with an OPT record's extended bits
    questions: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    authorities: list[dict[str, Any]]
    additionals: list[dict[str, Any]]
    counts: tuple[int, int, int, int]  # QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT as sent
    size: int  # bytes of the message
    error: str | None  # why not all of it could be read


class _Malformed(Exception):
    pass


def _label_text(raw: bytes) -> str:
    out = []
    for b in raw:
        if b in _PLAIN:
            out.append(chr(b))
        elif b == 0x2E:
            out.append("\\.")
        elif b == 0x5C:
            out.append("\\\\")
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The name at pos and the offset after it (where its first pointer or its end is)."""
    labels: list[bytes] = []
    end = -1
    wire = 0
    pointers = 0
    n = len(msg)
    while True:
        if pos >= n:
            raise _Malformed("name runs past the end")
        length = msg[pos]
        if length == 0:
            if end < 0:
                end = pos + 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise _Malformed("name pointer runs past the end")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            pointers += 1
            if target >= pos or pointers > MAX_POINTERS:
                raise _Malformed("name pointer does not point back")
            pos = target
            continue
        if kind:
            raise _Malformed(f"unsupported label type 0x{length:02x}")
        wire += length + 1
        if wire > MAX_NAME:
            raise _Malformed("name longer than 255 octets")
        stop = pos + 1 + length
        if stop > n:
            raise _Malformed("label runs past the end")
        labels.append(msg[pos + 1 : stop])
        pos = stop
    raw = b".".join(labels)
    # The common name: plain bytes only, and no "." inside a label. One check, one decode.
    if not raw.translate(None, _NAME_BYTES) and raw.count(0x2E) == len(labels) - 1:
        return raw.decode("ascii"), end
    return ".".join([_label_text(label) for label in labels]), end


# Every record has Kubeshark's 14 keys; those its type does not use stay "".
_RR_TEMPLATE: dict[str, Any] = dict.fromkeys(
    ("class", "cname", "ip", "mx", "name", "ns", "opt", "ptr", "soa", "srv", "ttl", "txts",
     "type", "uri"),
    "",
)  # fmt: skip


def _record(msg: bytes, pos: int) -> tuple[dict[str, Any], int, int, int]:
    """One resource record: (its dict, offset after it, type, ttl field as sent)."""
    name, pos = read_name(msg, pos)
    if pos + 10 > len(msg):
        raise _Malformed("record header runs past the end")
    rtype, rclass, ttl, rdlen = _RR_FIXED(msg, pos)
    start = pos + 10
    stop = start + rdlen
    if stop > len(msg):
        raise _Malformed(f"{type_name(rtype)} record data runs past the end")
    rr = _RR_TEMPLATE.copy()  # cheaper than the 14-key literal: 4 keys differ
    rr["class"] = CLASSES.get(rclass) or f"CLASS{rclass}"
    rr["name"] = name
    rr["ttl"] = ttl
    rr["type"] = TYPES.get(rtype) or f"TYPE{rtype}"
    data = msg[start:stop]
    if rtype == _T_A:
        if rdlen != 4:
            raise _Malformed(f"A record of {rdlen} bytes")
        rr["ip"] = socket.inet_ntop(socket.AF_INET, data)
    elif rtype == _T_AAAA:
        if rdlen != 16:
            raise _Malformed(f"AAAA record of {rdlen} bytes")
        rr["ip"] = socket.inet_ntop(socket.AF_INET6, data)
    elif rtype == _T_CNAME:
        rr["cname"] = _name_in(msg, start, stop)
    elif rtype == _T_NS:
        rr["ns"] = _name_in(msg, start, stop)
    elif rtype == _T_PTR:
        rr["ptr"] = _name_in(msg, start, stop)
    elif rtype == _T_MX:
        if rdlen < 3:
            raise _Malformed("MX record too short")
        rr["mx"] = f"{_U16(msg, start)[0]} {_name_in(msg, start + 2, stop)}"
    elif rtype == _T_SRV:
        if rdlen < 7:
            raise _Malformed("SRV record too short")
        prio, weight, port = _SRV_HEAD(msg, start)
        rr["srv"] = f"{prio} {weight} {port} {_name_in(msg, start + 6, stop)}"
    elif rtype == _T_SOA:
        mname, p = read_name(msg, start)
        rname, p = read_name(msg, p)
        if p + 20 > stop:
            raise _Malformed("SOA record too short")
        serial, refresh, retry, expire, minimum = _SOA_TAIL(msg, p)
        rr["soa"] = f"{mname} {rname} {serial} {refresh} {retry} {expire} {minimum}"
    elif rtype == _T_TXT:
        parts = []
        p = 0
        while p < rdlen:
            q = p + 1 + data[p]
            if q > rdlen:
                raise _Malformed("TXT string runs past the record")
            parts.append(data[p + 1 : q].decode("utf-8", "replace"))
            p = q
        rr["txts"] = "".join(parts)
    elif rtype == _T_URI:
        if rdlen < 4:
            raise _Malformed("URI record too short")
        prio, weight = struct.unpack_from("!HH", data)
        rr["uri"] = f"{prio} {weight} {data[4:].decode('utf-8', 'replace')}"
    elif rtype == _T_OPT:
        options = []
        p = 0
        while p + 4 <= rdlen:
            code, length = struct.unpack_from("!HH", data, p)
            value = data[p + 4 : p + 4 + length]
            if len(value) < length:
                raise _Malformed("OPT option runs past the record")
            options.append(f"{OPTIONS.get(code, f'Option{code}')}={value.hex()}")
            p += 4 + length
        rr["opt"] = ",".join(options)
    return rr, stop, rtype, ttl


def _name_in(msg: bytes, start: int, stop: int) -> str:
    name, end = read_name(msg, start)
    if end > stop:
        raise _Malformed("name runs past its record")
    return name


def plausible_header(msg: bytes | bytearray, pos: int = 0, length: int = -1) -> bool:
    """Could a DNS message (of `length` bytes, if known) start at pos? The opcode is assigned,
    the Z bit clear, the question count sane, and the records counted fit in the length (a
    question takes at least 5 bytes, a record 11). For finding a message boundary in a TCP
    stream again."""
    if len(msg) < pos + 12:
        return False
    _, flags, qd, an, ns, ar = _HEADER(msg, pos)
    if (flags >> 11) & 0xF not in OPCODES or flags & 0x40 or qd > 16:
        return False
    return length < 0 or 12 + 5 * qd + 11 * (an + ns + ar) <= length


def parse(msg: bytes) -> DnsMessage | None:
    """The message (see the module doc); None when it is shorter than a header."""
    n = len(msg)
    if n < 12:
        return None
    ident, flags, qd, an, ns, ar = _HEADER(msg, 0)
    questions: list[dict[str, Any]] = []
    sections: list[list[dict[str, Any]]] = [[], [], []]
    rcode = flags & 0xF
    error: str | None = None
    pos = 12
    where = "question 1"
    try:
        for i in range(qd):
            where = f"question {i + 1} of {qd}"
            name, pos = read_name(msg, pos)
            if pos + 4 > n:
                raise _Malformed("question runs past the end")
            qtype, qclass = struct.unpack_from("!HH", msg, pos)
            pos += 4
            questions.append({"class": class_name(qclass), "name": name, "type": type_name(qtype)})
        for section, count, label in (
            (sections[0], an, "answer"),
            (sections[1], ns, "authority"),
            (sections[2], ar, "additional"),
        ):
            for i in range(count):
                where = f"{label} {i + 1} of {count}"
                rr, pos, rtype, ttl = _record(msg, pos)
                if rtype == _T_OPT:
                    rcode |= (ttl >> 20) & 0xFF0  # RFC 6891 6.1.3: the upper 8 bits of RCODE
                section.append(rr)
    except (_Malformed, struct.error, ValueError) as exc:
        error = f"malformed DNS message: {where}: {exc} (message of {n} bytes)"
    return DnsMessage(
        ident,
        bool(flags & 0x8000),
        (flags >> 11) & 0xF,
        bool(flags & 0x0400),
        bool(flags & 0x0200),
        bool(flags & 0x0100),
        bool(flags & 0x0080),
        rcode,
        questions,
        sections[0],
        sections[1],
        sections[2],
        (qd, an, ns, ar),
        n,
        error,
    )
