"""The committed fixtures are exactly what scripts/make_fixtures.py writes today.

Guards both ways: an edit to the generator that was not followed by a regeneration, and a
generator that stopped being deterministic (the same run twice must give the same bytes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_fixtures.py"
FIXTURES = REPO / "fixtures"


def _generate(out: Path) -> dict[str, bytes]:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _generate(tmp_path_factory.mktemp("fixtures"))


def test_committed_fixtures_match_the_generator(fresh: dict[str, bytes]) -> None:
    assert "expected.json" in fresh and "README.md" in fresh
    assert len(fresh) >= 32
    stale = sorted(
        name
        for name, data in fresh.items()
        if not (FIXTURES / name).is_file() or (FIXTURES / name).read_bytes() != data
    )
    assert not stale, f"run scripts/make_fixtures.py: out of date or missing: {stale}"


def test_generator_is_deterministic(fresh: dict[str, bytes], tmp_path: Path) -> None:
    again = _generate(tmp_path)
    assert sorted(again) == sorted(fresh)
    assert [n for n in fresh if again[n] != fresh[n]] == []


def test_fixtures_stay_small() -> None:
    sizes = {p.name: p.stat().st_size for p in FIXTURES.iterdir() if p.name != "demo.pcap"}
    assert sum(sizes.values()) < 1_000_000, sizes
    assert max(sizes.values()) < 300_000, sizes
