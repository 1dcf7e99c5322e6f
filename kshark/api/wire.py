"""What travels on a streaming websocket, shared by the worker and the hub.

Client → server, once: the first frame. Either a raw KFL text (what `wscat -x 'response.status >
300'` sends, and what Kubeshark's hub sends) or a JSON object with a "query" key:
`{"query": "...", "fields": [...], "history": bool, "since": <cursor>, "ordered": bool}`. Anything
that is not a JSON object with "query" is KFL text, so a person typing a filter never trips on
the JSON form. Later client frames are ignored (they only tell us the client is there).

Server → client: one entry per text frame (compact, sorted keys), plus, before closing with 1008,
one error frame `{"error": {"type": "kfl"|"request"|"cursor", "message": ..., ...}}`, and, for
JSON-frame clients only, `{"gap": {"missed": n, "reason": "retention"}}` when entries were lost
before the client could read them (raw-text clients expect nothing but entries).

This module holds the parsing, the frames and the per-stream output shaping (redact → summary →
projection); the I/O helpers at the bottom are the only part that touches a websocket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import trio
from trio_websocket import ConnectionClosed

from kshark.api.kfl_thread import off_loop
from kshark.kfl import KflError, compile_query

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

CLOSE_NORMAL = 1000  # the stream ended as asked (limit reached)
CLOSE_POLICY = 1008  # the first frame cannot be served (bad KFL, bad request, unknown cursor)
CLOSE_TRY_AGAIN = 1013  # the server is not ready yet (starting up)

# Bounds on a JSON first frame. Past either: a "request" error frame, close 1008.
MAX_FIELDS = 256  # paths in "fields"
MAX_FIELD_PATH = 1024  # characters in one path

_KNOWN_KEYS = ("query", "fields", "history", "since", "ordered")

Cursor = str | list[Any] | dict[str, Any]


class CompiledQuery(Protocol):
    """What kshark.kfl.compile_query returns (see docs/internals.md, kshark/kfl)."""

    @property
    def limit(self) -> int | None: ...

    @property
    def has_redactions(self) -> bool: ...

    def match(self, entry: Mapping[str, Any]) -> bool: ...

    def redact(self, entry: dict[str, Any]) -> dict[str, Any]: ...


class StreamError(Exception):
    """A first frame we will not stream for; `frame()` is what the client is told."""

    def __init__(
        self, type_: str, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.line = line
        self.column = column

    def frame(self) -> str:
        return error_frame(self.type, self.message, self.line, self.column)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """The parsed first frame. `json_frame` says which form the client used (gap frames go only
    to JSON-frame clients). `since` is an entry id on a worker; the hub may accept other cursor
    shapes (a list or object of ids), so any of those parses and the server decides."""

    query: str
    fields: tuple[str, ...] | None = None
    history: bool = True
    since: Cursor | None = None
    ordered: bool = False
    json_frame: bool = False


def parse_first_frame(message: str | bytes) -> StreamRequest:
    """The first client frame → StreamRequest. Raises StreamError("request", ...) for a JSON
    frame with a bad field or a binary frame that is not UTF-8."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamError("request", "the first frame is not UTF-8 text") from None
    if not message.lstrip().startswith("{"):
        return StreamRequest(query=message)
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return StreamRequest(query=message)
    if not isinstance(obj, dict) or "query" not in obj:
        return StreamRequest(query=message)

    unknown = sorted(set(obj) - set(_KNOWN_KEYS))
    if unknown:
        raise StreamError(
            "request", f"unknown key {unknown[0]!r} (known: {', '.join(_KNOWN_KEYS)})"
        )
    query = obj["query"]
    if not isinstance(query, str):
        raise StreamError("request", '"query" must be a string of KFL')
    history = obj.get("history", True)
    ordered = obj.get("ordered", False)
    for key, value in (("history", history), ("ordered", ordered)):
        if not isinstance(value, bool):
            raise StreamError("request", f'"{key}" must be true or false')
    since = obj.get("since")
    if since is not None and not isinstance(since, str | list | dict):
        raise StreamError("request", '"since" must be a cursor: an entry "id"')
    return StreamRequest(
        query=query,
        fields=_parse_fields(obj.get("fields")),
        history=history,
        since=since,
        ordered=ordered,
        json_frame=True,
    )


def _parse_fields(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise StreamError("request", '"fields" must be a non-empty list of dotted paths')
    if len(value) > MAX_FIELDS:
        raise StreamError("request", f'"fields" lists more than {MAX_FIELDS} paths')
    for path in value:
        if not isinstance(path, str) or not path or len(path) > MAX_FIELD_PATH:
            raise StreamError("request", f'"fields": {path!r} is not a dotted path')
        if "" in path.split("."):
            raise StreamError("request", f'"fields": {path!r} has an empty segment')
    return tuple(value)


def compile_stream_query(text: str, macros: Mapping[str, str] | None = None) -> CompiledQuery:
    """KFL text → compiled query; a KflError becomes StreamError("kfl", ...) with its position."""
    try:
        query: CompiledQuery = compile_query(text, macros=dict(macros) if macros else None)
    except KflError as err:
        raise StreamError("kfl", str(err), err.line, err.column) from None
    return query


def error_frame(
    type_: str, message: str, line: int | None = None, column: int | None = None
) -> str:
    """`{"error": {"type", "message"[, "line", "column"]}}`, the frame sent before close 1008."""
    err: dict[str, Any] = {"type": type_, "message": message}
    if line is not None:
        err["line"] = line
    if column is not None:
        err["column"] = column
    return orjson.dumps({"error": err}, option=orjson.OPT_SORT_KEYS).decode()


def gap_frame(missed: int, reason: str = "retention") -> str:
    return orjson.dumps({"gap": {"missed": missed, "reason": reason}}).decode()


class Projection:
    """Keep only the given dotted paths of an entry, nested as in the entry.

    `["id", "request.path", "response.status"]` → `{"id": ..., "request": {"path": ...},
    "response": {"status": ...}}`. A path that is missing (or runs through a non-object) is left
    out, and so is a parent left empty by that. A path that is a prefix of another wins
    (`"request"` with `"request.path"` keeps the whole request). Keys match exactly.
    """

    __slots__ = ("_tree",)

    def __init__(self, fields: tuple[str, ...]) -> None:
        # A tree of dicts; None marks "take the whole value here".
        tree: dict[str, Any] = {}
        for path in sorted(fields, key=lambda p: p.count(".")):
            node = tree
            parts = path.split(".")
            for i, part in enumerate(parts):
                if i == len(parts) - 1:
                    node[part] = None
                    break
                child = node.get(part, {})
                if child is None:
                    break  # a shorter path already takes this whole value
                node = node.setdefault(part, child)
        self._tree = tree

    def __call__(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        return _project(entry, self._tree)


def _project(value: Mapping[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        if key not in value:
            continue
        v = value[key]
        if sub is None:
            out[key] = v
        elif isinstance(v, dict):
            inner = _project(v, sub)
            if inner:
                out[key] = inner
    return out


class Shaper:
    """Turns one matching entry into the text frame this stream sends.

    Order: redact (KFL `redact(...)` paths are entry paths) → summary form (for /api/ws) →
    projection (`fields` paths are paths of what is sent). With none of the three, `passthrough`
    is True and the caller may send the stored JSON text as it is, with no decode or re-encode.
    """

    __slots__ = ("_project", "_redact", "_summarize", "passthrough")

    def __init__(
        self,
        query: CompiledQuery,
        fields: tuple[str, ...] | None,
        summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._redact = query.redact if query.has_redactions else None
        self._summarize = summarize
        self._project = Projection(fields) if fields else None
        self.passthrough = self._redact is None and summarize is None and self._project is None

    def render(self, entry: dict[str, Any]) -> str:
        if self._redact is not None:
            entry = self._redact(entry)
        if self._summarize is not None:
            entry = self._summarize(entry)
        if self._project is not None:
            entry = self._project(entry)
        return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode()


async def refuse(ws: WebSocketConnection, err: StreamError, code: int = CLOSE_POLICY) -> None:
    """Send the error frame, then close with `code` (1008 unless told otherwise)."""
    try:
        await ws.send_message(err.frame())
    except ConnectionClosed:
        return
    await ws.aclose(code, err.type)


async def open_stream(
    ws: WebSocketConnection,
    *,
    macros: Mapping[str, str] | None = None,
    first_frame_timeout: float = 120.0,
) -> tuple[StreamRequest, CompiledQuery] | None:
    """Wait for the first frame, parse it and compile its KFL.

    On any refusal (no frame in time, a bad JSON frame, bad KFL) the client has been sent the
    error frame and the connection closed with 1008, and None is returned. If the client closes
    first, None as well.
    """
    message: str | bytes | None = None
    with trio.move_on_after(first_frame_timeout):
        try:
            message = await ws.get_message()
        except ConnectionClosed:
            return None
    if message is None:
        await refuse(ws, StreamError("request", f"no query within {first_frame_timeout:g} s"))
        return None
    try:
        request = parse_first_frame(message)
        # In a thread: a 64 KiB filter takes a while to compile (kshark.api.kfl_thread).
        query = await off_loop(compile_stream_query, request.query, macros)
    except StreamError as err:
        await refuse(ws, err)
        return None
    return request, query
