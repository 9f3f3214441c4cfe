"""`rtcp bench --quick` end to end: it completes its rows and writes results.json.

Never asserts a timing: only that every row ran, and the shape of the JSON (and of its history
once a second run compared itself with the first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rtcp.bench.defaults import QUICK_ROWS


def _transfer_available() -> bool:
    try:
        import rtcp.transfer.command  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not there yet"
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _transfer_available(),
    reason="rtcp.transfer.command does not import (rtcp send not there yet)",
)

TIMEOUT_S = 120  # a quick run takes a few seconds; this only stops a hang


def _rtcp() -> list[str]:
    script = Path(sys.executable).parent / "rtcp"
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'rtcp'; from rtcp.cli import main; main()",
    ]


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TMPDIR=str(tmp_path))  # every file of the run, so strays are visible
    done = subprocess.run(
        [*_rtcp(), "bench", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, f"rtcp bench failed:\n{done.stdout}\n{done.stderr}"
    return done


def _strays(tmp_path: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if str(tmp_path) in cmdline and proc.pid != os.getpid():
            found.append(f"{proc.pid}: {cmdline}")
    return found


def test_quick_bench_writes_results_and_history(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = _bench(tmp_path, "--quick", "--output", str(out))
    assert not _strays(tmp_path)
    doc = json.loads(out.read_text())

    assert doc["schema"] == "rtcp-bench/1"
    assert doc["ok"] is True
    assert doc["config"]["quick"] is True
    assert doc["config"]["repeats"] == 1
    assert [row["name"] for row in doc["rows"]] == list(QUICK_ROWS)
    for row in doc["rows"]:
        assert row["ok"] is True, row["errors"]
        assert row["runs_completed"] == 1 and len(row["runs"]) == 1
        assert row["errors"] == []
        assert row["goodput_bytes_per_s"] > 0
        assert set(row["cpu_s_per_mb"]) == {"sender", "receiver", "proxy"}
        assert set(row["peak_rss_bytes"]) == {"sender", "receiver", "proxy"}
        assert row["ratio_to_relay"] > 0
        if row["kind"] == "rtcp":
            assert row["wire_overhead"] >= 1.0
            assert row["retransmissions"] >= 0
            assert row["peak_rss_bytes"]["sender"] > 0
            assert row["peak_rss_bytes"]["receiver"] > 0
    by_name = {row["name"]: row for row in doc["rows"]}
    assert by_name["rtcp-direct"]["cpu_s_per_mb"]["proxy"] is None
    assert by_name["rtcp-proxy-clean"]["peak_rss_bytes"]["proxy"] > 0
    assert by_name["rtcp-proxy-clean"]["proxy_dropped"] is not None
    assert doc["comparison"] is None
    assert len(doc["history"]) == 1
    assert doc["history"][0]["rows"].keys() == set(QUICK_ROWS)
    # the table went to stdout, with every row
    for name in QUICK_ROWS:
        assert name in done.stdout
    png = out.with_suffix(".png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists()
    else:
        assert png.stat().st_size > 0

    # a second run compares itself with the first and extends the history
    _bench(tmp_path, "--quick", "--rows", "rtcp-direct", "--output", str(out))
    assert not _strays(tmp_path)
    second = json.loads(out.read_text())
    assert [row["name"] for row in second["rows"]] == ["rtcp-direct"]
    assert len(second["history"]) == 2
    assert second["history"][0] == doc["history"][0]
    change = second["comparison"]["rows"]["rtcp-direct"]
    assert isinstance(change["goodput_change"], float)
    assert isinstance(change["regression"], bool)
    assert second["comparison"]["baseline"]["timestamp"] == doc["timestamp"]


def test_bench_rejects_an_unknown_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_rtcp(), "bench", "--rows", "no-such-row", "--output", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no-such-row" in done.stderr
    assert not (tmp_path / "r.json").exists()
