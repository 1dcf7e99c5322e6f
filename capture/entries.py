"""Exchange → the entry dict of ../shared/ENTRY.md (Kubeshark's v52 shape), and its summary form.

`build_entry` produces every field of the contract, with the same key names and value types, so
that existing Kubeshark clients read our entries unchanged. The pieces every protocol's entries
share (addresses, times, header names, cookies, query strings) are capture/entry_fields.py's,
the summary form capture/entry_summary.py's. Choices the contract leaves open:

* `request.headers` / `response.headers`: names in Go's canonical form
  (`textproto.CanonicalMIMEHeaderKey`: first letter and letters after "-" upper-case, the rest
  lower-case; a name with a byte outside the token set is left as is), repeated fields joined with
  ", " in wire order. Cookies are parsed from each Cookie / Set-Cookie field line, not from the
  joined value (a Set-Cookie value may itself contain ", ").
* `queryString`: parsed like Go's `url.ParseQuery`: pairs split on "&", "+" is a space, %XX
  decoded (as UTF-8, invalid sequences replaced), a pair with ";" or a bad %-escape is skipped;
  one value → a string, a repeated name → a list in order.
* `path`: the target up to "?" (an absolute-form target "http://host/p" gives "/p").
* `postData`: present when the request has a body (body_size > 0); the body after removing its
  Content-Encoding; `text` is that body as UTF-8 text, or base64 with `"encoding": "base64"` when it
  is not valid UTF-8; `params` lists the pairs of an application/x-www-form-urlencoded body (in
  order) and is [] otherwise.
* `response.content.text`: base64 of the body after de-chunking and Content-Encoding removal,
  left out when that is empty. A body that cannot be decoded (corrupt, unsupported coding,
  decoded size over max_decoded) is given raw and the entry gets
  `{"type": "dissection", "msg": "... content not decoded: ..."}` unless it already has an
  error. A body cut short on purpose (max_body) or by a gap decodes as far as it goes, silently:
  the gap itself is already the entry's error.
* Bodies are bounded by `max_keep` (the worker's `--max-body`) after decoding too: `text` (and
  `postData.text`) hold at most that many decoded bytes; `content.size` is the decoded length
  of the whole content when it is known (a body received whole: all it decodes to, counted
  without being kept; an uncoded body: its length as sent, `bodySize`), else what the received
  part decoded to. Whenever `text` holds less than the whole content (cut by max_keep after
  decoding, by max_body or a capture gap on the wire, or by the pending-bodies budget of
  capture/http1.py), the object gets `"_truncated": true`: HAR 1.2's rule for fields of
  one's own (a leading underscore), so HAR and Kubeshark readers ignore it.
* `timestamp` / `startTime`: the request's first byte (the response's when there is no request),
  ms truncated / RFC 3339 with all 9 fractional digits; `elapsedTime`: response first byte minus
  request first byte, rounded to the nearest ms, 0 when negative or when a half is missing.
* `protocol`: the HTTP/1.0 variant when the request (else the response) says "HTTP/1.0", else
  HTTP/1.1 (odd versions such as "HTTP/1." included).

Speed: an entry is built for every exchange, so `EntryBuilder` works out once per connection
what its entries share (src/dst, the stream's names, `outgoing`, node, protocol) and starts each
entry as a copy of a per-connection template (copying a dict and setting 14 keys costs half of
building the 22-key literal). The pipeline keeps one builder per HTTP connection; `build_entry`
is the same thing for a single exchange.

Sharing: every container of an entry is its own (src and dst are copied, then the resolver's
names merged in; header dicts, lists and the request/response objects are built per entry),
except those that are the same for many entries and are only ever read: `protocol` (one object
per HTTP version and IP version, shared by all entries), `node` (shared by the entries of a
connection) and the `pod`/`service`/`endpointSlice` objects a resolver hands out (shared by
every entry naming that object). The store only serialises entries and KFL redaction works on
a deep copy, so nothing writes into them; a consumer that wants to change them must copy them
first.
"""

from __future__ import annotations

from binascii import b2a_base64
from dataclasses import dataclass
from typing import Any, Protocol

from capture.content import decode_content
from capture.dissect import EntryMaker
from capture.entry_fields import (
    _endpoint,
    _header_map,
    _ip_text,
    _origin_path,
    _pairs,
    _query_map,
    _request_cookies,
    _response_cookies,
    rfc3339_ns,
)
from capture.entry_summary import summarize
from capture.http1_messages import Exchange

__all__ = ["ConnectionEnds", "EntryBuilder", "Identity", "Resolver", "build_entry", "summarize"]


class Resolver(Protocol):
    """Names for addresses (kshark.k8s.index.ResolutionIndex): what `ip` was at `ts_ns` — a
    dict of `name`, `namespace`, `pod`, `service`, `endpointSlice` merged into src/dst — or
    None. `port` 0 asks by IP alone (the client side). A pure lookup, called twice per entry;
    the dicts it returns are shared by the entries and only read."""

    def resolve(self, ip: str, port: int, ts_ns: int) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who writes the entries: the worker's address, its node, and the node's own addresses;
    and, when the worker resolves names, what resolves them."""

    worker: str  # "host:port" the worker's API is reachable at
    node_ip: str
    node_name: str
    local_ips: frozenset[str] = frozenset()  # addresses of the capturing node (for `outgoing`)
    resolver: Resolver | None = None


class ConnectionEnds(Protocol):
    """What build_entry reads of capture.reassembly.Opened (any object with these fields)."""

    @property
    def family(self) -> int: ...
    @property
    def client_ip(self) -> bytes: ...
    @property
    def client_port(self) -> int: ...
    @property
    def server_ip(self) -> bytes: ...
    @property
    def server_port(self) -> int: ...


_PORTS = ("80", "443", "8080")


def _protocol(version: str, layer3: str) -> dict[str, Any]:
    if version == "1.0":
        long_name = "Hypertext Transfer Protocol -- HTTP/1.0"
        link = "https://datatracker.ietf.org/doc/html/rfc1945"
    else:
        long_name = "Hypertext Transfer Protocol -- HTTP/1.1"
        link = "https://datatracker.ietf.org/doc/html/rfc2616"
    return {
        "abbr": "HTTP",
        "backgroundColor": "#416CDE",
        "fontSize": 12,
        "foregroundColor": "#ffffff",
        "layer3": layer3,
        "layer4": "tcp",
        "longName": long_name,
        "macro": "http",
        "name": "http",
        "ports": list(_PORTS),
        "priority": 0,
        "referenceLink": link,
        "version": version,
    }


# The four `protocol` objects, built once and shared by every entry that has that variant (see
# "Sharing" in the module doc): (HTTP/1.0?, IPv6?) → object.
_PROTOCOLS = {
    (v10, v6): _protocol("1.0" if v10 else "1.1", "ipv6" if v6 else "ip")
    for v10 in (False, True)
    for v6 in (False, True)
}


# --- bodies ----------------------------------------------------------------------------------


def _decoded(
    body: bytes, truncated: bool, coding: str | None, max_decoded: int, max_keep: int
) -> tuple[bytes, int, str | None]:
    """The body with its Content-Encoding removed (at most max_keep bytes of it), its decoded
    size, and why it could not be decoded."""
    if not coding or not body:
        return (body[:max_keep] if len(body) > max_keep else body), len(body), None
    decoded, size, problem = decode_content(body, coding, max_decoded, max_keep)
    if problem is not None and truncated and " stream truncated" in problem:
        problem = None  # cut by max_body or a gap: decoding as far as it goes is all we can do
    return decoded, size, problem


def _post_data(
    body: bytes, truncated: bool, headers: dict[str, str], max_decoded: int, max_keep: int
) -> tuple[Any, str | None]:
    coding = headers.get("Content-Encoding")
    body, size, problem = _decoded(body, truncated, coding, max_decoded, max_keep)
    mime = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    post: dict[str, Any] = {"mimeType": mime, "params": []}
    if truncated or len(body) < size:
        post["_truncated"] = True
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        post["text"] = b2a_base64(body, newline=False).decode("ascii")
        post["encoding"] = "base64"
    else:
        post["text"] = text
        if mime == "application/x-www-form-urlencoded":
            post["params"] = [{"name": k, "value": v} for k, v in _pairs(text)]
    return post, problem


# --- the entry -------------------------------------------------------------------------------


class EntryBuilder(EntryMaker):
    """Builds the entries of one HTTP/1 connection (HttpConnection.entry_maker makes it).

    Everything the entries of a connection share is worked out once, here: the src/dst objects
    (copied into each entry), the stream's file and id prefixes, `outgoing`, the node object and
    which `protocol` objects apply. The pipeline keeps one per HTTP connection; an entry costs
    only what differs between exchanges.
    """

    __slots__ = (
        "_dst",
        "_dst_port",
        "_file_prefix",
        "_id_prefix",
        "_max_decoded",
        "_max_keep",
        "_protocol_10",
        "_protocol_11",
        "_resolver",
        "_src",
        "_template",
    )

    def __init__(
        self,
        conn: ConnectionEnds,
        client_side: int,
        identity: Identity,
        stream: int,
        max_decoded: int,
        max_keep: int | None = None,
    ) -> None:
        client = _endpoint(_ip_text(conn.client_ip), conn.client_port)
        server = _endpoint(_ip_text(conn.server_ip), conn.server_port)
        # conn's client/server are the reassembler's guess; client_side == 1 (learnt from
        # content by the dissector) swaps them, so `src` is the HTTP client.
        src, dst = (client, server) if client_side == 0 else (server, client)
        self._src = src
        self._dst = dst
        self._resolver = identity.resolver
        self._dst_port = conn.server_port if client_side == 0 else conn.client_port
        digits = f"{stream:012d}"
        self._file_prefix = f"{digits}_pcap-"
        self._id_prefix = f"{identity.worker}/{digits}.pcap-"
        v6 = conn.family != 4
        self._protocol_10 = _PROTOCOLS[True, v6]
        self._protocol_11 = _PROTOCOLS[False, v6]
        self._max_decoded = max_decoded
        # decoded body bytes kept per message (--max-body); None: all, up to max_decoded
        self._max_keep = max_decoded if max_keep is None else max_keep
        # Every entry starts as a copy of this: the fields that are the same for all entries of
        # the connection are set, the others (None here) are filled in by build(). Copying a
        # dict and setting 14 keys costs half of building the 22-key literal.
        self._template: dict[str, Any] = {
            "dst": None,
            "elapsedTime": None,
            "entryFile": None,
            "error": None,
            "failed": False,
            "id": None,
            "index": None,
            "node": {"ip": identity.node_ip, "name": identity.node_name},
            "outgoing": src["ip"] in identity.local_ips,
            "passed": False,
            "protocol": None,
            "record": "",
            "request": None,
            "requestSize": None,
            "response": None,
            "responseSize": None,
            "src": None,
            "startTime": None,
            "stream": f"{digits}.pcap",
            "timestamp": None,
            "tls": False,
            "worker": identity.worker,
        }

    def build(self, ex: Exchange, index: int) -> dict[str, Any]:
        """The entry of ENTRY.md for the exchange numbered `index` on this connection."""
        req, resp, err = ex
        problems: list[str] | None = None
        max_decoded = self._max_decoded
        entry = self._template.copy()

        if req is None:
            entry["request"] = {}
            entry["requestSize"] = 0
        else:
            # One unpack instead of many attribute reads (this runs once per entry).
            (method, target, _, _, version, fields, body, body_size, truncated,
             wire_size, ts_ns, _, _, _) = req  # fmt: skip
            headers = _header_map(fields)
            target = target or ""
            path, _, query = target.partition("?")
            if path[:1] != "/":
                path = _origin_path(path)
            segments = path.split("/")
            if segments[0] == "":
                del segments[0]
            request = entry["request"] = {
                "bodySize": body_size,
                "cookies": _request_cookies(fields) if "Cookie" in headers else {},
                "headers": headers,
                "headersSize": -1,
                "httpVersion": version,
                "method": method or "",
                "path": path,
                "pathSegments": segments,
                "queryString": _query_map(query) if query else {},
                "targetUri": target,
                "url": target,
            }
            entry["requestSize"] = wire_size
            if body_size > 0:
                post, problem = _post_data(body, truncated, headers, max_decoded, self._max_keep)
                request["postData"] = post
                if problem is not None:
                    problems = [f"request content not decoded: {problem}"]

        rts_ns = 1  # the response's time, when there is one (checked below with the request's)
        if resp is None:
            entry["response"] = {}
            entry["responseSize"] = 0
            elapsed = 0
            if req is None:
                ts_ns = 0
                version = ""
        else:
            (_, _, status, reason, rversion, fields, body, body_size, truncated,
             wire_size, rts_ns, _, _, _) = resp  # fmt: skip
            headers = _header_map(fields)
            coding = headers.get("Content-Encoding")
            if coding and body:
                body, size, problem = _decoded(body, truncated, coding, max_decoded, self._max_keep)
                if problem is not None:
                    problem = f"response content not decoded: {problem}"
                    problems = [problem] if problems is None else [*problems, problem]
            else:
                size = body_size if truncated else len(body)
                if len(body) > self._max_keep:
                    body = body[: self._max_keep]
            content: dict[str, Any] = {
                "encoding": "base64",
                "mimeType": headers.get("Content-Type", ""),
                "size": size,
            }
            if truncated or len(body) < size:
                content["_truncated"] = True
            if body:
                content["text"] = b2a_base64(body, newline=False).decode("ascii")
            status = status or 0
            entry["response"] = {
                "bodySize": body_size,
                "content": content,
                "cookies": _response_cookies(fields) if "Set-Cookie" in headers else {},
                "headers": headers,
                "headersSize": -1,
                "httpVersion": rversion,
                "redirectURL": headers.get("Location", "") if 300 <= status < 400 else "",
                "status": status,
                "statusText": reason or "",
            }
            entry["responseSize"] = wire_size
            # Times and protocol come from the request, or the response when there is none.
            if req is None:
                ts_ns = rts_ns
                version = rversion
                elapsed = 0
            else:
                delta = rts_ns - ts_ns
                elapsed = (delta + 500_000) // 1_000_000 if delta > 0 else 0

        if err is not None:
            entry["error"] = {"type": err[0], "msg": err[1]}
        elif problems is not None:
            entry["error"] = {"type": "dissection", "msg": "; ".join(problems)}
        # (capture.segment.TS_MIN_NS, TS_MAX_NS as literals: no global lookups per entry)
        if not 0 < ts_ns < 4294967295999999999 or not 0 < rts_ns < 4294967295999999999:
            self._flag_time(entry)
        dst = entry["dst"] = self._dst.copy()  # each entry its own (names are merged in)
        src = entry["src"] = self._src.copy()
        resolver = self._resolver
        if resolver is not None:
            # Who each end was when the request was sent (the source by IP alone).
            names = resolver.resolve(src["ip"], 0, ts_ns)
            if names is not None:
                src.update(names)
            names = resolver.resolve(dst["ip"], self._dst_port, ts_ns)
            if names is not None:
                dst.update(names)
        entry["elapsedTime"] = elapsed
        entry["entryFile"] = f"{self._file_prefix}{index}_entry.json"
        entry["id"] = f"{self._id_prefix}{index}"
        entry["index"] = index
        entry["protocol"] = self._protocol_10 if version == "HTTP/1.0" else self._protocol_11
        entry["startTime"] = rfc3339_ns(ts_ns)
        entry["timestamp"] = ts_ns // 1_000_000
        return entry

    @staticmethod
    def _flag_time(entry: dict[str, Any]) -> None:
        """The entry's request or response time sits on a bound of what can be represented:
        one the pipeline clamped (a damaged capture's time; `timestamps_clamped` counts them),
        or a capture that has no real times (0 is the epoch). Said in `error`, so a user sees
        that `timestamp`/`startTime`/`elapsedTime` are not measurements."""
        note = "capture time out of range, clamped to 1970-01-01T00:00:00Z..2106-02-07T06:28:15Z"
        error = entry["error"]
        if error is None:
            entry["error"] = {"type": "dissection", "msg": note}
        else:
            error["msg"] = f"{error['msg']}; {note}"


def build_entry(
    ex: Exchange,
    conn: ConnectionEnds,
    client_side: int,
    identity: Identity,
    stream: int,
    index: int,
    max_decoded: int,
    max_keep: int | None = None,
) -> dict[str, Any]:
    """The entry of ENTRY.md for one exchange of one connection.

    conn is the connection's `Opened` event; its client/server are the reassembler's guess, so
    client_side == 1 (learnt from content by the dissector) swaps them: `src` is the HTTP client.
    A connection's entries are built faster with one `EntryBuilder` (what the pipeline does).
    """
    return EntryBuilder(conn, client_side, identity, stream, max_decoded, max_keep).build(ex, index)
