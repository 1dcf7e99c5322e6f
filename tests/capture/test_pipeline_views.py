"""One connection captured at several points of a node is one connection (capture.pipeline).

On a Kubernetes node `--iface any` sees a pod's packets on its veth, on the bridge and on the
uplink. Copies with the same 4-tuple are retransmissions to the reassembler; a Service's DNAT
gives the copies past it other addresses and ports, but the same initial sequence numbers. The
frames below are what a node's `any` socket delivers, in its order: view 1 is the client pod's
veth (before DNAT, to the ClusterIP), view 2 the uplink (after DNAT, to the backend pod).
tests/live/test_node_views.py does the same with real namespaces, a bridge and nftables DNAT.
"""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import CookedLinux

from capture.entries import Identity
from capture.pipeline import Pipeline

LINKTYPE_LINUX_SLL = 113
T0 = 1_700_000_000_000_000_000
CLIENT = ("10.244.1.7", 41000)
CLUSTER_IP = ("10.96.0.10", 80)
BACKEND = ("10.244.2.9", 8080)
REQUEST = b"GET /cart HTTP/1.1\r\nHost: cart\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _frame(src: tuple[str, int], dst: tuple[str, int], flags: str, seq: int, ack: int,
           payload: bytes = b"") -> bytes:  # fmt: skip
    pkt = (
        CookedLinux(pkttype=0)
        / IP(src=src[0], dst=dst[0])
        / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=65535)
    )
    return bytes(pkt / payload) if payload else bytes(pkt)


def _conversation(server: tuple[str, int], cisn: int, sisn: int) -> list[list[bytes]]:
    """A whole HTTP exchange as one view sees it; step by step, so views can be interleaved."""
    c, s = cisn, sisn
    q, r = len(REQUEST), len(RESPONSE)
    return [
        [_frame(CLIENT, server, "S", c, 0)],
        [_frame(server, CLIENT, "SA", s, c + 1)],
        [_frame(CLIENT, server, "A", c + 1, s + 1)],
        [_frame(CLIENT, server, "PA", c + 1, s + 1, REQUEST)],
        [_frame(server, CLIENT, "PA", s + 1, c + 1 + q, RESPONSE)],
        [_frame(CLIENT, server, "FA", c + 1 + q, s + 1 + r)],
        [_frame(server, CLIENT, "FA", s + 1 + r, c + 2 + q)],
        [_frame(CLIENT, server, "A", c + 2 + q, s + 2 + r)],
    ]


def _run(
    frames: list[bytes], times: list[int] | None = None
) -> tuple[list[dict[str, Any]], Pipeline]:
    """Frames 1 µs apart from a fixed time, or at `times` (ns)."""
    streams = iter(range(1, 1000))
    p = Pipeline(Identity("w:1", "10.0.0.1", "node-a"), lambda: next(streams))
    for i, frame in enumerate(frames):
        ts = times[i] if times is not None else T0 + i * 1000
        p.feed(ts, LINKTYPE_LINUX_SLL, frame)
    p.finish()
    return p.pop_output().entries, p


def _interleave(*views: list[list[bytes]]) -> list[bytes]:
    """Step by step: what the client sends passes the views in order (veth first), what the
    server sends in reverse order (uplink first)."""
    out: list[bytes] = []
    for step in zip(*views, strict=True):
        from_server = CookedLinux(step[0][0])[TCP].sport != CLIENT[1]
        for copies in reversed(step) if from_server else step:
            out.extend(copies)
    return out


def test_a_connection_seen_before_and_after_dnat_is_one_entry() -> None:
    before = _conversation(CLUSTER_IP, 1000, 900_000)
    after = _conversation(BACKEND, 1000, 900_000)
    entries, p = _run(_interleave(before, after))
    assert len(entries) == 1
    (e,) = entries
    # The first view recognised (the client's: its request passes the veth first) is kept.
    assert (e["dst"]["ip"], e["dst"]["port"]) == ("10.96.0.10", "80")
    assert (e["request"]["path"], e["response"]["status"]) == ("/cart", 200)
    assert p.counters["duplicate_views"] == 1
    assert p.counters["http_connections"] == 1
    assert p.stats()["open_connections"] == 0  # both views closed, nothing kept


def test_copies_on_the_veth_and_the_bridge_are_one_entry() -> None:
    veth = _conversation(CLUSTER_IP, 7, 70)
    bridge = _conversation(CLUSTER_IP, 7, 70)
    uplink = _conversation(BACKEND, 7, 70)
    entries, p = _run(_interleave(veth, bridge, uplink))
    assert [(e["dst"]["ip"], e["request"]["path"]) for e in entries] == [("10.96.0.10", "/cart")]
    assert (
        p.counters["duplicate_views"] == 1
    )  # the uplink's; the bridge's copies were retransmissions


def test_two_connections_are_two_entries_even_to_the_same_backend() -> None:
    first = _conversation(CLUSTER_IP, 1000, 900_000)
    other = _conversation(BACKEND, 2000, 900_000)  # another client ISN: another connection
    entries, p = _run(_interleave(first, other))
    assert len(entries) == 2
    assert p.counters["duplicate_views"] == 0


def test_a_view_that_returns_after_the_first_closed_is_not_suppressed_forever() -> None:
    # The key is forgotten with the connection: a later connection that happens to draw the
    # same pair of ISNs (one in 2**64) is not taken for a copy of a closed one.
    first = [f for step in _conversation(CLUSTER_IP, 5, 50) for f in step]
    later = [f for step in _conversation(BACKEND, 5, 50) for f in step]
    entries, p = _run(first + later)
    assert len(entries) == 2
    assert p.counters["duplicate_views"] == 0


def test_equal_isns_seconds_apart_are_two_connections() -> None:
    # Crafted captures reuse fixed ISNs: a second connection that opens 2 s after the first
    # (still open) is not the same packets seen twice, whatever its ISNs.
    first = [f for step in _conversation(CLUSTER_IP, 5, 50) for f in step]
    second = [f for step in _conversation(BACKEND, 5, 50) for f in step]
    # the first connection's handshake and request, the second connection whole, then the rest
    frames = first[:4] + second + first[4:]
    times = [T0 + i * 1000 for i in range(4)]
    times += [T0 + 2_000_000_000 + i * 1000 for i in range(len(second))]
    times += [T0 + 2_100_000_000 + i * 1000 for i in range(len(first) - 4)]
    entries, p = _run(frames, times)
    assert sorted(e["dst"]["port"] for e in entries) == ["80", "8080"]
    assert p.counters["duplicate_views"] == 0


def test_views_without_their_handshake_each_make_entries() -> None:
    # Connections already open when the capture started: no SYN, no ISNs, nothing to match
    # views by (docs/kubernetes.md says so). Both views make their entry.
    before = _conversation(CLUSTER_IP, 1000, 900_000)[3:]
    after = _conversation(BACKEND, 1000, 900_000)[3:]
    entries, p = _run(_interleave(before, after))
    assert len(entries) == 2
    assert p.counters["duplicate_views"] == 0
