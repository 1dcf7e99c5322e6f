"""What the kernel says about a process (Linux /proc), for tests and scripts/bench*."""

from __future__ import annotations

import os


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of one process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
