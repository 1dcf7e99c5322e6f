"""`run_worker`: the API, the name resolver and the capture (replayed or live,
kshark.worker.feed) of one worker, in one nursery."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import trio

from kshark.worker.feed import live, replay
from kshark.worker.state import Worker

if TYPE_CHECKING:
    from kshark.live import LiveCapture
    from kshark.worker.state import WorkerConfig

log = logging.getLogger("kshark.worker")


class StartupError(Exception):
    """The worker cannot start as configured (e.g. the API cannot listen); one line to the user."""


async def run_worker(cfg: WorkerConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run a worker until cancelled (or, with `once`, until the captures are processed)."""
    capture: LiveCapture | None = None
    if cfg.ifaces:
        from kshark.live import LiveCapture

        capture = LiveCapture(cfg.ifaces, bpf_filter=cfg.bpf)
        # Fails here, before the API listens or anything is captured, so a refusal (no
        # privilege, no such interface, bad filter) is the only thing the user sees.
        capture.open()
    try:
        await _run_opened(cfg, capture, task_status)
    finally:
        if capture is not None:
            capture.close()  # idempotent; covers a failure before the worker took it over


async def _run_opened(cfg: WorkerConfig, capture: LiveCapture | None, task_status: Any) -> None:
    async with trio.open_nursery() as nursery:
        worker_box: list[Worker] = []
        port = cfg.port
        if not cfg.once:
            from kshark.api.httpserver import serve
            from kshark.api.worker_app import WorkerApp

            app = WorkerApp(
                lambda: worker_box[0].store,
                stats_provider=lambda: worker_box[0].stats() if worker_box else {},
            )
            try:
                port = await nursery.start(
                    functools.partial(serve, app, cfg.host, cfg.port, token=cfg.token)
                )
            except OSError as exc:
                # trio's text repeats the errno and the address tuple; say it as the flags do.
                where = f"{cfg.host or '*'}:{cfg.port}"
                raise StartupError(f"API on {where}: {exc.strerror or exc}") from None
        resolver = None
        if cfg.cluster is not None:
            from kshark.k8s.resolver import Resolver

            resolver = Resolver(cfg.cluster)
        worker = Worker(cfg, port, resolver)
        worker_box.append(worker)
        try:
            task_status.started(worker)
            if resolver is not None:
                await nursery.start(resolver.run)
                # Entries name what the first lists found (bounded: see SETTLE_WAIT_SECONDS).
                await resolver.wait_settled()
            if cfg.pcaps:
                await replay(worker, cfg.pcaps)
                if not cfg.ifaces:
                    worker.pipeline.finish()
                    worker.flush()
                    if not cfg.once:
                        log.info("%s", worker.summary_line())
            if capture is not None:
                await live(worker, capture)
            if cfg.once:
                nursery.cancel_scope.cancel()
            else:
                await trio.sleep_forever()  # replay done: keep serving what it stored
        finally:
            # Synchronous on purpose: cancellation cannot interrupt the final flush.
            if capture is not None:
                capture.close()
                worker.pipeline.finish()
            worker.flush()
            worker.store.close()
