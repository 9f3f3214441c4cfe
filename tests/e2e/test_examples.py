"""examples/send_file.py as a new user meets it: without arguments, and its docstring's
commands pasted into a shell outside the venv (PATH without the venv's bin)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import make_file, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "send_file.py"
VENV_BIN = ROOT / ".venv" / "bin"


def test_send_file_without_arguments_prints_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("usage: send_file.py FILE HOST PORT")


def _docstring_commands() -> list[str]:
    doc = ast.get_docstring(ast.parse(EXAMPLE.read_text()))
    assert doc
    return [line.strip() for line in doc.splitlines() if line.startswith("    ")]


@pytest.mark.skipif(
    not (VENV_BIN / "python").exists(), reason="no .venv at the repository root (make venv)"
)
def test_send_file_docstring_commands_run_outside_the_venv(tmp_path) -> None:
    recv_cmd, send_cmd = _docstring_commands()
    assert recv_cmd.endswith("&")
    inbox = tmp_path / "inbox"
    data = make_file(tmp_path / "some.file", 200_000)
    recv_cmd = recv_cmd.rstrip("& ").replace("/tmp/inbox", str(inbox))
    recv_cmd = recv_cmd.replace("127.0.0.1:9000", "127.0.0.1:0")
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != Path(sys.executable).parent.resolve()
        and Path(p).resolve() != VENV_BIN.resolve()
    )
    env = {**os.environ, "PATH": path or "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    recv = subprocess.Popen(
        ["bash", "-c", f"exec {recv_cmd}"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        line = recv.stdout.readline()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
        assert m, (line, recv.stderr.read() if recv.poll() is not None else "")
        send_cmd = send_cmd.replace("some.file", str(data)).replace(" 9000", f" {m.group(1)}")
        done = subprocess.run(
            ["bash", "-c", send_cmd], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "verified by the receiver" in done.stdout
        received = inbox / "some.file"
        wait_for(received.exists, 10, "the received file")
        assert received.read_bytes() == data.read_bytes()
    finally:
        recv.terminate()
        try:
            recv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            recv.kill()
            recv.wait(timeout=10)
