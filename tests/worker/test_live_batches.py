"""kshark.live hands frames over in batches bounded in bytes as well as in frames.

A TPACKET_V3 ring is laid out here in plain memory, as the kernel fills it (blocks of frames,
each block marked user-owned), so the capture task's batching is checked without a socket:
with offloads on, frames are 64 KiB "super-frames", and 1024 of them (BATCH_MAX) would make a
64 MiB batch; the channel holds 64 batches.
"""

from __future__ import annotations

import struct

import trio

from kshark import live
from kshark.live.ring import TP_STATUS_USER, Iface, Ring

BLOCK = 256 * 1024
FRAME = 64 * 1024 - 200
PER_BLOCK = 3


def ring_with_ready_blocks(nblocks: int) -> Ring:
    mm = bytearray(BLOCK * nblocks)
    n = 0
    for b in range(nblocks):
        base = b * BLOCK
        first = 48  # offset_to_first_pkt
        struct.pack_into("<III", mm, base + 8, TP_STATUS_USER, PER_BLOCK, first)
        off = base + first
        for i in range(PER_BLOCK):
            mac = 80
            size = (mac + FRAME + 15) // 16 * 16
            nxt = size if i < PER_BLOCK - 1 else 0
            # next, sec, nsec, snaplen, len, status, mac; pkttype at +58 (0: to us)
            struct.pack_into("<IIIIIIH", mm, off, nxt, 1_700_000_000, n, FRAME, FRAME, 0, mac)
            mm[off + mac : off + mac + 8] = n.to_bytes(8, "big")
            n += 1
            off += size
    iface = Iface(name="test0", ifindex=1, cooked=False, loopback=False)
    return Ring(iface=iface, sock=None, mm=mm, block_bytes=BLOCK, nblocks=nblocks)  # type: ignore[arg-type]


async def test_a_batch_of_large_frames_ends_at_its_byte_bound() -> None:
    nblocks = 40  # 120 frames of 64 KiB: 7.5 MiB ready at once
    ring = ring_with_ready_blocks(nblocks)
    cap = live.LiveCapture(["test0"], block_timeout_ms=1)
    cap._stopping = True  # drain what is ready, then return
    send, receive = trio.open_memory_channel[live.Batch](live.CHANNEL_BATCHES)
    with trio.fail_after(10):
        await cap._capture_ring(ring, send)
    batches = []
    while True:
        try:
            batches.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    frames = [f for b in batches for f in b]
    assert [int.from_bytes(f[2][:8], "big") for f in frames] == list(range(nblocks * PER_BLOCK))
    sizes = [sum(len(f[2]) for f in b) for b in batches]
    assert len(batches) > 1
    # Each batch stops at the block that reaches BATCH_BYTES_MAX: at most one block past it.
    assert max(sizes) <= live.BATCH_BYTES_MAX + PER_BLOCK * FRAME, sizes
    assert ring.counters.packets == len(frames) and ring.counters.our_drops == 0
