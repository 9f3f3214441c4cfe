"""Reports while a transfer runs (iperf3's habits): `rtcp send --interval`, `rtcp send --rate`
and `rtcp recv --json`, with real processes. No timing assertions: a rate cap (the proxy's or
the sender's own) makes each transfer last several intervals whatever the machine's speed."""

from __future__ import annotations

import itertools
import json
import re
import signal

from tests.e2e.conftest import make_file, needs_proxy, send
from tests.e2e.test_transfer import assert_one_error_line, sha256

INTERVAL_LINE = re.compile(r"^\s*(\d+\.\d\d)-(\d+\.\d\d) s\s+\S+ [kMG]?B\s+\S+ [kMG]?B/s ")
BIG_SEGMENT_BYTES = 65507  # path MTU discovery's largest datagram on loopback


def _check_intervals(intervals: list[dict], size: int) -> None:
    assert len(intervals) >= 2, intervals
    assert sum(i["bytes"] for i in intervals) == size
    assert intervals[0]["start_s"] == 0
    for before, after in itertools.pairwise(intervals):
        assert after["start_s"] == before["end_s"]  # contiguous, no gap, no overlap
    for i in intervals:
        assert i["end_s"] >= i["start_s"] and i["retransmissions"] >= 0
        assert i["cwnd_bytes"] > 0


@needs_proxy
def test_interval_lines_and_json_through_a_rate_limited_proxy(receiver, proxy, tmp_path):
    _recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "8mbit")  # 1 MB/s: 0.6 s at least, 3 intervals
    src = make_file(tmp_path / "a.bin", 600_000)
    res = send(src, pport, "--interval", "200ms")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["interval", "transfer", "rate", "retx", "cwnd", "srtt"]
    intervals = [line for line in lines if INTERVAL_LINE.match(line) and "sum" not in line]
    assert len(intervals) >= 2, res.stdout
    total = [line for line in lines if line.endswith("  sum")]
    assert len(total) == 1 and total[0].split()[0].startswith("0.00-"), res.stdout
    assert "600.0 kB" in total[0]
    assert lines.index(total[0]) < lines.index(f"sent a.bin to 127.0.0.1:{pport}")
    # --json: the same intervals as a list, and nothing else on stdout
    (out / "a.bin").unlink()
    res = send(src, pport, "--interval", "200ms", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    _check_intervals(report["intervals"], 600_000)
    assert report["intervals"][-1]["end_s"] >= report["seconds"] - 1e-6


def test_rate_caps_the_senders_own_rate(receiver, tmp_path):
    _recv, port, out = receiver()
    size = 600_000
    cap = 500_000  # 4mbit in bytes/s: at least 1.2 s, whatever the machine
    src = make_file(tmp_path / "r.bin", size)
    res = send(src, port, "--rate", "4mbit", "--interval", "200ms", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and sha256(out / "r.bin") == sha256(src)
    _check_intervals(report["intervals"], size)
    # a bound, not a timing: paced at the cap, no more than the cap over the transfer plus
    # one segment (the first leaves at once) and the pacing's few ms of catching up
    assert size <= cap * (report["seconds"] + 0.003) + BIG_SEGMENT_BYTES


def test_intervals_of_a_tree_over_parallel_connections(receiver, tmp_path):
    """One line per interval for the whole tree, over both connections; --rate caps the
    whole send (each connection paced at half of it)."""
    from tests.e2e.test_tree import send_many

    _recv, port, out = receiver()
    src = tmp_path / "d"
    src.mkdir()
    for i in range(3):
        make_file(src / f"f{i}.bin", 200_000, seed=i)
    size, cap = 600_000, 500_000  # 4mbit: at least 1.2 s, whatever the machine
    args = ("--parallel", "2", "--rate", "4mbit", "--interval", "200ms")
    res = send_many(port, src, *args, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and report["handshakes"] == 2
    _check_intervals(report["intervals"], size)
    assert report["intervals"][-1]["end_s"] >= report["seconds"] - 1e-6
    assert size <= cap * (report["seconds"] + 0.003) + 2 * BIG_SEGMENT_BYTES
    # the human lines: the header, the intervals, the sum of the whole tree, then the summary
    for i in range(3):
        (out / "d" / f"f{i}.bin").unlink()
    res = send_many(port, src, *args)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[0].split() == ["interval", "transfer", "rate", "retx", "cwnd", "srtt"]
    total = [line for line in lines if line.endswith("  sum")]
    assert len(total) == 1 and "600.0 kB" in total[0], res.stdout
    assert lines.index(total[0]) < lines.index(f"sent 3 files and 1 folder to 127.0.0.1:{port}")


def test_bad_rate_and_interval_are_usage_errors(tmp_path):
    src = make_file(tmp_path / "x.bin", 10)
    for args in (["--rate", "10"], ["--interval", "10ms"]):  # the rest: tests/transfer
        res = send(src, 9, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert_one_error_line(res.stderr)
        assert args[0] in res.stderr


def test_recv_json_is_one_object_per_transfer(spawn, tmp_path):
    out = tmp_path / "out"
    recv = spawn(["recv", "--listen", "127.0.0.1:0", "--out", out, "--json"])
    first = json.loads(recv.wait_line(r"^\{").string)
    assert first["event"] == "listening"
    port = int(first["address"].rsplit(":", 1)[1])
    src = make_file(tmp_path / "j.bin", 300_000)
    assert send(src, port, "-q").returncode == 0
    done = json.loads(recv.wait_line(r'"event":"transfer"').string)
    assert done["name"] == "j.bin" and done["bytes"] == 300_000
    assert done["verified"] is True and done["exit_code"] == 0 and done["error"] is None
    assert done["sha256"] == sha256(src) == sha256(out / "j.bin")
    assert done["file"] == str(out / "j.bin")
    assert done["peer"].startswith("127.0.0.1:") and done["seconds"] >= 0
    assert done["stats"]["data_bytes_received"] >= 300_000
    assert done["stats"]["encrypted"] is False
    assert send(src, port, "-q").returncode == 6  # exists: a failed transfer, one object too
    refused = json.loads(recv.wait_line(r'"event":"transfer"').string)
    assert refused["verified"] is False and refused["exit_code"] == 6
    assert "exists" in refused["error"]
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0
    for line in recv.lines:  # every stdout line is a JSON object: a script can follow it
        assert isinstance(json.loads(line), dict), line
