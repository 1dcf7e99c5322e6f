"""Runs kshark.live.LiveCapture in its own process (started inside a namespace by the tests).

Protocol with the test:
- stdout line 1: ``READY`` once every socket is bound and reading, or one JSON object
  ``{"error": <exception class>, "message": <text>}`` and exit code 2 if capture cannot start.
- The capture runs until stdin reaches EOF (the test closes it), then stops gracefully.
- Last stdout line: ``{"frames": [[ts_ns, linktype, base64 frame], ...], "stats": {...},
  "cpu_s_while_capturing": <CPU seconds this process used between READY and the stop request>}``.

Knobs that make loss happen on purpose:
- ``--stall-until-line``: after READY, block the whole event loop (a stalled worker) until the
  test writes one line to stdin, so the kernel ring fills up and the kernel drops.
- ``--hold-consumer``: the consumer reads nothing until the capture has stopped, so the channel
  stays full and the capture drops batches itself (``our_drops``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time

import trio

from kshark import live


async def main(args: argparse.Namespace) -> int:
    capture = live.LiveCapture(
        args.iface,
        bpf_filter=args.filter,
        buffer_bytes=args.buffer_bytes,
        block_bytes=args.block_bytes,
    )
    try:
        capture.open()
    except live.LiveCaptureError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        return 2
    send, recv = trio.open_memory_channel[live.Batch](args.channel_bound)
    frames: list[tuple[int, int, bytes]] = []
    consumer_may_read = trio.Event()
    cpu = {"ready": 0.0, "eof": 0.0}  # process CPU seconds at READY and at the stop request

    async def consume() -> None:
        if args.hold_consumer:
            await consumer_may_read.wait()
        async for batch in recv:
            frames.extend(batch)

    async def stop_on_stdin_eof() -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some(4096):
            pass
        cpu["eof"] = time.process_time()
        capture.request_stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        # This nursery ends once run() has returned (graceful stop done, `send` closed) and the
        # stdin watcher has asked for that stop.
        async with trio.open_nursery() as capturing:
            await capturing.start(capture.run, send)
            cpu["ready"] = time.process_time()
            print("READY", flush=True)
            if args.stall_until_line:
                # Blocking read on purpose: nothing else in this process may run meanwhile.
                while os.read(0, 1) not in (b"\n", b""):
                    pass
            capturing.start_soon(stop_on_stdin_eof)
        consumer_may_read.set()
    out = {
        "frames": [[ts, lt, base64.b64encode(f).decode()] for ts, lt, f in frames],
        "stats": capture.stats(),
        "cpu_s_while_capturing": cpu["eof"] - cpu["ready"],
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", action="append", required=True)
    parser.add_argument("--filter")
    parser.add_argument("--buffer-bytes", type=int, default=live.DEFAULT_BUFFER_BYTES)
    parser.add_argument("--block-bytes", type=int, default=live.DEFAULT_BLOCK_BYTES)
    parser.add_argument("--channel-bound", type=int, default=live.CHANNEL_BATCHES)
    parser.add_argument("--stall-until-line", action="store_true")
    parser.add_argument("--hold-consumer", action="store_true")
    sys.exit(trio.run(main, parser.parse_args()))
