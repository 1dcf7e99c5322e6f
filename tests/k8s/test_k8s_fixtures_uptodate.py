"""fixtures/k8s/ is exactly what scripts/make_k8s_fixtures.py writes today (and it writes the
same bytes every time)."""

from __future__ import annotations

from pathlib import Path

from tests.support.generated import FIXTURES, check_generated


def test_committed_k8s_fixtures_match_the_generator_and_it_is_deterministic(tmp_path: Path) -> None:
    fresh = check_generated("make_k8s_fixtures.py", FIXTURES / "k8s", tmp_path)
    assert sorted(fresh) == ["scenario.json", "traffic.pcap"]
