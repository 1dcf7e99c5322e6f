"""The hub's pure parts: entry metadata, cursors, the reorder buffer, addresses, workers files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from capture.entries import summarize
from kshark.api.wire import Projection
from kshark.hub.frames import (
    EntryMeta,
    control_of,
    parse_cursor,
    read_entry,
    worker_frame,
    worker_gap_frame,
)
from kshark.hub.merge import Quota, ReorderBuffer
from kshark.hub.workers import parse_address, read_workers_file
from tests.support.hub import make_entry

W = "10.0.41.65:30001"


def dump(entry: dict) -> str:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()


# ---- read_entry ---------------------------------------------------------------------------------


def tricky_entries() -> list[dict]:
    plain = make_entry(W, 7, 3, ts_ms=1_700_000_000_123)
    # Nested keys named like the top-level ones, before and after "id" in sorted order.
    nested = make_entry(
        W, 8, 0, headers={"id": "10.0.41.65:30001/000000000008.pcap-9", "worker": "x"}
    )
    nested["dst"]["pod"] = {"id": f"{W}/000000000008.pcap-5", "stream": "000000000008.pcap"}
    # Strings that contain the very text the tail is read from.
    quoted = make_entry(W, 9, 1, path='/a","timestamp":1,"worker":"evil"}')
    quoted["record"] = '"stream":"000000000001.pcap","timestamp":5,"worker":"evil"}'
    ipv6 = make_entry("[fd00::1]:30001", 10, 2)
    return [plain, nested, quoted, ipv6]


@pytest.mark.parametrize("entry", tricky_entries())
def test_read_entry_reads_the_top_level_fields(entry: dict) -> None:
    expected = EntryMeta(entry["id"], entry["worker"], entry["timestamp"])
    assert read_entry(dump(entry).encode()) == expected
    # The summary form (/api/ws) and a projection (fields) give the same answer.
    assert read_entry(dump(summarize(entry)).encode()) == expected
    projected = Projection(("request.path", "id", "worker", "timestamp"))(entry)
    assert read_entry(dump(projected).encode()) == expected


def test_read_entry_of_an_object_without_an_id_is_no_entry() -> None:
    assert read_entry(b'{"request": {"path": "/x"}}') == "an object that is not an entry (no id)"
    # Projected without "worker": taken from the id.
    assert read_entry(b'{"id": "%s/000000000001.pcap-0"}' % W.encode()) == EntryMeta(
        f"{W}/000000000001.pcap-0", W, 0
    )


def test_control_frames_are_told_from_entries() -> None:
    assert control_of({"error": {"message": "m", "type": "kfl"}}) == (
        "error",
        {"message": "m", "type": "kfl"},
    )
    assert control_of({"gap": {"missed": 3, "reason": "retention"}}) == (
        "gap",
        {"missed": 3, "reason": "retention"},
    )
    # An entry projected to fields starting with "error" is still an entry.
    projected = dump({"error": {"message": "m", "type": "t"}, "id": f"{W}/000000000001.pcap-0"})
    assert control_of(orjson.loads(projected)) is None
    assert control_of(make_entry(W, 1)) is None
    assert control_of({"error": None}) is None  # fields=["error"] on an entry without error


def test_hub_frames() -> None:
    assert orjson.loads(worker_frame(W, "down", "lost")) == {
        "worker": {"id": W, "reason": "lost", "state": "down"}
    }
    assert orjson.loads(worker_frame(W, "up")) == {"worker": {"id": W, "state": "up"}}
    assert orjson.loads(worker_gap_frame(W, None, "cursor-unknown")) == {
        "gap": {"missed": None, "reason": "cursor-unknown", "worker": W}
    }


# ---- cursors ----------------------------------------------------------------------------------


def test_cursor_forms() -> None:
    a, b = f"{W}/000000000007.pcap-0", "10.0.41.66:30001/000000000002.pcap-4"
    want = {W: a, "10.0.41.66:30001": b}
    assert parse_cursor(want) == want
    assert parse_cursor(orjson.dumps(want).decode()) == want
    assert parse_cursor([a, b]) == want
    assert parse_cursor(orjson.dumps([a, b]).decode()) == want
    assert parse_cursor(a) == {W: a}
    assert parse_cursor(None) == {}
    older = f"{W}/000000000001.pcap-0"
    assert parse_cursor([older, a]) == {W: a}  # the last id per worker wins


@pytest.mark.parametrize(
    "bad",
    ["000000000007.pcap-0", "", "{not json", [1], {"w": 5}, 7, [""], {"w": ""}],
)
def test_bad_cursors_are_refused_with_a_message(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_cursor(bad)


# ---- the reorder buffer -------------------------------------------------------------------------


def test_reorder_buffer_releases_in_timestamp_order_after_the_window() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(window=1.0, max_items=100)
    buf.push(30, "c", now=0.0)
    buf.push(10, "a", now=0.1)
    buf.push(20, "b", now=0.2)
    assert buf.pop_ready(0.5) == []
    assert buf.next_deadline() == 1.0
    # The oldest arrival ("c", ts 30) is due: it and everything sorting before it go, in order.
    assert buf.pop_ready(1.0) == ["a", "b", "c"]
    assert len(buf) == 0 and buf.next_deadline() is None


def test_reorder_buffer_holds_nothing_longer_than_the_window() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(window=1.0, max_items=100)
    buf.push(10, "early", now=0.0)
    buf.push(50, "late-ts", now=0.5)
    assert buf.pop_ready(1.0) == ["early"]
    buf.push(20, "newer-arrival", now=1.2)
    # "late-ts" is due at 1.5: "newer-arrival" sorts before it, so it goes too (sorted output).
    assert buf.next_deadline() == 1.5
    assert buf.pop_ready(1.5) == ["newer-arrival", "late-ts"]


def test_reorder_buffer_bound_releases_the_oldest_timestamp() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(window=60.0, max_items=3)
    for ts in (5, 1, 4, 2):
        buf.push(ts, ts, now=0.0)
    assert buf.pop_ready(0.0) == [1]
    assert len(buf) == 3
    buf.push(3, 3, now=0.0)
    assert buf.pop_ready(0.0) == [2]
    assert buf.drain() == [3, 4, 5]


def test_reorder_buffer_keeps_arrival_order_for_equal_timestamps() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(window=0.0, max_items=10)
    for name in "abc":
        buf.push(7, name, now=0.0)
    assert buf.pop_ready(0.0) == ["a", "b", "c"]


def test_reorder_buffer_bookkeeping_stays_bounded() -> None:
    buf: ReorderBuffer[int] = ReorderBuffer(window=1000.0, max_items=10)
    for i in range(10_000):
        buf.push(i, i, now=0.0)
        buf.pop_ready(0.0)
    assert len(buf) == 10
    assert len(buf._arrivals) <= 2 * 10 + 16 + 1


def test_quota_counts_across_workers() -> None:
    q = Quota(3)
    assert [q.take(), q.take(), q.take()] == [False, False, True]
    assert Quota(0).exhausted and not Quota(None).exhausted
    unlimited = Quota(None)
    assert not any(unlimited.take() for _ in range(100))


# ---- addresses and the workers file ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("10.0.0.1:30001", "10.0.0.1:30001"),
        (" Node-A.Example:0030001 ", "node-a.example:30001"),
        ("[::1]:8897", "[::1]:8897"),
    ],
)
def test_addresses_are_canonical(text: str, canonical: str) -> None:
    assert parse_address(text) == canonical


@pytest.mark.parametrize(
    "bad", ["host", ":80", "host:0", "host:65536", "host:x", "::1:80", "[zz]:1", "a/b:1"]
)
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_address(bad)


def test_workers_file_lines(tmp_path: Path) -> None:
    f = tmp_path / "workers"
    f.write_text(
        "# comment\n10.0.0.1:30001\n\n  10.0.0.2:30001 # node b\nnot-an-address\n10.0.0.1:30001\n"
    )
    addresses, errors = read_workers_file(f)
    assert addresses == ["10.0.0.1:30001", "10.0.0.2:30001"]
    assert len(errors) == 1 and errors[0].startswith("line 5:")
