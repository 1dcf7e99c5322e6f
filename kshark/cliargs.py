"""Command-line values checked where they are parsed, and refused in one line.

Every bad value of a flag ends the program with one line on stderr and exit code 2, before
anything starts: argparse's own errors (an unknown flag, a missing value) and the checks of the
converters below alike. A new flag is one `add_argument` line with one of these as its `type`.

Tokens are not only flags: a token on the command line shows in `ps` and in /proc/PID/cmdline,
so `token_from` also takes a file (`--token-file`) or an environment variable.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import NoReturn

_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Sizes past this are typos, not budgets (8 EiB; also what fits an off_t).
MAX_SIZE = (1 << 63) - 1
# A token file larger than this is not a token file.
MAX_TOKEN_FILE = 4096


class CliError(Exception):
    """A flag's value cannot be used; the message is the whole line the user sees."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line (`prog: message`, exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def size(minimum: int = 0) -> Callable[[str], int]:
    """A byte size: `1GiB`, `512MiB`, `64k`, `1.5m`, `4096` (binary units, case-insensitive,
    an optional `b`/`ib`), at least `minimum` and at most MAX_SIZE."""

    def parse(text: str) -> int:
        m = _SIZE_RE.fullmatch(text.strip())
        if m is None:
            raise argparse.ArgumentTypeError(
                f"not a size: {text!r} (e.g. 1GiB, 512MiB, 64KiB, 4096)"
            )
        # Exact arithmetic: no float rounding, no overflow to infinity on a long number.
        value = int(Fraction(m[1]) * _UNITS[m[2].lower()])
        if value < minimum:
            least = "more than 0" if minimum == 1 else f"at least {minimum} bytes"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {least}")
        if value > MAX_SIZE:
            raise argparse.ArgumentTypeError(f"{text!r}: larger than {MAX_SIZE} bytes")
        return value

    parse.__name__ = "size"  # argparse names the type in some messages
    return parse


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: the system picks a free one)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return int(text)


def word(what: str) -> Callable[[str], str]:
    """A non-empty value without whitespace or '/' (it goes into ids and paths). `what` reads
    after "is not": "an interface name"."""

    def parse(text: str) -> str:
        if not text or any(c.isspace() or c == "/" or not c.isprintable() for c in text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (no spaces, no '/')")
        return text

    parse.__name__ = what
    return parse


def nonempty(what: str) -> Callable[[str], str]:
    """Any text but the empty one (an empty value would silently mean "the default")."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return text

    parse.__name__ = what
    return parse


def token(text: str) -> str:
    """A bearer token given on the command line."""
    return _checked_token(text, "")


def _checked_token(text: str, source: str) -> str:
    prefix = f"{source}: " if source else ""
    if not text:
        raise argparse.ArgumentTypeError(f"{prefix}the token is empty")
    # Whitespace in a token is a copy-paste slip (a header value's would be cut off, so it
    # could never match), and control characters cannot travel in a header or a URL.
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
    value: str | None, file: str | None, env: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token: the flag's value, else the file's content (without its trailing newline),
    else the environment variable `env` (unless empty), else None. Raises CliError for an
    unreadable or empty file, or a token with spaces or control characters. The hub reads its
    tokens by the same rules (kshark/hub/tokens.py)."""
    environ = os.environ if environ is None else environ
    try:
        if value is not None:
            return value
        if file is not None:
            return _checked_token(_read_token_file(file), f"token file {file}")
        if environ.get(env):  # an empty variable counts as unset, as for the hub
            return _checked_token(environ[env], f"environment variable {env}")
    except argparse.ArgumentTypeError as exc:
        raise CliError(str(exc)) from None
    return None


def _read_token_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise CliError(f"token file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise CliError(f"token file {path}: larger than {MAX_TOKEN_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"token file {path}: not UTF-8 text") from None
    return text.rstrip("\r\n")


def fail(prog: str, message: str) -> int:
    """Print `prog: message` as the one line on stderr; the exit code for a refused start."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 2
