"""Fixtures of tests/hostile: those of tests/e2e (real processes on loopback), plus a way to
run the malicious peers of this folder as processes."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import Proc, proxy, receiver, spawn  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]


class PyProc(Proc):
    """A Python module of this repository run as a process (Proc runs `rtcp`)."""

    def __init__(self, module: str, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.args = [module, *args]
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self.lines = []
        self._q = queue.Queue()
        self.stderr_chunks = []
        self._t_out = threading.Thread(target=self._pump_out, daemon=True)
        self._t_err = threading.Thread(target=self._pump_err, daemon=True)
        self._t_out.start()
        self._t_err.start()


@pytest.fixture
def pyproc():
    """pyproc(module, *args) -> PyProc; every process is stopped at teardown."""
    started: list[PyProc] = []

    def _start(module: str, *args: str) -> PyProc:
        proc = PyProc(module, *args)
        started.append(proc)
        return proc

    yield _start
    for proc in reversed(started):
        proc.stop()
