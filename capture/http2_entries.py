"""Http2Exchange → the entry dict of ENTRY.md, for HTTP/2 and gRPC.

An HTTP/2 stream's entry has the HTTP/1 shape (capture/entries.py builds it from the exchange's
two `Message`s: headers map, cookies, queryString, postData, content, sizes, times), then:

* `protocol`: Kubeshark's HTTP/2 object (abbr "HTTP/2", macro `http2`), or its gRPC object (abbr
  "gRPC", macro `grpc`) when the request or response Content-Type is application/grpc[+…] or the
  response carries grpc-status (Kubeshark's rule). Values from kubeshark/base (docs/entries.md).
* Headers: pseudo-headers are ordinary keys (`:authority`, `:path`, `:status`, as Kubeshark shows
  them); trailers are merged into `headers` after the header fields, as HTTP/1 chunked trailers.
  `response.statusText` is the standard phrase of `:status` (HTTP/2 has no reason phrase).
* `request.streamId` / `response.streamId`: the HTTP/2 stream id.
* gRPC: `response.status` is the call's status code, not the HTTP one (which stays in
  `response.headers[":status"]`): grpc-status from the trailers (or a Trailers-Only response);
  without it, the HTTP status mapped as gRPC clients do (404 → 12 UNIMPLEMENTED, …); a 200
  without grpc-status (trailers not captured) is 2 UNKNOWN, as a client would report it, so
  `grpc and response.status != 0` finds every call that did not end OK. `statusText` is the
  code's name ("OK", "NOT_FOUND", …). `request.grpc` / `response.grpc` hold the service and
  method, grpc-encoding, the message count (every message of the call, however long the
  stream; `messageCountExact` false when capture gaps may have hidden some) and the first
  `GRPC_MESSAGES_SHOWN` messages: size, compressed flag, and the message
  decoded (protobuf raw fields, or JSON with a ProtoDecoder), from the captured body bytes.
"""

from __future__ import annotations

from binascii import b2a_base64
from typing import TYPE_CHECKING, Any

from capture.content import decode_body
from capture.dissect import EntryMaker
from capture.entries import EntryBuilder
from capture.grpc import (
    GRPC_STATUS_NAMES,
    call_status,
    grpc_message_text,
    is_grpc_content_type,
    service_method,
    split_messages,
)
from capture.http1 import Exchange
from capture.protobuf import raw_fields

if TYPE_CHECKING:
    from capture.entries import ConnectionEnds, Identity
    from capture.http1 import Message
    from capture.http2_streams import Http2Exchange
    from capture.protobuf import ProtoDecoder

__all__ = ["GRPC_MESSAGES_SHOWN", "Http2EntryBuilder", "protocol_object"]

GRPC_MESSAGES_SHOWN = 8  # messages per direction decoded into the entry (the count is of all)
GRPC_MESSAGE_SHOWN_BYTES = 4096  # of a message that cannot be decoded, the bytes shown (base64)


def protocol_object(grpc: bool, layer3: str) -> dict[str, Any]:
    """Kubeshark's `protocol` for HTTP/2 or gRPC (kubeshark/base pkg/extensions/http)."""
    if grpc:
        abbr, macro = "gRPC", "grpc"
        long_name = "Hypertext Transfer Protocol Version 2 (HTTP/2) [ gRPC over HTTP/2 ]"
        link = "https://grpc.github.io/grpc/core/md_doc__p_r_o_t_o_c_o_l-_h_t_t_p2.html"
        ports = ["80", "443", "8080", "50051"]
    else:
        abbr, macro = "HTTP/2", "http2"
        long_name = "Hypertext Transfer Protocol Version 2 (HTTP/2)"
        link = "https://datatracker.ietf.org/doc/html/rfc7540"
        ports = ["80", "443", "8080"]
    return {
        "abbr": abbr,
        "backgroundColor": "#244c5a",
        "fontSize": 11,
        "foregroundColor": "#ffffff",
        "layer3": layer3,
        "layer4": "tcp",
        "longName": long_name,
        "macro": macro,
        "name": "http",
        "ports": ports,
        "priority": 0,
        "referenceLink": link,
        "version": "2.0",
    }


# Built once, shared by every entry of that variant (read-only, as capture/entries.py's).
_PROTOCOLS = {
    (grpc, v6): protocol_object(grpc, "ipv6" if v6 else "ip")
    for grpc in (False, True)
    for v6 in (False, True)
}


def _field(msg: Message | None, name: str) -> str | None:
    """The last value of a header (or trailer) field, by its lower-case HTTP/2 name."""
    if msg is None:
        return None
    value = None
    for n, v in msg.headers:
        if n == name or n.lower() == name:
            value = v
    return value


def _is_grpc(req: Message | None, resp: Message | None) -> bool:
    for msg in (req, resp):
        ctype = _field(msg, "content-type")
        if ctype is not None and is_grpc_content_type(ctype):
            return True
    return _field(resp, "grpc-status") is not None


class Http2EntryBuilder(EntryMaker):
    """Builds the entries of one HTTP/2 connection (its EntryMaker, capture/dissect.py)."""

    __slots__ = ("_builder", "_max_decoded", "_protos", "_v6")

    def __init__(
        self,
        conn: ConnectionEnds,
        identity: Identity,
        stream: int,
        max_decoded: int,
        client_side: int = 0,
        protos: ProtoDecoder | None = None,
    ) -> None:
        self._builder = EntryBuilder(conn, client_side, identity, stream, max_decoded)
        self._max_decoded = max_decoded
        self._protos = protos
        self._v6 = conn.family != 4

    def build(self, ex: Http2Exchange, index: int) -> dict[str, Any]:
        """The entry of the exchange numbered `index` on this connection."""
        req = ex.request
        resp = ex.response
        entry = self._builder.build(Exchange(req, resp, ex.error), index)
        grpc = _is_grpc(req, resp)
        entry["protocol"] = _PROTOCOLS[grpc, self._v6]
        request = entry["request"]
        response = entry["response"]
        if req is not None:
            request["streamId"] = ex.stream_id
        if resp is not None:
            response["streamId"] = ex.stream_id
        if grpc:
            self._grpc(ex, request, response)
        return entry

    def _grpc(self, ex: Http2Exchange, request: dict[str, Any], response: dict[str, Any]) -> None:
        req = ex.request
        resp = ex.response
        path = (req.target or "") if req is not None else ""
        service, method = service_method(path.partition("?")[0])
        if req is not None:
            info: dict[str, Any] = {"service": service, "method": method}
            info.update(
                self._messages(
                    req, ex.request_messages, ex.request_messages_exact, service, method, True
                )
            )
            request["grpc"] = info
        if resp is not None:
            grpc_status = _field(resp, "grpc-status")
            code, source = call_status(resp.status, grpc_status)
            name = GRPC_STATUS_NAMES.get(code, f"CODE_{code}")
            message = _field(resp, "grpc-message")
            info = {
                "status": code,
                "statusName": name,
                "statusSource": source,
                "message": grpc_message_text(message) if message is not None else "",
            }
            info.update(
                self._messages(
                    resp, ex.response_messages, ex.response_messages_exact, service, method, False
                )
            )
            response["grpc"] = info
            response["status"] = code
            response["statusText"] = name

    def _messages(
        self, msg: Message, count: int, exact: bool, service: str, method: str, is_request: bool
    ) -> dict[str, Any]:
        encoding = (_field(msg, "grpc-encoding") or "identity").strip().lower()
        raw, _ = split_messages(msg.body, GRPC_MESSAGES_SHOWN)
        shown: list[dict[str, Any]] = []
        for m in raw:
            item: dict[str, Any] = {"compressed": m.compressed, "size": m.length}
            data = m.data
            problem = None
            if len(data) < m.length:
                problem = f"message cut: {len(data)} of {m.length} bytes captured"
            if m.compressed:
                if encoding == "identity":
                    problem = "compressed flag set but no grpc-encoding"
                else:
                    data, why = decode_body(data, encoding, self._max_decoded)
                    if why is not None:
                        problem = f"{encoding}: {why}"
            if problem is None or (not m.compressed and data):
                decoded: dict[str, Any] | None = None
                if self._protos is not None and problem is None:
                    decoded, why = self._protos.decode(service, method, is_request, data)
                    if decoded is not None:
                        item["json"] = decoded
                    else:
                        item["decodeError"] = why
                if decoded is None:
                    fields = raw_fields(data)
                    if fields is not None:
                        item["fields"] = fields
                    elif problem is None:
                        problem = "not a protobuf message"
            if problem is not None:
                item["error"] = problem
                if "fields" not in item and "json" not in item:
                    shown_bytes = m.data[:GRPC_MESSAGE_SHOWN_BYTES]
                    item["data"] = b2a_base64(shown_bytes, newline=False).decode("ascii")
            shown.append(item)
        return {
            "encoding": encoding,
            "messageCount": count if count >= 0 else len(raw),
            "messageCountExact": exact,
            "messages": shown,
        }
