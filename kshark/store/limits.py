"""The store's bounds, in one value a Store is opened with (docs/store.md, "Limits").

The storage limit is the user's (`--storage-limit`) and is given on its own; these are the
store's own, which only tests change (small journal segments, a small entry cache).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STORAGE_LIMIT = 1 << 30


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """reservation_block: stream numbers are reserved on disk this many at a time, so allocating
        is a memory increment and a crash skips at most this many numbers (it never reuses one).
    pcap_buffer_per_stream, pcap_buffer_total: packets wait in memory until their stream has an
        entry in the batch, is closed, or its buffer passes pcap_buffer_per_stream; if all
        buffers together pass pcap_buffer_total, every buffer is written out. Buffering turns a
        packet into a list append instead of an open/write/close.
    recent_entries_max, recent_bytes_max: the newest entries' bytes, as written, so live
        followers do not read back a file that was written a moment ago. Oldest dropped first
        past either bound; entries retention deletes are dropped at once, so the cache never
        serves what the disk no longer has.
    retention_target: once usage passes the limit, oldest streams are deleted until it is under
        this share of it, so retention runs in bursts instead of on every write.
    retention_streams_per_write: past the limit, a write deletes as many streams as needed to
        get back under it at once; the rest of the way to the target goes at most this many
        streams per write, so deleting a few hundred MB of small files never stalls the event
        loop in one go.
    segment_lines: journal lines per segment file. Part of the on-disk format: a data
        directory must always be opened with the value it was written with (tests use small
        ones to cross segment borders).
    index_cache_segments: line-offset tables of older journal segments kept for readers that
        are behind (history, slow clients): each ≤ 4 × segment_lines bytes; four cover a reader
        that wanders across segment borders without re-reading.
    """

    reservation_block: int = 1024
    pcap_buffer_per_stream: int = 256 << 10
    pcap_buffer_total: int = 64 << 20
    recent_entries_max: int = 4096
    recent_bytes_max: int = 8 << 20
    retention_target: float = 0.9
    retention_streams_per_write: int = 512
    segment_lines: int = 65536
    index_cache_segments: int = 4
