"""Entries resolved with pre-serialised objects (kshark.k8s.index: Fragments) are stored byte for
byte as with plain dicts, and read back (KFL, the summary form) as users expect."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from capture.entries import Identity, summarize
from capture.pipeline import Pipeline
from kshark.k8s.index import ResolutionIndex
from kshark.kfl import compile_query
from kshark.store import PreparedBatch
from scripts.make_k8s_fixtures import connection
from tests.k8s.test_index import eps, node, pod, service, settled

S = 1_000_000_000


class Decoded:
    """The same index answering with plain dicts (what the entries held before Fragments)."""

    def __init__(self, index: ResolutionIndex) -> None:
        self.index = index

    def resolve(self, ip: str, port: int, ts_ns: int) -> dict[str, Any] | None:
        return self.index.lookup(ip, port, ts_ns)


def stored(resolver: Any) -> list[bytes]:
    pipeline = Pipeline(Identity("10.0.0.1:30001", "10.0.0.1", "node-a", resolver=resolver),
                        itertools.count(1).__next__)  # fmt: skip
    conns = [
        (("10.244.1.30", 41000), ("10.244.1.20", 8080), "/by-pod-and-service"),
        (("10.244.1.20", 41001), ("10.96.0.20", 80), "/to-the-cluster-ip"),
        (("10.0.0.11", 41002), ("10.244.1.30", 9000), "/from-the-node"),
        (("192.0.2.7", 41003), ("10.244.1.20", 9999), "/unknown-and-unlisted-port"),
    ]
    for i, (client, server, path) in enumerate(conns):
        for ts, frame in connection(20 * S + i * 1_000_000, client, server, path):
            pipeline.feed(ts, 1, frame)
    pipeline.finish()
    batch = PreparedBatch(pipeline.pop_output())
    assert not batch.invalid
    return [data for _, _, _, data in batch.entries]


def test_stored_entries_are_byte_identical_to_those_made_of_plain_dicts() -> None:
    index = settled(
        pods=[pod("shop", "cart-1", "10.244.1.20", labels={"app": "cart", "tier": "b"}),
              pod("shop", "debug", "10.244.1.30")],
        nodes=[node("node-a", "10.0.0.11")],
        services=[service("shop", "cart", "10.96.0.20")],
        endpointslices=[eps("shop", "cart-x1", "cart", ["10.244.1.20"], [8080])],
    )  # fmt: skip
    fragments = stored(index)
    assert fragments == stored(Decoded(index))
    entries = {e["request"]["path"]: e for e in map(orjson.loads, fragments)}
    assert len(entries) == 4

    # What a user reads of them: KFL on the stored entry, and its summary form.
    q = compile_query('dst.pod.metadata.labels.app == "cart" and src.name == "debug"')
    assert [p for p, e in entries.items() if q.match(e)] == ["/by-pod-and-service"]
    q = compile_query('dst.service.metadata.name == "cart" and dst.endpointSlice == null')
    assert [p for p, e in entries.items() if q.match(e)] == ["/to-the-cluster-ip"]
    first = summarize(entries["/by-pod-and-service"])
    assert first["dst"]["pod"]["metadata"] == {"name": "cart-1", "namespace": "shop"}
    assert first["dst"]["service"] == {"metadata": {"name": "cart", "namespace": "shop"}}
    assert first["src"]["name"] == "debug"
    node_side = entries["/from-the-node"]["src"]
    assert (node_side["name"], node_side["pod"], node_side["service"]) == ("node-a", None, None)
    unknown = entries["/unknown-and-unlisted-port"]
    assert (unknown["src"]["name"], unknown["src"]["pod"]) == ("", None)
    assert unknown["dst"]["pod"]["metadata"]["name"] == "cart-1"
