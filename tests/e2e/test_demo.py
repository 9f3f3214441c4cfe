"""examples/demo.sh (make demo) on its failure paths: a process that does not start is reported
in one message, and a failed run leaves the previous demo-out/ as it was. (That the demo passes
run after run on fresh clones is checked by running it: see the README.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.sh"
DEMO_DEADLINE_S = 240

# `rtcp`, except that the second receiver (the one started with --trace) fails at once
FAKE_RTCP = """#!/bin/sh
for arg in "$@"; do
    if [ "$arg" = "--trace" ] && [ "$1" = "recv" ]; then
        echo "rtcp: error: cannot listen (test)" >&2
        exit 4
    fi
done
exec {real} "$@"
"""


def test_a_failed_demo_leaves_the_previous_demo_out_alone(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "rtcp"
    fake.write_text(FAKE_RTCP.format(real=Path(sys.executable).parent / "rtcp"))
    fake.chmod(0o755)
    previous = tmp_path / "demo-out"
    previous.mkdir()
    for name in ("send.jsonl", "recv.jsonl", "proxy.jsonl", "send.pcap", "demo-plot.png"):
        (previous / name).write_text(f"the previous run's {name}\n")
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", str(DEMO)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=DEMO_DEADLINE_S, check=False, stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert "failed to start" in done.stderr and "cannot listen (test)" in done.stderr
    assert "can't read" not in done.stderr
    for name in ("send.jsonl", "recv.jsonl", "proxy.jsonl", "send.pcap", "demo-plot.png"):
        assert (previous / name).read_text() == f"the previous run's {name}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "demo-out"]  # no leftovers
