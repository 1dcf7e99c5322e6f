"""Node's `wscat`, run as a user runs it: `wscat --connect ws://…/api/wsFull -x QUERY -w N`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def wscat_binary() -> str:
    wscat = shutil.which("wscat")
    if wscat is None:
        pytest.fail("wscat is not installed: scripts/setup installs it (npm install -g wscat)")
    return wscat


def wscat_query(port: int, query: str, tmp: Path, **kw: Any) -> list[dict[str, Any]]:
    """`wscat_lines`, each line parsed."""
    return [json.loads(line) for line in wscat_lines(port, query, tmp, **kw)]


def wscat_lines(
    port: int, query: str, tmp: Path, *, wait_s: int = 2, timeout_s: float = 20.0
) -> list[str]:
    """The lines `wscat --connect ws://127.0.0.1:PORT/api/wsFull -x QUERY -w WAIT_S` prints.
    Its stdin stays open until it is done (it quits at EOF on stdin, before any
    frame came); its output goes to files, so nothing blocks on a full pipe meanwhile."""
    out_path, err_path = tmp / "wscat.out", tmp / "wscat.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [wscat_binary(), "--connect", f"ws://127.0.0.1:{port}/api/wsFull",
             "-x", query, "-w", str(wait_s)],
            stdin=subprocess.PIPE, stdout=out, stderr=err,
        )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.wait(timeout_s)  # wscat leaves WAIT_S seconds after sending the filter
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err_path.read_text()
    return out_path.read_text().splitlines()
