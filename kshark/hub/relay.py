"""One worker's part of one client stream: a websocket to that worker that survives its failures.

A relay opens `ws://<worker>/api/wsFull` (or `/api/ws`), sends the client's query as a JSON
first frame (the worker filters), and hands the entries it receives to the client stream's
channel, a batch (everything one socket read brought) at a time. Its position is the `id` of
the last entry it handed over (kept in the stream's `positions`, so it outlives the relay if the
worker leaves and rejoins the set). When the connection fails (refused, dropped, the worker
killed or restarted) it reconnects with exponential backoff and `since: <that id>`, so the
worker resumes right after it: no entry twice, none skipped that the worker still stores (the
worker reports entries retention deleted meanwhile in a gap frame, which JSON clients receive
with the worker named).

Entries are forwarded as the bytes the worker sent, never re-encoded, unless the client's
`fields` lacked `id`, `worker` or `timestamp`: the hub then asks the worker for those too (it
needs them to resume and merge) and projects each entry to the client's fields itself.

The relay waits for room in the client's byte budget and channel before handing a batch over,
and reads nothing from its worker meanwhile: that is the hub's backpressure (HubLimits).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import trio

from kshark.hub.frames import EntryMeta, control_of, meta_of, worker_frame, worker_gap_frame
from kshark.hub.workers import split_address
from kshark.hub.wsio import WorkerSocket, WsClosed, WsError

if TYPE_CHECKING:
    from kshark.api.wire import Projection
    from kshark.hub.limits import HubLimits
    from kshark.hub.stream import ByteBudget
    from kshark.hub.workers import WorkerInfo

log = logging.getLogger("kshark.hub")

_SORT = orjson.OPT_SORT_KEYS


class Frame(NamedTuple):
    """One message for a client: an entry, or (`entry` False) a worker state or gap frame, sent
    to JSON-frame clients only."""

    data: bytes  # the message payload (UTF-8 JSON), as the worker sent it for entries
    worker: str  # the worker's address
    timestamp: int  # the entry's timestamp: read only for "ordered" streams (0 otherwise)
    entry: bool


def _decode(data: bytes, worker: str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        log.warning("%s sent a frame that is not a JSON object; skipped", worker)
        return None
    return obj


def control(data: str, worker: str) -> Frame:
    return Frame(data.encode(), worker, 0, False)


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """What one client stream asks of every worker (shared by its relays)."""

    worker_path: str  # "/api/wsFull" or "/api/ws"
    query: str  # the client's KFL text, pushed down as is
    worker_fields: tuple[str, ...] | None  # `fields` sent to workers
    project: Projection | None  # hub-side projection to the client's fields, if needed
    history: bool
    json_frame: bool
    ordered: bool  # entries need their timestamp (merge by time)
    limit: int | None  # the query's limit(n): a worker closes with 1000 after n entries


class _Refused(Exception):
    """The worker answered the first frame with an error frame."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


@dataclass
class _SessionEnd:
    connected: bool
    received: int
    reason: str | None = None  # why it failed (None: cancelled or finished)
    done: bool = False  # this worker has nothing more for the stream
    retry_now: bool = False


class Relay:
    """One worker for one client stream; `run()` until cancelled or the worker is done."""

    def __init__(
        self,
        address: str,
        plan: RelayPlan,
        send: trio.MemorySendChannel[list[Frame]],
        info: WorkerInfo,
        positions: dict[str, str],
        limits: HubLimits,
        budget: ByteBudget,
        *,
        worker_token: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address = address
        self.plan = plan
        self.send = send
        self.info = info
        self.positions = positions
        self.limits = limits
        self.budget = budget
        self.history = plan.history
        self.announced: str | None = None  # the last state frame sent: "up" | "down"
        self.connected = False
        self.last_error: str | None = None
        self._pending_gap = False
        self._headers = [("Authorization", f"Bearer {worker_token}")] if worker_token else []
        self._rng = rng or random.Random()

    async def run(self) -> None:
        limits = self.limits
        delay = limits.backoff_initial
        while True:
            started = trio.current_time()
            end = await self._session()
            if end.done:
                if end.reason is not None:
                    await self._went_down(end.reason, end.connected)
                return
            if end.retry_now:
                continue
            if end.reason is not None:
                await self._went_down(end.reason, end.connected)
            lived = trio.current_time() - started
            if end.connected and (end.received or lived >= limits.backoff_reset_after):
                delay = limits.backoff_initial
            # Equal jitter: half the delay fixed, half random.
            await trio.sleep(delay * (0.5 + 0.5 * self._rng.random()))
            delay = min(limits.backoff_max, delay * 2)

    def first_frame(self) -> str:
        plan = self.plan
        request: dict[str, object] = {"query": plan.query, "history": self.history}
        since = self.positions.get(self.address)
        if since is not None:
            request["since"] = since
        if plan.worker_fields is not None:
            request["fields"] = list(plan.worker_fields)
        return orjson.dumps(request).decode()

    async def _session(self) -> _SessionEnd:
        limits = self.limits
        host, port = split_address(self.address)
        end = _SessionEnd(connected=False, received=0)
        try:
            sock = await WorkerSocket.connect(
                host,
                port,
                self.plan.worker_path,
                headers=self._headers,
                connect_timeout=limits.connect_timeout,
                read_size=limits.receive_buffer,
                max_message=limits.max_entry_bytes,
            )
        except WsError as exc:
            end.reason = exc.reason
            return end
        try:
            await sock.send_text(self.first_frame())
            self._connected(sock.local)
            end.connected = True
            try:
                await self._announce("up")
                await self._pump(sock, end)
            finally:
                self._disconnected(sock.local)
        except _Refused as refused:
            return self._refused(refused, end)
        except WsClosed as closed:
            limit = self.plan.limit
            if closed.code == 1000 and limit is not None and end.received >= limit:
                end.done = True  # the worker sent its limit(n); the hub counts across workers
                return end
            if closed.code == 1006:
                end.reason = "the connection was lost"
            else:
                end.reason = f"the worker closed the connection (code {closed.code}"
                end.reason += f", {closed.reason})" if closed.reason else ")"
        except Exception as exc:  # a bug: logged, and never the end of the client's stream
            log.exception("relay to %s failed", self.address)
            end.reason = f"internal error: {exc!r}"
        finally:
            await sock.aclose()
        return end

    async def _pump(self, sock: WorkerSocket, end: _SessionEnd) -> None:
        address = self.address
        send = self.send.send
        positions = self.positions
        project = self.plan.project
        # Decoding every entry is the hub's largest cost per entry; it is needed only to project
        # or to merge by time. Otherwise only the last entry of each batch is decoded (its id is
        # the resume position), and frames that may be errors or gaps (by their first key).
        each = project is not None or self.plan.ordered
        json_frame = self.plan.json_frame
        budget = self.budget
        dumps = orjson.dumps
        while True:
            messages = await sock.receive_batch()
            batch: list[Frame] = []
            size = 0
            entries = 0
            last: bytes | None = None  # the last entry of the batch, as received
            last_meta: EntryMeta | None = None
            refused: _Refused | None = None
            for data in messages:
                obj = None
                if data.startswith((b'{"error":', b'{"gap":')):
                    obj = _decode(data, address)
                    if obj is None:
                        continue
                    ctrl = control_of(obj)
                    if ctrl is not None:
                        kind, body = ctrl
                        if kind == "error":
                            message = str(body.get("message", ""))
                            refused = _Refused(str(body.get("type", "error")), message)
                            break
                        if json_frame:
                            missed, reason = (
                                body.get("missed"),
                                str(body.get("reason", "retention")),
                            )
                            batch.append(
                                control(worker_gap_frame(address, missed, reason), address)
                            )
                        continue
                timestamp = 0
                if each:
                    if obj is None:
                        obj = _decode(data, address)
                        if obj is None:
                            continue
                    last_meta = meta_of(obj)
                    timestamp = last_meta.timestamp if last_meta is not None else 0
                    if project is not None:
                        data = dumps(project(obj), option=_SORT)
                else:
                    last = data
                size += len(data)
                entries += 1
                batch.append(Frame(data, address, timestamp, True))
            if last is not None:
                obj = _decode(last, address)
                last_meta = meta_of(obj) if obj is not None else None
            if batch:
                await budget.acquire(size)
                try:
                    await send(batch)
                except BaseException:
                    budget.release(size)  # cancelled before the channel took it
                    raise
                end.received += entries
                if last_meta is not None:
                    # Only once the client's channel holds them: a drop now resumes after them.
                    positions[address] = last_meta.id
                    if last_meta.worker != address:
                        self.info.advertised = last_meta.worker
            if refused is not None:
                raise refused

    def _refused(self, refused: _Refused, end: _SessionEnd) -> _SessionEnd:
        if refused.type == "cursor":
            # The worker does not know our position: a new data directory, or so old that its
            # journal forgot it. Either way everything it stores now is newer than what we
            # relayed, so start from its beginning (and say so to JSON clients).
            log.warning(
                "%s does not know cursor %s; restarting it from its first entry",
                self.address,
                self.positions.get(self.address),
            )
            self.positions.pop(self.address, None)
            self.history = True
            end.retry_now = True
            self._pending_gap = True  # told to JSON clients once the next connection is up
            return end
        if refused.type == "unavailable":
            end.reason = f"the worker is not ready ({refused.message})"
            return end
        # The worker will not serve this query (a KFL or request error the hub did not see:
        # different versions): retrying cannot help.
        end.reason = f"the worker refused the query: {refused}"
        end.done = True
        return end

    def _connected(self, local: str) -> None:
        self.connected = True
        info = self.info
        info.connects += 1
        info.relays_connected += 1
        info.relay_sockets.add(local)
        info.mark_up()

    def _disconnected(self, local: str) -> None:
        self.connected = False
        info = self.info
        info.relays_connected -= 1
        info.relay_sockets.discard(local)

    async def _announce(self, state: str, reason: str | None = None) -> None:
        frames: list[Frame] = []
        if self._pending_gap:
            self._pending_gap = False
            if self.plan.json_frame:
                frames.append(
                    control(worker_gap_frame(self.address, None, "cursor-unknown"), self.address)
                )
        if self.announced != state:
            self.announced = state
            if self.plan.json_frame:
                frames.append(control(worker_frame(self.address, state, reason), self.address))
        if frames:
            await self.send.send(frames)

    async def _went_down(self, reason: str, was_connected: bool) -> None:
        self.last_error = reason
        if was_connected:
            self.info.drops += 1
        self.info.mark_down(reason)
        if self.announced != "down":
            log.info("worker %s down for a stream: %s", self.address, reason)
        await self._announce("down", reason)
