"""`kshark-worker --proto-descriptor FILE`: gRPC messages decoded to JSON in the stored entries,
and a file that cannot be used refused in one line before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.worker_cli import FIXTURES, entries, run_once

GRPC = FIXTURES / "h2" / "grpc-calls.pcap"
DESC = FIXTURES / "h2" / "shop.desc"


def test_grpc_messages_are_decoded_with_the_descriptor_set(tmp_path: Path) -> None:
    res = run_once(
        "--pcap", str(GRPC), "--data-dir", str(tmp_path / "D"), "--proto-descriptor", str(DESC)
    )
    assert res.returncode == 0, res.stderr
    got = {e["request"]["streamId"]: e for e in entries(tmp_path / "D")}
    assert got[1]["request"]["grpc"]["messages"][0]["json"] == {"id": "1007"}
    assert got[1]["response"]["grpc"]["messages"][0]["json"]["name"] == "item-7"
    assert (got[5]["response"]["status"], got[5]["response"]["statusText"]) == (5, "NOT_FOUND")
    plain = run_once("--pcap", str(GRPC), "--data-dir", str(tmp_path / "P"))
    assert plain.returncode == 0, plain.stderr
    (one,) = [e for e in entries(tmp_path / "P") if e["request"]["streamId"] == 1]
    assert one["request"]["grpc"]["messages"][0] == {
        "compressed": False,
        "size": 3,
        "fields": {"1": {"varint": 1007}},
    }


@pytest.mark.parametrize("case", ["missing", "not-a-descriptor-set"])
def test_an_unusable_descriptor_set_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    bad = tmp_path / "x.desc"
    if case == "not-a-descriptor-set":
        bad.write_bytes(b"\xff\xff\xff\xff")
    res = run_once(
        "--pcap", str(GRPC), "--data-dir", str(tmp_path / "D"), "--proto-descriptor", str(bad)
    )
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kshark-worker: {bad}: "), res.stderr
    assert ("No such file" if case == "missing" else "not a FileDescriptorSet") in lines[0]
    assert not (tmp_path / "D" / "entries").exists()
