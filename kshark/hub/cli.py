"""kshark-hub: one websocket endpoint for every worker, that survives worker failures.

kshark-hub --worker 10.0.41.65:30001 --worker 10.0.41.66:30001
kshark-hub --workers-file /etc/kshark/workers        # re-read when it changes
kshark-hub --discover kshark/app.kubernetes.io/name=kshark-worker   # the worker pods (discover.py)
wscat --connect ws://127.0.0.1:8899/api/wsFull -x 'response.status > 300'

Tokens: `--token`/`--token-file`/KSHARK_TOKEN for clients, `--worker-token`/
`--worker-token-file`/KSHARK_WORKER_TOKEN for workers (kshark/tokens.py).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from kshark import __version__, cliargs, service, tokens
from kshark.api.httpserver import serve
from kshark.cliargs import CliError
from kshark.hub.app import HubApp
from kshark.hub.limits import HubLimits
from kshark.hub.monitor import monitor_workers
from kshark.hub.workers import (
    WORKERS_FILE_POLL_SECONDS,
    WorkerSet,
    WorkersFileState,
    parse_address,
    watch_workers_file,
)
from kshark.tokens import TOKEN_ENV, WORKER_TOKEN_ENV, is_loopback

if TYPE_CHECKING:
    from kshark.hub.discover import DiscoverSpec
    from kshark.k8s.config import ClusterConfig

log = logging.getLogger("kshark.hub")

DESCRIPTION = (
    "Serve the worker API for a set of kshark workers on one port: streams merge every "
    "worker and survive workers failing and restarting."
)
PROG = "kshark-hub"


@dataclass
class HubConfig:
    workers: list[str] = field(default_factory=list)  # canonical addresses (parse_address)
    workers_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8899
    token: str | None = None  # clients must send it
    worker_token: str | None = None  # sent to workers
    limits: HubLimits = field(default_factory=HubLimits)
    workers_file_poll: float = WORKERS_FILE_POLL_SECONDS
    discover: DiscoverSpec | None = None  # watch these worker pods (with `cluster`)
    cluster: ClusterConfig | None = None
    discover_port: int = 30001  # a discovered pod's API port without the annotation


async def run_hub(cfg: HubConfig, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the hub until cancelled; `task_status.started(app)` once listening (`app.port`)."""
    workers = WorkerSet(cfg.workers)
    file_state = WorkersFileState(cfg.workers_file) if cfg.workers_file is not None else None
    app = HubApp(workers, limits=cfg.limits, worker_token=cfg.worker_token, workers_file=file_state)
    async with trio.open_nursery() as nursery:
        if file_state is not None:
            await nursery.start(
                functools.partial(watch_workers_file, workers, file_state, cfg.workers_file_poll)
            )
        if cfg.discover is not None and cfg.cluster is not None:
            from kshark.hub.discover import Discovery

            app.discovery = Discovery(workers, cfg.discover, cfg.discover_port)
            await nursery.start(app.discovery.run, cfg.cluster)
        nursery.start_soon(monitor_workers, workers, cfg.limits, cfg.worker_token)
        app.port = await nursery.start(
            functools.partial(serve, app, cfg.host, cfg.port, token=cfg.token)
        )
        log.info(
            "hub listening on %s:%d for %d worker(s)", cfg.host, app.port, len(workers.addresses)
        )
        if cfg.token is None and not is_loopback(cfg.host):
            log.warning(
                "serving on %s without a client token: anyone who can reach port %d can read "
                "every worker's entries (give --token-file or %s)",
                cfg.host,
                app.port,
                TOKEN_ENV,
            )
        task_status.started(app)


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.service_parser(PROG, DESCRIPTION)
    add = p.add_argument
    add("--worker", action="append", default=[], metavar="HOST:PORT",
        help="a worker's API address (repeatable; IPv6 as [ADDR]:PORT)")  # fmt: skip
    add("--workers-file", type=Path, metavar="FILE",
        help="one HOST:PORT per line (# comments); re-read when it changes")  # fmt: skip
    add(
        "--discover",
        metavar="NAMESPACE/LABEL_SELECTOR",
        help="stream every Ready worker pod of NAMESPACE matching the selector, e.g. "
        "kshark/app.kubernetes.io/name=kshark-worker (watched through the Kubernetes API)",
    )
    add(
        "--kubeconfig",
        metavar="PATH",
        help="the cluster for --discover (default: $KUBECONFIG, else the in-cluster service "
        "account)",
    )
    add(
        "--discover-port",
        type=cliargs.port,
        default=30001,
        metavar="N",
        help="a discovered worker's API port when its pod has no kshark.io/api-port "
        "annotation (default %(default)s)",
    )
    cliargs.add_listen_flags(p, 8899, "the hub's")
    tokens.add_token_flags(
        p, "--token", TOKEN_ENV, "require 'Authorization: Bearer TOKEN' (or ?token=) from clients"
    )
    tokens.add_token_flags(
        p, "--worker-token", WORKER_TOKEN_ENV, "the token the workers require, sent to them"
    )
    add(
        "--insecure-no-token",
        action="store_true",
        help="serve without a client token even though the workers have one (anyone who can "
        "reach the hub reads the protected workers' entries)",
    )
    defaults = HubLimits()
    for flag, zero, default, text in (
        ("--reorder-window", True, defaults.reorder_window,
         'how long "ordered": true streams hold an entry to sort it'),
        ("--worker-silence", False, defaults.worker_silence,
         "ping a worker connection after this long without a byte from it"),
        ("--worker-pong-timeout", False, defaults.worker_pong_timeout,
         "a worker that does not answer that ping within this is handled as dead"),
    ):  # fmt: skip
        add(flag, type=cliargs.seconds(zero), default=default, metavar="SECONDS",
            help=f"{text} (default %(default)s)")  # fmt: skip
    cliargs.add_service_flags(p, __version__)
    return p


def config_from_args(args: argparse.Namespace) -> HubConfig:
    """The checked flags → HubConfig; CliError for what only makes sense together (or needs
    the file system or the environment: the token files, a kubeconfig)."""
    if not args.worker and args.workers_file is None and not args.discover:
        raise CliError(
            "no workers: give --worker HOST:PORT, --workers-file FILE or "
            "--discover NAMESPACE/LABEL_SELECTOR"
        )
    discover = cluster = None
    if args.discover:
        from kshark.hub.discover import parse_discover
        from kshark.k8s.config import KubeConfigError, find_cluster_config

        try:
            discover = parse_discover(args.discover)
            cluster = find_cluster_config(args.kubeconfig, os.environ)
        except (ValueError, KubeConfigError) as exc:
            raise CliError(f"--discover: {exc}") from None
        if cluster is None:
            raise CliError(
                "--discover needs a cluster: --kubeconfig PATH, KUBECONFIG, or running in a "
                "pod with a service account"
            )
        if args.discover_port == 0:
            raise CliError("--discover-port must be 1..65535")
    workers: list[str] = []
    for text in args.worker:
        try:
            workers.append(parse_address(text))
        except ValueError as exc:
            raise CliError(f"--worker {exc}") from None
    token = tokens.token_from(args.token, args.token_file, TOKEN_ENV, "--token")
    worker_token = tokens.token_from(
        args.worker_token, args.worker_token_file, WORKER_TOKEN_ENV, "--worker-token"
    )
    if worker_token is not None and token is None:
        if not args.insecure_no_token:
            raise CliError(
                "the workers have a token but the hub would serve without one (anyone could "
                f"read them through it): give --token-file or {TOKEN_ENV}, or --insecure-no-token"
            )
        log.warning(
            "--insecure-no-token: serving the token-protected workers' entries to anyone "
            "who can reach the hub"
        )
    if args.workers_file is not None and not args.workers_file.exists():
        log.warning("%s does not exist yet; watching for it", args.workers_file)
    return HubConfig(
        workers=workers,
        workers_file=args.workers_file,
        host=args.host,
        port=args.port,
        token=token,
        worker_token=worker_token,
        limits=HubLimits(
            reorder_window=args.reorder_window,
            worker_silence=args.worker_silence,
            worker_pong_timeout=args.worker_pong_timeout,
        ),
        discover=discover,
        cluster=cluster,
        discover_port=args.discover_port,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = service.configure(PROG, build_parser(), config_from_args, argv)

    def cannot_serve(exc: Exception) -> str:
        # Startup failures users can act on (port in use, bad listen address).
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot serve on {cfg.host}:{cfg.port}: {text}"

    code, _ = service.run_service(
        PROG,
        functools.partial(run_hub, cfg),
        stopping="exiting",
        failures=(OSError,),
        describe=cannot_serve,
    )
    return code
