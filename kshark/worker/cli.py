"""kshark-worker's command line: the flags, their checks, and the process around the worker."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from capture.dissectors import parse_decode_as, spec_names
from capture.protobuf import ProtoDecoder, ProtoDescriptorError
from capture.sources import CaptureFile, CaptureOpenError
from kshark import __version__, cliargs, service, tokens
from kshark.cliargs import CliError
from kshark.live import LiveCaptureError
from kshark.store import StoreError
from kshark.tokens import TOKEN_ENV
from kshark.worker.core import StartupError, run_worker
from kshark.worker.runtime import tune_runtime
from kshark.worker.state import WorkerConfig

DESCRIPTION = (
    "Capture HTTP/1.x traffic (live or from pcap files) into Kubeshark entries, and serve "
    "them on a filterable websocket API."
)
PROG = "kshark-worker"


def build_parser() -> argparse.ArgumentParser:
    p = cliargs.service_parser(PROG, DESCRIPTION)
    add = p.add_argument
    many = functools.partial(add, action="append", default=[])  # repeatable: a list
    many(
        "--pcap",
        metavar="FILE",
        type=cliargs.nonempty("--pcap"),
        help="replay a pcap/pcapng file (gzip allowed); repeat for several, processed in order",
    )
    many(
        "--iface",
        metavar="IFACE",
        type=cliargs.word("an interface name"),
        help="capture live on this interface (repeatable, or 'any'); needs root or CAP_NET_RAW",
    )
    add("--filter", dest="bpf", metavar="BPF", type=cliargs.nonempty("--filter"),
        help="kernel BPF filter for live capture")  # fmt: skip
    many(
        "--decode-as",
        metavar="PORT=PROTO",
        help="dissect TCP/UDP port PORT as PROTO whatever its content, like tshark's -d "
        f"(repeatable; PROTO one of {', '.join(spec_names())})",
    )
    add("--data-dir", default="kshark-data", type=cliargs.nonempty("--data-dir"),
        help="where entries and pcaps are kept")  # fmt: skip
    add("--storage-limit", default="1GiB", metavar="SIZE", type=cliargs.size(minimum=1),
        help="disk budget; oldest connections go first (default 1GiB)")  # fmt: skip
    add("--max-body", default="1MiB", metavar="SIZE", type=cliargs.size(),
        help="body bytes kept per message (default 1MiB)")  # fmt: skip
    add(
        "--proto-descriptor",
        metavar="FILE",
        type=cliargs.nonempty("--proto-descriptor"),
        help="a protobuf FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE): "
        "gRPC messages of its services are decoded to JSON in entries",
    )
    cliargs.add_listen_flags(p, 30001, "API")
    add("--advertise", metavar="HOST", type=cliargs.word("a host name or address"),
        help="host written into entry ids (default: --host)")  # fmt: skip
    add("--node-name", type=cliargs.word("a node name"),
        help="node.name in entries (default: this host's name)")  # fmt: skip
    tokens.add_token_flags(
        p, "--token", TOKEN_ENV, "require 'Authorization: Bearer TOKEN' (or ?token=) on the API"
    )
    add(
        "--kubeconfig",
        metavar="PATH",
        type=cliargs.nonempty("--kubeconfig"),
        help="resolve pod/service/node names from this cluster (default: $KUBECONFIG, else the "
        "in-cluster service account when running in a pod)",
    )
    add("--no-resolve", action="store_true", help="do not resolve names from Kubernetes")
    add("--once", action="store_true", help="process the captures, print a summary, exit")
    cliargs.add_service_flags(p, __version__)
    return p


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The checked flags → WorkerConfig; CliError for what only makes sense together (or
    needs the file system: the captures, the data directory, the token file, a descriptor
    set, a kubeconfig)."""
    if not args.pcap and not args.iface:
        raise CliError("nothing to capture: give --pcap FILE or --iface IFACE")
    if args.once and args.iface:
        raise CliError("--once is for --pcap replay only")
    if args.bpf is not None and not args.iface:
        raise CliError("--filter applies to live capture (--iface) only")
    decode_as: dict[int, str] = {}
    for text in args.decode_as:
        try:
            port, proto = parse_decode_as(text)
        except ValueError as exc:
            raise CliError(f"--decode-as {exc}") from None
        decode_as[port] = proto
    token = tokens.token_from(args.token, args.token_file, TOKEN_ENV)
    protobuf = None
    if args.proto_descriptor is not None:
        descriptor = Path(args.proto_descriptor)
        try:
            protobuf = ProtoDecoder(descriptor.read_bytes(), str(descriptor))
        except OSError as exc:
            raise CliError(f"{descriptor}: {exc.strerror or exc}") from None
        except ProtoDescriptorError as exc:
            raise CliError(str(exc)) from None
    cluster = None
    resolve_off = "--no-resolve"
    if not args.no_resolve:
        from kshark.k8s.config import KubeConfigError, find_cluster_config

        try:
            cluster = find_cluster_config(args.kubeconfig, os.environ)
        except KubeConfigError as exc:
            raise CliError(str(exc)) from None
        resolve_off = WorkerConfig.resolve_off
    for path in args.pcap:
        try:
            CaptureFile(path)  # opens and checks the header: fail before anything starts
        except CaptureOpenError as exc:
            raise CliError(str(exc)) from None
    data_dir = Path(args.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise CliError(f"data directory {data_dir}: not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(data_dir, os.W_OK):
            raise PermissionError(f"{data_dir}: not writable")
    except OSError as exc:
        raise CliError(f"data directory {data_dir}: {exc.strerror or exc}") from None
    return WorkerConfig(
        pcaps=list(args.pcap),
        ifaces=list(args.iface),
        bpf=args.bpf,
        data_dir=data_dir,
        host=args.host,
        port=args.port,
        advertise=args.advertise,
        node_name=args.node_name,
        token=token,
        once=args.once,
        storage_limit=args.storage_limit,
        max_body=args.max_body,
        protobuf=protobuf,
        decode_as=decode_as,
        cluster=cluster,
        resolve_off=resolve_off,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = service.configure(PROG, build_parser(), config_from_args, argv)
    tune_runtime()
    code, worker = service.run_service(
        PROG,
        functools.partial(run_worker, cfg),
        stopping="flushing and exiting",
        # Startup and capture failures users can act on (port in use, no privilege, no such
        # interface, a data directory another worker holds): one line each, no traceback.
        failures=(OSError, LiveCaptureError, StoreError, StartupError),
    )
    if code == 0 and cfg.once and worker is not None:
        print(worker.summary_line())
    return code
