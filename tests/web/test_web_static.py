"""How the dashboard's files are served (types, CSP, caching, no token needed), the websocket
token as a subprotocol, and what the shipped files may not contain (inline code, markup built
from strings, anything fetched from elsewhere)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from kshark.kfl import validate
from tests.support.generated import check_generated
from tests.support.web import DEMO, DEMO_ENTRIES, REPO, http_get, wait_stored, worker

STATIC = REPO / "kshark" / "web" / "static"
TOKEN = "t0ken-ü"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("static")
    w = worker(tmp, "w", [DEMO])
    wait_stored(w, DEMO_ENTRIES)
    try:
        yield w
    finally:
        w.stop()


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:href|src)="(assets/[0-9a-f]+/[a-z]+\.[a-z]+)"', page)


def test_the_page_and_its_files_have_their_types_csp_and_caching(served: object) -> None:
    status, headers, body = http_get(served.url("/"))  # type: ignore[attr-defined]
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    csp = headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe" not in csp and "*" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    urls = asset_urls(body.decode())
    assert {u.rsplit("/", 1)[1] for u in urls} == {"icon.svg", "style.css", "app.js"}
    types = {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    version = urls[0].split("/")[1]
    for name in sorted(p.name for p in STATIC.iterdir() if p.name != "index.html"):
        status, headers, data = http_get(served.url(f"/assets/{version}/{name}"))  # type: ignore[attr-defined]
        assert status == 200, name
        assert data == (STATIC / name).read_bytes()
        assert headers["content-type"] == types[Path(name).suffix]
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "content-security-policy" in headers
    # Another version is not served (a stale page must not mix files), nor /api/ as the page.
    assert http_get(served.url("/assets/0000000000000000/app.js"))[0] == 404  # type: ignore[attr-defined]
    assert http_get(served.url(f"/assets/{version}/../worker.py"))[0] == 404  # type: ignore[attr-defined]
    assert http_get(served.url("/api/"))[0] == 404  # type: ignore[attr-defined]


def test_with_a_token_the_page_loads_but_the_api_wants_it(tmp_path: Path) -> None:
    w = worker(tmp_path, "w", [DEMO], extra=["--token", TOKEN])
    try:
        status, _, body = http_get(w.url("/"))
        assert status == 200
        version_url = asset_urls(body.decode())[0]
        assert http_get(w.url("/" + version_url))[0] == 200
        for path in ("/status", "/api/har?q=", "/api/pcap?q=", "/item/1-0"):
            assert http_get(w.url(path))[0] == 401, path
    finally:
        w.stop()


def subprotocol(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"kshark.bearer.{encoded}"


async def test_the_websocket_takes_the_token_as_a_subprotocol(tmp_path: Path) -> None:
    from tests.support.hub import FakeWorker

    async with trio.open_nursery() as nursery:
        fake = FakeWorker(tmp_path / "w", token=TOKEN)
        await fake.start(nursery)
        fake.write(2)
        url = f"ws://127.0.0.1:{fake.port}/api/wsFull"
        with trio.fail_after(20):
            async with open_websocket_url(url, subprotocols=["kshark", subprotocol(TOKEN)]) as ws:
                assert ws.subprotocol == "kshark"
                await ws.send_message("")
                got = [await ws.get_message() for _ in range(2)]
            assert all('"id":' in g for g in got)
            for offered in (
                ["kshark", subprotocol("wrong")],
                ["kshark", "kshark.bearer.%%%"],
                ["kshark"],
            ):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(url, subprotocols=offered):
                        pass
                assert rejected.value.status_code == 401
        fake.close()
        nursery.cancel_scope.cancel()


def test_the_shipped_files_hold_no_inline_code_nor_markup_from_strings() -> None:
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    for js in STATIC.glob("*.js"):
        text = js.read_text()
        for banned in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            'setAttribute("on',
            "DOMParser",
        ):
            assert banned not in text, f"{js.name}: {banned}"
        for spec in re.findall(r'^import .* from "([^"]+)";', text, re.M):
            assert re.fullmatch(r"\./[a-z]+\.js", spec), f"{js.name} imports {spec}"
    for f in STATIC.iterdir():
        # Nothing from elsewhere: no absolute URL to load, in any file.
        assert not re.search(
            r"""(?:src|href|import|url)\s*[=(]?\s*["']?(?:https?:)?//""", f.read_text()
        ), f.name


def test_the_example_queries_are_valid_kfl() -> None:
    source = (STATIC / "filter.js").read_text()
    block = source.split("export const EXAMPLES = [", 1)[1].split("];", 1)[0]
    examples = re.findall(r"""^\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'),$""", block, re.M)
    texts = [d or s for d, s in examples]
    assert len(texts) >= 8
    for text in texts:
        ok, message = validate(text.replace('\\"', '"'))
        assert ok, (text, message)


def test_committed_web_fixtures_match_their_generator(tmp_path: Path) -> None:
    fresh = check_generated("make_web_fixtures.py", REPO / "fixtures" / "web", tmp_path)
    assert sorted(fresh) == ["bodies.pcap", "xss.pcap"]
