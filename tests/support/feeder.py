#!/usr/bin/env python3
"""A worker API over a real Store that writes synthetic entries at a steady rate: the source of a
high, controlled entry rate for the dashboard's boundedness test and scripts/bench_web.py.

    feeder.py DATA_DIR [--history N] [--rate R] [--total T]

Writes N entries first, serves the worker API (kshark.api.worker_app.WorkerApp, so the dashboard
too) on 127.0.0.1 with an OS-chosen port and prints `READY <port>`. After a line on stdin it
writes R entries per second (a batch every 50 ms) until T entries were written live, printing
`DONE <n>` then, and keeps serving until killed. Entries have ENTRY.md's shape, with varied
paths, statuses and sizes (a 300-byte JSON body).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

BATCH_SECONDS = 0.05
STATUSES = (200, 200, 200, 201, 204, 301, 404, 500)
BODY = b'{"items":[' + b",".join(b'{"id":%d,"name":"sock-%d"}' % (i, i) for i in range(12)) + b"]}"


def make_entry(worker: str, stream: int, n: int, ts_ms: int) -> dict[str, Any]:
    sid = f"{stream:012d}.pcap"
    status = STATUSES[n % len(STATUSES)]
    path = f"/api/catalogue/{n % 97}"
    peer = {"endpointSlice": None, "name": "", "namespace": "", "pod": None, "service": None}
    return {
        "dst": {
            **peer,
            "ip": "10.0.53.101",
            "name": "catalogue",
            "namespace": "shop",
            "port": "80",
        },
        "elapsedTime": n % 50,
        "entryFile": f"{stream:012d}_pcap-0_entry.json",
        "error": None,
        "failed": status >= 500,
        "id": f"{worker}/{sid}-0",
        "index": 0,
        "node": {"ip": "127.0.0.1", "name": "feeder"},
        "outgoing": False,
        "passed": False,
        "protocol": {"abbr": "HTTP", "layer4": "tcp", "name": "http", "version": "1.1"},
        "record": "",
        "request": {
            "bodySize": 0,
            "cookies": {},
            "headers": {
                "Accept": "application/json",
                "Host": "catalogue",
                "User-Agent": "feeder/1",
            },
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "method": "GET",
            "path": path,
            "pathSegments": path.split("/")[1:],
            "queryString": {"n": str(n)},
            "targetUri": f"{path}?n={n}",
            "url": f"{path}?n={n}",
        },
        "requestSize": 120,
        "response": {
            "bodySize": len(BODY),
            "content": {
                "encoding": "base64",
                "mimeType": "application/json",
                "size": len(BODY),
                "text": base64.b64encode(BODY).decode(),
            },
            "cookies": {},
            "headers": {"Content-Length": str(len(BODY)), "Content-Type": "application/json"},
            "headersSize": -1,
            "httpVersion": "HTTP/1.1",
            "redirectURL": "",
            "status": status,
            "statusText": "OK",
        },
        "responseSize": 100 + len(BODY),
        "src": {**peer, "ip": f"10.0.41.{60 + n % 8}", "port": str(40000 + n % 20000)},
        "startTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000))
        + f".{ts_ms % 1000:03d}000000Z",
        "stream": sid,
        "timestamp": ts_ms,
        "tls": False,
        "worker": worker,
    }


class _Output:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.packets: list[Any] = []
        self.closed_streams: list[int] = []


async def main(args: argparse.Namespace) -> None:
    import trio

    from kshark.api.httpserver import serve
    from kshark.api.worker_app import WorkerApp
    from kshark.store import Store

    store = Store(Path(args.data_dir))
    box: dict[str, str] = {}
    app = WorkerApp(store, stats_provider=lambda: {"worker": box["worker"]})
    written = 0

    def write(n: int) -> None:
        nonlocal written
        now = int(time.time() * 1000)
        batch = [
            make_entry(box["worker"], store.allocate_stream(), written + i, now) for i in range(n)
        ]
        store.write(_Output(batch))  # type: ignore[arg-type]
        written += n

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve, app, "127.0.0.1", 0)
        box["worker"] = f"127.0.0.1:{port}"
        for start in range(0, args.history, 500):
            write(min(500, args.history - start))
        print(f"READY {port}", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        await stdin.receive_some(16)
        live = 0
        per_batch = args.rate * BATCH_SECONDS
        owed = 0.0
        next_at = trio.current_time()
        while live < args.total:
            owed += per_batch
            n = min(int(owed), args.total - live)
            if n:
                write(n)
                owed -= n
                live += n
            next_at += BATCH_SECONDS
            await trio.sleep_until(next_at)
        print(f"DONE {live}", flush=True)
        await trio.sleep_forever()


class Feeder:
    """The feeder as a child process (for tests and scripts/bench_web.py)."""

    def __init__(self, data_dir: Path, *, history: int, rate: float, total: int) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(data_dir), "--history", str(history),
             "--rate", str(rate), "--total", str(total)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if not line or line[0] != "READY":
            err = self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"feeder did not start: {line} {err}")
        self.port = int(line[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait_done(self, timeout: float) -> int:
        """Until the live entries are all written; their number."""
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"the feeder did not finish within {timeout} s"
        line = self.proc.stdout.readline().decode().split()
        assert line and line[0] == "DONE", line
        return int(line[1])

    def stop(self) -> None:
        # Imported here: this file also runs as a program, by path, where tests.support is not.
        from tests.support.procstat import stop_process

        stop_process(self.proc, 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--total", type=int, default=0)
    import trio

    trio.run(main, parser.parse_args())
    sys.exit(0)
