"""Helpers shared by the tests and scripts/bench*: one place, imported as `tests.support.<name>`
(pytest puts the repository root on sys.path; a bench script inserts it once).

- `rawhttp`: a raw HTTP/1.1 client (`get`, `http_request`), `wait_until`, `free_port`.
- `api`: synthetic entries, a raw websocket client, an in-process worker API over a Store.
- `hub`: in-process fake workers, the hub, its websocket clients, real worker processes.
- `store`: entries and packets built by hand for the store, and its files read back.
- `worker_cli`: the real `kshark-worker` console script driven as a user would.
- `netns`: throw-away network namespaces for live tests (root).
- `k8s_cluster`, `k8s_resolver`, `tcp_proxy`: a real Kubernetes control plane, a Resolver
  against it, a cuttable TCP path to it; `deploy_cluster`, `manifests`: the same control plane
  driven with kubectl for deploy/, and deploy/kubernetes read the way the cluster reads it.
- `web`, `feeder`: the dashboard's browser tests and a worker API writing at a set rate.
- `kfl_samples`, `flows`: sample entries for KFL, hand-built TCP frames for the pipeline.
- `procstat`: a process's CPU time from /proc.

Programs run as their own process (by path, e.g. inside a namespace, importing nothing from the
tests; this directory is then their sys.path[0], so no module here may share a standard module's
name): `ws_client.py`, `capture_runner.py`, `feeder.py`. `hostile_worker` is a fake worker that
sends whatever frames a hub test scripts.
"""
