"""Probing every worker's /status, so /status at the hub is right even with no stream open.

Every `HubLimits.status_interval` seconds the hub asks each worker for its /status and records:
reachable or not (with the error), the worker's own id (`worker`, used to resolve cursors and
/item paths that name it), its newest entry (`last_seq`, `newest_id`), its store id, its own
losses (packets dropped by the kernel and by kshark, entries it could not store), and how far
behind the hub's own websockets to it are: the worker lists each client with its remote
"ip:port" and `lag`, and the relays record the local "ip:port" of their sockets, so the two are
matched exactly.

A probe has `status_timeout` seconds in all (a cancel scope around the whole request): a worker
that is stopped, or trickles its answer's head, is `down` for the monitor within that time.

Liveness and details are separate: a worker that answers `200` in time is `up`, whatever its
body. The body is read up to `max_status_bytes` within the same deadline; one larger than that
(a worker listing many clients with long queries: kshark.api.status_caps bounds ours, not an
older or foreign worker's) or slower is not read, and the worker's details (lag, newest entry)
become unknown, said in its `status_problem`, while it stays `up`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson
import trio

from kshark.hub.httpclient import TooLarge, UpstreamError, UpstreamResponse, http_get

if TYPE_CHECKING:
    from kshark.hub.limits import HubLimits
    from kshark.hub.workers import WorkerInfo, WorkerSet

log = logging.getLogger("kshark.hub")


async def monitor_workers(
    workers: WorkerSet, limits: HubLimits, worker_token: str | None = None
) -> None:
    """One probe loop per worker in the set, following the set as it changes; runs forever."""
    async with trio.open_nursery() as nursery:
        probes: dict[str, trio.CancelScope] = {}
        while True:
            version = workers.version
            for address in workers.addresses:
                if address not in probes:
                    scope = probes[address] = trio.CancelScope()
                    nursery.start_soon(
                        _probe_loop, workers.info[address], scope, limits, worker_token
                    )
            for address in [a for a in probes if a not in workers.info]:
                probes.pop(address).cancel()
            await workers.wait_changed(version)


async def _probe_loop(
    info: WorkerInfo, scope: trio.CancelScope, limits: HubLimits, worker_token: str | None
) -> None:
    with scope:
        while True:
            await probe(info, limits, worker_token)
            await trio.sleep(limits.status_interval)


async def probe(info: WorkerInfo, limits: HubLimits, worker_token: str | None = None) -> None:
    """One /status request to the worker, within `limits.status_timeout`; updates `info`."""
    deadline = trio.current_time() + limits.status_timeout
    response: UpstreamResponse | None = None
    with trio.move_on_at(deadline):
        try:
            response = await http_get(
                info.address,
                "/status",
                token=worker_token,
                io_timeout=min(limits.http_timeout, limits.status_timeout),
            )
        except UpstreamError as exc:
            info.mark_down(str(exc))
            return
    if response is None:
        info.mark_down(f"its /status did not answer within {limits.status_timeout:g} s")
        return
    body: bytes | None = None
    problem: str | None = None
    try:
        if response.status != 200:
            why = {401: "the worker wants a token (--worker-token)", 503: "the worker is starting"}
            info.mark_down(why.get(response.status, f"its /status answered HTTP {response.status}"))
            return
        body, problem = await _read_body(response, deadline, limits)
    finally:
        await response.aclose()
    if body is None:
        # It answered: alive. What it said is unknown, not wrong: keep it up.
        info.lag = None
        info.status_problem = problem
        info.mark_up()
        return
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        info.mark_down("its /status is not JSON")
        return
    if not isinstance(doc, dict):
        info.mark_down("its /status is not a JSON object")
        return
    info.status_problem = None
    advertised = doc.get("worker")
    if isinstance(advertised, str) and advertised:
        info.advertised = advertised
    last_seq = doc.get("last_seq")
    if isinstance(last_seq, int) and not isinstance(last_seq, bool):
        info.last_seq = last_seq
    newest_id, store_id = doc.get("newest_id"), doc.get("store_id")
    info.newest_id = newest_id if isinstance(newest_id, str) else None
    info.store_id = store_id if isinstance(store_id, str) else None
    store = doc.get("store")
    info.dropped_kernel = _count(doc.get("dropped_kernel"))
    info.dropped_ours = _count(doc.get("dropped_ours"))
    info.dropped_entries = _count(store.get("dropped_entries") if isinstance(store, dict) else None)
    clients = doc.get("clients")
    if isinstance(clients, list):
        ours = info.relay_sockets
        lags = [
            c.get("lag", 0)
            for c in clients
            if isinstance(c, dict) and c.get("remote") in ours and isinstance(c.get("lag"), int)
        ]
        # A worker lists its most lagging clients first, and at most so many: when some of
        # ours are not listed, they lag no more than the least lagging one listed.
        not_listed = doc.get("clients_not_listed")
        if not lags and isinstance(not_listed, int) and not_listed > 0 and ours:
            info.lag = None
        else:
            info.lag = max(lags, default=0)
    info.mark_up()


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


async def _read_body(
    response: UpstreamResponse, deadline: float, limits: HubLimits
) -> tuple[bytes | None, str | None]:
    """The body, or None and why it was not read (too large, too slow, cut)."""
    limit = limits.max_status_bytes
    if response.content_length is not None and response.content_length > limit:
        return (
            None,
            f"its /status is larger than {limit} bytes ({response.content_length}): not read",
        )
    with trio.move_on_at(deadline):
        try:
            return await response.read(limit), None
        except TooLarge:
            return None, f"its /status is larger than {limit} bytes: not read"
        except UpstreamError as exc:
            return None, f"its /status could not be read whole: {exc}"
    return None, f"its /status did not arrive whole within {limits.status_timeout:g} s"
