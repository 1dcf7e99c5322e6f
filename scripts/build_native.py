#!/usr/bin/env python3
"""Compile capture/'s hot modules to C with mypyc, into .native/<digest>/ (see capture/__init__.py).

    .venv/bin/python scripts/build_native.py [--force] [--quiet]

Nothing to do when the build for the current sources exists. Otherwise the modules listed in
capture.NATIVE_MODULES are copied to a staging directory with the rest of the package (mypyc
type-checks them together), compiled there, and the resulting extension modules are moved into
place in one rename, so a failed or interrupted build never leaves a partial one. Other builds
under .native/ (older sources) are removed.

Exit status 0 when a build for the current sources is in place, 1 when it could not be made
(no C compiler, no Python headers, a mypyc error): kshark then runs as pure Python, correct but
slower; scripts/setup says so and goes on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ["KSHARK_PURE"] = "1"  # importing capture must not load a build while we make one
sys.path.insert(0, str(ROOT))

import capture  # noqa: E402

MYPY_INI = """\
[mypy]
python_version = {major}.{minor}
ignore_missing_imports = True
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even if the build exists")
    ap.add_argument("--quiet", action="store_true", help="print only failures")
    args = ap.parse_args()
    say = (lambda *a: None) if args.quiet else (lambda *a: print("build_native:", *a))

    digest = capture.source_digest()
    native = capture.NATIVE_ROOT
    final = native / digest
    if (final / "capture").is_dir() and not args.force:
        say(f"up to date ({final.relative_to(ROOT)})")
        _remove_others(native, digest)
        return 0
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        print(
            f"build_native: no Python headers in {include}: running as pure Python", file=sys.stderr
        )
        return 1
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        print("build_native: no C compiler: running as pure Python", file=sys.stderr)
        return 1

    native.mkdir(exist_ok=True)
    stage = native / f".stage-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        pkg = stage / "src" / "capture"
        pkg.mkdir(parents=True)
        for src in (ROOT / "capture").glob("*.py"):
            shutil.copy2(src, pkg / src.name)
        (stage / "src" / "mypy.ini").write_text(
            MYPY_INI.format(major=sys.version_info.major, minor=sys.version_info.minor)
        )
        t0 = time.monotonic()
        files = [f"capture/{name}.py" for name in capture.NATIVE_MODULES]
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", "--config-file", "mypy.ini", *files],
            cwd=stage / "src",
            capture_output=True,
            text=True,
            env={**os.environ, "MYPYC_OPT_LEVEL": "3"},
        )
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
            print("build_native: mypyc failed: running as pure Python", file=sys.stderr)
            return 1
        out = stage / "out"
        (out / "capture").mkdir(parents=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for name in capture.NATIVE_MODULES:
            shutil.move(str(pkg / f"{name}{suffix}"), out / "capture" / f"{name}{suffix}")
        groups = list((stage / "src").glob(f"*__mypyc{suffix}"))
        if len(groups) != 1:
            print(f"build_native: expected one group library, found {groups}", file=sys.stderr)
            return 1
        shutil.move(str(groups[0]), out / groups[0].name)
        try:
            out.rename(final)
        except OSError:
            if not (final / "capture").is_dir():
                raise
            # Another build of the same sources finished first: that one is as good.
        say(
            f"compiled {len(files)} modules in {time.monotonic() - t0:.0f} s ({final.relative_to(ROOT)})"
        )
        _remove_others(native, digest)
        return 0
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_others(native: Path, keep: str) -> None:
    for d in native.iterdir():
        if d.name != keep and not d.name.startswith(".stage-"):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
