"""capture/pipeline.py: what the whole chain counts and reports, on crafted conversations."""

from __future__ import annotations

import base64
import gzip
import struct

import pytest

from capture.http1 import HttpLimits
from capture.pcapwrite import group_records
from capture.pipeline import PipelineLimits
from tests.support.flows import T0, TcpFlow, ether, run


def exchange(flow: TcpFlow, request: bytes, response: bytes) -> None:
    flow.client_sends(request)
    flow.ack(False)
    flow.server_sends(response)
    flow.ack(True)


def test_every_entry_with_an_error_is_counted_also_undecodable_content() -> None:
    flow = TcpFlow()
    flow.handshake()
    exchange(
        flow,
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    bad = b"not gzip at all"
    exchange(
        flow,
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(bad), bad),
    )
    exchange(
        flow,
        b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    )
    flow.close()
    out, pipeline = run(flow.frames)
    errors = [e["error"] for e in out.entries]
    assert errors[0] is None and errors[2] is None
    assert errors[1]["type"] == "dissection" and "not decoded" in errors[1]["msg"]
    stats = pipeline.stats()
    assert stats["entries"] == 3
    assert stats["entries_with_error"] == 1 == sum(1 for e in errors if e is not None)
    assert stats["errors_dissection"] == 1


S = 1_000_000_000
TS_MAX = 0xFFFFFFFF * S + 999_999_999  # the last nanosecond a pcap record holds (2106)


def conversation(ts: int, n: int = 2) -> TcpFlow:
    flow = TcpFlow(ts=ts)
    flow.handshake()
    for i in range(n):
        exchange(
            flow,
            b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
    flow.close()
    return flow


@pytest.mark.parametrize(
    ("start", "bound"),
    [
        (0xFFFFFFFF * S + 999_000_000, TS_MAX),  # pcap ts_sec = 0xFFFFFFFF, then past it
        ((1 << 64) * S, TS_MAX),  # pcapng 64-bit units in seconds (if_tsresol 0)
        (-3_600 * S, 0),  # a negative if_tsoffset
        (-(1 << 80), 0),
    ],
)
def test_out_of_range_times_are_clamped_counted_and_flagged(start: int, bound: int) -> None:
    flow = conversation(start)
    out, pipeline = run(flow.frames)
    outside = sum(1 for ts, _, _ in flow.frames if not 0 <= ts <= TS_MAX)
    assert outside > 0
    assert pipeline.stats()["timestamps_clamped"] == outside
    assert [e["request"]["path"] for e in out.entries] == ["/0", "/1"]
    for e in out.entries:
        assert e["timestamp"] == bound // 1_000_000
        assert (
            e["error"]["type"] == "dissection" and "capture time out of range" in e["error"]["msg"]
        )
        assert e["response"]["status"] == 200
    # what the store does with the packets: pcap records, no exception
    groups = group_records(out.packets, 262144)
    assert sum(g.count for g in groups) == len(out.packets) == len(flow.frames)


def test_one_damaged_time_does_not_end_the_other_connections() -> None:
    """A single record dated 2106 in an ordinary capture is no clock: connections that are
    still open are not timed out by it, and only its own entry (none here: a pure ACK) is
    flagged."""
    flow = conversation(T0, n=1)
    frames = list(flow.frames)
    # the server's ACK of the request, repeated with an impossible time, before the response
    _, lt, frame = frames[4]
    frames.insert(5, (0xFFFFFFFF * S + 5 * S, lt, frame))
    out, pipeline = run(frames)
    assert pipeline.stats()["timestamps_clamped"] == 1
    assert [e["error"] for e in out.entries] == [None]
    assert pipeline.stats()["tcp_closed_timeout"] == 0


def dsack_option(left: int, right: int) -> bytes:
    return b"\x01\x01\x05\x0a" + left.to_bytes(4, "big") + right.to_bytes(4, "big")


def test_mid_connection_capture_starting_with_a_one_byte_keep_alive() -> None:
    """The capture starts on a long-lived connection with a Windows keep-alive (one stale
    byte at SND.NXT - 1), which the server D-SACKs; then a request and its response. The
    byte is not data: the request is read, and its 200 is paired with it."""
    flow = TcpFlow(cisn=70_000, sisn=90_000)
    flow.segment(True, b"\x00", seq=flow.cseq - 1)
    flow.ack(False, options=dsack_option(flow.cseq - 1, flow.cseq))
    exchange(
        flow,
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    out, pipeline = run(flow.frames)
    assert [(e["request"]["path"], e["response"]["status"], e["error"]) for e in out.entries] == [
        ("/x", 200, None)
    ]
    assert pipeline.stats()["tcp_keepalives"] == 1


def test_a_response_decoding_to_10_mib_keeps_max_body_of_it() -> None:
    big = bytes(range(256)) * (40 << 10)
    gz = gzip.compress(big, 6)
    flow = TcpFlow()
    flow.handshake()
    exchange(
        flow,
        b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gz), gz),
    )
    flow.close()
    out, _ = run(flow.frames)
    (entry,) = out.entries
    content = entry["response"]["content"]
    assert content["size"] == 10 << 20 and content["_truncated"] is True
    assert base64.b64decode(content["text"]) == big[: 1 << 20]  # --max-body's default
    assert entry["response"]["bodySize"] == len(gz) and entry["error"] is None


def test_pipelined_requests_never_answered_keep_bounded_bodies_and_say_so() -> None:
    limits = PipelineLimits(http=HttpLimits(max_pending_body=200_000))
    flow = TcpFlow()
    flow.handshake()
    body = b"b" * 50_000
    post = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 50000\r\n\r\n" + body
    flow.client_sends(post * 40)
    flow.close()
    out, pipeline = run(flow.frames, limits)
    assert len(out.entries) == 40
    kept = [e for e in out.entries if e["request"]["postData"]["text"] == body.decode()]
    cut = [e for e in out.entries if e["request"]["postData"].get("_truncated")]
    assert len(kept) == 4 and len(cut) == 36 and not set(map(id, kept)) & set(map(id, cut))
    assert all(e["request"]["bodySize"] == 50_000 for e in out.entries)
    stats = pipeline.stats()
    assert stats["http_waiting_bodies_cut"] == 36
    assert stats["http_waiting_body_bytes_dropped"] == 36 * 50_000


def vxlan(frame: bytes, port: int = 4789) -> bytes:
    """frame (Ethernet) as a Kubernetes overlay node sees it: in VXLAN over UDP over IPv4."""
    inner = b"\x08\x00\x00\x00\x00\x00\x2a\x00" + frame
    udp = struct.pack("!HHHH", 40000, port, 8 + len(inner), 0) + inner
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )  # fmt: skip
    return ether(ip + udp)


@pytest.mark.parametrize("port", [4789, 8472])
def test_pod_traffic_in_vxlan_gives_the_same_entries(port: int) -> None:
    flow = conversation(T0)
    plain, _ = run(flow.frames)
    wrapped, pipeline = run([(ts, lt, vxlan(frame, port)) for ts, lt, frame in flow.frames])
    assert [e["request"]["path"] for e in wrapped.entries] == ["/0", "/1"]
    assert [{**e, "id": 0} for e in wrapped.entries] == [{**e, "id": 0} for e in plain.entries]
    assert pipeline.stats()["decode_tcp"] == len(flow.frames)
    assert pipeline.undecoded_text() == "0 frames not decoded"


def test_frames_not_decoded_are_counted_and_said() -> None:
    flow = conversation(T0, n=1)
    frames = [*flow.frames, (T0, 147, b"\x00" * 60), (T0, 147, b"\x00" * 60)]
    esp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 48, 0, 0, 64, 50, 0, bytes(4), bytes(4)) + bytes(28)
    frames.append((T0, 1, ether(esp)))
    out, pipeline = run(frames)
    assert len(out.entries) == 1
    stats = pipeline.stats()
    assert (stats["decode_undecoded"], stats["decode_undecoded_linktype_147"]) == (3, 2)
    assert stats["decode_undecoded_esp"] == 1
    assert pipeline.undecoded_text() == "3 frames not decoded (esp: 1, linktype_147: 2)"
