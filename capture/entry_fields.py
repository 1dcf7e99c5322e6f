"""The pieces of an entry as ENTRY.md spells them, shared by every protocol's entries:
addresses and endpoints, times (RFC 3339 with nanoseconds), header names in Go's canonical
form, cookies, query strings and paths (capture/entries.py's docstring has the choices).
"""

from __future__ import annotations

import re
import socket
import sys
from datetime import date
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes


@lru_cache(maxsize=4096)
def _ip_text(packed: bytes) -> str:
    """Packed address → text; cached because one connection yields many entries. Interned, as
    a resolver's keys are: its lookup then matches by identity."""
    return sys.intern(
        socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)
    )


def _endpoint(ip: str, port: int) -> dict[str, Any]:
    return {
        "endpointSlice": None,
        "ip": ip,
        "name": "",
        "namespace": "",
        "pod": None,
        "port": str(port),
        "service": None,
    }


# --- headers ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CANON_MAX = 4096  # canonical-name cache entries; past it names are computed each time
_canon: dict[str, str] = {}


def canonical_header(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey."""
    c = _canon.get(name)
    if c is not None:
        return c
    if _TOKEN.fullmatch(name):
        c = "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))
    else:
        c = name  # Go leaves a key with a space or invalid byte untouched
    if len(_canon) < _CANON_MAX:
        _canon[name] = c
    return c


def _header_map(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    canon = _canon
    for name, value in headers:
        key = canon.get(name)
        if key is None:
            key = canonical_header(name)
        if key in out:
            out[key] = f"{out[key]}, {value}"
        else:
            out[key] = value
    return out


def _unquote_cookie(value: str) -> str:
    if len(value) > 1 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _request_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        if len(name) == 6 and name.lower() == "cookie":
            for part in value.split(";"):
                k, _, v = part.strip().partition("=")
                k = k.strip()
                if k:
                    out[k] = _unquote_cookie(v.strip())
    return out


def _response_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        if len(name) == 10 and name.lower() == "set-cookie":
            k, eq, v = value.split(";", 1)[0].partition("=")
            k = k.strip()
            if eq and k:
                out[k] = _unquote_cookie(v.strip())
    return out


# --- URL pieces ------------------------------------------------------------------------------

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape(s: str) -> str | None:
    """Go's url.QueryUnescape; None where Go returns an error."""
    if "%" not in s:
        return s.replace("+", " ") if "+" in s else s
    if _BAD_ESCAPE.search(s):
        return None
    return unquote_to_bytes(s.replace("+", " ")).decode("utf-8", "replace")


def _pairs(query: str) -> list[tuple[str, str]]:
    """Go's url.ParseQuery, keeping order and every pair."""
    out = []
    for part in query.split("&"):
        if not part or ";" in part:
            continue
        k, _, v = part.partition("=")
        key = _unescape(k)
        value = _unescape(v)
        if key is not None and value is not None:
            out.append((key, value))
    return out


def _query_map(query: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "%" not in query and "+" not in query and ";" not in query:
        # Common case: nothing to unescape, no empty or repeated names.
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if not part or k in out:
                out.clear()
                break
            out[k] = v
        else:
            return out
    for k, v in _pairs(query):
        prev = out.get(k)
        if prev is None:
            out[k] = v
        elif type(prev) is list:
            prev.append(v)
        else:
            out[k] = [prev, v]
    return out


def _origin_path(path: str) -> str:
    """The path of a target that does not start with "/": an absolute-form target
    ("http://host/p") gives "/p"; anything else is kept as it is."""
    if path[:7].lower() == "http://" or path[:8].lower() == "https://":
        slash = path.find("/", path.find("//") + 2)
        return path[slash:] if slash >= 0 else ""
    return path


# --- time ------------------------------------------------------------------------------------

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# The "YYYY-MM-DDTHH:MM:SS." of the last second formatted: entries come in time order, so most
# share it (one slot, nothing to bound).
_last_second = [-1, ""]


# The instants RFC 3339 (four-digit years) and Python's date can write: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z. Outside them the nearer one is written, never an exception.
_RFC3339_MIN_NS = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86400 * 1_000_000_000
_RFC3339_MAX_NS = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86400 * 1_000_000_000 - 1


def rfc3339_ns(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, always 9 fractional digits: 2023-12-19T20:51:07.482113205Z."""
    sec = ts_ns // 1_000_000_000
    cached = _last_second
    if sec != cached[0]:
        # (checked only here: the cached second is always one that can be written)
        if not _RFC3339_MIN_NS <= ts_ns <= _RFC3339_MAX_NS:
            return rfc3339_ns(_RFC3339_MIN_NS if ts_ns < 0 else _RFC3339_MAX_NS)
        day, sod = divmod(sec, 86400)
        hour, rest = divmod(sod, 3600)
        minute, second = divmod(rest, 60)
        d = date.fromordinal(day + _EPOCH_ORDINAL).isoformat()
        cached[1] = f"{d}T{hour:02d}:{minute:02d}:{second:02d}."
        cached[0] = sec
    if ts_ns >= 1_000_000_000:
        # The last 9 digits are the fraction, zero-padded already (cheaper than a format spec).
        return f"{cached[1]}{str(ts_ns)[-9:]}Z"
    return f"{cached[1]}{ts_ns - sec * 1_000_000_000:09d}Z"
