"""Exports of a filter's stored entries: HAR 1.2 (`GET /api/har?q=`) and one merged pcapng of
their connections (`GET /api/pcap?q=`), on a worker; the hub gathers them from its workers
(kshark.hub.export). docs/dashboard.md documents both for users.

What is exported: the entries stored when the request arrives that match the KFL `q`, oldest
first (the store's write order), bounded by `ExportLimits` (a `limit` parameter, or KFL's
`limit(n)`, may ask for fewer). Nothing is held whole: entries are read from the store in batches
and sent as they are converted.

HAR: one JSON document, written so that every entry is on a line of its own (the first after the
opening line, each later one starting with a comma). That is still plain JSON for any reader, and
it lets the hub pass a worker's entries through line by line without parsing the document. When
a limit cut the export short, or retention deleted entries while it ran, `log.comment` (after the
entries) says so. KFL `redact(...)` applies to what is exported, as on the stream.

pcapng rather than classic pcap: a worker may hold connections of several link types (a replay of
captures of different kinds, Ethernet and Linux cooked), which one classic pcap cannot carry; a
pcapng section holds one interface description per link type. Packets come connection by
connection (each in capture order), not merged by time: `reordercap` sorts a file by time. A
query with `redact(...)` is refused: packets hold the very bytes it hides.

The pcap export decides which connections it sends before it answers (one pass over the entries),
so its response head carries `X-Kshark-Connections` (and `X-Kshark-Truncated` when a limit cut
it), and the section header's comment says the same.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import trio

from kshark import __version__
from kshark.api.httpserver import STREAM_CHUNK, Response, error_response, json_response
from kshark.api.wire import CompiledQuery, StreamError, compile_stream_query

if TYPE_CHECKING:
    from pathlib import Path

    from kshark.api.httpserver import Request
    from kshark.store import Store

HAR_CONTENT_TYPE = "application/json"
PCAPNG_CONTENT_TYPE = "application/x-pcapng"
# Response headers that tell a client (and the hub) what a pcap export holds.
CONNECTIONS_HEADER = "X-Kshark-Connections"
TRUNCATED_HEADER = "X-Kshark-Truncated"

# Entries read from the store per batch while scanning (the same bound a stream uses).
_SCAN_BATCH = 64


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """The bounds of one export. A `limit` query parameter may lower `max_entries` (HAR) or
    `max_connections` (pcap), never raise them; `max_bytes` may be lowered the same way.

    max_entries: HAR entries in one export. Past it: the export ends, `log.comment` says so.
    max_har_bytes: bytes of HAR entries (JSON text) in one export. The entry that would pass it
        is not sent; the export ends, `log.comment` says so.
    max_connections: connections (per-connection pcaps) in one pcap export. The first ones in
        write order are exported; `X-Kshark-Truncated` and the section comment say so.
    max_pcap_bytes: bytes of packet data (the connections' pcap files) in one pcap export. A
        connection that would pass it is left out, and so is every later one.
    """

    max_entries: int = 10_000
    max_har_bytes: int = 256 << 20
    max_connections: int = 1_000
    max_pcap_bytes: int = 512 << 20


class ExportError(Exception):
    """A request we refuse before answering: (status, JSON error body)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", {}).get("message", ""))
        self.status = status
        self.body = body

    def response(self) -> Response:
        return json_response(self.body, self.status)


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """The parsed parameters of an export: the KFL text, its compiled form, and the bounds."""

    text: str
    query: CompiledQuery
    limit: int  # entries (HAR) or connections (pcap)
    max_bytes: int
    limit_from_kfl: bool  # `limit` is the query's own limit(n): reaching it cuts nothing


def parse_export_request(
    request: Request,
    *,
    default_limit: int,
    default_bytes: int,
    macros: Mapping[str, str] | None = None,
) -> ExportRequest:
    """`?q=<kfl>[&limit=N][&max_bytes=N]` → ExportRequest; raises ExportError (400): a KFL
    error carries its line and column, as on `/query/validate` and the stream."""
    text = request.query.get("q", "")
    try:
        query = compile_stream_query(text, macros)
    except StreamError as err:
        error: dict[str, Any] = {"type": "kfl", "message": err.message}
        if err.line is not None:
            error["line"] = err.line
            error["column"] = err.column
        raise ExportError(400, {"error": error}) from None
    limit = _bounded_param(request, "limit", default_limit)
    max_bytes = _bounded_param(request, "max_bytes", default_bytes)
    from_kfl = query.limit is not None and query.limit <= limit
    if query.limit is not None:
        limit = min(limit, max(query.limit, 0))
    return ExportRequest(text, query, limit, max_bytes, from_kfl)


def _bounded_param(request: Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
        raise ExportError(400, _http_error(f"{name} must be a whole number"))
    return min(int(raw), default)


def _http_error(message: str) -> dict[str, Any]:
    return {"error": {"type": "http", "message": message}}


# ---- HAR ------------------------------------------------------------------------------------


def har_head() -> bytes:
    """The opening line of a HAR document, up to its entries list."""
    creator = orjson.dumps({"name": "kshark", "version": __version__})
    return b'{"log":{"version":"1.2","creator":' + creator + b',"entries":[\n'


def har_tail(comment: str | None) -> bytes:
    """What closes the document opened by har_head(), with `log.comment` when there is one."""
    if comment:
        return b'],"comment":' + orjson.dumps(comment) + b"}}\n"
    return b"]}}\n"


def har_comment_of_tail(line: bytes) -> str | None:
    """The `log.comment` of a closing line written by har_tail() (the hub reads workers')."""
    text = line.strip()
    if not text.startswith(b"],") or not text.endswith(b"}}"):
        return None
    try:
        value = orjson.loads(b"{" + text[2:-1])
    except orjson.JSONDecodeError:
        return None
    comment = value.get("comment") if isinstance(value, dict) else None
    return comment if isinstance(comment, str) else None


def har_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry (ENTRY.md) as a HAR 1.2 entry.

    The URL is rebuilt from the Host header (else the server's address) and the request target;
    `timings.wait` is the entry's elapsed time (the capture does not split send/wait/receive).
    An entry without a response gets HAR's "no response" form (status 0) and its `error` as the
    comment. `_id`, `_worker` and `_node` are HAR custom fields: the entry's id, to find it again.
    """
    req = _mapping(entry.get("request"))
    resp = _mapping(entry.get("response"))
    dst = _mapping(entry.get("dst"))
    elapsed = entry.get("elapsedTime")
    elapsed_ms = elapsed if isinstance(elapsed, int | float) and elapsed >= 0 else 0
    out: dict[str, Any] = {
        "startedDateTime": _started(entry),
        "time": elapsed_ms,
        "request": _har_request(entry, req, dst),
        "response": _har_response(resp),
        "cache": {},
        "timings": {"send": 0, "wait": elapsed_ms, "receive": 0},
    }
    if isinstance(dst.get("ip"), str) and dst["ip"]:
        out["serverIPAddress"] = dst["ip"]
    worker, stream = entry.get("worker"), entry.get("stream")
    if isinstance(worker, str) and isinstance(stream, str):
        out["connection"] = f"{worker}/{stream}"
    error = entry.get("error")
    if isinstance(error, Mapping) and error:
        out["comment"] = f"{error.get('type', 'error')}: {error.get('msg', '')}".rstrip(": ")
    for key, har_key in (("id", "_id"), ("worker", "_worker")):
        if isinstance(entry.get(key), str):
            out[har_key] = entry[key]
    node = _mapping(entry.get("node"))
    if isinstance(node.get("name"), str):
        out["_node"] = node["name"]
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _started(entry: Mapping[str, Any]) -> str:
    start = entry.get("startTime")
    if isinstance(start, str) and start:
        return start
    ts = entry.get("timestamp")
    ms = int(ts) if isinstance(ts, int | float) else 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _pairs(value: Any) -> list[dict[str, str]]:
    """name → value (or → list of values) as HAR's [{"name", "value"}] list."""
    out: list[dict[str, str]] = []
    if not isinstance(value, Mapping):
        return out
    for name, v in value.items():
        for one in v if isinstance(v, list) else [v]:
            out.append({"name": str(name), "value": "" if one is None else str(one)})
    return out


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def _har_request(
    entry: Mapping[str, Any], req: Mapping[str, Any], dst: Mapping[str, Any]
) -> dict[str, Any]:
    headers = _mapping(req.get("headers"))
    target = req.get("url") or req.get("targetUri") or req.get("path") or "/"
    target = target if isinstance(target, str) else "/"
    if target.startswith(("http://", "https://")):
        url = target  # absolute-form, as sent to a proxy
    else:
        host = _header(headers, "host")
        if not host:
            ip, port = str(dst.get("ip", "")), str(dst.get("port", ""))
            host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        scheme = "https" if entry.get("tls") is True else "http"
        url = f"{scheme}://{host}{target if target.startswith('/') else '/' + target}"
    body_size = req.get("bodySize")
    out: dict[str, Any] = {
        "method": str(req.get("method", "")),
        "url": url,
        "httpVersion": str(req.get("httpVersion", "")),
        "cookies": _pairs(req.get("cookies")),
        "headers": _pairs(headers),
        "queryString": _pairs(req.get("queryString")),
        "headersSize": -1,
        "bodySize": body_size if isinstance(body_size, int) else -1,
    }
    post = req.get("postData")
    if isinstance(post, Mapping):
        data: dict[str, Any] = {
            "mimeType": str(post.get("mimeType", "")),
            "text": str(post.get("text", "")),
        }
        params = post.get("params")
        if isinstance(params, list) and params:
            data["params"] = [
                {"name": str(p.get("name", "")), "value": str(p.get("value", ""))}
                for p in params
                if isinstance(p, Mapping)
            ]
        if post.get("encoding") == "base64":
            data["_encoding"] = "base64"  # HAR's postData has no encoding field: a custom one
        out["postData"] = data
    return out


def _har_response(resp: Mapping[str, Any]) -> dict[str, Any]:
    if not resp:
        return {
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "x-unknown"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
            "comment": "no response was captured",
        }
    content = _mapping(resp.get("content"))
    size = content.get("size")
    size = size if isinstance(size, int) else 0
    har_content: dict[str, Any] = {"size": size, "mimeType": str(content.get("mimeType", ""))}
    text = content.get("text")
    if isinstance(text, str) and text:
        decoded = _utf8_text(text) if content.get("encoding") == "base64" else text
        if decoded is None:
            har_content["text"] = text
            har_content["encoding"] = "base64"
        else:
            har_content["text"] = decoded
    body_size = resp.get("bodySize")
    body_size = body_size if isinstance(body_size, int) else -1
    if 0 <= body_size < size:
        har_content["compression"] = size - body_size
    status = resp.get("status")
    return {
        "status": status if isinstance(status, int) else 0,
        "statusText": str(resp.get("statusText", "")),
        "httpVersion": str(resp.get("httpVersion", "")),
        "cookies": _pairs(resp.get("cookies")),
        "headers": _pairs(resp.get("headers")),
        "content": har_content,
        "redirectURL": str(resp.get("redirectURL", "")),
        "headersSize": -1,
        "bodySize": body_size,
    }


def _utf8_text(b64: str) -> str | None:
    """The body as text when it is UTF-8 without NULs (HAR readers show text as it is), else
    None (kept as base64)."""
    try:
        raw = base64.b64decode(b64, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return None if "\x00" in text else text


async def har_from_store(
    store: Store, req: ExportRequest, keepalive: float = 5.0
) -> AsyncIterator[bytes]:
    """The HAR document of the stored entries matching `req`, in pieces of about STREAM_CHUNK.

    A blank line goes out after `keepalive` seconds without output (a selective filter scanning
    a large store), so a proxy or the hub reading it does not take the silence for a dead peer.
    """
    yield har_head()
    end = store.last_seq
    seq = 0
    sent = 0
    size = 0
    missed_total = 0
    cut: str | None = None
    buf = bytearray()
    last_out = trio.current_time()
    redact = req.query.redact if req.query.has_redactions else None
    match = req.query.match
    while seq < end and cut is None and sent < req.limit:
        items, missed = store.read_after(seq, min(_SCAN_BATCH, end - seq))
        if not items and not missed:
            break
        seq += len(items) + missed
        missed_total += missed
        for s, data in items:
            if s > end:
                break
            entry = orjson.loads(data)
            if not match(entry):
                continue
            if redact is not None:
                entry = redact(entry)
            line = orjson.dumps(har_entry(entry))
            if size + len(line) > req.max_bytes:
                cut = f"stopped at the limit of {req.max_bytes} bytes of entries"
                break
            buf += b",%b\n" % line if sent else b"%b\n" % line
            size += len(line)
            sent += 1
            if sent >= req.limit:
                if not req.limit_from_kfl and s < end:
                    cut = f"stopped at the limit of {req.limit} entries (more may match)"
                break
        if len(buf) >= STREAM_CHUNK:
            yield bytes(buf)
            buf.clear()
            last_out = trio.current_time()
        elif trio.current_time() - last_out > keepalive:
            yield b"\n"  # whitespace between JSON tokens: a keep-alive every reader skips
            last_out = trio.current_time()
        await trio.lowlevel.checkpoint()
    notes = [cut] if cut else []
    if missed_total:
        notes.append(f"{missed_total} entries were deleted by retention before they were read")
    yield bytes(buf) + har_tail("; ".join(notes) or None)


def har_response(body: AsyncIterator[bytes]) -> Response:
    return Response(
        200,
        content_type=HAR_CONTENT_TYPE,
        headers=[
            ("Content-Disposition", 'attachment; filename="kshark.har"'),
            ("Cache-Control", "no-store"),
        ],
        stream=body,
    )


# ---- pcapng -----------------------------------------------------------------------------------

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D
_OPT_COMMENT = 1
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_IF_DESCRIPTION = 3
_OPT_IF_TSRESOL = 9
# Snap length declared in interface descriptions: the store's (docs/store.md).
PCAPNG_SNAPLEN = 262144
# Largest packet record accepted from a per-connection pcap; past it the rest of that file is
# skipped (a damaged file), never read into memory.
_MAX_RECORD = PCAPNG_SNAPLEN + 65536


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * _pad4(len(value))


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def pcapng_section_header(comment: str | None = None) -> bytes:
    """A section header block (little-endian, version 1.0, length unknown)."""
    options = b""
    if comment:
        options += _option(_OPT_COMMENT, comment.encode())
    options += _option(_OPT_SHB_USERAPPL, f"kshark {__version__}".encode())
    options += struct.pack("<HH", 0, 0)
    body = struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + options
    return _block(PCAPNG_SHB, body)


def pcapng_interface(linktype: int, name: str, description: str | None = None) -> bytes:
    """An interface description block with nanosecond timestamps."""
    options = _option(_OPT_IF_NAME, name.encode())
    if description:
        options += _option(_OPT_IF_DESCRIPTION, description.encode())
    options += _option(_OPT_IF_TSRESOL, b"\x09") + struct.pack("<HH", 0, 0)
    return _block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, PCAPNG_SNAPLEN) + options)


def pcapng_packet(interface: int, ts_ns: int, data: bytes, orig_len: int) -> bytes:
    """An enhanced packet block."""
    body = (
        struct.pack(
            "<IIIII", interface, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, len(data), orig_len
        )
        + data
        + b"\x00" * _pad4(len(data))
    )
    return _block(PCAPNG_EPB, body)


_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}


class PcapToPcapng:
    """Classic pcap bytes (one connection's file) in → pcapng enhanced packet blocks out.

    Fed in pieces; interface numbers per link type are kept across files (`interfaces`), and an
    interface description is emitted the first time a link type is seen."""

    def __init__(self, interface_name: str) -> None:
        self.interface_name = interface_name
        self.interfaces: dict[int, int] = {}  # link type → interface number
        self.packets = 0
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._header: tuple[str, int, int] | None = None  # byte order, ts scale, interface
        self._broken = False

    def start_file(self) -> None:
        self._reset()

    def feed(self, data: bytes) -> bytes:
        if self._broken:
            return b""
        buf = self._buf
        buf += data
        out = bytearray()
        off = 0
        if self._header is None:
            if len(buf) < 24:
                return b""
            magic = bytes(buf[:4])
            if magic not in _PCAP_MAGICS:
                self._broken = True
                return b""
            order, scale = _PCAP_MAGICS[magic]
            linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0x0FFFFFFF
            interface = self.interfaces.get(linktype)
            if interface is None:
                interface = self.interfaces[linktype] = len(self.interfaces)
                out += pcapng_interface(linktype, self.interface_name)
            self._header = (order, scale, interface)
            off = 24
        order, scale, interface = self._header
        record = struct.Struct(order + "IIII")
        while len(buf) - off >= 16:
            sec, frac, incl, orig = record.unpack_from(buf, off)
            if incl > _MAX_RECORD:
                self._broken = True
                break
            if len(buf) - off - 16 < incl:
                break
            data_start = off + 16
            out += pcapng_packet(
                interface,
                sec * 1_000_000_000 + frac * scale,
                bytes(buf[data_start : data_start + incl]),
                orig,
            )
            self.packets += 1
            off = data_start + incl
        del buf[:off]
        return bytes(out)


@dataclass(slots=True)
class PcapPlan:
    """The connections a pcap export sends, decided before answering."""

    streams: list[tuple[int, Path, int]]  # (stream number, pcap path, bytes to send)
    truncated: str | None
    missed: int  # entries retention deleted during the scan

    @property
    def comment(self) -> str:
        text = f"{len(self.streams)} connections"
        if self.truncated:
            text += f"; {self.truncated}"
        return text


async def plan_pcap_export(store: Store, req: ExportRequest) -> PcapPlan:
    """One pass over the stored entries: the connections of those matching, oldest first,
    within the limits (ExportLimits)."""
    end = store.last_seq
    seq = 0
    seen: set[int] = set()
    streams: list[tuple[int, Path, int]] = []
    total = 0
    missed_total = 0
    truncated: str | None = None
    match = req.query.match
    while seq < end and truncated is None:
        items, missed = store.read_after(seq, min(_SCAN_BATCH, end - seq))
        if not items and not missed:
            break
        seq += len(items) + missed
        missed_total += missed
        for s, data in items:
            if s > end:
                break
            entry = orjson.loads(data)
            if not match(entry):
                continue
            number = _stream_number(entry.get("stream"))
            if number is None or number in seen:
                continue
            seen.add(number)
            if len(streams) >= req.limit:
                if not req.limit_from_kfl:
                    truncated = f"more connections matched: stopped at the limit of {req.limit}"
                break
            path = store.pcap_path(number)
            if path is None:
                continue  # deleted by retention meanwhile
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if total + size > req.max_bytes:
                truncated = f"stopped at the limit of {req.max_bytes} bytes of packets"
                break
            total += size
            streams.append((number, path, size))
        await trio.lowlevel.checkpoint()
    return PcapPlan(streams, truncated, missed_total)


def _stream_number(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    digits = value.removesuffix(".pcap")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 12:
        return None
    return int(digits)


async def pcapng_from_plan(plan: PcapPlan, interface_name: str) -> AsyncIterator[bytes]:
    """The pcapng section of `plan`'s connections: each connection's pcap as it was when the
    plan was made (its size then), packets converted on the way."""
    yield pcapng_section_header(f"kshark export: {plan.comment}")
    convert = PcapToPcapng(interface_name)
    for _, path, size in plan.streams:
        try:
            f = await trio.open_file(path, "rb")
        except FileNotFoundError:
            continue  # retention deleted it after the plan: left out
        convert.start_file()
        try:
            left = size
            while left > 0:
                chunk = await f.read(min(STREAM_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                blocks = convert.feed(chunk)
                if blocks:
                    yield blocks
        finally:
            with trio.CancelScope(shield=True):
                await f.aclose()


def pcap_response(body: AsyncIterator[bytes], plan: PcapPlan | None = None) -> Response:
    headers = [
        ("Content-Disposition", 'attachment; filename="kshark.pcapng"'),
        ("Cache-Control", "no-store"),
    ]
    if plan is not None:
        headers.append((CONNECTIONS_HEADER, str(len(plan.streams))))
        if plan.truncated:
            headers.append((TRUNCATED_HEADER, plan.truncated))
    return Response(200, content_type=PCAPNG_CONTENT_TYPE, headers=headers, stream=body)


# ---- the worker's routes -------------------------------------------------------------------------


async def worker_export(
    store: Store,
    request: Request,
    route: str,
    *,
    interface_name: str,
    macros: Mapping[str, str] | None = None,
    limits: ExportLimits | None = None,
) -> Response:
    """`/har` or `/pcap` (without the `/api` prefix) of a worker's store."""
    limits = limits or ExportLimits()
    try:
        if route == "/har":
            req = parse_export_request(
                request,
                default_limit=limits.max_entries,
                default_bytes=limits.max_har_bytes,
                macros=macros,
            )
            return har_response(har_from_store(store, req))
        req = parse_export_request(
            request,
            default_limit=limits.max_connections,
            default_bytes=limits.max_pcap_bytes,
            macros=macros,
        )
        if req.query.has_redactions:
            return error_response(
                400, "a query with redact() cannot export packets: they hold what it hides"
            )
        plan = await plan_pcap_export(store, req)
        return pcap_response(pcapng_from_plan(plan, interface_name), plan)
    except ExportError as err:
        return err.response()
