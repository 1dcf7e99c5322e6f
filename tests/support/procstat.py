"""What the kernel says about a process (Linux /proc), and ending one: for tests and
scripts/bench*."""

from __future__ import annotations

import os
import subprocess
from typing import Any

TERMINATE_GRACE_S = 3.0  # SIGTERM to SIGKILL


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of one process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[Any], grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM, wait up to grace_s, then SIGKILL: ends one process a test or bench started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)
