"""Command-line values checked where they are parsed, and refused in one line.

Every bad value of a flag ends the program with one line on stderr and exit code 2, before
anything starts: argparse's own errors (an unknown flag, a missing value) and the checks of the
converters below alike. A new flag is one `add_argument` line with one of these as its `type`.

Tokens have their own rules (a file or the environment besides the flag): kshark.tokens.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import NoReturn

_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Sizes past this are typos, not budgets (8 EiB; also what fits an off_t).
MAX_SIZE = (1 << 63) - 1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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


def seconds(zero: bool = False) -> Callable[[str], float]:
    """A duration in seconds (`15`, `2.5`): more than 0, or with `zero` at least 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or math.isinf(value):  # nan fails too
            least = "0 or more" if zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {least} seconds")
        return value

    parse.__name__ = "seconds"
    return parse


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


def service_parser(prog: str, description: str) -> OneLineParser:
    """A kshark service's parser: flags added to it are checked by their `type` (converters
    above), and a bad one is one line on stderr and exit 2, before anything starts."""
    return OneLineParser(prog=prog, description=description)


def add_listen_flags(parser: argparse.ArgumentParser, default_port: int, what: str) -> None:
    """`--host` (default 127.0.0.1) and `--port` (0: any free one)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help=f"{what} listen address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        default=default_port,
        type=port,
        help=f"{what} port (default {default_port}; 0: any)",
    )


def add_service_flags(parser: argparse.ArgumentParser, version: str) -> None:
    """`--log-level` and `--version`, the last flags of every kshark service."""
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO (default), WARNING or ERROR",
    )
    parser.add_argument("--version", action="version", version=f"kshark {version}")
