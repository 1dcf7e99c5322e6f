"""What a relay hands a client stream (kshark.hub.relay → kshark.hub.stream): frames, and the
byte budget that bounds them. Its own module so that neither of the two imports the other."""

from __future__ import annotations

from typing import NamedTuple

import trio


class Frame(NamedTuple):
    """One message for a client: an entry, or (`entry` False) a worker state or gap frame, sent
    to JSON-frame clients only."""

    data: bytes  # the message payload (UTF-8 JSON), as the worker sent it for entries
    worker: str  # the worker's address
    timestamp: int  # the entry's timestamp: read only for "ordered" streams (0 otherwise)
    entry: bool


def control(data: str, worker: str) -> Frame:
    """A worker state or gap frame (JSON text) about `worker`."""
    return Frame(data.encode(), worker, 0, False)


class ByteBudget:
    """Bytes of entries held for one client between the relays and its websocket.

    The channel bounds entries by count; entries can be megabytes each, so their bytes are
    bounded too (HubLimits.client_buffer_bytes): a relay `acquire`s an entry's size before
    handing it over and waits while the budget is spent; the sender `release`s it once the
    entry is sent. When nothing is held any entry may go, however large (no deadlock).
    """

    __slots__ = ("_freed", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = trio.Event()

    async def acquire(self, n: int) -> None:
        while self.held and self.held + n > self.limit:
            await self._freed.wait()
        self.held += n

    def release(self, n: int) -> None:
        self.held -= n
        self._freed.set()
        self._freed = trio.Event()
