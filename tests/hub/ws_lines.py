"""A websocket client for tests that run it inside a network namespace (`ip netns exec`).

    ws_lines.py URL FIRST_FRAME [--idle SECONDS]

Sends FIRST_FRAME as the first text frame, then prints every message it receives on its own line
(entries are compact JSON, so one per line), flushed at once; when the server closes it prints
`#close <code>` and exits 0. With --idle it also stops (printing `#idle`) after that many seconds
without a message. Runs until killed otherwise.
"""

from __future__ import annotations

import argparse
import sys

import trio
from trio_websocket import ConnectionClosed, open_websocket_url


async def main(args: argparse.Namespace) -> None:
    async with open_websocket_url(args.url, max_message_size=64 << 20) as ws:
        await ws.send_message(args.first_frame)
        try:
            while True:
                if args.idle:
                    with trio.move_on_after(args.idle):
                        message = await ws.get_message()
                        print(message, flush=True)
                        continue
                    print("#idle", flush=True)
                    return
                print(await ws.get_message(), flush=True)
        except ConnectionClosed as closed:
            code = closed.reason.code if closed.reason else None
            print(f"#close {code}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("first_frame")
    parser.add_argument("--idle", type=float, default=None)
    trio.run(main, parser.parse_args())
    sys.exit(0)
