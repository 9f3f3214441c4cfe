"""The clock offset test aid itself: one shared clock for the test process and its children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_run_and_its_children_read_the_chosen_clock(tmp_path) -> None:
    probe = (
        "import os, subprocess, sys, time\n"
        "sys.path.insert(0, os.getcwd())\n"
        "import tests.conftest\n"
        "child = subprocess.run([sys.executable, '-c', 'import time; print(time.monotonic())'],"
        " capture_output=True, text=True, check=True).stdout\n"
        "print(time.monotonic(), float(child), time.monotonic_ns())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTCP_TEST_CLOCK")}
    for reads_s in (300, 40_000):
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
            env={**env, "RTCP_TEST_CLOCK_READS_S": str(reads_s)}, timeout=60,
        ).stdout.split()
        here, child, here_ns = float(out[0]), float(out[1]), int(out[2])
        assert reads_s <= here < reads_s + 60  # a generous minute of start-up
        assert reads_s <= child <= here  # the child shares the clock (read before this one)
        assert reads_s * 10**9 <= here_ns < (reads_s + 60) * 10**9
