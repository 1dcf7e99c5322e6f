"""`scripts/demo` is the first thing a newcomer runs: it must work, worker and hub together."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.rawhttp import free_port

pytestmark = pytest.mark.slow  # sets up, starts a worker and a hub, runs wscat

ROOT = Path(__file__).resolve().parents[1]


def test_demo_check_streams_entries_through_the_hub() -> None:
    env = dict(
        os.environ,
        KSHARK_DEMO_WORKER_PORT=str(free_port()),
        KSHARK_DEMO_HUB_PORT=str(free_port()),
    )
    res = subprocess.run(
        [str(ROOT / "scripts" / "demo"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ws://127.0.0.1:{env['KSHARK_DEMO_HUB_PORT']}/api/wsFull" in res.stdout
    # fixtures/demo.pcap holds three 301s, three 404s and three 500s.
    assert "demo --check: 9 entries with status > 300 through the hub" in res.stdout
