"""The exports over plain HTTP, as curl users get them: `GET /api/har?q=` (HAR 1.2, checked by
har-validator) and `GET /api/pcap?q=` (one pcapng of the matching entries' connections, read by
tshark), on a worker and gathered by the hub; their limits and refusals.

Against real `kshark-worker` and `kshark-hub` processes replaying the fixtures.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kshark.kfl import compile_query
from tests.support.store import stored_ids
from tests.support.web import (
    DEMO,
    DEMO_ENTRIES,
    FIXTURES,
    WEB_FIXTURES,
    Served,
    http_get,
    hub,
    tshark_count,
    validate_har,
    wait_stored,
    worker,
)

pytestmark = pytest.mark.tools

BODIES = WEB_FIXTURES / "bodies.pcap"
XSS = WEB_FIXTURES / "xss.pcap"
SLL = FIXTURES / "sll.pcap"


def q(text: str, **params: Any) -> str:
    return "?" + urllib.parse.urlencode({"q": text, **params})


def stored(data_dir: Path) -> list[dict[str, Any]]:
    """Every stored entry in write order (stream, then index, for these replays)."""
    return [json.loads(p.read_bytes()) for p in sorted((data_dir / "entries").iterdir())]


def matching_ids(data_dir: Path, query: str) -> list[str]:
    kfl = compile_query(query)
    return [e["id"] for e in stored(data_dir) if kfl.match(e)]


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.a = worker(tmp, "a", [DEMO, BODIES, XSS])
        self.b = worker(tmp, "b", [DEMO, SLL])
        wait_stored(self.a, DEMO_ENTRIES + 6)
        wait_stored(self.b, DEMO_ENTRIES + 1)
        self.hub = hub(tmp, [self.a.address, self.b.address])

    def stop(self) -> None:
        for p in (self.hub, self.a, self.b):
            p.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    w = Workers(tmp_path_factory.mktemp("exports"))
    try:
        yield w
    finally:
        w.stop()


def har_of(served: Served, query: str, **params: Any) -> tuple[dict[str, str], bytes]:
    status, headers, body = http_get(served.url("/api/har" + q(query, **params)))
    assert status == 200, body[:500]
    return headers, body


def test_worker_har_is_valid_har_1_2_with_every_matching_entry(
    workers: Workers, tmp_path: Path
) -> None:
    headers, body = har_of(workers.a, "")
    assert headers["content-type"] == "application/json"
    assert 'filename="kshark.har"' in headers["content-disposition"]
    assert validate_har(body, tmp_path) == []
    har = json.loads(body)
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "kshark"
    assert "comment" not in log
    entries = log["entries"]
    assert [e["_id"] for e in entries] == matching_ids(workers.tmp / "a", "")
    by_path = {
        (e["request"]["method"], urllib.parse.urlsplit(e["request"]["url"]).path): e
        for e in entries
    }
    # A gzip JSON body: decoded, as text.
    items = by_path["GET", "/api/items"]
    assert json.loads(items["response"]["content"]["text"])["items"][0]["name"] == "first"
    assert items["response"]["content"]["size"] == 77 and items["response"]["bodySize"] == 82
    # A binary body stays base64.
    logo = by_path["GET", "/logo.bin"]["response"]["content"]
    assert logo["encoding"] == "base64" and base64.b64decode(logo["text"]) == bytes(range(256)) * 2
    # No response: HAR's empty response, the entry's error as the comment.
    never = by_path["GET", "/never-answered"]
    assert never["response"]["status"] == 0 and never["comment"].startswith("pair-not-found")
    # The form POST of demo.pcap: its params.
    orders = next(
        e for e in entries if e["request"]["method"] == "POST" and "orders" in e["request"]["url"]
    )
    assert orders["request"]["postData"]["params"] == [
        {"name": "sock", "value": "7"},
        {"name": "qty", "value": "2"},
    ]
    assert orders["request"]["url"] == "http://catalogue/api/orders"
    for e in entries:
        assert e["time"] == e["timings"]["wait"] >= 0


def test_har_limits_cut_the_export_and_say_so(workers: Workers, tmp_path: Path) -> None:
    everything = matching_ids(workers.tmp / "a", "")
    _, body = har_of(workers.a, "", limit=3)
    har = json.loads(body)
    assert [e["_id"] for e in har["log"]["entries"]] == everything[:3]
    assert "stopped at the limit of 3 entries" in har["log"]["comment"]
    assert validate_har(body, tmp_path) == []
    # KFL's own limit(n) is what was asked for: not a cut.
    _, body = har_of(workers.a, "limit(3)")
    har = json.loads(body)
    assert [e["_id"] for e in har["log"]["entries"]] == everything[:3]
    assert "comment" not in har["log"]
    # A byte budget smaller than one entry: nothing, and the reason.
    _, body = har_of(workers.a, "", max_bytes=100)
    har = json.loads(body)
    assert har["log"]["entries"] == []
    assert "limit of 100 bytes" in har["log"]["comment"]
    # redact() applies to what is exported.
    _, body = har_of(
        workers.a, 'redact("request.headers.Authorization") and request.method == "DELETE"'
    )
    har = json.loads(body)
    assert har["log"]["entries"]
    for e in har["log"]["entries"]:
        assert {"name": "Authorization", "value": "[REDACTED]"} in e["request"]["headers"]


def test_a_bad_filter_or_parameter_is_refused_with_its_position(workers: Workers) -> None:
    for route in ("/api/har", "/api/pcap"):
        for served in (workers.a, workers.hub):
            status, _, body = http_get(served.url(route + q("response.status >")))
            assert status == 400
            error = json.loads(body)["error"]
            assert (error["type"], error["line"], error["column"]) == ("kfl", 1, 18)
            status, _, body = http_get(served.url(route + q("", limit="ten")))
            assert status == 400 and b"limit must be a whole number" in body
    status, _, body = http_get(workers.a.url("/api/pcap" + q('redact("request.path")')))
    assert status == 400 and b"redact" in body


def pcap_of(served: Served, query: str, **params: Any) -> tuple[dict[str, str], bytes]:
    status, headers, body = http_get(served.url("/api/pcap" + q(query, **params)))
    assert status == 200, body[:500]
    return headers, body


def connection_packets(served: Served, tmp: Path, pcap_paths: list[str]) -> int:
    total = 0
    for i, path in enumerate(pcap_paths):
        status, _, data = http_get(served.url(path))
        assert status == 200
        one = tmp / f"one-{i}.pcap"
        one.write_bytes(data)
        total += tshark_count(one)
    return total


def test_worker_pcap_holds_exactly_the_matching_connections(
    workers: Workers, tmp_path: Path
) -> None:
    query = "response.status >= 400"
    streams = sorted(
        {e["stream"] for e in stored(workers.tmp / "a") if compile_query(query).match(e)}
    )
    assert len(streams) == 3
    headers, body = pcap_of(workers.a, query)
    assert headers["content-type"] == "application/x-pcapng"
    assert headers["x-kshark-connections"] == "3"
    assert "x-kshark-truncated" not in headers
    merged = tmp_path / "merged.pcapng"
    merged.write_bytes(body)
    expected = connection_packets(workers.a, tmp_path, [f"/pcaps/{s}" for s in streams])
    assert tshark_count(merged) == expected
    assert tshark_count(merged, "http.response.code >= 400") == 6

    headers, body = pcap_of(workers.a, query, limit=1)
    assert headers["x-kshark-connections"] == "1"
    assert "stopped at the limit of 1" in headers["x-kshark-truncated"]
    one = tmp_path / "one.pcapng"
    one.write_bytes(body)
    assert tshark_count(one) == connection_packets(workers.a, tmp_path, [f"/pcaps/{streams[0]}"])


def test_pcap_of_connections_of_two_link_types(workers: Workers, tmp_path: Path) -> None:
    # Worker b replayed an Ethernet capture and a Linux-cooked one: one pcapng section with an
    # interface per link type carries both (a classic pcap could not).
    _, body = pcap_of(workers.b, "")
    merged = tmp_path / "b.pcapng"
    merged.write_bytes(body)
    streams = sorted({e["stream"] for e in stored(workers.tmp / "b")})
    expected = connection_packets(workers.b, tmp_path, [f"/pcaps/{s}" for s in streams])
    assert tshark_count(merged) == expected
    assert tshark_count(merged, "sll") > 0 and tshark_count(merged, "eth") > 0


def test_the_hub_gathers_every_workers_entries_and_packets(
    workers: Workers, tmp_path: Path
) -> None:
    query = "response.status >= 400"
    expect_ids = matching_ids(workers.tmp / "a", query) + matching_ids(workers.tmp / "b", query)
    _, body = har_of(workers.hub, query)
    assert validate_har(body, tmp_path) == []
    har = json.loads(body)
    assert sorted(e["_id"] for e in har["log"]["entries"]) == sorted(expect_ids)
    assert "comment" not in har["log"]
    # The limit counts across the workers.
    _, body = har_of(workers.hub, "", limit=DEMO_ENTRIES + 8)
    har = json.loads(body)
    ids = [e["_id"] for e in har["log"]["entries"]]
    assert len(ids) == len(set(ids)) == DEMO_ENTRIES + 8
    assert set(ids) <= stored_ids(workers.tmp / "a", workers.a.address) | stored_ids(
        workers.tmp / "b", workers.b.address
    )
    assert "limit" in har["log"]["comment"]

    _, body = pcap_of(workers.hub, query)
    merged = tmp_path / "hub.pcapng"
    merged.write_bytes(body)
    paths = []
    for w, name in ((workers.a, "a"), (workers.b, "b")):
        for s in sorted(
            {e["stream"] for e in stored(workers.tmp / name) if compile_query(query).match(e)}
        ):
            paths.append(f"/pcaps/{w.address}/{s}")
    assert tshark_count(merged) == connection_packets(workers.hub, tmp_path, paths)
    # Each worker's packets on its own interface, named by the worker.
    run_names = tshark_fields(merged, "frame.interface_name")
    assert set(run_names) == {workers.a.address, workers.b.address}


def test_the_hub_export_names_a_worker_it_could_not_read(tmp_path: Path) -> None:
    a = worker(tmp_path, "a", [DEMO])
    wait_stored(a, DEMO_ENTRIES)
    gone = "127.0.0.1:9"  # discard port: nothing listens
    h = hub(tmp_path, [gone, a.address])
    try:
        _, body = har_of(h, "")
        har = json.loads(body)
        assert len(har["log"]["entries"]) == DEMO_ENTRIES
        assert f"worker {gone} left out" in har["log"]["comment"]
        _, body = pcap_of(h, "")
        merged = tmp_path / "hub.pcapng"
        merged.write_bytes(body)
        assert tshark_count(merged) == tshark_count(DEMO)
    finally:
        h.stop()
        a.stop()


def tshark_fields(path: Path, field: str) -> list[str]:
    import subprocess

    run = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", field],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return run.stdout.split()
