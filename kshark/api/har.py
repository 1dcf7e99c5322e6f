"""The HAR 1.2 export (`GET /api/har?q=`): entries as HAR entries, in one JSON document that
has every entry on a line of its own (the first after the opening line, each later one starting
with a comma). That is still plain JSON for any reader, and it lets the hub pass a worker's
entries through line by line without parsing the document. When a limit cut the export short,
or retention deleted entries while it ran, `log.comment` (after the entries) says so. KFL
`redact(...)` applies to what is exported, as on the stream."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import trio

from kshark import __version__
from kshark.api.export_query import stored_batches
from kshark.api.httpserver import STREAM_CHUNK, Response

if TYPE_CHECKING:
    from kshark.api.export_query import ExportRequest
    from kshark.store import Store

HAR_CONTENT_TYPE = "application/json"


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
    sent = 0
    size = 0
    missed_total = 0
    cut: str | None = None
    buf = bytearray()
    last_out = trio.current_time()
    redact = req.query.redact if req.query.has_redactions else None
    for matches, missed in stored_batches(store, req, end):
        if cut is not None or sent >= req.limit:
            break
        missed_total += missed
        for s, entry in matches:
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
