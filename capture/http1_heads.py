"""HTTP/1 heads: the start line and field lines of a message, parsed; the caches of what was
parsed before; and recognising where a message starts (probing, resynchronising).

Two ways to parse a head, one result (tests/capture/test_fast_paths.py checks it): `_quick_head`
takes the usual clean head (CRLF lines, no folding or odd spacing, plain framing) and caches what
it parsed (`_Parsed`); `_request` / `_response` with `_fields` take anything, recording what is
odd as anomalies and what cannot be read as the message's error (capture/http1.py's docstring has
the policies). Nothing here keeps per-connection state: the framing state machine
(capture/http1_framing.py) calls these with the bytes it holds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Generic, TypeVar

from capture.http1_messages import _REQ, _RESP, _add, _anomaly, _fail, _Msg

if TYPE_CHECKING:
    from collections.abc import Callable


# Strict start-line shapes: used to recognise HTTP and to resynchronise, never to parse.
_REQ_LINE = re.compile(
    rb"[A-Za-z][!#$%&'*+.^_`|~0-9A-Za-z-]{0,31} [^\x00-\x20\x7f]+ HTTP/1\.[0-9]?\r?\n"
)
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] [0-9]{3}[ \r\n]")
# A request line whose target holds spaces (attack traffic: "GET /x;cat /etc/passwd| HTTP/1.1"):
# not valid, but plainly a request when a known method starts it and a version ends it. It is
# recognised like a strict one (else an unanswered one would leave the connection "not HTTP"
# and vanish) and reported with a dissection error.
_SPACED_REQ_LINE = re.compile(
    rb"(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|PROPFIND) "
    rb"[^\x00-\x1f\x7f]+? HTTP/1\.[0-9]?\r?\n"
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
# Bounds on framing values, not on how many digits spell them (RFC 9110 8.6 and RFC 9112 7.1
# allow any number of leading zeros; a cap on the digits let a request smuggled behind
# "Content-Length: 000…050" go unseen). A larger value is invalid framing.
_MAX_LENGTH_DIGITS = 18  # Content-Length below 10**18 bytes
_MAX_CHUNK_DIGITS = 15  # chunk size below 16**15 bytes
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND"}
)
_MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer than this is malformed


_K = TypeVar("_K", str, bytes)
_V = TypeVar("_V")


class _Parsed(Generic[_K, _V]):
    """A bounded cache of parsed head text: what `_quick` parsed before, by the raw text.

    Heads repeat a great deal: a client polling a URL or a load generator sends the same head
    every time, a server answers with the same head for as long as its Date line stays the
    same (a second), and even heads that differ share most lines (Host, Server, Content-Type,
    Connection ...). A hit replaces decoding, splitting, checking and building tuples by one
    dict lookup, and the parsed tuples are shared between messages (they are immutable; the
    header list a Message gets is always its own). Only what `_quick` accepts is stored (a
    clean head: no bare LF, tab, folding or space before a colon; ordinary framing), so a hit
    needs no further check and the result never depends on what a cache holds.

    Bounded: keys longer than `max_key` are not stored, and when `max_items` are held the cache
    is emptied and refills with what is in use now (a Date line, for one, changes every
    second). The caches are module-wide: every connection profits from what any of them saw.
    """

    __slots__ = ("get", "items", "max_items", "max_key")

    def __init__(self, max_items: int, max_key: int) -> None:
        self.items: dict[_K, _V] = {}
        self.get: Callable[[_K], _V | None] = self.items.get  # the lookup, bound once
        self.max_items = max_items
        self.max_key = max_key

    def put(self, key: _K, parsed: _V) -> None:
        if len(key) <= self.max_key:
            items = self.items
            if len(items) >= self.max_items:
                items.clear()
            items[key] = parsed


# What _quick_head returns: method, target, status, reason, version, fields, length
# (length: the Content-Length, -2 chunked, -3 read until close; 0 for a request without either).
_QuickHead = tuple[
    str | None, str | None, int | None, str | None, str, tuple[tuple[str, str], ...], int
]
# Its first five: what a start line says (a request's method and target, or a response's
# status and reason; the version).
_StartLine = tuple[str | None, str | None, int | None, str | None, str]


# The caches' bounds (see _Parsed): a few MB in all, whatever the traffic.
HEAD_CACHE_SIZE = 1024  # heads per cache (one for requests, one for responses)
HEAD_CACHE_KEY = 1024  # bytes: a longer head is parsed every time
LINE_CACHE_SIZE = 4096  # lines per cache (request lines, status lines, field lines)
LINE_CACHE_KEY = 256  # characters: a longer line is parsed every time

# Whole heads (the bytes before the blank line) → _quick_head()'s result.
_REQUEST_HEADS: _Parsed[bytes, _QuickHead] = _Parsed(HEAD_CACHE_SIZE, HEAD_CACHE_KEY)
_RESPONSE_HEADS: _Parsed[bytes, _QuickHead] = _Parsed(HEAD_CACHE_SIZE, HEAD_CACHE_KEY)
# Start lines, for heads not seen whole before, as the first five of _QuickHead:
# "GET / HTTP/1.1" → ("GET", "/", None, None, "HTTP/1.1")
_REQUEST_LINES: _Parsed[str, _StartLine] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)
# "HTTP/1.1 200 OK" → (None, None, 200, "OK", "HTTP/1.1")
_STATUS_LINES: _Parsed[str, _StartLine] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)
# "Host: a" → ("Host", "a"); never Content-Length, Transfer-Encoding or Upgrade lines (framing
# reads those, so their lines are always parsed).
_FIELD_LINES: _Parsed[str, tuple[str, str]] = _Parsed(LINE_CACHE_SIZE, LINE_CACHE_KEY)


def _clean_start_line(line: str) -> bool:
    return "\n" not in line and "\t" not in line and " :" not in line


def _quick_request_line(line: str) -> _StartLine | None:
    """A request line `_quick` may take: a known method (not CONNECT), HTTP/1.1 or 1.0."""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not _clean_start_line(line):
        return None
    method, target, version = parts
    if method not in _KNOWN_METHODS or method == "CONNECT" or not target or " " in target:
        return None
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        return None
    parsed: _StartLine = (method, target, None, None, version)
    _REQUEST_LINES.put(line, parsed)
    return parsed


def _quick_status_line(line: str) -> _StartLine | None:
    """A status line `_quick` may take: HTTP/1.1 or 1.0, a final status (not 1xx)."""
    parts = line.split(" ", 2)
    if len(parts) != 3 or not _clean_start_line(line):
        return None
    version, code, reason = parts
    if len(code) != 3 or not (code.isdigit() and code.isascii()) or code[0] == "1":
        return None  # interim and 101 responses take the general path
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        return None
    parsed: _StartLine = (None, None, int(code), reason, version)
    _STATUS_LINES.put(line, parsed)
    return parsed


def _quick_head(head: bytes | bytearray, is_req: bool) -> _QuickHead | None:
    """Parse a head (without its blank line) the way `_quick` may take it, else None.

    None means the head needs `HttpConnection._head`: a start line or field it does not
    accept, an anomaly to record (bare LF, folding, odd spacing), or framing that is not
    plain (both Content-Length and chunked, a bad or repeated Content-Length, Upgrade, a
    Transfer-Encoding other than chunked).
    """
    lines = head.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if is_req:
        start = _REQUEST_LINES.get(first) or _quick_request_line(first)
    else:
        start = _STATUS_LINES.get(first) or _quick_status_line(first)
    if start is None:
        return None
    method, target, status, reason, version = start
    fields: list[tuple[str, str]] = []
    append = fields.append
    cl: str | None = None
    chunked = False
    known = _FIELD_LINES.get
    for j in range(1, len(lines)):
        line = lines[j]
        pair = known(line)
        if pair is None:
            # Not seen before (or a framing field, never cached): check and parse it here.
            if "\n" in line or "\t" in line or " :" in line or line[:1] == " ":
                return None  # bare LF, folding or odd spacing: anomalies to record
            name, colon, value = line.partition(":")
            if not colon or not name:
                return None
            pair = (name, value.strip())
            ln = len(name)
            low = name.lower() if ln == 14 or ln == 17 or ln == 7 else ""
            if low == "content-length":
                if cl is not None:
                    return None
                cl = pair[1]
            elif low == "transfer-encoding":
                if chunked or pair[1].lower() != "chunked":
                    return None
                chunked = True
            elif low == "upgrade":
                return None
            else:
                _FIELD_LINES.put(line, pair)
        append(pair)
    if chunked:
        if cl is not None:
            return None  # both: an anomaly to record
        length = -2
    elif cl is not None:
        if not (cl.isdigit() and cl.isascii() and len(cl) <= 18) or (cl[0] == "0" and len(cl) > 1):
            return None  # leading zeros: an anomaly the general path records
        length = int(cl)
    else:
        length = 0 if is_req else -3  # a response without length reads until close
    return method, target, status, reason, version, tuple(fields), length


def _fields(
    m: _Msg, lines: list[str], anomalies: list[str] | None, text: str
) -> tuple[list[str] | None, str | None]:
    """Parse field lines into m.headers; returns (Content-Length values, Transfer-Encoding)."""
    if len(lines) < 2:
        m.headers = []
        m.anomalies = anomalies
        return None, None
    # The fields framing reads: Content-Length (14 letters), Transfer-Encoding (17), Upgrade
    # (7). Only names of those lengths are looked at again (_framing).
    framing: list[tuple[str, str]] | None = None
    if anomalies is None and "\n " not in text and " :" not in text and "\t" not in text:
        # Fast path: no folding, no whitespace around names (checked on the whole head).
        # One plain loop: cheaper than comprehensions here (scripts/bench_pipeline.py).
        headers: list[tuple[str, str]] = []
        append = headers.append
        for k in range(1, len(lines)):
            name, colon, value = lines[k].partition(":")
            if not colon or not name:
                break  # a line without a name: the careful loop below reports it
            field = (name, value.strip())
            append(field)
            ln = len(name)
            if ln == 14 or ln == 17 or ln == 7:
                framing = [field] if framing is None else [*framing, field]
        else:
            m.headers = headers
            return _framing(m, framing) if framing is not None else (None, None)
        framing = None
    headers = m.headers = []
    for k in range(1, len(lines)):
        line = lines[k]
        i = line.find(":")
        c = line[:1]
        if i <= 0 or c == " " or c == "\t":
            if (c == " " or c == "\t") and headers:
                name, value = headers[-1]
                folded = line.strip()
                headers[-1] = (name, f"{value} {folded}" if value else folded)
                anomalies = _add(anomalies, "obs-fold continuation line")
            elif line.strip():
                anomalies = _add(anomalies, f"field line without a name: {line[:64]!r}")
            continue
        name = line[:i]
        value = line[i + 1 :].strip()
        if name[-1] == " " or name[-1] == "\t":
            name = name.rstrip()
            anomalies = _add(anomalies, f"whitespace before the colon of {name!r}")
        headers.append((name, value))
    m.anomalies = anomalies
    # RFC 9112 5.2: obs-fold is replaced by a space before the value is interpreted (what a
    # server that accepts it, and Zeek, do): framing reads the unfolded values, so
    # `Transfer-Encoding:\r\n chunked` is chunked.
    return _framing(m, headers)


def _framing(m: _Msg, fields: list[tuple[str, str]]) -> tuple[list[str] | None, str | None]:
    """The Content-Length values and the Transfer-Encoding among fields; an Upgrade on a
    request marks it as a switch (the client side pauses after it)."""
    cl: list[str] | None = None
    te: str | None = None
    for name, value in fields:
        ln = len(name)
        if ln != 14 and ln != 17 and ln != 7:
            continue
        low = name.lower()
        if low == "content-length":
            cl = [value] if cl is None else [*cl, value]
        elif low == "transfer-encoding":
            te = value if te is None else f"{te}, {value}"
        elif low == "upgrade" and m.is_req:
            m.switch = True
    return cl, te


def _request(
    lines: list[str], anomalies: list[str] | None, text: str
) -> tuple[_Msg, list[str] | None, str | None]:
    line = lines[0]
    parts = line.split(" ")
    errors: list[str] | None = None
    if len(parts) == 3 and parts[2][:7] == "HTTP/1." and parts[1]:
        method, target, version = parts
        if len(version) != 8:
            anomalies = _add(anomalies, f"odd HTTP version {version!r}")
    else:
        method, _, rest = line.partition(" ")
        rest = rest.strip()
        head, _, last = rest.rpartition(" ")
        if last[:5] == "HTTP/":
            target, version = head.strip(), last
        else:
            target, version = rest, ""
            errors = _add(errors, "request line without an HTTP version")
        if not target:
            errors = _add(errors, "request line without a target")
        elif " " in target or "\t" in target:
            errors = _add(errors, "whitespace inside the request target")
        if version and version[:7] != "HTTP/1.":
            errors = _add(errors, f"unsupported HTTP version {version[:20]!r}")
        elif version and len(version) != 8:
            anomalies = _add(anomalies, f"odd HTTP version {version!r}")
        if len(parts) > 3 and not errors:
            anomalies = _add(anomalies, "extra whitespace in the request line")
    if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
        errors = _add(errors, f"invalid method {method[:40]!r}")
    m = _Msg(True, method, target, None, None, version)
    if method == "CONNECT":
        m.switch = True
    if errors:
        m.error = f"malformed request line {line[:120]!r}: {', '.join(errors)}"
        m.err_type = "dissection"
    cl, te = _fields(m, lines, anomalies, text)
    return m, cl, te


def _response(
    lines: list[str], anomalies: list[str] | None, text: str
) -> tuple[_Msg | None, list[str] | None, str | None]:
    line = lines[0]
    parts = line.split(" ", 2)
    error = None
    status = 0
    reason = ""
    code = parts[1] if len(parts) >= 2 else ""
    if len(code) != 3 or not (code.isdigit() and code.isascii()):
        p = line.split(None, 2)
        code = p[1] if len(p) >= 2 else ""
        if len(code) == 3 and code.isdigit() and code.isascii():
            parts = p
            anomalies = _add(anomalies, "extra whitespace in the status line")
        else:
            error = f"malformed status line {line[:120]!r}"
    if error is None:
        status = int(code)
        if len(parts) == 3:
            reason = parts[2]
        else:
            anomalies = _add(anomalies, "status line without a reason phrase")
    version = parts[0]
    if error is None:
        if version[:7] != "HTTP/1.":
            error = f"unsupported HTTP version {version[:20]!r}"
        elif len(version) != 8:
            anomalies = _add(anomalies, f"odd HTTP version {version!r}")
        elif 100 <= status < 200 and status != 101:
            return None, None, None  # interim response (100 Continue, 103 Early Hints)
    m = _Msg(False, None, None, status, reason, version)
    if error is not None:
        m.error = error
        m.err_type = "dissection"
    cl, te = _fields(m, lines, anomalies, text)
    return m, cl, te


def _content_length(m: _Msg, values: list[str]) -> int:
    """The Content-Length, or -1 (message failed) when it cannot frame the body.

    Any number of digits is valid (leading zeros are recorded as an anomaly); the value is
    what must stay below 10**18. The same value repeated (list or fields) is accepted, as
    RFC 9110 8.6 allows; different values are invalid."""
    seen: set[str] = set()
    zeros = False
    for value in values:
        for v in value.split(","):
            v = v.strip()
            if v.isdigit() and v.isascii():
                digits = v.lstrip("0") or "0"
                zeros = zeros or len(digits) < len(v)
                v = digits
            seen.add(v)
    if len(seen) == 1:
        v = seen.pop()
        if v.isdigit() and v.isascii() and len(v) <= _MAX_LENGTH_DIGITS:
            if len(values) > 1 or "," in values[0]:
                _anomaly(m, "repeated Content-Length")
            if zeros:
                _anomaly(m, "Content-Length with leading zeros")
            return int(v)
    _fail(m, f"invalid Content-Length {', '.join(values)[:60]!r}")
    return -1


def _find_start(buf: bytes | bytearray, pos: int, role: int) -> tuple[int, int]:
    """Offset and role of the first strict start line at a line start (pos counts as one)."""
    best = -1
    best_role = -1
    if role != _REQ:
        i = buf.find(b"HTTP/1.", pos)
        while i >= 0:
            if (i == pos or buf[i - 1] == 10) and _STATUS_LINE.match(buf, i):
                best, best_role = i, _RESP
                break
            i = buf.find(b"HTTP/1.", i + 1)
    if role != _RESP:
        stop = best if best >= 0 else len(buf)
        i = buf.find(b" HTTP/1.", pos, stop)
        while i >= 0:
            ls = buf.rfind(b"\n", pos, i) + 1
            if _REQ_LINE.match(buf, ls or pos) or _SPACED_REQ_LINE.match(buf, ls or pos):
                return ls or pos, _REQ
            i = buf.find(b" HTTP/1.", i + 1, stop)
    return best, best_role


def _plausible_start(role: int, buf: bytes | bytearray, pos: int, max_head: int) -> bool:
    """Could the line at pos start a (possibly malformed) message of that role?"""
    limit = pos + max_head
    k = buf.find(b"\n", pos, limit)
    line = buf[pos : k if k >= 0 else limit]
    if line[-1:] == b"\r":
        line = line[:-1]
    if not line or _CTL.search(line):
        return False
    if role == _RESP:
        return line[:5] == b"HTTP/"
    return line[:1] not in b" \t"


def _bad_start(role: int, buf: bytes | bytearray, pos: int, k: int, max_head: int) -> bool:
    """While a head is incomplete: would its (complete) first line be rejected once it is?

    The same test as for a complete head (a start line that does not parse and is not even
    plausible), so that where a packet boundary falls never changes the outcome.
    """
    if (_REQ_LINE if role == _REQ else _STATUS_LINE).match(buf, pos):
        return False  # a well-formed start line (the usual head cut by a packet boundary)
    if role == _REQ and _SPACED_REQ_LINE.match(buf, pos):
        return False
    line = buf[pos:k].decode("utf-8", "replace")
    if line[-1:] == "\r":
        line = line[:-1]
    if role == _REQ:
        m: _Msg | None = _request([line], None, "\t")[0]
    else:
        m = _response([line], None, "\t")[0]
    return m is not None and m.error is not None and not _plausible_start(role, buf, pos, max_head)
