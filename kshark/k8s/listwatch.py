"""List + watch of one resource kind, feeding a sink, by Kubernetes' rules.

One `ListWatch` per kind per process (the resolver runs four, the hub's discovery one):

- **List** in pages of LIST_PAGE_SIZE (`limit`/`continue`), then hand the sink the whole set
  (`replace`): a relist replaces, so an object deleted while we were not watching goes away.
- **Watch** from the list's resourceVersion with `allowWatchBookmarks=true` and
  `timeoutSeconds`; every event's object (BOOKMARKs carry only that) moves the resourceVersion
  on. A stream the server ends (timeoutSeconds) is re-opened from the last resourceVersion at
  once: no relist, no update lost.
- **410 Gone** — the resourceVersion is older than the server's watch cache (~100 events per
  kind on a small apiserver). The server answers HTTP 200 and then one `ERROR` event whose object
  is a Status with code 410 (older servers: HTTP 410): relist and replace, counted in `relists`.
- **Errors** (no answer, a broken stream, 5xx, 401/403, an ERROR event other than 410): the sink
  keeps the last state it was given, the error is kept for /status, and the loop retries after
  a backoff (BACKOFF_INITIAL doubling to BACKOFF_MAX, with jitter; reset once a watch opens),
  from the last resourceVersion when there is one (a restarted apiserver that no longer has it
  answers 410, which relists).
- **Versions**: `paths` lists the candidates in preference order (EndpointSlice: discovery.k8s.io
  v1, else v1beta1 — 1.20 serves only v1beta1); a 404 moves to the next one.

Times handed to the sink are wall-clock nanoseconds taken when the list or event arrived: that is
when this process learnt of the change, which is what the resolver's history records.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from kshark.k8s.api import ApiClient, ApiError

log = logging.getLogger("kshark.k8s")

# Objects per list page: big enough that 10,000 pods take 20 requests, small enough that one page
# stays a few MB.
LIST_PAGE_SIZE = 500
# The watch's timeoutSeconds: the server ends the stream after this and we re-open it from the
# last resourceVersion (cheap); the client waits WATCH_READ_MARGIN longer before calling a
# silent stream dead.
WATCH_TIMEOUT_SECONDS = 300
WATCH_READ_MARGIN = 30.0
# Retry delays after an error: the first, the cap (doubling in between, ±20 % jitter).
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0


class Sink(Protocol):
    """What a ListWatch feeds: the whole set after a list, then one object per event."""

    def replace(self, objects: list[dict[str, Any]], now_ns: int) -> None: ...
    def upsert(self, obj: dict[str, Any], now_ns: int) -> None: ...
    def delete(self, obj: dict[str, Any], now_ns: int) -> None: ...


@dataclass(frozen=True)
class ApiPath:
    """Where a kind is listed: its API version (for /status) and the collection's path."""

    api_version: str
    path: str


@dataclass
class KindStatus:
    """One ListWatch as /status shows it."""

    kind: str
    api_version: str
    state: str = "starting"  # "listing" | "watching" | "backoff"
    synced: bool = False  # listed successfully at least once
    objects: int = 0
    resource_version: str | None = None
    lists: int = 0  # successful lists, the first included
    relists: int = 0  # lists after the first (410, or a resync after errors)
    watches: int = 0  # watch streams opened
    events: int = 0  # ADDED/MODIFIED/DELETED events applied
    errors: int = 0
    last_error: str | None = None
    last_error_code: int | None = None
    last_error_at: float | None = None  # wall clock
    last_ok_at: float | None = None  # the last list or watch that opened

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed (no list or watch has worked since the error)."""
        return self.last_error_at is not None and (
            self.last_ok_at is None or self.last_error_at > self.last_ok_at
        )

    def as_dict(self) -> dict[str, Any]:
        now = time.time()
        return {
            "api": self.api_version,
            "state": self.state,
            "synced": self.synced,
            "objects": self.objects,
            "resource_version": self.resource_version,
            "lists": self.lists,
            "relists": self.relists,
            "watches": self.watches,
            "events": self.events,
            "errors": self.errors,
            "failing": self.failing,
            "last_error": self.last_error,
            "last_error_seconds_ago": (
                None if self.last_error_at is None else round(now - self.last_error_at, 3)
            ),
        }


class _Relist(Exception):
    """The resourceVersion expired (410): list again."""


class ListWatch:
    """Keeps `sink` in step with one kind of object on the API server."""

    def __init__(
        self,
        client: ApiClient,
        kind: str,
        paths: Sequence[ApiPath],
        sink: Sink,
        *,
        params: dict[str, str] | None = None,
        watch_timeout: int = WATCH_TIMEOUT_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        if not paths:
            raise ValueError("ListWatch needs at least one path")
        self.client = client
        self.kind = kind
        self.paths = list(paths)
        self.sink = sink
        self.params = dict(params or {})
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._path_index = 0
        self.status = KindStatus(kind, self.paths[0].api_version)
        # Set once the kind is listed, or once it failed with a refusal that retrying will not
        # cure soon (401/403, or not served at all): "settled" for whoever waits before
        # starting (the worker), never a reason to stop trying.
        self.settled = trio.Event()
        self.changed = trio.Event()  # set (and replaced) after every change the sink got
        self._keys: set[tuple[str, str]] = set()  # (namespace, name) of the objects held
        self._opened = False  # the current attempt's watch stream opened

    @property
    def path(self) -> ApiPath:
        return self.paths[self._path_index]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        resource_version: str | None = None
        delay = self.backoff_initial
        last_relist = -1e9
        while True:
            self._opened = False
            try:
                if resource_version is None:
                    resource_version = await self._list()
                    delay = self.backoff_initial
                # Returns when the server ends the stream: re-opened from where it was.
                resource_version = await self._watch(resource_version)
                continue
            except _Relist:
                resource_version = None
                now = trio.current_time()
                if now - last_relist >= self.backoff_initial:
                    last_relist = now
                    continue
                last_relist = now  # expired again at once: not a loop without pause
            except ApiError as exc:
                if (
                    exc.code == 404
                    and not self.status.synced
                    and self._path_index + 1 < len(self.paths)
                ):
                    self._path_index += 1  # this version is not served: try the next
                    self.status.api_version = self.path.api_version
                    continue
                self._failed(exc)
                if exc.code == 410:  # expired, answered as a plain HTTP 410
                    resource_version = None
                    continue
                if self._opened:
                    delay = self.backoff_initial  # it worked until now: retry soon
            self.status.state = "backoff"
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    def _failed(self, exc: ApiError) -> None:
        st = self.status
        st.errors += 1
        st.last_error = f"{self.kind} ({self.path.api_version}): {exc}"
        st.last_error_code = exc.code
        st.last_error_at = time.time()
        log.warning("%s", st.last_error)
        if exc.code in (401, 403, 404):
            self.settled.set()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _list(self) -> str:
        st = self.status
        st.state = "listing"
        items: list[dict[str, Any]] = []
        params = {**self.params, "limit": str(LIST_PAGE_SIZE)}
        while True:
            page = await self.client.get_json(self.path.path, params)
            batch = page.get("items")
            if isinstance(batch, list):
                items.extend(o for o in batch if isinstance(o, dict))
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
            # A continue token that expired mid-way answers 410: the whole list starts over
            # (run() relists on ApiError 410).
            params = {**self.params, "limit": str(LIST_PAGE_SIZE), "continue": str(token)}
        resource_version = str(meta.get("resourceVersion") or "")
        self.sink.replace(items, time.time_ns())
        if st.synced:
            st.relists += 1
        st.lists += 1
        st.synced = True
        st.last_ok_at = time.time()
        self._keys = {_key(o) for o in items}
        st.objects = len(self._keys)
        st.resource_version = resource_version
        self.settled.set()
        self._notify()
        return resource_version

    async def _watch(self, resource_version: str) -> str:
        st = self.status
        params = {
            **self.params,
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(self.watch_timeout),
        }
        read_timeout = self.watch_timeout + WATCH_READ_MARGIN
        async with self.client.watch(self.path.path, params, read_timeout) as events:
            st.watches += 1
            st.state = "watching"
            st.last_ok_at = time.time()
            self._opened = True
            async for event in events:
                kind = event["type"]
                obj = event.get("object")
                if kind == "ERROR":
                    error = ApiError.from_status(obj)
                    if error.code == 410:
                        log.info(
                            "%s: resourceVersion %s expired: relisting", self.kind, resource_version
                        )
                        raise _Relist
                    raise error
                if not isinstance(obj, dict):
                    raise ApiError(0, f"a {kind} event without an object")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    if rv:
                        resource_version = st.resource_version = str(rv)
                    continue
                now = time.time_ns()
                if kind == "DELETED":
                    self.sink.delete(obj, now)
                    self._keys.discard(_key(obj))
                elif kind in ("ADDED", "MODIFIED"):
                    self.sink.upsert(obj, now)
                    self._keys.add(_key(obj))
                else:
                    continue  # an event type from a newer server: nothing to apply
                st.events += 1
                st.objects = len(self._keys)
                if rv:
                    resource_version = st.resource_version = str(rv)
                self._notify()
        return resource_version


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
