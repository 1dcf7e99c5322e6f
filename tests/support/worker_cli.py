"""Helpers for driving the real `kshark-worker` console script as a subprocess, as a user would.

Kept free of pytest so the live tests and scripts can share it. Everything here reads what the
user can see: exit codes, stdout/stderr text, the files in the data directory, and the API over
plain HTTP. No kshark module is imported: the tests judge the CLI from the outside.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED_PCAPS = ROOT.parent / "shared" / "pcaps"
FIXTURES = ROOT / "fixtures"
DEMO = FIXTURES / "demo.pcap"


def worker_bin() -> str:
    """The installed console script (the venv running the tests, else the repo's .venv)."""
    beside = Path(sys.executable).with_name("kshark-worker")
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "kshark-worker")


# How long any single step may take (start, replay of a small capture, shutdown).
STEP_TIMEOUT_S = 20.0
# A signalled worker must be gone within this: "promptly".
SHUTDOWN_BUDGET_S = 5.0

SUMMARY_RE = re.compile(
    r"^kshark-worker: (?P<packets>\d+) packets, (?P<tcp>\d+) tcp, "
    r"(?P<connections>\d+) connections?(?: \((?P<protocols>[a-z0-9_]+ \d+(?:, [a-z0-9_]+ \d+)*)\))?, "
    r"(?P<entries>\d+) entries "
    r"\((?P<errors>\d+) with errors\), (?P<dropped>\d+) dropped, .* "
    r"(?P<warnings>\d+) capture warnings$"
)
LISTENING_RE = re.compile(r"api listening on \S+ port (\d+)")
ENTRY_FILE_RE = re.compile(r"^(\d{12})_pcap-(\d+)_entry\.json$")
PCAP_FILE_RE = re.compile(r"^(\d{12})\.pcap$")


def run_once(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`kshark-worker --once ARGS...` to completion; text stdout/stderr captured."""
    return subprocess.run(
        [worker_bin(), "--once", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def parse_summary(stdout: str) -> dict[str, Any]:
    """The --once summary line's numbers; `protocols`: connections per protocol."""
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one summary line on stdout, got {stdout!r}"
    m = SUMMARY_RE.match(lines[0])
    assert m, f"summary line not understood: {lines[0]!r}"
    out: dict[str, Any] = {k: int(v) for k, v in m.groupdict().items() if k != "protocols"}
    protocols = m.group("protocols")
    out["protocols"] = {
        name: int(n) for name, n in (p.split(" ") for p in protocols.split(", "))
    } if protocols else {}  # fmt: skip
    return out


# ---- the data directory ------------------------------------------------------------------------


def entry_files(data_dir: Path) -> dict[tuple[int, int], Path]:
    """(stream, index) → entry file; asserts every file in entries/ is named per ENTRY.md."""
    out = {}
    for p in (data_dir / "entries").iterdir():
        m = ENTRY_FILE_RE.match(p.name)
        assert m, f"unexpected file in entries/: {p.name}"
        out[int(m.group(1)), int(m.group(2))] = p
    return dict(sorted(out.items()))


def entries(data_dir: Path) -> list[dict[str, Any]]:
    """Every stored entry, parsed, in (stream, index) order."""
    return [json.loads(p.read_bytes()) for p in entry_files(data_dir).values()]


def pcap_files(data_dir: Path) -> dict[int, Path]:
    out = {}
    for p in (data_dir / "pcaps").iterdir():
        m = PCAP_FILE_RE.match(p.name)
        assert m, f"unexpected file in pcaps/: {p.name}"
        out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def read_pcap(path: Path) -> list[tuple[int, bytes]]:
    """[(ts_ns, frame)] of a classic pcap (µs or ns magic, little or big endian), strictly: a
    file that ends inside a record or header is an AssertionError (an unflushed file would)."""
    data = path.read_bytes()
    assert len(data) >= 24, f"{path}: no complete pcap header ({len(data)} bytes)"
    magics = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000),
        b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1),
        b"\xa1\xb2\x3c\x4d": (">", 1),
    }
    assert data[:4] in magics, f"{path}: not a pcap file"
    order, scale = magics[data[:4]]
    rec = struct.Struct(order + "IIII")
    off = 24
    out = []
    while off < len(data):
        assert off + 16 <= len(data), f"{path}: ends inside a record header at {off}"
        sec, frac, incl, _ = rec.unpack_from(data, off)
        off += 16
        assert off + incl <= len(data), f"{path}: ends inside a record at {off}"
        out.append((sec * 1_000_000_000 + frac * scale, data[off : off + incl]))
        off += incl
    return out


# ---- a serving worker --------------------------------------------------------------------------


@dataclass
class ServingWorker:
    """A `kshark-worker` without --once, its stderr going to a file (never a pipe nobody drains)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @classmethod
    def start(
        cls,
        args: Sequence[str],
        log_path: Path,
        *,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> ServingWorker:
        """Start `prefix... kshark-worker --port 0 ARGS...` (in `env`, else this environment);
        returns once the API listens (the port it reports on stderr is the one a user would
        read)."""
        log = open(log_path, "wb")  # noqa: SIM115 (handed to the child; closed right after)
        try:
            proc = subprocess.Popen(
                [*prefix, worker_bin(), "--port", "0", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        finally:
            log.close()
        w = cls(proc, log_path)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            m = LISTENING_RE.search(w.log())
            if m:
                w.port = int(m.group(1))
                return w
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode} before listening: {w.log()}")
            if time.monotonic() > deadline:
                w.kill()
                raise AssertionError(f"worker did not report its port in time: {w.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str) -> str:
        """Poll the log file (another process's: no event to wait on) until it holds `text`."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while text not in (log := self.log()):
            assert self.proc.poll() is None, f"the worker exited: {log}"
            assert time.monotonic() < deadline, f"no {text!r} in the log: {log}"
            time.sleep(0.02)
        return log

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        """GET from the test's own network namespace (the API's host is 127.0.0.1 there)."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=STEP_TIMEOUT_S) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, (code, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_for_entries(self, n: int, status: Any = None, written: bool = False) -> dict[str, Any]:
        """Poll /status (or `status()`) until the worker reports `n` entries made (`written`:
        and stored, journaled for readers)."""
        fetch = status or self.status
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            st: dict[str, Any] = fetch()
            made = st.get("entries", 0) >= n
            if made and (not written or st["store"]["entries_written"] >= n):
                return st
            assert time.monotonic() < deadline, f"only {st.get('entries')} of {n} entries: {st}"
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send `signum`; returns (exit code, seconds until exit). Kills after the budget."""
        t0 = time.monotonic()
        self.proc.send_signal(signum)
        try:
            rc = self.proc.wait(SHUTDOWN_BUDGET_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker still running {SHUTDOWN_BUDGET_S}s after {signal.Signals(signum).name}"
            ) from None
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STEP_TIMEOUT_S)


# ---- reading lines from a child without blocking forever ---------------------------------------


class LineReader:
    """Lines from a child's stdout with a deadline per wait. Reads the raw fd (os.read) and
    splits itself: select() on a buffered text file misses lines already in Python's buffer."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line (without newline), or None at EOF; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode()
                return None
            left = deadline - time.monotonic()
            assert left > 0, f"no complete line within {timeout}s (have {self.buf[:200]!r})"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if chunk:
                    self.buf += chunk
                else:
                    self.eof = True
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()
