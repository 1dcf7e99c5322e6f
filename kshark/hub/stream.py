"""One client's stream at the hub: a relay per worker, one bounded channel, one sender.

```
worker A ── Relay ─┐   batches of entries
worker B ── Relay ─┼─► channel (client_channel batches, client_buffer_bytes) ─► sender ─► client
worker C ── Relay ─┘                                  [ReorderBuffer if "ordered"]
```

- The set of relays follows the worker set (command line + workers file) while the stream is
  open: a worker that joins gets a relay, one that leaves has its relay cancelled (JSON-frame
  clients are told `{"worker": {"id": …, "state": "down", "reason": "removed …"}}`). A worker's
  position (the last entry id relayed, or where the stream started on it) and the store id it
  belongs to are kept by the stream, so one that leaves and comes back resumes where it was.
- The sender writes every batch already waiting in one send, counts `limit(n)` across all
  workers (merge.Quota) and closes with 1000 at n.
- Backpressure: the channel and the byte budget are bounded; when the client reads slowly the
  sender blocks in its send, the budget fills, the relays wait, they stop reading from their
  workers, and TCP pushes back to the workers (which hold one batch per client, see the worker
  API). Nothing in the hub grows with the client's lag.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed

from kshark.api.wsbatch import send_texts
from kshark.hub.frames import worker_frame
from kshark.hub.handoff import ByteBudget, Frame, control
from kshark.hub.merge import Quota, ReorderBuffer
from kshark.hub.relay import Relay, RelayPlan

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

    from kshark.api.wire import StreamRequest
    from kshark.hub.limits import HubLimits
    from kshark.hub.workers import WorkerSet

_stream_ids = itertools.count(1)
# Workers whose position a client's /status row lists (the whole cursor is the client's own).
MAX_STATUS_CURSOR = 32


class StreamCounters:
    """Totals shared by every stream of one hub (for /status and /metrics)."""

    __slots__ = ("entries_sent_total",)

    def __init__(self) -> None:
        self.entries_sent_total = 0


class HubStream:
    """A client's websocket stream through the hub; `run()` returns True when limit(n) is reached."""

    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        remote: str,
        path: str,
        request: StreamRequest,
        plan: RelayPlan,
        limit: int | None,
        cursor: dict[str, str],
        workers: WorkerSet,
        limits: HubLimits,
        counters: StreamCounters,
        worker_token: str | None = None,
    ) -> None:
        self.id = next(_stream_ids)
        self.ws = ws
        self.remote = remote
        self.path = path
        self.request = request
        self.plan = plan
        self.quota = Quota(limit)
        self.cursor = cursor  # the client's hub cursor, for workers that join later too
        self.workers = workers
        self.limits = limits
        self.counters = counters
        self.worker_token = worker_token
        self.positions: dict[str, str] = {}  # worker address → last entry id relayed
        self.stores: dict[str, str] = {}  # worker address → the store id of its position
        self.started = trio.current_time()
        self.relays: dict[str, tuple[Relay, trio.CancelScope]] = {}
        self.connected_at = time.time()
        self.sent = 0
        self._recv: trio.MemoryReceiveChannel[list[Frame]] | None = None
        self._reorder: ReorderBuffer[Frame] | None = None
        self._ping_pending = False
        self.budget = ByteBudget(limits.client_buffer_bytes)

    async def run(self) -> bool:
        if self.quota.exhausted:
            return True  # limit(0): nothing to send, and no worker needs to be asked
        send, recv = trio.open_memory_channel[list[Frame]](self.limits.client_channel)
        self._recv = recv
        finished = False  # stays so when the client leaves (the watcher cancels the nursery)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_when_client_leaves, nursery.cancel_scope)
            nursery.start_soon(self._follow_workers, send)
            try:
                finished = await self._deliver(recv, nursery)
            except ConnectionClosed:
                finished = False  # the client went away while we were sending
            nursery.cancel_scope.cancel()
        return finished

    # ---- relays ---------------------------------------------------------------------------

    async def _follow_workers(self, send: trio.MemorySendChannel[list[Frame]]) -> None:
        workers = self.workers
        async with trio.open_nursery() as relays:
            while True:
                version = workers.version
                current = workers.addresses
                for address in current:
                    if address not in self.relays:
                        self._start_relay(relays, address, send)
                for address in [a for a in self.relays if a not in current]:
                    _relay, scope = self.relays.pop(address)
                    scope.cancel()
                    if self.plan.json_frame:
                        frame = worker_frame(address, "down", "removed from the hub's workers")
                        await send.send([control(frame, address)])
                await workers.wait_changed(version)

    def _start_relay(
        self, nursery: trio.Nursery, address: str, send: trio.MemorySendChannel[list[Frame]]
    ) -> None:
        if address not in self.positions:
            since = self._cursor_for(address)
            if since is not None:
                self.positions[address] = since
        relay = Relay(
            address,
            self.plan,
            send,
            self.workers.info[address],
            self.positions,
            self.limits,
            self.budget,
            stores=self.stores,
            stream_started=self.started,
            worker_token=self.worker_token,
            resolve=self.workers.resolve,
        )
        scope = trio.CancelScope()
        self.relays[address] = (relay, scope)

        async def run_relay() -> None:
            with scope:
                await relay.run()

        nursery.start_soon(run_relay)

    def _cursor_for(self, address: str) -> str | None:
        """The client's cursor entry for this worker: keyed by its address or by its own id."""
        since = self.cursor.get(address)
        if since is not None:
            return since
        for name, entry_id in self.cursor.items():
            if self.workers.resolve(name) == address:
                return entry_id
        return None

    # ---- the sender -------------------------------------------------------------------------

    async def _deliver(
        self, recv: trio.MemoryReceiveChannel[list[Frame]], nursery: trio.Nursery
    ) -> bool:
        limits = self.limits
        ping_interval = limits.ping_interval
        max_write = limits.max_write_bytes
        reorder: ReorderBuffer[Frame] | None = None
        if self.request.ordered:
            reorder = self._reorder = ReorderBuffer(limits.reorder_window, limits.reorder_entries)
        last_frame = trio.current_time()
        while True:
            batches: list[list[Frame]] = []
            try:
                batches.append(recv.receive_nowait())
            except trio.WouldBlock:
                deadline = last_frame + ping_interval
                if reorder is not None:
                    due = reorder.next_deadline()
                    if due is not None and due < deadline:
                        deadline = due
                with trio.move_on_at(deadline):
                    batches.append(await recv.receive())
            if batches:
                # Whatever else is already waiting goes out in the same write.
                pending = sum(len(f.data) for f in batches[0])
                while pending < max_write:
                    try:
                        more = recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    batches.append(more)
                    pending += sum(len(f.data) for f in more)
            now = trio.current_time()
            if reorder is None:
                ready = batches[0] if len(batches) == 1 else [f for b in batches for f in b]
            else:
                ready = []
                for batch in batches:
                    for f in batch:
                        if not f.entry:
                            ready.append(f)  # state frames are not reordered
                        else:
                            reorder.push(f.timestamp, f, now)
                ready.extend(reorder.pop_ready(now))
            if not ready:
                if now - last_frame >= ping_interval:
                    self._ping(nursery)
                    last_frame = now
                continue
            if await self._send(ready):
                return True
            last_frame = trio.current_time()

    async def _send(self, frames: list[Frame]) -> bool:
        """Send frames in one write; True when limit(n) was reached (frames after it dropped)."""
        quota = self.quota
        info = self.workers.info
        texts: list[bytes] = []
        entry_bytes = 0
        sent = 0
        finished = False
        for f in frames:
            data = f.data
            texts.append(data)
            if not f.entry:
                continue
            entry_bytes += len(data)
            sent += 1
            worker = info.get(f.worker)
            if worker is not None:
                worker.entries_relayed += 1
            if quota.take():
                finished = True
                break
        await send_texts(self.ws, texts)
        self.budget.release(entry_bytes)
        self.sent += sent
        self.counters.entries_sent_total += sent
        return finished

    def _ping(self, nursery: trio.Nursery) -> None:
        if self._ping_pending:
            return
        self._ping_pending = True

        async def ping() -> None:
            try:
                await self.ws.ping()
            except ConnectionClosed:
                pass
            finally:
                self._ping_pending = False

        nursery.start_soon(ping)

    async def _cancel_when_client_leaves(self, scope: trio.CancelScope) -> None:
        """Client frames after the first are ignored; its close ends the stream."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed:
            scope.cancel()

    # ---- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        recv = self._recv
        buffered = recv.statistics().current_buffer_used if recv is not None else 0
        if self._reorder is not None:
            buffered += len(self._reorder)
        return {
            "id": self.id,
            "remote": self.remote,
            "path": self.path,
            "query": self.request.query,
            "json_frame": self.request.json_frame,
            "ordered": self.request.ordered,
            "connected_seconds": round(time.time() - self.connected_at, 3),
            "sent": self.sent,
            "buffered": buffered,
            "buffered_bytes": self.budget.held,
            "workers_connected": sum(1 for relay, _ in self.relays.values() if relay.connected),
            # One id per worker (up to MAX_WORKERS): /status shows the first ones and a count.
            "cursor": dict(itertools.islice(self.positions.items(), MAX_STATUS_CURSOR)),
            "cursor_not_listed": max(0, len(self.positions) - MAX_STATUS_CURSOR),
        }
