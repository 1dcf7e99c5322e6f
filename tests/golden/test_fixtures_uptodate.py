"""The committed fixtures are exactly what scripts/make_fixtures.py writes today.

Guards both ways: an edit to the generator that was not followed by a regeneration, and a
generator that stopped being deterministic (the same run twice must give the same bytes).
"""

from __future__ import annotations

from pathlib import Path

from tests.support.generated import FIXTURES, check_generated


def test_committed_fixtures_match_the_generator(tmp_path: Path) -> None:
    # fixtures/ also holds the other generators' directories and demo.pcap (make_demo_capture.py).
    fresh = check_generated("make_fixtures.py", FIXTURES, tmp_path, others_allowed=True)
    assert "expected.json" in fresh and "README.md" in fresh
    assert len(fresh) >= 32


def test_fixtures_stay_small() -> None:
    sizes = {p.name: p.stat().st_size for p in FIXTURES.iterdir() if p.name != "demo.pcap"}
    assert sum(sizes.values()) < 1_000_000, sizes
    assert max(sizes.values()) < 300_000, sizes
