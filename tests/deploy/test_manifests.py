"""What deploy/kubernetes says, checked without a cluster: the places that must agree do, the
probes pass against a real worker with its token and fail without it, make-tokens makes tokens
only its user can read."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.manifests import (
    BASE,
    PROBE,
    build,
    container,
    container_argv,
    container_env,
    copy_with_tokens,
    find,
)

VENV_BIN = Path(sys.executable).parent
DEMO_PCAP = Path(__file__).resolve().parents[2] / "fixtures" / "demo.pcap"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    # kustomize reads the tokens make-tokens writes; a clean clone has none, so build a copy.
    return build(copy_with_tokens(tmp_path_factory.mktemp("deploy")))


def _flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    return value


def test_the_worker_port_is_the_same_everywhere_and_outside_the_nodeport_range(
    objects: list[dict],
) -> None:
    ds = find(objects, "DaemonSet", "kshark-worker")
    c = container(ds, "worker")
    env = container_env(c, {"status.podIP": "10.0.0.5", "spec.nodeName": "n"})
    argv = container_argv(c, env)
    port = int(_flag(argv, "--port"))
    assert not 30000 <= port <= 32767  # kube-proxy's NodePort range
    assert not 32768 <= port <= 60999  # Linux's ephemeral ports: a hostNetwork pod's are the node's
    assert ds["spec"]["template"]["metadata"]["annotations"]["kshark.io/api-port"] == str(port)
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert f"not port {port}" in _flag(argv, "--filter")
    assert _flag(argv, "--node-name") == "n"  # entries' node.name: the pod's spec.nodeName
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["exec"]["command"][1] == str(port)
    hub = container(find(objects, "Deployment", "kshark-hub"), "hub")
    hub_argv = container_argv(hub, container_env(hub, {"metadata.namespace": "kshark"}))
    assert _flag(hub_argv, "--discover-port") == str(port)
    assert _flag(hub_argv, "--discover") == "kshark/app.kubernetes.io/name=kshark-worker"


def test_tokens_are_files_never_arguments_or_environment(objects: list[dict]) -> None:
    for kind, name, cname in (
        ("DaemonSet", "kshark-worker", "worker"),
        ("Deployment", "kshark-hub", "hub"),
    ):
        c = container(find(objects, kind, name), cname)
        assert not any(a.startswith("--token=") or a == "--token" for a in c["args"])
        assert not any("TOKEN" in e["name"] and "PROBE" not in e["name"] for e in c["env"])
        assert any(a.startswith("--token-file=/etc/kshark/tokens/") for a in c["args"])
    # The workers get their own token only, not the one the hub's clients present.
    ds = find(objects, "DaemonSet", "kshark-worker")
    (vol,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "tokens"]
    assert [i["key"] for i in vol["secret"]["items"]] == ["worker-token"]


def test_make_tokens_writes_private_random_tokens_and_keeps_them(tmp_path: Path) -> None:
    script = tmp_path / "make-tokens"
    script.write_bytes((BASE / "make-tokens").read_bytes())
    script.chmod(0o755)
    subprocess.run([str(script)], check=True, capture_output=True)
    tokens = {n: (tmp_path / "tokens" / n).read_text() for n in ("hub-token", "worker-token")}
    for path in (tmp_path / "tokens").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens.values())
    assert tokens["hub-token"] != tokens["worker-token"]
    subprocess.run([str(script)], check=True, capture_output=True)  # again: kept
    assert (tmp_path / "tokens" / "hub-token").read_text() == tokens["hub-token"]
    subprocess.run([str(script), "--rotate"], check=True, capture_output=True)
    assert (tmp_path / "tokens" / "hub-token").read_text() != tokens["hub-token"]


@pytest.fixture
def worker_with_token(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = tmp_path / "worker-token"
    token.write_text("s3cret-token\n")
    proc = subprocess.Popen(
        [str(VENV_BIN / "kshark-worker"), "--pcap", str(DEMO_PCAP), "--data-dir",
         str(tmp_path / "d"), "--port", str(port), "--token-file", str(token)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield port, token
    finally:
        proc.terminate()
        proc.wait(10)


def _probe(port: int, token_file: Path) -> subprocess.CompletedProcess[str]:
    # Run by the image's /usr/bin/python3 -I there; by this interpreter here, also isolated.
    return subprocess.run(
        [sys.executable, "-I", str(PROBE), str(port), str(token_file)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "KSHARK_PROBE_HOST": "127.0.0.1"},
    )


def test_the_probe_passes_with_the_token_and_fails_without(
    worker_with_token: tuple[int, Path], tmp_path: Path
) -> None:
    port, token = worker_with_token
    deadline = time.monotonic() + 20
    while (res := _probe(port, token)).returncode != 0:  # until the worker listens
        assert time.monotonic() < deadline, res.stderr
        time.sleep(0.05)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    res = _probe(port, wrong)
    assert res.returncode == 1
    assert "401" in res.stderr
    res = _probe(port, tmp_path / "missing")
    assert res.returncode == 1
    assert "No such file" in res.stderr
