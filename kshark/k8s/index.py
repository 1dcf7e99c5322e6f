"""The time-aware IP index behind name resolution: Kubernetes objects in, `resolve()` out.

Sans-IO: the list+watch loops (listwatch.py) feed it objects with the wall-clock time they were
learnt; the entry builder (capture/entries.py) asks it `resolve(ip, port, ts_ns)` for every
entry's src and dst. Nothing here reads a clock or does I/O, so it is tested with plain dicts.

What an IP resolves to (Kubeshark's `src`/`dst` fields: `name`, `namespace`, `pod`, `service`,
`endpointSlice`; docs/kubernetes.md has the table):

- a Service's ClusterIP (or external / load-balancer IP) → that Service, whatever the port:
  `name` is `<service>.<namespace>` as Kubeshark writes it (e.g. `cart.shop`), `service` set;
- a pod IP → the pod (`pod` set). When the pod is an endpoint of a Service (EndpointSlices),
  that Service is named too — by port when one is given and an EndpointSlice lists it (the
  destination side), else the first of its Services by namespace/name (the source side, looked
  up by IP alone as Kubeshark does: a client's port says nothing); `name` is then
  `<service>.<namespace>`, and the pod's own name when no Service has it;
- a node address (InternalIP / ExternalIP) → the node: `name` is the Node's name, no pod. A
  hostNetwork pod shares its node's IP, so such pods never claim an IP: traffic from the node's
  address is the node's, never one of its pods'. By port, an EndpointSlice can still name the
  Service behind a node address (the `kubernetes` Service, hostNetwork DaemonSets);
- anything else → None: the entry keeps `""`/null, never a stale or a guessed name.

`pod`, `service` and `endpointSlice` are cut-down Kubernetes objects (metadata name and
namespace; for a pod also uid, labels and owner references, its nodeName, hostIP and podIP; the
service's clusterIP and type): the KFL paths Kubeshark's users write (`src.pod.metadata.name`,
`dst.service.metadata.namespace`, `src.pod.spec.nodeName`) work, and entries stay small.

**Pre-serialised.** An entry built by the worker is only ever serialised (the store writes it;
every reader — KFL, the summary form, the API — parses the stored text), and serialising those
nested objects again for every entry (~700 bytes of small dicts, their keys sorted) cost several
times what the lookups do (scripts/bench_k8s.py). So each object version is
serialised once, when it is learnt (sorted keys, compact: the bytes the store's
`orjson.dumps(entry, option=OPT_SORT_KEYS)` would make of it), and `resolve()` hands out
`orjson.Fragment`s of those bytes, which orjson copies into the entry's text as they are: the
stored entry is byte for byte what the nested dicts would have made. A Fragment cannot be read
in-process, so `lookup()` gives the same record decoded, for anything that wants to look inside
(tests, tools). Records and Fragments are shared by every entry naming them, never copied.

**Time.** For each IP the index keeps the history of what it resolved to, as
`(since_ns, record, records_by_port)` items, newest last; an entry gets the item in force at
its capture time, so an IP handed from a deleted pod to a new one names the old pod on the old
entries (Kubeshark #1524, #1261). Bounds: HISTORY_PER_IP items per IP (the oldest go first), and
MAX_UNOWNED_IPS addresses that no object holds any more but whose history is kept (past it the
one released longest ago is forgotten, counted in `history_forgotten`). A capture time before an
IP's history starts gets the earliest item kept: that is how a replay of a capture older than the
worker resolves (against the first state it knew). Times are when this process learnt of a
change, not when it happened: a packet in the moment between the two gets the previous owner.

While the resolver makes its first lists (`settling`), the items being built replace each other
instead of piling up, so the first item of every IP is the whole first state (pods, their
Services and the nodes together) rather than whichever kind was listed first.

Owners of one IP at once: several objects can claim an IP for a moment (a new pod reported
before the old one's deletion); the claim made last wins, and the other takes over again if the
winner lets go first. A Service claim beats a pod's, a pod's a node's.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

# History items kept per IP address.
HISTORY_PER_IP = 8
# IP addresses no object holds any more, kept with their history (for late entries and replays).
MAX_UNOWNED_IPS = 65_536

Record = dict[str, Any]
ByPort = dict[int, Record]
Wire = Any  # orjson.Fragment: the serialised cut-down object (no type stubs say more)

_SORT_KEYS = orjson.OPT_SORT_KEYS  # what kshark.store serialises entries with


class _Item(NamedTuple):
    since_ns: int
    record: Record | None  # by IP alone (and for ports not in by_port)
    by_port: ByPort | None


def _wire(obj: dict[str, Any]) -> tuple[bytes, Wire]:
    data = orjson.dumps(obj, option=_SORT_KEYS)
    return data, orjson.Fragment(data)


# The parsed kinds. `data` is the cut-down object serialised, `wire` its Fragment (last):
# a Fragment compares by identity, so `same()` compares everything before it.


class _Pod(NamedTuple):
    key: tuple[str, str]
    ips: tuple[str, ...]  # the addresses it claims (none for hostNetwork or finished pods)
    data: bytes  # the cut-down Pod
    wire: Wire

    def same(self, other: Any) -> bool:
        return bool(self[:-1] == other[:-1])


class _Node(NamedTuple):
    key: str  # its name
    ips: tuple[str, ...]

    def same(self, other: Any) -> bool:
        return bool(self == other)


class _Service(NamedTuple):
    key: tuple[str, str]
    ips: tuple[str, ...]  # ClusterIPs, external IPs, load-balancer ingress IPs
    data: bytes
    wire: Wire

    def same(self, other: Any) -> bool:
        return bool(self[:-1] == other[:-1])


class _Slice(NamedTuple):
    key: tuple[str, str]
    service: tuple[str, str] | None  # (namespace, name) from the kubernetes.io/service-name label
    ports: tuple[int, ...]  # empty: every port
    ips: tuple[str, ...]
    data: bytes
    # The Service named by its label, as a record names it while that Service is not held
    # (not listed yet, or not allowed to): made with the slice, so that a record refreshed
    # meanwhile still compares equal to the last one.
    service_stub: Wire
    wire: Wire

    def same(self, other: Any) -> bool:
        return bool(self[:-2] == other[:-2])


def _ip(text: Any) -> str | None:
    """An API address in the text form entries use (inet_ntop's), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        # Interned: the entry side's address strings are too (capture.entry_fields._ip_text), so a
        # lookup matches the key by identity without reading the stored string.
        return sys.intern(ipaddress.ip_address(text).compressed)
    except ValueError:
        return None


def _ips(texts: Iterable[Any]) -> tuple[str, ...]:
    out: list[str] = []
    for t in texts:
        ip = _ip(t)
        if ip is not None and ip not in out:
            out.append(ip)
    return tuple(out)


def _meta(obj: dict[str, Any], full: bool = False) -> tuple[str, str, dict[str, Any]]:
    """(namespace, name, the cut-down metadata): names only, or for a pod also its uid and
    labels (what tells a pod from the one that replaced it under the same name, and what
    users filter workloads by)."""
    meta = obj.get("metadata") or {}
    ns, name = sys.intern(str(meta.get("namespace") or "")), str(meta.get("name") or "")
    out: dict[str, Any] = {"name": name, "namespace": ns}
    if full:
        out["uid"] = str(meta.get("uid") or "")
        out["labels"] = dict(meta.get("labels") or {})
    return ns, name, out


def parse_pod(obj: dict[str, Any]) -> _Pod | None:
    ns, name, meta = _meta(obj, full=True)
    if not name:
        return None
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    if owners:
        meta["ownerReferences"] = [
            {"kind": str(o.get("kind") or ""), "name": str(o.get("name") or "")}
            for o in owners
            if isinstance(o, dict)
        ]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    host_network = bool(spec.get("hostNetwork"))
    finished = status.get("phase") in ("Succeeded", "Failed")  # its IP is free for reuse
    listed = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    ips = () if host_network or finished else _ips([*listed, status.get("podIP")])
    summary = {
        "metadata": meta,
        "spec": {"nodeName": str(spec.get("nodeName") or "")},
        "status": {
            "hostIP": str(status.get("hostIP") or ""),
            "podIP": str(status.get("podIP") or ""),
        },
    }
    return _Pod((ns, name), ips, *_wire(summary))


def parse_node(obj: dict[str, Any]) -> _Node | None:
    _, name, _ = _meta(obj)
    if not name:
        return None
    addresses = (obj.get("status") or {}).get("addresses") or []
    ips = _ips(
        a.get("address")
        for a in addresses
        if isinstance(a, dict) and a.get("type") in ("InternalIP", "ExternalIP")
    )
    return _Node(name, ips)


def parse_service(obj: dict[str, Any]) -> _Service | None:
    ns, name, meta = _meta(obj)
    if not name:
        return None
    spec = obj.get("spec") or {}
    kind = str(spec.get("type") or "ClusterIP")
    texts: list[Any] = []
    if kind != "ExternalName":
        cluster_ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        texts += [ip for ip in cluster_ips if ip != "None"]
        texts += spec.get("externalIPs") or []
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        texts += [i.get("ip") for i in ingress if isinstance(i, dict)]
    summary = {
        "metadata": meta,
        "spec": {"clusterIP": str(spec.get("clusterIP") or ""), "type": kind},
    }
    return _Service((ns, name), _ips(texts), *_wire(summary))


def parse_endpointslice(obj: dict[str, Any]) -> _Slice | None:
    """discovery.k8s.io v1 and v1beta1 alike (the fields read here did not change)."""
    ns, name, meta = _meta(obj)
    if not name:
        return None
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service_name = labels.get("kubernetes.io/service-name")
    service = (ns, str(service_name)) if service_name else None
    ports = sorted(
        {
            p["port"]
            for p in obj.get("ports") or []
            if isinstance(p, dict) and isinstance(p.get("port"), int)
        }
    )
    ips = _ips(
        addr
        for ep in obj.get("endpoints") or []
        if isinstance(ep, dict)
        for addr in ep.get("addresses") or []
    )
    data, wire = _wire({"metadata": meta})
    stub = None
    if service is not None:
        stub = _wire({"metadata": {"name": service[1], "namespace": service[0]}})[1]
    return _Slice((ns, name), service, tuple(ports), ips, data, stub, wire)


def _record(
    name: str,
    namespace: str,
    pod: Wire = None,
    service: Wire = None,
    endpoint_slice: Wire = None,
) -> Record:
    return {
        "endpointSlice": endpoint_slice,
        "name": name,
        "namespace": namespace,
        "pod": pod,
        "service": service,
    }


class _KindSink:
    """One kind's feed into the index (what a ListWatch is given)."""

    def __init__(self, index: ResolutionIndex, kind: str) -> None:
        self._index = index
        self._kind = kind

    def replace(self, objects: list[dict[str, Any]], now_ns: int) -> None:
        self._index.replace(self._kind, objects, now_ns)

    def upsert(self, obj: dict[str, Any], now_ns: int) -> None:
        self._index.upsert(self._kind, obj, now_ns)

    def delete(self, obj: dict[str, Any], now_ns: int) -> None:
        self._index.delete(self._kind, obj, now_ns)


_PARSERS: dict[str, Any] = {
    "pods": parse_pod,
    "nodes": parse_node,
    "services": parse_service,
    "endpointslices": parse_endpointslice,
}
KINDS = tuple(_PARSERS)


class ResolutionIndex:
    """IP → what it was, over time. Feed it with `sink(kind)`; ask it with `resolve`."""

    def __init__(
        self, history_per_ip: int = HISTORY_PER_IP, max_unowned_ips: int = MAX_UNOWNED_IPS
    ) -> None:
        if history_per_ip < 1:
            raise ValueError("history_per_ip must be at least 1")
        self.history_per_ip = history_per_ip
        self.max_unowned_ips = max_unowned_ips
        self._history: dict[str, list[_Item]] = {}
        # What `resolve` reads: per IP with a history, its one record when that is the whole
        # answer at any time and port (one item, no by-port table: nearly every address), else
        # its history list. Kept by _publish whenever the history changes.
        self._now: dict[str, Record | list[_Item] | None] = {}
        self._unowned: dict[str, None] = {}  # insertion order = order they were released in
        self._objects: dict[str, dict[Any, Any]] = {kind: {} for kind in KINDS}
        # kind → ip → {object key: claim number}; the highest number is the newest claim.
        self._claims: dict[str, dict[str, dict[Any, int]]] = {kind: {} for kind in KINDS}
        self._service_slices: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._claim_seq = 0
        self.settling = True  # see the module doc; the resolver ends it after its first lists
        self.history_forgotten = 0  # IPs whose history was dropped (MAX_UNOWNED_IPS)
        self.objects_rejected = 0  # objects of a shape resolution cannot read (skipped)

    # ---- the lookup (per entry) ----------------------------------------------------------

    def resolve(self, ip: str, port: int, ts_ns: int) -> Record | None:
        """What `ip` was at `ts_ns`: a record of `name`, `namespace`, `pod`, `service`,
        `endpointSlice` to merge into an entry's src/dst, or None. `port` 0 asks by IP alone
        (a client side); a server port picks the Service an EndpointSlice lists for it.
        `pod`, `service` and `endpointSlice` are serialised already (Fragments: see the module
        doc); `lookup` reads them."""
        # Called twice per entry, and what it reads is mostly out of the CPU's caches by then
        # (the packet side went through a batch of packets in between): one dict lookup and
        # the record for nearly every address (_now), no allocation.
        found = self._now.get(ip)
        if isinstance(found, list):
            return self._at(found, port, ts_ns)
        return found

    @staticmethod
    def _at(history: list[_Item], port: int, ts_ns: int) -> Record | None:
        """The general case: the item in force at `ts_ns`, then its record for `port`."""
        item = history[-1]
        if ts_ns < item.since_ns:
            item = history[0]  # before the history: the earliest known
            for older in reversed(history):
                if older.since_ns <= ts_ns:
                    item = older
                    break
        if port and item.by_port is not None:
            record = item.by_port.get(port)
            if record is not None:
                return record
        return item.record

    def lookup(self, ip: str, port: int, ts_ns: int) -> Record | None:
        """`resolve`'s answer decoded: plain dicts to read (not per entry: it parses)."""
        record = self.resolve(ip, port, ts_ns)
        if record is None:
            return None
        decoded: Record = orjson.loads(orjson.dumps(record))
        return decoded

    # ---- feeding ----------------------------------------------------------------------------

    def sink(self, kind: str) -> _KindSink:
        if kind not in self._objects:
            raise ValueError(f"unknown kind {kind!r}")
        return _KindSink(self, kind)

    def _parse(self, kind: str, obj: dict[str, Any]) -> Any:
        """The parts of an object resolution uses, or None. An object of an unexpected shape
        (not from a real API server) is skipped and counted, never an exception."""
        try:
            return _PARSERS[kind](obj)
        except (AttributeError, KeyError, TypeError, ValueError):
            self.objects_rejected += 1
            return None

    def replace(self, kind: str, objects: list[dict[str, Any]], now_ns: int) -> None:
        """The whole set of `kind` (after a list): objects missing from it are deleted."""
        fresh = {}
        for obj in objects:
            parsed = self._parse(kind, obj)
            if parsed is not None:
                fresh[parsed[0]] = parsed
        held = self._objects[kind]
        for key in [k for k in held if k not in fresh]:
            self._remove(kind, key, now_ns)
        for parsed in fresh.values():
            self._put(kind, parsed, now_ns)

    def upsert(self, kind: str, obj: dict[str, Any], now_ns: int) -> None:
        parsed = self._parse(kind, obj)
        if parsed is not None:
            self._put(kind, parsed, now_ns)

    def delete(self, kind: str, obj: dict[str, Any], now_ns: int) -> None:
        parsed = self._parse(kind, obj)
        if parsed is not None:
            self._remove(kind, parsed[0], now_ns)

    def _put(self, kind: str, new: Any, now_ns: int) -> None:
        held = self._objects[kind]
        old = held.get(new[0])
        if old is not None and old.same(new):
            return  # a status update that changes nothing resolution uses
        held[new[0]] = new
        old_ips: tuple[str, ...] = old.ips if old is not None else ()
        claims = self._claims[kind]
        for ip in old_ips:
            if ip not in new.ips:
                self._unclaim(claims, ip, new[0])
        for ip in new.ips:
            per_ip = claims.setdefault(ip, {})
            if new[0] not in per_ip:
                self._claim_seq += 1
                per_ip[new[0]] = self._claim_seq
        touched = set(old_ips) | set(new.ips)
        if kind == "endpointslices":
            if old is not None and old.service is not None and old.service != new.service:
                self._service_slices.get(old.service, set()).discard(new.key)
            if new.service is not None:
                self._service_slices.setdefault(new.service, set()).add(new.key)
        elif kind == "services":
            # Its records appear behind its endpoints' addresses too.
            for slice_key in self._service_slices.get(new.key, ()):
                touched.update(self._objects["endpointslices"][slice_key].ips)
        self._refresh(touched, now_ns)

    def _remove(self, kind: str, key: Any, now_ns: int) -> None:
        old = self._objects[kind].pop(key, None)
        if old is None:
            return
        claims = self._claims[kind]
        for ip in old.ips:
            self._unclaim(claims, ip, key)
        touched = set(old.ips)
        if kind == "endpointslices" and old.service is not None:
            members = self._service_slices.get(old.service)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._service_slices[old.service]
        elif kind == "services":
            for slice_key in self._service_slices.get(key, ()):
                touched.update(self._objects["endpointslices"][slice_key].ips)
        self._refresh(touched, now_ns)

    @staticmethod
    def _unclaim(claims: dict[str, dict[Any, int]], ip: str, key: Any) -> None:
        per_ip = claims.get(ip)
        if per_ip is not None:
            per_ip.pop(key, None)
            if not per_ip:
                del claims[ip]

    # ---- what an IP is now, and its history ------------------------------------------------

    def _newest(self, kind: str, ip: str) -> Any:
        per_ip = self._claims[kind].get(ip)
        if not per_ip:
            return None
        key = max(per_ip, key=per_ip.__getitem__)
        return self._objects[kind][key]

    def _service_wire(self, s: _Slice) -> Wire:
        assert s.service is not None
        svc = self._objects["services"].get(s.service)
        return svc.wire if svc is not None else s.service_stub

    def _compose(self, ip: str) -> tuple[Record | None, ByPort | None]:
        service = self._newest("services", ip)
        if service is not None:
            ns, name = service.key
            return _record(f"{name}.{ns}", ns, service=service.wire), None
        pod: _Pod | None = self._newest("pods", ip)
        node: _Node | None = None if pod is not None else self._newest("nodes", ip)
        behind: list[_Slice] = []
        slice_keys = self._claims["endpointslices"].get(ip)
        if slice_keys:
            slices = self._objects["endpointslices"]
            behind = sorted(
                (slices[k] for k in slice_keys if slices[k].service is not None),
                key=lambda s: (s.service, s.key),
            )

        made: dict[tuple[tuple[str, str], tuple[str, str]], Record] = {}

        def behind_service(s: _Slice) -> Record:
            assert s.service is not None
            rec = made.get((s.service, s.key))
            if rec is None:
                ns, name = s.service
                rec = made[s.service, s.key] = _record(
                    f"{name}.{ns}",
                    ns,
                    pod=pod.wire if pod is not None else None,
                    service=self._service_wire(s),
                    endpoint_slice=s.wire,
                )
            return rec

        by_port: ByPort | None = None
        for s in behind:
            for port in s.ports:
                if by_port is None:
                    by_port = {}
                if port not in by_port:
                    by_port[port] = behind_service(s)
        record: Record | None
        if pod is not None:
            if behind:
                record = behind_service(behind[0])
            else:
                ns, name = pod.key
                record = _record(name, ns, pod=pod.wire)
        elif node is not None:
            record = _record(node.key, "")
        elif behind:
            record = behind_service(behind[0])  # an endpoint we know no pod or node of
        else:
            record = None
        if by_port is not None:
            # Ports that name what the IP alone names need no entry: most endpoints are
            # behind one Service, and a lookup that finds no by-port table reads less memory.
            by_port = {port: rec for port, rec in by_port.items() if rec is not record} or None
        return record, by_port

    def _refresh(self, ips: Iterable[str], now_ns: int) -> None:
        for ip in ips:
            self._refresh_ip(ip, now_ns)
            self._publish(ip)

    def _publish(self, ip: str) -> None:
        history = self._history.get(ip)
        if history is None:
            self._now.pop(ip, None)
        elif len(history) == 1 and history[0].by_port is None:
            self._now[ip] = history[0].record
        else:
            self._now[ip] = history

    def _refresh_ip(self, ip: str, now_ns: int) -> None:
        record, by_port = self._compose(ip)
        history = self._history.get(ip)
        owned = record is not None or by_port is not None
        if history is None:
            if owned:
                self._history[ip] = [_Item(now_ns, record, by_port)]
            return
        last = history[-1]
        if last.record == record and last.by_port == by_port:
            return
        item = _Item(now_ns, record, by_port)
        if self.settling or last.since_ns >= now_ns:
            # Still building the first state, or several changes learnt at one instant:
            # they are one item.
            history[-1] = item._replace(since_ns=last.since_ns)
            if not owned and len(history) == 1:
                del self._history[ip]  # never owned once settled: nothing to remember
                self._unowned.pop(ip, None)
                return
        else:
            history.append(item)
            if len(history) > self.history_per_ip:
                del history[0]
            # What came before an owner is the earliest known owner: no leading "nobody".
            while history[0].record is None and history[0].by_port is None:
                del history[0]
                if not history:
                    break
            if not history:
                del self._history[ip]
                self._unowned.pop(ip, None)
                return
        if owned:
            self._unowned.pop(ip, None)
        else:
            self._unowned.pop(ip, None)
            self._unowned[ip] = None  # released now: the newest of them
            while len(self._unowned) > self.max_unowned_ips:
                oldest = next(iter(self._unowned))
                del self._unowned[oldest]
                del self._history[oldest]
                self._now.pop(oldest, None)
                self.history_forgotten += 1

    # ---- state ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """For /status: objects held per kind, and the history's size."""
        out = {kind: len(objs) for kind, objs in self._objects.items()}
        out["ips"] = len(self._history)
        out["ips_unowned"] = len(self._unowned)
        out["history_items"] = sum(len(h) for h in self._history.values())
        out["history_forgotten"] = self.history_forgotten
        out["objects_rejected"] = self.objects_rejected
        return out
