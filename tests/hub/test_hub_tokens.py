"""The hub's tokens (issue 9, items 6 and 9): no open door in front of protected workers, and
tokens that need not show in `ps`.

Before: `kshark-hub --worker-token T` without `--token` served the protected workers' entries,
items and pcaps to anyone; tokens could only be given on the command line.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected

from kshark.cliargs import CliError
from kshark.tokens import token_from
from tests.support.hub import VENV_BIN, open_client, start_hub
from tests.support.rawhttp import accepts, free_port, get, wait_until

HUB = str(VENV_BIN / "kshark-hub")
BUDGET = 30


def run_hub_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`kshark-hub ARGS` expected to refuse at once (a hub that starts would time out here)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KSHARK_")}
    environ.update(env or {})
    return subprocess.run(
        [HUB, "--worker", "127.0.0.1:1", "--port", "0", *args],
        capture_output=True, text=True, timeout=BUDGET, env=environ,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kshark-hub: ")
    return lines[0]


def test_a_worker_token_without_a_client_token_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "worker-token"
    secret.write_text("w-secret\n")
    for how in (
        run_hub_command("--worker-token", "w-secret"),
        run_hub_command("--worker-token-file", str(secret)),
        run_hub_command(env={"KSHARK_WORKER_TOKEN": "w-secret"}),
    ):
        line = one_line(how)
        assert "--insecure-no-token" in line and "KSHARK_TOKEN" in line
    assert "w-secret" not in how.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-file", "{missing}"], "--token-file {missing}: No such file or directory"),
        (["--token-file", "{empty}"], "--token-file {empty}: the token is empty"),
        (
            ["--worker-token-file", "{blank}", "--token", "c"],
            "--worker-token-file {blank}: the token is empty",
        ),
        (
            ["--token-file", "{two}"],
            "--token-file {two}: a token has no spaces or control characters",
        ),
        (
            ["--token", "c", "--token-file", "{good}"],
            "argument --token-file: not allowed with argument --token",
        ),
        (["--token", ""], "argument --token: the token is empty"),
    ],
    ids=["missing", "empty", "blank", "two-lines", "both", "empty-flag"],
)
def test_bad_token_sources_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    files = {
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "blank": tmp_path / "blank",
        "two": tmp_path / "two",
        "good": tmp_path / "good",
    }
    files["empty"].write_text("")
    files["blank"].write_text("\n")
    files["two"].write_text("a\nb\n")
    files["good"].write_text("c\n")
    names = {k: str(v) for k, v in files.items()}
    line = one_line(run_hub_command(*(a.format(**names) for a in args)))
    assert line.startswith("kshark-hub: " + message.format(**names))


def test_token_sources_in_order(tmp_path: Path) -> None:
    f = str(tmp_path / "t")
    Path(f).write_bytes(b"from-file\r\n")
    env = {"KSHARK_TOKEN": "from-env"}
    assert token_from("flag", None, "KSHARK_TOKEN", "--token", env) == "flag"
    assert token_from(None, f, "KSHARK_TOKEN", "--token", env) == "from-file"
    assert token_from(None, None, "KSHARK_TOKEN", "--token", env) == "from-env"
    assert token_from(None, None, "KSHARK_TOKEN", "--token", {"KSHARK_TOKEN": ""}) is None
    assert token_from(None, None, "KSHARK_TOKEN", "--token", {}) is None
    with pytest.raises(CliError, match="environment variable KSHARK_TOKEN: a token has no"):
        token_from(None, None, "KSHARK_TOKEN", "--token", {"KSHARK_TOKEN": "two words"})


async def test_tokens_from_a_file_and_the_environment_protect_the_hub(
    nursery, make_worker, tmp_path: Path
) -> None:
    """A real `kshark-hub` whose tokens come from a file and from the environment, never from
    its command line: clients need the token, the protected worker is reached."""
    w = await make_worker("secure", token="w-secret")
    w.write(2)
    client_token = tmp_path / "client-token"
    client_token.write_text("c-secret\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSHARK_")}
    env["KSHARK_WORKER_TOKEN"] = "w-secret"
    hub = await trio.lowlevel.open_process(
        [HUB, "--worker", w.address, "--port", str(port), "--token-file", str(client_token)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        with trio.fail_after(BUDGET):
            await wait_until(lambda: accepts(port))
            cmdline = await trio.Path(f"/proc/{hub.pid}/cmdline").read_bytes()
            anonymous = await get(port, "/status")
            with pytest.raises(ConnectionRejected):
                async with open_client(port, ""):
                    pass
            async with open_client(
                port, "", headers=[(b"Authorization", b"Bearer c-secret")]
            ) as client:
                await client.entries_until(2)
    finally:
        hub.terminate()
        with trio.CancelScope(shield=True):
            await hub.wait()
    assert b"secret" not in cmdline
    assert anonymous.status == 401
    assert sorted(e["id"] for e in client.entries) == sorted(e["id"] for e in w.written)


async def test_insecure_no_token_is_explicit_and_warned(make_worker, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSHARK_")}
    log = tmp_path / "hub.log"
    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        hub = await trio.lowlevel.open_process(
            [HUB, "--worker", "127.0.0.1:1", "--port", str(port), "--worker-token", "w",
             "--insecure-no-token"],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    finally:
        os.close(err)
    try:
        with trio.fail_after(BUDGET):
            await wait_until(lambda: accepts(port))
            status = await get(port, "/status")
    finally:
        hub.terminate()
        with trio.CancelScope(shield=True):
            await hub.wait()
    assert status.status == 200  # served, as asked
    assert "--insecure-no-token: serving the token-protected workers' entries" in (
        await trio.Path(log).read_text()
    )


async def test_serving_beyond_loopback_without_a_token_is_warned(nursery, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="kshark.hub"):
        await start_hub(nursery, ["127.0.0.1:1"], host="0.0.0.0")
        await start_hub(nursery, ["127.0.0.1:1"], host="127.0.0.1")
        await start_hub(nursery, ["127.0.0.1:1"], host="0.0.0.0", token="c")
    warned = [r.getMessage() for r in caplog.records if "without a client token" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith("serving on 0.0.0.0 without a client token")


async def test_a_worker_token_beyond_ascii_reaches_the_worker(nursery, make_worker) -> None:
    """A token is any printable text: the hub's probe and its streams send it as UTF-8 (h11
    refuses a non-ASCII str header; a latin-1 encoding would miss the worker's UTF-8 token)."""
    token = "wörker-€-token"
    w = await make_worker("w", token=token)
    w.write(3)
    hub = await start_hub(nursery, [w.address], token="c", worker_token=token)
    headers = [(b"Authorization", b"Bearer c")]
    with trio.fail_after(BUDGET):
        async with open_client(hub.port, "", headers=headers) as client:
            await client.entries_until(3)
        # The probe of its /status got past the token check (the app counts what reaches it).
        await wait_until(lambda: w.app.status_answered >= 1)
    (status,) = hub.status()["workers"]
    assert (status["state"], status["status_problem"], status["last_error"]) == ("up", None, None)
    assert sorted(e["id"] for e in client.entries) == sorted(e["id"] for e in w.written)
