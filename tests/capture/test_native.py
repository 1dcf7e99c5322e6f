"""The compiled capture modules (capture/__init__.py, scripts/build_native.py): used when they
match the sources, never when they do not, and never with KSHARK_PURE=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow  # compiles, unless scripts/setup has built these sources already
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


# A wheel (setup.py): what `pip install .` and the container image run. Built with pip, as a user
# would, from a copy of the tracked files (a clean clone), so the work tree stays as it is.


def _wheel(tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "tree"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():  # a tracked file deleted in the work tree is not part of the build
            (tree / src.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / src.relative_to(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
         str(tree)],
        env={**os.environ, **env_extra},
        capture_output=True,
        text=True,
    )  # fmt: skip


def _installed(tmp_path: Path) -> dict[str, object]:
    """What runs from the wheel built into tmp_path/dist, unpacked as site-packages would hold it."""
    (wheel,) = (tmp_path / "dist").glob("kshark-*.whl")
    site = tmp_path / "site"
    shutil.unpack_archive(wheel, site, format="zip")
    return _report({}, cwd=site)


@pytest.mark.slow
def test_a_wheel_carries_the_compiled_modules(tmp_path: Path) -> None:
    res = _wheel(tmp_path, {"KSHARK_MYPYC": "auto"})
    assert res.returncode == 0, res.stderr[-4000:]
    report = _installed(tmp_path)
    assert report["build"] == str(tmp_path / "site" / "capture")
    assert report["compiled"] == list(capture.NATIVE_MODULES)
    # The sources are in the wheel too: KSHARK_PURE=1 runs them.
    pure = _report({"KSHARK_PURE": "1"}, cwd=tmp_path / "site")
    assert pure == {"build": None, "compiled": []}


@pytest.mark.slow
def test_a_wheel_built_without_a_compiler_runs_as_python(tmp_path: Path) -> None:
    res = _wheel(tmp_path, {"CC": "/nonexistent/cc", "KSHARK_MYPYC": "auto"})
    assert res.returncode == 0, res.stderr[-4000:]
    (wheel,) = (tmp_path / "dist").glob("kshark-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert _installed(tmp_path) == {"build": None, "compiled": []}


@pytest.mark.slow
def test_a_wheel_that_must_be_compiled_fails_without_a_compiler(tmp_path: Path) -> None:
    res = _wheel(tmp_path, {"CC": "/nonexistent/cc", "KSHARK_MYPYC": "1"})
    assert res.returncode != 0
    assert "KSHARK_MYPYC=1 but no C compiler (/nonexistent/cc)" in res.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))
