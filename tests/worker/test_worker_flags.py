"""Every flag of the real `kshark-worker`: a bad value is one line on stderr and exit 2, before
anything starts; the token comes from a flag, a file or the environment, and only the flag
shows in `ps`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.worker_cli import DEMO, STEP_TIMEOUT_S, ServingWorker, worker_bin

TOKEN_ENV = "KSHARK_TOKEN"
NOT_A_SIZE = "(e.g. 1GiB, 512MiB, 64KiB, 4096)"
TOKEN_CHARS = "a token has no spaces or control characters"


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    environ.update(env or {})
    return subprocess.run(
        [worker_bin(), *args],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env=environ,
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Token files of every kind, under tmp_path/tok/."""
    d = tmp_path / "tok"
    d.mkdir()
    (d / "empty").write_bytes(b"")
    (d / "newline-only").write_bytes(b"\n")
    (d / "spaces").write_bytes(b"two words\n")
    (d / "latin1").write_bytes("s\xe9same\n".encode("latin-1"))
    (d / "huge").write_bytes(b"x" * 5000)
    (d / "dir").mkdir()
    (d / "a-file").write_bytes(b"x")
    return d


# (id, flags after `--pcap DEMO --data-dir D --once` unless they say otherwise, environment,
# the one line expected on stderr). `{D}` and `{T}` are the data and token-file directories.
ONCE = ["--pcap", str(DEMO), "--data-dir", "{D}", "--once"]
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("nothing-to-capture", ["--data-dir", "{D}"], {},
     "nothing to capture: give --pcap FILE or --iface IFACE"),
    ("unknown-flag", [*ONCE, "--bogus"], {}, "unrecognized arguments: --bogus"),
    ("missing-value", [*ONCE, "--port"], {}, "argument --port: expected one argument"),
    ("pcap-empty", ["--pcap", "", "--data-dir", "{D}", "--once"], {},
     "argument --pcap: --pcap must not be empty"),
    ("iface-empty", ["--iface", "", "--data-dir", "{D}"], {},
     "argument --iface: '' is not an interface name (no spaces, no '/')"),
    ("iface-space", ["--iface", "eth 0", "--data-dir", "{D}"], {},
     "argument --iface: 'eth 0' is not an interface name (no spaces, no '/')"),
    ("once-with-iface", ["--iface", "lo", "--data-dir", "{D}", "--once"], {},
     "--once is for --pcap replay only"),
    ("filter-without-iface", [*ONCE, "--filter", "tcp port 80"], {},
     "--filter applies to live capture (--iface) only"),
    ("filter-empty", [*ONCE, "--filter", ""], {}, "argument --filter: --filter must not be empty"),
    ("data-dir-empty", ["--pcap", str(DEMO), "--data-dir", "", "--once"], {},
     "argument --data-dir: --data-dir must not be empty"),
    ("data-dir-is-a-file", ["--pcap", str(DEMO), "--data-dir", "{T}/a-file", "--once"], {},
     "data directory {T}/a-file: not a directory"),
    ("data-dir-under-a-file", ["--pcap", str(DEMO), "--data-dir", "{T}/a-file/D", "--once"], {},
     "data directory {T}/a-file/D: Not a directory"),
    ("storage-limit-0", [*ONCE, "--storage-limit", "0"], {},
     "argument --storage-limit: '0': must be more than 0"),
    ("storage-limit-0k", [*ONCE, "--storage-limit", "0KiB"], {},
     "argument --storage-limit: '0KiB': must be more than 0"),
    ("storage-limit-negative", [*ONCE, "--storage-limit", "-5"], {},
     f"argument --storage-limit: not a size: '-5' {NOT_A_SIZE}"),
    ("storage-limit-infinite", [*ONCE, "--storage-limit", "infk"], {},
     f"argument --storage-limit: not a size: 'infk' {NOT_A_SIZE}"),
    ("storage-limit-nan", [*ONCE, "--storage-limit", "nan"], {},
     f"argument --storage-limit: not a size: 'nan' {NOT_A_SIZE}"),
    ("storage-limit-exponent", [*ONCE, "--storage-limit", "1e9"], {},
     f"argument --storage-limit: not a size: '1e9' {NOT_A_SIZE}"),
    ("storage-limit-unit", [*ONCE, "--storage-limit", "1.5x"], {},
     f"argument --storage-limit: not a size: '1.5x' {NOT_A_SIZE}"),
    ("storage-limit-empty", [*ONCE, "--storage-limit", ""], {},
     f"argument --storage-limit: not a size: '' {NOT_A_SIZE}"),
    ("storage-limit-huge", [*ONCE, "--storage-limit", "9" * 400 + "T"], {},
     f"argument --storage-limit: '{'9' * 400}T': larger than 9223372036854775807 bytes"),
    ("max-body-negative", [*ONCE, "--max-body", "-1"], {},
     f"argument --max-body: not a size: '-1' {NOT_A_SIZE}"),
    ("max-body-word", [*ONCE, "--max-body", "lots"], {},
     f"argument --max-body: not a size: 'lots' {NOT_A_SIZE}"),
    ("port-too-large", [*ONCE, "--port", "99999"], {},
     "argument --port: not a TCP port (0-65535): '99999'"),
    ("port-65536", [*ONCE, "--port", "65536"], {},
     "argument --port: not a TCP port (0-65535): '65536'"),
    ("port-negative", [*ONCE, "--port", "-1"], {},
     "argument --port: not a TCP port (0-65535): '-1'"),
    ("port-word", [*ONCE, "--port", "http"], {},
     "argument --port: not a TCP port (0-65535): 'http'"),
    ("port-empty", [*ONCE, "--port", ""], {}, "argument --port: not a TCP port (0-65535): ''"),
    ("advertise-empty", [*ONCE, "--advertise", ""], {},
     "argument --advertise: '' is not a host name or address (no spaces, no '/')"),
    ("advertise-slash", [*ONCE, "--advertise", "a/b"], {},
     "argument --advertise: 'a/b' is not a host name or address (no spaces, no '/')"),
    ("node-name-empty", [*ONCE, "--node-name", ""], {},
     "argument --node-name: '' is not a node name (no spaces, no '/')"),
    ("node-name-space", [*ONCE, "--node-name", "node a"], {},
     "argument --node-name: 'node a' is not a node name (no spaces, no '/')"),
    ("log-level", [*ONCE, "--log-level", "loud"], {},
     "argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', 'WARNING', "
     "'ERROR')"),
    ("token-empty", [*ONCE, "--token", ""], {}, "argument --token: the token is empty"),
    ("token-space", [*ONCE, "--token", "two words"], {}, f"argument --token: {TOKEN_CHARS}"),
    ("token-newline", [*ONCE, "--token", "tok\n"], {}, f"argument --token: {TOKEN_CHARS}"),
    ("token-control", [*ONCE, "--token", "to\x01ken"], {}, f"argument --token: {TOKEN_CHARS}"),
    ("decode-as-no-protocol", [*ONCE, "--decode-as", "5353"], {},
     "--decode-as '5353': expected PORT=PROTOCOL with PORT 1-65535 (e.g. 50051=http2)"),
    ("proto-descriptor-empty", [*ONCE, "--proto-descriptor", ""], {},
     "argument --proto-descriptor: --proto-descriptor must not be empty"),
    ("proto-descriptor-missing", [*ONCE, "--proto-descriptor", "{T}/missing.desc"], {},
     "{T}/missing.desc: No such file or directory"),
    ("kubeconfig-empty", [*ONCE, "--kubeconfig", ""], {},
     "argument --kubeconfig: --kubeconfig must not be empty"),
    ("kubeconfig-missing", [*ONCE, "--kubeconfig", "{T}/missing"], {},
     "kubeconfig {T}/missing: No such file or directory"),
    ("token-and-token-file", [*ONCE, "--token", "t", "--token-file", "{T}/spaces"], {},
     "argument --token-file: not allowed with argument --token"),
    ("token-file-missing", [*ONCE, "--token-file", "{T}/missing"], {},
     "--token-file {T}/missing: No such file or directory"),
    ("token-file-dir", [*ONCE, "--token-file", "{T}/dir"], {},
     "--token-file {T}/dir: Is a directory"),
    ("token-file-under-a-file", [*ONCE, "--token-file", "{T}/a-file/x"], {},
     "--token-file {T}/a-file/x: Not a directory"),
    ("token-file-empty", [*ONCE, "--token-file", "{T}/empty"], {},
     "--token-file {T}/empty: the token is empty"),
    ("token-file-newline-only", [*ONCE, "--token-file", "{T}/newline-only"], {},
     "--token-file {T}/newline-only: the token is empty"),
    ("token-file-spaces", [*ONCE, "--token-file", "{T}/spaces"], {},
     f"--token-file {{T}}/spaces: {TOKEN_CHARS}"),
    ("token-file-not-ascii", [*ONCE, "--token-file", "{T}/latin1"], {},
     "--token-file {T}/latin1: not UTF-8 text"),
    ("token-file-huge", [*ONCE, "--token-file", "{T}/huge"], {},
     "--token-file {T}/huge: larger than 4096 bytes"),
    ("token-env-spaces", ONCE, {TOKEN_ENV: "two words"},
     f"environment variable {TOKEN_ENV}: {TOKEN_CHARS}"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_flag_value_is_one_line_and_exit_2(
    tmp_path: Path, files: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    data = tmp_path / "D"

    def fill(text: str) -> str:
        return text.replace("{D}", str(data)).replace("{T}", str(files))

    res = run([fill(a) for a in args], env)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f"kshark-worker: {fill(line)}"]
    # Refused before anything started: no data directory was made.
    assert not data.exists()


@pytest.mark.parametrize("case", ["port-in-use", "host-not-local"])
def test_an_api_that_cannot_listen_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    # Found when the API binds, after the flags were read: still one line, exit 2.
    args = ["--pcap", str(DEMO), "--data-dir", str(tmp_path / "D")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if case == "port-in-use":
            res = run([*args, "--port", str(port)])
            expected = f"API on 127.0.0.1:{port}: Address already in use"
        else:  # TEST-NET-1: an address of no interface here
            res = run([*args, "--host", "192.0.2.1", "--port", "0"])
            expected = "API on 192.0.2.1:0: Cannot assign requested address"
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f"kshark-worker: {expected}"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GiB", 1 << 30), ("512MiB", 512 << 20), ("64k", 64 << 10), ("1.5m", 3 << 19),
     ("4096", 4096), ("2 GB", 2 << 30), ("1t", 1 << 40)],
)  # fmt: skip
def test_sizes_are_read_in_binary_units(tmp_path: Path, text: str, size: int) -> None:
    w = ServingWorker.start(
        ["--pcap", str(DEMO), "--data-dir", str(tmp_path / "D"), "--storage-limit", text],
        tmp_path / "worker.log",
    )
    try:
        assert w.status()["store"]["storage_limit"] == size
    finally:
        w.kill()


def _status_code(w: ServingWorker, token: str | None) -> int:
    req = urllib.request.Request(w.url("/status"))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=STEP_TIMEOUT_S) as r:
            json.loads(r.read())
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_an_empty_token_variable_counts_as_unset(tmp_path: Path) -> None:
    env = {**os.environ, TOKEN_ENV: ""}
    w = ServingWorker.start(
        ["--pcap", str(DEMO), "--data-dir", str(tmp_path / "D")], tmp_path / "w.log", env=env
    )
    try:
        assert _status_code(w, None) == 200
    finally:
        w.kill()


@pytest.mark.parametrize("source", ["file", "file-crlf", "env", "flag-over-env", "file-over-env"])
def test_the_token_from_a_file_or_the_environment_protects_the_api(
    tmp_path: Path, source: str
) -> None:
    token = "s3cr3t-Tøken_~+/="  # any printable text without spaces
    token_file = tmp_path / "token"
    token_file.write_bytes(token.encode() + (b"\r\n" if source == "file-crlf" else b"\n"))
    args = ["--pcap", str(DEMO), "--data-dir", str(tmp_path / "D")]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if source.startswith("file"):
        args += ["--token-file", str(token_file)]
    if source == "flag-over-env":
        args += ["--token", token]
    if source in ("env", "flag-over-env", "file-over-env"):
        env[TOKEN_ENV] = token if source == "env" else "the-other-one"
    w = ServingWorker.start(args, tmp_path / "worker.log", env=env)
    try:
        assert _status_code(w, None) == 401
        assert _status_code(w, token + "x") == 401
        assert _status_code(w, "the-other-one") == 401
        assert _status_code(w, token) == 200
        cmdline = Path(f"/proc/{w.proc.pid}/cmdline").read_bytes()
        assert (token.encode() in cmdline) == (source == "flag-over-env")
    finally:
        w.kill()
