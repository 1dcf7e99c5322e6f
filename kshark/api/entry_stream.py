"""One client's entry stream at the worker: what it is sent, and the sending.

`entry_frames` is the whole decision, as a plain generator over the store: from the client's
cursor (`ClientState.seq`) it reads the store in batches, filters and reshapes each entry, and
yields what to do next: send these entry frames, tell of a gap, let the event loop run, or wait
(nothing new). It does no I/O but the store's reads, and never waits; its clock is a parameter.
`send_stream` is the thin Trio half: it sends what the generator yields, waits for the store's
next write when it is caught up, and keeps a quiet stream alive with pings.

Every client reads the entry files at its own pace, so there is no shared queue that a slow
client could fill: a client that stops reading blocks in its own websocket send, holding one
batch, while capture and the other clients go on (`StreamLimits` bounds what that costs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio
from trio_websocket import ConnectionClosed

from kshark.api.kfl_thread import EVAL_SLICE_SECONDS
from kshark.api.wire import Shaper, gap_frame
from kshark.api.wsbatch import send_texts

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

    from kshark.api.wire import CompiledQuery, StreamRequest
    from kshark.store import Store

# Entry frames are written to the socket in pieces of about this size (one write per piece,
# not per entry); the frames of a piece are the only copy of the batch made for sending.
SEND_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-client bounds on a streaming websocket.

    batch_entries: most entries read from the store in one `read_after` call.
    batch_bytes: most bytes of entries in one batch: a read stops before the entry that would
        pass it, unless that entry is the batch's first. So a batch is at most
        max(batch_bytes, one entry). Each read also asks for only as many entries as should
        fit, judged by the previous batch's average entry size (the first read takes one).

    What one client costs in memory, whatever its pace (a client that never reads included):
    its batch as read, and the piece of it being written, as text and as websocket frames (a
    piece is SEND_CHUNK_BYTES, or one entry if larger). At most
    3 × max(batch_bytes, largest entry) + 2 × SEND_CHUNK_BYTES; nothing is dropped to keep
    it so: a client that does not read holds its batch and waits (`/status`: its `lag`).
    first_frame_timeout: seconds a new client has to send its query. Past it: error frame, 1008.
    ping_interval: a websocket ping goes out after this many seconds without a frame, so idle
        streams (quiet filters) survive proxies that cut silent connections (nginx: 60 s).
    """

    batch_entries: int = 64
    batch_bytes: int = 1 << 20
    first_frame_timeout: float = 120.0
    ping_interval: float = 20.0


@dataclass(slots=True)
class ClientState:
    """One connected streaming client, as /status shows it."""

    id: int
    remote: str
    path: str
    query: str
    json_frame: bool
    connected_at: float
    seq: int = 0  # the last store seq this client has been through (sent or filtered out)
    sent: int = 0  # frames of entries sent
    missed: int = 0  # entries deleted by retention before this client reached them
    buffered_bytes: int = 0  # entry bytes of the batch in hand (the client's memory footprint)
    ping_pending: bool = False


@dataclass(slots=True)
class StreamTotals:
    """Counts over every client of one worker (/status, /metrics)."""

    missed: int = 0  # entries retention deleted before a client read them
    sent: int = 0  # entry frames sent


@dataclass(frozen=True, slots=True)
class Entries:
    """Send these entry frames (the cursor is already past them, or at the last one)."""

    texts: list[str]


@dataclass(frozen=True, slots=True)
class Gap:
    """Retention deleted `missed` entries before this client reached them."""

    missed: int


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Let the event loop run (a slice of filtering is done, or a stretch of deleted entries passed).
PAUSE: Final = _Marker("PAUSE")
# A batch is done: let the event loop run, and keep the stream alive if it has been quiet.
BATCH_END: Final = _Marker("BATCH_END")
# Nothing after the cursor yet: wait for the store's next write.
CAUGHT_UP: Final = _Marker("CAUGHT_UP")

Step = Entries | Gap | _Marker


def entry_frames(
    store: Store,
    client: ClientState,
    req: StreamRequest,
    query: CompiledQuery,
    summarize: Callable[[dict[str, Any]], dict[str, Any]] | None,
    limits: StreamLimits,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Step]:
    """The steps of one client's stream from `client.seq` on; it ends when the query's
    `limit(n)` is reached (never otherwise). Moves `client.seq` and `client.buffered_bytes`
    as it goes; counts nothing else (the sender counts what it sends)."""
    shaper = Shaper(query, req.fields, summarize)
    # Blank KFL matches every entry (KFL.md); with nothing to reshape either, the stored text
    # goes out untouched and is never even parsed.
    must_parse = bool(req.query.strip()) or not shaper.passthrough
    match = query.match
    passthrough = shaper.passthrough

    def render(data: bytes) -> str | None:
        # A function, so that the parsed entry is let go before a send that may wait long.
        entry = orjson.loads(data)
        if not match(entry):
            return None
        return data.decode() if passthrough else shaper.render(entry)

    remaining = query.limit
    if remaining is not None and remaining <= 0:
        return
    # Entries that retention removed before a history client started are not "missed": the
    # client never could have had them. From a cursor, or once streaming, they are.
    count_missed = req.since is not None or not req.history
    # Entry sizes are unknown until one is read: the first read takes one, later reads are
    # sized from what was seen.
    want = 1
    while True:
        items, missed = store.read_after(client.seq, want, limits.batch_bytes)
        # Items and missed together cover the seqs right after ours (Store.read_after), so
        # this is where the next read starts even when the batch ends in deleted entries.
        end = client.seq + len(items) + missed
        if missed and count_missed:
            yield Gap(missed)
        count_missed = True
        if items:
            size = 0
            for _, data in items:
                size += len(data)
            client.buffered_bytes = size
            texts: list[str] = []
            text_bytes = 0
            limit_seq = 0  # the seq at which limit(n) was reached, if it was
            yield_at = clock() + EVAL_SLICE_SECONDS
            for seq, data in items:
                if clock() >= yield_at:
                    # Filtering a batch never holds the event loop long (kfl_thread).
                    yield PAUSE
                    yield_at = clock() + EVAL_SLICE_SECONDS
                text = render(data) if must_parse else data.decode()
                if text is None:
                    continue
                texts.append(text)
                text_bytes += len(text)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        limit_seq = seq
                        break
                if text_bytes >= SEND_CHUNK_BYTES:
                    # Bounded write size: frames of one batch are never all copied at once.
                    client.seq = seq
                    yield Entries(texts)
                    texts = []
                    text_bytes = 0
            if texts:
                yield Entries(texts)
            client.buffered_bytes = 0
            if limit_seq:
                client.seq = limit_seq
                return
            client.seq = end
            # Size the next read so that one batch stays near batch_bytes.
            want = max(
                1, min(limits.batch_entries, limits.batch_bytes * len(items) // max(size, 1))
            )
            # A selective filter scanning history may send nothing for many batches: the
            # sender yields so that capture and the other clients run.
            yield BATCH_END
        elif missed:
            client.seq = end
            yield PAUSE
        else:
            yield CAUGHT_UP


async def send_stream(
    ws: WebSocketConnection,
    nursery: trio.Nursery,
    store: Store,
    client: ClientState,
    steps: Iterator[Step],
    limits: StreamLimits,
    totals: StreamTotals,
) -> bool:
    """Carry out `steps` (entry_frames) on the websocket: True once they end (limit(n)
    reached); otherwise until cancelled (the client left)."""
    last_frame = trio.current_time()
    for step in steps:
        if type(step) is Entries:
            await send_texts(ws, step.texts)
            client.sent += len(step.texts)
            totals.sent += len(step.texts)
            last_frame = trio.current_time()
        elif type(step) is Gap:
            client.missed += step.missed
            totals.missed += step.missed
            if client.json_frame:
                await ws.send_message(gap_frame(step.missed))
                last_frame = trio.current_time()
        elif step is PAUSE:
            await trio.lowlevel.checkpoint()
        else:
            if step is BATCH_END:
                await trio.lowlevel.checkpoint()
            else:  # CAUGHT_UP
                wait = last_frame + limits.ping_interval - trio.current_time()
                if wait > 0:
                    with trio.move_on_after(wait):
                        await store.wait_for_seq(client.seq)
                    continue
            if trio.current_time() - last_frame >= limits.ping_interval:
                # Quiet for a while (nothing new, or nothing matching): keep proxies from
                # cutting the stream.
                _ping(ws, nursery, client)
                last_frame = trio.current_time()
    return True


def _ping(ws: WebSocketConnection, nursery: trio.Nursery, client: ClientState) -> None:
    if client.ping_pending:
        return  # the last one is unanswered; a second would not tell us more
    client.ping_pending = True

    async def ping() -> None:
        try:
            await ws.ping()
        except ConnectionClosed:
            pass
        finally:
            client.ping_pending = False

    nursery.start_soon(ping)


async def cancel_when_closed(ws: WebSocketConnection, scope: trio.CancelScope) -> None:
    """Drain (and ignore) client frames; when the client closes, stop its stream."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        scope.cancel()
