"""IPv4 and IPv6 fragment reassembly, sans-IO: fragments and packet times in, whole datagrams out.

`capture.decode.Decoder` hands every fragment it meets to one `FragmentReassembler` and decodes
the datagram it gets back as if it had come whole. Nothing here parses headers or reads a
clock: the caller passes the fields it already unpacked, the fragment's bytes as a slice of its
frame, and the packet's time.

Policy, and why:

* **Identity.** IPv4: (source, destination, protocol, identification), RFC 791. IPv6: (source,
  destination, identification), RFC 8200 4.5.
* **Any order.** Pieces are kept as (offset, end) ranges; the datagram is complete when the
  last fragment (MF=0) has fixed its length and the ranges tile it from 0 (RFC 815's holes,
  counted instead of listed: with overlaps refused, no holes left means received == length).
* **Duplicates and overlaps, as Linux does** (``inet_frag_queue_insert``, since 4.19 for
  IPv4 too). A fragment whose bytes all lie inside bytes already received is a duplicate:
  ignored, the first copy wins (RFC 5722 errata 3089). Any other overlap discards the whole
  datagram (RFC 5722 for IPv6; Linux applies it to IPv4 as well). Hosts a node runs are Linux,
  and overlapping fragments are the classic way to make a monitor see other bytes than the
  receiver: refusing them means we never show a body the server did not get.
* **Inconsistent fragments discard the datagram**, as Linux does (``ip_frag_queue``,
  ``ip6_frag_queue``): an empty fragment, a last fragment that disagrees with an earlier one
  about the length or ends before bytes already received, a fragment past a known length, a
  non-last IPv6 fragment whose length is not a multiple of 8 (Linux truncates such an IPv4
  one to a multiple of 8, and so do we), a fragment cut short by the capture's snap length.
* **The datagram's time** is that of the fragment that completed it (the last to arrive).

Limits (`FragmentLimits`), each with what happens when it is reached; every discarded datagram
is counted once in `FragmentStats` by reason, and its fragments in ``dropped``. Its bytes never
reach TCP, which reports them as a gap exactly as for a lost packet.

* ``max_fragments`` per datagram (64: a 65,535-byte datagram needs at most 52 fragments on an
  IPv6 link, MTU ≥ 1280, and 45 at MTU 1500). One more discards the datagram (``too_large``).
* ``max_datagram_bytes`` (65,535, the most IPv4's total length and IPv6's payload length can
  say; smaller values are allowed): a fragment ending past it discards the datagram
  (``too_large``). It bounds what the length field would hold, as Linux does: IPv4's header
  plus the reassembled bytes, IPv6's extension headers before the fragment header plus them.
* ``max_datagrams`` in progress (1024): a new datagram past it evicts the oldest (``evicted``).
* ``max_buffered_bytes`` in total (4 MiB, Linux's ``ipfrag_high_thresh``): past it the oldest
  other datagrams are evicted (``evicted``). Linux refuses new fragments instead; evicting the
  oldest keeps a flood of never-completed datagrams from blocking new ones for 30 s, and is
  what the TCP reassembler does with its buffers too.
* ``timeout_ns`` (30 s in packet time, Linux's ``ipfrag_time``), counted from a datagram's first
  fragment: older datagrams are discarded (``timeout``) whenever a fragment arrives or
  `expire` is called.

Memory: the caller's frame is kept, not copied (it is the bytes object the capture produced);
``buffered_bytes`` counts the frames' full size.

Each piece also keeps a caller-chosen ``tag`` (the decoder passes the captured frames, so the
pipeline can file every fragment of a datagram in its connection's pcap); `add` returns the
tags of a completed datagram's fragments in arrival order, duplicates included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from capture.counters import Counters

_SECOND_NS = 1_000_000_000
IP_MAX_DATAGRAM = 65_535

__all__ = [
    "IP_MAX_DATAGRAM",
    "FragmentLimits",
    "FragmentReassembler",
    "FragmentStats",
    "Reassembled",
]


@dataclass(frozen=True, slots=True)
class FragmentLimits:
    """Every bound the reassembler keeps; what happens at each is in the module docstring."""

    max_fragments: int = 64
    max_datagram_bytes: int = IP_MAX_DATAGRAM
    max_datagrams: int = 1024
    max_buffered_bytes: int = 4 << 20
    timeout_ns: int = 30 * _SECOND_NS

    def __post_init__(self) -> None:
        if self.max_fragments < 1 or self.max_datagrams < 1 or self.timeout_ns <= 0:
            raise ValueError("max_fragments, max_datagrams and timeout_ns must be positive")
        if not 8 <= self.max_datagram_bytes <= IP_MAX_DATAGRAM:
            raise ValueError(f"max_datagram_bytes must be within 8..{IP_MAX_DATAGRAM}")
        # One datagram at its largest must fit, or it could never complete.
        if self.max_buffered_bytes < self.max_datagram_bytes:
            raise ValueError("max_buffered_bytes must be at least max_datagram_bytes")


_FRAGMENT_COUNTERS = "reassembled dropped duplicate timeout overlap too_large evicted invalid"


class FragmentStats(Counters):
    """Counters. ``reassembled`` and the discard reasons (``timeout``, ``overlap``,
    ``too_large``, ``evicted``, ``invalid``) count datagrams; ``dropped`` counts the fragments
    (calls to `add`) whose bytes were discarded, for any reason; ``duplicate`` counts fragments
    that brought no new bytes (kept for their tag, then reassembled or dropped with the rest)."""

    FIELDS: ClassVar[tuple[str, ...]] = tuple(_FRAGMENT_COUNTERS.split())
    reassembled: int
    dropped: int
    duplicate: int
    timeout: int
    overlap: int
    too_large: int
    evicted: int
    invalid: int

    def __init__(self) -> None:
        super().__init__(_FRAGMENT_COUNTERS)


class _Datagram:
    """One datagram in progress. ``pieces`` are (offset, end, buffer, start in buffer), never
    overlapping; ``tags`` has one entry per accepted fragment, duplicates included."""

    __slots__ = ("first_ns", "high", "length", "nbytes", "nxt", "pieces", "received", "tags")

    def __init__(self, first_ns: int) -> None:
        self.first_ns = first_ns
        self.pieces: list[tuple[int, int, bytes, int]] = []
        self.tags: list[Any] = []
        self.received = 0  # bytes in pieces
        self.high = 0  # highest end received
        self.length = -1  # the datagram's length, once the last fragment is in
        self.nbytes = 0  # buffered_bytes charged to this datagram
        self.nxt = -1  # IPv6: the next header of the fragment at offset 0


class Reassembled:
    """A completed datagram: its reassembled payload (what followed the IPv4 header or the IPv6
    fragment header), the IPv6 next header of its first fragment (-1 for IPv4) and the tags of
    its fragments in arrival order."""

    __slots__ = ("nxt", "payload", "tags")

    def __init__(self, payload: bytes, nxt: int, tags: list[Any]) -> None:
        self.payload = payload
        self.nxt = nxt
        self.tags = tags


class FragmentReassembler:
    """Datagrams in progress, bounded by `FragmentLimits`; one per decoder."""

    __slots__ = ("_buffered", "_datagrams", "limits", "stats")

    def __init__(self, limits: FragmentLimits | None = None) -> None:
        self.limits = limits or FragmentLimits()
        self.stats = FragmentStats()
        # Insertion order is first-fragment order: the oldest datagram is always first, which
        # makes timeout and eviction O(1) each.
        self._datagrams: dict[tuple[Any, ...], _Datagram] = {}
        self._buffered = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def pending_datagrams(self) -> int:
        return len(self._datagrams)

    @property
    def pending_fragments(self) -> int:
        return sum(len(dg.tags) for dg in self._datagrams.values())

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    # -- input ----------------------------------------------------------------------------

    def ipv4(
        self,
        ts_ns: int,
        src: bytes,
        dst: bytes,
        proto: int,
        ident: int,
        flags_offset: int,
        buf: bytes,
        start: int,
        stop: int,
        ihl: int,
        tag: Any = None,
        cut: bool = False,
    ) -> Reassembled | None:
        """An IPv4 fragment: its data is ``buf[start:stop]``; ``flags_offset`` is the header's
        16-bit flags/fragment-offset field; ``ihl`` the header's length in bytes (it counts in
        the 65,535-byte bound). ``cut``: the capture cut the fragment short."""
        more = bool(flags_offset & 0x2000)
        if more and (stop - start) & 7:
            stop -= (stop - start) & 7  # RFC 791: non-last fragments are 8-byte multiples
        return self.add(
            ts_ns,
            (src, dst, proto, ident),
            (flags_offset & 0x1FFF) << 3,
            more,
            buf,
            start,
            stop,
            ihl,
            tag=tag,
            cut=cut,
        )

    def ipv6(
        self,
        ts_ns: int,
        src: bytes,
        dst: bytes,
        ident: int,
        nxt: int,
        offset_flags: int,
        buf: bytes,
        start: int,
        stop: int,
        ext_len: int,
        tag: Any = None,
        cut: bool = False,
    ) -> Reassembled | None:
        """An IPv6 fragment: ``nxt`` and ``offset_flags`` are the fragment header's next header
        and 16-bit offset/M field, ``ident`` its identification; the data is ``buf[start:stop]``
        (what follows the fragment header); ``ext_len`` the bytes of the extension headers
        before the fragment header, which count in the reassembled payload length (RFC 8200
        4.5)."""
        more = bool(offset_flags & 1)
        if more and (stop - start) & 7:
            # RFC 8200 4.5: a non-last fragment whose length is not a multiple of 8 is an error
            # (Linux answers with an ICMP parameter problem); its datagram cannot complete.
            self._reject(ts_ns, (src, dst, ident), "invalid")
            return None
        return self.add(
            ts_ns,
            (src, dst, ident),
            offset_flags & 0xFFF8,
            more,
            buf,
            start,
            stop,
            ext_len,
            nxt=nxt,
            tag=tag,
            cut=cut,
        )

    def add(
        self,
        ts_ns: int,
        key: tuple[Any, ...],
        offset: int,
        more: bool,
        buf: bytes,
        start: int,
        stop: int,
        header_len: int = 0,
        *,
        nxt: int = -1,
        tag: Any = None,
        cut: bool = False,
    ) -> Reassembled | None:
        """One fragment of the datagram ``key``: bytes ``buf[start:stop]`` at ``offset``,
        ``more`` unless it is the last. Returns the datagram when this fragment completes it."""
        datagrams = self._datagrams
        if datagrams:
            self.expire(ts_ns)
        limits = self.limits
        stats = self.stats
        end = offset + (stop - start)
        dg = datagrams.get(key)
        if dg is None:
            if len(datagrams) >= limits.max_datagrams:
                self._discard(next(iter(datagrams)), "evicted")
            dg = datagrams[key] = _Datagram(ts_ns)
        if cut or stop <= start:
            self._discard(key, "invalid", 1)
            return None
        if header_len + end > limits.max_datagram_bytes or len(dg.tags) >= limits.max_fragments:
            self._discard(key, "too_large", 1)
            return None
        if not more:
            if end < dg.high or (dg.length >= 0 and end != dg.length):
                self._discard(key, "invalid", 1)
                return None
            dg.length = end
        elif dg.length >= 0 and end > dg.length:
            self._discard(key, "invalid", 1)
            return None
        # Overlap test against the pieces held: none, all inside what was received, or partial.
        covered = 0
        for p_off, p_end, _, _ in dg.pieces:
            if p_off < end and offset < p_end:
                covered += min(end, p_end) - max(offset, p_off)
        if covered:
            if covered != end - offset:
                self._discard(key, "overlap", 1)
                return None
            stats.duplicate += 1  # nothing new: the first copy's bytes stand
        else:
            dg.pieces.append((offset, end, buf, start))
            dg.received += end - offset
            if end > dg.high:
                dg.high = end
        if offset == 0 and nxt >= 0 and not covered:
            dg.nxt = nxt
        dg.tags.append(tag)
        size = len(buf)
        dg.nbytes += size
        self._buffered += size
        if self._buffered > limits.max_buffered_bytes:
            for old in list(datagrams):
                if self._buffered <= limits.max_buffered_bytes:
                    break
                if old != key:
                    self._discard(old, "evicted")
        if dg.received != dg.length:
            return None
        # Complete: the pieces tile [0, length) (no overlaps, all within it, sum == length).
        del datagrams[key]
        self._buffered -= dg.nbytes
        stats.reassembled += 1
        dg.pieces.sort()
        payload = b"".join([b[s : s + e - o] for o, e, b, s in dg.pieces])
        return Reassembled(payload, dg.nxt, dg.tags)

    def expire(self, now_ns: int) -> None:
        """Discards datagrams whose first fragment is more than ``timeout_ns`` older than
        ``now_ns`` (packet time). Called by `add`; call it when time passes without fragments."""
        datagrams = self._datagrams
        timeout = self.limits.timeout_ns
        while datagrams:
            key = next(iter(datagrams))
            if now_ns - datagrams[key].first_ns <= timeout:
                break
            self._discard(key, "timeout")

    # -- internals ------------------------------------------------------------------------

    def _reject(self, ts_ns: int, key: tuple[Any, ...], reason: str) -> None:
        """A fragment that dooms its datagram before it is looked at: discard both."""
        if self._datagrams:
            self.expire(ts_ns)
        if key in self._datagrams:
            self._discard(key, reason, 1)
        else:
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            self.stats.dropped += 1

    def _discard(self, key: tuple[Any, ...], reason: str, extra: int = 0) -> None:
        """Forgets a datagram: counted once under ``reason``; its fragments, and ``extra``
        more (the one being refused), in ``dropped``."""
        dg = self._datagrams.pop(key)
        self._buffered -= dg.nbytes
        stats = self.stats
        setattr(stats, reason, getattr(stats, reason) + 1)
        stats.dropped += len(dg.tags) + extra
