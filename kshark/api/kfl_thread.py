"""Keeping KFL off the event loop: compiles in a thread, and how long evaluation may run between
two checkpoints.

A client chooses its filter text (up to 64 KiB): parsing and compiling that takes up to a few
hundred milliseconds of CPU (lark reads ~10 µs a token; kshark.kfl bounds the rest), which on the
event loop would stall capture, every other stream and every REST answer for as long. So every
compile (a stream's first frame, `/query/validate`, at the worker and at the hub) runs through
`off_loop`, in a thread: the event loop keeps running, taking the GIL back every few
milliseconds (the interpreter's switch interval). At most `KFL_COMPILE_THREADS` compile at once:
more would only share the same CPU, while a flood of hostile filters would take every thread
trio lends; the rest wait their turn.

Evaluation cannot move to a thread the same way (it runs per entry, ~1 µs, and the GIL hand-over
would cost more), so its cost is bounded per entry instead (kshark.kfl.budget) and a stream
filtering a batch yields to the event loop whenever it has run `EVAL_SLICE_SECONDS` since it last
did (kshark.api.worker_app), whatever the filter and the entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

# Compiles at once, per process.
KFL_COMPILE_THREADS = 2
# The most a stream runs its filter (and shapes entries) before letting other tasks run.
EVAL_SLICE_SECONDS = 0.002

_T = TypeVar("_T")
_limiter: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("kfl_compile_limiter")


def _compile_limiter() -> trio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(KFL_COMPILE_THREADS)
        _limiter.set(limiter)
        return limiter


async def off_loop(fn: Callable[..., _T], *args: object) -> _T:
    """`fn(*args)` (a KFL compile or validation) in a thread; its exceptions propagate."""
    return await trio.to_thread.run_sync(fn, *args, limiter=_compile_limiter())
