"""The hub's workers: who they are (command line + workers file), and how each one is doing.

A worker is named by the `host:port` the hub reaches its API at (its *address*). The set is the
union of the `--worker` addresses (fixed for the hub's life) and the lines of `--workers-file`,
which is re-read whenever it changes, so workers join and leave while client streams stay open.
Every open client stream follows the set (see stream.py): it starts a relay for a worker that
joins and stops the relay of one that leaves.

`WorkerInfo` is what /status shows per worker; it is written by the relays (connects, drops,
entries delivered) and by the monitor (monitor.py), and the most recent event decides `state`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

log = logging.getLogger("kshark.hub")

# Workers the hub will track at once (command line and file together). Each open client stream
# holds one websocket per worker, so this bounds the hub's connections per client. Past it:
# the extra addresses are ignored and logged.
MAX_WORKERS = 1024
# Largest workers file read. Past it: the file is not read (the last list is kept), logged.
MAX_WORKERS_FILE_BYTES = 1 << 20
# How often the workers file's metadata is checked for a change.
WORKERS_FILE_POLL_SECONDS = 1.0
# A worker is `degraded` in /status for this long after the hub last dropped a frame of it.
DEGRADED_SECONDS = 60.0


def parse_address(text: str) -> str:
    """`host:port` (or `[v6]:port`) → the canonical form; ValueError with a message for users."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r}: want [IPv6]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: want HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDR]:PORT")
        if any(c.isspace() or c in "/?#@" for c in host):
            raise ValueError(f"{text!r}: {host!r} is not a host name")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    host_part = f"[{host}]" if ":" in host else host.lower()
    return f"{host_part}:{int(port)}"


def split_address(address: str) -> tuple[str, int]:
    """A canonical address → (host without brackets, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def read_workers_file(path: Path) -> tuple[list[str], list[str]]:
    """The addresses listed in a workers file, and one message per line that is not an address.

    One `host:port` per line; blank lines and everything after a `#` are ignored; a repeated
    address counts once.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_WORKERS_FILE_BYTES + 1)
    if len(data) > MAX_WORKERS_FILE_BYTES:
        raise OSError(f"{path}: larger than {MAX_WORKERS_FILE_BYTES} bytes")
    addresses: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            address = parse_address(line)
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if address not in seen:
            seen.add(address)
            addresses.append(address)
    return addresses, errors


@dataclass
class WorkerInfo:
    """One worker as /status reports it."""

    address: str
    sources: set[str] = field(default_factory=set)  # "cli", "file", "discover"
    state: str = "unknown"  # "up" | "down" | "unknown" (not contacted yet)
    state_since: float = field(default_factory=time.time)
    last_error: str | None = None
    last_error_at: float | None = None
    # The worker's own name for itself (its /status "worker", the "worker" of its entries):
    # usually the address, but not when the hub reaches it through another address.
    advertised: str | None = None
    last_seq: int | None = None  # the newest entry the worker has stored (from its /status)
    newest_id: str | None = None  # that entry's id (from its /status)
    store_id: str | None = None  # its data directory's identity (from its /status)
    lag: int | None = None  # entries the hub's streams on this worker are behind its newest
    entries_relayed: int = 0  # entries from this worker delivered to clients
    relays_connected: int = 0  # client streams with an open websocket to it now
    connects: int = 0  # websockets opened to it
    drops: int = 0  # websockets to it that ended other than by the hub's choice
    # Local "ip:port" of each open websocket to this worker: matched against the worker's
    # /status clients to read how far behind they are.
    relay_sockets: set[str] = field(default_factory=set)
    # Frames of this worker the hub dropped (not UTF-8, not JSON, not an entry, another
    # worker's id, binary): counted, the latest reason kept (relay.py, frames.read_entry).
    frames_dropped: int = 0
    last_drop: str | None = None
    last_drop_at: float | None = None
    # Whether its /status answer was too large to read (it is still up; its details unknown).
    status_problem: str | None = None
    # The worker's own losses, from its /status (monitor.py): packets the kernel and kshark
    # dropped, entries it could not store. None until read (or if it does not say).
    dropped_kernel: int | None = None
    dropped_ours: int | None = None
    dropped_entries: int | None = None

    def dropped(self, reason: str, n: int = 1) -> None:
        self.frames_dropped += n
        self.last_drop = reason
        self.last_drop_at = time.time()

    @property
    def degraded(self) -> bool:
        """A frame was dropped in the last DEGRADED_SECONDS."""
        at = self.last_drop_at
        return at is not None and time.time() - at < DEGRADED_SECONDS

    def mark_up(self) -> None:
        if self.state != "up":
            self.state = "up"
            self.state_since = time.time()

    def mark_down(self, error: str) -> None:
        self.last_error = error
        self.last_error_at = time.time()
        if self.state != "down":
            self.state = "down"
            self.state_since = time.time()

    def status(self) -> dict[str, object]:
        now = time.time()
        return {
            "id": self.address,
            "worker": self.advertised,
            "sources": sorted(self.sources),
            "state": self.state,
            "state_seconds": round(now - self.state_since, 3),
            "last_error": self.last_error,
            "last_error_seconds_ago": (
                None if self.last_error_at is None else round(now - self.last_error_at, 3)
            ),
            "entries_relayed": self.entries_relayed,
            "lag": self.lag,
            "last_seq": self.last_seq,
            "newest_id": self.newest_id,
            "store_id": self.store_id,
            "streams": self.relays_connected,
            "connects": self.connects,
            "drops": self.drops,
            "degraded": self.degraded,
            "frames_dropped": self.frames_dropped,
            "last_drop": self.last_drop,
            "last_drop_seconds_ago": (
                None if self.last_drop_at is None else round(now - self.last_drop_at, 3)
            ),
            "status_problem": self.status_problem,
            "dropped_kernel": self.dropped_kernel,
            "dropped_ours": self.dropped_ours,
            "dropped_entries": self.dropped_entries,
        }


class WorkerSet:
    """The current workers, in the order they were first listed; waiters learn of changes."""

    def __init__(self, static: Iterable[str] = ()) -> None:
        self._static: list[str] = []
        for address in static:
            if address not in self._static:
                self._static.append(address)
        self._file: list[str] = []
        self._discovered: list[str] = []  # from worker pods (discover.py)
        self.info: dict[str, WorkerInfo] = {}
        self.version = 0
        self._changed = trio.Event()
        self.addresses: list[str] = []
        self._rebuild()

    def set_file_workers(self, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Replace the workers-file part of the set; returns (added, removed) addresses."""
        return self._replace_part("_file", addresses)

    def set_discovered_workers(self, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Replace the discovered part of the set (discover.py); returns (added, removed)."""
        return self._replace_part("_discovered", addresses)

    def _replace_part(self, part: str, addresses: list[str]) -> tuple[list[str], list[str]]:
        before = list(self.addresses)
        setattr(self, part, list(addresses))
        self._rebuild()
        added = [a for a in self.addresses if a not in before]
        removed = [a for a in before if a not in self.addresses]
        if added or removed:
            self.version += 1
            self._changed.set()
            self._changed = trio.Event()
        return added, removed

    @property
    def discovered(self) -> list[str]:
        return list(self._discovered)

    async def wait_changed(self, version: int) -> None:
        """Return once the set differs from `version` (at once if it already does)."""
        while self.version == version:
            await self._changed.wait()

    def resolve(self, name: str) -> str | None:
        """The address of the worker called `name` (its address or its own advertised id)."""
        if name in self.info:
            return name
        for info in self.info.values():
            if info.advertised == name:
                return info.address
        try:
            canonical = parse_address(name)
        except ValueError:
            return None
        return canonical if canonical in self.info else None

    def _rebuild(self) -> None:
        ordered: list[str] = []
        for address in [*self._static, *self._file, *self._discovered]:
            if address not in ordered:
                ordered.append(address)
        if len(ordered) > MAX_WORKERS:
            log.error("%d workers listed; only the first %d are used", len(ordered), MAX_WORKERS)
            ordered = ordered[:MAX_WORKERS]
        self.addresses = ordered
        groups = (
            ("cli", set(self._static)),
            ("file", set(self._file)),
            ("discover", set(self._discovered)),
        )
        for address in ordered:
            info = self.info.get(address)
            if info is None:
                info = self.info[address] = WorkerInfo(address)
            info.sources = {s for s, group in groups if address in group}
        for address in list(self.info):
            if address not in ordered:
                del self.info[address]


@dataclass
class WorkersFileState:
    """What /status shows about the workers file."""

    path: Path
    errors: list[str] = field(default_factory=list)
    last_read: float | None = None
    last_problem: str | None = None

    def status(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "errors": list(self.errors),
            "last_read": self.last_read,
            "problem": self.last_problem,
        }


def load_workers_file(wset: WorkerSet, state: WorkersFileState) -> bool:
    """Read the file into the set. A missing or unreadable file keeps the list last read (a file
    being replaced must not drop every worker for a moment); returns whether it was read."""
    try:
        addresses, errors = read_workers_file(state.path)
    except OSError as exc:
        problem = f"cannot read {state.path}: {exc.strerror or exc}"
        if problem != state.last_problem:
            log.warning("%s; keeping the last list of workers", problem)
        state.last_problem = problem
        return False
    state.last_problem = None
    state.last_read = time.time()
    if errors != state.errors:
        for err in errors:
            log.warning("%s: %s (ignored)", state.path, err)
    state.errors = errors
    added, removed = wset.set_file_workers(addresses)
    for address in added:
        log.info("worker %s added (workers file)", address)
    for address in removed:
        log.info("worker %s removed (workers file)", address)
    return True


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


async def watch_workers_file(
    wset: WorkerSet,
    state: WorkersFileState,
    interval: float = WORKERS_FILE_POLL_SECONDS,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the file now, then again whenever its mtime, size or inode changes (polled; a
    notification API would not see a file replaced by rename on every file system)."""
    seen = _signature(state.path)
    loaded = load_workers_file(wset, state)
    task_status.started()
    while True:
        await trio.sleep(interval)
        sig = _signature(state.path)
        if sig is None:
            if seen is not None or loaded:
                load_workers_file(wset, state)  # records the problem; keeps the list
            seen, loaded = None, False
            continue
        if sig != seen or not loaded:
            seen = sig
            loaded = load_workers_file(wset, state)
