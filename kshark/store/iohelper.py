"""The store's I/O helper process: a batch's files created on another core than the parser.

Why a process and not just a thread: creating a file is several system calls (open, write,
close, rename), and a Python thread must take the GIL back after each one. While the parser
holds the GIL, every such return waits for the switch interval (5 ms), so the file thread
crawls; a shorter interval instead costs the parser a thread handoff per call. Measured, such
a thread took next to no load off the parser (the capture → entries rows of BENCHMARKS.md are
measured with the helper). A helper process has its own interpreter: the store's I/O thread
sends it one request per batch (a single write of the names and bytes through a pipe) and
blocks, without the GIL, until the answer says which files were written.

The helper only makes system calls on the names it is sent, under the directory descriptors it
was started with (the data directory's `pcaps/`, `tmp/` and `entries/`), through
`fileio.write_files`: exactly what the store's own thread would do. It ignores SIGINT and
SIGTERM (a Ctrl-C reaches the whole process group, and the worker still wants its last batches
written) and exits when its request pipe closes: the store's `close()`, or the worker's death.

It is started with `-S -E -B` and this file's path, and loads only the standard library and
`fileio.py` from this directory, so it starts quickly and stays small.

Wire format (little-endian). Request: header `<QIII` (body length, unlink, pcap and entry
counts), then per file to delete `<BH` (directory: 0 pcaps, 1 entries; name length) + name, per
pcap `<HIQ` (name length, data length, size before) + name + data, per entry `<HI` + name +
data. Answer: `<III` (the three counts), then one int32 errno per file in request order (pcaps,
entries, deletions), 0 for done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import struct
import sys
import threading
from array import array
from typing import TYPE_CHECKING

if __package__:
    from kshark.store import fileio
else:  # the helper process, started by path (see above): this directory is sys.path[0]
    import fileio  # type: ignore[no-redef, import-not-found]  # found at run time only

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence

_REQUEST = struct.Struct("<QIII")
_UNLINK = struct.Struct("<BH")
_PCAP = struct.Struct("<HIQ")
_ENTRY = struct.Struct("<HI")
_ANSWER = struct.Struct("<III")
# The request pipe's capacity. A batch is ~1-2 MB; a bigger pipe lets the helper read it in
# fewer calls. Linux lets an unprivileged process go to 1 MiB (fs.pipe-max-size).
PIPE_SIZE = 1 << 20
# How long close() waits for the helper to finish its last request and exit before killing it.
CLOSE_TIMEOUT = 10.0


class IOHelper:
    """The store's end of the helper process. `write_files` is called from one thread at a
    time (the store has one outstanding write); a lock makes sure of it anyway."""

    def __init__(self, pcaps_fd: int, tmp_fd: int, entries_fd: int) -> None:
        """Start the helper. OSError if it cannot be started."""
        import subprocess

        if not sys.executable:
            raise OSError(errno.ENOENT, "no Python interpreter path to start the I/O helper")
        fds = (pcaps_fd, tmp_fd, entries_fd)
        self._proc: subprocess.Popen[bytes] = subprocess.Popen(
            [sys.executable, "-S", "-E", "-B", os.path.abspath(__file__), *map(str, fds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=fds,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to = self._proc.stdin.fileno()
        self._from = self._proc.stdout.fileno()
        # The default 64 KiB pipe works too, in more read calls.
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(self._to, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._lock = threading.Lock()
        self._dead: str | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def write_files(
        self,
        pcaps: Sequence[tuple[str, bytes, int]],
        entries: Sequence[tuple[str, bytes]],
        unlinks: Sequence[tuple[int, str]] = (),
    ) -> tuple[list[OSError | None], list[OSError | None], list[OSError | None]]:
        """Like `fileio.write_files` with the helper's directories, done by the helper.

        Raises OSError if the helper is gone or the exchange fails; it is then stopped for good,
        and the caller does the batch itself (part of it may already be done).
        """
        return self.exchange(self.encode_request(pcaps, entries, unlinks))

    @staticmethod
    def encode_request(
        pcaps: Sequence[tuple[str, bytes, int]],
        entries: Sequence[tuple[str, bytes]],
        unlinks: Sequence[tuple[int, str]] = (),
    ) -> tuple[list[bytes | memoryview], tuple[int, int, int]]:
        """A batch's request, ready for `exchange`. Made apart so the store's own thread can
        make it (PendingWrite): in the I/O thread, this Python loop would compete with the
        parser for the GIL while the helper waits for its request."""
        parts: list[bytes | memoryview] = [b""]
        size = 0
        pack_unlink = _UNLINK.pack
        for kind, name in unlinks:
            raw = name.encode()
            parts += (pack_unlink(kind, len(raw)), raw)
            size += _UNLINK.size + len(raw)
        pack_pcap = _PCAP.pack
        for name, data, before in pcaps:
            raw = name.encode()
            parts += (pack_pcap(len(raw), len(data), before), raw, data)
            size += _PCAP.size + len(raw) + len(data)
        pack_entry = _ENTRY.pack
        for name, data in entries:
            raw = name.encode()
            parts += (pack_entry(len(raw), len(data)), raw, data)
            size += _ENTRY.size + len(raw) + len(data)
        counts = (len(unlinks), len(pcaps), len(entries))
        parts[0] = _REQUEST.pack(size, *counts)
        return parts, counts

    def exchange(
        self, request: tuple[list[bytes | memoryview], tuple[int, int, int]]
    ) -> tuple[list[OSError | None], list[OSError | None], list[OSError | None]]:
        """Send an `encode_request` request (its parts list is consumed), wait for the answer:
        (pcap, entry, unlink) outcomes as `write_files` returns them. OSError as there."""
        parts, counts = request
        with self._lock:
            if self._dead is not None:
                raise OSError(errno.EPIPE, self._dead)
            try:
                _writev_all(self._to, parts)
                del parts
                answer = _read_exact(self._from, _ANSWER.size + 4 * sum(counts))
            except OSError as exc:
                self._stop(f"the I/O helper process failed: {exc.strerror or exc}")
                raise OSError(exc.errno or errno.EPIPE, self._dead) from exc
            if answer is None or _ANSWER.unpack_from(answer) != counts:
                code = self._proc.poll()
                self._stop(f"the I/O helper process ended (exit status {code})")
                raise OSError(errno.EPIPE, self._dead)
        codes = array("i")
        codes.frombytes(answer[_ANSWER.size :])
        if sys.byteorder != "little":
            codes.byteswap()
        results = [None if c == 0 else OSError(c, os.strerror(c)) for c in codes]
        _, n_pcaps, n_entries = counts
        n_files = n_pcaps + n_entries
        return results[:n_pcaps], results[n_pcaps:n_files], results[n_files:]

    def close(self) -> None:
        """Let the helper finish and exit (its request pipe closes); idempotent."""
        with self._lock:
            if self._dead is None:
                self._stop("the I/O helper was closed", timeout=CLOSE_TIMEOUT)

    def _stop(self, why: str, timeout: float = 0.0) -> None:
        import subprocess

        self._dead = why
        for f in (self._proc.stdin, self._proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Stuck (a hung disk) or, after a failed exchange, in an unknown state: it must
            # not write anything once the caller starts doing the batch itself.
            self._proc.kill()
            self._proc.wait()


# Buffers per writev call (the kernel's IOV_MAX is 1024).
_IOV_MAX = 1024


def _writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write the parts in order, gathered: no copy of the whole request (a batch can carry
    tens of MB of packets), and a few system calls per batch. `parts` is consumed."""
    i = 0
    while i < len(parts):
        chunk = parts[i : i + _IOV_MAX]
        n = os.writev(fd, chunk)
        for part in chunk:
            if n < len(part):
                parts[i] = memoryview(part)[n:]
                break
            n -= len(part)
            i += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytearray | None:
    """n bytes, or None on end of file before the first byte; OSError on a partial read."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            if got == 0:
                return None
            raise OSError(errno.EPIPE, f"short read ({got} of {n} bytes)")
        got += k
    return buf


def _serve(pcaps_fd: int, tmp_fd: int, entries_fd: int) -> None:
    """The helper's loop: one request, its files, one answer; until the request pipe closes."""
    unlink_head = _UNLINK
    pcap_head = _PCAP
    entry_head = _ENTRY
    while True:
        head = _read_exact(0, _REQUEST.size)
        if head is None:
            return
        size, n_unlinks, n_pcaps, n_entries = _REQUEST.unpack(head)
        body = _read_exact(0, size)
        view = memoryview(body if body is not None else b"")
        pos = 0
        unlinks: list[tuple[int, str]] = []
        for _ in range(n_unlinks):
            kind, name_len = unlink_head.unpack_from(view, pos)
            pos += unlink_head.size
            unlinks.append((kind, bytes(view[pos : pos + name_len]).decode()))
            pos += name_len
        pcaps: list[tuple[str, memoryview, int]] = []
        for _ in range(n_pcaps):
            name_len, data_len, before = pcap_head.unpack_from(view, pos)
            pos += pcap_head.size
            name = bytes(view[pos : pos + name_len]).decode()
            pos += name_len
            pcaps.append((name, view[pos : pos + data_len], before))
            pos += data_len
        entries: list[tuple[str, memoryview]] = []
        for _ in range(n_entries):
            name_len, data_len = entry_head.unpack_from(view, pos)
            pos += entry_head.size
            name = bytes(view[pos : pos + name_len]).decode()
            pos += name_len
            entries.append((name, view[pos : pos + data_len]))
            pos += data_len
        results = fileio.write_files(pcaps_fd, tmp_fd, entries_fd, pcaps, entries, unlinks)
        codes = array("i")
        for errors in results:
            codes.extend([0 if e is None else (e.errno or errno.EIO) for e in errors])
        if sys.byteorder != "little":
            codes.byteswap()
        _write_all(1, _ANSWER.pack(n_unlinks, n_pcaps, n_entries) + codes.tobytes())
        del pcaps, entries, view, body


def _main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pcaps_fd, tmp_fd, entries_fd = (int(a) for a in argv)
    with contextlib.suppress(BrokenPipeError):  # the store went away while we answered
        _serve(pcaps_fd, tmp_fd, entries_fd)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
