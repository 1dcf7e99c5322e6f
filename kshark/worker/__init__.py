"""kshark-worker: capture (replayed or live) → pipeline → store, and the API, in one nursery.

The packet side is synchronous (capture/); this package is the Trio edge around it:

- state.py: `WorkerConfig` and the `Worker` (store, pipeline, counters);
- core.py: `run_worker`, the worker's tasks in one nursery;
- feed.py: the replay and live loops, feeding frames to the pipeline a step at a time;
- writer.py: the `StoreWriter` queue between the pipeline and the store, and its `BatchLimits`;
- runtime.py: the interpreter settings a worker process runs with;
- cli.py: the flags and `main`.

Its API is kshark.api.worker_app.
"""

from __future__ import annotations

from kshark.worker.cli import build_parser, config_from_args, main
from kshark.worker.core import StartupError, run_worker
from kshark.worker.feed import Feeder
from kshark.worker.state import Worker, WorkerConfig
from kshark.worker.writer import BatchLimits, StoreWriter

__all__ = [
    "BatchLimits",
    "Feeder",
    "StartupError",
    "StoreWriter",
    "Worker",
    "WorkerConfig",
    "build_parser",
    "config_from_args",
    "main",
    "run_worker",
]
