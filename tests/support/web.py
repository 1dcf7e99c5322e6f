"""Helpers for the dashboard's tests: real `kshark-worker` and `kshark-hub` processes, Debian's
Chromium driven by Playwright (sync API), and what a user would look at in the page.

Chromium is the system's (`/usr/bin/chromium`, installed by scripts/setup); Playwright's own
browser download is never used. Every wait is on a DOM condition or an event, with a deadline,
never a fixed sleep: the suite runs on a busy 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.wscat import wscat_binary

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
WEB_FIXTURES = FIXTURES / "web"
DEMO = FIXTURES / "demo.pcap"
DEMO_ENTRIES = 24
VENV_BIN = Path(sys.executable).parent
# Screenshots the run writes (one of them is docs/dashboard.png).
SHOTS = REPO / "test-output" / "web"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long one step may take (a process starting, the list filling) on a busy machine.
STEP_S = 30.0
STEP_MS = STEP_S * 1000

LISTENING_RE = re.compile(r"api listening on \S+ port (\d+)")


def empty_pcap(path: Path) -> Path:
    """A pcap without packets: a worker replaying it serves what its data directory holds."""
    import struct

    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


# ---- processes ----------------------------------------------------------------------------------


@dataclass
class Served:
    """A kshark command serving its API, stderr to a file; `port` as it reported it."""

    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> Served:
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + STEP_S
        while True:
            text = self.log_path.read_bytes()[start:].decode(errors="replace")
            ports = LISTENING_RE.findall(text)
            if ports:
                self.port = int(ports[-1])
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[0]} exited before listening: {self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.argv[0]} did not listen in time: {self.log()}")
            time.sleep(0.02)  # polling a log file: there is no event to wait on

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STEP_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def worker(
    tmp: Path, name: str, pcaps: list[Path], *, port: int = 0, extra: list[str] = ()
) -> Served:  # type: ignore[assignment]
    """`kshark-worker --pcap …` on its own data directory: replays, then serves."""
    argv = [str(VENV_BIN / "kshark-worker")]
    for p in pcaps:
        argv += ["--pcap", str(p)]
    argv += ["--data-dir", str(tmp / name), "--port", str(port), *extra]
    return Served(argv, tmp / f"{name}.log").start()


def hub(tmp: Path, workers: list[str], *, extra: list[str] = ()) -> Served:  # type: ignore[assignment]
    argv = [str(VENV_BIN / "kshark-hub"), "--port", "0", *extra]
    for w in workers:
        argv += ["--worker", w]
    return Served(argv, tmp / "hub.log").start()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=STEP_S) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get_json(url: str) -> Any:
    status, _, body = http_get(url)
    assert status == 200, (url, status, body[:500])
    return json.loads(body)


def wait_stored(served: Served, entries: int) -> None:
    """Until the worker's /status says `entries` are stored."""
    deadline = time.monotonic() + STEP_S
    while get_json(served.url("/status")).get("last_seq", 0) < entries:
        assert time.monotonic() < deadline, f"fewer than {entries} entries stored: {served.log()}"
        time.sleep(0.05)  # polling /status: there is no event to wait on


def wscat_ids(port: int, query: str, tmp: Path, count: int) -> list[str]:
    """The ids `wscat -x QUERY` receives from ws://127.0.0.1:PORT/api/wsFull, once it has
    received `count` (the stores are complete before it starts). Its output file is polled (no
    event to wait on in another process) up to STEP_S: a fixed `-w` window would end early on a
    busy machine."""
    wscat = wscat_binary()
    out_path, err_path = tmp / "wscat.out", tmp / "wscat.err"

    def ids() -> list[str]:
        text = out_path.read_text()
        whole = text[: text.rfind("\n") + 1]  # a line still being written is not read yet
        return [json.loads(line)["id"] for line in whole.splitlines() if line.strip()]

    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [wscat, "--connect", f"ws://127.0.0.1:{port}/api/wsFull", "-x", query],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
        )
    assert proc.stdin is not None
    deadline = time.monotonic() + STEP_S
    try:
        while len(got := ids()) < count:
            assert proc.poll() is None, f"wscat exited: {err_path.read_text()} {got}"
            assert time.monotonic() < deadline, f"wscat received {len(got)} of {count}: {got}"
            time.sleep(0.05)  # polling another process's output: there is no event to wait on
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(STEP_S)
    return ids()


def tshark_count(path: Path, display_filter: str | None = None) -> int:
    argv = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"]
    if display_filter:
        argv += ["-Y", display_filter]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_S, check=False)
    assert run.returncode == 0, run.stderr
    return len(run.stdout.split())


def validate_har(har: bytes, tmp: Path) -> list[dict[str, Any]]:
    """Errors of `har-validator` (the HAR 1.2 JSON schema, npm), [] when the document is valid."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node and npm, "node and npm are installed by scripts/setup"
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, check=True).stdout
    path = tmp / "export.har"
    path.write_bytes(har)
    script = (
        "const v = require('har-validator');"
        "const har = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));"
        "v.har(har).then(() => console.log('[]'),"
        " (e) => console.log(JSON.stringify(e.errors || [{message: String(e)}])));"
    )
    run = subprocess.run(
        [node, "-e", script, str(path)],
        capture_output=True,
        text=True,
        timeout=STEP_S,
        env={**os.environ, "NODE_PATH": root.strip()},
        check=False,
    )
    assert run.returncode == 0, (
        f"har-validator did not run (scripts/setup installs it): {run.stderr}"
    )
    errors: list[dict[str, Any]] = json.loads(run.stdout)
    return errors


# ---- the browser -------------------------------------------------------------------------------


@dataclass
class Watch:
    """What the page said: console errors and warnings, uncaught errors, dialogs (alert())."""

    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)

    @property
    def errors(self) -> list[str]:
        return [t for kind, t in self.console if kind == "error"] + self.page_errors

    @property
    def warnings(self) -> list[str]:
        return [t for kind, t in self.console if kind == "warning"]


def launch(playwright: Any, user_data_dir: Path) -> Any:
    """Debian's Chromium on a fresh profile (a persistent context on an empty directory)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1400, "height": 1000},
        accept_downloads=True,
    )


ROWS = "#list .row[data-id]:not([hidden])"


def shown_ids(page: Any) -> list[str]:
    """The ids of every row in the list, in its order: the list is scrolled from top to bottom
    (only the rows in sight exist in the DOM), each position read once it is rendered."""
    ids: list[str] = page.evaluate(
        """async () => {
            const list = document.getElementById('list');
            const rendered = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
            const byIndex = new Map();
            for (let top = 0; ; top += Math.max(1, Math.floor(list.clientHeight / 2))) {
                list.scrollTop = top;
                await rendered();
                for (const r of list.querySelectorAll('.row[data-id]:not([hidden])')) {
                    byIndex.set(Number(r.dataset.index), r.dataset.id);
                }
                if (list.scrollTop + list.clientHeight >= list.scrollHeight) break;
            }
            list.scrollTop = list.scrollHeight;
            return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
        }"""
    )
    return ids


def edge_row(page: Any, which: str) -> dict[str, str]:
    """{"id", "path"} of the first or last row in the list's order (rows are recycled, so the
    DOM order is not the list's)."""
    row: dict[str, str] = page.evaluate(
        """(which) => {
            const rows = [...document.querySelectorAll('#list .row[data-id]:not([hidden])')]
              .sort((a, b) => Number(a.dataset.index) - Number(b.dataset.index));
            const r = which === 'first' ? rows[0] : rows[rows.length - 1];
            return {id: r.dataset.id, path: r.querySelector('.c-path').textContent};
        }""",
        which,
    )
    return row


def shown_count(page: Any) -> int:
    return int(page.inner_text("#count-shown").replace(",", ""))


def apply_filter(page: Any, text: str) -> None:
    """Type a filter and press Enter, as a user does."""
    page.fill("#filter", text)
    page.press("#filter", "Enter")


def page_url(served: Served, query: str | None = None) -> str:
    if query is None:
        return served.url("/")
    return served.url("/?" + urllib.parse.urlencode({"q": query}))
