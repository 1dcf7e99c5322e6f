"""Opening a data directory: taking its lock, accounting for what a previous run left (a crash
included), and where the stream counter resumes."""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kshark.store import fileio, names, pcapfile
from kshark.store.journal import segment_name
from kshark.store.state import StoreLockedError, StreamFiles

if TYPE_CHECKING:
    from pathlib import Path

    from kshark.store.journal import Journal

log = logging.getLogger("kshark.store")

STATE_RESERVATION = "stream-reservation"
_STATE_LOCK = "lock"


def lock_data_dir(data_dir: Path) -> int:
    """One writer per data directory: a second worker would hand out the same stream numbers.
    The lock file's descriptor; it holds the lock until closed.

    A POSIX record lock (lockf): it is released when the process dies, however it dies.
    It is per process, so a second Store on the same directory in the same process is not
    refused (tests reopen a store to simulate a restart).
    """
    path = data_dir / "state" / _STATE_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"the data directory {data_dir} is in use by another kshark process "
            f"(pid {holder}); give each worker its own --data-dir"
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@dataclass(slots=True)
class Found:
    """What a previous run left: its connections' files, their disk usage, its entry files."""

    streams: dict[int, StreamFiles]
    usage: int
    entries: int


def scan(pcaps_fd: int, entries_fd: int, journal_fd: int, journal: Journal, block: int) -> Found:
    """Account every file a previous run left, so retention and the counter know them; journal
    the entry files a crash left unannounced."""
    found = Found({}, 0, 0)
    streams = found.streams
    with os.scandir(pcaps_fd) as it:
        for de in it:
            stream = names.parse_pcap_file(de.name)
            if stream is None:
                continue
            size = de.stat(follow_symlinks=False).st_size
            if size < pcapfile.GLOBAL_HEADER_SIZE:
                # A failed first write that could not even be cut back: not a pcap.
                fileio.unlink_quietly(pcaps_fd, de.name)
                continue
            st = streams.get(stream)
            if st is None:
                st = streams[stream] = StreamFiles(closed=True)
            st.pcap_size = size
            found.usage += fileio.disk_usage(size, block)
    # Entry files at least as new as the journal's last write may be ones a crash left
    # without their journal line (see announce_leftovers).
    journal_mtime = journal.mtime_ns()
    recent: list[tuple[int, int, str, int]] = []
    with os.scandir(entries_fd) as it:
        for de in it:
            parsed = names.parse_entry_file(de.name)
            if parsed is None:
                continue
            stream, index = parsed
            stat = de.stat(follow_symlinks=False)
            size = stat.st_size
            if stat.st_mtime_ns >= journal_mtime:
                recent.append((stream, index, de.name, stat.st_mtime_ns))
            st = streams.get(stream)
            if st is None:
                st = streams[stream] = StreamFiles(closed=True)
            st.entries.append(index)  # seq unknown (0): not worth reading the journal
            st.entry_usage += fileio.disk_usage(size, block)
            found.usage += fileio.disk_usage(size, block)
            found.entries += 1
    for st in streams.values():
        st.entries.sort()
    if recent:
        announce_leftovers(journal, journal_fd, recent)
    return found


def announce_leftovers(
    journal: Journal, journal_fd: int, recent: list[tuple[int, int, str, int]]
) -> None:
    """Journal the entry files a crash left without their journal line, so followers get
    them too (otherwise /item would serve them but no stream ever would).

    A batch's files are written before its journal lines, so a kill in between leaves
    files that only the journal lacks, and only from that last batch: every such file is
    at least as new as the journal's last write (`recent`: (stream, index, name, mtime); with a
    coarse filesystem clock, files journaled in the same tick are among them). A journaled
    file's line is in a segment written after the file, so the segments at least as new as the
    oldest of them (one or two, in practice) tell which are really missing; those are appended
    in (stream, index) order, the order a batch writes them."""
    oldest = min(r[3] for r in recent)
    known: set[bytes] = set()
    for segment in reversed(journal.segments):
        name = segment_name(segment)
        try:
            if os.stat(name, dir_fd=journal_fd).st_mtime_ns < oldest:
                break
        except FileNotFoundError:
            continue
        data = fileio.read_all(journal_fd, name) or b""
        known.update(line.partition(b" ")[2] for line in data.splitlines())
    missing = sorted(r for r in recent if r[2].encode() not in known)
    if not missing:
        return
    done, _, error = journal.append([r[2].encode() for r in missing])
    log.warning(
        "%d entry file(s) a crash had left unannounced are journaled now (%s%s)",
        done,
        missing[0][2],
        ", …" if len(missing) > 1 else "",
    )
    if error is not None:
        log.error("cannot journal them all: %s; %d stay unannounced", error, len(missing) - done)


def resume_counter(state_fd: int, streams: dict[int, StreamFiles], journal: Journal) -> int:
    """The first stream number to hand out: past every number reserved, on disk, or named by
    the newest journal line."""
    candidates = [1]
    data = fileio.read_all(state_fd, STATE_RESERVATION)
    if data is not None:
        try:
            candidates.append(int(data))
        except ValueError:
            log.warning("state/%s is not a number (%r); ignoring it", STATE_RESERVATION, data)
    if streams:
        candidates.append(max(streams) + 1)
    if journal.last_name:
        stream = names.parse_entry_file_bytes(journal.last_name)
        if stream is not None:
            candidates.append(stream + 1)
    return max(candidates)
