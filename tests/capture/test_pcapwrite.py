"""capture.pcapwrite: packets as pcap records, grouped per (stream, link type)."""

from __future__ import annotations

import struct

from capture.pcapwrite import RECORD_HEADER_SIZE, group_records

S = 1_000_000_000


def test_records_keep_packet_order_per_connection_and_cut_to_the_snap_length() -> None:
    packets: list[tuple[object, int, int, bytes]] = [
        (7, 5 * S + 1, 1, b"a" * 10),
        (9, 5 * S + 2, 1, b"b" * 4),
        (7, 6 * S + 3, 1, b"c" * 30),  # longer than the snap length below
        (7, 6 * S + 4, 113, b"sll"),  # same connection, another link type: a group of its own
        (7, 7 * S, 1, b"d"),
    ]
    groups = group_records(packets, snaplen=20)
    assert [(g.stream, g.linktype, g.count) for g in groups] == [(7, 1, 3), (9, 1, 1), (7, 113, 1)]
    seven = groups[0]
    unpack = struct.Struct("<IIII").unpack
    headers = [unpack(h) for h in seven.parts[0::2]]
    assert headers == [(5, 1, 10, 10), (6, 3, 20, 30), (7, 0, 1, 1)]
    assert seven.parts[1::2] == [b"a" * 10, b"c" * 20, b"d"]
    assert seven.size == sum(map(len, seven.parts)) == 3 * RECORD_HEADER_SIZE + 31
    assert groups[2].parts[1] == b"sll"


def test_no_packets_no_groups() -> None:
    assert group_records([], 262144) == []


def test_any_timestamp_gives_a_record_clamped_to_what_the_format_holds() -> None:
    """ts_sec is 32 unsigned bits: a time before 1970 or after 2106-02-07T06:28:15.999999999Z
    (a damaged capture, a negative if_tsoffset, a 64-bit time near its maximum) is written as
    the nearest time the format can hold, never raised on."""
    packets: list[tuple[object, int, int, bytes]] = [
        (1, -1, 1, b"a"),
        (1, -(1 << 80), 1, b"b"),
        (1, 0xFFFFFFFF * S + 999_999_999, 1, b"c"),  # the last representable nanosecond
        (1, 0xFFFFFFFF * S + 1_000_000_000, 1, b"d"),
        (1, (1 << 64) * S, 1, b"e"),
    ]
    (group,) = group_records(packets, snaplen=100)
    unpack = struct.Struct("<IIII").unpack
    assert [unpack(h)[:2] for h in group.parts[0::2]] == [
        (0, 0),
        (0, 0),
        (0xFFFFFFFF, 999_999_999),
        (0xFFFFFFFF, 999_999_999),
        (0xFFFFFFFF, 999_999_999),
    ]


def test_the_time_bounds_written_out_in_the_hot_paths_are_the_documented_ones() -> None:
    from capture import pcapwrite
    from capture.segment import TS_MAX_NS, TS_MIN_NS

    # pipeline.feed and EntryBuilder.build spell them as literals (no lookups per packet)
    assert TS_MIN_NS == 0
    assert TS_MAX_NS == 0xFFFFFFFF * S + 999_999_999 == 4294967295999999999
    assert pcapwrite._TS_MAX == TS_MAX_NS
