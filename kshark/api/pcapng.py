"""The pcapng export (`GET /api/pcap?q=`): one section with the connections of the matching
entries, and the pcapng blocks it is made of.

pcapng rather than classic pcap: a worker may hold connections of several link types (a replay of
captures of different kinds, Ethernet and Linux cooked), which one classic pcap cannot carry; a
pcapng section holds one interface description per link type. Packets come connection by
connection (each in capture order), not merged by time: `reordercap` sorts a file by time. A
query with `redact(...)` is refused: packets hold the very bytes it hides.

The export decides which connections it sends before it answers (one pass over the entries,
`plan_pcap_export`), so its response head carries `X-Kshark-Connections` (and
`X-Kshark-Truncated` when a limit cut it), and the section header's comment says the same.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from kshark import __version__
from kshark.api.export_query import stored_batches
from kshark.api.files import file_chunks
from kshark.api.httpserver import Response

if TYPE_CHECKING:
    from pathlib import Path

    from kshark.api.export_query import ExportRequest
    from kshark.store import Store

PCAPNG_CONTENT_TYPE = "application/x-pcapng"
# Response headers that tell a client (and the hub) what a pcap export holds.
CONNECTIONS_HEADER = "X-Kshark-Connections"
TRUNCATED_HEADER = "X-Kshark-Truncated"

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D
_OPT_COMMENT = 1
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_IF_DESCRIPTION = 3
_OPT_IF_TSRESOL = 9
# Snap length declared in interface descriptions: the store's (docs/store.md).
PCAPNG_SNAPLEN = 262144
# Largest packet record accepted from a per-connection pcap; past it the rest of that file is
# skipped (a damaged file), never read into memory.
_MAX_RECORD = PCAPNG_SNAPLEN + 65536


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * _pad4(len(value))


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def pcapng_section_header(comment: str | None = None) -> bytes:
    """A section header block (little-endian, version 1.0, length unknown)."""
    options = b""
    if comment:
        options += _option(_OPT_COMMENT, comment.encode())
    options += _option(_OPT_SHB_USERAPPL, f"kshark {__version__}".encode())
    options += struct.pack("<HH", 0, 0)
    body = struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + options
    return _block(PCAPNG_SHB, body)


def pcapng_interface(linktype: int, name: str, description: str | None = None) -> bytes:
    """An interface description block with nanosecond timestamps."""
    options = _option(_OPT_IF_NAME, name.encode())
    if description:
        options += _option(_OPT_IF_DESCRIPTION, description.encode())
    options += _option(_OPT_IF_TSRESOL, b"\x09") + struct.pack("<HH", 0, 0)
    return _block(PCAPNG_IDB, struct.pack("<HHI", linktype, 0, PCAPNG_SNAPLEN) + options)


def pcapng_packet(interface: int, ts_ns: int, data: bytes, orig_len: int) -> bytes:
    """An enhanced packet block."""
    body = (
        struct.pack(
            "<IIIII", interface, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, len(data), orig_len
        )
        + data
        + b"\x00" * _pad4(len(data))
    )
    return _block(PCAPNG_EPB, body)


_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}


class PcapToPcapng:
    """Classic pcap bytes (one connection's file) in → pcapng enhanced packet blocks out.

    Fed in pieces; interface numbers per link type are kept across files (`interfaces`), and an
    interface description is emitted the first time a link type is seen."""

    def __init__(self, interface_name: str) -> None:
        self.interface_name = interface_name
        self.interfaces: dict[int, int] = {}  # link type → interface number
        self.packets = 0
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._header: tuple[str, int, int] | None = None  # byte order, ts scale, interface
        self._broken = False

    def start_file(self) -> None:
        self._reset()

    def feed(self, data: bytes) -> bytes:
        if self._broken:
            return b""
        buf = self._buf
        buf += data
        out = bytearray()
        off = 0
        if self._header is None:
            if len(buf) < 24:
                return b""
            magic = bytes(buf[:4])
            if magic not in _PCAP_MAGICS:
                self._broken = True
                return b""
            order, scale = _PCAP_MAGICS[magic]
            linktype = struct.unpack_from(order + "I", buf, 20)[0] & 0x0FFFFFFF
            interface = self.interfaces.get(linktype)
            if interface is None:
                interface = self.interfaces[linktype] = len(self.interfaces)
                out += pcapng_interface(linktype, self.interface_name)
            self._header = (order, scale, interface)
            off = 24
        order, scale, interface = self._header
        record = struct.Struct(order + "IIII")
        while len(buf) - off >= 16:
            sec, frac, incl, orig = record.unpack_from(buf, off)
            if incl > _MAX_RECORD:
                self._broken = True
                break
            if len(buf) - off - 16 < incl:
                break
            data_start = off + 16
            out += pcapng_packet(
                interface,
                sec * 1_000_000_000 + frac * scale,
                bytes(buf[data_start : data_start + incl]),
                orig,
            )
            self.packets += 1
            off = data_start + incl
        del buf[:off]
        return bytes(out)


@dataclass(slots=True)
class PcapPlan:
    """The connections a pcap export sends, decided before answering."""

    streams: list[tuple[int, Path, int]]  # (stream number, pcap path, bytes to send)
    truncated: str | None
    missed: int  # entries retention deleted during the scan

    @property
    def comment(self) -> str:
        text = f"{len(self.streams)} connections"
        if self.truncated:
            text += f"; {self.truncated}"
        return text


async def plan_pcap_export(store: Store, req: ExportRequest) -> PcapPlan:
    """One pass over the stored entries: the connections of those matching, oldest first,
    within the limits (ExportLimits)."""
    seen: set[int] = set()
    streams: list[tuple[int, Path, int]] = []
    total = 0
    missed_total = 0
    truncated: str | None = None
    for matches, missed in stored_batches(store, req, store.last_seq):
        if truncated is not None:
            break
        missed_total += missed
        for _, entry in matches:
            number = _stream_number(entry.get("stream"))
            if number is None or number in seen:
                continue
            seen.add(number)
            if len(streams) >= req.limit:
                if not req.limit_from_kfl:
                    truncated = f"more connections matched: stopped at the limit of {req.limit}"
                break
            path = store.pcap_path(number)
            if path is None:
                continue  # deleted by retention meanwhile
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            if total + size > req.max_bytes:
                truncated = f"stopped at the limit of {req.max_bytes} bytes of packets"
                break
            total += size
            streams.append((number, path, size))
        await trio.lowlevel.checkpoint()
    return PcapPlan(streams, truncated, missed_total)


def _stream_number(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    digits = value.removesuffix(".pcap")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 12:
        return None
    return int(digits)


async def pcapng_from_plan(plan: PcapPlan, interface_name: str) -> AsyncIterator[bytes]:
    """The pcapng section of `plan`'s connections: each connection's pcap as it was when the
    plan was made (its size then), packets converted on the way."""
    yield pcapng_section_header(f"kshark export: {plan.comment}")
    convert = PcapToPcapng(interface_name)
    for _, path, size in plan.streams:
        # A file retention deleted after the plan yields nothing: it is left out.
        convert.start_file()
        async for chunk in file_chunks(path, size):
            blocks = convert.feed(chunk)
            if blocks:
                yield blocks


def pcap_response(body: AsyncIterator[bytes], plan: PcapPlan | None = None) -> Response:
    headers = [
        ("Content-Disposition", 'attachment; filename="kshark.pcapng"'),
        ("Cache-Control", "no-store"),
    ]
    if plan is not None:
        headers.append((CONNECTIONS_HEADER, str(len(plan.streams))))
        if plan.truncated:
            headers.append((TRUNCATED_HEADER, plan.truncated))
    return Response(200, content_type=PCAPNG_CONTENT_TYPE, headers=headers, stream=body)
