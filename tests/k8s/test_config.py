"""kshark.k8s.config: which cluster, with which credentials, and the messages when it cannot."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kshark.k8s.config import (
    KubeConfigError,
    find_cluster_config,
    in_cluster_config,
    load_kubeconfig,
)

KC = """apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {{server: "https://10.0.0.1:6443/", certificate-authority: ca.pem}}
- name: lab
  cluster: {{server: "https://lab:6443", insecure-skip-tls-verify: true}}
users:
- name: admin
  user: {{token: abc}}
- name: reader
  user: {{tokenFile: tok}}
contexts:
- name: p
  context: {{cluster: prod, user: admin, namespace: shop}}
- name: l
  context: {{cluster: lab, user: reader}}
current-context: {current}
"""


def write(tmp_path: Path, current: str = "l") -> Path:
    (tmp_path / "tok").write_text("from-file\n")
    path = tmp_path / "config"
    path.write_text(KC.format(current=current))
    return path


def test_current_context_and_a_token_file(tmp_path: Path) -> None:
    cfg = load_kubeconfig(write(tmp_path))
    assert cfg.server == "https://lab:6443"
    assert cfg.insecure and cfg.namespace == "default"
    assert cfg.bearer_token() == "from-file"
    assert cfg.source == f"kubeconfig {tmp_path / 'config'} (context l)"


def test_a_relative_ca_file_is_read_beside_the_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"certificate-authority .*ca\.pem: No such file"):
        load_kubeconfig(write(tmp_path, "p"))


def test_exec_plugins_are_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text(
        "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
        "users: [{name: u, user: {exec: {command: aws}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    with pytest.raises(KubeConfigError, match="exec plugin, which kshark does not run"):
        load_kubeconfig(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "not YAML"),
        ("- 1\n", "no mapping at the top"),
        ("clusters: []\n", "no current-context"),
        ("current-context: x\ncontexts: []\n", "no context named 'x'"),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {server: ftp://x}}]\n",
            "has no https:// server",
        ),
    ],
)
def test_broken_kubeconfigs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c"
    path.write_text(text)
    with pytest.raises(KubeConfigError, match=message):
        load_kubeconfig(path)


def test_certificate_data_that_is_not_a_certificate_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c"
    bad = base64.b64encode(b"not a pem").decode()
    path.write_text(
        f"clusters: [{{name: c, cluster: {{server: 'https://x', certificate-authority-data: {bad}}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    with pytest.raises(KubeConfigError, match="TLS settings not usable"):
        load_kubeconfig(path)


def test_order_flag_then_env_then_in_cluster(tmp_path: Path) -> None:
    kc = write(tmp_path)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("kshark")
    pod_env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert find_cluster_config(None, {}, sa) is None
    in_pod = find_cluster_config(None, pod_env, sa)
    assert in_pod is not None
    assert (in_pod.server, in_pod.namespace, in_pod.bearer_token()) == (
        "https://[fd00::1]:443", "kshark", "sa-token",
    )  # fmt: skip
    from_env = find_cluster_config(None, {**pod_env, "KUBECONFIG": f"/nonexistent:{kc}"}, sa)
    assert from_env is not None and from_env.server == "https://lab:6443"
    with pytest.raises(KubeConfigError, match="KUBECONFIG=/a:/b: no such file"):
        find_cluster_config(None, {"KUBECONFIG": "/a:/b"}, sa)
    flag = find_cluster_config(str(kc), {"KUBECONFIG": "/a"}, sa)
    assert flag is not None and flag.source.startswith(f"kubeconfig {kc}")
    assert in_cluster_config({}, sa) is None


def test_an_unusable_in_cluster_ca_is_said_at_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("garbage")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeConfigError, match=r"in-cluster CA .*ca\.crt: not usable"):
        in_cluster_config(env, tmp_path)
