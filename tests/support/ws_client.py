"""A websocket client run as its own process, for tests whose server lives in another network
namespace (`ip netns exec`), where its 127.0.0.1 is reachable only from inside.

    python tests/support/ws_client.py URL FIRST_FRAME [--idle SECONDS] [--ready]

Sends FIRST_FRAME as the first text frame, then prints every message it receives on its own line
(entries are compact JSON, so one per line), flushed at once; when the server closes it prints
`#close <code>` and exits 0. With --ready it first waits until the server's /status lists the
stream (so the caller knows that entries written from then on reach it) and prints `#ready`.
With --idle it also stops (printing `#idle`) after that many seconds without a message. Runs
until killed otherwise. Run by path: it imports nothing from the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

# /status is polled this often, at most this long, while waiting for the stream to be listed:
# the server's state is in another process, there is no event to wait on.
STATUS_POLL_S = 0.02
LISTED_TIMEOUT_S = 10.0


def _streams_on(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    with urllib.request.urlopen(f"http://{parts.netloc}/status", timeout=5) as r:
        status = json.loads(r.read())
    return sum(1 for c in status.get("clients", []) if c.get("path") == parts.path)


async def main(args: argparse.Namespace) -> int:
    async with open_websocket_url(args.url, max_message_size=64 << 20) as ws:
        await ws.send_message(args.first_frame)
        if args.ready:
            deadline = time.monotonic() + LISTED_TIMEOUT_S
            while await trio.to_thread.run_sync(_streams_on, args.url) < 1:
                if time.monotonic() > deadline:
                    print("the stream never appeared in /status", file=sys.stderr)
                    return 1
                await trio.sleep(STATUS_POLL_S)
            print("#ready", flush=True)
        try:
            while True:
                if args.idle:
                    with trio.move_on_after(args.idle):
                        print(await ws.get_message(), flush=True)
                        continue
                    print("#idle", flush=True)
                    return 0
                print(await ws.get_message(), flush=True)
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason else None
            print(f"#close {code}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("first_frame")
    parser.add_argument("--idle", type=float, default=None)
    parser.add_argument("--ready", action="store_true")
    sys.exit(trio.run(main, parser.parse_args()))
