"""The worker's routes over a Store: the entry streams and the REST beside them.

Streams (`/api/wsFull`, `/wsFull` full entries; `/api/ws`, `/ws` summary form): after the first
frame (kshark.api.wire), each client walks the store's write order from its own position with
`store.read_after(seq, n)`, then sleeps in `store.wait_for_seq(seq)` until the pipeline writes
more. Every client reads the entry files at its own pace, so there is no shared queue that a slow
client could fill: a client that stops reading blocks in its own websocket send, holding one
batch, while capture and the other clients go on. Entries retention deletes before a slow client
reaches them are counted (`clients_missed_total` in /status) and, for JSON-frame clients, told
in a gap frame.

A JSON-frame client that opens `/api/wsFull?position=1` (the hub does) first gets a position
frame, `{"position": {"since": <id> | null, "store_age": s, "store_id": "…"}}`: the entry the
stream continues after (null: the store's first entry), taken in the same step that fixes the
stream's start, and which data directory it belongs to (kshark.store.identity). With it a client
that reconnects can resume exactly, even with `"history": false` before its first match, and can
tell a worker restarted on another data directory (whose ids mean other entries) from the same
one. Raw-text clients never get it.

REST (also under an `/api` prefix): /echo, /status, /metrics, /version, /query/validate?q=,
/item/{stream}-{index}, /pcaps/{stream}. Stream numbers are parsed as ASCII digits and handed to
the store as ints; no user text is ever joined into a file path.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import trio
from trio_websocket import ConnectionClosed

from capture.entries import summarize as summarize_entry
from kshark import __version__
from kshark.api.httpserver import (
    STREAM_CHUNK,
    Request,
    Response,
    error_response,
    json_response,
    text_response,
)
from kshark.api.kfl_thread import EVAL_SLICE_SECONDS, off_loop
from kshark.api.rest import no_such_path, route_of
from kshark.api.status_caps import listed_clients
from kshark.api.wire import (
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN,
    Shaper,
    StreamError,
    gap_frame,
    open_stream,
    refuse,
    send_texts,
)
from kshark.kfl import validate as validate_query
from kshark.store.identity import StoreIdentity, read_identity
from kshark.web import routes as web_routes

if TYPE_CHECKING:
    from pathlib import Path

    from trio_websocket import WebSocketConnection

    from kshark.api.wire import CompiledQuery, StreamRequest
    from kshark.store import Store

log = logging.getLogger("kshark.api")

FULL_PATHS = frozenset({"/api/wsFull", "/wsFull"})
SUMMARY_PATHS = frozenset({"/api/ws", "/ws"})

# /item/000000000007.pcap-3, /item/000000000007-3, /item/7-3; ASCII digits only (\d would also
# take other scripts' digits).
_ITEM_RE = re.compile(r"([0-9]{1,12})(?:\.pcap)?-([0-9]{1,9})")
_PCAP_RE = re.compile(r"([0-9]{1,12})(?:\.pcap)?")

# `/api/wsFull?position=1`: a JSON-frame client asks for the position frame (module docstring).
POSITION_PARAM = "position"
_POSITION_ON = frozenset({"1", "true"})


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


class _StoreUnavailable(Exception):
    """The worker has not built its store yet (the API starts first to learn its port)."""


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


class WorkerApp:
    """The worker's `App` (see kshark.api.httpserver) over one Store.

    `store` may be the Store or a callable returning it (the worker builds its store after the
    API has a port); until the callable succeeds, requests get 503 and streams close with 1013.
    `stats_provider` gives the capture/pipeline counters shown in /status and /metrics.
    `summarize` turns an entry into the summary form of ENTRY.md (default:
    capture.entries.summarize).
    """

    ws_paths = FULL_PATHS | SUMMARY_PATHS

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        stats_provider: Callable[[], Mapping[str, Any]] | None = None,
        macros: Mapping[str, str] | None = None,
        summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        limits: StreamLimits | None = None,
    ) -> None:
        self._store_or_getter = store
        self._stats_provider = stats_provider
        self._macros = dict(macros) if macros else None
        self._summarize = summarize or summarize_entry
        self.limits = limits or StreamLimits()
        self.clients: dict[int, ClientState] = {}
        self._client_ids = itertools.count(1)
        self.clients_total = 0
        self.clients_missed_total = 0
        self.entries_sent_total = 0
        # /status's newest_id for (store, last_seq): decoding the newest entry once per new
        # entry, not once per /status request.
        self._newest: tuple[object, int, str | None] | None = None
        self._identity: tuple[object, StoreIdentity | None] | None = None

    @property
    def store(self) -> Store:
        s = self._store_or_getter
        if callable(s) and not hasattr(s, "read_after"):
            try:
                return s()
            except LookupError:
                raise _StoreUnavailable from None
        return s  # type: ignore[return-value]

    # ---- websocket streams ---------------------------------------------------------------

    async def handle_ws(self, request: Request, ws: WebSocketConnection) -> None:
        opened = await open_stream(
            ws, macros=self._macros, first_frame_timeout=self.limits.first_frame_timeout
        )
        if opened is None:
            return
        stream_request, query = opened
        try:
            store = self.store
        except _StoreUnavailable:
            await refuse(ws, StreamError("unavailable", "the worker is starting"), CLOSE_TRY_AGAIN)
            return
        wants_position = (
            stream_request.json_frame and request.query.get(POSITION_PARAM) in _POSITION_ON
        )
        try:
            start = self._start_seq(store, stream_request)
        except StreamError as err:
            if wants_position:
                # Which store refused the cursor: a client keeping cursors across restarts can
                # tell "a new data directory" from "my cursor is too old".
                try:
                    await ws.send_message(self._position_frame(store, None, known=False))
                except ConnectionClosed:
                    return
            await refuse(ws, err)
            return
        # Taken now, with `start` (no await in between), so it names exactly where the stream
        # begins.
        position = self._position_frame(store, start, stream_request) if wants_position else None
        summarize = self._summarize if request.path in SUMMARY_PATHS else None
        client = ClientState(
            id=next(self._client_ids),
            remote=request.remote,
            path=request.path,
            query=stream_request.query,
            json_frame=stream_request.json_frame,
            connected_at=time.time(),
            seq=start,
        )
        self.clients[client.id] = client
        self.clients_total += 1
        log.info(
            "stream %d from %s on %s: %r from seq %d",
            client.id,
            client.remote,
            client.path,
            client.query,
            start,
        )
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_closed, ws, nursery.cancel_scope)
                if position is not None:
                    await ws.send_message(position)
                finished = await self._pump(
                    ws, nursery, store, client, stream_request, query, summarize
                )
                nursery.cancel_scope.cancel()
            if finished:
                await ws.aclose(CLOSE_NORMAL)
        except* ConnectionClosed:
            pass  # the client went away while we were sending
        finally:
            del self.clients[client.id]
            log.info(
                "stream %d ended: %d sent, %d missed, at seq %d",
                client.id,
                client.sent,
                client.missed,
                client.seq,
            )

    def _start_seq(self, store: Store, req: StreamRequest) -> int:
        if req.since is not None:
            if not isinstance(req.since, str):
                raise StreamError("cursor", 'a worker cursor is one entry "id" (a string)')
            seq = store.seq_of_id(req.since)
            if seq is None:
                raise StreamError("cursor", f"unknown cursor {req.since!r}")
            return seq
        return 0 if req.history else store.last_seq

    def _position_frame(
        self, store: Store, start: int | None, req: StreamRequest | None = None, known: bool = True
    ) -> str:
        """The position frame: the entry the stream continues after (`since`; null when it
        starts at the store's first entry; left out when it is not known) and the store."""
        body: dict[str, Any] = {}
        if known and start is not None:
            if req is not None and req.since is not None:
                body["since"] = req.since  # resolved by _start_seq: the client's own cursor
            elif start == 0:
                body["since"] = None
            else:
                since = entry_id_at(store, start)
                if since is not None:  # its file already deleted by retention: not known
                    body["since"] = since
        store_id, age = self._store_identity(store)
        body["store_id"] = store_id
        body["store_age"] = age
        return orjson.dumps({"position": body}, option=orjson.OPT_SORT_KEYS).decode()

    def _store_identity(self, store: Store) -> tuple[str | None, float | None]:
        """The store's id and its age in seconds (None where unknown)."""
        store_id = getattr(store, "store_id", None)
        cached = self._identity
        if cached is None or cached[0] is not store:
            identity = read_identity(store.data_dir) if store_id is not None else None
            cached = self._identity = (store, identity)
        identity = cached[1]
        if identity is None or identity.store_id != store_id:
            return store_id, None
        return store_id, round(max(0.0, time.time() - identity.created), 3)

    def _newest_id(self, store: Store) -> str | None:
        seq = store.last_seq
        cached = self._newest
        if cached is not None and cached[0] is store and cached[1] == seq:
            return cached[2]
        newest = entry_id_at(store, seq)
        self._newest = (store, seq, newest)
        return newest

    async def _pump(
        self,
        ws: WebSocketConnection,
        nursery: trio.Nursery,
        store: Store,
        client: ClientState,
        req: StreamRequest,
        query: CompiledQuery,
        summarize: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> bool:
        """Send matching entries until `limit(n)` is reached (True) or the client leaves
        (cancelled by the close watcher)."""
        limits = self.limits
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
            return True
        # Entries that retention removed before a history client started are not "missed": the
        # client never could have had them. From a cursor, or once streaming, they are.
        count_missed = req.since is not None or not req.history
        # Entry sizes are unknown until one is read: the first read takes one, later reads are
        # sized from what was seen.
        want = 1
        last_frame = trio.current_time()
        while True:
            items, missed = store.read_after(client.seq, want, limits.batch_bytes)
            # Items and missed together cover the seqs right after ours (Store.read_after), so
            # this is where the next read starts even when the batch ends in deleted entries.
            end = client.seq + len(items) + missed
            if missed and count_missed:
                client.missed += missed
                self.clients_missed_total += missed
                if req.json_frame:
                    await ws.send_message(gap_frame(missed))
                    last_frame = trio.current_time()
            count_missed = True
            if items:
                size = 0
                for _, data in items:
                    size += len(data)
                client.buffered_bytes = size
                texts: list[str] = []
                text_bytes = 0
                sent_before = client.sent
                limit_seq = 0  # the seq at which limit(n) was reached, if it was
                yield_at = time.perf_counter() + EVAL_SLICE_SECONDS
                for seq, data in items:
                    if time.perf_counter() >= yield_at:
                        # Filtering a batch never holds the event loop long (kfl_thread).
                        await trio.lowlevel.checkpoint()
                        yield_at = time.perf_counter() + EVAL_SLICE_SECONDS
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
                        await self._send(ws, client, texts)
                        texts = []
                        text_bytes = 0
                if texts:
                    await self._send(ws, client, texts)
                if client.sent != sent_before:
                    last_frame = trio.current_time()
                client.buffered_bytes = 0
                if limit_seq:
                    client.seq = limit_seq
                    return True
                client.seq = end
                # Size the next read so that one batch stays near batch_bytes.
                want = max(
                    1, min(limits.batch_entries, limits.batch_bytes * len(items) // max(size, 1))
                )
                # A selective filter scanning history may send nothing for many batches: yield
                # so that capture and the other clients run.
                await trio.lowlevel.checkpoint()
            elif missed:
                client.seq = end
                await trio.lowlevel.checkpoint()
                continue
            else:
                wait = last_frame + limits.ping_interval - trio.current_time()
                if wait > 0:
                    with trio.move_on_after(wait):
                        await store.wait_for_seq(client.seq)
                    continue
            if trio.current_time() - last_frame >= limits.ping_interval:
                # Quiet for a while (nothing new, or nothing matching): keep proxies from
                # cutting the stream.
                self._ping(ws, nursery, client)
                last_frame = trio.current_time()

    async def _send(self, ws: WebSocketConnection, client: ClientState, texts: list[str]) -> None:
        await send_texts(ws, texts)
        client.sent += len(texts)
        self.entries_sent_total += len(texts)

    def _ping(self, ws: WebSocketConnection, nursery: trio.Nursery, client: ClientState) -> None:
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

    # ---- REST ------------------------------------------------------------------------------

    async def handle_http(self, request: Request) -> Response:
        path, refused = route_of(request)
        if refused is not None:
            return refused
        try:
            if path == "/echo":
                return text_response("It's running.")
            if path == "/version":
                return json_response({"name": "kshark", "role": "worker", "version": __version__})
            if path == "/query/validate":
                return await self._validate(request.query.get("q", ""))
            if path == "/status":
                return json_response(self.status())
            if path == "/metrics":
                return Response(
                    200, self.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
                )
            if path.startswith("/item/"):
                return self._item(path[len("/item/") :])
            if path.startswith("/pcaps/"):
                return await self._pcap(path[len("/pcaps/") :])
            if (web := await web_routes.worker_routes(self, request, path)) is not None:
                return web  # the dashboard and the exports (kshark.web)
        except _StoreUnavailable:
            return error_response(503, "the worker is starting")
        return no_such_path(request)

    async def _validate(self, text: str) -> Response:
        valid, message = await off_loop(validate_query, text, self._macros)
        return json_response({"valid": valid, "message": message})

    def _item(self, rest: str) -> Response:
        m = _ITEM_RE.fullmatch(rest)
        if m is None:
            return error_response(404, "no such entry (want /item/<stream>-<index>)")
        data = self.store.entry_bytes(int(m[1]), int(m[2]))
        if data is None:
            return error_response(404, f"no such entry: {rest}")
        return Response(200, data, "application/json")

    async def _pcap(self, rest: str) -> Response:
        m = _PCAP_RE.fullmatch(rest)
        if m is None:
            return error_response(404, "no such pcap (want /pcaps/<stream>)")
        stream = int(m[1])
        path = self.store.pcap_path(stream)
        if path is None:
            return error_response(404, f"no such pcap: {rest}")
        try:
            # The length is fixed here: packets appended later (a connection still open) are
            # not part of this download.
            size = os.stat(path).st_size
        except FileNotFoundError:
            return error_response(404, f"no such pcap: {rest}")
        name = f"{stream:012d}.pcap"
        return Response(
            200,
            content_type="application/vnd.tcpdump.pcap",
            headers=[("Content-Disposition", f'attachment; filename="{name}"')],
            stream=_file_chunks(path, size),
            content_length=size,
        )

    # ---- status and metrics ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status document: the worker's counters, the store's, and the clients."""
        out: dict[str, Any] = dict(self._stats_provider()) if self._stats_provider else {}
        store = self.store
        last_seq = store.last_seq
        now = time.time()
        out["store"] = dict(store.stats)
        out["last_seq"] = last_seq
        out["newest_id"] = self._newest_id(store)
        out["store_id"] = getattr(store, "store_id", None)
        out["clients_connected"] = len(self.clients)
        out["clients_total"] = self.clients_total
        out["clients_missed_total"] = self.clients_missed_total
        out["entries_sent_total"] = self.entries_sent_total
        # The most lagging first, at most MAX_STATUS_CLIENTS, queries shortened (status_caps).
        rows: list[dict[str, Any]] = [
            {
                "id": c.id,
                "remote": c.remote,
                "path": c.path,
                "query": c.query,
                "json_frame": c.json_frame,
                "connected_seconds": round(now - c.connected_at, 3),
                "seq": c.seq,
                "lag": max(0, last_seq - c.seq),
                "sent": c.sent,
                "missed": c.missed,
                "buffered_bytes": c.buffered_bytes,
            }
            for c in self.clients.values()
        ]
        rows.sort(key=lambda row: -row["lag"])
        out["clients"], out["clients_not_listed"] = listed_clients(rows)
        return out

    def metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of /status's numbers, `kshark_` prefixed."""
        status = self.status()
        clients = status.pop("clients")
        lines: list[str] = []
        for name, value in _numeric_leaves(status, ()):
            metric = "kshark_" + "_".join(name)
            known = _METRIC_INFO.get(name[0]) if len(name) == 1 else None
            kind, help_text = known or ("gauge", " ".join(name))
            if kind == "counter" and not metric.endswith("_total"):
                metric += "_total"
            lines.append(f"# HELP {metric} {help_text}")
            lines.append(f"# TYPE {metric} {kind}")
            lines.append(f"{metric} {_number(value)}")
        lines.append("# HELP kshark_client_lag_entries entries a connected client is behind")
        lines.append("# TYPE kshark_client_lag_entries gauge")
        for c in clients:
            lines.append(
                f'kshark_client_lag_entries{{client="{c["id"]}",path="{c["path"]}"}} {c["lag"]}'
            )
        return "\n".join(lines) + "\n"


async def _cancel_when_closed(ws: WebSocketConnection, scope: trio.CancelScope) -> None:
    """Drain (and ignore) client frames; when the client closes, stop its stream."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:
        scope.cancel()


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """The first `size` bytes of a file in STREAM_CHUNK pieces. The file is opened only when the
    body is sent (never for HEAD); once open, retention deleting it does not cut the download.
    A file gone or shorter than `size` ends the body early, and the server closes the
    connection (the client sees fewer bytes than Content-Length)."""
    try:
        f = await trio.open_file(path, "rb")
    except FileNotFoundError:
        return
    try:
        left = size
        while left > 0:
            chunk = await f.read(min(STREAM_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        with trio.CancelScope(shield=True):
            await f.aclose()


def entry_id_at(store: Store, seq: int) -> str | None:
    """The `id` of the entry at `seq`; None for seq 0 or when its file is gone (retention)."""
    if seq <= 0:
        return None
    items, _ = store.read_after(seq - 1, 1)
    if not items or items[0][0] != seq:
        return None
    try:
        entry = orjson.loads(items[0][1])
    except orjson.JSONDecodeError:
        return None
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    return entry_id if isinstance(entry_id, str) and entry_id else None


# HELP text and type of well-known counters; anything else is a gauge named by its path.
_METRIC_INFO: dict[str, tuple[str, str]] = {
    "packets": ("counter", "packets seen by capture or replay"),
    "dropped_kernel": ("counter", "packets the kernel dropped before capture read them"),
    "dropped_ours": ("counter", "packets kshark dropped (bounded buffers full)"),
    "connections": ("counter", "TCP connections and UDP flows dissected"),
    "entries": ("counter", "entries the pipeline produced"),
    "errors": ("counter", "entries with an error set"),
    "last_seq": ("gauge", "seq of the newest stored entry"),
    "clients_connected": ("gauge", "streaming websocket clients connected now"),
    "clients_total": ("counter", "streaming websocket clients served"),
    "clients_missed_total": ("counter", "entries retention deleted before a client read them"),
    "entries_sent_total": ("counter", "entry frames sent to streaming clients"),
    "uptime_seconds": ("gauge", "seconds since the worker started"),
}


def _numeric_leaves(
    value: Mapping[str, Any], prefix: tuple[str, ...]
) -> list[tuple[tuple[str, ...], float]]:
    out: list[tuple[tuple[str, ...], float]] = []
    for key, v in value.items():
        name = (*prefix, _metric_word(str(key)))
        if isinstance(v, bool):
            out.append((name, int(v)))
        elif isinstance(v, int | float):
            out.append((name, v))
        elif isinstance(v, Mapping):
            out.extend(_numeric_leaves(v, name))
    return out


def _metric_word(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _number(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return repr(value) if isinstance(value, float) else str(value)
