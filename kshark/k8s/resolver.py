"""The worker's name resolution service: four list+watch loops keeping a ResolutionIndex fed.

Pods, Nodes, Services (core/v1) and EndpointSlices (discovery.k8s.io v1, else v1beta1), each
listed and watched once per process (listwatch.py), cluster-wide. The index (index.py) is what
the entry builder is handed; this module only feeds it and reports on it:

`status()` is the "resolver" object of the worker's /status: whether it is synced (every kind
listed at least once), objects per kind, relists, the last error (with the kind and the
server's message: a revoked RBAC permission reads "pods (v1): 403 Forbidden: pods is forbidden:
User … cannot watch resource "pods" …"), and the index's size.

`wait_settled()` is what the worker waits for before it starts capturing or replaying (at most
SETTLE_WAIT_SECONDS): every kind listed, or refused in a way retrying soon will not cure
(401/403/404). Whatever is missing then is retried in the background; entries meanwhile simply
resolve less.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from kshark.k8s.api import ApiClient
from kshark.k8s.config import ClusterConfig
from kshark.k8s.index import ResolutionIndex
from kshark.k8s.listwatch import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    WATCH_TIMEOUT_SECONDS,
    ApiPath,
    ListWatch,
)

log = logging.getLogger("kshark.k8s")

# How long the first lists may take before the worker starts capturing anyway (and the index
# starts keeping history: see ResolutionIndex.settling).
SETTLE_WAIT_SECONDS = 15.0

KIND_PATHS: dict[str, list[ApiPath]] = {
    "pods": [ApiPath("v1", "/api/v1/pods")],
    "nodes": [ApiPath("v1", "/api/v1/nodes")],
    "services": [ApiPath("v1", "/api/v1/services")],
    "endpointslices": [
        ApiPath("discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices"),
        ApiPath("discovery.k8s.io/v1beta1", "/apis/discovery.k8s.io/v1beta1/endpointslices"),
    ],
}


class Resolver:
    """Owns the index and the loops that feed it; `run` until cancelled."""

    def __init__(
        self,
        config: ClusterConfig,
        index: ResolutionIndex | None = None,
        *,
        watch_timeout: int = WATCH_TIMEOUT_SECONDS,
        backoff_initial: float | None = None,
        backoff_max: float | None = None,
    ) -> None:
        self.config = config
        self.index = index if index is not None else ResolutionIndex()
        self.watch_timeout = watch_timeout
        self.backoff_initial = BACKOFF_INITIAL if backoff_initial is None else backoff_initial
        self.backoff_max = BACKOFF_MAX if backoff_max is None else backoff_max
        self.loops: dict[str, ListWatch] = {}
        self.started_at = time.time()
        self.synced_at: float | None = None
        self._settled = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with ApiClient(self.config) as client, trio.open_nursery() as nursery:
            for kind, paths in KIND_PATHS.items():
                loop = ListWatch(
                    client,
                    kind,
                    paths,
                    self.index.sink(kind),
                    watch_timeout=self.watch_timeout,
                    backoff_initial=self.backoff_initial,
                    backoff_max=self.backoff_max,
                )
                self.loops[kind] = loop
                await nursery.start(loop.run)
            nursery.start_soon(self._settle)
            log.info("resolving names from %s (%s)", self.config.server, self.config.source)
            task_status.started()

    async def _settle(self) -> None:
        with trio.move_on_after(SETTLE_WAIT_SECONDS):
            for loop in self.loops.values():
                await loop.settled.wait()
        # The first state is complete (or as complete as we are allowed): from now on, changes
        # are history.
        self.index.settling = False
        self._settled.set()
        for loop in self.loops.values():
            while not loop.status.synced:
                await loop.changed.wait()
        self.synced_at = time.time()
        log.info("resolver synced: %s", self.index.counts())

    async def wait_settled(self) -> None:
        await self._settled.wait()

    @property
    def synced(self) -> bool:
        return bool(self.loops) and all(loop.status.synced for loop in self.loops.values())

    def status(self) -> dict[str, Any]:
        kinds = {kind: loop.status.as_dict() for kind, loop in self.loops.items()}
        errors = [
            (loop.status.last_error_at, loop.status.last_error)
            for loop in self.loops.values()
            if loop.status.last_error_at is not None
        ]
        last_error = max(errors)[1] if errors else None
        failing = sorted(kind for kind, loop in self.loops.items() if loop.status.failing)
        return {
            "enabled": True,
            "source": self.config.source,
            "server": self.config.server,
            "synced": self.synced,
            "sync_seconds": (
                None if self.synced_at is None else round(self.synced_at - self.started_at, 3)
            ),
            "failing": failing,
            "last_error": last_error,
            "relists": sum(loop.status.relists for loop in self.loops.values()),
            "objects": {kind: loop.status.objects for kind, loop in self.loops.items()},
            "index": self.index.counts(),
            "kinds": kinds,
        }
