"""The store's identity: a random id created once per data directory, kept in `state/store-id`.

Why: a new, empty data directory hands out stream numbers (and so entry ids) from 1 again, so
the same id names different entries in two directories. A reader that keeps cursors across a
worker's restarts (the hub) compares the store id to know whether its cursors still mean
anything. The id is made once, when a directory is first opened as a store, and never changes;
a copy of the directory keeps it (the copy holds the same entries under the same ids).

The file is one line of JSON, `{"created": <unix seconds>, "store_id": "<32 hex digits>"}`,
written durably (temp file, fsync, rename) because losing it would make the same entries look
like a new store. `created` lets a reader tell how old the store is (the hub uses it to decide
whether a store it meets mid-stream holds only entries newer than the stream).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from kshark.store import fileio

log = logging.getLogger("kshark.store")

IDENTITY_FILE = "store-id"
# The file is a few dozen bytes; anything much larger is not ours.
_MAX_FILE_BYTES = 4096
_MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    store_id: str
    created: float  # unix time the directory got its identity


def load_or_create(state_fd: int) -> StoreIdentity:
    """The identity kept in the state directory open as `state_fd`, created there if it has
    none. A file that cannot be parsed is replaced by a new identity (logged): the store's
    entries may then be sent again by readers that kept cursors, which is better than a store
    that will not open. OSError if the file cannot be read or written."""
    data = fileio.read_all(state_fd, IDENTITY_FILE)
    if data is not None:
        identity = _parse(data)
        if identity is not None:
            return identity
        log.warning("state/%s is not a store identity (%r); making a new one", IDENTITY_FILE, data)
    identity = StoreIdentity(os.urandom(16).hex(), round(time.time(), 3))
    body = {"created": identity.created, "store_id": identity.store_id}
    fileio.replace_durably(state_fd, IDENTITY_FILE, orjson.dumps(body) + b"\n")
    return identity


def store_id(state_fd: int) -> str:
    """The store id of the state directory open as `state_fd` (created if missing)."""
    return load_or_create(state_fd).store_id


def read_identity(data_dir: str | os.PathLike[str]) -> StoreIdentity | None:
    """The identity of a data directory, read only (None if it has none or it is unreadable)."""
    try:
        with open(Path(data_dir) / "state" / IDENTITY_FILE, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError:
        return None
    return _parse(data)


def _parse(data: bytes) -> StoreIdentity | None:
    if len(data) > _MAX_FILE_BYTES:
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    sid, created = doc.get("store_id"), doc.get("created")
    if not isinstance(sid, str) or not sid or len(sid) > _MAX_ID_CHARS or not sid.isprintable():
        return None
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    return StoreIdentity(sid, float(created))
