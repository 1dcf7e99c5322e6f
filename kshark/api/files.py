"""A file as a response body (the worker's `/pcaps/{stream}`, the pcap export)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from kshark.api.httpserver import STREAM_CHUNK

if TYPE_CHECKING:
    from pathlib import Path


async def file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """The first `size` bytes of a file in STREAM_CHUNK pieces. The file is opened only when the
    body is sent (never for HEAD); once open, retention deleting it does not cut the download.
    A file gone or shorter than `size` ends the body early (a server then closes the
    connection: the client sees fewer bytes than Content-Length)."""
    try:
        f = await trio.open_file(path, "rb")
    except FileNotFoundError:
        return
    try:
        left = size
        while left > 0:
            chunk = await f.read(min(STREAM_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        with trio.CancelScope(shield=True):
            await f.aclose()
