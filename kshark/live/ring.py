"""One interface's TPACKET_V3 ring: frames read from the blocks the kernel hands over, and the
counters of what happened to them.

Why a TPACKET_V3 ring rather than `recvmsg` + `SO_TIMESTAMPNS`:

- The kernel writes frames, their nanosecond timestamps (`tp_sec`/`tp_nsec`) and their
  `sockaddr_ll` into a shared `mmap` ring, in blocks. One wakeup hands over a whole block of
  packets, and reading a packet is one `struct.unpack_from` plus one slice: no syscall, no
  ancillary-data parsing and no per-packet `SIOCGIFNAME` ioctl (CPython's `recvmsg` does one
  to name the interface of every AF_PACKET address it returns).
- The ring packs frames tightly, so its size is real capacity. A socket receive buffer is
  charged the skb "truesize" (~1 KiB even for a 66-byte ACK), so 8 MiB holds far fewer packets.
- Idle costs nothing: a block with packets is handed over when full or after
  `block_timeout_ms`; an empty block is never handed over, so an idle capture never wakes.
The price is latency: a packet can wait up to `block_timeout_ms` (default 10 ms) in a partly
filled block.

Cooked sockets (`any`, and interfaces that are not Ethernet or loopback) deliver frames from the
network header; each gets a 16-byte Linux SLL header built from the ring's `sockaddr_ll` (packet
type, ARPHRD type, address, protocol) → link type 113, exactly what libpcap writes for `any`.

Loopback: every packet on a loopback interface passes the tap twice, once leaving
(`PACKET_OUTGOING`) and once arriving. The outgoing copy is dropped here and counted as
`duplicates_skipped`, so each packet is entered once.
"""

from __future__ import annotations

import mmap
import socket
import struct
from dataclasses import dataclass, field

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
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
SIOCGIFHWADDR = 0x8927

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113

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


@dataclass(slots=True)
class Iface:
    name: str
    ifindex: int  # 0 for "any"
    cooked: bool  # SOCK_DGRAM + synthesized SLL header (linktype 113)
    loopback: bool  # drop PACKET_OUTGOING copies (only meaningful when not cooked)


@dataclass(slots=True)
class Counters:
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
class Ring:
    iface: Iface
    sock: socket.socket
    mm: mmap.mmap
    block_bytes: int
    nblocks: int
    cur: int = 0  # next block we expect the kernel to hand over (the kernel fills in order)
    counters: Counters = field(default_factory=Counters)
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
