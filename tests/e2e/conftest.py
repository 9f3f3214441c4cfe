"""Helpers for end-to-end tests: real `rtcp` processes on ephemeral loopback ports.

Every wait is on an event (a line, a file, a process exit) with a deadline; every process
started is stopped in the fixture's teardown (terminate, then kill).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RTCP = str(Path(sys.executable).parent / "rtcp")
_LISTENING = re.compile(r"^listening on (\S+):(\d+)$")


def proxy_available() -> bool:
    try:
        import rtcp.proxy.command  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not there yet"
        return False
    return True


needs_proxy = pytest.mark.skipif(
    not proxy_available(), reason="rtcp.proxy.command does not import (proxy not there yet)"
)


class Proc:
    """A running rtcp process whose stdout lines and stderr are collected by threads
    (`prefix` runs it some other way: tests/netns runs it in a namespace)."""

    def __init__(self, args: list[str], *, cwd=None, env=None, prefix: tuple[str, ...] = (RTCP,)):
        self.args = args
        self.popen = subprocess.Popen(
            [*prefix, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            cwd=cwd,
            env=env,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self.stderr_chunks: list[str] = []
        self._t_out = threading.Thread(target=self._pump_out, daemon=True)
        self._t_err = threading.Thread(target=self._pump_err, daemon=True)
        self._t_out.start()
        self._t_err.start()

    def _pump_out(self) -> None:
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def _pump_err(self) -> None:
        for chunk in self.popen.stderr:
            self.stderr_chunks.append(chunk)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_chunks)

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str | re.Pattern, timeout: float = 10.0) -> re.Match:
        """The first new stdout line matching pattern (waiting up to timeout seconds)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line matching {rx.pattern!r} within {timeout} s from {self.args}; "
                    f"stdout={self.stdout!r} stderr={self.stderr!r}"
                )
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"{self.args} ended (rc={self.popen.wait()}) without a line matching "
                    f"{rx.pattern!r}; stdout={self.stdout!r} stderr={self.stderr!r}"
                )
            m = rx.search(line)
            if m:
                return m

    def wait_port(self, timeout: float = 10.0) -> int:
        return int(self.wait_line(_LISTENING, timeout).group(2))

    def wait(self, timeout: float) -> int:
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.args} still running after {timeout} s; stderr={self.stderr!r}"
            ) from None
        self._t_out.join(timeout=5)
        self._t_err.join(timeout=5)
        return rc

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGCONT)  # in case a test left it stopped
            except ProcessLookupError:
                pass
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@pytest.fixture
def spawn():
    """spawn(args) -> Proc; every process is stopped at teardown."""
    started: list[Proc] = []

    def _spawn(args: list[str], **kw) -> Proc:
        proc = Proc([str(a) for a in args], **kw)
        started.append(proc)
        return proc

    yield _spawn
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def receiver(spawn, tmp_path):
    """receiver(*extra, out=...) -> (Proc, port, out_dir): an `rtcp recv` on 127.0.0.1:0."""

    def _start(*extra, out: Path | None = None):
        out_dir = out if out is not None else tmp_path / "out"
        proc = spawn(["recv", "--listen", "127.0.0.1:0", "--out", out_dir, *extra])
        return proc, proc.wait_port(), out_dir

    return _start


@pytest.fixture
def proxy(spawn):
    """proxy(upstream_port, *impairments) -> (Proc, port)."""

    def _start(upstream_port: int, *impair):
        proc = spawn(
            [
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                f"127.0.0.1:{upstream_port}",
                *impair,
            ]
        )
        return proc, proc.wait_port()

    return _start


def make_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of pseudo-random bytes (fast, reproducible, incompressible enough)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def send(file: Path, port: int, *extra, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run `rtcp send` to completion (bounded by timeout)."""
    return subprocess.run(
        [RTCP, "send", str(file), "--to", f"127.0.0.1:{port}", *map(str, extra)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        check=False,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.01):
    """Poll a condition on the file system or a process until true (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
