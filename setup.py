"""Builds kshark's wheel with the hot capture modules compiled to C by mypyc, when it can.

Everything else about the package is in pyproject.toml; this file only adds the extension
modules. `pip wheel .` / `pip install .` compile the modules listed in capture.NATIVE_MODULES
(read from capture/__init__.py, the one list) into the wheel, beside their sources, where Python
imports an extension module before a source file of the same name. KSHARK_MYPYC chooses:

    auto (default)  compile when a C compiler and the Python headers are there, else a pure wheel
    1               compile, and fail the build when that is not possible
    0               a pure wheel

An editable install (`pip install -e .`, what scripts/setup does) never compiles here: its
modules are the working tree's, which are edited, so a compiled copy would go stale.
scripts/build_native.py builds that case into .native/<digest>/ instead, keyed by the sources.
"""

from __future__ import annotations

import ast
import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# Only these commands put extension modules into what they build. The others pip runs (egg_info,
# dist_info for the metadata, editable_wheel) must not pay for mypyc's code generation, ~1 min.
BUILDING = {"bdist_wheel", "build", "build_ext", "install"}


def native_modules() -> list[str]:
    """capture.NATIVE_MODULES, read without importing capture (the build must not run it)."""
    tree = ast.parse((HERE / "capture" / "__init__.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "NATIVE_MODULES"
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py: no NATIVE_MODULES in capture/__init__.py")


def cannot_compile() -> str | None:
    """Why no C extension can be built here, or None."""
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers in {include}"
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(shlex.split(cc)[0]) is None:
        return f"no C compiler ({cc})"
    return None


def ext_modules() -> list[object]:
    mode = os.environ.get("KSHARK_MYPYC", "auto")
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"setup.py: KSHARK_MYPYC={mode!r}: expected auto, 0 or 1")
    if mode == "0" or not BUILDING.intersection(sys.argv[1:]):
        return []
    why = cannot_compile()
    if why is not None:
        if mode == "1":
            raise SystemExit(f"setup.py: KSHARK_MYPYC=1 but {why}")
        print(f"setup.py: {why}: building a pure-Python wheel (slower)", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    paths = [f"capture/{name}.py" for name in native_modules()]
    # mypy's checks beyond what compiling needs are scripts/test's job (strict, with every
    # dependency's types at hand); here, in pip's build environment without the dependencies,
    # they must not fail an install. Same settings as scripts/build_native.py.
    config = HERE / "build" / "mypyc.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    # One group: calls between the modules are direct C calls.
    return list(mypycify(["--config-file", str(config), *paths], opt_level="3"))


setup(ext_modules=ext_modules())
