"""What `kshark-worker` and `kshark-hub` do alike around their own work: logging to stderr, and
running until the work ends or SIGINT/SIGTERM, with startup failures a user can act on printed
as one line each (exit 2) instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from kshark.cliargs import CliError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Log records at `level` (a name of cliargs.LOG_LEVELS) and above to stderr."""
    logging.basicConfig(level=getattr(logging, level), format=LOG_FORMAT, stream=sys.stderr)


_Config = TypeVar("_Config")


def configure(
    prog: str,
    parser: argparse.ArgumentParser,
    config_from_args: Callable[[argparse.Namespace], _Config],
    argv: list[str] | None,
) -> _Config:
    """Parse the command line, set up logging at its `--log-level`, and check what the flags
    only mean together (`config_from_args`); a refusal (CliError) is one line on stderr and
    exit 2, as argparse's own."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        return config_from_args(args)
    except CliError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# A service: `async def run(*, task_status)`, which calls `task_status.started(value)` once it
# serves and returns when its work is done (or runs until cancelled).
Service = Callable[..., Awaitable[None]]


def run_service(
    prog: str,
    run: Service,
    *,
    stopping: str,
    failures: tuple[type[Exception], ...],
    describe: Callable[[Exception], str] = str,
) -> tuple[int, Any]:
    """`trio.run` the service until it returns or a signal cancels it (logged: "SIGTERM
    received: <stopping>"). Returns (exit code, the value it passed to `started`): 0, or 2 after
    printing `prog: <describe(exc)>` for each of `failures` raised (None then)."""

    log = logging.getLogger(f"kshark.{prog.removeprefix('kshark-')}")

    async def main() -> tuple[int, Any]:
        try:
            return 0, await _until_signal(run, stopping, log)
        except* failures as group:
            for exc in leaves(group):
                print(f"{prog}: {describe(exc)}", file=sys.stderr)
        return 2, None

    return trio.run(main)


async def _until_signal(run: Service, stopping: str, log: logging.Logger) -> Any:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("%s received: %s", signal.Signals(signum).name, stopping)
                    nursery.cancel_scope.cancel()
                    return

            async def supervise(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await run(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            return await nursery.start(supervise)


def leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The exceptions of a group, nested groups flattened."""
    out: list[Exception] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
