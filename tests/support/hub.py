"""Helpers for the hub tests: in-process workers over real Stores, a hub, websocket clients.

An in-process worker is the real worker API (kshark.api.worker_app.WorkerApp over a
kshark.store.Store in a temporary directory) served by the real server on 127.0.0.1, wrapped so
the test can count the websocket streams it was asked for, stop it (every connection dropped,
as when the process dies) and start it again on the same port and data directory.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from capture.pipeline import Output
from tests.support.api import RawWsClient
from tests.support.procstat import stop_process
from tests.support.rawhttp import get, loads
from tests.support.store import stored_ids

REPO = Path(__file__).resolve().parents[2]
DEMO_PCAP = REPO / "fixtures" / "demo.pcap"
VENV_BIN = Path(sys.executable).parent


def make_entry(
    worker: str,
    stream: int,
    index: int = 0,
    *,
    path: str = "/catalogue",
    status: int = 200,
    ts_ms: int = 1_764_288_000_000,
    node_name: str = "node",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> dict[str, Any]:
    """An entry of ENTRY.md's shape written by `worker`."""
    stream_name = f"{stream:012d}.pcap"
    host = worker.rpartition(":")[0]
    peer = {"endpointSlice": None, "name": "", "namespace": "", "pod": None, "service": None}
    content: dict[str, Any] = {"encoding": "base64", "mimeType": "text/plain", "size": len(body)}
    if body:
        content["text"] = base64.b64encode(body).decode()
    return {
        "dst": {**peer, "ip": "10.0.53.101", "port": "80"},
        "elapsedTime": 2,
        "entryFile": f"{stream:012d}_pcap-{index}_entry.json",
        "error": None,
        "failed": status >= 500,
        "id": f"{worker}/{stream_name}-{index}",
        "index": index,
        "node": {"ip": host, "name": node_name},
        "outgoing": False,
        "passed": False,
        "protocol": {"abbr": "HTTP", "name": "http", "layer4": "tcp", "version": "1.1"},
        "record": "",
        "request": {
            "bodySize": 0,
            "cookies": {},
            "headers": {"Host": "shop", **(headers or {})},
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "method": "GET",
            "path": path,
            "pathSegments": path.split("/")[1:],
            "queryString": {},
            "targetUri": path,
            "url": path,
        },
        "requestSize": 100,
        "response": {
            "bodySize": len(body),
            "content": content,
            "cookies": {},
            "headers": {"Content-Length": str(len(body))},
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "redirectURL": "",
            "status": status,
            "statusText": "OK",
        },
        "responseSize": 100 + len(body),
        "src": {**peer, "ip": "10.0.41.65", "port": "51846"},
        "startTime": "2025-11-28T00:00:00.000000000Z",
        "stream": stream_name,
        "timestamp": ts_ms,
        "tls": False,
        "worker": worker,
    }


class CountingApp:
    """A worker app that counts the websocket streams it was asked to serve and the /status
    requests it answered (the hub's probes: a test waits for the next one instead of a time)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ws_paths = app.ws_paths
        self.ws_requests = 0
        self.status_answered = 0

    async def handle_http(self, request: Any) -> Any:
        response = await self.app.handle_http(request)
        if request.path == "/status":
            self.status_answered += 1
        return response

    async def handle_ws(self, request: Any, ws: Any) -> None:
        self.ws_requests += 1
        await self.app.handle_ws(request, ws)


class FakeWorker:
    """A real worker API over a real Store, in this process, that can be stopped and restarted."""

    def __init__(self, data_dir: Path, *, node_name: str = "node", token: str | None = None):
        self.data_dir = data_dir
        self.node_name = node_name
        self.token = token
        self.store: Any = None
        self.app: CountingApp | None = None
        self.port = 0
        self.ws_requests_before = 0  # streams served by earlier incarnations
        self._scope: trio.CancelScope | None = None
        self.written: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ws_requests(self) -> int:
        return self.ws_requests_before + (self.app.ws_requests if self.app else 0)

    async def start(self, nursery: trio.Nursery) -> FakeWorker:
        from kshark.api.entry_stream import StreamLimits
        from kshark.api.httpserver import serve
        from kshark.api.worker_app import WorkerApp
        from kshark.store import Store

        if self.store is None:
            self.store = Store(self.data_dir)
        address = lambda: self.address  # noqa: E731
        self.app = CountingApp(
            WorkerApp(
                self.store,
                stats_provider=lambda: {"worker": address()},
                limits=StreamLimits(ping_interval=5.0),
            )
        )
        scope = self._scope = trio.CancelScope()

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await serve(
                    self.app, "127.0.0.1", self.port, token=self.token, task_status=task_status
                )

        self.port = await nursery.start(run)
        return self

    def stop(self, *, close_store: bool = False) -> None:
        """Every connection of this worker is dropped, as when its process dies."""
        assert self._scope is not None
        self._scope.cancel()
        self.ws_requests_before += self.app.ws_requests if self.app else 0
        self.app = None
        if close_store:
            self.store.close()
            self.store = None

    def write(self, n: int = 1, **kw: Any) -> list[dict[str, Any]]:
        """n new entries, one per new stream, in one Store.write."""
        entries = [
            make_entry(self.address, self.store.allocate_stream(), node_name=self.node_name, **kw)
            for _ in range(n)
        ]
        self.store.write(Output(entries=entries))
        self.written.extend(entries)
        return entries

    def close(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self.store is not None:
            self.store.close()
            self.store = None


async def start_hub(
    nursery: trio.Nursery,
    workers: list[str],
    *,
    workers_file: Path | None = None,
    **kw: Any,
) -> Any:
    """A hub in this process on 127.0.0.1, port 0; returns its HubApp (`.port`)."""
    from kshark.hub import HubConfig, run_hub

    cfg = HubConfig(workers=list(workers), workers_file=workers_file, port=0, **kw)
    if workers_file is not None:
        cfg.workers_file_poll = 0.1
    return await nursery.start(run_hub, cfg)


# ---- clients --------------------------------------------------------------------------------


class Client:
    """A websocket client of the hub that sorts what it receives into entries and frames."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.entries: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.states: list[dict[str, Any]] = []  # {"worker": {...}} bodies
        self.gaps: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.close_code: int | None = None

    async def receive_one(self) -> None:
        try:
            text = await self.ws.get_message()
        except ConnectionClosed as closed:
            self.close_code = closed.reason.code if closed.reason else None
            raise
        self.raw.append(text)
        frame = loads(text)
        if set(frame) == {"worker"} and isinstance(frame["worker"], dict):
            self.states.append(frame["worker"])
        elif set(frame) == {"gap"}:
            self.gaps.append(frame["gap"])
        elif set(frame) == {"error"}:
            self.errors.append(frame["error"])
        else:
            self.entries.append(frame)

    async def until(self, predicate: Any) -> None:
        """Receive until predicate(self) holds (the caller's fail_after bounds the wait)."""
        while not predicate(self):
            await self.receive_one()

    async def entries_until(self, n: int) -> list[dict[str, Any]]:
        await self.until(lambda c: len(c.entries) >= n)
        return self.entries

    async def drain(self) -> int:
        """Receive until the server closes; returns the close code."""
        try:
            while True:
                await self.receive_one()
        except ConnectionClosed:
            assert self.close_code is not None
            return self.close_code

    async def quiet_for(self, seconds: float) -> None:
        """Receive whatever arrives within `seconds` (to check nothing more comes)."""
        with trio.move_on_after(seconds):
            while True:
                await self.receive_one()

    def state_of(self, worker: str) -> str | None:
        states = [s["state"] for s in self.states if s["id"] == worker]
        return states[-1] if states else None


class open_client:  # lower case: used like a function, `async with open_client(...) as c`
    def __init__(
        self,
        port: int,
        first_frame: str | dict[str, Any],
        path: str = "/api/wsFull",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.first = (
            first_frame if isinstance(first_frame, str) else orjson.dumps(first_frame).decode()
        )
        self.headers = headers
        self._cm: Any = None

    async def __aenter__(self) -> Client:
        self._cm = open_websocket_url(
            self.url,
            extra_headers=self.headers,
            message_queue_size=64,
            max_message_size=64 << 20,
        )
        ws = await self._cm.__aenter__()
        await ws.send_message(self.first)
        return Client(ws)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cm.__aexit__(*exc)


async def stalled_client(port: int, path: str, first_frame: str, rcvbuf: int = 4096) -> RawWsClient:
    """A websocket client on a socket with a tiny receive buffer that reads only when told to
    (trio-websocket's client would read eagerly into its queue). The API tests' raw client."""
    client = await RawWsClient.connect(port, path, rcvbuf=rcvbuf)
    await client.send_text(first_frame)
    return client


# ---- HTTP -------------------------------------------------------------------------------------


# ---- real worker processes ------------------------------------------------------------------


def write_empty_pcap(path: Path) -> Path:
    """A pcap with no packets: a worker replaying it serves what its data directory holds."""
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


class WorkerProcess:
    """`kshark-worker --pcap demo.pcap` as a child process, serving after the replay (or with
    `source`, e.g. `["--iface", "lo", "--filter", "tcp port 8080"]`, capturing live)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        pcap: Path = DEMO_PCAP,
        *,
        source: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.pcap = pcap
        self.source = source
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _argv(self, source: list[str]) -> list[str]:
        return [
            str(VENV_BIN / "kshark-worker"),
            *source,
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--log-level",
            "WARNING",
        ]

    def start(self) -> None:
        source = self.source if self.source is not None else ["--pcap", str(self.pcap)]
        self.proc = subprocess.Popen(
            self._argv(source), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.paused = False

    async def replay_once(self, pcap: Path = DEMO_PCAP) -> None:
        """`kshark-worker --once --pcap PCAP` on this data directory and port (so its entries
        carry this worker's id): entries written while no API is serving."""
        argv = self._argv(["--once", "--pcap", str(pcap)])
        await trio.run_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open and answers nothing (a hung worker)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    async def wait_serving(self, entries: int) -> None:
        """Until its /status says `entries` are stored (the caller's fail_after bounds it)."""
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                reply = await get(self.port, "/status")
                if reply.status == 200 and reply.json().get("last_seq", 0) >= entries:
                    return
            except (OSError, trio.BrokenResourceError):
                pass  # not listening yet (or exiting: poll() above says so next time)
            await trio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no flush, no clean close, connections reset by the kernel."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()  # a stopped process would only act on SIGTERM once continued
            stop_process(self.proc, 5)

    def stored_ids(self) -> set[str]:
        """The id of every entry in its data directory (from the file names)."""
        return stored_ids(self.data_dir, self.address)


async def scripted_server(
    answer: Any,
    seen: list[bytes],
    hold_open: bool = False,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """A plain TCP server on 127.0.0.1 for the hub's HTTP and websocket clients: reads a request
    head into `seen`, sends `answer(head)`, then closes (with `hold_open`, stays open after a
    non-empty answer)."""

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            seen.append(head)
            reply = answer(head)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(reply)
                if reply and hold_open:
                    await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)
