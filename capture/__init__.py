"""Packets to entries: pure, synchronous, sans-IO (see docs/internals.md).

The hot modules are also compiled to C with mypyc (scripts/build_native.py): the same source,
type-checked strictly already, runs markedly faster compiled (BENCHMARKS.md), which is what
lets a Python worker write entries faster than tshark lists two fields. The build goes to `.native/<digest>/` beside
the package, named by a digest of the sources it was built from, and is used only when that
digest matches the sources here now: an edited module can never run as stale machine code, it
just runs as Python until the next build. `KSHARK_PURE=1` in the environment forces pure Python
(the test suite runs the capture tests both ways).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

# Compiled together, in one mypyc group (calls between them are then direct C calls). Not
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


def _use_native() -> str | None:
    """Put the matching native build, if there is one, in front of the sources."""
    if os.environ.get("KSHARK_PURE"):
        return None
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


# The build directory in use, or None when the modules run as Python.
NATIVE_BUILD = _use_native()


def native_modules_loaded() -> list[str]:
    """The capture modules imported so far that run compiled."""
    out = []
    for name in NATIVE_MODULES:
        mod = sys.modules.get(f"{__name__}.{name}")
        if mod is not None and not str(getattr(mod, "__file__", "")).endswith(".py"):
            out.append(name)
    return out
