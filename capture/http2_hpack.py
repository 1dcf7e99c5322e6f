"""HPACK (RFC 7541) header-block decoding for a passive observer, one decoder per direction.

The decoder keeps the dynamic table the sender's encoder keeps, so every header block of a
direction must pass through `decode` in wire order. It differs from an endpoint's decoder in one
way that matters to a sniffer: it can start without knowing the table.

Why the table logic is written here and not taken from the `hpack` library (python-hyper, kept
up to date, used for the Huffman code and the static table below): `hpack.Decoder` is an
endpoint's decoder. A decoding error can be caught per block (`HPACKDecodingError`), but

* a reference to a dynamic entry it does not have raises at that field and abandons the rest of
  the block, so the entries that later fields of the same block insert are never added: every
  later index of that direction is off by their number, and headers come out silently wrong.
  A capture that starts after the connection preface references entries from before it all the
  time; what can be recovered must be, and what cannot must be flagged, not guessed;
* a table-size update above the size it was told to allow (the peer's
  SETTINGS_HEADER_TABLE_SIZE, which a capture may not have seen) is an error, not a fact.

So the table here has a *known part* (entries inserted since decoding started, newest first,
exactly as the encoder has them) and, when `partial`, an unknown older part. Indices into the
known part decode; indices past it are counted as unknown fields and skipped (the representation
is self-delimiting, so the rest of the block still decodes and its insertions still happen).
Eviction drops the unknown part first (it is older), so the known part only shrinks once it alone
overflows the table; an entry whose name was unknown has its size counted as a lower bound, so
known entries are evicted no earlier than the encoder evicts them, and a known index never
resolves to the wrong entry. A size update to 0, or an eviction of a known entry, proves the
unknown part is gone (`partial` becomes False).

Bounds: the known part holds at most `max_table_bytes` (entry sizes per RFC 7541 §4.1); an encoder
allowed a larger table keeps entries we drop, and references to them count as unknown. A string
longer than the block cannot exist (lengths are checked against the block). A malformed block
(truncated integer or string, bad Huffman code, index 0) decodes up to the fault and returns an
error; the table may have lost that block's later insertions, so the decoder forgets its known
part and continues as `partial`. An index past a table believed complete means it was not: the
field is counted unknown, the block's result says so, and the decoder continues as `partial`.
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DEFAULT_TABLE_SIZE", "HpackDecoder", "HpackResult"]

DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 §6.5.2)
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1

_STATIC: tuple[tuple[str, str], ...] = tuple(
    (n.decode("ascii"), v.decode("ascii")) for n, v in HeaderTable.STATIC_TABLE
)
_STATIC_LEN = len(_STATIC)  # 61

# Huffman-coded strings repeat (a literal that is never indexed, such as a :path or a
# grpc-timeout, is sent again in every block): decoded ones are cached by their coded bytes.
# Emptied when full; what is decoded never depends on it.
HUFFMAN_CACHE_SIZE = 4096
HUFFMAN_CACHE_KEY = 256  # coded bytes: a longer string is decoded every time
_huffman_cache: dict[bytes, str] = {}


class HpackResult:
    """One decoded header block."""

    __slots__ = ("error", "fields", "unknown")

    def __init__(self, fields: list[tuple[str, str]], unknown: int, error: str | None) -> None:
        self.fields = fields  # decoded (name, value) pairs in block order, names as sent
        self.unknown = unknown  # fields skipped: they referenced dynamic entries we do not have
        self.error = error  # malformed block: fields decoded up to the fault, then this text


class _Malformed(Exception):
    pass


class HpackDecoder:
    """The dynamic table of one direction of one connection (see the module docstring)."""

    __slots__ = ("_desync", "_entries", "_max_table_bytes", "_size", "max_size", "partial")

    def __init__(self, max_table_bytes: int = 65536, *, partial: bool = False) -> None:
        self._max_table_bytes = max_table_bytes
        # newest last: index 62 is _entries[-1]. (name or None when unknown, value, size)
        self._entries: list[tuple[str | None, str, int]] = []
        self._size = 0  # sum of the known entries' sizes (a lower bound if a name is unknown)
        self.max_size = DEFAULT_TABLE_SIZE  # the table size the encoder last announced
        self.partial = partial  # older entries we never saw may be in the encoder's table
        self._desync: str | None = None

    def forget(self) -> None:
        """The table is no longer known (a header block was lost): keep decoding as partial."""
        self._entries = []
        self._size = 0
        self.partial = True

    @property
    def known_entries(self) -> int:
        return len(self._entries)

    def decode(self, block: bytes) -> HpackResult:
        fields: list[tuple[str, str]] = []
        unknown = 0
        pos = 0
        n = len(block)
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx, pos = _integer(block, pos, 7)
                    entry = self._lookup(idx)
                    if entry is None or entry[0] is None:
                        unknown += 1
                    else:
                        fields.append((entry[0], entry[1]))
                elif b & 0x40:  # literal with incremental indexing
                    name, value, pos = self._literal(block, pos, 6)
                    if name is None:
                        unknown += 1
                    else:
                        fields.append((name, value))
                    self._insert(name, value)
                elif b & 0x20:  # dynamic table size update
                    if fields or unknown:
                        raise _Malformed("table size update after a header field")
                    size, pos = _integer(block, pos, 5)
                    self._resize(size)
                else:  # literal without indexing (0000) or never indexed (0001)
                    name, value, pos = self._literal(block, pos, 4)
                    if name is None:
                        unknown += 1
                    else:
                        fields.append((name, value))
        except _Malformed as exc:
            self.forget()
            self._desync = None
            return HpackResult(fields, unknown, f"malformed HPACK block: {exc}")
        if self._desync is not None:
            note = f"HPACK table out of step: {self._desync}"
            self._desync = None
            return HpackResult(fields, unknown, note)
        return HpackResult(fields, unknown, None)

    # -- table -----------------------------------------------------------------------------

    def _lookup(self, idx: int) -> tuple[str | None, str] | None:
        if idx == 0:
            raise _Malformed("index 0")
        if idx <= _STATIC_LEN:
            return _STATIC[idx - 1]
        k = idx - _STATIC_LEN
        entries = self._entries
        if k <= len(entries):
            e = entries[-k]
            return (e[0], e[1])
        if not self.partial:
            # The table we have is not the encoder's (the capture began mid-connection just
            # before a SETTINGS frame, or an earlier block was undecodable in a way we did not
            # notice): say so once and go on as partial.
            self.partial = True
            self._desync = f"index {idx} past the dynamic table ({len(entries)} entries)"
        return None

    def _insert(self, name: str | None, value: str) -> None:
        # An unknown name's length is unknown: count the entry at its lower bound (see module doc)
        size = (len(name.encode()) if name is not None else 0) + len(value.encode()) + 32
        entries = self._entries
        if size > self.max_size:
            # RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            entries.clear()
            self._size = 0
            self.partial = False
            return
        self._size += size
        entries.append((name, value, size))
        limit = min(self.max_size, self._max_table_bytes)
        if self._size > limit:
            self._evict(limit)

    def _evict(self, limit: int) -> None:
        entries = self._entries
        drop = 0
        size = self._size
        while size > limit:
            size -= entries[drop][2]
            drop += 1
        del entries[:drop]
        self._size = size
        # Evicted by the encoder's own rule, a known entry proves every older (unknown) one went
        # before it; dropped by our memory bound, the encoder still has them.
        self.partial = limit < self.max_size

    def _resize(self, size: int) -> None:
        self.max_size = size
        if size == 0:
            self._entries.clear()
            self._size = 0
            self.partial = False
            return
        limit = min(size, self._max_table_bytes)
        if self._size > limit:
            self._evict(limit)

    # -- representations -------------------------------------------------------------------

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[str | None, str, int]:
        idx, pos = _integer(block, pos, prefix)
        name: str | None
        if idx:
            entry = self._lookup(idx)
            name = None if entry is None else entry[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return name, value, pos


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1: the integer at block[pos] with a `prefix`-bit prefix, and the next pos."""
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    n = len(block)
    while True:
        if pos >= n:
            raise _Malformed("integer cut short")
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # > 2^32: no length or index in a bounded block is that large
            raise _Malformed("integer too large")


def _string(block: bytes, pos: int) -> tuple[str, int]:
    """RFC 7541 §5.2: the string literal at block[pos] and the next pos."""
    if pos >= len(block):
        raise _Malformed("string cut short")
    huffman = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise _Malformed("string cut short")
    raw = block[pos:end]
    if not huffman:
        return raw.decode("utf-8", "replace"), end
    text = _huffman_cache.get(raw)
    if text is None:
        try:
            text = decode_huffman(raw).decode("utf-8", "replace")
        except HPACKDecodingError as exc:
            raise _Malformed(f"bad Huffman code ({exc})") from None
        if len(raw) <= HUFFMAN_CACHE_KEY:
            if len(_huffman_cache) >= HUFFMAN_CACHE_SIZE:
                _huffman_cache.clear()
            _huffman_cache[raw] = text
    return text, end
