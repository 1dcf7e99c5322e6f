"""Committed fixtures against the script in scripts/ that writes them.

Every fixture directory is checked the same way, both ways: an edit to a generator that was not
followed by a regeneration, and a generator that stopped being deterministic (two runs must
write the same bytes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def generate(script: str, out: Path, timeout: float = 300) -> dict[str, bytes]:
    """What `scripts/<script> --out OUT` writes: {file name: bytes}."""
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def check_generated(
    script: str, directory: Path, tmp_path: Path, *, others_allowed: bool = False
) -> dict[str, bytes]:
    """Asserts that `directory` holds exactly what `script` writes (with `others_allowed`, files
    it does not write may sit beside them: fixtures/ holds other generators' directories) and
    that it writes the same bytes twice; returns what it wrote."""
    fresh = generate(script, tmp_path / "first")
    committed = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    names = fresh.keys() if others_allowed else fresh.keys() | committed.keys()
    stale = sorted(n for n in names if fresh.get(n) != committed.get(n))
    assert not stale, f"run scripts/{script}: out of date, missing or extra: {stale}"
    again = generate(script, tmp_path / "again")
    differ = sorted(n for n in fresh.keys() | again.keys() if fresh.get(n) != again.get(n))
    assert not differ, f"scripts/{script} is not deterministic: {differ}"
    return fresh
