"""scripts/build-image for real: the OCI archive it writes holds a root filesystem in which
kshark-worker replays fixtures/demo.pcap with the compiled capture modules, as uid 65534 (the
image's user), and the probe the pods run. Needs root and the Debian mirror and PyPI (as CI
has); ~2 min. Unpacked and run with chroot: no container engine needed (podman run of the same
archive is shown in docs/kubernetes.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.image, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900.0


def _blob(layout: Path, digest: str) -> Path:
    algo, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algo / hexdigest


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if os.geteuid() != 0:
        pytest.fail("scripts/build-image needs root (the suite runs as root in CI)")
    out = tmp_path_factory.mktemp("image") / "kshark.oci.tar"
    res = subprocess.run(
        [str(REPO / "scripts" / "build-image"), str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    layout = out.parent / "layout"
    with tarfile.open(out) as t:
        t.extractall(layout, filter="fully_trusted")  # our own archive: modes (/tmp 1777) kept
    index = json.loads((layout / "index.json").read_text())
    (desc,) = index["manifests"]
    manifest = json.loads(_blob(layout, desc["digest"]).read_text())
    config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text())
    rootfs = out.parent / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:  # applied in order, as a runtime does (no whiteouts here)
        with tarfile.open(_blob(layout, layer["digest"])) as t:
            t.extractall(rootfs, filter="fully_trusted")  # our own archive: modes (/tmp 1777) kept
    return {"index": index, "config": config, "rootfs": rootfs}


def _run(rootfs: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/opt/kshark/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        ["chroot", "--userspec=65534:65534", str(rootfs), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_archive_names_the_image_and_its_user(image: dict) -> None:
    (desc,) = image["index"]["manifests"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "kshark:0.1.0"
    cfg = image["config"]["config"]
    assert cfg["User"] == "65534:65534"
    assert (
        "PATH=/opt/kshark/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in (cfg["Env"])
    )


def test_the_image_replays_the_demo_capture_with_the_compiled_modules(image: dict) -> None:
    rootfs = image["rootfs"]
    shutil.copy(REPO / "fixtures" / "demo.pcap", rootfs / "tmp" / "demo.pcap")
    res = _run(rootfs, "kshark-worker", "--pcap", "/tmp/demo.pcap", "--data-dir", "/tmp/ks",
               "--once")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(
        "kshark-worker: 108 packets, 108 tcp, 6 connections (http 6), 24 entries"
    )
    res = _run(rootfs, "python3", "-c",
               "import capture, capture.pipeline; print(capture.native_modules_loaded())")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "pipeline" in res.stdout and "reassembly" in res.stdout
    # What the image does not carry: the compiler, the headers, pip (build only).
    assert not (rootfs / "usr" / "bin" / "gcc").exists()
    assert not (rootfs / "opt" / "kshark" / "bin" / "pip").exists()


def test_the_image_has_the_probe_and_the_hub(image: dict) -> None:
    rootfs = image["rootfs"]
    res = _run(rootfs, "kshark-probe", "1", "/nonexistent")
    assert res.returncode == 1 and "No such file" in res.stderr
    res = _run(rootfs, "kshark-hub", "--help")
    assert res.returncode == 0 and "--worker" in res.stdout
