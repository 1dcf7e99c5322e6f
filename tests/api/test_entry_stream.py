"""The worker's entry stream as a plain generator (kshark.api.entry_stream.entry_frames): what a
client is sent from its cursor, step by step, with no socket and no event loop."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from kshark.api.entry_stream import (
    BATCH_END,
    CAUGHT_UP,
    PAUSE,
    SEND_CHUNK_BYTES,
    ClientState,
    Entries,
    Gap,
    Step,
    StreamLimits,
    entry_frames,
)
from kshark.api.kfl_thread import EVAL_SLICE_SECONDS
from kshark.api.wire import StreamRequest
from kshark.kfl import compile_query
from kshark.store import Store
from tests.support.api import write_entries


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data") as s:
        yield s


def client_at(seq: int = 0) -> ClientState:
    return ClientState(
        id=1,
        remote="test",
        path="/api/wsFull",
        query="",
        json_frame=True,
        connected_at=0.0,
        seq=seq,
    )


def frames(
    store: Store, client: ClientState, query: str = "", limits: StreamLimits | None = None, **req
) -> Iterator[Step]:
    request = StreamRequest(query=query, **req)
    return entry_frames(
        store, client, request, compile_query(query), None, limits or StreamLimits()
    )


def until_caught_up(steps: Iterator[Step]) -> list[Step]:
    """The steps up to and including the first CAUGHT_UP (or the end of the stream)."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if step is CAUGHT_UP:
            break
    return out


def sent(steps: list[Step]) -> list[str]:
    return [text for step in steps if isinstance(step, Entries) for text in step.texts]


def stored(store: Store, seqs: range) -> list[str]:
    items, missed = store.read_after(seqs.start - 1, len(seqs))
    assert missed == 0
    return [data.decode() for _, data in items]


def test_history_goes_out_as_stored_then_the_stream_waits_and_goes_on(store: Store) -> None:
    write_entries(store, [{"path": f"/h/{i}"} for i in range(5)])
    client = client_at()
    steps = frames(store, client)
    first = until_caught_up(steps)
    # The first read takes one entry (sizes are unknown), the next the rest; each batch ends
    # with a chance for the event loop to run.
    assert first == [
        Entries(stored(store, range(1, 2))),
        BATCH_END,
        Entries(stored(store, range(2, 6))),
        BATCH_END,
        CAUGHT_UP,
    ]
    assert (client.seq, client.buffered_bytes) == (5, 0)
    # Nothing new: asked again, it is still caught up; after a write it goes on from there.
    assert next(steps) is CAUGHT_UP
    write_entries(store, [{"path": "/later"}])
    assert until_caught_up(steps) == [Entries(stored(store, range(6, 7))), BATCH_END, CAUGHT_UP]
    assert client.seq == 6


def test_no_history_starts_after_the_cursor(store: Store) -> None:
    write_entries(store, [{} for _ in range(3)])
    client = client_at(store.last_seq)
    steps = frames(store, client, history=False)
    assert next(steps) is CAUGHT_UP
    write_entries(store, [{"path": "/new"}])
    assert sent(until_caught_up(steps)) == stored(store, range(4, 5))


def test_a_filter_sends_matches_only_and_limit_ends_the_stream_at_the_last_one(
    store: Store,
) -> None:
    write_entries(store, [{"status": s} for s in (200, 500, 200, 500, 500, 200)])
    client = client_at()
    steps = list(frames(store, client, "response.status == 500 and limit(2)"))
    assert sent(steps) == [stored(store, range(2, 3))[0], stored(store, range(4, 5))[0]]
    assert CAUGHT_UP not in steps  # the generator ended: the sender closes with 1000
    assert client.seq == 4  # the second match: a reconnect after it misses nothing


def test_entries_retention_deleted_are_a_gap_from_a_cursor_not_for_history(
    tmp_path: Path,
) -> None:
    body = b"x" * 20_000
    with Store(tmp_path / "small", storage_limit=64 * 1024) as store:
        write_entries(store, [{"body": body} for _ in range(8)])
        first = store.read_after(0, 1)[0][0][0]
        assert first > 1  # retention deleted the oldest entries
        # A history stream never could have had them: no gap, it starts at the oldest left.
        history = until_caught_up(frames(store, client_at()))
        assert not any(isinstance(s, Gap) for s in history)
        assert sent(history) == stored(store, range(first, store.last_seq + 1))
        # From a cursor they are missed, and said so once, before what follows.
        client = client_at()
        resumed = until_caught_up(frames(store, client, since="cursor"))
        assert resumed[0] == Gap(first - 1)
        assert sent(resumed) == sent(history)
        assert client.seq == store.last_seq


def test_a_batch_larger_than_a_send_chunk_goes_out_in_pieces(store: Store) -> None:
    body = b"y" * (SEND_CHUNK_BYTES // 2)
    write_entries(store, [{"body": body} for _ in range(7)])
    client = client_at()
    steps = frames(store, client, limits=StreamLimits(batch_bytes=64 << 20))
    assert next(steps) == Entries(stored(store, range(1, 2)))  # the first read: one entry
    assert next(steps) is BATCH_END
    pieces = []
    for step in steps:
        if step is BATCH_END:
            break
        assert isinstance(step, Entries)
        # The cursor is at the piece's last entry while the piece is being sent.
        assert client.seq == 1 + sum(len(p) for p in pieces) + len(step.texts)
        assert sum(map(len, step.texts)) < SEND_CHUNK_BYTES + len(step.texts[-1])
        pieces.append(step.texts)
    assert len(pieces) > 1
    assert [t for p in pieces for t in p] == stored(store, range(2, 8))
    assert client.seq == 7


def test_filtering_a_long_batch_pauses_for_the_event_loop_and_loses_nothing(
    store: Store,
) -> None:
    write_entries(store, [{"status": 200 + i % 2} for i in range(40)])
    ticks = itertools.count()
    # Each look at the clock finds EVAL_SLICE_SECONDS / 4 more gone.
    clock = lambda: next(ticks) * EVAL_SLICE_SECONDS / 4  # noqa: E731
    client = client_at()
    request = StreamRequest(query="response.status == 201")
    steps = until_caught_up(
        entry_frames(
            store, client, request, compile_query(request.query), None, StreamLimits(), clock
        )
    )
    assert steps.count(PAUSE) >= 5
    assert sent(steps) == [t for t in stored(store, range(1, 41)) if '"status":201' in t]
    assert client.seq == 40


def test_a_summary_stream_sends_what_summarize_makes(store: Store) -> None:
    write_entries(store, [{"path": "/a"}, {"path": "/b"}])
    request = StreamRequest(query="")
    steps = entry_frames(
        store,
        client_at(),
        request,
        compile_query(""),
        lambda entry: {"path": entry["request"]["path"]},
        StreamLimits(),
    )
    assert sent(until_caught_up(steps)) == ['{"path":"/a"}', '{"path":"/b"}']
