"""The compiled capture modules (capture/__init__.py, scripts/build_native.py): used when they
match the sources, never when they do not, and never with KSHARK_PURE=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import capture

ROOT = Path(__file__).resolve().parents[2]

REPORT = """
import importlib, json, capture
for name in capture.NATIVE_MODULES:
    importlib.import_module("capture." + name)
print(json.dumps({"build": capture.NATIVE_BUILD, "compiled": capture.native_modules_loaded()}))
"""


def _report(env_extra: dict[str, str], cwd: Path = ROOT) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "KSHARK_PURE"}
    env.update(env_extra)
    env["PYTHONPATH"] = str(cwd)
    out = subprocess.run(
        [sys.executable, "-c", REPORT], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_built_modules_are_the_ones_that_run() -> None:
    # scripts/setup builds them; this makes sure (a no-op when the build is there).
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_native.py"), "--quiet"], check=True
    )
    report = _report({})
    assert report["build"] == str(ROOT / ".native" / capture.source_digest())
    assert report["compiled"] == list(capture.NATIVE_MODULES)


def test_pure_python_on_request() -> None:
    report = _report({"KSHARK_PURE": "1"})
    assert report == {"build": None, "compiled": []}


def test_a_build_of_other_sources_is_never_loaded(tmp_path: Path) -> None:
    # A copy of the package with a stand-in "build" (a Python module where the extension would
    # be): found while the digest matches, ignored once one source changes.
    shutil.copytree(
        ROOT / "capture", tmp_path / "capture", ignore=shutil.ignore_patterns("__pycache__")
    )
    probe = (
        "import json, capture, capture.segment\n"
        "print(json.dumps({'build': capture.NATIVE_BUILD, "
        "'from': getattr(capture.segment, 'FROM', 'source')}))\n"
    )
    digest = subprocess.run(
        [sys.executable, "-c", "import capture; print(capture.source_digest())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "KSHARK_PURE": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    fake = tmp_path / ".native" / digest / "capture"
    fake.mkdir(parents=True)
    (fake / "segment.py").write_text("FROM = 'build'\n")

    def run() -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if k != "KSHARK_PURE"}
        env["PYTHONPATH"] = str(tmp_path)
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert run() == {"build": str(tmp_path / ".native" / digest), "from": "build"}
    http1 = tmp_path / "capture" / "http1.py"
    http1.write_text(http1.read_text() + "\n# edited after the build\n")
    assert run() == {"build": None, "from": "source"}
