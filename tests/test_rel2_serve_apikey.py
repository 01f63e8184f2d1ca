"""`moagraph serve` takes its API key from the environment or a file, not only from the
command line, where every user of the machine sees it (`ps`, /proc/PID/cmdline): issue 25."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from moagraph.cli import _register
from moagraph.cli import app as cli_app
from moagraph.serve.config import API_KEY_ENV, read_api_key_file

SECRET = "sk-file-key-0123456789abcdef"
_register()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """uvicorn.Server.run replaced: the config `moagraph serve` would run with."""
    import uvicorn

    out: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: out.append(self.config))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    return out


def _served_key(config: Any) -> str | None:
    return config.app.state.config.api_key  # type: ignore[no-any-return]


def test_api_key_file_env_and_argv_warning(tmp_path: Path, captured: list[Any]) -> None:
    runner = CliRunner()
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    r = runner.invoke(cli_app, ["serve", "--api-key-file", str(key_file)])
    assert r.exit_code == 0, r.output
    assert _served_key(captured[-1]) == SECRET
    assert "warning" not in r.output
    key_file.chmod(0o644)  # readable by others: served, with a warning naming the fix
    r = runner.invoke(cli_app, ["serve", "--api-key-file", str(key_file)])
    assert r.exit_code == 0 and "chmod 600" in r.output, r.output
    r = runner.invoke(cli_app, ["serve"], env={API_KEY_ENV: SECRET})  # the environment
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert _served_key(captured[-1]) == SECRET
    r = runner.invoke(cli_app, ["serve", "--api-key", SECRET])  # still works, with a warning
    assert r.exit_code == 0 and _served_key(captured[-1]) == SECRET
    assert "visible to every user" in r.output and API_KEY_ENV in r.output
    assert "--api-key-file" in r.output
    r = runner.invoke(cli_app, ["serve", "--api-key", SECRET, "--api-key-file", str(key_file)])
    assert r.exit_code == 2 and "not both" in r.output
    for bad, needle in ((tmp_path / "missing", "cannot read"), (tmp_path / "empty", "empty")):
        if "empty" in bad.name:
            bad.write_text("\n\n")
        r = runner.invoke(cli_app, ["serve", "--api-key-file", str(bad)])
        assert r.exit_code == 2 and needle in r.output and str(bad.name) in r.output, r.output


def test_read_api_key_file_takes_the_first_line(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_text(f"  {SECRET}  \nsecond line\n")
    p.chmod(0o600)
    assert read_api_key_file(p) == (SECRET, None)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_key_from_a_file_is_not_in_the_process_command_line(tmp_path: Path) -> None:
    """The probe read the key with `ps`. A real `moagraph serve` process started with
    --api-key-file: its command line has no key, and the key works."""
    key_file = tmp_path / "key"
    key_file.write_text(SECRET)
    key_file.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(API_KEY_ENV, None)
    cmd = [
        sys.executable,
        "-c",
        "from moagraph.cli import main; main()",
        "serve",
        "--api-key-file",
        str(key_file),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.1)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline and b"--api-key-file" in cmdline
        ps = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert SECRET not in ps
        with openai.OpenAI(base_url=base + "/v1", api_key=SECRET, max_retries=0) as c:
            assert c.models.list().data
        with (
            openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0) as c,
            pytest.raises(openai.AuthenticationError),
        ):
            c.models.list()
    finally:
        proc.terminate()
        proc.wait(30)
