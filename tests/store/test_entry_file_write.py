"""kshark.store.fileio.write_entry_file: how one entry file comes to exist, whichever way the
kernel allows (O_TMPFILE + link, or a temp file + rename)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kshark.store import fileio

NAME = "000000000007_pcap-0_entry.json"


@pytest.fixture(params=["unnamed inode", "temp file and rename"])
def dirs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, int, Path]]:
    # The second way is what kernels or filesystems without O_TMPFILE (or without /proc) get.
    monkeypatch.setattr(fileio, "_unnamed_ok", None if request.param == "unnamed inode" else False)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "entries").mkdir()
    tmp_fd = fileio.open_dir(tmp_path / "tmp")
    entries_fd = fileio.open_dir(tmp_path / "entries")
    try:
        yield tmp_fd, entries_fd, tmp_path
    finally:
        os.close(tmp_fd)
        os.close(entries_fd)


def test_the_file_has_the_bytes_and_nothing_is_left_behind(dirs: tuple[int, int, Path]) -> None:
    tmp_fd, entries_fd, root = dirs
    fileio.write_entry_file(tmp_fd, entries_fd, NAME, b'{"id":"x"}')
    assert (root / "entries" / NAME).read_bytes() == b'{"id":"x"}'
    assert os.listdir(root / "entries") == [NAME]
    assert os.listdir(root / "tmp") == []
    assert (root / "entries" / NAME).stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_writing_an_existing_name_again_replaces_it(dirs: tuple[int, int, Path]) -> None:
    # A batch redone after the I/O helper died midway writes names that may exist already.
    tmp_fd, entries_fd, root = dirs
    fileio.write_entry_file(tmp_fd, entries_fd, NAME, b"first")
    fileio.write_entry_file(tmp_fd, entries_fd, NAME, b"second, longer")
    assert (root / "entries" / NAME).read_bytes() == b"second, longer"
    assert os.listdir(root / "entries") == [NAME]
    assert os.listdir(root / "tmp") == []


def test_a_full_disk_leaves_no_file(
    dirs: tuple[int, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_fd, entries_fd, root = dirs

    def full(fd: int, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "write_all", full)
    with pytest.raises(OSError) as info:
        fileio.write_entry_file(tmp_fd, entries_fd, NAME, b"data")
    assert info.value.errno == 28
    assert os.listdir(root / "entries") == []
    assert os.listdir(root / "tmp") == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_this_kernel_takes_the_one_directory_change_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ext4 and tmpfs on Linux ≥ 3.11 support O_TMPFILE: the temp-file way is only a fallback.
    monkeypatch.setattr(fileio, "_unnamed_ok", None)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "entries").mkdir()
    tmp_fd = fileio.open_dir(tmp_path / "tmp")
    entries_fd = fileio.open_dir(tmp_path / "entries")
    try:
        fileio.write_entry_file(tmp_fd, entries_fd, NAME, b"{}")
    finally:
        os.close(tmp_fd)
        os.close(entries_fd)
    assert fileio._unnamed_ok is True
