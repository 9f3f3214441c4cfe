"""Child processes for the benchmark: start, read "listening on", reap with exact resource usage.

Each child is reaped with os.wait4, which returns the kernel's own account of the process: CPU
seconds (user + system) and peak RSS over its whole life, exact even for a process that exits on
its own between two samples. Where wait4 is missing, psutil samples every few milliseconds stand
in. Every child is stopped (SIGTERM, then SIGKILL) when the Processes context closes, whatever
happened: the benchmark never leaves a stray process.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil

_LISTENING = re.compile(r"listening on (?P<host>\[[^\]]+\]|[^\s]+):(?P<port>\d+)\s*$")
POLL_INTERVAL_S = 0.005
PSUTIL_SAMPLE_INTERVAL_S = 0.05


class BenchError(Exception):
    """A run could not be carried out (a process did not start, hung or failed)."""


def rtcp_cli() -> list[str]:
    """The `rtcp` console script next to this interpreter, else on PATH, else via the module."""
    here = Path(sys.executable).parent / ("rtcp.exe" if os.name == "nt" else "rtcp")
    if here.exists():
        return [str(here)]
    import shutil

    found = shutil.which("rtcp")
    if found:
        return [found]
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'rtcp'; from rtcp.cli import main; main()",
    ]


def role_cli(role: str) -> list[str]:
    """A ceiling piece (rtcp.bench.ceilings) as its own interpreter."""
    return [sys.executable, "-m", "rtcp.bench.ceilings", role]


class Child:
    """One child process, its stdout lines (read by a thread) and, once reaped, its usage."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.lines: list[str] = []
        self.returncode: int | None = None
        self.cpu_s: float | None = None  # user + system over the whole life, once reaped
        self.cpu_ready_s: float | None = None  # at "listening on" (start-up cost, subtracted)
        self.maxrss_bytes: int | None = None
        self.exited_at: float | None = None
        self._sampled_cpu_s: float | None = None
        self._sampled_rss_bytes = 0
        self._next_sample = 0.0
        self._line_event = threading.Event()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.started_at = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            self._stderr.close()
            raise BenchError(f"cannot start {name} ({args[0]}): {exc}") from None
        try:
            self._ps: psutil.Process | None = psutil.Process(self.proc.pid)
        except psutil.Error:
            self._ps = None
        self._reader = threading.Thread(target=self._read, name=f"bench-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._line_event.set()
        self._line_event.set()

    def stderr_text(self, limit: int = 1500) -> str:
        try:
            self._stderr.seek(0)
            data = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return data[-limit:].strip()

    def describe_failure(self, what: str) -> str:
        err = self.stderr_text()
        tail = f": {err}" if err else ""
        return f"{self.name} {what} (exit {self.returncode}){tail}"

    def wait_listening(self, timeout_s: float = 20.0) -> tuple[str, int]:
        """Wait for the first stdout line, "listening on HOST:PORT"; note the CPU spent so far."""
        deadline = time.monotonic() + timeout_s
        while not self.lines:
            if self.poll() and not self.lines:
                self._reader.join(1.0)
                if not self.lines:
                    raise BenchError(self.describe_failure("exited before listening"))
            if time.monotonic() >= deadline:
                raise BenchError(f"{self.name} printed nothing within {timeout_s:.0f} s")
            self._line_event.wait(0.02)
        match = _LISTENING.search(self.lines[0])
        if not match:
            raise BenchError(f"{self.name}: unexpected first line {self.lines[0]!r}")
        if self._ps is not None:
            try:
                times = self._ps.cpu_times()
                self.cpu_ready_s = times.user + times.system
            except psutil.Error:
                self.cpu_ready_s = None
        return match.group("host").strip("[]"), int(match.group("port"))

    def _sample(self) -> None:
        """psutil fallback for platforms without wait4 (and a cross-check of it)."""
        now = time.monotonic()
        if self._ps is None or now < self._next_sample:
            return
        self._next_sample = now + PSUTIL_SAMPLE_INTERVAL_S
        try:
            with self._ps.oneshot():
                times = self._ps.cpu_times()
                rss = self._ps.memory_info().rss
        except psutil.Error:
            return
        self._sampled_cpu_s = times.user + times.system
        self._sampled_rss_bytes = max(self._sampled_rss_bytes, rss)

    def poll(self) -> bool:
        """Reap the child if it exited (recording its usage); True once it has."""
        if self.returncode is not None:
            return True
        if not hasattr(os, "wait4"):
            self._sample()
            code = self.proc.poll()
            if code is None:
                return False
            self._finish(code, self._sampled_cpu_s, self._sampled_rss_bytes or None)
            return True
        try:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            self._finish(-1, self._sampled_cpu_s, self._sampled_rss_bytes or None)
            return True
        if pid == 0:
            return False
        rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
        self._finish(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, rss)
        return True

    def _finish(self, code: int, cpu_s: float | None, rss_bytes: int | None) -> None:
        self.returncode = code
        self.proc.returncode = code  # subprocess must not wait for it again
        self.exited_at = time.monotonic()
        self.cpu_s = cpu_s
        self.maxrss_bytes = rss_bytes

    def wait(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for the child to exit; True if it did."""
        deadline = time.monotonic() + timeout_s
        while not self.poll():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)
        self._reader.join(2.0)
        return True

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait up to grace_s, then SIGKILL: the child is gone when this returns."""
        if not self.poll():
            try:
                self.proc.send_signal(signal.SIGTERM)
            except (ProcessLookupError, OSError):
                pass
            if not self.wait(grace_s):
                try:
                    self.proc.kill()
                except (ProcessLookupError, OSError):
                    pass
                self.wait(5.0)
        self._reader.join(2.0)
        if self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except OSError:
                pass
        try:
            self._stderr.close()
        except OSError:
            pass

    def net_cpu_s(self) -> float | None:
        """CPU seconds after start-up: total minus what it had used when it said "listening"."""
        if self.cpu_s is None:
            return None
        return max(0.0, self.cpu_s - (self.cpu_ready_s or 0.0))

    def last_json_line(self) -> dict[str, Any] | None:
        import json

        for line in reversed(self.lines):
            text = line.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
        return None


class Processes:
    """Context manager owning every child of one run; all are stopped at exit, newest first."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, args, env=env)
        self.children.append(child)
        return child

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        pending: BaseException | None = None
        for child in reversed(self.children):
            try:
                child.stop(grace_s=3.0)
            except BaseException as exc:  # noqa: BLE001 - re-raised once the others are stopped
                with contextlib.suppress(BaseException):
                    child.proc.kill()
                    child.wait(2.0)
                pending = pending or exc
        if pending is not None:
            raise pending
