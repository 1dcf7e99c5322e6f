"""fixtures/worker/ is exactly what scripts/make_worker_fixtures.py writes, and that is stable."""

from __future__ import annotations

from pathlib import Path

from tests.support.generated import FIXTURES, check_generated


def test_committed_worker_fixtures_match_the_generator(tmp_path: Path) -> None:
    fresh = check_generated("make_worker_fixtures.py", FIXTURES / "worker", tmp_path)
    assert sorted(fresh) == ["gzip-burst.pcap.gz"]
