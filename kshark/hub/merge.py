"""Putting several workers' streams into one (pure: time is passed in).

By default the hub forwards entries in arrival order, as Kubeshark's hub does: lowest latency,
and each worker's entries stay in that worker's write order. A client that asks for
`"ordered": true` gets them through a `ReorderBuffer`, which releases entries in `timestamp`
order within a bounded window:

- an entry is held at most `window` seconds after it reached the hub;
- when it is released, every held entry with a smaller (or equal, earlier-arrived) timestamp is
  released first, so what leaves the buffer is always sorted;
- at most `max_items` entries are held; one more releases the oldest-timestamped one at once.

So the output is in timestamp order whenever entries reach the hub less than `window` apart from
their neighbours in time; an entry later than that (a worker that was down, a slow link) is
sent as soon as its own window expires, behind newer ones already sent, never dropped. Each
worker's own stream is in write order, which is close to but not exactly timestamp order
(`timestamp` is when the request started; entries are written when the response completed), so
the buffer also straightens a single worker's order within the window.

`Quota` is the stream's `limit(n)`: it counts entries delivered to the client from all workers
together, not per worker.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Entries keyed by timestamp, released in timestamp order after at most `window` seconds."""

    __slots__ = ("_arrivals", "_heap", "_n", "_released", "max_items", "window")

    def __init__(self, window: float, max_items: int) -> None:
        if window < 0 or max_items < 1:
            raise ValueError("window must be >= 0 and max_items >= 1")
        self.window = window
        self.max_items = max_items
        self._heap: list[tuple[int, int, T]] = []  # (timestamp, arrival number, item)
        # (arrived at, arrival number, timestamp), oldest first; entries already released
        # through the heap stay here until they reach the front (`_released` names them).
        self._arrivals: deque[tuple[float, int, int]] = deque()
        self._released: set[int] = set()
        self._n = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, timestamp: int, item: T, now: float) -> None:
        n = self._n
        self._n = n + 1
        heapq.heappush(self._heap, (timestamp, n, item))
        self._arrivals.append((now, n, timestamp))
        if len(self._arrivals) > 2 * self.max_items + 16:
            self._compact()

    def pop_ready(self, now: float) -> list[T]:
        """Entries due at `now`, in timestamp order (possibly none)."""
        out: list[T] = []
        heap = self._heap
        while len(heap) > self.max_items:
            out.append(self._pop())
        arrivals = self._arrivals
        released = self._released
        window = self.window
        while arrivals:
            arrived, n, ts = arrivals[0]
            if n in released:
                arrivals.popleft()
                released.discard(n)
                continue
            if now - arrived < window:
                break
            # The oldest waiting entry is due: it and everything that sorts before it go out.
            key = (ts, n)
            while heap and (heap[0][0], heap[0][1]) <= key:
                out.append(self._pop())
        return out

    def next_deadline(self) -> float | None:
        """When `pop_ready` will next release something (None: nothing is held)."""
        for arrived, n, _ in self._arrivals:
            if n not in self._released:
                return arrived + self.window
        return None

    def drain(self) -> list[T]:
        """Everything held, in timestamp order."""
        out = [item for _, _, item in sorted(self._heap)]
        self._heap.clear()
        self._arrivals.clear()
        self._released.clear()
        return out

    def _pop(self) -> T:
        _, n, item = heapq.heappop(self._heap)
        self._released.add(n)
        return item

    def _compact(self) -> None:
        # Released entries waiting to reach the front of `_arrivals` are dropped from it, so its
        # size stays within the entries actually held.
        released = self._released
        self._arrivals = deque(a for a in self._arrivals if a[1] not in released)
        released.clear()


class Quota:
    """`limit(n)` for one client stream, across every worker: `take()` says whether the entry
    just delivered was the last one. `None` means no limit."""

    __slots__ = ("remaining",)

    def __init__(self, limit: int | None) -> None:
        self.remaining = limit

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def take(self) -> bool:
        if self.remaining is None:
            return False
        self.remaining -= 1
        return self.remaining <= 0
