"""Where the hub's two tokens come from, and when it refuses to serve without one.

A token given as `--token T` is visible to every user of the machine (`ps`, /proc/PID/cmdline),
so each can also come from a file (`--token-file PATH`, e.g. a mounted Kubernetes secret) or an
environment variable (`KSHARK_TOKEN`, `KSHARK_WORKER_TOKEN`), which only the process's own user
can read. At most one of the flag and the file may be given; the environment variable is used
when neither is (an empty variable counts as unset). A file's content is the token, without
the trailing newline editors add; an unreadable or empty file is an error.

The refusal: a hub given a worker token but no client token would hand the entries, items and
pcaps of protected workers to anyone who can reach it; it starts so only when told
(`--insecure-no-token`). Serving on anything but loopback without a client token is only
warned about (a hub behind its own network policy may mean it).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TOKEN_ENV = "KSHARK_TOKEN"
WORKER_TOKEN_ENV = "KSHARK_WORKER_TOKEN"
# Largest token file read: a token is a line, not a document.
MAX_TOKEN_FILE_BYTES = 4096


class TokenError(ValueError):
    """A token cannot be had as asked; the message is the one line for the user."""


def read_token_file(path: Path, option: str) -> str:
    """The token in `path`: its content without trailing newlines (CR LF too)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise TokenError(f"{option} {path}: larger than {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        token = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise TokenError(f"{option} {path}: not UTF-8 text") from None
    if not token.strip():
        raise TokenError(f"{option} {path}: the file is empty")
    if "\n" in token or "\r" in token:
        raise TokenError(f"{option} {path}: more than one line")
    return token


def resolve_token(
    value: str | None,
    file: Path | None,
    env: str,
    option: str,
    environ: dict[str, str] | None = None,
) -> str | None:
    """The token from `--X VALUE`, `--X-file FILE` or the environment variable `env`, or None."""
    if value is not None and file is not None:
        raise TokenError(f"give {option} or {option}-file, not both")
    if value is not None:
        if not value:
            raise TokenError(f"{option}: the token is empty")
        return value
    if file is not None:
        return read_token_file(file, f"{option}-file")
    from_env = (os.environ if environ is None else environ).get(env)
    return from_env or None


def is_loopback(host: str) -> bool:
    """Whether listening on `host` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume others can reach it
