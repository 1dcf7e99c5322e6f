"""Bearer tokens on the command line: where they come from and what makes one valid, for the
worker (`--token`) and the hub (`--token` for its clients, `--worker-token` for its workers).

A token given as `--token T` is visible to every user of the machine (`ps`, /proc/PID/cmdline),
so each can also come from a file (`--token-file PATH`, e.g. a mounted Kubernetes secret) or an
environment variable (`KSHARK_TOKEN`, `KSHARK_WORKER_TOKEN`), which only the process's own user
can read. At most one of the flag and the file may be given; the environment variable is used
when neither is (an empty variable counts as unset). A file's content is the token, without the
trailing newline editors add (CR LF too).

Wherever it comes from, a token is not empty and has no whitespace or control characters: a
header value's whitespace would be cut off, so such a token could never match, and control
characters cannot travel in a header or a URL. A bad one is one line on stderr and exit 2,
naming where it came from, before anything starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from typing import TYPE_CHECKING

from kshark.cliargs import CliError

if TYPE_CHECKING:
    from collections.abc import Mapping

TOKEN_ENV = "KSHARK_TOKEN"
WORKER_TOKEN_ENV = "KSHARK_WORKER_TOKEN"
# A token file larger than this is not a token file: a token is a line, not a document.
MAX_TOKEN_FILE = 4096


def token(text: str) -> str:
    """A bearer token given on the command line (an argparse `type`)."""
    return _checked(text, "")


def _checked(text: str, source: str) -> str:
    prefix = f"{source}: " if source else ""
    if not text:
        raise argparse.ArgumentTypeError(f"{prefix}the token is empty")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{prefix}a token has no spaces or control characters")
    return text


def add_token_flags(parser: argparse.ArgumentParser, flag: str, env: str, help_text: str) -> None:
    """`--X` and `--X-file` (one or the other) for a token that `token_from` resolves, with
    `env` as the fallback."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(flag, type=token, metavar="TOKEN", help=f"{help_text} (shows in ps)")
    group.add_argument(
        f"{flag}-file",
        metavar="PATH",
        help=f"read the token from this file (trailing newline ignored); env {env} otherwise",
    )


def token_from(
    value: str | None,
    file: str | None,
    env: str,
    flag: str = "--token",
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The token: the flag's value, else the file's content (without its trailing newline),
    else the environment variable `env` (unless empty), else None. Raises CliError for an
    unreadable file or a token that is not valid (module docstring)."""
    environ = os.environ if environ is None else environ
    try:
        if value is not None:
            return _checked(value, flag)
        if file is not None:
            return _checked(_read_token_file(file, f"{flag}-file"), f"{flag}-file {file}")
        if environ.get(env):
            return _checked(environ[env], f"environment variable {env}")
    except argparse.ArgumentTypeError as exc:
        raise CliError(str(exc)) from None
    return None


def _read_token_file(path: str, option: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise CliError(f"{option} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise CliError(f"{option} {path}: larger than {MAX_TOKEN_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{option} {path}: not UTF-8 text") from None
    return text.rstrip("\r\n")


def is_loopback(host: str) -> bool:
    """Whether listening on `host` serves this machine only (serving elsewhere without a
    client token is warned about)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume others can reach it
