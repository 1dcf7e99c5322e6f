"""HTTP/2 frames as they are on the wire (RFC 9113 §4, §6): types, flags, the frame header,
error codes; and recognising HTTP/2 from a connection's first bytes (`detect`) or finding where a
frame starts in the middle of a connection (`_plausible`). Pure functions of the bytes: the
connection's state is capture/http2_framing.py's.
"""

from __future__ import annotations

import struct

from capture.dissect import MORE, NO, YES
from capture.http2_hpack import HpackDecoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PREFACE_LEN = len(PREFACE)

MAX_CONTROL_FRAME = 1 << 16  # SETTINGS/GOAWAY/unknown-type payloads longer are skipped unread
_DEFAULT_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's initial value
_MAX_SYNC_STREAM_ID = 1 << 24  # realignment only: a plausible frame's stream id is below this

_DATA = 0
_HEADERS = 1
_PRIORITY = 2
_RST_STREAM = 3
_SETTINGS = 4
_PUSH_PROMISE = 5
_PING = 6
_GOAWAY = 7
_WINDOW_UPDATE = 8
_CONTINUATION = 9

_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

# Realignment: the flags each type defines (others make a header implausible) and which types
# need a stream id (1), none (0), or either (2).
_SYNC_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)
_SYNC_SID = (1, 1, 1, 1, 0, 1, 0, 0, 2, 1)

_ERROR_CODES = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)

_HEADER = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, R + stream id
_U32 = struct.Struct(">I")


def error_code_name(code: int) -> str:
    name = _ERROR_CODES[code] if 0 <= code < len(_ERROR_CODES) else "UNKNOWN_ERROR"
    return f"{name} (0x{code:x})"


def detect(first0: bytes, first1: bytes, conn: object) -> int:
    """Content detection (capture/dissectors.py): YES when either side starts with the client
    preface, or with plausible frames up to a HEADERS frame whose block decodes (with an
    unknown HPACK table) to pseudo-headers: a capture that began after the preface. NO as soon
    as a side's first bytes cannot be frames; MORE while a side's frames are plausible so far."""
    if first0.startswith(_NOT_HTTP2) or first1.startswith(_NOT_HTTP2):
        return NO  # HTTP/1 or TLS from its first byte: no need to hear the other side
    answer = NO
    for data in (first0, first1):
        got = _detect_side(data)
        if got == YES:
            return YES
        if got == MORE:
            answer = MORE
    return answer


def _detect_side(data: bytes) -> int:
    n = len(data)
    if n == 0:
        return MORE
    k = min(n, _PREFACE_LEN)
    if data[:k] == PREFACE[:k]:
        return YES if n >= _PREFACE_LEN else MORE
    first = _walk_frames(data, 0)
    if first != NO:
        return first
    # The side's data may begin inside a frame (a capture joining a connection): frames found
    # further on count only if they reach a HEADERS block with pseudo-headers.
    for pos in range(1, n - 8):
        if _plausible(data, pos, _DEFAULT_MAX_FRAME) and _walk_frames(data, pos) == YES:
            return YES
    return NO


def _walk_frames(data: bytes, pos: int) -> int:
    """YES: plausible frames from pos up to a HEADERS block that decodes (with an unknown
    HPACK table) to pseudo-headers; NO: an implausible frame first; MORE: the data ends first."""
    n = len(data)
    while n - pos >= 9:
        if not _plausible(data, pos, _DEFAULT_MAX_FRAME):
            return NO
        end = pos + 9 + ((data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2])
        if end > n:
            return MORE
        flags = data[pos + 4]
        if data[pos + 3] == _HEADERS and flags & _END_HEADERS:
            block = _unpad(data[pos + 9 : end], flags)
            if block is None:
                return NO
            if flags & _PRIORITY_FLAG:
                block = block[5:]
            res = HpackDecoder(partial=True).decode(block)
            if res.error is not None:
                return NO
            if any(name in _PSEUDO for name, _ in res.fields):
                return YES
        pos = end
    return MORE


_PSEUDO = frozenset((":method", ":path", ":scheme", ":authority", ":status"))
# Starts of a side that is surely not HTTP/2 (a request or status line, a TLS handshake record).
_NOT_HTTP2 = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"HTTP/1.",
    b"\x16\x03",
)


def looks_like_http2(data: bytes) -> bool:
    """Does a side's first data start with the client connection preface (or a prefix of it)?"""
    n = min(len(data), _PREFACE_LEN)
    return n > 0 and data[:n] == PREFACE[:n]


def _unpad(payload: bytes, flags: int) -> bytes | None:
    if not flags & _PADDED:
        return payload
    if not payload:
        return None
    pad = payload[0]
    if pad > len(payload) - 1:
        return None
    return payload[1 : len(payload) - pad]


def _plausible(buf: bytes | bytearray, pos: int, max_frame: int) -> bool:
    """Could a frame header start at buf[pos]? (Realignment only; in sync anything goes.)"""
    length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    ftype = buf[pos + 3]
    if ftype > _CONTINUATION or length > max_frame:
        return False
    flags = buf[pos + 4]
    if flags & ~_SYNC_FLAGS[ftype]:
        return False
    sid = (buf[pos + 5] << 24) | (buf[pos + 6] << 16) | (buf[pos + 7] << 8) | buf[pos + 8]
    if sid >= _MAX_SYNC_STREAM_ID:  # also rejects the reserved bit
        return False
    rule = _SYNC_SID[ftype]
    if (rule == 1 and not sid) or (rule == 0 and sid):
        return False
    if ftype == _DATA:
        return length > 0 or bool(flags & _END_STREAM)
    if ftype == _PRIORITY:
        return length == 5
    if ftype in (_RST_STREAM, _WINDOW_UPDATE):
        return length == 4
    if ftype == _SETTINGS:
        return length % 6 == 0 and not (flags & 1 and length)
    if ftype == _PING:
        return length == 8
    if ftype == _GOAWAY:
        return length >= 8
    return ftype != _CONTINUATION  # a block's continuation cannot be decoded without its start
