"""`LiveCapture`: AF_PACKET sockets with TPACKET_V3 rings (kshark.live.ring) on one or more
interfaces, read on Trio, delivered in batches.

Reading is driven by Trio's I/O: `trio.lowlevel.wait_readable(sock)` (the kernel marks the
socket readable once a block is handed to user space), then every ready block is drained; no
busy loop, no threads.

Interfaces: an Ethernet or loopback interface gets a `SOCK_RAW` socket and link type 1
(Ethernet; loopback frames carry a 14-byte all-zero Ethernet header). `any` (and any interface
whose hardware type is not Ethernet/loopback, e.g. tun or wireguard) gets a `SOCK_DGRAM`
("cooked") socket, whose frames become link type 113 (ring.py). Filters: kshark.live.bpf.

Counters: `PACKET_STATISTICS` resets on read, so we accumulate. `kernel_packets` is every
packet that passed the filter (delivered or dropped by the kernel, which drops when the ring is
full); `kernel_drops` those the ring had no room for. After `run` returns:
`kernel_packets == packets + our_drops + duplicates_skipped + kernel_drops`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

import trio

from kshark.live.bpf import attach_filter, compile_filter
from kshark.live.errors import LiveCaptureError, LiveInterfaceError, LivePermissionError
from kshark.live.ring import (
    ARPHRD_ETHER,
    ARPHRD_LOOPBACK,
    ETH_P_ALL,
    PACKET_RX_RING,
    PACKET_VERSION,
    SIOCGIFHWADDR,
    SOL_PACKET,
    TPACKET_V3,
    Batch,
    Counters,
    Iface,
    Ring,
)

# --- sizing defaults -----------------------------------------------------------------------------
# Ring memory per socket. The capture task shares one core with the rest of the worker, so the
# ring must absorb the worker's pauses at the heaviest load the live bench drives (its loss rows
# in BENCHMARKS.md); a longer pause shows as counted kernel drops.
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024
# Block size: a frame must fit in one block or it is truncated (counted as `truncated`). 256 KiB
# holds a 64 KiB GSO/TSO "super-frame" (what veth and loopback deliver with offloads on).
DEFAULT_BLOCK_BYTES = 256 * 1024
# A partly filled block is handed over after this long: the worst-case added latency. It also
# bounds how long a pause the ring survives at low rates (blocks * timeout), hence many blocks.
DEFAULT_BLOCK_TIMEOUT_MS = 10
# Frames per channel send. Large enough to make the per-send cost negligible per frame, small
# enough that a consumer starts on a burst before the whole ring is read.
BATCH_MAX = 1024
# A batch also ends once its frames reach this many bytes (passing it by at most one block):
# with offloads on, frames are up to 64 KiB each, and BATCH_MAX of them would be 64 MiB.
BATCH_BYTES_MAX = 1 << 20
# Suggested bound (in batches) for the memory channel given to `run`: with BATCH_MAX frames and
# BATCH_BYTES_MAX bytes per batch this caps what waits in memory at ~64k frames and ~80 MiB
# (64 × (1 MiB + a 256 KiB block)); past it whole batches are dropped and counted as
# `our_drops` (the kernel path is never blocked).
CHANNEL_BATCHES = 64

_REQ3 = struct.Struct("IIIIIII")  # tpacket_req3
_SOCKADDR_LL = struct.Struct("=HHiHBB8s")


_libc: Any = None


def _bind(sock: socket.socket, ifindex: int) -> None:
    """bind() to (ETH_P_ALL, ifindex); ifindex 0 = every interface. Via libc because Python's
    AF_PACKET address form needs an interface name and cannot express "any"."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    addr = _SOCKADDR_LL.pack(socket.AF_PACKET, socket.htons(ETH_P_ALL), ifindex, 0, 0, 0, b"")
    if _libc.bind(sock.fileno(), addr, len(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _resolve(name: str) -> Iface:
    if name == "any":
        return Iface(name, 0, cooked=True, loopback=False)
    try:
        ifindex = socket.if_nametoindex(name)
    except OSError:
        raise LiveInterfaceError(f"no such network interface: {name!r}") from None
    # The ARPHRD type via ioctl on a plain UDP socket: needs no privilege and, unlike
    # /sys/class/net, always answers for the caller's own network namespace.
    ifreq = struct.pack("16s16x", name.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            res = fcntl.ioctl(probe.fileno(), SIOCGIFHWADDR, ifreq)
        except OSError as exc:
            raise LiveInterfaceError(f"network interface {name!r}: {exc.strerror}") from None
    hatype = struct.unpack_from("H", res, 16)[0]
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return Iface(name, ifindex, cooked=False, loopback=hatype == ARPHRD_LOOPBACK)
    return Iface(name, ifindex, cooked=True, loopback=False)


class LiveCapture:
    """Captures on one or more interfaces (or ``["any"]``) and sends batches of frames.

    Usage (in the worker)::

        capture = LiveCapture(["eth0"], bpf_filter="tcp")
        capture.open()                      # errors here: LivePermissionError, LiveInterfaceError,
                                            # LiveFilterError (print, exit 2)
        send, recv = trio.open_memory_channel[list[tuple[int, int, bytes]]](live.CHANNEL_BATCHES)
        await nursery.start(capture.run, send)   # returns once every socket is capturing
        ...  async for batch in recv: pipeline.feed(...) per frame
        capture.request_stop()              # SIGINT/SIGTERM: flush the rings, then run() returns
                                            # and closes `send`, so the consumer sees the end.
    """

    def __init__(
        self,
        interfaces: Sequence[str],
        *,
        bpf_filter: str | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS,
        batch_max: int = BATCH_MAX,
        batch_bytes: int = BATCH_BYTES_MAX,
    ) -> None:
        names = list(dict.fromkeys(interfaces))  # repeated --iface: capture once
        if not names:
            raise LiveInterfaceError("no interface to capture on")
        if "any" in names and len(names) > 1:
            raise LiveInterfaceError("'any' already captures every interface; give it alone")
        page = mmap.PAGESIZE
        if block_bytes < page or block_bytes & (block_bytes - 1):
            raise ValueError(f"block_bytes must be a power of two >= {page}")
        if buffer_bytes < 2 * block_bytes:
            raise ValueError("buffer_bytes must hold at least two blocks")
        if not 1 <= block_timeout_ms <= 60_000:
            raise ValueError("block_timeout_ms must be between 1 and 60000")
        self.interfaces = names
        self.bpf_filter = bpf_filter
        self.buffer_bytes = buffer_bytes
        self.block_bytes = block_bytes
        self.block_timeout_ms = block_timeout_ms
        self.batch_max = max(1, batch_max)
        self.batch_bytes = max(1, batch_bytes)
        self._rings: list[Ring] = []
        self._stopping = False
        self._closed_stats: dict[str, Counters] = {}

    # -- setup ---------------------------------------------------------------------------------

    def open(self) -> None:
        """Resolve interfaces, compile the filter, open and bind one ring socket per interface.

        Errors in the user's input come first (unknown interface, bad filter), then privilege.
        On any error nothing stays open.
        """
        if self._rings:
            return
        ifaces = [_resolve(n) for n in self.interfaces]
        programs: dict[bool, list[tuple[int, int, int, int]]] = {}
        if self.bpf_filter is not None:
            for kind in {i.cooked for i in ifaces}:
                programs[kind] = compile_filter(self.bpf_filter, cooked=kind)
        try:
            for iface in ifaces:
                self._rings.append(self._open_ring(iface, programs.get(iface.cooked)))
        except BaseException:
            self.close()
            raise

    def _open_ring(self, iface: Iface, program: list[tuple[int, int, int, int]] | None) -> Ring:
        kind = socket.SOCK_DGRAM if iface.cooked else socket.SOCK_RAW
        try:
            # Protocol 0: the socket receives nothing until bind() names ETH_P_ALL, so the ring
            # and the filter are in place before the first packet arrives.
            sock = socket.socket(socket.AF_PACKET, kind, 0)
        except PermissionError as exc:
            raise LivePermissionError(
                f"live capture needs root or CAP_NET_RAW "
                f"(AF_PACKET socket on {iface.name}: {exc.strerror})"
            ) from None
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if program is not None:
                attach_filter(sock, program)
            nblocks = self.buffer_bytes // self.block_bytes
            req = _REQ3.pack(
                self.block_bytes,  # tp_block_size
                nblocks,  # tp_block_nr
                self.block_bytes,  # tp_frame_size: unused by V3 layout; one "frame" per block
                nblocks,  # tp_frame_nr
                self.block_timeout_ms,  # tp_retire_blk_tov
                0,  # tp_sizeof_priv
                0,  # tp_feature_req_word
            )
            try:
                sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            except OSError as exc:
                if exc.errno == errno.ENOMEM:
                    raise LiveCaptureError(
                        f"cannot allocate a {self.buffer_bytes} byte capture ring on {iface.name}"
                    ) from None
                raise
            # MAP_POPULATE maps every ring page now, so the capture path never page-faults.
            mm = mmap.mmap(
                sock.fileno(),
                self.block_bytes * nblocks,
                mmap.MAP_SHARED | mmap.MAP_POPULATE,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            try:
                _bind(sock, iface.ifindex)
            except OSError as exc:
                mm.close()
                if exc.errno == errno.ENODEV:
                    raise LiveInterfaceError(
                        f"network interface {iface.name!r} disappeared"
                    ) from None
                raise LiveCaptureError(f"cannot bind to {iface.name}: {exc.strerror}") from None
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return Ring(iface, sock, mm, self.block_bytes, nblocks)

    def close(self) -> None:
        """Read the final kernel counters, then release every socket and ring. Idempotent."""
        for ring in self._rings:
            with contextlib.suppress(OSError):  # best effort: the socket may be broken
                ring.read_kernel_stats()
            self._closed_stats[ring.iface.name] = ring.counters
            ring.close()
        self._rings = []

    def __enter__(self) -> LiveCapture:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        send_channel: trio.MemorySendChannel[Batch],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Capture until cancelled or `request_stop()`; opens first if needed.

        `task_status.started()` is called once every socket is bound and reading. Each ready
        block run becomes one `send_nowait` of up to `batch_max` frames and about `batch_bytes`
        bytes; if the channel is full the batch is dropped and counted (`our_drops`): the
        capture never waits for the consumer.
        On return (stop, cancellation or error) `send_channel` is closed and the sockets released
        (final counters stay readable via `stats()`). Pass a clone to share a channel.
        """
        async with send_channel:
            try:
                self.open()
                async with trio.open_nursery() as nursery:
                    for ring in self._rings:
                        nursery.start_soon(self._capture_ring, ring, send_channel)
                    task_status.started()
            finally:
                self.close()

    def request_stop(self) -> None:
        """Stop gracefully: each ring waits one block timeout (so the kernel hands over its
        partly filled block), drains, and `run` returns. Call from the Trio thread."""
        self._stopping = True
        for ring in self._rings:
            if ring.wait_scope is not None:
                ring.wait_scope.cancel()

    async def _capture_ring(self, ring: Ring, send: trio.MemorySendChannel[Batch]) -> None:
        limit = self.batch_max
        max_bytes = self.batch_bytes
        while True:
            batch: Batch = []
            while ring.read_ready_blocks(batch, limit, max_bytes):
                if len(batch) >= limit or ring.pending_bytes >= max_bytes:
                    if not self._send(ring, send, batch):
                        return
                    batch = []
                    # A burst can fill many blocks: let the consumer run between batches.
                    await trio.lowlevel.checkpoint()
            if batch and not self._send(ring, send, batch):
                return
            if self._stopping:
                break
            with trio.CancelScope() as scope:
                ring.wait_scope = scope
                await trio.lowlevel.wait_readable(ring.sock)
            ring.wait_scope = None
        # Graceful stop: the kernel retires a non-empty block after block_timeout_ms.
        await trio.sleep(2 * self.block_timeout_ms / 1000 + 0.005)
        batch = []
        while ring.read_ready_blocks(batch, 1 << 62):
            pass
        if batch:
            self._send(ring, send, batch)

    @staticmethod
    def _send(ring: Ring, send: trio.MemorySendChannel[Batch], batch: Batch) -> bool:
        """One channel operation per batch; full → drop and count. False: receiver is gone."""
        c = ring.counters
        nbytes, ring.pending_bytes = ring.pending_bytes, 0
        try:
            send.send_nowait(batch)
        except trio.WouldBlock:
            c.our_drops += len(batch)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            c.our_drops += len(batch)
            return False
        c.packets += len(batch)
        c.bytes += nbytes
        return True

    # -- counters ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Totals and per-interface counters (see Counters); reads the kernel's counters now."""
        per: dict[str, Counters] = dict(self._closed_stats)
        for ring in self._rings:
            ring.read_kernel_stats()
            per[ring.iface.name] = ring.counters
        total = Counters()
        for c in per.values():
            for k in Counters.__slots__:
                setattr(total, k, getattr(total, k) + getattr(c, k))
        out: dict[str, Any] = total.as_dict()
        out["interfaces"] = {name: c.as_dict() for name, c in per.items()}
        return out
