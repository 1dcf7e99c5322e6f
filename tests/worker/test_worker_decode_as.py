"""`kshark-worker --decode-as PORT=PROTO` as a user runs it (tshark's `-d`), and DNS by default.

mDNS (UDP 5353) is not DNS unless asked (tshark calls it mdns); `--decode-as 5353=dns` makes
its 18 messages entries. A bad value is one line on stderr and exit 2, before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.worker_cli import ROOT, ServingWorker, entry_files, parse_summary, run_once

PROTO = ROOT.parent / "shared" / "pcaps-proto"


def _entries(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_bytes()) for _, p in sorted(entry_files(data_dir).items())]


def test_dns_is_dissected_by_default_and_mdns_only_when_asked(tmp_path: Path) -> None:
    res = run_once("--pcap", str(PROTO / "zeek-long-connection.pcap"), "--data-dir",
                   str(tmp_path / "a"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(_entries(tmp_path / "a")) == 11
    summary = parse_summary(res.stdout)
    assert (summary["connections"], summary["protocols"]) == (7, {"dns": 7})  # UDP flows
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


def test_the_summary_counts_connections_per_protocol(tmp_path: Path) -> None:
    """HTTP/1 with an h2c upgrade (one connection, both protocols), prior-knowledge HTTP/2,
    and DNS flows, replayed together."""
    pcaps = [
        ROOT / "fixtures" / "h2" / "h2-upgrade.pcap",
        ROOT / "fixtures" / "h2" / "h2-push.pcap",
        PROTO / "zeek-dns-two-responses.pcap",
    ]
    res = run_once(*(a for p in pcaps for a in ("--pcap", str(p))), "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    summary = parse_summary(res.stdout)
    assert summary["connections"] == 3
    assert summary["protocols"] == {"dns": 1, "http": 1, "http2": 2}
    assert summary["entries"] == len(_entries(tmp_path)) == 2 + 2 + 2


def test_status_and_metrics_show_each_protocols_counters(tmp_path: Path) -> None:
    """What the dissectors could not pair or dropped, per protocol, in /status and /metrics."""
    pcaps = [PROTO / "zeek-dns-edns-ecs.pcap", ROOT / "fixtures" / "h2" / "h2-rst-stream.pcap"]
    w = ServingWorker.start(
        [*(a for p in pcaps for a in ("--pcap", str(p))), "--data-dir", str(tmp_path / "d")],
        tmp_path / "worker.log",
    )
    try:
        st = w.wait_for_entries(70 + 3)
        code, body = w.get("/metrics")
    finally:
        w.kill()
    pipeline = st["pipeline"]
    assert (pipeline["dns_responses_unpaired"], pipeline["dns_queries_timeout"]) == (50, 5)
    assert pipeline["http2_resets"] == 3
    assert pipeline["connections_dns"] == 69 and pipeline["connections_http2"] == 1
    assert code == 200
    lines = body.decode().splitlines()
    assert "kshark_pipeline_dns_responses_unpaired 50" in lines
    assert "kshark_pipeline_http2_resets 3" in lines
