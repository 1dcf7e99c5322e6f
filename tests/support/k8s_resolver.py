"""Helpers for the tests that run a Resolver in process against the test cluster."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from capture.entries import Identity
from capture.pipeline import Pipeline
from kshark.k8s.resolver import Resolver
from scripts.make_k8s_fixtures import connection
from tests.support.k8s_cluster import KubeApi

__all__ = [
    "FRONTEND_IP",
    "LINKTYPE_ETHERNET",
    "connection",
    "in_thread",
    "owner",
    "pipeline_for",
    "start_pod",
    "until",
]

T = TypeVar("T")
STEP_S = 60.0
FRONTEND_IP = "10.244.1.10"  # scenario.json: the frontend pod, port 8080
LINKTYPE_ETHERNET = 1


async def in_thread(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """The sync API helper off the Trio thread (the resolver under test runs on it)."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kw))


async def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll `check` (the resolver's state, the test's own process) until it holds."""
    with trio.move_on_after(STEP_S):
        while not (result := check()):  # noqa: ASYNC110 (state of another loop, no event to wait on)
            await trio.sleep(0.02)
        return result
    raise AssertionError(f"timed out waiting for {what}")


def owner(resolver: Resolver, ip: str, ts_ns: int | None = None) -> tuple[str, str] | None:
    rec = resolver.index.lookup(ip, 0, time.time_ns() if ts_ns is None else ts_ns)
    if rec is None or rec["pod"] is None:
        return None
    meta = rec["pod"]["metadata"]
    return meta["namespace"], meta["name"]


def start_pod(api: KubeApi, ns: str, name: str, ip: str, node: str = "node-b") -> None:
    api.pod(ns, name, {"role": "test"})
    api.run_pod(ns, name, node, ip, {"node-a": "10.0.0.11", "node-b": "10.0.0.12"}[node])


def pipeline_for(resolver: Resolver) -> Pipeline:
    identity = Identity("127.0.0.1:30001", "127.0.0.1", "test", resolver=resolver.index)
    return Pipeline(identity, itertools.count(1).__next__)
