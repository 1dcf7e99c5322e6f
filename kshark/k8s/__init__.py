"""Kubernetes for kshark: where the API is, list+watch on it, and what an IP was at a time.

- `config`: the cluster to talk to — a kubeconfig file (`--kubeconfig`, `KUBECONFIG`) or the pod's
  own service account (in-cluster), turned into one `ClusterConfig`.
- `api`: a small async client for the parts of the API kshark reads (GET a list page, stream a
  watch), on httpx, which runs under Trio.
- `listwatch`: one list + watch loop per resource kind, with Kubernetes' rules for resuming,
  bookmarks, expired resource versions (a 410 inside a 200 stream) and backing off on errors.
- `index`: sans-IO — objects in, `resolve(ip, port, ts_ns)` out: the time-aware IP → pod /
  service / node index the entry builder asks (capture stays free of I/O: it is handed the index).
- `resolver`: the worker's service that keeps the index fed (pods, nodes, services,
  EndpointSlices) and reports its state for /status.

The hub's worker discovery (kshark/hub/discover.py) uses `config`, `api` and `listwatch` too.
docs/kubernetes.md says what is resolved, how, and which RBAC it needs.
"""
