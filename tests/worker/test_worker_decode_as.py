"""`kshark-worker --decode-as PORT=PROTO` as a user runs it (tshark's `-d`), and DNS by default.

mDNS (UDP 5353) is not DNS unless asked (tshark calls it mdns); `--decode-as 5353=dns` makes
its 18 messages entries. A bad value is one line on stderr and exit 2, before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.worker_cli import ROOT, entry_files, run_once

PROTO = ROOT.parent / "shared" / "pcaps-proto"


def _entries(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_bytes()) for _, p in sorted(entry_files(data_dir).items())]


def test_dns_is_dissected_by_default_and_mdns_only_when_asked(tmp_path: Path) -> None:
    res = run_once("--pcap", str(PROTO / "zeek-long-connection.pcap"), "--data-dir",
                   str(tmp_path / "a"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(_entries(tmp_path / "a")) == 11
    res = run_once("--pcap", str(PROTO / "zeek-mdns.pcap"), "--data-dir", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "b" / "entries").exists() or _entries(tmp_path / "b") == []
    res = run_once("--pcap", str(PROTO / "zeek-mdns.pcap"), "--data-dir", str(tmp_path / "c"),
                   "--decode-as", "5353=dns")  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = _entries(tmp_path / "c")
    assert len(got) == 18
    assert {e["protocol"]["abbr"] for e in got} == {"DNS"}  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5353", "kshark-worker: --decode-as '5353': expected PORT=PROTOCOL"),
        ("70000=dns", "kshark-worker: --decode-as '70000=dns': expected PORT=PROTOCOL"),
        ("53=gopher", "kshark-worker: --decode-as '53=gopher': unknown protocol 'gopher' (known:"),
    ],
)
def test_a_bad_decode_as_is_one_line_and_exit_2(tmp_path: Path, value: str, message: str) -> None:
    res = run_once("--pcap", str(PROTO / "zeek-mdns.pcap"), "--data-dir", str(tmp_path),
                   "--decode-as", value)  # fmt: skip
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert not (tmp_path / "entries").exists()
