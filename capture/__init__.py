"""Packets to entries: pure, synchronous, sans-IO (see docs/internals.md).

The hot modules are also compiled to C with mypyc: the same source, type-checked strictly
already, runs markedly faster compiled (BENCHMARKS.md), which is what lets a Python worker write
entries faster than tshark lists two fields. Where the compiled modules come from depends on how
kshark was installed:

- from a wheel (`pip install .`, the container image): setup.py compiled them into the wheel,
  beside their sources, where Python's import prefers them;
- from a source checkout (`scripts/setup`, an editable install): scripts/build_native.py builds
  them into `.native/<digest>/` beside the package, named by a digest of the sources they were
  built from, and they are used only when that digest matches the sources here now: an edited
  module can never run as stale machine code, it just runs as Python until the next build.

Without a C compiler neither build happens and the modules run as Python. `KSHARK_PURE=1` in the
environment forces pure Python either way (the test suite runs the capture tests both ways).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# The one list of compiled modules: scripts/build_native.py and setup.py (which reads it with
# `ast`, without importing capture) compile these, together, in one mypyc group (calls between
# them are then direct C calls). A literal tuple of names, so that setup.py can read it. Not
# sources.py: mypyc 2.4 emits C that does not compile for its iterator (`__next__` returning a
# tuple), and reading is a small share of the cost.
NATIVE_MODULES = (
    "segment",
    "ipfrag",
    "decode_tunnels",
    "decode",
    "reassembly_events",
    "reassembly_buffers",
    "reassembly",
    "dissect",
    "carry",
    "http1_messages",
    "http1_heads",
    "http1_pairing",
    "http1_framing",
    "http1",
    "content",
    "entry_fields",
    "entry_summary",
    "entries",
    "dns",
    "dissect_dns",
    "dissectors",
    "limits",
    "pipeline",
    "pcapwrite",
    "http2_hpack",
    "http2_frames",
    "http2_streams",
    "http2_framing",
    "http2",
    "grpc",
    "protobuf",
    "http2_entries",
)
# Part of the digest: bump it when scripts/build_native.py changes how it compiles.
NATIVE_BUILD_VERSION = 1

_HERE = Path(__file__).resolve().parent
NATIVE_ROOT = _HERE.parent / ".native"


def source_digest() -> str:
    """What a native build of this source tree is named by."""
    h = hashlib.sha256(f"{NATIVE_BUILD_VERSION}:{sys.implementation.cache_tag}".encode())
    for name in NATIVE_MODULES:
        h.update(name.encode() + b"\0")
        h.update((_HERE / f"{name}.py").read_bytes())
    return h.hexdigest()[:20]


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources even where their extension modules sit beside them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in NATIVE_MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


def _compiled_beside() -> bool:
    """Whether this is a wheel with the compiled modules in the package itself (setup.py)."""
    return any(
        (_HERE / f"{NATIVE_MODULES[0]}{suffix}").is_file()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def _use_native() -> str | None:
    """Where the compiled modules load from, putting a matching .native build in front of the
    sources; None when the modules run as Python."""
    if os.environ.get("KSHARK_PURE"):
        if _compiled_beside():
            sys.meta_path.insert(0, _SourcesFirst())
        return None
    if _compiled_beside():
        return str(_HERE)
    try:
        build = NATIVE_ROOT / source_digest()
    except OSError:
        return None
    if not (build / "capture").is_dir():
        return None
    # The group's shared library is a top-level module; the per-module shims live in capture/.
    sys.path.append(str(build))
    __path__.insert(0, str(build / "capture"))
    return str(build)


# Where the compiled modules load from (a .native build, or the installed package's directory),
# or None when the modules run as Python.
NATIVE_BUILD = _use_native()


def native_modules_loaded() -> list[str]:
    """The capture modules imported so far that run compiled."""
    out = []
    for name in NATIVE_MODULES:
        mod = sys.modules.get(f"{__name__}.{name}")
        if mod is not None and not str(getattr(mod, "__file__", "")).endswith(".py"):
            out.append(name)
    return out
