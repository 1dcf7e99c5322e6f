"""File names of the store, and the only place that turns outside text into them.

Every name the store opens is built here from validated integers (or checked against a strict
pattern), so no input — an HTTP path, a cursor, a corrupted journal line — can name a file outside
the data directory. The shapes come from ENTRY.md ("Identity and files").
"""

from __future__ import annotations

import re

STREAM_DIGITS = 12
# The stream counter is printed with 12 digits; past that the names would change shape.
MAX_STREAM = 10**STREAM_DIGITS - 1
# Indexes are ints in JSON; 9 digits is far more keep-alive pairs than one connection ever carries
# and keeps the parse from accepting absurd lengths.
_INDEX = r"(0|[1-9][0-9]{0,8})"

_ENTRY_FILE_RE = re.compile(r"([0-9]{12})_pcap-" + _INDEX + r"_entry\.json")
_ENTRY_FILE_RE_B = re.compile(rb"([0-9]{12})_pcap-" + _INDEX.encode() + rb"_entry\.json")
_SHORT_ID_RE = re.compile(r"([0-9]{12})\.pcap-" + _INDEX)
_STREAM_TEXT_RE = re.compile(r"([0-9]{1,12})(?:\.pcap)?")
_PCAP_FILE_RE = re.compile(r"([0-9]{12})\.pcap")


def stream_name(stream: int) -> str:
    """`7` → `"000000000007.pcap"` (the entry's `stream` field and the pcap's file name)."""
    return f"{stream:012d}.pcap"


def entry_file_name(stream: int, index: int) -> str:
    """`(7, 0)` → `"000000000007_pcap-0_entry.json"` (the entry's `entryFile`)."""
    return f"{stream:012d}_pcap-{index}_entry.json"


def parse_entry_file(name: str) -> tuple[int, int] | None:
    """`"000000000007_pcap-0_entry.json"` → `(7, 0)`; anything else → None."""
    m = _ENTRY_FILE_RE.fullmatch(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


def parse_entry_file_bytes(name: bytes) -> int | None:
    """The stream number of an entry file name read back from the journal, None if malformed."""
    m = _ENTRY_FILE_RE_B.fullmatch(name)
    return None if m is None else int(m.group(1))


def parse_pcap_file(name: str) -> int | None:
    """`"000000000007.pcap"` → 7 (exactly the names the store writes); anything else → None."""
    m = _PCAP_FILE_RE.fullmatch(name)
    return None if m is None else int(m.group(1))


def entry_file_from_id(text: object) -> str | None:
    """The entry file a cursor names, from any of the forms a client may hold.

    Accepted: a full id `"10.0.41.65:30001/000000000007.pcap-0"` (the worker part is ignored: a
    worker only knows its own entries), a short id `"000000000007.pcap-0"` (the `/item` form), or
    an `entryFile` `"000000000007_pcap-0_entry.json"`. Anything else → None.
    """
    if not isinstance(text, str):
        return None
    tail = text.rpartition("/")[2]
    m = _SHORT_ID_RE.fullmatch(tail)
    if m is not None:
        return entry_file_name(int(m.group(1)), int(m.group(2)))
    if _ENTRY_FILE_RE.fullmatch(tail) is not None:
        return tail
    return None


def parse_stream(value: object) -> int | None:
    """A stream number from an int or from text (`"000000000007.pcap"`, `"7"`); None if invalid.

    bool is refused although it is an int: `True` is never a stream a caller meant.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_STREAM else None
    if isinstance(value, str):
        m = _STREAM_TEXT_RE.fullmatch(value)
        return None if m is None else int(m.group(1))
    return None


def valid_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 999_999_999
