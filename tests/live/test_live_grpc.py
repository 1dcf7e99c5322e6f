"""gRPC live, end to end: a real grpcio server and client, entries through the worker and the hub.

Two throw-away namespaces (tests/support/netns.py): in "srv" a real gRPC server (grpcio from
PyPI, the `shop.Catalog` service of fixtures/h2/shop.desc served through generic handlers, no
generated code) and a real `kshark-worker --iface` capturing that interface with
`--proto-descriptor fixtures/h2/shop.desc`; in "cli" a real grpcio client making a unary call, a
failing unary call, a server-streaming call with gzip-compressed requests and a client-streaming
call, a real `kshark-hub` in front of the worker, and websocket clients (tests/support/ws_client.py).
What a user checks: each call is one gRPC entry on the worker's and on the hub's `/api/wsFull`,
with the status, message count and decoded messages the client itself saw; `grpc and
response.status != 0` on the hub selects the failed call only; the summary form names them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import netns as nh

pytestmark = pytest.mark.live

PY = sys.executable
BIN = Path(sys.executable).parent
WS_CLIENT = str(Path(__file__).resolve().parents[1] / "support" / "ws_client.py")
DESC = str(Path(__file__).resolve().parents[2] / "fixtures" / "h2" / "shop.desc")
WORKER_PORT = 30001
HUB_PORT = 8899
GRPC_PORT = 50051
STEP_S = 20.0
STREAMED = 25

_COMMON = r"""
import sys
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
pool = descriptor_pool.DescriptorPool()
pool.Add(descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read()).file[0])
def cls(name):
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop." + name))
Item, GetReq, ListReq, Summary = cls("Item"), cls("GetItemRequest"), cls("ListItemsRequest"), cls("UploadSummary")
ser = lambda m: m.SerializeToString()
OPTIONS = [("grpc.enable_http_proxy", 0)]
"""

SERVER = (
    _COMMON
    + r"""
from concurrent import futures
def get_item(req, ctx):
    if req.id == 42:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "item 42 not found")
    return Item(id=req.id, name=f"item-{req.id}", price=2.5, tags=["blue"])
def list_items(req, ctx):
    for i in range(req.limit):
        yield Item(id=i, name=f"{req.category[:4]}-{i}")
def upload(items, ctx):
    return Summary(accepted=sum(1 for _ in items))
handler = grpc.method_handlers_generic_handler("shop.Catalog", {
    "GetItem": grpc.unary_unary_rpc_method_handler(get_item, GetReq.FromString, ser),
    "ListItems": grpc.unary_stream_rpc_method_handler(list_items, ListReq.FromString, ser),
    "Upload": grpc.stream_unary_rpc_method_handler(upload, Item.FromString, ser),
})
server = grpc.server(futures.ThreadPoolExecutor(4), options=OPTIONS)
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(sys.argv[2])
server.start()
server.wait_for_termination()
"""
)

CLIENT = (
    _COMMON
    + r"""
import json
out = {}
with grpc.insecure_channel(sys.argv[2], options=OPTIONS) as ch:
    grpc.channel_ready_future(ch).result(timeout=10)
    get = ch.unary_unary("/shop.Catalog/GetItem", ser, Item.FromString)
    out["get"] = get(GetReq(id=7), timeout=10).name
    try:
        get(GetReq(id=42), timeout=10)
    except grpc.RpcError as err:
        out["missing"] = [err.code().value[0], err.details()]
    lst = ch.unary_stream("/shop.Catalog/ListItems", ser, Item.FromString)
    # A compressible request: grpc sends messages that gzip would not shrink uncompressed.
    out["listed"] = [m.name for m in lst(ListReq(category="blue" * 100, limit=int(sys.argv[3])), timeout=10,
                                          compression=grpc.Compression.Gzip)]
    up = ch.stream_unary("/shop.Catalog/Upload", ser, Summary.FromString)
    out["uploaded"] = up(iter([Item(id=i) for i in range(3)]), timeout=10).accepted
print(json.dumps(out), flush=True)
"""
)


class Lines:
    """A process whose stdout lines a thread collects, for polling from the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            frames = [json.loads(x) for x in self.lines if x.startswith("{")]
        return [f for f in frames if "id" in f]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = STEP_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module", autouse=True)
def _no_stale_namespaces() -> None:
    nh.remove_stale_namespaces()


@pytest.fixture
def pair() -> Iterator[nh.Pair]:
    with nh.netns_pair() as p:
        yield p


def test_grpc_live_through_worker_and_hub(pair: nh.Pair, tmp_path: Path) -> None:
    procs: list[subprocess.Popen[Any]] = []

    def start(ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = nh.run_in_ns(ns, argv, **kw)
        procs.append(proc)
        return proc

    def stream(url: str, query: str) -> Lines:
        return Lines(
            start(pair.cli_ns, [PY, WS_CLIENT, url, query], stdout=subprocess.PIPE, text=True)
        )

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    target = f"{pair.srv_ip}:{GRPC_PORT}"
    try:
        start(pair.srv_ns, [PY, "-c", SERVER, DESC, target], **quiet)
        start(pair.srv_ns, [
            str(BIN / "kshark-worker"), "--iface", pair.srv_if, "--filter", f"tcp port {GRPC_PORT}",
            "--proto-descriptor", DESC, "--host", pair.srv_ip, "--port", str(WORKER_PORT),
            "--node-name", "node-grpc", "--data-dir", str(tmp_path / "worker"), "--log-level", "WARNING",
        ], **quiet)  # fmt: skip
        nh.wait_for_tcp(pair.cli_ns, pair.srv_ip, WORKER_PORT)
        start(pair.cli_ns, [
            str(BIN / "kshark-hub"), "--worker", f"{pair.srv_ip}:{WORKER_PORT}",
            "--host", pair.cli_ip, "--port", str(HUB_PORT), "--log-level", "WARNING",
        ], **quiet)  # fmt: skip
        nh.wait_for_tcp(pair.cli_ns, pair.cli_ip, HUB_PORT)
        # The server's port is probed before any call (that probe is not HTTP/2: no entry).
        nh.wait_for_tcp(pair.cli_ns, pair.srv_ip, GRPC_PORT)
        worker = f"ws://{pair.srv_ip}:{WORKER_PORT}/api"
        hub = f"ws://{pair.cli_ip}:{HUB_PORT}/api"
        full = stream(f"{worker}/wsFull", "grpc")
        via_hub = stream(f"{hub}/wsFull", "grpc")
        failed = stream(f"{hub}/wsFull", "grpc and response.status != 0")
        summary = stream(f"{hub}/ws", "grpc")

        ran = nh.ns_run(
            pair.cli_ns, [PY, "-c", CLIENT, DESC, target, str(STREAMED)], timeout=STEP_S
        )
        seen = json.loads(ran.stdout.strip().splitlines()[-1])
        for name, lines in (("worker", full), ("hub", via_hub), ("summary", summary)):
            wait_for(f"4 calls on the {name} stream", lambda s=lines: len(s.entries()) >= 4)
        wait_for("the failed call on its stream", lambda: len(failed.entries()) >= 1)
        time.sleep(0.5)  # nothing more may arrive: one entry per call
        entries, hub_entries = full.entries(), via_hub.entries()
        failures, summaries = failed.entries(), summary.entries()
    finally:
        for proc in reversed(procs):
            nh.stop_process(proc)

    # What the client itself saw.
    assert seen["get"] == "item-7" and seen["missing"] == [5, "item 42 not found"]
    assert seen["listed"] == [f"blue-{i}" for i in range(STREAMED)] and seen["uploaded"] == 3

    assert len(entries) == 4 and len(hub_entries) == 4 and len(summaries) == 4
    assert {e["id"] for e in hub_entries} == {e["id"] for e in entries}
    by_method: dict[tuple[str, int], dict[str, Any]] = {}
    for e in entries:
        assert e["protocol"]["abbr"] == "gRPC" and e["node"]["name"] == "node-grpc"
        assert (e["src"]["ip"], e["dst"]["ip"], e["dst"]["port"]) == (
            pair.cli_ip,
            pair.srv_ip,
            str(GRPC_PORT),
        )
        by_method[e["request"]["grpc"]["method"], e["response"]["status"]] = e
    ok = by_method["GetItem", 0]
    assert ok["error"] is None and ok["response"]["statusText"] == "OK"
    assert ok["request"]["grpc"]["messages"][0]["json"] == {"id": "7"}
    assert ok["response"]["grpc"]["messages"][0]["json"]["name"] == "item-7"
    missing = by_method["GetItem", 5]
    assert missing["response"]["statusText"] == "NOT_FOUND"
    assert missing["response"]["grpc"]["message"] == "item 42 not found"
    listed = by_method["ListItems", 0]
    assert listed["response"]["grpc"]["messageCount"] == STREAMED
    assert listed["request"]["grpc"]["encoding"] == "gzip"
    assert listed["request"]["grpc"]["messages"][0]["compressed"] is True
    assert listed["request"]["grpc"]["messages"][0]["json"] == {
        "category": "blue" * 100,
        "limit": STREAMED,
    }
    assert [m["json"]["name"] for m in listed["response"]["grpc"]["messages"]][:3] == [
        "blue-0",
        "blue-1",
        "blue-2",
    ]
    uploaded = by_method["Upload", 0]
    assert uploaded["request"]["grpc"]["messageCount"] == 3
    assert uploaded["response"]["grpc"]["messages"][0]["json"] == {"accepted": 3}

    assert [e["id"] for e in failures] == [missing["id"]]
    assert sorted((s["summary"], s["status"]) for s in summaries) == [
        ("/shop.Catalog/GetItem", 0),
        ("/shop.Catalog/GetItem", 5),
        ("/shop.Catalog/ListItems", 0),
        ("/shop.Catalog/Upload", 0),
    ]
    assert all(s["proto"]["abbr"] == "gRPC" and s["method"] == "POST" for s in summaries)
