"""What the command line says (issue 11): the summary on stdout, --json alone on stdout with
every counter, help pages without type names, units and refusals, `--out` that is a file."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.e2e.conftest import RTCP, make_file, send


def run_rtcp(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RTCP, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rtcp: error: "), stderr
    return lines[0]


def test_summary_goes_to_stdout_in_si_units(receiver, tmp_path):
    _recv, port, _out = receiver()
    src = make_file(tmp_path / "a.bin", 2_500_000)
    res = send(src, port)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no terminal: no bar; the summary is the result, on stdout
    assert res.stdout.startswith("sent a.bin to 127.0.0.1:")
    assert "  size         2.5 MB (2500000 bytes)" in res.stdout
    assert re.search(r"goodput +[0-9.]+ [kMG]?B/s \(", res.stdout), res.stdout
    assert "MiB" not in res.stdout and "KiB" not in res.stdout


def test_json_alone_on_stdout_with_every_counter(receiver, tmp_path):
    _recv, port, _out = receiver()
    src = make_file(tmp_path / "b.bin", 300_000)
    res = send(src, port, "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no human summary on stderr
    report = json.loads(res.stdout)
    ssthresh = report["stats"]["ssthresh_bytes"]
    assert ssthresh is None or ssthresh < 1 << 40  # "none" is null, not 2^62
    for counter in ("unroutable", "datagrams_received", "datagrams_sent", "receive_errors"):
        assert isinstance(report["driver"][counter], int), report["driver"]
    assert "checksum_failures" in report["stats"]


@pytest.mark.parametrize("command", ["send", "recv", "proxy", "explain", "plot", "bench", ""])
def test_help_pages_show_no_type_names(command):
    res = run_rtcp(*([command] if command else []), "--help")
    assert res.returncode == 0, res.stderr
    assert not re.search(r"<(bool|str|int|float|path|list\[[^]]*\])>", res.stdout), res.stdout


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--timeout", "15"], "give a unit"),
        (["--min-rto", "200"], "give a unit"),
        (["--timeout", "-1s"], "negative"),
    ],
)
def test_send_refuses_durations_without_a_unit(tmp_path, args, why):
    src = make_file(tmp_path / "c.bin", 10)
    res = send(src, 9, *args)
    assert res.returncode == 2
    assert why in one_error_line(res.stderr)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--loss", "1"], "1% or 100%?"),
        (["--delay", "10"], "10ms or 10s?"),
        (["--jitter", "2ms"], "needs --delay"),
        (["--mtu", "20"], "header"),
        (["--rate", "-1mbit"], "positive"),
    ],
)
def test_proxy_refuses_what_cannot_be_meant(args, why):
    res = run_rtcp("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", *args)
    assert res.returncode == 2
    assert why in one_error_line(res.stderr)
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["explain", "--width", "wide", "t.jsonl"], "rtcp: error: --width: invalid integer 'wide'"),
        (["bench", "--repeats", "0"], "rtcp: error: --repeats: '0' must be at least 1"),
        (
            ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--seed", "x"],
            "rtcp: error: --seed: invalid integer 'x'",
        ),
        (["send", "f", "--to", "127.0.0.1:9", "--parallel", "99"],
         "rtcp: error: --parallel: '99' must be 1..16"),
    ],
)
def test_a_bad_count_is_one_line_exit_2(args, line):
    res = run_rtcp(*args)
    assert res.returncode == 2
    assert one_error_line(res.stderr) == line


def test_recv_out_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    res = run_rtcp("recv", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "afile"))
    assert res.returncode == 7
    assert "afile is not a directory" in one_error_line(res.stderr)
    res = run_rtcp("recv", "--listen", "127.0.0.1:0", "--out", "x", "--timeout", "30")
    assert res.returncode == 2
