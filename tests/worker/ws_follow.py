"""A websocket stream follower for tests, run as its own process (e.g. with `ip netns exec`).

    ws_follow.py PORT FIRST_FRAME [--path /api/wsFull]

Connects to ws://127.0.0.1:PORT/PATH, sends FIRST_FRAME, then waits until the worker's /status
lists the stream (so the caller knows entries written from now on will reach it) and prints
`READY`. Every frame after that is printed on its own line as received (frames are single-line
compact JSON); when the server closes, `CLOSED <code>` is printed and the process exits 0.

A separate process because the worker may live in another network namespace, where its API's
127.0.0.1 is only reachable from inside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

# /status is polled this often, at most this long, while waiting for the stream to register.
STATUS_POLL_S = 0.02
REGISTER_TIMEOUT_S = 10.0


def _clients_on(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        status = json.loads(r.read())
    return sum(1 for c in status.get("clients", []) if c.get("path") == path)


async def main(args: argparse.Namespace) -> int:
    async with open_websocket_url(f"ws://127.0.0.1:{args.port}{args.path}") as ws:
        await ws.send_message(args.first_frame)
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while await trio.to_thread.run_sync(_clients_on, args.port, args.path) < 1:
            if time.monotonic() > deadline:
                print("the stream never appeared in /status", file=sys.stderr)
                return 1
            await trio.sleep(STATUS_POLL_S)
        print("READY", flush=True)
        try:
            while True:
                print(await ws.get_message(), flush=True)
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason else None
            print(f"CLOSED {code}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("first_frame")
    parser.add_argument("--path", default="/api/wsFull")
    sys.exit(trio.run(main, parser.parse_args()))
