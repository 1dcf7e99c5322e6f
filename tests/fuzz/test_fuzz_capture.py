"""Fuzzing the capture readers, the decoder, the dissector and the entries (issue 9).

Two kinds, both bounded and deterministic (seeded), so the suite stays fast and a failure
reproduces:

* a mutation loop over real captures (../shared/pcaps, fixtures/, fixtures/hostile): each round
  takes the start of one capture, damages it (bit flips, boundary values written over header
  fields, bytes deleted, duplicated, inserted, the file cut short; sometimes gzip-compressed
  first) and replays it through `CaptureFile` and a `Pipeline`, half of the time with tiny
  limits so every overflow path runs;
* hypothesis-built frames (Ethernet / IPv4 / TCP with drawn fields and HTTP-like payload
  pieces, on drawn link types) and damaged compressed bodies.

Nothing may escape but the documented `CaptureOpenError` of a file that is not a capture, and
what comes out must keep the invariants a user relies on (checked by `check_run`).
KSHARK_FUZZ_ROUNDS=N runs N rounds per seed group instead of the default (longer hunts).
"""

from __future__ import annotations

import base64
import gzip
import os
import random
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import brotli
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.content import decode_content
from capture.entries import Identity
from capture.http1 import HttpLimits
from capture.pcapwrite import group_records
from capture.pipeline import Pipeline, PipelineLimits
from capture.reassembly import ReassemblyLimits
from capture.segment import TS_MAX_NS
from capture.sources import CaptureFile, CaptureOpenError

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "pcaps"
CORPUS = sorted(
    [
        *SHARED.glob("*.pcap*"),
        *(REPO / "fixtures").glob("*.pcap*"),
        *(REPO / "fixtures" / "hostile").glob("*.pcap*"),
    ]
)
PREFIX = 64 << 10  # bytes of each seed capture a round starts from
ROUNDS = int(os.environ.get("KSHARK_FUZZ_ROUNDS", "25"))
GROUPS = 6  # seed groups (parametrized, so a failure names its seed)

IDENTITY = Identity(worker="127.0.0.1:30001", node_ip="127.0.0.1", node_name="fuzz")
TINY = PipelineLimits(
    reassembly=ReassemblyLimits(
        max_connections=4, max_buffered_per_conn=8 << 10, max_buffered_total=16 << 10,
        idle_timeout_ns=2_000_000_000, closed_linger_ns=1_000_000_000, max_lingering=4,
    ),
    http=HttpLimits(
        max_body=2048, max_head=512, max_decoded=64 << 10, max_pending=3, max_probe=4096,
        max_pending_body=4096,
    ),
    held_packets_per_conn=4,
    held_bytes_total=16 << 10,
)  # fmt: skip
ERROR_TYPES = {"pair-not-found", "dissection", "connection", "timeout"}
TOP_KEYS = {
    "dst", "elapsedTime", "entryFile", "error", "failed", "id", "index", "node", "outgoing",
    "passed", "protocol", "record", "request", "requestSize", "response", "responseSize", "src",
    "startTime", "stream", "timestamp", "tls", "worker",
}  # fmt: skip
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
OUTCOMES = ("tcp", "non_ip", "non_tcp", "malformed", "unsupported_linktype", "fragments")


# -- the invariants -------------------------------------------------------------------------------


def check_run(frames: Iterable[tuple[int, int, bytes]], limits: PipelineLimits) -> Pipeline:
    """Feed everything, finish, and check what a user (and the store) relies on."""
    counter = iter(range(1, 1 << 40))
    pipeline = Pipeline(IDENTITY, allocate_stream=lambda: next(counter), limits=limits)
    entries: list[dict[str, Any]] = []
    packets = 0
    for ts, linktype, frame in frames:
        pipeline.feed(ts, linktype, frame)
        out = pipeline.pop_output()
        entries.extend(out.entries)
        packets += len(out.packets)
        group_records(out.packets, 262144)  # the store's pcap records
    pipeline.finish()
    out = pipeline.pop_output()
    entries.extend(out.entries)
    group_records(out.packets, 262144)

    stats = pipeline.stats()
    decode = {k.removeprefix("decode_"): v for k, v in stats.items() if k.startswith("decode_")}
    assert sum(decode[k] for k in OUTCOMES) == decode["frames"]
    assert all(v >= 0 for v in stats.values()), stats
    assert stats["open_connections"] == 0
    assert stats["entries"] == len(entries)
    assert stats["entries_with_error"] == sum(1 for e in entries if e["error"] is not None)
    keep = limits.http.max_body
    for e in entries:
        check_entry(e, keep)
    return pipeline


def check_entry(e: dict[str, Any], keep: int) -> None:
    assert set(e) == TOP_KEYS
    orjson.dumps(e, option=orjson.OPT_SORT_KEYS)  # what the store writes
    assert 0 <= e["timestamp"] <= TS_MAX_NS // 1_000_000
    assert RFC3339.fullmatch(e["startTime"]), e["startTime"]
    assert e["elapsedTime"] >= 0
    assert e["requestSize"] >= 0 and e["responseSize"] >= 0
    assert e["request"] or e["response"]
    if e["error"] is not None:
        assert e["error"]["type"] in ERROR_TYPES and isinstance(e["error"]["msg"], str)
    assert e["id"] == f"{e['worker']}/{e['stream']}-{e['index']}"
    content = e["response"].get("content")
    if content is not None and "text" in content:
        text = base64.b64decode(content["text"])
        # at most --max-body bytes, or the raw body when it could not be decoded (also capped)
        assert len(text) <= keep
        assert content["size"] >= len(text) or content.get("_truncated")
    post = e["request"].get("postData")
    if post is not None:
        raw = base64.b64decode(post["text"]) if post.get("encoding") else post["text"].encode()
        assert len(raw) <= 4 * keep  # text: UTF-8 of at most keep bytes (invalid ones replaced)


# -- mutation of real captures --------------------------------------------------------------------

_BOUNDARY_U32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x0000FFFF, 0x00010000)


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 10)):
        if not b:
            break
        i = rnd.randrange(len(b))
        op = rnd.randrange(8)
        if op == 0:
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[i] = rnd.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2:  # a length, time, sequence number or option written with an edge value
            value = rnd.choice(_BOUNDARY_U32) if rnd.random() < 0.7 else rnd.getrandbits(32)
            b[i : i + 4] = struct.pack(rnd.choice("<>") + "I", value)
        elif op == 3:
            del b[i : i + rnd.randint(1, 64)]
        elif op == 4:
            j = rnd.randrange(len(b))
            b[j:j] = b[i : i + rnd.randint(1, 256)]
        elif op == 5:
            del b[i:]
        elif op == 6:
            b[i:i] = rnd.randbytes(rnd.randint(1, 16))
        else:  # an HTTP-ish token where bytes were
            token = rnd.choice(
                (b"\r\n", b"\r\n\r\n", b"Content-Length: 99999999999999999999\r\n", b"0\r\n",
                 b"Transfer-Encoding:\r\n chunked\r\n", b"HTTP/1.1 200 OK\r\n", b"GET / HTTP/1.1\r\n",
                 b"\x1f\x8b\x08\x00", b"fffffffffffffff\r\n")
            )  # fmt: skip
            b[i : i + len(token)] = token
    return bytes(b)


@pytest.mark.parametrize("group", range(GROUPS))
def test_mutated_captures_never_raise_and_keep_the_invariants(group: int, tmp_path: Path) -> None:
    rnd = random.Random(9_000 + group)
    path = tmp_path / "mutated.pcap"
    opened = 0
    for _ in range(ROUNDS):
        seed_file = rnd.choice(CORPUS)
        raw = seed_file.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = mutate(raw[:PREFIX], rnd)
        if rnd.random() < 0.15:
            data = gzip.compress(data, compresslevel=1, mtime=0)
            if rnd.random() < 0.5:
                data = mutate(data, rnd)  # damaged compression too
        path.write_bytes(data)
        try:
            cap = CaptureFile(path)
        except CaptureOpenError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            continue
        opened += 1
        frames = list(cap)
        assert cap.packets == len(frames)
        assert all(isinstance(w, str) and w.startswith(str(path)) for w in cap.warnings)
        check_run(frames, TINY if rnd.random() < 0.5 else PipelineLimits())
    assert opened > ROUNDS // 2  # most rounds get past the header: the loop tests the readers


def mutate_frames(
    frames: list[tuple[int, int, bytes]], rnd: random.Random
) -> list[tuple[int, int, bytes]]:
    """Damage a capture's packets rather than its file: most stay intact, so the damage
    reaches decode, reassembly and the dissector in the middle of real conversations."""
    out = list(frames)
    for _ in range(rnd.randint(1, 12)):
        if not out:
            break
        i = rnd.randrange(len(out))
        ts, lt, frame = out[i]
        op = rnd.randrange(6)
        if op == 0:
            out[i] = (ts, lt, mutate(frame, rnd))
        elif op == 1:
            del out[i]  # a lost packet
        elif op == 2:
            out.insert(rnd.randrange(len(out) + 1), out[i])  # a duplicate, anywhere
        elif op == 3:
            j = rnd.randrange(len(out))
            out[i], out[j] = out[j], out[i]  # reordered
        elif op == 4:  # a time from a damaged record, or time running backwards
            out[i] = (
                rnd.choice((-1, 0, TS_MAX_NS + 1, 1 << 90, ts - 10**12, ts + 10**13)),
                lt,
                frame,
            )
        else:
            out[i] = (ts, rnd.choice((1, 0, 113, 239, 276, 101, 147)), frame)
    return out


@pytest.mark.parametrize("group", range(GROUPS))
def test_mutated_packets_never_raise_and_keep_the_invariants(group: int) -> None:
    rnd = random.Random(7_000 + group)
    for _ in range(ROUNDS):
        frames = list(CaptureFile(rnd.choice(CORPUS)))[:400]
        check_run(mutate_frames(frames, rnd), TINY if rnd.random() < 0.5 else PipelineLimits())


# -- hypothesis: frames built from drawn fields ---------------------------------------------------

PIECES = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 23\r\n\r\n"
    + gzip.compress(b"x", mtime=0),
    b"Content-Length: 0000000000000000000000007\r\n",
    b"\r\n",
    b"\x00",
    b"GET /x y z HTTP/1.1\r\n\r\n",
]


@st.composite
def tcp_frames(draw: st.DrawFn) -> list[tuple[int, int, bytes]]:
    frames = []
    ts = draw(st.sampled_from([0, 1_700_000_000 * 10**9, TS_MAX_NS - 10**9, -(10**9)]))
    for _ in range(draw(st.integers(1, 40))):
        ts += draw(st.integers(0, 10**10))
        forward = draw(st.booleans())
        src, dst = (b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02")
        sport, dport = (draw(st.sampled_from([40000, 40001])), 80)
        if not forward:
            src, dst, sport, dport = dst, src, dport, sport
        payload = b"".join(draw(st.lists(st.sampled_from(PIECES), max_size=3)))
        if draw(st.booleans()):
            payload = payload[: draw(st.integers(0, len(payload)))]
        seq = draw(st.sampled_from([1000, 1001, 1500, 2000, 0xFFFFFFF0, 5000, 5001]))
        ack = draw(st.sampled_from([0, 1000, 1001, 5000, 5001, 6000]))
        flags = draw(st.integers(0, 0xFF))
        options = draw(st.sampled_from([b"", b"\x01\x01\x05\x0a" + struct.pack("!II", 999, 1000)]))
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(options) // 4) << 4,
                          flags, 1000, 0, 0) + options + payload  # fmt: skip
        total = draw(st.sampled_from([20 + len(tcp), 0, 20 + len(tcp) + 7, 19]))
        frag = draw(st.sampled_from([0x4000, 0, 0x2000, 0x0001]))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total & 0xFFFF, 7, frag, 64, 6, 0, src, dst)
        frame = b"\x02" * 12 + b"\x08\x00" + ip + tcp
        if draw(st.integers(0, 9)) == 0:  # inside VXLAN
            udp = struct.pack("!HHHH", 5555, 4789, 16 + len(frame), 0) + b"\x08" + bytes(7) + frame
            outer = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                                b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02")  # fmt: skip
            frame = b"\x02" * 12 + b"\x08\x00" + outer + udp
        linktype = draw(st.sampled_from([1, 1, 1, 1, 0, 113, 239, 276, 147]))
        frames.append((ts, linktype, frame))
    return frames


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=tcp_frames(), tiny=st.booleans())
def test_drawn_frames_never_raise_and_keep_the_invariants(
    frames: list[tuple[int, int, bytes]], tiny: bool
) -> None:
    check_run(frames, TINY if tiny else PipelineLimits())


# -- hypothesis: damaged compressed bodies --------------------------------------------------------

CONTENT = b"The quick brown fox jumps over the lazy dog. " * 300
ENCODED = {
    "gzip": gzip.compress(CONTENT, mtime=0),
    "deflate": zlib.compress(CONTENT),
    "br": brotli.compress(CONTENT),
    "zstd": zstandard.ZstdCompressor().compress(CONTENT),
}


@settings(max_examples=200, deadline=None)
@given(
    coding=st.sampled_from([*sorted(ENCODED), "gzip, br", "zstd, gzip", "bogus", "identity"]),
    seed=st.integers(0, 2**32 - 1),
    keep=st.integers(0, 20_000),
)
def test_damaged_compressed_bodies_never_raise(coding: str, seed: int, keep: int) -> None:
    rnd = random.Random(seed)
    body = ENCODED.get(coding.split(",")[-1].strip(), CONTENT)
    body = mutate(body, rnd) if rnd.random() < 0.8 else body
    data, size, problem = decode_content(body, coding, 64 << 10, keep)
    if problem is None or "stream truncated" in problem:
        assert len(data) <= keep and size >= len(data)
    else:
        assert data == body and size == len(body)  # not decoded: the raw body, and why
