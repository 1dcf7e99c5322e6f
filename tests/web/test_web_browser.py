"""The dashboard in Debian's Chromium (Playwright), against real processes: two `kshark-worker`s
replaying captures (fixtures/demo.pcap; the web fixtures: XSS payloads and bodies) and a
`kshark-hub` in front of them, as a user runs it.

What is checked is what a user sees: rows in the list, the filter's error, the detail pane's
text, the files the page downloads (read by tshark and a HAR validator), the cluster panel. The
stream the page shows is compared with what `wscat` gets for the same filter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.rawhttp import free_port
from tests.support.store import stored_ids
from tests.support.web import (
    DEMO,
    DEMO_ENTRIES,
    ROWS,
    STEP_MS,
    WEB_FIXTURES,
    Served,
    apply_filter,
    get_json,
    http_get,
    hub,
    page_url,
    shown_ids,
    tshark_count,
    validate_har,
    wait_stored,
    worker,
    wscat_ids,
)

pytestmark = pytest.mark.tools

XSS = WEB_FIXTURES / "xss.pcap"
BODIES = WEB_FIXTURES / "bodies.pcap"
XSS_ENTRIES, BODIES_ENTRIES = 2, 4
ALL = DEMO_ENTRIES + XSS_ENTRIES + BODIES_ENTRIES


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.a = worker(tmp, "a", [DEMO], extra=["--node-name", "node-a"])
        self.b = worker(tmp, "b", [XSS, BODIES], extra=["--node-name", "node-b"])
        wait_stored(self.a, DEMO_ENTRIES)
        wait_stored(self.b, XSS_ENTRIES + BODIES_ENTRIES)
        self.hub = hub(tmp, [self.a.address, self.b.address])

    def ids(self) -> set[str]:
        return stored_ids(self.tmp / "a", self.a.address) | stored_ids(
            self.tmp / "b", self.b.address
        )

    def stop(self) -> None:
        for p in (self.hub, self.a, self.b):
            p.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()


def open_dashboard(
    page: Any, served: Served, query: str | None = None, rows: int | None = None
) -> Any:
    response = page.goto(page_url(served, query))
    assert response.status == 200
    if rows is not None:
        expect(page.locator(ROWS)).to_have_count(rows, timeout=STEP_MS)
        expect(page.locator("#count-shown")).to_have_text(str(rows), timeout=STEP_MS)
    return response


def test_the_page_loads_without_console_errors_and_the_list_fills(
    page: tuple[Any, Any], cluster: Cluster, shots: Path
) -> None:
    p, watch = page
    response = open_dashboard(p, cluster.hub, rows=ALL)
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe" not in headers["content-security-policy"]
    assert headers["content-type"] == "text/html; charset=utf-8"

    ids = shown_ids(p)
    assert len(ids) == len(set(ids)) == ALL
    assert set(ids) == cluster.ids()
    expect(p.locator("#connection")).to_have_attribute("data-state", "live")
    expect(p.locator("#role")).to_contain_text("hub")
    # The cluster panel: both workers up.
    for w in (cluster.a, cluster.b):
        expect(p.locator(f'#cluster-rows tr[data-worker="{w.address}"] .state')).to_have_text("up")
    # A row reads as a user expects: names or ip:port, method, path, status coloured by class.
    stored = _stored_entry(cluster.tmp / "a", 'request.path == "/api/payments/42"')
    row = p.locator(f'{ROWS}[data-id="{stored["id"]}"]')
    src, dst = stored["src"], stored["dst"]
    expect(row.locator(".c-peers")).to_have_text(
        f"{src['ip']}:{src['port']} → {dst['ip']}:{dst['port']}"  # no names resolved: ip:port
    )
    expect(row.locator(".c-path")).to_have_text("/api/payments/42")
    expect(row.locator(".c-method")).to_have_text("GET")
    expect(row.locator(".c-status")).to_have_text("500")
    expect(row.locator(".c-status")).to_have_class("c-status status-5")
    expect(row.locator(".c-node")).to_have_text("node-a")
    p.screenshot(path=str(shots / "list.png"))
    assert watch.errors == [] and watch.warnings == [], watch.console
    assert watch.dialogs == []


def test_a_bad_filter_shows_its_error_at_its_column(
    page: tuple[Any, Any], cluster: Cluster, shots: Path
) -> None:
    p, watch = page
    open_dashboard(p, cluster.hub, rows=ALL)
    bad = 'response.status >= 500 and request.path ~ "/x"'
    answer = get_json(cluster.hub.url("/query/validate?q=" + _quote(bad)))
    assert answer["valid"] is False
    line, column = (int(x) for x in answer["message"].split(":")[:2])
    assert (line, column) == (1, 41)  # the "~"

    p.fill("#filter", bad)
    error = p.locator("#filter-error")
    expect(error).to_be_visible()
    expect(p.locator("#filter-error-message")).to_have_text(answer["message"])
    marked = p.locator("#filter-error-query")
    expect(marked).to_have_attribute("data-column", str(column))
    expect(marked.locator("mark")).to_have_text(bad[column - 1])
    expect(marked.locator(".caret")).to_have_text(" " * (column - 1) + f"^ column {column}")
    expect(p.locator("#filter")).to_have_attribute("aria-invalid", "true")
    p.screenshot(path=str(shots / "filter-error.png"))

    # Enter does not apply it: the list and the URL keep the last good filter.
    p.press("#filter", "Enter")
    expect(p.locator(ROWS)).to_have_count(ALL)
    assert "q=" not in p.url
    # Fixing it clears the error.
    p.fill("#filter", "response.status >= 500")
    expect(error).to_be_hidden()
    assert watch.errors == [], watch.console


def test_a_good_filter_shows_exactly_what_wscat_gets(
    page: tuple[Any, Any], cluster: Cluster, tmp_path: Path
) -> None:
    p, watch = page
    query = 'response.status >= 400 or request.path.startsWith("/api/items")'
    expected = wscat_ids(cluster.hub.port, query, tmp_path, 6 + 2)
    assert len(expected) == len(set(expected)) == 6 + 2  # demo's 404s and 500s; two /api/items
    open_dashboard(p, cluster.hub, rows=ALL)
    apply_filter(p, query)
    expect(p.locator(ROWS)).to_have_count(len(expected), timeout=STEP_MS)
    expect(p.locator("#count-matched")).to_have_text(str(len(expected)))
    ids = shown_ids(p)
    assert sorted(ids) == sorted(expected)
    # The filter is in the URL: the link shows the same view to whoever opens it.
    assert p.url == page_url(cluster.hub, query)
    p.reload()
    expect(p.locator("#filter")).to_have_value(query)
    expect(p.locator(ROWS)).to_have_count(len(expected), timeout=STEP_MS)
    assert sorted(shown_ids(p)) == sorted(expected)
    # And it is remembered among the recent queries.
    p.click("#suggestions summary")
    expect(p.locator("#history button").first).to_have_text(query)
    assert watch.errors == [], watch.console


def test_entry_detail_shows_bodies_decoded_and_downloads_its_pcap(
    page: tuple[Any, Any], cluster: Cluster, shots: Path, tmp_path: Path
) -> None:
    from scripts.make_web_fixtures import BINARY_BODY, GZIP_JSON, POST_JSON

    p, watch = page
    open_dashboard(
        p, cluster.hub, 'request.path == "/api/items" and request.method == "GET"', rows=1
    )
    p.locator(ROWS).first.click()
    body = p.locator("pre.response-body")
    expect(body).to_have_attribute("data-kind", "json")
    # Sent gzip-compressed; the detail shows it decoded, pretty-printed.
    expect(body).to_have_text(json.dumps(GZIP_JSON, indent=2))
    gz = get_json(
        cluster.hub.url(
            "/api/har?q=" + _quote('request.path == "/api/items" and request.method == "GET"')
        )
    )
    content = gz["log"]["entries"][0]["response"]
    meta = p.locator("pre.response-body").locator("xpath=preceding-sibling::p[1]")
    expect(meta).to_contain_text(f"{content['content']['size']} B decoded")
    expect(meta).to_contain_text(f"{content['bodySize']} B captured (gzip)")
    expect(p.locator("#response-line")).to_have_text("HTTP/1.1 200 OK")
    expect(p.locator("#request-line")).to_have_text("GET /api/items HTTP/1.1")
    p.screenshot(path=str(shots / "detail.png"))

    # That connection's pcap, downloaded from the pane, is read by tshark.
    with p.expect_download() as download:
        p.click("#download-pcap")
    saved = tmp_path / "connection.pcap"
    download.value.save_as(saved)
    assert tshark_count(saved, 'http.request.uri == "/api/items"') == 2  # GET and POST
    assert tshark_count(saved) == 16  # the whole connection (fixtures/web/bodies.pcap)

    # A JSON request body, pretty-printed.
    apply_filter(p, 'request.method == "POST" and request.path == "/api/items"')
    expect(p.locator(ROWS)).to_have_count(1)
    p.locator(ROWS).first.click()
    expect(p.locator("pre.request-body")).to_have_text(json.dumps(POST_JSON, indent=2))
    # "Copy as curl" puts a command that repeats the request on the clipboard.
    p.context.grant_permissions(["clipboard-read", "clipboard-write"])
    p.click("#copy-curl")
    expect(p.locator("#copy-dialog")).to_be_hidden()
    copied = p.evaluate(
        """async () => {  // the copy is asynchronous: wait for it to land
            for (let i = 0; i < 200; i++) {
                const text = await navigator.clipboard.readText();
                if (text) return text;
                await new Promise((r) => setTimeout(r, 50));
            }
            return "";
        }"""
    )
    assert copied == (
        "curl -X 'POST' 'http://shop/api/items' -H 'Content-Type: application/json' "
        f"--data-binary '{json.dumps(POST_JSON)}'"
    )
    # A binary body as hex.
    apply_filter(p, 'request.path == "/logo.bin"')
    expect(p.locator(ROWS)).to_have_count(1)
    p.locator(ROWS).first.click()
    hexed = p.locator("pre.response-body")
    expect(hexed).to_have_attribute("data-kind", "binary")
    first_line = "00000000  " + " ".join(f"{b:02x}" for b in BINARY_BODY[:8]) + "  "
    expect(hexed).to_contain_text(first_line + " ".join(f"{b:02x}" for b in BINARY_BODY[8:16]))
    # An entry with an error has it spelled out.
    apply_filter(p, 'request.path == "/never-answered"')
    expect(p.locator(ROWS)).to_have_count(1)
    p.locator(ROWS).first.click()
    expect(p.locator("#entry-error")).to_contain_text(
        "pair-not-found: a request without its response"
    )
    expect(p.locator("#detail")).to_contain_text("no response was captured")
    assert watch.errors == [], watch.console


def test_the_xss_capture_renders_as_text(page: tuple[Any, Any], cluster: Cluster) -> None:
    p, watch = page
    query = f'worker == "{cluster.b.address}" and request.path.matches(r"XSS|^/page$")'
    open_dashboard(p, cluster.hub, query, rows=XSS_ENTRIES)
    evil_path = "/<script>alert(1)</script>/XSS-1"
    expect(p.locator(ROWS).filter(has_text=evil_path)).to_have_count(1)
    p.locator(ROWS).filter(has_text=evil_path).click()
    detail = p.locator("#detail")
    expect(detail).to_contain_text('<img src=x onerror="alert(4)">')
    expect(detail).to_contain_text("<svg onload=alert(3)>")
    expect(detail).to_contain_text("<script>alert(5)</script>")
    expect(detail).to_contain_text("<b onmouseover=alert(12)>XSS-4</b>")
    expect(p.locator("pre.response-body")).to_contain_text('"html": "<script>alert(6)</script>"')
    expect(p.locator("pre.response-body")).to_contain_text('"<b>key</b>": "<svg onload=alert(8)>"')
    expect(p.locator("#detail-title")).to_have_text(
        "GET /<script>alert(1)</script>/XSS-1?q=<img/src/onerror=alert(2)>&XSS-2=1"
    )
    p.locator(ROWS).filter(has_text="/page").click()
    expect(p.locator("pre.response-body")).to_contain_text("<script>alert(9)</script>")
    # Nothing ran and nothing was injected: no dialog, no element the page did not make.
    injected = p.evaluate(
        """() => ({
            scripts: document.scripts.length,
            images: document.images.length,
            svgs: document.querySelectorAll('svg, b, iframe, object, embed').length,
            handlers: [...document.querySelectorAll('*')].filter(
                (e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
        })"""
    )
    assert injected == {"scripts": 1, "images": 1, "svgs": 0, "handlers": 0}
    assert watch.dialogs == []
    assert watch.errors == [], watch.console


def test_exports_har_and_pcap_hold_the_lists_entries(
    page: tuple[Any, Any], cluster: Cluster, tmp_path: Path
) -> None:
    p, watch = page
    query = "response.status >= 300"
    open_dashboard(p, cluster.hub, query, rows=9)
    ids = shown_ids(p)

    with p.expect_download() as har_download:
        p.click("#export-har")
    har_path = tmp_path / "export.har"
    har_download.value.save_as(har_path)
    har_bytes = har_path.read_bytes()
    assert validate_har(har_bytes, tmp_path) == []
    har = json.loads(har_bytes)
    entries = har["log"]["entries"]
    assert sorted(e["_id"] for e in entries) == sorted(ids)
    for e in entries:
        assert {"request", "response", "timings", "startedDateTime", "time", "cache"} <= set(e)
        assert e["response"]["status"] >= 300
    assert "comment" not in har["log"]  # nothing left out

    with p.expect_download() as pcap_download:
        p.click("#export-pcap")
    merged = tmp_path / "export.pcapng"
    pcap_download.value.save_as(merged)
    # Exactly the packets of the listed entries' connections: each connection's own pcap,
    # fetched through the hub, counted and compared packet by packet.
    connections = {(e["_worker"], e["connection"].rpartition("/")[2]) for e in entries}
    expected: list[str] = []
    for worker_id, stream in sorted(connections):
        status, _, data = http_get(cluster.hub.url(f"/pcaps/{worker_id}/{stream}"))
        assert status == 200
        one = tmp_path / f"{stream}"
        one.write_bytes(data)
        expected += _packets(one)
    got = _packets(merged)
    assert tshark_count(merged) == len(expected) == len(got)
    assert sorted(got) == sorted(expected)
    assert watch.errors == [], watch.console


def test_a_killed_worker_goes_down_and_its_return_brings_entries_without_duplicates(
    page: tuple[Any, Any], tmp_path: Path, shots: Path
) -> None:
    from kshark.hub.limits import HubLimits

    p, watch = page
    port = free_port()
    w = worker(tmp_path, "w", [DEMO], port=port)
    wait_stored(w, DEMO_ENTRIES)
    h = hub(tmp_path, [w.address])
    try:
        open_dashboard(p, h, rows=DEMO_ENTRIES)
        state = p.locator(f'#cluster-rows tr[data-worker="{w.address}"] .state')
        expect(state).to_have_text("up")

        w.kill()
        # The hub finds a dead worker at once through the stream's connection (a reset), and at
        # the latest at its next /status probe (every status_interval, each bounded by
        # status_timeout): the panel must say so within that.
        limits = HubLimits()
        detection_ms = (limits.status_interval + limits.status_timeout) * 1000
        expect(state).to_have_text("down", timeout=detection_ms)
        expect(p.locator(f'#cluster-rows tr[data-worker="{w.address}"] td.error')).not_to_be_empty()

        # Back on the same port and data directory, with a capture of 4 more entries to replay.
        w2 = worker(tmp_path, "w", [BODIES], port=port)
        try:
            expect(state).to_have_text("up", timeout=STEP_MS)
            wait_stored(w2, DEMO_ENTRIES + BODIES_ENTRIES)
            expect(p.locator(ROWS)).to_have_count(DEMO_ENTRIES + BODIES_ENTRIES, timeout=STEP_MS)
            ids = shown_ids(p)
            assert len(ids) == len(set(ids))  # nothing twice
            assert set(ids) == stored_ids(tmp_path / "w", w.address)
            expect(p.locator("#count-matched")).to_have_text(str(DEMO_ENTRIES + BODIES_ENTRIES))
        finally:
            w2.stop()
    finally:
        h.stop()
        w.kill()
    assert watch.errors == [], watch.console


def test_with_a_token_the_page_asks_once_and_never_puts_it_in_a_url(
    page: tuple[Any, Any], tmp_path: Path
) -> None:
    p, watch = page
    token = "s3cr3t-tøken"  # not ASCII: it travels base64url-encoded in the subprotocol
    w = worker(tmp_path, "w", [DEMO], extra=["--token", token])
    h = None
    try:
        status, _, _ = http_get(w.url("/status"))
        assert status == 401
        wait_stored_with_token(w, token, DEMO_ENTRIES)
        h = hub(tmp_path, [w.address], extra=["--token", token, "--worker-token", token])
        urls: list[str] = []
        p.on("request", lambda r: urls.append(r.url))
        p.on("websocket", lambda ws: urls.append(ws.url))
        p.goto(page_url(h, "response.status >= 400"))
        expect(p.locator("#token-dialog")).to_be_visible()
        p.fill("#token-input", "wrong")
        p.press("#token-input", "Enter")
        expect(p.locator("#token-problem")).to_have_text("That token was refused.")
        p.fill("#token-input", token)
        p.click("#token-ok")
        expect(p.locator("#token-dialog")).to_be_hidden()
        expect(p.locator(ROWS)).to_have_count(6, timeout=STEP_MS)
        # Asked once: a reload in the same tab does not ask again.
        p.reload()
        expect(p.locator(ROWS)).to_have_count(6, timeout=STEP_MS)
        expect(p.locator("#token-dialog")).to_be_hidden()
        # The entry pane and the exports work with it too.
        p.locator(ROWS).first.click()
        expect(p.locator("#detail-title")).not_to_be_empty()
        with p.expect_download() as har_download:
            p.click("#export-har")
        har = json.loads(Path(har_download.value.path()).read_bytes())
        assert len(har["log"]["entries"]) == 6
        assert urls and not [u for u in urls if "tok" in u.lower() or "s3cr3t" in u]
        assert "token" not in p.url
    finally:
        if h is not None:
            h.stop()
        w.stop()
    assert watch.dialogs == []
    # The refused token is a 401 the browser logs as a failed resource; nothing else.
    assert [e for e in watch.errors if "401" not in e] == [], watch.console


def wait_stored_with_token(w: Served, token: str, entries: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        status, _, body = http_get(w.url("/status"), {"Authorization": f"Bearer {token}"})
        if status == 200 and json.loads(body).get("last_seq", 0) >= entries:
            return
        assert time.monotonic() < deadline, (status, body[:300])
        time.sleep(0.05)  # polling /status: there is no event to wait on


def _stored_entry(data_dir: Path, query: str) -> dict[str, Any]:
    """The first entry file in a data directory that a KFL query matches."""
    from kshark.kfl import compile_query

    q = compile_query(query)
    for path in sorted((data_dir / "entries").iterdir()):
        entry: dict[str, Any] = json.loads(path.read_bytes())
        if q.match(entry):
            return entry
    raise AssertionError(f"no stored entry matches {query}")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _packets(path: Path) -> list[str]:
    """One line per packet: time, length, addresses, ports, raw sequence number (tshark)."""
    import subprocess

    run = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len",
         "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "tcp.dstport",
         "-e", "tcp.seq_raw", "-e", "tcp.flags"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return run.stdout.splitlines()


def test_the_page_resumes_after_a_hub_restart_without_repeating_entries(
    page: tuple[Any, Any], tmp_path: Path
) -> None:
    from tests.support.feeder import Feeder

    p, watch = page
    history, live = 40, 60
    feeder = Feeder(tmp_path / "feeder", history=history, rate=200, total=live)
    port = free_port()
    h = hub(tmp_path, [f"127.0.0.1:{feeder.port}"], extra=["--port", str(port)])
    h2 = None
    try:
        open_dashboard(p, h, rows=history)
        h.kill()
        expect(p.locator("#connection")).to_have_attribute("data-state", "connecting")
        feeder.go()
        feeder.wait_done(timeout=60)  # written while the page had no stream
        h2 = hub(tmp_path, [f"127.0.0.1:{feeder.port}"], extra=["--port", str(port)])
        # The page reconnects by itself and resumes after the last entry it had from the worker.
        expect(p.locator("#count-matched")).to_have_text(str(history + live), timeout=STEP_MS)
        expect(p.locator("#connection")).to_have_attribute("data-state", "live")
        ids = shown_ids(p)
        assert len(ids) == len(set(ids)) == history + live
        assert set(ids) == stored_ids(tmp_path / "feeder", f"127.0.0.1:{feeder.port}")
    finally:
        if h2 is not None:
            h2.stop()
        h.kill()
        feeder.stop()
    # While the hub is gone the browser logs the refused websocket and, if the page polled
    # /status in that window, the refused fetch; nothing else may be an error.
    refused = ("WebSocket", "net::ERR_CONNECTION_REFUSED")
    assert [e for e in watch.errors if not any(r in e for r in refused)] == [], watch.console
