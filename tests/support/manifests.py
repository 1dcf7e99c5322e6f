"""Reading deploy/kubernetes the way the cluster does: the kustomize build, the containers'
arguments with Kubernetes' $(VAR) expansion, so tests run exactly what the manifests say."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes"
OVERLAY = REPO / "deploy" / "overlays" / "example"
PROBE = REPO / "deploy" / "image" / "kshark-probe"


def copy_with_tokens(dest: Path) -> Path:
    """deploy/ copied to dest (the base and the overlay, so `../../kubernetes` resolves), with
    tokens made by make-tokens there: tests never write tokens into the work tree."""
    shutil.copytree(REPO / "deploy", dest / "deploy", ignore=shutil.ignore_patterns("tokens"))
    base = dest / "deploy" / "kubernetes"
    subprocess.run([str(base / "make-tokens")], check=True, capture_output=True)
    return base


def build(kustomization_dir: Path) -> list[dict[str, Any]]:
    res = subprocess.run(
        ["kubectl", "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(res.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A container of a workload (its pod template) or of a pod."""
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    (c,) = [c for c in spec["containers"] if c["name"] == name]
    return c


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of $(VAR) in command, args and env values: a defined variable is
    replaced, an undefined reference stays as written, $$ escapes."""
    out = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        m = _VAR.match(text, i)
        if m:
            out.append(env.get(m.group(1), m.group(0)))
            i = m.end()
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_env(c: dict[str, Any], field_values: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would set it: `value`s expanded with what is
    defined before them, `fieldRef`s from field_values (fieldPath → value)."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            env[item["name"]] = field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def container_argv(c: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [expand(a, env) for a in [*c.get("command", []), *c.get("args", [])]]
