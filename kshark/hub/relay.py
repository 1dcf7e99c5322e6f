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

A worker that keeps its socket open but sends nothing (stopped, or behind a network black
hole) is found at the edge, where the relay waits to read: after `worker_silence` seconds
without a byte the relay pings it, and with no answer within `worker_pong_timeout` the
connection is dropped and handled as a dead worker's (counted, `down`, backoff, resume).

Every connection asks the worker for its position frame (`?position=1`, see
kshark.api.worker_app): the entry the stream continues after, and the worker's store id.

- With no position yet for this worker (`"history": false`, nothing relayed), the frame's entry
  becomes the position, so a reconnect resumes after it instead of "from now" again: nothing
  the worker writes while its connection is down is lost, even before its first match.
- The store id is kept per worker for the stream's life. A different one means the worker now
  serves another data directory, whose ids name other entries: the stream's position for it is
  dropped (never resumed from: that could alias), JSON clients get
  `{"gap": {"missed": null, "reason": "store-changed", "worker": …}}`, and the new store is
  streamed from its first entry when the stream asked for history, or when the store is younger
  than the stream (it holds only entries written since the client connected); otherwise from
  its newest entry, as a worker that joins.
- A worker first met by a `"history": false` stream whose store is younger than the stream (it
  was down when the client connected, and restarted on a new data directory) is streamed from
  its first entry too: all of it was written since the client connected.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import trio

from kshark.hub.frames import (
    REDACTED,
    EntryMeta,
    control_of,
    read_entry,
    worker_frame,
    worker_gap_frame,
)
from kshark.hub.handoff import Frame, control
from kshark.hub.workers import split_address
from kshark.hub.wsio import WorkerSocket, WsClosed, WsError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kshark.api.wire import Projection
    from kshark.hub.handoff import ByteBudget
    from kshark.hub.limits import HubLimits
    from kshark.hub.workers import WorkerInfo

log = logging.getLogger("kshark.hub")

_SORT = orjson.OPT_SORT_KEYS


def _decode(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


# The longest text of a worker's error frame kept (it becomes a `down` reason).
_MAX_REASON = 500


def _text(value: Any, default: str, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else default


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


# Asks the worker for the position frame (kshark.api.paths.POSITION_PARAM).
_POSITION_QUERY = "?position=1"
_POSITION_PREFIX = b'{"position":'
# The gap frame reason when a worker's store id changed.
STORE_CHANGED = "store-changed"


class _Hung(Exception):
    """The worker did not answer a ping in time: handled as a lost connection."""


class _Restart(Exception):
    """This connection streams what the stream no longer wants (the store changed under a
    cursor): reconnect at once with the new request."""


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
        stores: dict[str, str] | None = None,
        stream_started: float | None = None,
        worker_token: str | None = None,
        rng: random.Random | None = None,
        resolve: Callable[[str], str | None] | None = None,
    ) -> None:
        self.address = address
        self.plan = plan
        self.send = send
        self.info = info
        self.positions = positions
        # worker address → the store id its position belongs to (owned by the stream, like
        # positions, so it outlives this relay if the worker leaves and rejoins the set)
        self.stores = stores if stores is not None else {}
        self.stream_started = trio.current_time() if stream_started is None else stream_started
        self.limits = limits
        self.budget = budget
        self.history = plan.history
        self.announced: str | None = None  # the last state frame sent: "up" | "down"
        self.connected = False
        self.last_error: str | None = None
        self._pending_gap: str | None = None  # a gap reason to tell JSON clients once up
        # What the current connection asked for (its first frame's since / history).
        self._asked_since: str | None = None
        self._asked_history = plan.history
        self._headers = [("Authorization", f"Bearer {worker_token}")] if worker_token else []
        self._rng = rng or random.Random()
        # A worker name → the address of the hub's worker it names (WorkerSet.resolve).
        self.resolve: Callable[[str], str | None] = resolve or (lambda _name: None)

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
        self._asked_since = since
        self._asked_history = self.history
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
                self.plan.worker_path + _POSITION_QUERY,
                headers=self._headers,
                connect_timeout=limits.connect_timeout,
                read_size=limits.receive_buffer,
                max_message=limits.max_entry_bytes,
                control_timeout=limits.worker_pong_timeout,
            )
        except WsError as exc:
            end.reason = exc.reason
            return end
        try:
            await sock.send_text(self.first_frame())
            self._connected(sock.local)
            end.connected = True
            try:
                await self._pump(sock, end)
            finally:
                self._disconnected(sock.local)
        except _Refused as refused:
            return self._refused(refused, end)
        except _Restart:
            end.retry_now = True
        except _Hung as hung:
            end.reason = str(hung)
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
        # Entries are forwarded as the worker's bytes. Each is checked first (frames.read_entry:
        # UTF-8, one JSON object, an entry of this worker), which also yields its id (the
        # resume position) and timestamp; a full decode is needed only to project or to merge
        # by time.
        each = project is not None or self.plan.ordered
        ordered = self.plan.ordered
        json_frame = self.plan.json_frame
        budget = self.budget
        dumps = orjson.dumps
        first = True
        serving = False
        binary_seen = 0
        while True:
            messages = await self._receive(sock)
            batch: list[Frame] = []
            if sock.binary_dropped != binary_seen:
                self._drop(batch, "binary frames", sock.binary_dropped - binary_seen)
                binary_seen = sock.binary_dropped
            if not serving and messages and not messages[0].startswith(b'{"error":'):
                # `up` once the worker serves the stream: one still starting (or refusing the
                # query) completes the handshake, then sends an error frame and closes.
                serving = True
                await self._announce("up")
            if first:
                first = False
                if messages and messages[0].startswith(_POSITION_PREFIX):
                    batch.extend(self._position(messages[0]))  # may raise _Restart
                    del messages[0]
            size = 0
            entries = 0
            last_meta: EntryMeta | None = None  # the last entry of the batch with a real id
            refused: _Refused | None = None
            for data in messages:
                meta = read_entry(data)
                if isinstance(meta, str):
                    if data.startswith((b'{"error":', b'{"gap":')):
                        obj = _decode(data)
                        ctrl = control_of(obj) if obj is not None else None
                        if ctrl is not None:
                            kind, body = ctrl
                            if kind == "error":
                                refused = _Refused(
                                    _text(body.get("type"), "error", 32),
                                    _text(body.get("message"), "", _MAX_REASON),
                                )
                                break
                            if json_frame:
                                gap = worker_gap_frame(
                                    address, body.get("missed"), body.get("reason", "retention")
                                )
                                batch.append(control(gap, address))
                            continue
                    self._drop(batch, meta)
                    continue
                if meta.worker != self.info.advertised and not self._claims_ok(meta.worker):
                    self._drop(batch, f"an entry of another worker ({meta.worker!r})")
                    continue
                if each:
                    obj = _decode(data)
                    if obj is None:  # valid JSON that orjson will not read (a huge integer)
                        self._drop(batch, "an entry the hub cannot decode")
                        continue
                    if project is not None:
                        data = dumps(project(obj), option=_SORT)
                size += len(data)
                entries += 1
                batch.append(Frame(data, address, meta.timestamp if ordered else 0, True))
                if meta.id != REDACTED:
                    last_meta = meta
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
            if refused is not None:
                raise refused

    def _claims_ok(self, claimed: str) -> bool:
        """Whether an entry saying it comes from `claimed` may come from this worker. Its own
        id is what its /status says (the monitor sets `info.advertised`); until that is known,
        the first entries teach it, unless they name another of the hub's workers."""
        info = self.info
        if claimed == REDACTED:  # the client's query redacted it: it claims nothing
            return True
        if info.advertised is not None:
            return False
        if claimed != self.address and self.resolve(claimed) not in (None, self.address):
            return False
        info.advertised = claimed
        return True

    def _drop(self, batch: list[Frame], reason: str, n: int = 1) -> None:
        """Count a frame the hub will not forward; the first of a connection is logged and
        makes the worker `degraded` for JSON clients (a state frame in `batch`)."""
        self.info.dropped(reason, n)
        if self.announced != "degraded":
            log.warning("%s sent %s; dropped (counted in /status)", self.address, reason)
            self.announced = "degraded"
            if self.plan.json_frame:
                frame = worker_frame(self.address, "degraded", f"dropped {reason}")
                batch.append(control(frame, self.address))

    async def _receive(self, sock: WorkerSocket) -> list[bytes]:
        """The next messages from the worker, checking it is alive while we wait for them.

        The check runs only here, while the relay waits to read: a relay blocked by its slow
        client is not reading, and the worker's silence then is ours."""
        silence = self.limits.worker_silence
        answer_within = self.limits.worker_pong_timeout
        waiting_since = trio.current_time()
        while True:
            quiet_until = max(sock.heard_at, waiting_since) + silence
            with trio.move_on_at(quiet_until):
                return await sock.receive_batch()
            if max(sock.heard_at, waiting_since) + silence > trio.current_time():
                continue  # it sent something meanwhile (a ping of its own, part of a message)
            reads = sock.reads
            asked = trio.current_time()
            await sock.ping()
            with trio.move_on_at(asked + answer_within):
                return await sock.receive_batch()
            if sock.reads == reads:
                raise _Hung(
                    f"the worker sent nothing for {silence:g} s and did not answer a ping "
                    f"within {answer_within:g} s (hung or unreachable)"
                )

    def _position(self, data: bytes) -> list[Frame]:
        """Take in the worker's position frame (module docstring); returns frames for the
        client. Raises _Restart when this connection cannot give the stream what it wants."""
        obj = _decode(data)
        body = obj.get("position") if obj is not None and len(obj) == 1 else None
        if not isinstance(body, dict):
            return []
        address = self.address
        frames: list[Frame] = []
        store = body.get("store_id")
        if isinstance(store, str) and store:
            known = self.stores.get(address)
            self.stores[address] = store
            if known is not None and known != store:
                history = self.plan.history or self._younger_than_stream(body)
                log.warning(
                    "%s serves another data directory (store %s, was %s): its old positions "
                    "are void; streaming it from its %s",
                    address,
                    store,
                    known,
                    "first entry" if history else "newest entry",
                )
                self.positions.pop(address, None)
                self.history = history
                if self._asked_since is not None or self._asked_history != history:
                    # This connection resumes from an id of the old store (which here may name
                    # an unrelated entry) or from the wrong end: never relay from it.
                    self._pending_gap = STORE_CHANGED  # told once the next connection is up
                    raise _Restart
                if self.plan.json_frame:
                    frames.append(control(worker_gap_frame(address, None, STORE_CHANGED), address))
            elif (
                known is None
                and not self.history
                and address not in self.positions
                and self._younger_than_stream(body)
            ):
                # First met on this "history": false stream, and made after the stream began
                # (the worker was down, or unreachable, when the client connected): everything
                # it stores was written since, so all of it is for this stream.
                self.history = True
                if not self._asked_history:
                    raise _Restart
        if address not in self.positions and "since" in body:
            since = body["since"]
            if isinstance(since, str) and since:
                # Where this stream starts on this worker: a reconnect resumes after it.
                self.positions[address] = since
            elif since is None:
                # It starts at the store's first entry: so does a reconnect, until a position.
                self.history = True
        return frames

    def _younger_than_stream(self, position: dict[str, Any]) -> bool:
        """Whether the worker's store was made after this client stream began. Ages, not
        dates: the worker's clock and ours need not agree, only run at the same rate."""
        age = position.get("store_age")
        return (
            isinstance(age, int | float)
            and not isinstance(age, bool)
            and math.isfinite(age)
            and age < trio.current_time() - self.stream_started
        )

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
            self._pending_gap = "cursor-unknown"  # told to JSON clients once the next is up
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
        if self._pending_gap is not None:
            reason, self._pending_gap = self._pending_gap, None
            if self.plan.json_frame:
                frames.append(control(worker_gap_frame(self.address, None, reason), self.address))
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
