"""kshark-hub: one websocket endpoint for every worker, that survives worker failures.

kshark-hub --worker 10.0.41.65:30001 --worker 10.0.41.66:30001
kshark-hub --workers-file /etc/kshark/workers        # re-read when it changes
kshark-hub --discover kshark/app.kubernetes.io/name=kshark-worker   # the worker pods (discover.py)
wscat --connect ws://127.0.0.1:8899/api/wsFull -x 'response.status > 300'

Tokens: `--token`/`--token-file`/KSHARK_TOKEN for clients, `--worker-token`/
`--worker-token-file`/KSHARK_WORKER_TOKEN for workers (kshark/hub/tokens.py).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from kshark import __version__
from kshark.api.httpserver import serve
from kshark.hub.app import HubApp
from kshark.hub.limits import HubLimits
from kshark.hub.monitor import monitor_workers
from kshark.hub.tokens import (
    TOKEN_ENV,
    WORKER_TOKEN_ENV,
    TokenError,
    is_loopback,
    resolve_token,
)
from kshark.hub.workers import (
    WORKERS_FILE_POLL_SECONDS,
    WorkerSet,
    WorkersFileState,
    parse_address,
    watch_workers_file,
)

if TYPE_CHECKING:
    from kshark.hub.discover import DiscoverSpec
    from kshark.k8s.config import ClusterConfig

log = logging.getLogger("kshark.hub")


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
    p = argparse.ArgumentParser(
        prog="kshark-hub",
        description="Serve the worker API for a set of kshark workers on one port: streams "
        "merge every worker and survive workers failing and restarting.",
    )
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a worker's API address (repeatable; IPv6 as [ADDR]:PORT)",
    )
    p.add_argument(
        "--workers-file",
        type=Path,
        metavar="FILE",
        help="one HOST:PORT per line (# comments); re-read when it changes",
    )
    p.add_argument(
        "--discover",
        metavar="NAMESPACE/LABEL_SELECTOR",
        help="stream every Ready worker pod of NAMESPACE matching the selector, e.g. "
        "kshark/app.kubernetes.io/name=kshark-worker (watched through the Kubernetes API)",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="the cluster for --discover (default: $KUBECONFIG, else the in-cluster service "
        "account)",
    )
    p.add_argument(
        "--discover-port",
        type=int,
        default=30001,
        metavar="N",
        help="a discovered worker's API port when its pod has no kshark.io/api-port "
        "annotation (default %(default)s)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", default=8899, type=int, help="listen port (default 8899)")
    p.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (or ?token=) from clients "
        f"(visible in ps: prefer --token-file or {TOKEN_ENV})",
    )
    p.add_argument(
        "--token-file", type=Path, metavar="PATH", help="the client token, read from a file"
    )
    p.add_argument(
        "--worker-token",
        help="the token the workers require, sent to them "
        f"(visible in ps: prefer --worker-token-file or {WORKER_TOKEN_ENV})",
    )
    p.add_argument(
        "--worker-token-file", type=Path, metavar="PATH", help="the worker token, from a file"
    )
    p.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="serve without a client token even though the workers have one (anyone who can "
        "reach the hub reads the protected workers' entries)",
    )
    p.add_argument(
        "--reorder-window",
        type=float,
        default=HubLimits().reorder_window,
        metavar="SECONDS",
        help='how long "ordered": true streams hold an entry to sort it (default %(default)s)',
    )
    p.add_argument(
        "--worker-silence",
        type=float,
        default=HubLimits().worker_silence,
        metavar="SECONDS",
        help="ping a worker connection after this long without a byte from it "
        "(default %(default)s)",
    )
    p.add_argument(
        "--worker-pong-timeout",
        type=float,
        default=HubLimits().worker_pong_timeout,
        metavar="SECONDS",
        help="a worker that does not answer that ping within this is handled as dead "
        "(default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--version", action="version", version=f"kshark {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.worker and args.workers_file is None and not args.discover:
        print(
            "kshark-hub: no workers: give --worker HOST:PORT, --workers-file FILE or "
            "--discover NAMESPACE/LABEL_SELECTOR",
            file=sys.stderr,
        )
        return 2
    discover = cluster = None
    if args.discover:
        from kshark.hub.discover import parse_discover
        from kshark.k8s.config import KubeConfigError, find_cluster_config

        try:
            discover = parse_discover(args.discover)
            cluster = find_cluster_config(args.kubeconfig, os.environ)
        except (ValueError, KubeConfigError) as exc:
            print(f"kshark-hub: --discover: {exc}", file=sys.stderr)
            return 2
        if cluster is None:
            print(
                "kshark-hub: --discover needs a cluster: --kubeconfig PATH, KUBECONFIG, or "
                "running in a pod with a service account",
                file=sys.stderr,
            )
            return 2
        if not 0 < args.discover_port < 65536:
            print("kshark-hub: --discover-port must be 1..65535", file=sys.stderr)
            return 2
    workers: list[str] = []
    for text in args.worker:
        try:
            workers.append(parse_address(text))
        except ValueError as exc:
            print(f"kshark-hub: --worker {exc}", file=sys.stderr)
            return 2
    if not 0 <= args.port < 65536:
        print("kshark-hub: --port must be 0..65535", file=sys.stderr)
        return 2
    if args.reorder_window < 0:
        print("kshark-hub: --reorder-window must be >= 0", file=sys.stderr)
        return 2
    for option, value in (
        ("--worker-silence", args.worker_silence),
        ("--worker-pong-timeout", args.worker_pong_timeout),
    ):
        if not value > 0:  # also refuses nan
            print(f"kshark-hub: {option} must be > 0", file=sys.stderr)
            return 2
    try:
        token = resolve_token(args.token, args.token_file, TOKEN_ENV, "--token")
        worker_token = resolve_token(
            args.worker_token, args.worker_token_file, WORKER_TOKEN_ENV, "--worker-token"
        )
    except TokenError as exc:
        print(f"kshark-hub: {exc}", file=sys.stderr)
        return 2
    if worker_token is not None and token is None and not args.insecure_no_token:
        print(
            "kshark-hub: the workers have a token but the hub would serve without one "
            f"(anyone could read them through it): give --token-file or {TOKEN_ENV}, "
            "or --insecure-no-token",
            file=sys.stderr,
        )
        return 2
    if worker_token is not None and token is None:
        log.warning(
            "--insecure-no-token: serving the token-protected workers' entries to anyone "
            "who can reach the hub"
        )
    if args.workers_file is not None and not args.workers_file.exists():
        log.warning("%s does not exist yet; watching for it", args.workers_file)
    cfg = HubConfig(
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
    return trio.run(_main_async, cfg)


async def _main_async(cfg: HubConfig) -> int:
    code = 0
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.info("%s received: exiting", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                await nursery.start(run_hub, cfg)
    except* OSError as group:
        # Startup failures users can act on (port in use, bad listen address): one line each.
        for exc in _leaves(group):
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"kshark-hub: cannot serve on {cfg.host}:{cfg.port}: {text}", file=sys.stderr)
        code = 2
    return code


def _leaves(group: BaseExceptionGroup[Exception]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
