"""gRPC over HTTP/2: what the packet side needs to know of it (sans-IO, no gRPC library).

A gRPC call is an HTTP/2 stream whose request (or response) Content-Type is `application/grpc`
or `application/grpc+<subtype>` (grpc/PROTOCOL-HTTP2.md). Its path is `/<service>/<method>`; its
bodies are Length-Prefixed-Messages (1 byte compressed flag, 4 bytes big-endian length, the
message); its status is the `grpc-status` trailer (or header, in a Trailers-Only response), with a
percent-encoded `grpc-message`.

`MessageTally` counts the messages of one direction as its DATA flows, reading only the 5-byte
prefixes: a streaming call's body is capped at max_body like any other, but its message count is
exact. `split_messages` cuts a captured body into its first messages for the entry.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

__all__ = [
    "GRPC_STATUS_NAMES",
    "MessageTally",
    "RawMessage",
    "call_status",
    "grpc_message_text",
    "is_grpc_content_type",
    "service_method",
    "split_messages",
]

# google.golang.org/grpc/codes: the names grpc-status values are known by (statusText).
GRPC_STATUS_NAMES: dict[int, str] = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_UNKNOWN = 2

# grpc/doc/http-grpc-status-mapping.md: the status a client reports when the HTTP response is not
# a gRPC one (no grpc-status), by HTTP status.
_HTTP_TO_GRPC: dict[int, int] = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED
    429: 14,  # UNAVAILABLE
    502: 14,
    503: 14,
    504: 14,
}


def is_grpc_content_type(value: str) -> bool:
    v = value.lower()
    return v.startswith("application/grpc") and (len(v) == 16 or v[16] in "+;")


def service_method(path: str) -> tuple[str, str]:
    """`/pkg.Service/Method` → ("pkg.Service", "Method"); anything else → ("", path)."""
    if path[:1] == "/":
        service, sep, method = path[1:].partition("/")
        if sep and service and method and "/" not in method:
            return service, method
    return "", path


def call_status(http_status: int | None, grpc_status: str | None) -> tuple[int, str]:
    """The call's status code and the source it came from, as a gRPC client would see it.

    grpc-status when sent (a value that is not a number is UNKNOWN); without it, the HTTP status
    mapped per http-grpc-status-mapping.md; a 200 without grpc-status (trailers not captured, or
    a server that never sent them) is UNKNOWN too: gRPC never reports such a call as OK.
    """
    if grpc_status is not None:
        text = grpc_status.strip()
        if text.isdigit():
            return int(text), "grpc-status"
        return _UNKNOWN, "grpc-status"
    if http_status is not None and http_status != 200:
        return _HTTP_TO_GRPC.get(http_status, _UNKNOWN), "http-status"
    return _UNKNOWN, "missing"


def grpc_message_text(value: str) -> str:
    """grpc-message is percent-encoded UTF-8 (PROTOCOL-HTTP2.md, "Status-Message")."""
    return unquote(value, errors="replace") if "%" in value else value


class RawMessage(NamedTuple):
    compressed: bool
    length: int  # as the prefix says
    data: bytes  # the captured bytes of the message (fewer than length when cut)


def split_messages(body: bytes, max_messages: int) -> tuple[list[RawMessage], int]:
    """The first max_messages Length-Prefixed-Messages of a captured body, and the offset where
    parsing stopped (len(body) when it ended on a message boundary)."""
    out: list[RawMessage] = []
    pos = 0
    n = len(body)
    while pos + 5 <= n and len(out) < max_messages:
        length = int.from_bytes(body[pos + 1 : pos + 5], "big")
        start = pos + 5
        out.append(RawMessage(bool(body[pos] & 1), length, body[start : start + length]))
        pos = start + length
    return out, min(pos, n)


class MessageTally:
    """Counts the Length-Prefixed-Messages of one direction as its bytes pass.

    Reads only the prefixes (the 5 bytes before each message), so the cost is per message, not
    per byte. Bytes lost inside the current message keep the count exact; other losses make
    `lost` True: counting stops until a DATA frame (`frame_start`) begins with what looks like a
    prefix (flag 0 or 1) and goes on from there, so the count is then a lower bound.
    """

    __slots__ = ("_at_frame", "_blind", "_head", "_need", "compressed", "count", "lost")

    def __init__(self) -> None:
        self.count = 0  # messages whose prefix was seen
        self.compressed = 0  # of which with the compressed flag set
        self.lost = False  # bytes were lost where messages may have been: count is a lower bound
        self._blind = False  # where the next prefix is, is unknown
        self._at_frame = False  # the next byte fed starts a DATA frame's payload
        self._need = 0  # message bytes still to pass before the next prefix
        self._head = b""  # part of a prefix split across DATA frames

    def frame_start(self) -> None:
        """The next bytes fed begin a DATA frame (a place where a message may begin)."""
        if self._blind:
            self._at_frame = True

    def feed(self, data: bytes | bytearray | memoryview, start: int, stop: int) -> None:
        if self._blind:
            if not self._at_frame:
                return
            self._at_frame = False
            if stop - start < 5 or data[start] > 1:
                return
            self._blind = False
            self._need = 0
            self._head = b""
        pos = start
        need = self._need
        while pos < stop:
            if need:
                take = stop - pos if stop - pos < need else need
                pos += take
                need -= take
                continue
            head = self._head
            if head or stop - pos < 5:
                take = min(5 - len(head), stop - pos)
                head += bytes(data[pos : pos + take])
                pos += take
                if len(head) < 5:
                    self._head = head
                    break
                self._head = b""
                flag = head[0]
                need = int.from_bytes(head[1:5], "big")
            else:
                flag = data[pos]
                need = int.from_bytes(data[pos + 1 : pos + 5], "big")
                pos += 5
            self.count += 1
            if flag & 1:
                self.compressed += 1
        self._need = need

    def gap(self, length: int) -> None:
        """length body bytes were lost: inside the current message the count stays exact."""
        if not self._blind and not self._head and length <= self._need:
            self._need -= length
        else:
            self.lose()

    def lose(self) -> None:
        """Bytes of this direction may have been lost anywhere (the framing was lost)."""
        self.lost = True
        self._blind = True
        self._at_frame = False
        self._need = 0
        self._head = b""

    @property
    def partial(self) -> bool:
        """The body ended inside a message (or its prefix)."""
        return bool(self._need or self._head)
