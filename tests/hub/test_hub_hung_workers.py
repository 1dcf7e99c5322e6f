"""Hung workers: a real `kshark-worker` process stopped with SIGSTOP keeps its sockets open and
answers nothing, which the kernel alone cannot tell from a quiet worker. The hub must find it
(ping after silence, no answer in time), handle it as a dead worker (counted, `down`, reconnect
with backoff) while every other worker's entries keep flowing, and, once the process is
continued, resume it after the last entry it relayed: no entry twice, none missing.

The stopped-and-continued worker captures live HTTP traffic on the loopback interface (the test
serves and sends it on a port of its own, and the worker's BPF filter keeps only that port), so
it stores entries before, during (the kernel queues the packets) and after its stop.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
import trio

from kshark.hub.limits import HubLimits
from kshark.hub.monitor import probe
from kshark.hub.workers import WorkerInfo
from tests.support.hub import VENV_BIN, WorkerProcess, open_client, start_hub
from tests.support.rawhttp import free_port, wait_until

BUDGET = 40
DEMO_ENTRIES = 24
# Short timings so the suite stays fast; the defaults are 15 s / 10 s (HubLimits).
FAST = HubLimits(
    worker_silence=0.3,
    worker_pong_timeout=0.3,
    connect_timeout=0.5,
    backoff_max=0.3,
    status_interval=0.2,
    status_timeout=0.5,
)
DETECT_S = FAST.worker_silence + FAST.worker_pong_timeout


def ids_of(entries: list[dict], worker: str) -> list[str]:
    return [e["id"] for e in entries if e["worker"] == worker]


async def _keep_writing(worker) -> None:
    while True:
        worker.write(1)
        await trio.sleep(0.02)


async def test_a_worker_that_stays_stopped_does_not_hold_up_the_others(
    nursery, make_worker, tmp_path: Path
):
    stopped = WorkerProcess(tmp_path / "w", free_port())
    live = await make_worker("live")
    try:
        stopped.start()
        with trio.fail_after(BUDGET):
            await stopped.wait_serving(DEMO_ENTRIES)
            hub = await start_hub(nursery, [stopped.address, live.address], limits=FAST)
            nursery.start_soon(_keep_writing, live)
            async with open_client(hub.port, {"query": ""}) as client:
                await client.until(lambda c: len(ids_of(c.entries, stopped.address)) == 24)
                stopped.pause()
                at_stop = trio.current_time()
                live_at_stop = len(ids_of(client.entries, live.address))
                await client.until(lambda c: c.state_of(stopped.address) == "down")
                detected = trio.current_time() - at_stop
                live_at_down = len(ids_of(client.entries, live.address))
                # And they go on flowing while it stays stopped.
                await client.until(
                    lambda c: len(ids_of(c.entries, live.address)) >= live_at_down + 20
                )
                await wait_until(
                    lambda: (
                        hub.workers.info[stopped.address].last_error is not None
                        and "/status" in hub.workers.info[stopped.address].last_error
                    )
                )
                status = {w["id"]: w for w in hub.status()["workers"]}
                still_open = client.close_code is None
    finally:
        stopped.stop()
    (down,) = [s for s in client.states if s["id"] == stopped.address and s["state"] == "down"]
    assert "ping" in down["reason"]
    # Found within silence + pong deadline (silence counts from the worker's last byte, just
    # before the stop; plus scheduling slack on a shared machine), and not before a ping went
    # unanswered for the whole deadline.
    assert FAST.worker_pong_timeout <= detected < DETECT_S + 2.0
    # The other worker's entries kept coming while the hub waited for the stopped one.
    assert live_at_down > live_at_stop
    assert still_open
    w = status[stopped.address]
    assert (w["state"], w["streams"]) == ("down", 0)
    assert w["drops"] == 1  # the hung connection; failed reconnects are not drops
    assert len(set(ids_of(client.entries, stopped.address))) == DEMO_ENTRIES


async def test_a_quiet_but_healthy_worker_is_not_taken_for_hung(nursery, make_worker):
    """Silence alone is no failure: the hub pings, the worker answers, the connection stays."""
    quiet = await make_worker("quiet")
    hub = await start_hub(nursery, [quiet.address], limits=FAST)
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, {"query": ""}) as client:
            await client.until(lambda c: c.state_of(quiet.address) == "up")
            await client.quiet_for(5 * DETECT_S)  # several silence + ping rounds
            written = quiet.write(1)
            await client.entries_until(1)
    info = hub.workers.info[quiet.address]
    assert [s["state"] for s in client.states] == ["up"]
    assert (info.connects, info.drops) == (1, 0)
    assert [e["id"] for e in client.entries] == [written[0]["id"]]


async def _serve_http(port_box: list[int], task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A minimal HTTP/1.1 server: one response per connection, then close."""

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\nok"
            )
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port_box.append(listeners[0].socket.getsockname()[1])
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def _send_requests(port: int, sent: list[int]) -> None:
    n = 0
    while True:
        n += 1
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET /seq/{n} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            while await stream.receive_some(4096):
                pass
        sent.append(n)
        await trio.sleep(0.03)


@pytest.mark.live
async def test_a_stopped_worker_continued_resumes_without_duplicates_or_gaps(
    nursery, make_worker, tmp_path: Path
):
    port_box: list[int] = []
    await nursery.start(_serve_http, port_box)
    http_port = port_box[0]
    worker = WorkerProcess(
        tmp_path / "w",
        free_port(),
        source=["--iface", "lo", "--filter", f"tcp port {http_port}"],
    )
    live = await make_worker("live")
    sent: list[int] = []
    try:
        worker.start()
        with trio.fail_after(BUDGET):
            await worker.wait_serving(0)
            hub = await start_hub(nursery, [worker.address, live.address], limits=FAST)
            nursery.start_soon(_keep_writing, live)
            traffic = trio.CancelScope()

            async def send_traffic() -> None:
                with traffic:
                    await _send_requests(http_port, sent)

            nursery.start_soon(send_traffic)
            async with open_client(hub.port, {"query": ""}) as client:
                await client.until(lambda c: len(ids_of(c.entries, worker.address)) >= 5)
                worker.pause()
                await client.until(lambda c: c.state_of(worker.address) == "down")
                relayed_before = len(ids_of(client.entries, worker.address))
                # Stopped a while longer: the hub keeps retrying (and timing out), the
                # kernel queues the captured packets, the other worker keeps flowing.
                live_then = len(ids_of(client.entries, live.address))
                await client.until(lambda c: len(ids_of(c.entries, live.address)) >= live_then + 20)
                worker.resume()
                await client.until(lambda c: c.state_of(worker.address) == "up")
                await client.until(
                    lambda c: len(ids_of(c.entries, worker.address)) >= relayed_before + 10
                )
                traffic.cancel()
                # Everything the worker stores (it writes the last responses shortly).
                await _stable(worker)
                stored = worker.stored_ids()
                await client.until(lambda c: set(ids_of(c.entries, worker.address)) >= stored)
                await client.quiet_for(0.5)
                still_open = client.close_code is None
            status = {w["id"]: w for w in hub.status()["workers"]}
    finally:
        worker.stop()
    got = ids_of(client.entries, worker.address)
    assert max(Counter(got).values()) == 1  # no entry twice
    assert set(got) == worker.stored_ids()  # and none missing
    assert len(got) > relayed_before + 10  # entries written around the stop did arrive
    # Each request of ours became one entry, those sent while it was stopped too.
    paths = [e["request"]["path"] for e in client.entries if e["worker"] == worker.address]
    assert len(set(paths)) == len(got)
    assert {f"/seq/{n}" for n in sent} <= set(paths)
    assert still_open
    states = [s["state"] for s in client.states if s["id"] == worker.address]
    assert states == ["up", "down", "up"]
    assert status[worker.address]["drops"] >= 1


async def _stable(worker: WorkerProcess, quiet: float = 0.5) -> None:
    """Until the worker's entry files stop changing for `quiet` seconds."""
    before = worker.stored_ids()
    while True:
        await trio.sleep(quiet)
        now = worker.stored_ids()
        if now == before:
            return
        before = now


async def test_a_status_probe_has_a_deadline_for_the_whole_answer(nursery):
    """A worker that accepts and trickles its /status answer (each byte within the per-read
    timeout) is `down` once the probe's own deadline passes."""

    async def trickle(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.05)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, trickle, listeners)
    info = WorkerInfo(f"127.0.0.1:{port}")
    limits = HubLimits(status_timeout=0.4, http_timeout=5.0)
    with trio.fail_after(5):
        started = trio.current_time()
        await probe(info, limits)
        took = trio.current_time() - started
    assert info.state == "down"
    assert info.last_error == "its /status did not answer within 0.4 s"
    assert 0.4 <= took < 1.5


def test_cli_takes_the_hung_worker_timings():
    from kshark.hub.cli import build_parser

    args = build_parser().parse_args(
        ["--worker", "127.0.0.1:1", "--worker-silence", "2.5", "--worker-pong-timeout", "1"]
    )
    assert (args.worker_silence, args.worker_pong_timeout) == (2.5, 1.0)
    defaults = build_parser().parse_args(["--worker", "127.0.0.1:1"])
    assert (defaults.worker_silence, defaults.worker_pong_timeout) == (15.0, 10.0)
    hub = str(VENV_BIN / "kshark-hub")
    bad = subprocess.run(
        [hub, "--worker", "127.0.0.1:1", "--worker-pong-timeout", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "argument --worker-pong-timeout: '0': must be more than 0 seconds" in bad.stderr
