"""Capture files → ``(ts_ns, linktype, frame)`` triples.

Reads classic pcap (µs and ns magic, either byte order, and the "modified" Kuznetzov variant) and
pcapng (SHB in either byte order, several sections, per-interface link type and ``if_tsresol`` /
``if_tsoffset``; EPB, SPB and the obsolete OPB; every other block is skipped), each optionally
gzip-compressed. Compression is detected from the content (magic ``1f 8b``), never from the name.

Why it looks like this:

* This is the hot path of every replay: a 1 GB capture holds 1.4 M records. The loop reads 1 MiB
  chunks (``CHUNK_SIZE``) into one ``bytes`` buffer and walks it with precompiled
  ``struct.Struct.unpack_from``; the common record (a whole pcap record / EPB inside the buffer)
  costs one unpack, one slice and one ``yield``. Everything unusual (buffer refills, other
  blocks, errors) goes through the slower general path. See docs/internals.md and
  ../shared/reference/perf-baseline.md (a bare dpkt reader is several times slower).
* A file is never loaded whole: memory is one chunk plus at most one record (bounded by
  ``MAX_RECORD_SIZE``), so peak RSS does not depend on the capture size. We read with ``read()``
  rather than ``mmap`` so that gzip input goes through the same code and RSS stays honest.
* A truncated last record or a corrupt block ends *that file*: a warning is appended to
  ``CaptureFile.warnings`` and every packet before it has already been yielded. Real captures
  are often cut short (a killed tcpdump); losing the whole file for its last bytes would be
  wrong. Only problems found before the first packet (missing file, not a capture) raise
  ``CaptureOpenError``: that is a user error the CLI reports with exit code 2.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator

Packet = tuple[int, int, bytes]
# read(n) -> up to n bytes; b"" only at end of input
_ReadFn = Callable[[int], bytes]

# Bytes asked of the file per read. Large enough that per-read overhead vanishes (one refill per
# ~700 full-size Ethernet frames), small enough that the buffer stays a fixed, modest size.
CHUNK_SIZE = 1 << 20

# Largest pcap record or pcapng block we accept. Real frames top out at 64 KiB (GRO/TSO) or a few
# hundred KiB (BIG TCP); libpcap/Wireshark use 16 MiB as the pcapng block ceiling too. Anything
# larger is a corrupt length field, and refusing it keeps one bad header from making us buffer
# gigabytes: the file ends there with a "corrupt" warning.
MAX_RECORD_SIZE = 16 << 20

_NS_PER_S = 1_000_000_000

# pcap link-type field: the low 26 bits are the link type, the high bits carry FCS information.
_LINKTYPE_MASK = 0x03FFFFFF

_PCAP_MAGICS: dict[bytes, tuple[str, int, int]] = {
    # magic as stored in the file → (byte order, ns per fraction unit, record header size)
    b"\xd4\xc3\xb2\xa1": ("<", 1000, 16),  # µs, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000, 16),  # µs, big-endian
    b"\x4d\x3c\xb2\xa1": ("<", 1, 16),  # ns, little-endian
    b"\xa1\xb2\x3c\x4d": (">", 1, 16),  # ns, big-endian
    b"\x34\xcd\xb2\xa1": ("<", 1000, 24),  # "modified" pcap (Kuznetzov): 8 extra header bytes
    b"\xa1\xb2\xcd\x34": (">", 1000, 24),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"  # SHB block type: a palindrome, so byte-order independent
_BOM_LE = b"\x4d\x3c\x2b\x1a"  # 0x1A2B3C4D written little-endian
_BOM_BE = b"\x1a\x2b\x3c\x4d"
_GZIP_MAGIC = b"\x1f\x8b"

# pcapng block types
_IDB = 1
_OPB = 2
_SPB = 3
_EPB = 6
# IDB options
_OPT_END = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

# Errors that reading a damaged file can raise: I/O errors, and gzip's own (a cut-off stream is
# EOFError, damaged deflate data is zlib.error, a broken member header is BadGzipFile ⊂ OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error)


class CaptureOpenError(Exception):
    """A capture file cannot be used at all; ``str()`` is one line naming the file and why."""


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc) or type(exc).__name__


def _fill(read: _ReadFn, buf: bytes, start: int, need: int) -> bytes:
    """Return ``buf[start:]`` extended by reads until it holds ``need`` bytes or the input ends.

    Short reads are normal (gzip hands out one decompressed piece per call); only an empty read
    means end of input. A shorter result than ``need`` therefore means EOF.
    """
    parts = [buf[start:]]
    have = len(buf) - start
    while have < need:
        data = read(max(CHUNK_SIZE, need - have))
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


class CaptureFile:
    """One capture file, iterable as ``(ts_ns, linktype, frame)``.

    The constructor opens the file and checks its header, so a missing, unreadable or non-capture
    file raises ``CaptureOpenError`` right away. The first iteration continues on that open file
    (so a FIFO works); iterating again reopens the path. ``packets`` and ``warnings`` describe the
    latest iteration; ``packets`` is exact once the iteration has ended (it is also refreshed at
    every buffer refill, for progress reports).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.name = os.fspath(path)
        self.warnings: list[str] = []
        self.packets = 0
        self.compressed = False
        self._fh: io.BufferedReader | gzip.GzipFile | None = None
        self._raw: io.BufferedReader | None = None  # the file under a GzipFile (not closed by it)
        self._read: _ReadFn | None = None
        self._head = b""
        self._open()

    # -- opening and header checks -------------------------------------------------------------

    def _fail(self, reason: str) -> CaptureOpenError:
        self.close()
        return CaptureOpenError(f"{self.name}: {reason}")

    def _open(self) -> None:
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed by close()/the iterator
        except OSError as exc:
            raise CaptureOpenError(f"{self.name}: cannot open: {_describe_os_error(exc)}") from None
        self._fh = self._raw = raw
        self.compressed = False
        try:
            # peek() does not consume, so a FIFO can still be read from the start afterwards.
            first = raw.peek(2)[:2]
            if first == _GZIP_MAGIC:
                gz = gzip.GzipFile(fileobj=raw, mode="rb")
                self._fh = gz
                self.compressed = True
                read: _ReadFn = gz.read1
            else:
                read = raw.read1
            self._read = read
            self._head = head = _fill(read, b"", 0, 32)
        except IsADirectoryError:
            raise self._fail("cannot read: is a directory") from None
        except EOFError:
            raise self._fail("gzip data ends before the capture header") from None
        except (OSError, zlib.error) as exc:
            what = "corrupt gzip data" if self.compressed else "cannot read"
            detail = _describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            raise self._fail(f"{what}: {detail}") from None
        if not head:
            raise self._fail("empty file, not a pcap or pcapng capture")
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            if len(head) < 24:
                raise self._fail("truncated pcap file header")
        elif magic == _PCAPNG_SHB:
            if len(head) < 12 or head[8:12] not in (_BOM_LE, _BOM_BE):
                raise self._fail("corrupt pcapng section header")
        else:
            raise self._fail(f"not a pcap or pcapng capture (starts with {head[:4].hex(' ')})")

    def close(self) -> None:
        fh, self._fh = self._fh, None
        raw, self._raw = self._raw, None
        if fh is not None:
            fh.close()
        if raw is not None:
            raw.close()  # a GzipFile does not close the file object it was handed

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Packet]:
        if self._fh is None:
            self._open()
        read = self._read
        head = self._head
        assert read is not None
        self._head = b""
        self.warnings = []
        self.packets = 0
        if head[:4] == _PCAPNG_SHB:
            return self._iter_pcapng(read, head)
        return self._iter_pcap(read, head)

    def _end(self, reason: str, offset: int, count: int) -> None:
        where = " (uncompressed)" if self.compressed else ""
        self.warnings.append(
            f"{self.name}: {reason} at offset {offset}{where}; kept {count} packets"
        )

    def _iter_pcap(self, read: _ReadFn, buf: bytes) -> Iterator[Packet]:
        order, frac_ns, rec_size = _PCAP_MAGICS[buf[:4]]
        linktype = struct.unpack_from(order + "I", buf, 20)[0] & _LINKTYPE_MASK
        # sec, fraction, caplen (the original length is not needed: one int less per record)
        unpack = struct.Struct(order + "III4x").unpack_from
        ns = _NS_PER_S
        max_rec = MAX_RECORD_SIZE
        pos = 24
        base = 0  # file offset (uncompressed) of buf[0]
        buflen = len(buf)
        count = 0
        # sec * 10^9 is cached: seconds change every few thousand packets, and an int multiply
        # allocates (a measurable share of this loop: scripts/bench_pipeline.py --stages).
        last_sec = sec_ns = -1
        try:
            while True:
                data_at = pos + rec_size
                if data_at <= buflen:
                    sec, frac, caplen = unpack(buf, pos)
                    end = data_at + caplen
                    if end <= buflen:
                        if sec != last_sec:
                            last_sec = sec
                            sec_ns = sec * ns
                        count += 1
                        yield sec_ns + frac * frac_ns, linktype, buf[data_at:end]
                        pos = end
                        continue
                    if caplen > max_rec:
                        self._end(f"corrupt record (caplen {caplen})", base + pos, count)
                        break
                    need = end - pos
                else:
                    need = rec_size
                    sec = -1  # header not known yet
                # Slow path: the next record is not wholly in the buffer.
                self.packets = count
                rest = buf[pos:]
                base += pos
                pos = 0
                data = read(CHUNK_SIZE)
                if sec >= 0 and need - len(rest) <= len(data):
                    # Usual case: the record's tail is at the start of the next chunk. Yield it
                    # from a small bridge and go on in the new chunk, rather than copying the
                    # whole chunk behind the leftover bytes.
                    k = need - len(rest)
                    count += 1
                    yield sec * ns + frac * frac_ns, linktype, rest[rec_size:] + data[:k]
                    base += len(rest)
                    buf = data
                    buflen = len(buf)
                    pos = k
                    continue
                buf = _fill(read, rest + data, 0, need) if data else rest
                buflen = len(buf)
                if buflen < need:
                    if buflen:
                        self._end("truncated record", base, count)
                    break
        except _READ_ERRORS as exc:
            self._end(f"read error ({_describe_read_error(exc)})", base + pos, count)
        finally:
            self.packets = count
            self.close()

    def _iter_pcapng(self, read: _ReadFn, buf: bytes) -> Iterator[Packet]:
        # Section state, reset by every SHB.
        fused = _PCAPNG_LE_FUSED
        hdr = _PCAPNG_LE_HDR
        u32 = _PCAPNG_LE_U32
        epb = _PCAPNG_LE_EPB
        opb = _PCAPNG_LE_OPB
        order = "<"
        # Per interface: (linktype, mul, div, offset_ns, snaplen); ts_ns = units*mul//div + offset
        ifaces: list[tuple[int, int, int, int, int]] = []
        nifaces = 0

        pos = 0
        base = 0
        buflen = len(buf)
        count = 0
        prev_len = -1  # length of the previous block; its trailing copy sits at buf[pos-4:pos]
        ts = 0  # latest timestamp: SPBs carry none, so they get the previous packet's
        unknown_iface = 0
        # The fast path serves EPBs of the interface and timestamp-high-word seen last (set by
        # the general path): ts_ns = fast_base + low word * fast_mul, with no tuple lookup and
        # one multiply. Interfaces with a base-2 or sub-ns resolution always take the general
        # path (their conversion does not split that way; they are rare).
        fast_if = fast_hi = -1
        fast_base = fast_mul = fast_lt = 0
        pending = b""  # the chunk to continue in once the bridge buffer is consumed
        pending_at = 0
        try:
            while True:
                # Fast path: an EPB wholly in the buffer. One unpack reads the previous block's
                # trailing length (to verify it) and this block's fixed EPB fields.
                if prev_len >= 0 and pos + 24 <= buflen:
                    trail, btype, blen, ifid, hi, lo, caplen = fused(buf, pos - 4)
                    if btype == _EPB and trail == prev_len and ifid == fast_if and hi == fast_hi:
                        end = pos + blen
                        if end <= buflen and caplen + 32 <= blen:
                            ts = fast_base + lo * fast_mul
                            count += 1
                            yield ts, fast_lt, buf[pos + 28 : pos + 28 + caplen]
                            prev_len = blen
                            pos = end
                            continue

                # General path: any block, refills, validation.
                if pending:
                    # buf was a bridge holding one block that straddled two chunks; it is
                    # consumed, so go on in the chunk it was cut from (no copy of the chunk).
                    if pos == buflen:
                        base += buflen - pending_at
                        buf = pending
                        pos = pending_at
                    else:  # not reached: a bridge holds exactly one block; stay correct anyway
                        buf = buf + pending[pending_at:]
                    buflen = len(buf)
                    pending = b""
                    continue
                keep = pos - 4 if prev_len >= 0 else pos
                if pos + 12 > buflen:
                    self.packets = count
                    buf = _fill(read, buf, keep, pos - keep + 12)
                    base += keep
                    pos -= keep
                    keep = 0
                    buflen = len(buf)
                if prev_len >= 0 and u32(buf, pos - 4)[0] != prev_len:
                    self._end(
                        "corrupt block (trailing length mismatch)", base + pos - prev_len, count
                    )
                    break
                if pos == buflen:
                    break  # clean end of file
                if pos + 12 > buflen:
                    self._end("truncated block", base + pos, count)
                    break
                if buf[pos : pos + 4] == _PCAPNG_SHB:
                    bom = buf[pos + 8 : pos + 12]
                    if bom == _BOM_LE:
                        order = "<"
                        fused, hdr, u32 = _PCAPNG_LE_FUSED, _PCAPNG_LE_HDR, _PCAPNG_LE_U32
                        epb, opb = _PCAPNG_LE_EPB, _PCAPNG_LE_OPB
                    elif bom == _BOM_BE:
                        order = ">"
                        fused, hdr, u32 = _PCAPNG_BE_FUSED, _PCAPNG_BE_HDR, _PCAPNG_BE_U32
                        epb, opb = _PCAPNG_BE_EPB, _PCAPNG_BE_OPB
                    else:
                        self._end("corrupt section header (byte-order magic)", base + pos, count)
                        break
                    ifaces = []
                    nifaces = 0
                    fast_if = -1
                btype, blen = hdr(buf, pos)
                if blen < 12 or blen & 3 or blen > MAX_RECORD_SIZE:
                    self._end(f"corrupt block (length {blen})", base + pos, count)
                    break
                end = pos + blen
                if end > buflen:
                    self.packets = count
                    rest = buf[keep:]
                    data = read(CHUNK_SIZE)
                    missing = end - buflen
                    if 4 <= missing <= len(data):
                        # Usual case: the block's tail starts the next chunk. Handle the block in
                        # a small bridge buffer and keep the chunk as ``pending``, instead of
                        # copying the whole chunk behind the leftover bytes. (At least the
                        # block's 4-byte trailer must come from the chunk: the next block's
                        # check reads it at pos - 4 in the chunk.)
                        buf = rest + data[:missing]
                        pending = data
                        pending_at = missing
                    else:
                        buf = _fill(read, rest + data, 0, end - keep) if data else rest
                    base += keep
                    pos -= keep
                    end -= keep
                    buflen = len(buf)
                    if end > buflen:
                        self._end("truncated block", base + pos, count)
                        break

                if btype in (_EPB, _OPB):
                    if blen < 32:
                        self._end(f"corrupt packet block (length {blen})", base + pos, count)
                        break
                    if btype == _EPB:
                        ifid, hi, lo, caplen = epb(buf, pos + 8)
                    else:
                        ifid, hi, lo, caplen = opb(buf, pos + 8)
                    if caplen + 32 > blen:
                        self._end(f"corrupt packet block (caplen {caplen})", base + pos, count)
                        break
                    if ifid >= nifaces:
                        unknown_iface += 1
                    else:
                        lt, mul, div, off, _snap = ifaces[ifid]
                        ts = ((hi << 32) | lo) * mul // div + off
                        if div == 1 and btype == _EPB:
                            fast_if, fast_hi, fast_mul, fast_lt = ifid, hi, mul, lt
                            fast_base = ((hi << 32) * mul) + off
                        count += 1
                        yield ts, lt, buf[pos + 28 : pos + 28 + caplen]
                elif btype == _SPB:
                    if blen < 16:
                        self._end(f"corrupt packet block (length {blen})", base + pos, count)
                        break
                    if nifaces == 0:
                        unknown_iface += 1
                    else:
                        lt, _mul, _div, _off, snap = ifaces[0]
                        caplen = min(u32(buf, pos + 8)[0], blen - 16)
                        if snap:
                            caplen = min(caplen, snap)
                        count += 1
                        yield ts, lt, buf[pos + 12 : pos + 12 + caplen]
                elif btype == _IDB:
                    if blen < 20:
                        self._end(f"corrupt interface block (length {blen})", base + pos, count)
                        break
                    ifaces.append(_parse_idb(buf, pos, blen, order))
                    nifaces = len(ifaces)
                elif buf[pos : pos + 4] == _PCAPNG_SHB:
                    if blen < 28:
                        self._end(f"corrupt section header (length {blen})", base + pos, count)
                        break
                    major = struct.unpack_from(order + "H", buf, pos + 12)[0]
                    if major != 1:
                        self._end(f"unsupported pcapng version {major}", base + pos, count)
                        break
                # Every other block (statistics, name resolution, custom, …) is skipped.
                prev_len = blen
                pos = end
        except _READ_ERRORS as exc:
            self._end(f"read error ({_describe_read_error(exc)})", base + pos, count)
        finally:
            self.packets = count
            if unknown_iface:
                self.warnings.append(
                    f"{self.name}: {unknown_iface} packets referenced an undeclared interface "
                    "and were skipped"
                )
            self.close()


def _describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "compressed data ends early"
    if isinstance(exc, zlib.error | gzip.BadGzipFile):
        return f"corrupt gzip data: {exc}"
    if isinstance(exc, OSError):
        return _describe_os_error(exc)
    return str(exc)


def _parse_idb(buf: bytes, pos: int, blen: int, order: str) -> tuple[int, int, int, int, int]:
    """Interface Description Block → (linktype, mul, div, offset_ns, snaplen).

    Timestamps are in units of 10^-6 s unless ``if_tsresol`` says otherwise: a byte whose high bit
    selects base 2 (units of 2^-n s) or base 10 (10^-n s). ``if_tsoffset`` is whole seconds added
    to every timestamp. Malformed options are ignored (the defaults stay), not fatal.
    """
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    mul, div, offset_ns = 1000, 1, 0
    opt = pos + 16
    limit = pos + blen - 4
    opt_hdr = struct.Struct(order + "HH")
    while opt + 4 <= limit:
        code, olen = opt_hdr.unpack_from(buf, opt)
        if code == _OPT_END or opt + 4 + olen > limit:
            break
        if code == _OPT_IF_TSRESOL and olen >= 1:
            res = buf[opt + 4]
            if res & 0x80:
                mul, div = _NS_PER_S, 1 << (res & 0x7F)
            elif res <= 9:
                mul, div = 10 ** (9 - res), 1
            else:
                mul, div = 1, 10 ** (res - 9)
        elif code == _OPT_IF_TSOFFSET and olen >= 8:
            offset_ns = struct.unpack_from(order + "q", buf, opt + 4)[0] * _NS_PER_S
        opt += 4 + ((olen + 3) & ~3)
    return linktype & _LINKTYPE_MASK, mul, div, offset_ns, snaplen


# previous block's trailing length, then EPB type, length, interface, ts high, ts low, caplen
_PCAPNG_LE_FUSED = struct.Struct("<7I").unpack_from
_PCAPNG_BE_FUSED = struct.Struct(">7I").unpack_from
_PCAPNG_LE_HDR = struct.Struct("<II").unpack_from
_PCAPNG_BE_HDR = struct.Struct(">II").unpack_from
_PCAPNG_LE_U32 = struct.Struct("<I").unpack_from
_PCAPNG_BE_U32 = struct.Struct(">I").unpack_from
# EPB after type+length: interface id, ts high, ts low, caplen
_PCAPNG_LE_EPB = struct.Struct("<IIII").unpack_from
_PCAPNG_BE_EPB = struct.Struct(">IIII").unpack_from
# OPB after type+length: interface id (16 bits), drops (16 bits), ts high, ts low, caplen
_PCAPNG_LE_OPB = struct.Struct("<H2xIII").unpack_from
_PCAPNG_BE_OPB = struct.Struct(">H2xIII").unpack_from


class CaptureSet(Iterator[Packet]):
    """Several capture files read one after the other, in the order given (not merged by time).

    Every file is opened and checked up front, so a bad path fails before any packet is
    processed. ``files[i].warnings`` are each file's warnings; ``warnings`` collects them all.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.files: list[CaptureFile] = []
        try:
            for path in paths:
                self.files.append(CaptureFile(path))
        except CaptureOpenError:
            self.close()
            raise
        # chain.from_iterable is C code: no Python frame per packet between files and consumer.
        self._it: Iterator[Packet] = itertools.chain.from_iterable(self.files)

    def __iter__(self) -> Iterator[Packet]:
        return self._it

    def __next__(self) -> Packet:
        return next(self._it)

    @property
    def warnings(self) -> list[str]:
        return [w for f in self.files for w in f.warnings]

    @property
    def packets(self) -> int:
        return sum(f.packets for f in self.files)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> CaptureSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_captures(paths: Iterable[str | os.PathLike[str]]) -> CaptureSet:
    """Open capture files to be read in order; ``CaptureOpenError`` for the first bad one."""
    return CaptureSet(paths)
