"""Capture files → (ts_ns, linktype, frame): capture/sources.py.

Oracles: the pkts column of ../shared/pcaps/README.md (capinfos), dpkt's readers for frames and
timestamps, tshark's printed epoch for the one nanosecond file, and files we craft byte by byte.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import threading
from collections.abc import Generator
from pathlib import Path

import dpkt
import pytest

from capture import sources
from capture.sources import CaptureFile, CaptureOpenError, open_captures

ROOT = Path(__file__).resolve().parents[2]
PCAPS = ROOT.parent / "shared" / "pcaps"
ALL_CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*"))
TRUNCATED = "sv-http-mime-truncated.pcap"


def readme_table() -> dict[str, dict[str, str]]:
    """Rows of the README's summary table, by file name."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in (PCAPS / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["file", "bytes"]:
            header = cells
            continue
        if header and len(cells) == len(header) and cells[0].endswith((".pcap", ".pcapng")):
            rows[cells[0]] = dict(zip(header, cells, strict=True))
        elif header and not line.startswith("|"):
            header = None
    return rows


README = readme_table()

# The README's "link type" column, as numbers.
EXPECTED_LINKTYPE = {
    "sv-decode-sll2-02.pcap": 276,
    "ndpi-log4j-webapp-exploit-sll.pcap": 113,
    "zeek-te-cl-desync.pcap": 228,
    "sv-http-ipv6-null.pcap": 0,
}


def read_all(path: Path | str) -> tuple[list[tuple[int, int, bytes]], CaptureFile]:
    cf = CaptureFile(path)
    return list(cf), cf


def dpkt_records(path: Path) -> list[tuple[float, bytes]]:
    """Every complete record as dpkt sees it (dpkt raises at a truncated tail: stop there)."""
    out: list[tuple[float, bytes]] = []
    with path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        try:
            for ts, buf in reader:
                out.append((float(ts), bytes(buf)))
        except dpkt.NeedData:
            pass
    return out


# -- the shared real captures ------------------------------------------------------------------


def test_readme_table_lists_every_shared_capture() -> None:
    assert sorted(README) == ALL_CAPTURES
    assert len(ALL_CAPTURES) == 25


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_packet_count_and_linktype_match_the_readme(name: str) -> None:
    packets, cf = read_all(PCAPS / name)
    assert len(packets) == int(README[name]["pkts"]) == cf.packets
    assert {lt for _, lt, _ in packets} == {EXPECTED_LINKTYPE.get(name, 1)}
    if name == TRUNCATED:
        assert len(cf.warnings) == 1
    else:
        assert cf.warnings == []


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_frames_and_timestamps_equal_dpkt(name: str) -> None:
    packets, _ = read_all(PCAPS / name)
    expected = dpkt_records(PCAPS / name)
    assert len(packets) == len(expected)
    for (ts_ns, _lt, frame), (ts, buf) in zip(packets, expected, strict=True):
        assert frame == buf
        # dpkt gives float seconds (≈0.2 µs resolution at today's epoch): compare to 1 µs.
        assert abs(ts_ns / 1e9 - ts) < 1e-6
    timestamps = [p[0] for p in packets]
    assert all(isinstance(t, int) for t in timestamps)


def test_nanosecond_pcapng_first_timestamp_is_exact() -> None:
    # `tshark -r zeek-cooper-grill-dvwa.pcapng -c1 -T fields -e frame.time_epoch`
    # prints 1730145002.900383409 (tshark 4.0.17).
    packets, _ = read_all(PCAPS / "zeek-cooper-grill-dvwa.pcapng")
    assert packets[0][0] == 1_730_145_002_900_383_409


def test_microsecond_pcap_first_timestamp_is_exact() -> None:
    # zeek-get.pcap's first record header: ts_sec 1362692526, ts_usec 869344.
    packets, _ = read_all(PCAPS / "zeek-get.pcap")
    assert packets[0][0] == 1_362_692_526_869_344_000


def test_truncated_real_capture_keeps_every_complete_record() -> None:
    path = PCAPS / TRUNCATED
    packets, cf = read_all(path)
    assert len(packets) == cf.packets == 2696
    size = path.stat().st_size
    # The last record header starts 1 byte before the end of the 2,715,460-byte file.
    assert size == 2_715_460
    assert cf.warnings == [f"{path}: truncated record at offset 2715459; kept 2696 packets"]


# -- gzip --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["zeek-get.pcap", "zeek-cooper-grill-dvwa.pcapng", "sv-decode-sll2-02.pcap"]
)
def test_gzip_input_is_detected_by_content_not_name(name: str, tmp_path: Path) -> None:
    plain, _ = read_all(PCAPS / name)
    dest = tmp_path / name  # same name, no .gz: detection must come from the magic bytes
    dest.write_bytes(gzip.compress((PCAPS / name).read_bytes()))
    packets, cf = read_all(dest)
    assert packets == plain
    assert cf.warnings == []
    assert cf.compressed


def test_truncated_gzip_keeps_what_was_decompressed(tmp_path: Path) -> None:
    name = "zeek-1000-requests-one-dropped-response.pcap"
    plain, _ = read_all(PCAPS / name)
    data = gzip.compress((PCAPS / name).read_bytes())
    dest = tmp_path / "cut.pcap.gz"
    dest.write_bytes(data[: len(data) // 2])
    packets, cf = read_all(dest)
    assert 0 < len(packets) < len(plain)
    assert packets == plain[: len(packets)]
    assert len(cf.warnings) == 1
    assert "compressed data ends early" in cf.warnings[0]
    assert f"kept {len(packets)} packets" in cf.warnings[0]


def test_damaged_deflate_data_ends_the_file_with_a_warning(tmp_path: Path) -> None:
    name = "zeek-1000-requests-one-dropped-response.pcap"
    plain, _ = read_all(PCAPS / name)
    data = bytearray(gzip.compress((PCAPS / name).read_bytes()))
    mid = len(data) // 2
    data[mid : mid + 64] = b"\xff" * 64
    dest = tmp_path / "bad.pcap"
    dest.write_bytes(bytes(data))
    packets, cf = read_all(dest)
    # Damaged deflate data may decode to some garbage before zlib notices (then the garbage
    # reads as a corrupt record, or zlib reports the damage): what lies well before the damage
    # must be intact, and the file must end with one warning, not an exception.
    assert len(packets) < len(plain)
    assert packets[: len(plain) // 4] == plain[: len(plain) // 4]
    assert len(cf.warnings) == 1
    assert cf.warnings[0].startswith(f"{dest}: ")
    assert cf.warnings[0].endswith(f"; kept {len(packets)} packets")


def test_gzip_crc_mismatch_is_reported_after_all_packets(tmp_path: Path) -> None:
    name = "zeek-get.pcap"
    plain, _ = read_all(PCAPS / name)
    data = bytearray(gzip.compress((PCAPS / name).read_bytes()))
    data[-8] ^= 0xFF  # the trailer's CRC32
    dest = tmp_path / "crc.pcap"
    dest.write_bytes(bytes(data))
    packets, cf = read_all(dest)
    assert packets == plain
    assert len(cf.warnings) == 1
    assert "CRC check failed" in cf.warnings[0]


# -- crafted classic pcap variants -------------------------------------------------------------

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34


def write_pcap(
    path: Path,
    records: list[tuple[int, bytes]],
    *,
    order: str = "<",
    magic: int = PCAP_MAGIC_US,
    linktype: int = 1,
) -> None:
    """records: (ts_ns, frame). Fractions are written in the magic's unit."""
    extra = 8 if magic == PCAP_MAGIC_MODIFIED else 0
    with path.open("wb") as out:
        out.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
        for ts_ns, frame in records:
            sec, ns = divmod(ts_ns, 1_000_000_000)
            frac = ns if magic == PCAP_MAGIC_NS else ns // 1000
            out.write(struct.pack(order + "IIII", sec, frac, len(frame), len(frame) + 3))
            out.write(bytes(extra))
            out.write(frame)


def some_records(n: int = 50) -> list[tuple[int, bytes]]:
    base = 1_700_000_000_000_000_000
    return [(base + i * 1_234_567_891, bytes([i % 256]) * (40 + 37 * i % 1500)) for i in range(n)]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("magic", [PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAP_MAGIC_MODIFIED])
def test_pcap_byte_orders_and_resolutions(order: str, magic: int, tmp_path: Path) -> None:
    recs = some_records()
    path = tmp_path / "x.pcap"
    write_pcap(path, recs, order=order, magic=magic, linktype=228)
    packets, cf = read_all(path)
    assert cf.warnings == []
    if magic == PCAP_MAGIC_NS:
        expected = [(ts, 228, fr) for ts, fr in recs]  # ns kept exactly
    else:
        expected = [(ts // 1000 * 1000, 228, fr) for ts, fr in recs]
    assert packets == expected


def test_pcap_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    path = tmp_path / "fcs.pcap"
    # bit 28 set = "FCS length present" (plus a length of 4 in bits 29-31 would be 0x80000000)
    write_pcap(path, some_records(3), linktype=0x1000_0001 | 0x8000_0000)
    assert {lt for _, lt, _ in read_all(path)[0]} == {1}


def test_every_truncation_point_of_a_pcap(tmp_path: Path) -> None:
    """Cut zeek-get.pcap at every byte: complete records survive, a partial one is a warning."""
    data = (PCAPS / "zeek-get.pcap").read_bytes()
    full, _ = read_all(PCAPS / "zeek-get.pcap")
    ends = []  # file offset where each record ends
    pos = 24
    while pos < len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        pos += 16 + caplen
        ends.append(pos)
    path = tmp_path / "cut.pcap"
    # every byte of the first records (file header, record headers, data) and of the last
    # record, every 7th byte in between: each cut costs a file write and open
    cuts = [
        *range(24, 600),
        *range(600, len(data) - 600, 7),
        *range(len(data) - 600, len(data) + 1),
    ]
    for cut in cuts:
        path.write_bytes(data[:cut])
        packets, cf = read_all(path)
        complete = sum(1 for e in ends if e <= cut)
        assert packets == full[:complete]
        if cut in ends or cut == 24:
            assert cf.warnings == []
        else:
            start = ends[complete - 1] if complete else 24
            assert cf.warnings == [
                f"{path}: truncated record at offset {start}; kept {complete} packets"
            ]


def test_absurd_caplen_is_a_corrupt_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.pcap"
    recs = some_records(5)
    write_pcap(path, recs)
    data = bytearray(path.read_bytes())
    # the third record's caplen → 0x7fffffff
    pos = 24
    for _ in range(2):
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    struct.pack_into("<I", data, pos + 8, 0x7FFF_FFFF)
    path.write_bytes(bytes(data))
    packets, cf = read_all(path)
    assert [p[2] for p in packets] == [fr for _, fr in recs[:2]]
    assert cf.warnings == [
        f"{path}: corrupt record (caplen {0x7FFF_FFFF}) at offset {pos}; kept 2 packets"
    ]


# -- crafted pcapng ------------------------------------------------------------------------------


def block(order: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def shb(order: str, options: bytes = b"") -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options)


def idb(order: str, linktype: int, *, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    options = b""
    if tsresol is not None:
        options += opt(order, 9, bytes([tsresol]))
    if tsoffset:
        options += opt(order, 14, struct.pack(order + "q", tsoffset))
    if options:
        options += opt(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + options)


def epb(order: str, ifid: int, units: int, frame: bytes, options: bytes = b"") -> bytes:
    body = struct.pack(order + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(frame), 9999)
    return block(order, 6, body + frame + bytes(-len(frame) % 4) + options)


def opb(order: str, ifid: int, units: int, frame: bytes) -> bytes:
    body = struct.pack(order + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(frame), 0)
    return block(order, 2, body + frame)


def spb(order: str, frame: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(frame)) + frame)


T_US = 1_700_000_000_123_456  # µs
T_NS = T_US * 1000


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_blocks_interfaces_and_resolutions(order: str, tmp_path: Path) -> None:
    f = [bytes([i]) * (30 + i) for i in range(10)]
    data = (
        shb(order, opt(order, 4, b"kshark test") + opt(order, 0, b""))
        + idb(order, 1)  # 0: Ethernet, default µs
        + idb(order, 228, tsresol=9)  # 1: raw IPv4, ns
        + idb(order, 229, tsresol=0x80 | 20)  # 2: raw IPv6, 2^-20 s
        + idb(order, 113, tsresol=3, tsoffset=100)  # 3: SLL, ms, +100 s
        + idb(order, 276, tsresol=12)  # 4: SLL2, ps
        + epb(order, 0, T_US, f[0], opt(order, 1, b"a comment") + opt(order, 0, b""))
        + block(order, 4, b"\x00\x00\x00\x00")  # name resolution block: skipped
        + epb(order, 1, T_NS + 7, f[1])
        + block(order, 0x40000BAD, b"custom block body")  # custom block: skipped
        + epb(order, 2, (1_700_000_000 << 20) + (1 << 19), f[2])  # .5 s in 2^-20 units
        + epb(order, 3, 1_700_000_000_123, f[3])
        + epb(order, 4, 5_000_000_000_999, f[4])  # 5.000000000999 s
        + spb(order, f[5])  # simple packet block: interface 0, no timestamp
        + opb(order, 0, T_US + 1, f[6])
        + block(order, 5, struct.pack(order + "III", 0, 0, 0))  # interface statistics: skipped
    )
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    packets, cf = read_all(path)
    assert cf.warnings == []
    assert packets == [
        (T_NS, 1, f[0]),
        (T_NS + 7, 228, f[1]),
        (1_700_000_000_500_000_000, 229, f[2]),
        (1_700_000_000_123_000_000 + 100_000_000_000, 113, f[3]),
        (5_000_000_000, 276, f[4]),  # ps → ns rounds down
        (5_000_000_000, 1, f[5]),  # SPB: the previous packet's time
        (T_NS + 1000, 1, f[6]),
    ]


def test_pcapng_sections_switch_byte_order_and_reset_interfaces(tmp_path: Path) -> None:
    a, b, c = b"A" * 60, b"B" * 61, b"C" * 62
    data = (
        shb("<")
        + idb("<", 1)
        + epb("<", 0, T_US, a)
        + shb(">")
        + idb(">", 228, tsresol=9)
        + epb(">", 0, T_NS + 5, b)
        + shb("<")
        + idb("<", 229)
        + epb("<", 0, T_US + 2, c)
    )
    path = tmp_path / "sections.pcapng"
    path.write_bytes(data)
    packets, cf = read_all(path)
    assert cf.warnings == []
    assert packets == [(T_NS, 1, a), (T_NS + 5, 228, b), (T_NS + 2000, 229, c)]


def test_pcapng_packet_for_undeclared_interface_is_skipped_and_reported(tmp_path: Path) -> None:
    data = shb("<") + idb("<", 1) + epb("<", 0, T_US, b"ok") + epb("<", 3, T_US, b"x")
    data += epb("<", 0, T_US, b"ok2")
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    packets, cf = read_all(path)
    assert [p[2] for p in packets] == [b"ok", b"ok2"]
    assert cf.warnings == [f"{path}: 1 packets referenced an undeclared interface and were skipped"]


def _three_packet_pcapng() -> tuple[bytes, list[int]]:
    """(file, start offset of each EPB)."""
    head = shb("<") + idb("<", 1)
    blocks = [epb("<", 0, T_US + i, bytes([65 + i]) * 100) for i in range(3)]
    starts = []
    pos = len(head)
    for b in blocks:
        starts.append(pos)
        pos += len(b)
    return head + b"".join(blocks), starts


@pytest.mark.parametrize(
    ("corruption", "reason", "kept"),
    [
        ("length_not_multiple_of_4", "corrupt block (length 130)", 1),
        ("length_too_small", "corrupt block (length 8)", 1),
        ("length_huge", f"corrupt block (length {0x7FFF_FFFC})", 1),
        # The trailing copy is checked when the next block is read, so the packet of the
        # block with the bad trailer has been handed on already.
        ("trailer_mismatch", "corrupt block (trailing length mismatch)", 2),
        ("caplen_past_block", "corrupt packet block (caplen 5000)", 1),
    ],
)
def test_corrupt_pcapng_block_ends_the_file_keeping_earlier_packets(
    corruption: str, reason: str, kept: int, tmp_path: Path
) -> None:
    data, starts = _three_packet_pcapng()
    buf = bytearray(data)
    second = starts[1]
    blen = struct.unpack_from("<I", buf, second + 4)[0]
    if corruption == "length_not_multiple_of_4":
        struct.pack_into("<I", buf, second + 4, 130)
    elif corruption == "length_too_small":
        struct.pack_into("<I", buf, second + 4, 8)
    elif corruption == "length_huge":
        struct.pack_into("<I", buf, second + 4, 0x7FFF_FFFC)
    elif corruption == "trailer_mismatch":
        struct.pack_into("<I", buf, second + blen - 4, blen + 4)
    elif corruption == "caplen_past_block":
        struct.pack_into("<I", buf, second + 20, 5000)
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(buf))
    packets, cf = read_all(path)
    assert cf.warnings == [f"{path}: {reason} at offset {second}; kept {kept} packets"]
    assert [p[2] for p in packets] == [bytes([65 + i]) * 100 for i in range(kept)]


def test_every_truncation_point_of_a_pcapng(tmp_path: Path) -> None:
    src = PCAPS / "zeek-cooper-grill-dvwa.pcapng"
    data = src.read_bytes()
    full, _ = read_all(src)
    ends = []  # file offset where each block ends, and packets complete by then
    pos, n = 0, 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        pos += blen
        n += btype == 6
        ends.append((pos, n))
    path = tmp_path / "cut.pcapng"
    block_ends = {e for e, _ in ends}
    cuts = [*range(28, 700), *range(700, len(data) + 1, 17)]  # all of SHB, IDB, first EPBs
    for cut in cuts:
        path.write_bytes(data[:cut])
        packets, cf = read_all(path)
        complete = max((k for e, k in ends if e <= cut), default=0)
        assert packets == full[:complete]
        if cut in block_ends:
            assert cf.warnings == []
        else:
            assert len(cf.warnings) == 1
            assert "truncated block at offset" in cf.warnings[0]
            assert cf.warnings[0].endswith(f"; kept {complete} packets")


# -- chunk boundaries --------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 100, 1500, 4099, 65536])
@pytest.mark.parametrize(
    "name",
    [
        "zeek-get.pcap",
        "sv-decode-sll2-02.pcap",  # 64 KB records: larger than most chunks
        "cs-http_espn.pcapng",
        "zeek-cooper-grill-dvwa.pcapng",
        TRUNCATED,
    ],
)
def test_any_chunk_size_gives_the_same_packets(
    name: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, ref = read_all(PCAPS / name)
    monkeypatch.setattr(sources, "CHUNK_SIZE", chunk)
    packets, cf = read_all(PCAPS / name)
    assert packets == expected
    assert cf.warnings == ref.warnings


def test_every_small_chunk_size_on_small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk sizes 1..80 put the chunk boundaries at every offset inside record/block headers,
    trailers and data of these small files."""
    names = ["zeek-get.pcap", "zeek-cooper-grill-dvwa.pcapng"]
    expected = {n: read_all(PCAPS / n)[0] for n in names}
    for chunk in range(1, 81):
        monkeypatch.setattr(sources, "CHUNK_SIZE", chunk)
        for n in names:
            packets, cf = read_all(PCAPS / n)
            assert (chunk, n, packets, cf.warnings) == (chunk, n, expected[n], [])


@pytest.mark.parametrize("chunk", [13, 4096])
def test_chunk_size_with_gzip(chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "cs-http_espn.pcapng"
    expected, _ = read_all(PCAPS / name)
    dest = tmp_path / "espn"
    dest.write_bytes(gzip.compress((PCAPS / name).read_bytes()))
    monkeypatch.setattr(sources, "CHUNK_SIZE", chunk)
    assert read_all(dest)[0] == expected


# -- opening errors ----------------------------------------------------------------------------


def test_missing_file_raises_a_one_line_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.pcap"
    with pytest.raises(CaptureOpenError) as exc:
        CaptureFile(path)
    assert str(exc.value) == f"{path}: cannot open: no such file"


def test_directory_is_not_a_capture(tmp_path: Path) -> None:
    with pytest.raises(CaptureOpenError, match="is a directory"):
        CaptureFile(tmp_path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file, not a pcap or pcapng capture"),
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng capture (starts with 47 45 54 20)"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00", "corrupt pcapng section header"),
        (gzip.compress(b"just some text that is not a capture"), "not a pcap or pcapng capture"),
        # a valid gzip header, then a deflate block of the invalid type 3
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 20, "corrupt gzip data"),
        (gzip.compress(b"\xd4\xc3\xb2\xa1" * 100)[:15], "gzip data ends before the capture header"),
    ],
)
def test_non_capture_files_raise_capture_open_error(
    content: bytes, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "f.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureOpenError) as exc:
        CaptureFile(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {reason}")
    assert "\n" not in msg


# -- several files, re-iteration, FIFOs ----------------------------------------------------------


def test_open_captures_reads_files_in_order_and_collects_warnings() -> None:
    names = ["zeek-get.pcap", TRUNCATED, "zeek-cooper-grill-dvwa.pcapng"]
    each = [read_all(PCAPS / n)[0] for n in names]
    caps = open_captures(PCAPS / n for n in names)
    assert list(caps) == each[0] + each[1] + each[2]
    assert caps.packets == sum(len(e) for e in each)
    assert [len(f.warnings) for f in caps.files] == [0, 1, 0]
    assert caps.warnings == caps.files[1].warnings


def test_open_captures_fails_before_reading_if_any_file_is_bad(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    with pytest.raises(CaptureOpenError, match=re.escape(str(missing))):
        open_captures([PCAPS / "zeek-get.pcap", missing])


def test_open_captures_supports_next() -> None:
    caps = open_captures([PCAPS / "zeek-get.pcap"])
    first = next(caps)
    assert first == read_all(PCAPS / "zeek-get.pcap")[0][0]


def test_iterating_twice_rereads_the_file() -> None:
    cf = CaptureFile(PCAPS / "zeek-post.pcap")
    first = list(cf)
    assert list(cf) == first
    assert cf.packets == 14


def test_stopping_early_reports_packets_so_far() -> None:
    cf = CaptureFile(PCAPS / "zeek-1000-requests-one-dropped-response.pcap")
    it = iter(cf)
    assert isinstance(it, Generator)
    for _ in range(10):
        next(it)
    it.close()
    assert cf.packets == 10


def test_fifo_is_read_from_the_start(tmp_path: Path) -> None:
    src = PCAPS / "zeek-get.pcap"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("wb") as out:
            out.write(src.read_bytes())

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    packets, cf = read_all(fifo)
    t.join(timeout=10)
    assert not t.is_alive()
    assert packets == read_all(src)[0]
    assert cf.warnings == []
