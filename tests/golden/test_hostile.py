"""The hostile captures of fixtures/hostile (scripts/make_hostile_fixtures.py), end to end.

Each one is a case issue 9 found: what it must give through the same pipeline as the worker,
and, for the ones that used to kill it, through the `kshark-worker` command itself (replay with
--once, and a serving worker whose /status says what happened).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from capture.entries import Identity
from capture.pipeline import Pipeline
from capture.sources import CaptureFile
from tests.support.generated import check_generated

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "fixtures" / "hostile"
S = 1_000_000_000
TS_MAX = 0xFFFFFFFF * S + 999_999_999
WORKER = Path(sys.executable).with_name("kshark-worker")


@cache
def replay(name: str) -> tuple[tuple[dict[str, Any], ...], dict[str, int], str]:
    """(entries, pipeline stats, the summary's undecoded text) of one fixture."""
    counter = iter(range(1, 1 << 40))
    ident = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="hostile")
    pipeline = Pipeline(ident, allocate_stream=lambda: next(counter))
    entries: list[dict[str, Any]] = []
    for ts, linktype, frame in CaptureFile(HOSTILE / name):
        pipeline.feed(ts, linktype, frame)
        entries.extend(pipeline.pop_output().entries)
    pipeline.finish()
    entries.extend(pipeline.pop_output().entries)
    return tuple(entries), pipeline.stats(), pipeline.undecoded_text()


def paths(name: str) -> list[str]:
    return [e["request"].get("path") for e in replay(name)[0]]


# -- the generator --------------------------------------------------------------------------------


def test_committed_hostile_fixtures_are_the_generators_output_and_it_is_deterministic(
    tmp_path: Path,
) -> None:
    fresh = check_generated("make_hostile_fixtures.py", HOSTILE, tmp_path)
    assert sum(map(len, fresh.values())) < 200_000


# -- 1. packet times no pcap record holds ---------------------------------------------------------

TIME_CASES = {
    # name: (timestamp of both entries, counted as clamped)
    "ts-pcap-sec-max.pcap": (TS_MAX // 1_000_000, True),
    "ts-pcapng-negative-offset.pcapng": (0, True),
    "ts-pcapng-resol-seconds.pcapng": (TS_MAX // 1_000_000, True),
    "ts-pcapng-64bit-max.pcapng": (TS_MAX // 1_000_000, True),
    "ts-pcapng-resol-extreme.pcapng": (0, False),  # rounds to the epoch: in range, but no time
}


@pytest.mark.parametrize("name", sorted(TIME_CASES))
def test_impossible_times_give_entries_flagged_and_counted(name: str) -> None:
    entries, stats, _ = replay(name)
    timestamp, clamped = TIME_CASES[name]
    assert paths(name) == ["/a", "/b"]
    for e in entries:
        assert e["timestamp"] == timestamp
        assert e["response"]["status"] == 200
        assert e["error"]["type"] == "dissection"
        assert "capture time out of range" in e["error"]["msg"]
    assert (stats["timestamps_clamped"] > 0) == clamped


@pytest.mark.parametrize("name", sorted(TIME_CASES))
def test_impossible_times_do_not_stop_the_worker(name: str, tmp_path: Path) -> None:
    """They ended in struct.error from capture/pcapwrite.py: a traceback, exit 1."""
    run = subprocess.run(
        [str(WORKER), "--once", "--pcap", str(HOSTILE / name), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert ", 2 entries (2 with errors)," in run.stdout
    pcaps = list((tmp_path / "pcaps").iterdir())
    assert len(pcaps) == 1 and pcaps[0].stat().st_size > 24


# -- 12, 13, 14, 16 -------------------------------------------------------------------------------


def test_mid_connection_start_on_a_keep_alive() -> None:
    entries, stats, _ = replay("keepalive-midstream.pcap")
    assert [(e["request"]["path"], e["response"]["status"], e["error"]) for e in entries] == [
        ("/orders", 200, None)
    ]
    assert stats["tcp_keepalives"] == 1


def test_unanswered_request_with_spaces_in_its_target_is_kept() -> None:
    entries, stats, _ = replay("target-spaces.pcap")
    (e,) = entries
    assert e["request"]["method"] == "GET"
    assert e["request"]["url"] == "/cgi-bin/x;cat /etc/passwd|?data=Download"
    assert e["error"]["type"] == "pair-not-found"
    assert "whitespace inside the request target" in e["error"]["msg"]
    assert stats["http_connections"] == 1


def test_bytes_after_a_hole_keep_their_capture_time() -> None:
    entries, _, _ = replay("gap-one-direction.pcap")
    data_times = [ts for ts, _, frame in CaptureFile(HOSTILE / "gap-one-direction.pcap")][1:]
    starts = [data_times[0], data_times[-2], data_times[-1]]  # each response's first segment
    assert [e["response"]["status"] for e in entries] == [200, 200, 200]
    assert [e["timestamp"] for e in entries] == [t // 1_000_000 for t in starts]
    assert starts[2] - starts[1] == 60 * S  # a minute apart, not all at the end of the capture
    assert "lost in a capture gap" in entries[0]["error"]["msg"]


def test_framing_read_as_a_careful_server_reads_it() -> None:
    zeros, _, _ = replay("cl-leading-zeros.pcap")
    assert [(e["request"]["method"], e["request"]["path"]) for e in zeros] == [
        ("POST", "/search"),
        ("GET", "/admin"),  # the smuggled request is seen
    ]
    assert zeros[0]["request"]["bodySize"] == 50
    assert [e["error"] for e in zeros] == [None, None]
    folded, _, _ = replay("te-obs-fold.pcap")
    assert [(e["request"]["path"], e["request"]["postData"]["text"]) for e in folded[:1]] == [
        ("/upload", "hello")
    ]
    assert [e["request"]["path"] for e in folded] == ["/upload", "/after"]
    assert [e["error"] for e in folded] == [None, None]


# -- 2. a response that decodes to 10 MiB ---------------------------------------------------------


def test_decoded_body_kept_to_max_body() -> None:
    (e,), _, _ = replay("gzip-10mib.pcap")
    content = e["response"]["content"]
    assert content["size"] == 10 << 20 and content["_truncated"] is True
    text = base64.b64decode(content["text"])
    assert len(text) == 1 << 20 and text.startswith(b"2024-03-01T11:00:00Z INFO")
    assert e["response"]["bodySize"] < 50_000 and e["error"] is None


# -- 15. encapsulations ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vxlan.pcap", "geneve.pcap", "gre-erspan.pcap", "nflog.pcap"])
def test_encapsulated_traffic_is_dissected(name: str) -> None:
    entries, stats, undecoded = replay(name)
    assert [(e["request"]["path"], e["response"]["status"], e["error"]) for e in entries] == [
        ("/a", 200, None),
        ("/b", 200, None),
    ]
    assert [e["src"]["ip"] for e in entries] == ["10.244.1.7", "10.244.1.7"]  # the pods
    assert stats["decode_undecoded"] == 0 and undecoded == "0 frames not decoded"


def test_what_is_not_decoded_is_counted_and_said(tmp_path: Path) -> None:
    _, stats, undecoded = replay("undecoded.pcapng")
    assert paths("undecoded.pcapng") == ["/a", "/b"]
    assert stats["decode_undecoded_linktype_147"] == 3 and stats["decode_undecoded_esp"] == 1
    assert undecoded == "4 frames not decoded (esp: 1, linktype_147: 3)"
    run = subprocess.run(
        [str(WORKER), "--once", "--pcap", str(HOSTILE / "undecoded.pcapng"), "--data-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "4 frames not decoded (esp: 1, linktype_147: 3), 0 capture warnings" in run.stdout


# -- a serving worker replaying all of them -------------------------------------------------------


def test_a_serving_worker_replays_every_hostile_capture_and_reports_it(tmp_path: Path) -> None:
    """In serving mode a bad time killed the whole worker. Here it replays every hostile
    capture, keeps serving, and /status shows the counters that say what happened."""
    args = [str(WORKER), "--port", "0", "--data-dir", str(tmp_path / "data")]
    for p in sorted(HOSTILE.iterdir()):
        args += ["--pcap", str(p)]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        port = 0
        deadline = time.monotonic() + 20
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            text = log_path.read_text()
            if not port and "api listening on" in text:
                port = int(text.split("api listening on", 1)[1].split("port", 1)[1].split()[0])
            if port:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
                    status = json.loads(r.read())
                if status.get("entries", 0) >= 30:
                    break
            time.sleep(0.05)
        pipeline = status["pipeline"]
        assert status["entries"] == 30, status
        assert pipeline["timestamps_clamped"] > 0
        assert pipeline["decode_undecoded"] == 4
        assert pipeline["tcp_keepalives"] == 1
        assert status["errors"] == pipeline["entries_with_error"] >= 14
        assert proc.poll() is None  # still serving
        assert "Traceback" not in log_path.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
