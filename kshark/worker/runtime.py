"""The worker process's interpreter settings: the cyclic collector and the GIL switch interval,
tuned for a parser that allocates much and never blocks beside an I/O thread that must get the
GIL back quickly (`tune_runtime`, called once at start)."""

from __future__ import annotations

import gc
import sys

# The cyclic collector's generation-0 threshold in a worker (CPython's default is 700). The
# pipeline allocates a few dozen container objects per packet (events, tuples, entry dicts) that
# reference counting frees; almost none are cyclic, but the default threshold still starts a
# collection every 700 of them, and those passes took a good share of a replay's CPU (the
# "capture → entries" rows of BENCHMARKS.md are measured with this setting). Collections still
# run, every 100,000 allocations net, so a cycle's memory comes back within a batch or two.
GC_GEN0_THRESHOLD = 100_000
# How long a thread waiting for the GIL waits before the running one must let go (CPython's
# default is 5 ms). The store's I/O thread makes a few blocking calls per batch (hand the batch
# to the I/O helper process, read its answer) and needs the GIL back after each; behind a parser
# that never blocks, each return waited the full 5 ms, and the helper sat idle meanwhile (a
# large part of a replay's wall time). At 1 ms the parser pays a few more GIL hand-offs per
# batch, which does not show in the "capture → entries" rows of BENCHMARKS.md.
GIL_SWITCH_INTERVAL = 0.001


def tune_runtime() -> None:
    """Freeze what start-up allocated (imports, tables: never garbage) out of the collector's
    sight, collect the young generation less often (GC_GEN0_THRESHOLD), and let the I/O thread
    have the GIL sooner (GIL_SWITCH_INTERVAL)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
