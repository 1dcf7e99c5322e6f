"""The hub's exports (`GET /api/har?q=`, `GET /api/pcap?q=`): the workers' exports, gathered.

The filter is compiled at the hub first (a bad one is a 400 with its line and column before any
worker is contacted), then each worker is asked in turn for its own export
(kshark.api.export) with what is left of the limits, and its answer is passed on as it arrives:

- HAR: the workers' entries, one worker after the other (each in its write order), in one
  document. Worker HAR documents have one entry per line (kshark.api.export), so the hub passes
  each line through without parsing the entry. `log.comment` names the workers that could not be
  read and the limits that cut the export.
- pcap: one pcapng section. Each worker's section header is dropped, its interface descriptions
  are renumbered into the hub's section (named by the worker) and its packet blocks rewritten to
  the new numbers; nothing else is decoded. The hub's response head is sent before any worker
  answered, so what was left out is told in the log and the interfaces' descriptions.

One worker at a time: a worker whose answer waits while another's is streamed would hit its own
stalled-write timeout on a slow download. The cost is time order across workers, which neither
format needs (`reordercap` sorts a pcap).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from kshark.api.export_query import (
    ExportError,
    ExportLimits,
    ExportRequest,
    parse_export_request,
)
from kshark.api.har import har_comment_of_tail, har_head, har_response, har_tail
from kshark.api.httpserver import Response, error_response
from kshark.api.pcapng import (
    CONNECTIONS_HEADER,
    PCAPNG_EPB,
    PCAPNG_IDB,
    PCAPNG_SHB,
    pcap_response,
    pcapng_section_header,
)
from kshark.hub.httpclient import UpstreamError, http_get

if TYPE_CHECKING:
    from kshark.api.httpserver import Request
    from kshark.hub.workers import WorkerSet

log = logging.getLogger("kshark.hub")

# Seconds a worker's export may stay silent (it scans its store for matches, then sends). Longer
# than the hub's REST timeout: a selective filter over a large store sends nothing for a while
# (HAR exports send a keep-alive line every 5 s; a pcap export answers after its scan).
EXPORT_READ_TIMEOUT = 120.0
# Longest line (one HAR entry) or block (one packet) accepted from a worker's export. Past it the
# rest of that worker's export is dropped (and said so): an entry is bounded by the worker's
# --max-body, a packet by the snap length, both far below.
MAX_EXPORT_ITEM = 64 << 20


async def hub_export(
    workers: WorkerSet,
    request: Request,
    route: str,
    *,
    worker_token: str | None = None,
    limits: ExportLimits | None = None,
) -> Response:
    """`/har` or `/pcap` (without the `/api` prefix) gathered from every worker."""
    limits = limits or ExportLimits()
    addresses = list(workers.addresses)
    try:
        if route == "/har":
            req = parse_export_request(
                request, default_limit=limits.max_entries, default_bytes=limits.max_har_bytes
            )
            return har_response(_gather_har(addresses, req, worker_token))
        req = parse_export_request(
            request, default_limit=limits.max_connections, default_bytes=limits.max_pcap_bytes
        )
    except ExportError as err:
        return err.response()
    if req.query.has_redactions:
        return error_response(
            400, "a query with redact() cannot export packets: they hold what it hides"
        )
    # The workers decide what they send, after this head: it carries no counts.
    return pcap_response(_gather_pcap(addresses, req, worker_token))


def _target(route: str, req: ExportRequest, limit: int, max_bytes: int) -> str:
    return f"/api{route}?q={quote(req.text, safe='')}&limit={limit}&max_bytes={max_bytes}"


class _Lines:
    """Lines of a worker's body, each bounded by MAX_EXPORT_ITEM."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._buf = bytearray()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buf = self._buf
        async for chunk in self._body:
            buf += chunk
            start = 0
            while (nl := buf.find(b"\n", start)) >= 0:
                yield bytes(buf[start:nl])
                start = nl + 1
            del buf[:start]
            if len(buf) > MAX_EXPORT_ITEM:
                raise UpstreamError(f"a line of its export is longer than {MAX_EXPORT_ITEM} bytes")
        # Anything after the last newline is a line the worker did not finish: not passed on.


async def _gather_har(
    addresses: list[str], req: ExportRequest, token: str | None
) -> AsyncIterator[bytes]:
    yield har_head()
    sent = 0
    size = 0
    notes: list[str] = []
    for address in addresses:
        if sent >= req.limit or size >= req.max_bytes:
            if not req.limit_from_kfl:
                notes.append(f"stopped at the export's limit before worker {address}")
            break
        target = _target("/har", req, req.limit - sent, req.max_bytes - size)
        try:
            upstream = await http_get(address, target, token=token, io_timeout=EXPORT_READ_TIMEOUT)
        except UpstreamError as exc:
            notes.append(f"worker {address} left out: {exc}")
            continue
        if upstream.status != 200:
            await upstream.aclose()
            notes.append(f"worker {address} left out: it answered {upstream.status}")
            continue
        first = True
        ended = False
        try:
            async for line in _Lines(upstream.body()):
                if first:
                    first = False  # the worker's opening line
                    continue
                text = line.strip()
                if not text:
                    continue  # keep-alive
                if text.startswith(b"]"):
                    ended = True
                    comment = har_comment_of_tail(text)
                    if comment:
                        notes.append(f"worker {address}: {comment}")
                    break
                entry = text[1:] if text.startswith(b",") else text
                yield (b",%b\n" if sent else b"%b\n") % entry
                sent += 1
                size += len(entry)
        except UpstreamError as exc:
            notes.append(f"worker {address} cut short: {exc}")
            continue
        if not ended:
            notes.append(f"worker {address} cut short: its export ended early")
    yield har_tail("; ".join(notes) or None)


class _PcapngRenumber:
    """A worker's pcapng section → blocks of the hub's section: the section header dropped,
    interface numbers shifted past those of the workers before it."""

    def __init__(self, first_interface: int) -> None:
        self.first_interface = first_interface
        self.interfaces = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        off = 0
        while len(buf) - off >= 12:
            block_type, total = struct.unpack_from("<II", buf, off)
            if total < 12 or total % 4 or total > MAX_EXPORT_ITEM:
                raise UpstreamError(f"a bad pcapng block in its export (length {total})")
            if len(buf) - off < total:
                break
            if block_type == PCAPNG_SHB:
                if struct.unpack_from("<I", buf, off + 8)[0] != 0x1A2B3C4D:
                    raise UpstreamError("its export is not little-endian pcapng")
            elif block_type == PCAPNG_IDB:
                out += buf[off : off + total]
                self.interfaces += 1
            elif block_type == PCAPNG_EPB:
                block = bytearray(buf[off : off + total])
                local = struct.unpack_from("<I", block, 8)[0]
                struct.pack_into("<I", block, 8, self.first_interface + local)
                out += block
            off += total
        del buf[:off]
        return bytes(out)


async def _gather_pcap(
    addresses: list[str], req: ExportRequest, token: str | None
) -> AsyncIterator[bytes]:
    yield pcapng_section_header(f"kshark hub export of the workers {', '.join(addresses)}")
    connections = 0
    size = 0
    interfaces = 0
    for address in addresses:
        if connections >= req.limit or size >= req.max_bytes:
            log.info("pcap export %r: limit reached before worker %s", req.text, address)
            break
        target = _target("/pcap", req, req.limit - connections, req.max_bytes - size)
        try:
            upstream = await http_get(address, target, token=token, io_timeout=EXPORT_READ_TIMEOUT)
        except UpstreamError as exc:
            log.warning("pcap export %r: worker %s left out: %s", req.text, address, exc)
            continue
        if upstream.status != 200:
            await upstream.aclose()
            log.warning(
                "pcap export %r: worker %s left out: it answered %d",
                req.text,
                address,
                upstream.status,
            )
            continue
        count = upstream.headers.get(CONNECTIONS_HEADER.lower(), "0")
        connections += int(count) if count.isdigit() else 0
        renumber = _PcapngRenumber(interfaces)
        try:
            async for chunk in upstream.body():
                blocks = renumber.feed(chunk)
                size += len(blocks)
                if blocks:
                    yield blocks
        except UpstreamError as exc:
            log.warning("pcap export %r: worker %s cut short: %s", req.text, address, exc)
        interfaces += renumber.interfaces
