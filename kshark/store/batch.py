"""What a write takes: a pipeline batch (`StoreOutput`), or one prepared ahead of the write
(`PreparedBatch`: entries serialised, packets framed; any thread, any time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import orjson

from capture.pcapwrite import RecordGroup, group_records
from kshark.store import names, pcapfile

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_SORT_KEYS = orjson.OPT_SORT_KEYS


class StoreOutput(Protocol):
    """What `write()` consumes: capture.pipeline.Output has this shape (duck typing, so the store
    does not import the pipeline)."""

    @property
    def entries(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def packets(self) -> Sequence[tuple[int, int, int, bytes]]: ...

    @property
    def closed_streams(self) -> Sequence[int]: ...


class PreparedBatch:
    """A pipeline batch with the work that needs no store state done: entries serialised
    (compact, sorted keys) with their entryFile checked, packets framed as pcap records grouped
    per connection.

    Made by `Store.prepare_write` (any thread, any time); `Store.begin_write` takes it instead
    of the batch and has only the decisions left (which stream, which file, duplicates across
    batches, which buffers to write). `nbytes` is what it holds (entry JSON and pcap records);
    `extend` appends a later one, so a writer can serialise a batch step by step and see its
    size as it grows.
    """

    __slots__ = ("_names", "closed_streams", "entries", "invalid", "nbytes", "packets")

    def __init__(self, out: StoreOutput) -> None:
        # (entryFile, stream, index, JSON bytes) per valid entry, and why each other one is not
        self.entries: list[tuple[str, int, int, bytes]] = []
        self.invalid: list[str] = []
        # The packets as pcap records, per (stream, link type) in order of first appearance
        self.packets: list[RecordGroup] = []
        self.closed_streams = list(out.closed_streams)
        self.nbytes = 0
        self._names: set[str] = set()
        if out.entries:
            self._add_entries(out.entries)
        if out.packets:
            # Compiled with the packet side (capture/pcapwrite.py): no Python step per packet.
            packets = out.packets
            self.packets = group_records(
                packets if type(packets) is list else list(packets), pcapfile.SNAPLEN
            )
            for group in self.packets:
                self.nbytes += group.size

    def _add_entries(self, entries: Sequence[Mapping[str, Any]]) -> None:
        parse = names.parse_entry_file
        dumps = orjson.dumps
        seen = self._names
        size = 0
        for entry in entries:
            name = entry.get("entryFile")
            parsed = parse(name) if isinstance(name, str) else None
            if parsed is None:
                self.invalid.append(f"entryFile {name!r} is not a valid entry file name")
                continue
            assert isinstance(name, str)
            if name in seen:
                self.invalid.append(f"{name} was already written; the duplicate is dropped")
                continue
            try:
                data = dumps(entry, option=_SORT_KEYS)
            except orjson.JSONEncodeError as exc:
                self.invalid.append(f"{name}: cannot be serialised ({exc})")
                continue
            seen.add(name)
            size += len(data)
            self.entries.append((name, parsed[0], parsed[1], data))
        self.nbytes += size

    def extend(self, later: PreparedBatch) -> None:
        """Append a batch prepared from the pipeline's next output: the result is what one
        batch made of both outputs, in order, would be."""
        for entry in later.entries:
            if entry[0] in self._names:
                self.invalid.append(f"{entry[0]} was already written; the duplicate is dropped")
                continue
            self._names.add(entry[0])
            self.entries.append(entry)
            self.nbytes += len(entry[3])
        self.invalid += later.invalid
        self.packets += later.packets
        self.closed_streams += later.closed_streams
        for group in later.packets:
            self.nbytes += group.size
