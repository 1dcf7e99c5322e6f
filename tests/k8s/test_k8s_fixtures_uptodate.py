"""fixtures/k8s/ is exactly what scripts/make_k8s_fixtures.py writes today (and it writes the
same bytes every time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_k8s_fixtures.py"
FIXTURES = REPO / "fixtures" / "k8s"


def generate(out: Path) -> dict[str, bytes]:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_committed_k8s_fixtures_match_the_generator_and_it_is_deterministic(tmp_path: Path) -> None:
    first = generate(tmp_path / "a")
    assert sorted(first) == ["scenario.json", "traffic.pcap"]
    assert generate(tmp_path / "b") == first
    committed = {p.name: p.read_bytes() for p in sorted(FIXTURES.iterdir())}
    stale = sorted(n for n in first if committed.get(n) != first[n])
    assert not stale, f"run scripts/make_k8s_fixtures.py: out of date: {stale}"
    assert sorted(committed) == sorted(first)
