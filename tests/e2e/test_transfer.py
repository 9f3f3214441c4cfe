"""End to end: `rtcp recv`, `rtcp send` and `rtcp proxy` as real processes on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from rtcp.core.config import DEFAULT_MAX_DATAGRAM_BYTES, DEFAULT_MSS_BYTES
from tests.e2e.conftest import make_file, needs_proxy, send, wait_for

MSS = DEFAULT_MSS_BYTES  # the first segments' payload
BIG_MSS = DEFAULT_MAX_DATAGRAM_BYTES - 28 - 10  # the payload once path MTU discovery raised it
# --mtu keeps datagrams at the base size (path MTU discovery finds nothing larger), so the
# file crosses in many small segments and every impairment hits many of them.
IMPAIRED = [
    "--loss",
    "5%",
    "--reorder",
    "5%",
    "--duplicate",
    "2%",
    "--corrupt",
    "2%",
    "--delay",
    "2ms",
    "--seed",
    "1",
    "--mtu",
    "1400",
]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(out) -> list[str]:
    names = os.listdir(out) if out.exists() else []
    return sorted(n for n in names if n.startswith(".rtcp-tmp-"))


def partials(out) -> list[str]:
    """The partials an interrupted transfer left for a resume (the data and its sidecar)."""
    return sorted(n for n in temporaries(out) if n.startswith(".rtcp-tmp-partial-"))


def assert_one_error_line(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rtcp: error: "), stderr
    assert "Traceback" not in stderr


def test_clean_path_multi_megabyte_with_json(receiver, tmp_path):
    recv, port, out = receiver()
    src = make_file(tmp_path / "big.bin", 8 * 1024 * 1024 + 123)
    res = send(src, port, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    digest = sha256(src)
    assert report["file"].endswith("big.bin")
    assert report["bytes"] == src.stat().st_size
    assert report["sha256"] == digest and report["verified"] is True
    assert report["seconds"] > 0 and report["goodput_bytes_per_s"] > 0
    assert report["segments_sent"] >= src.stat().st_size // BIG_MSS
    assert report["retransmissions"] >= 0 and report["rtt_ms"] > 0
    assert report["exit_code"] == 0 and report["error"] is None
    assert res.stderr == ""  # --json: no human summary anywhere
    assert sha256(out / "big.bin") == digest
    line = recv.wait_line(r"big\.bin", timeout=5).string
    assert "verified" in line and digest in line
    assert temporaries(out) == []
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0


def test_small_and_edge_sizes_and_names(receiver, tmp_path):
    recv, port, out = receiver()
    cases = {
        "empty": 0,
        "one": 1,
        "mss-1": MSS - 1,
        "mss": MSS,
        "mss+1": MSS + 1,
        "two-mss": 2 * MSS,
        "big-mss": BIG_MSS,
        "big-mss+1": BIG_MSS + 1,
        "with space.txt": 1000,
        "café über ñ 日本.txt": 5000,
    }
    for i, (name, size) in enumerate(cases.items()):
        src = make_file(tmp_path / name, size, seed=i)
        res = send(src, port, "--quiet")
        assert res.returncode == 0, (name, res.stderr)
        assert res.stderr == ""  # --quiet: no summary
        assert (out / name).read_bytes() == src.read_bytes(), name
    assert sorted(os.listdir(out)) == sorted(cases)
    recv.signal(signal.SIGINT)
    assert recv.wait(10) == 0
    assert len([line for line in recv.lines if "verified" in line]) == len(cases)


def test_four_concurrent_senders(receiver, spawn, tmp_path):
    recv, port, out = receiver()
    files = [make_file(tmp_path / f"c{i}.bin", 1_500_000 + i, seed=i) for i in range(4)]
    senders = [spawn(["send", f, "--to", f"127.0.0.1:{port}", "--json", "--quiet"]) for f in files]
    for s in senders:
        assert s.wait(30) == 0, s.stderr
        assert json.loads(s.stdout)["verified"] is True
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
    for _ in files:
        recv.wait_line("verified", timeout=5)


def test_file_exists_refused_then_force(receiver, tmp_path):
    recv, port, out = receiver("--once")
    out.mkdir(parents=True, exist_ok=True)
    (out / "doc.txt").write_text("precious")
    src = make_file(tmp_path / "doc.txt", 4 * 1024 * 1024)
    res = send(src, port, "--json")
    assert res.returncode == 6, res.stderr
    assert_one_error_line(res.stderr)
    assert "exists" in res.stderr
    report = json.loads(res.stdout)
    assert report["stats"]["data_bytes_sent"] < 64 * 1024  # refused right after the header
    assert report["verified"] is False and report["exit_code"] == 6 and report["error"]
    assert (out / "doc.txt").read_text() == "precious"
    assert recv.wait(10) == 6  # --once: the first transfer's status
    assert temporaries(out) == []

    recv2, port2, _ = receiver("--force", "--once", out=out)
    res = send(src, port2)
    assert res.returncode == 0, res.stderr
    assert (out / "doc.txt").read_bytes() == src.read_bytes()
    assert recv2.wait(10) == 0


def test_local_errors_are_one_line(tmp_path, receiver):
    _recv, port, _out = receiver()
    res = send(tmp_path / "missing.bin", port)
    assert res.returncode == 7
    assert_one_error_line(res.stderr)
    res = send("/dev/null", port)  # a device (a folder is sent as a tree)
    assert res.returncode == 7
    assert_one_error_line(res.stderr)
    f = make_file(tmp_path / "x", 10)
    for bad in (
        ["--to", "nohostport:"],
        ["--timeout", "soon"],
        ["--window", "1"],
        ["--cc", "nonsense"],
        ["--mss", "0"],
    ):
        res = send(f, port, *bad)
        assert res.returncode == 2, (bad, res.stderr)
        assert_one_error_line(res.stderr)


def test_no_receiver_times_out(tmp_path):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # a port where nobody answers
    port = s.getsockname()[1]
    try:
        f = make_file(tmp_path / "x", 1000)
        start = time.monotonic()
        res = send(f, port, "--timeout", "1.5s")
        elapsed = time.monotonic() - start
    finally:
        s.close()
    assert res.returncode == 3, res.stderr
    assert_one_error_line(res.stderr)
    assert elapsed < 6


@needs_proxy
def test_impaired_path(receiver, proxy, tmp_path):
    _recv, port, out = receiver()
    # The receiver ACKs once per batch it reads, so even 4 MB at 1400-byte datagrams brings
    # only about a hundred ACKs back: 10% of them corrupted and 10% duplicated on the way down
    # make sure the sender meets both (2% each would miss all of them in ~2% of runs).
    _proxy, pport = proxy(
        port, *IMPAIRED, "--mtu", "1400", "--corrupt-down", "10%", "--duplicate-down", "10%"
    )
    src = make_file(tmp_path / "impaired.bin", 4_000_000, seed=7)
    res = send(src, pport, "--json", timeout=40)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] is True and report["retransmissions"] > 0
    assert report["segments_sent"] > 4_000_000 // MSS
    assert report["stats"]["checksum_failures"] + report["stats"]["duplicate_segments"] > 0
    assert sha256(out / "impaired.bin") == sha256(src)


@needs_proxy
def test_receiver_killed_mid_transfer(receiver, proxy, tmp_path):
    recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "40mbit")  # ~5 MB/s: time to kill it midway
    src = make_file(tmp_path / "victim.bin", 20 * 1024 * 1024)
    from tests.e2e.conftest import Proc

    sender = Proc(["send", str(src), "--to", f"127.0.0.1:{pport}", "--timeout", "3s"])
    try:

        def partial():
            return any((out / n).stat().st_size > 500_000 for n in temporaries(out))

        wait_for(partial, 15, "a partial temporary at the receiver")
        recv.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        recv.wait(5)
        rc = sender.wait(15)
        assert time.monotonic() - killed_at < 3 + 3  # the --timeout plus some slack
        assert rc == 3, sender.stderr
        assert_one_error_line(sender.stderr)
    finally:
        sender.stop()
    assert not (out / "victim.bin").exists()
    # the next receiver removes the dead one's temporary
    receiver(out=out)  # cleans the folder up when it starts
    assert temporaries(out) == []
    assert not (out / "victim.bin").exists()


@needs_proxy
def test_receiver_sigterm_aborts_open_transfer(receiver, proxy, spawn, tmp_path):
    recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "40mbit")
    src = make_file(tmp_path / "aborted.bin", 20 * 1024 * 1024)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}"])
    wait_for(lambda: temporaries(out), 15, "the transfer to start")
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0
    # nothing under its name; what arrived is kept for a resume (the partial and its sidecar)
    assert len(partials(out)) == 2 and temporaries(out) == partials(out)
    assert not (out / "aborted.bin").exists()
    assert sender.wait(15) == 4, sender.stderr  # reset by the receiver
    assert_one_error_line(sender.stderr)


@needs_proxy
def test_proxy_paused_then_resumed(receiver, proxy, spawn, tmp_path):
    _recv, port, out = receiver()
    prox, pport = proxy(port, "--rate", "80mbit", "--delay", "1ms")
    src = make_file(tmp_path / "paused.bin", 12 * 1024 * 1024)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}", "--json", "--quiet"])
    wait_for(
        lambda: any((out / n).stat().st_size > 1_000_000 for n in temporaries(out)),
        15,
        "the transfer to be under way",
    )
    prox.signal(signal.SIGSTOP)
    time.sleep(3)  # the outage itself (inherent to this test)
    assert sender.popen.poll() is None  # still trying, not failed
    prox.signal(signal.SIGCONT)
    assert sender.wait(30) == 0, sender.stderr
    assert json.loads(sender.stdout)["verified"] is True
    assert sha256(out / "paused.bin") == sha256(src)


@needs_proxy
def test_sender_interrupted_resets_the_transfer(receiver, proxy, spawn, tmp_path):
    recv, port, out = receiver()
    _proxy, pport = proxy(port, "--rate", "40mbit")
    src = make_file(tmp_path / "interrupted.bin", 20 * 1024 * 1024)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}"])
    wait_for(lambda: temporaries(out), 15, "the transfer to start")
    sender.signal(signal.SIGTERM)
    assert sender.wait(10) == 130
    assert_one_error_line(sender.stderr)
    assert "interrupted" in sender.stderr
    line = recv.wait_line("interrupted.bin", timeout=10).string  # the reset, not a timeout
    assert "failed" in line and "reset" in line
    assert len(partials(out)) == 2 and temporaries(out) == partials(out)  # kept for a resume
    assert not (out / "interrupted.bin").exists()
