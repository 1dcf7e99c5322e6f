"""The few system calls the store makes, in one place.

Plain `os.open`/`os.write` with directory file descriptors instead of Python file objects: the
store writes one small file per entry, and the buffered-file machinery (object, buffer, encoding
checks) costs more than the write itself. Directory fds also pin the data directory: names are
resolved inside it, never through a path an input could influence.

Every write goes through `write_all`, which is what tests replace to simulate a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os

_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_OPEN_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_READ_CHUNK = 1 << 18


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; a short write that makes no progress is a full disk."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def open_dir(path: str | os.PathLike[str]) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def replace_atomically(tmp_dir_fd: int, tmp_name: str, dir_fd: int, name: str, data: bytes) -> None:
    """Write `data` to `tmp_name`, then rename it over `name`: readers see the old file or the
    whole new one, never a part. No fsync: this protects readers, not against power loss."""
    fd = os.open(tmp_name, _OPEN_NEW, 0o644, dir_fd=tmp_dir_fd)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp_dir_fd, tmp_name)
        raise
    os.close(fd)
    os.replace(tmp_name, name, src_dir_fd=tmp_dir_fd, dst_dir_fd=dir_fd)


def replace_durably(dir_fd: int, name: str, data: bytes) -> None:
    """Like `replace_atomically` (temp file beside the target), with fsync of the file and of the
    directory: for the small state files whose loss would let a number be handed out twice."""
    tmp = name + ".tmp"
    fd = os.open(tmp, _OPEN_NEW, 0o644, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(dir_fd, tmp)
        raise
    os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def append(dir_fd: int, name: str, data: bytes, size_before: int) -> None:
    """Append `data` to `name` (created if absent; truncated first when `size_before` is 0, so a
    leftover from a failed attempt never precedes a pcap header). On failure the file is cut back
    to `size_before`, so it never ends in half a record."""
    flags = _OPEN_NEW if size_before == 0 else _OPEN_APPEND
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        write_all(fd, data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size_before)
        raise
    finally:
        os.close(fd)


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
