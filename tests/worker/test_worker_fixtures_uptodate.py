"""fixtures/worker/ is exactly what scripts/make_worker_fixtures.py writes, and that is stable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_worker_fixtures.py"
FIXTURES = REPO / "fixtures" / "worker"


def _generate(out: Path) -> dict[str, bytes]:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_committed_worker_fixtures_match_the_generator(tmp_path: Path) -> None:
    fresh = _generate(tmp_path / "a")
    assert fresh == _generate(tmp_path / "b")  # deterministic
    committed = {p.name: p.read_bytes() for p in sorted(FIXTURES.iterdir())}
    stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    assert not stale, f"run scripts/make_worker_fixtures.py: out of date or extra: {stale}"
