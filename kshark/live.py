"""Live capture: AF_PACKET sockets with TPACKET_V3 rings, read on Trio, delivered in batches.

Output is the same ``(ts_ns, linktype, frame)`` triples that ``capture.sources`` yields for
files, handed on as **lists** (one memory-channel send per batch: a send costs ~7 µs, which per
packet would exceed the whole per-packet budget; see perf-baseline.md).

Why a TPACKET_V3 ring rather than ``recvmsg`` + ``SO_TIMESTAMPNS``:

- The kernel writes frames, their nanosecond timestamps (``tp_sec``/``tp_nsec``) and their
  ``sockaddr_ll`` into a shared ``mmap`` ring, in blocks. One wakeup hands over a whole block of
  packets, and reading a packet is one ``struct.unpack_from`` plus one slice: no syscall, no
  ancillary-data parsing and no per-packet ``SIOCGIFNAME`` ioctl (CPython's ``recvmsg`` does one
  to name the interface of every AF_PACKET address it returns).
- The ring packs frames tightly, so its size is real capacity. A socket receive buffer is
  charged the skb "truesize" (~1 KiB even for a 66-byte ACK), so 8 MiB holds far fewer packets.
- Idle costs nothing: a block with packets is handed over when full or after
  ``block_timeout_ms``; an empty block is never handed over, so an idle capture never wakes.
The price is latency: a packet can wait up to ``block_timeout_ms`` (default 10 ms) in a partly
filled block. Capture-to-entry latency targets are ~100 ms, so that is affordable.

Reading is driven by Trio's I/O: ``trio.lowlevel.wait_readable(sock)`` (the kernel marks the
socket readable once a block is handed to user space), then every ready block is drained; no
busy loop, no threads.

Interfaces: an Ethernet or loopback interface gets a ``SOCK_RAW`` socket and link type 1
(Ethernet; loopback frames carry a 14-byte all-zero Ethernet header). ``any`` (and any
interface whose hardware type is not Ethernet/loopback, e.g. tun or wireguard) gets a
``SOCK_DGRAM`` ("cooked") socket: frames start at the network header, and we prepend a 16-byte
Linux SLL header built from the ring's ``sockaddr_ll`` (packet type, ARPHRD type, address,
protocol) → link type 113, exactly what libpcap writes for ``any``.

Filters: the BPF expression is compiled by libpcap (``pcap_compile`` on a ``pcap_open_dead``
handle, through ctypes: no scapy import, no subprocess) for link type Ethernet on raw sockets,
and for raw IP (DLT_RAW) on cooked sockets (the kernel runs a cooked socket's filter on the
packet starting at its network header), then attached with ``SO_ATTACH_FILTER`` *before* the
socket is bound, so no unfiltered packet ever enters the ring. Link-layer expressions
(``ether host ...``, ``arp``) therefore cannot be used with ``any``; they fail with a clear
message.

Loopback: every packet on a loopback interface passes the tap twice, once leaving
(``PACKET_OUTGOING``) and once arriving. The outgoing copy is dropped here and counted as
``duplicates_skipped``, so each packet is entered once.

Counters: ``PACKET_STATISTICS`` resets on read, so we accumulate. ``kernel_packets`` is every
packet that passed the filter (delivered or dropped by the kernel, which drops when the ring is
full); ``kernel_drops`` those the ring had no room for. After ``run`` returns:
``kernel_packets == packets + our_drops + duplicates_skipped + kernel_drops``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

# --- Linux constants (linux/if_packet.h, linux/if_ether.h, linux/if_arp.h) ----------------------
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_OUTGOING = 4
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
SO_ATTACH_FILTER = 26
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
SIOCGIFHWADDR = 0x8927

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
_DLT_EN10MB = 1
_DLT_RAW = 12  # libpcap's DLT for "raw IP" on Linux
_PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
# The BPF program's "accept" returns this many bytes: larger than any frame, so never truncates.
_FILTER_SNAPLEN = 262144

# --- sizing defaults -----------------------------------------------------------------------------
# Ring memory per socket. The capture task shares one core with the rest of the worker, so the
# ring must absorb the worker's pauses: 32 MiB is ~1.2 s of the fastest loopback load measured on
# this machine (27 MB/s), and kernel drops are counted if a pause is longer.
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024
# Block size: a frame must fit in one block or it is truncated (counted as `truncated`). 256 KiB
# holds a 64 KiB GSO/TSO "super-frame" (what veth and loopback deliver with offloads on).
DEFAULT_BLOCK_BYTES = 256 * 1024
# A partly filled block is handed over after this long: the worst-case added latency. It also
# bounds how long a pause the ring survives at low rates (blocks * timeout), hence many blocks.
DEFAULT_BLOCK_TIMEOUT_MS = 10
# Frames per channel send. Large enough to make the per-send cost negligible (~0.08 µs/frame at
# 100 per batch), small enough that a consumer starts on a burst before the whole ring is read.
BATCH_MAX = 1024
# A batch also ends once its frames reach this many bytes (passing it by at most one block):
# with offloads on, frames are up to 64 KiB each, and BATCH_MAX of them would be 64 MiB.
BATCH_BYTES_MAX = 1 << 20
# Suggested bound (in batches) for the memory channel given to `run`: with BATCH_MAX frames and
# BATCH_BYTES_MAX bytes per batch this caps what waits in memory at ~64k frames and ~80 MiB
# (64 × (1 MiB + a 256 KiB block)); past it whole batches are dropped and counted as
# `our_drops` (the kernel path is never blocked).
CHANNEL_BATCHES = 64

Frame = tuple[int, int, bytes]  # (ts_ns, linktype, frame)
Batch = list[Frame]

# tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status (+8),
# num_pkts (+12), offset_to_first_pkt (+16), ...
_BLOCK_STATUS = struct.Struct("<I")
_BLOCK_PKTS = struct.Struct("<II")
_BLOCK_STATUS_OFF = 8
_BLOCK_PKTS_OFF = 12
# tpacket3_hdr (48 bytes) followed by sockaddr_ll:
#   +0 tp_next_offset, +4 tp_sec, +8 tp_nsec, +12 tp_snaplen, +16 tp_len, +20 tp_status,
#   +24 tp_mac, +26 tp_net, ... +48 sll_family, +50 sll_protocol (be16), +52 sll_ifindex,
#   +56 sll_hatype, +58 sll_pkttype, +59 sll_halen, +60 sll_addr[8]
_PKT_RAW = struct.Struct("<IIIII4xH32xB")  # next, sec, nsec, snaplen, len, mac, pkttype
_PKT_COOKED = struct.Struct(
    "<IIIII4xH24x2s4xHBB8s"
)  # ..., mac, protocol, hatype, pkttype, halen, addr
_SLL = struct.Struct(">HHH8s2s")  # pkttype, hatype, halen, addr, protocol (already big-endian)
_STATS_V3 = struct.Struct("III")  # tp_packets, tp_drops, tp_freeze_q_cnt
_REQ3 = struct.Struct("IIIIIII")  # tpacket_req3
_SOCKADDR_LL = struct.Struct("=HHiHBB8s")


class LiveCaptureError(Exception):
    """Live capture could not start; the message is meant for the user as is."""


class LivePermissionError(LiveCaptureError, PermissionError):
    """No root / CAP_NET_RAW. The CLI prints it as ``kshark-worker: <message>`` and exits 2."""


class LiveInterfaceError(LiveCaptureError):
    """An interface name that does not exist (in this network namespace), or a bad list."""


class LiveFilterError(LiveCaptureError, ValueError):
    """A BPF expression libpcap rejected; the message names the expression."""


# --- BPF compilation through libpcap -------------------------------------------------------------


class _BpfInsn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


_libpcap: Any = None


def _load_libpcap() -> Any:
    global _libpcap
    if _libpcap is None:
        name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise LiveFilterError(
                f"capture filters need libpcap (Debian package libpcap0.8): {exc}"
            ) from exc
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(_BpfProgram),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        )
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_BpfProgram),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        _libpcap = lib
    return _libpcap


def compile_filter(expression: str, *, cooked: bool) -> list[tuple[int, int, int, int]]:
    """Compile a tcpdump-style expression to classic BPF: [(code, jt, jf, k), ...].

    `cooked=False` compiles for Ethernet frames (raw sockets), `cooked=True` for packets that
    start at the IP header (cooked sockets, `any`). Raises LiveFilterError naming the
    expression. Needs no privilege.
    """
    lib = _load_libpcap()
    handle = lib.pcap_open_dead(_DLT_RAW if cooked else _DLT_EN10MB, _FILTER_SNAPLEN)
    if not handle:
        raise LiveFilterError(f"invalid capture filter {expression!r}: libpcap out of memory")
    prog = _BpfProgram()
    try:
        text = expression.encode()
        if lib.pcap_compile(handle, ctypes.byref(prog), text, 1, _PCAP_NETMASK_UNKNOWN) != 0:
            why = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            where = " (with 'any', filters start at the IP header)" if cooked else ""
            raise LiveFilterError(f"invalid capture filter {expression!r}{where}: {why}")
        insns = [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[: prog.bf_len]]
        lib.pcap_freecode(ctypes.byref(prog))
        return insns
    finally:
        lib.pcap_close(handle)


def _attach_filter(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native alignment).
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


# --- interfaces ----------------------------------------------------------------------------------

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


@dataclass(slots=True)
class _Iface:
    name: str
    ifindex: int  # 0 for "any"
    cooked: bool  # SOCK_DGRAM + synthesized SLL header (linktype 113)
    loopback: bool  # drop PACKET_OUTGOING copies (only meaningful when not cooked)


def _resolve(name: str) -> _Iface:
    if name == "any":
        return _Iface(name, 0, cooked=True, loopback=False)
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
        return _Iface(name, ifindex, cooked=False, loopback=hatype == ARPHRD_LOOPBACK)
    return _Iface(name, ifindex, cooked=True, loopback=False)


# --- one ring per interface ----------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    packets: int = 0  # frames sent on the channel
    bytes: int = 0  # captured bytes of those frames
    our_drops: int = 0  # frames read but dropped: channel full
    duplicates_skipped: int = 0  # loopback PACKET_OUTGOING copies
    truncated: int = 0  # frames larger than a block (captured length < wire length)
    kernel_packets: int = 0  # passed the filter (PACKET_STATISTICS tp_packets, incl. drops)
    kernel_drops: int = 0  # no room in the ring (tp_drops)
    kernel_freezes: int = 0  # times the ring was full (tp_freeze_q_cnt)

    def as_dict(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "kernel_packets": self.kernel_packets,
            "kernel_drops": self.kernel_drops,
            "kernel_freezes": self.kernel_freezes,
            "our_drops": self.our_drops,
            "duplicates_skipped": self.duplicates_skipped,
            "truncated": self.truncated,
        }


@dataclass(slots=True)
class _Ring:
    iface: _Iface
    sock: socket.socket
    mm: mmap.mmap
    block_bytes: int
    nblocks: int
    cur: int = 0  # next block we expect the kernel to hand over (the kernel fills in order)
    counters: _Counters = field(default_factory=_Counters)
    wait_scope: trio.CancelScope | None = None
    pending_bytes: int = 0  # bytes of frames read into the batch not yet sent (see _send)

    def read_kernel_stats(self) -> None:
        """Accumulate PACKET_STATISTICS (the kernel zeroes them on every read)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        packets, drops, freezes = _STATS_V3.unpack(raw)
        c = self.counters
        c.kernel_packets += packets
        c.kernel_drops += drops
        c.kernel_freezes += freezes

    def read_ready_blocks(self, out: Batch, limit: int, max_bytes: int = 1 << 62) -> int:
        """Move frames of every user-owned block (from `cur` on) into `out`, returning each
        block to the kernel, until no block is ready, `out` holds at least `limit` frames, or
        the frames read since the last `_send` (`pending_bytes`) reach `max_bytes`.
        Returns how many blocks were read."""
        mm = self.mm
        block_bytes = self.block_bytes
        nblocks = self.nblocks
        c = self.counters
        append = out.append
        unpack_raw = _PKT_RAW.unpack_from
        unpack_cooked = _PKT_COOKED.unpack_from
        sll = _SLL.pack
        cooked = self.iface.cooked
        loopback = self.iface.loopback
        blocks = 0
        nbytes = 0
        dups = 0
        truncated = 0
        budget = max_bytes - self.pending_bytes
        while len(out) < limit and nbytes < budget:
            base = self.cur * block_bytes
            if not _BLOCK_STATUS.unpack_from(mm, base + _BLOCK_STATUS_OFF)[0] & TP_STATUS_USER:
                break
            num_pkts, off = _BLOCK_PKTS.unpack_from(mm, base + _BLOCK_PKTS_OFF)
            off += base
            if cooked:
                for _ in range(num_pkts):
                    (nxt, sec, nsec, snap, wire, mac, proto, hatype, pkttype, halen, addr) = (
                        unpack_cooked(mm, off)
                    )
                    if pkttype == PACKET_OUTGOING and hatype == ARPHRD_LOOPBACK:
                        dups += 1
                    else:
                        frame = (
                            sll(pkttype, hatype, halen, addr, proto)
                            + mm[off + mac : off + mac + snap]
                        )
                        append((sec * 1_000_000_000 + nsec, LINKTYPE_LINUX_SLL, frame))
                        nbytes += snap + 16
                        if snap < wire:
                            truncated += 1
                    off += nxt
            else:
                for _ in range(num_pkts):
                    nxt, sec, nsec, snap, wire, mac, pkttype = unpack_raw(mm, off)
                    if loopback and pkttype == PACKET_OUTGOING:
                        dups += 1
                    else:
                        append(
                            (
                                sec * 1_000_000_000 + nsec,
                                LINKTYPE_ETHERNET,
                                mm[off + mac : off + mac + snap],
                            )
                        )
                        nbytes += snap
                        if snap < wire:
                            truncated += 1
                    off += nxt
            # Hand the block back. Only the low byte of the status is ever non-zero, so this
            # store cannot be seen half-done by the kernel.
            _BLOCK_STATUS.pack_into(mm, base + _BLOCK_STATUS_OFF, TP_STATUS_KERNEL)
            self.cur = (self.cur + 1) % nblocks
            blocks += 1
        # `packets`/`bytes` vs `our_drops` are settled by `_send` once it knows the batch's fate.
        self.pending_bytes += nbytes
        c.duplicates_skipped += dups
        c.truncated += truncated
        return blocks

    def close(self) -> None:
        self.mm.close()
        self.sock.close()


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
        self._rings: list[_Ring] = []
        self._stopping = False
        self._closed_stats: dict[str, _Counters] = {}

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

    def _open_ring(self, iface: _Iface, program: list[tuple[int, int, int, int]] | None) -> _Ring:
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
                _attach_filter(sock, program)
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
        return _Ring(iface, sock, mm, self.block_bytes, nblocks)

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

    async def _capture_ring(self, ring: _Ring, send: trio.MemorySendChannel[Batch]) -> None:
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
    def _send(ring: _Ring, send: trio.MemorySendChannel[Batch], batch: Batch) -> bool:
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
        """Totals and per-interface counters (see _Counters); reads the kernel's counters now."""
        per: dict[str, _Counters] = dict(self._closed_stats)
        for ring in self._rings:
            ring.read_kernel_stats()
            per[ring.iface.name] = ring.counters
        total = _Counters()
        for c in per.values():
            for k in _Counters.__slots__:
                setattr(total, k, getattr(total, k) + getattr(c, k))
        out: dict[str, Any] = total.as_dict()
        out["interfaces"] = {name: c.as_dict() for name, c in per.items()}
        return out
