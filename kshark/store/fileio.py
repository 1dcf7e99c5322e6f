"""The few system calls the store makes, in one place.

Plain `os.open`/`os.write` with directory file descriptors instead of Python file objects: the
store writes one small file per entry, and the buffered-file machinery (object, buffer, encoding
checks) costs more than the write itself. Directory fds also pin the data directory: names are
resolved inside it, never through a path an input could influence.

Every write goes through `write_all`, which is what tests replace to simulate a full disk.

Imports nothing but the standard library: the I/O helper process (kshark.store.iohelper) loads
this file on its own, without the package, so that it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    # What the files are written from: bytes in this process, slices of the request in the
    # helper process.
    Buffer = bytes | memoryview

_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
_READ_CHUNK = 1 << 18


def write_all(fd: int, data: Buffer) -> None:
    """Write all of `data`; a short write that makes no progress is a full disk."""
    n = os.write(fd, data)
    if n == len(data):
        return  # the usual case: one call, no memoryview
    if n <= 0 and len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    view = memoryview(data)[n:]
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def open_dir(path: str | os.PathLike[str]) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def replace_atomically(
    tmp_dir_fd: int, tmp_name: str, dir_fd: int, name: str, data: Buffer
) -> None:
    """Write `data` to `tmp_name`, then rename it over `name`: readers see the old file or the
    whole new one, never a part. No fsync: this protects readers, not against power loss."""
    _write_new(tmp_dir_fd, tmp_name, data)
    os.replace(tmp_name, name, src_dir_fd=tmp_dir_fd, dst_dir_fd=dir_fd)


def _write_new(dir_fd: int, name: str, data: Buffer, sync: bool = False) -> None:
    """Create `name` holding `data` (on the disk before this returns, with `sync`); a failure
    removes it again and raises."""
    fd = os.open(name, _OPEN_NEW, 0o644, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(dir_fd, name)
        raise
    os.close(fd)


# The temp name entry files are written under in tmp/ before being renamed into entries/, where
# O_TMPFILE is not available. One name is enough: a store writes one entry file at a time (one
# PendingWrite's run_io at a time).
TMP_ENTRY = "entry.tmp"
_OPEN_UNNAMED = os.O_WRONLY | os.O_CLOEXEC | getattr(os, "O_TMPFILE", 0)
# Whether O_TMPFILE + linkat works here; None until the first entry file tells.
_unnamed_ok: bool | None = None if hasattr(os, "O_TMPFILE") else False


def write_entry_file(tmp_dir_fd: int, dir_fd: int, name: str, data: Buffer) -> None:
    """Create the entry file `name` with `data`, appearing whole or not at all.

    The file is written as an unnamed inode in entries/ (O_TMPFILE) and then given its name
    (linkat through /proc/self/fd: AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH). That is one
    directory change instead of the two of a named temp file and a rename, so fewer file system
    calls per entry (BENCHMARKS.md measures what a file costs). Where the kernel, the
    filesystem or a missing /proc refuses it, or the name already exists (a batch redone after
    the I/O helper died), the file goes through a temp file and a rename instead, which
    replaces."""
    global _unnamed_ok
    if _unnamed_ok is not False:
        try:
            fd = os.open(".", _OPEN_UNNAMED, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise  # ENOSPC, EIO, ...: the caller's to count
            _unnamed_ok = False
        else:
            try:
                write_all(fd, data)
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
            except FileExistsError:
                pass  # replaced below
            except FileNotFoundError:
                if _unnamed_ok:
                    raise  # it worked before: entries/ itself is gone
                _unnamed_ok = False  # no /proc
            else:
                _unnamed_ok = True
                return
            finally:
                os.close(fd)
    replace_atomically(tmp_dir_fd, TMP_ENTRY, dir_fd, name, data)


def replace_durably(dir_fd: int, name: str, data: bytes) -> None:
    """Like `replace_atomically` (temp file beside the target), with fsync of the file and of the
    directory: for the small state files whose loss would let a number be handed out twice."""
    tmp = name + ".tmp"
    _write_new(dir_fd, tmp, data, sync=True)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def append(dir_fd: int, name: str, data: Buffer, size_before: int) -> None:
    """Write `data` to `name` at offset `size_before`, the file's size as the store accounts it
    (created if absent; truncated first when `size_before` is 0, so a leftover from a failed
    attempt never precedes a pcap header). On failure the file is cut back to `size_before`, so
    it never ends in half a record.

    At the accounted offset rather than O_APPEND: doing the same append twice (a batch redone
    after the I/O helper process died in the middle of it) writes the same bytes at the same
    place instead of twice."""
    fd = os.open(name, _OPEN_NEW if size_before == 0 else _OPEN_WRITE, 0o644, dir_fd=dir_fd)
    try:
        if size_before:
            os.lseek(fd, size_before, os.SEEK_SET)
        write_all(fd, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size_before)
        raise
    finally:
        os.close(fd)


# Directory of a file to delete in `write_files`.
UNLINK_PCAP = 0
UNLINK_ENTRY = 1


def write_files(
    pcaps_fd: int,
    tmp_fd: int,
    entries_fd: int,
    pcaps: Sequence[tuple[str, Buffer, int]],
    entries: Sequence[tuple[str, Buffer]],
    unlinks: Sequence[tuple[int, str]] = (),
) -> tuple[list[OSError | None], list[OSError | None], list[OSError | None]]:
    """One batch's file work: files retention deletes `(UNLINK_PCAP | UNLINK_ENTRY, name)`,
    then the pcap appends `(name, bytes, size before)`, then the entry files `(name, bytes)`.
    Returns the outcome of each, in that order (None: done). Failed appends are cut back and a
    pcap that could not get its first record is removed, here, at once.

    Deletions go first: a connection retention emptied while it is still open starts a fresh
    pcap under the same name in the same batch.

    Only system calls on the names given, under the directory fds given: this is what runs in
    the I/O thread or the I/O helper process (kshark.store.iohelper).
    """
    unlink_errors = [remove(entries_fd if kind else pcaps_fd, name) for kind, name in unlinks]
    pcap_errors: list[OSError | None] = []
    for name, data, size in pcaps:
        try:
            append(pcaps_fd, name, data, size)
        except OSError as exc:
            if size == 0:
                # Not even a header made it: no file rather than a file that is no pcap.
                unlink_quietly(pcaps_fd, name)
            pcap_errors.append(exc)
        else:
            pcap_errors.append(None)
    entry_errors: list[OSError | None] = []
    for name, data in entries:
        try:
            write_entry_file(tmp_fd, entries_fd, name, data)
        except OSError as exc:
            entry_errors.append(exc)
        else:
            entry_errors.append(None)
    return pcap_errors, entry_errors, unlink_errors


def read_all(dir_fd: int, name: str | bytes) -> bytes | None:
    """The whole file, or None if it does not exist (deleted by retention, or never written)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        first = os.read(fd, _READ_CHUNK)
        if len(first) < _READ_CHUNK:
            return first
        chunks = [first]
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def remove(dir_fd: int, name: str | bytes) -> OSError | None:
    """Remove a file; the error if it could not be removed (absent already counts as removed)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc
    return None


def unlink_quietly(dir_fd: int, name: str | bytes) -> bool:
    """Remove a file; True once it is gone (removed now or already absent), False if it could
    not be removed (the caller keeps counting its space)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def disk_usage(size: int, block: int) -> int:
    """The space a file of `size` bytes occupies: whole filesystem blocks, as `du` counts it.

    Counting blocks instead of bytes matters here: a 700-byte entry file takes a 4 KiB block, so
    a limit on logical bytes would let the data directory grow to several times the limit.
    """
    return -(-size // block) * block
