"""A lone `rtcp send FILE` resumes as a tree's files do (format version 2): the sender killed
part way, the same file sent again carries only the rest; a changed file, or --no-resume,
starts over. The sender's own --rate makes the first run last long enough to be cut, without
a proxy; the receiver's short --timeout ends the connection of a SIGKILLed sender soon (a
SIGTERMed one resets it at once), or, with the default --timeout, the new connection takes the
silent one over."""

from __future__ import annotations

import json
import os
import signal

from tests.e2e.conftest import make_file, needs_proxy, send, wait_for

SIZE = 3 * 1024 * 1024  # at least 1 MiB: the receiver keeps its partial


def _partials(out) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith(".rtcp-tmp-partial-"))


def _held(out) -> int:
    names = [n for n in os.listdir(out) if n.startswith(".rtcp-tmp-")] if out.exists() else []
    return max((os.stat(out / n).st_size for n in names), default=0)


def _kill_part_way(spawn, src, port, out, signum=signal.SIGTERM) -> None:
    """Start sending src at 2 MB/s, stop the sender with signum once the receiver holds a
    third of it (SIGKILL: no RST, the receiver finds out by its --timeout), wait for the
    partial it keeps."""
    sender = spawn(["send", src, "--to", f"127.0.0.1:{port}", "--quiet", "--rate", "16mbit"])
    wait_for(lambda: _held(out) >= SIZE // 3, 30, "a third of the file at the receiver")
    sender.signal(signum)
    sender.wait(10)
    wait_for(lambda: len(_partials(out)) == 2, 15, "the partial and its sidecar")
    assert not (out / src.name).exists()


def test_a_lone_file_resumes_after_the_sender_was_killed(receiver, spawn, tmp_path):
    _recv, port, out = receiver("--timeout", "1s")
    src = make_file(tmp_path / "big.bin", SIZE, seed=3)
    _kill_part_way(spawn, src, port, out, signal.SIGKILL)

    res = send(src, port, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and report["name"] == "big.bin" and report["bytes"] == SIZE
    assert report["resumed_bytes"] >= SIZE // 3
    # only the rest crossed the connection (and the records around it)
    sent = report["stats"]["data_bytes_sent"]
    assert sent < SIZE - report["resumed_bytes"] + 4096 and sent < 0.7 * SIZE
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert _partials(out) == []


def test_a_file_sent_again_at_once_after_a_sigkill_takes_the_silent_connection_over(
    receiver, spawn, tmp_path
):
    """The receiver keeps its default --timeout (30 s): the new connection from the same
    address does not wait for it. Its FILE waits until the killed sender's connection has
    been silent for TAKEOVER_SILENCE_S, which ends that one (the partial kept) and answers
    the new one with an OFFER of it, whenever the new one asks."""
    recv, port, out = receiver()
    src = make_file(tmp_path / "big.bin", SIZE, seed=5)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{port}", "--quiet", "--rate", "16mbit"])
    wait_for(lambda: _held(out) >= SIZE // 3, 30, "a third of the file at the receiver")
    sender.signal(signal.SIGKILL)
    sender.wait(10)

    res = send(src, port, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and report["resumed_bytes"] >= SIZE // 3
    assert report["stats"]["data_bytes_sent"] < 0.7 * SIZE
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert _partials(out) == []
    recv.wait_line(r"failed 'big\.bin' .*: taken over by a new connection from the same address")
    recv.signal(signal.SIGTERM)
    assert recv.wait(30) == 0
    assert "takeovers 1" in recv.stderr


def test_a_changed_lone_file_and_no_resume_start_over(receiver, spawn, tmp_path):
    _recv, port, out = receiver("--timeout", "1s")
    src = make_file(tmp_path / "big.bin", SIZE, seed=4)

    # --no-resume: from byte 0, silently, though the receiver holds a partial
    _kill_part_way(spawn, src, port, out)
    res = send(src, port, "--json", "--no-resume")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and report["resumed_bytes"] == 0
    assert report["stats"]["data_bytes_sent"] >= SIZE
    assert "starting over" not in res.stderr
    assert (out / "big.bin").read_bytes() == src.read_bytes()

    # the same size and mtime, other first bytes: the prefix does not match, saying so
    (out / "big.bin").unlink()
    _kill_part_way(spawn, src, port, out)
    stamp = src.stat().st_mtime_ns
    with open(src, "r+b") as f:
        f.write(b"changed!")
    os.utime(src, ns=(stamp, stamp))
    res = send(src, port)
    assert res.returncode == 0, res.stderr
    assert "big.bin: changed since the partial on the receiver: starting over" in res.stderr
    assert "resumed" not in res.stdout and "verified     yes" in res.stdout
    assert (out / "big.bin").read_bytes() == src.read_bytes()
    assert _partials(out) == []


@needs_proxy
def test_64_mib_killed_at_60_percent_through_a_lossy_proxy_resumes_with_the_rest(
    receiver, proxy, spawn, tmp_path
):
    """The issue's case as written: SIGKILL (no RST) at 60% of 64 MiB through 1% loss; the
    second run carries under 45% of the bytes and the file is verified."""
    size = 64 * 1024 * 1024
    _recv, port, out = receiver("--timeout", "2s")
    _proxy, pport = proxy(port, "--loss", "1%", "--seed", "7")
    src = make_file(tmp_path / "big64.bin", size, seed=64)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}", "--quiet", "--rate", "200mbit"])
    wait_for(lambda: _held(out) >= 0.6 * size, 60, "60% of the file at the receiver")
    sender.signal(signal.SIGKILL)
    sender.wait(10)
    wait_for(lambda: len(_partials(out)) == 2, 15, "the partial and its sidecar")

    res = send(src, pport, "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["verified"] and report["resumed_bytes"] >= 0.55 * size
    assert report["stats"]["data_bytes_sent"] < 0.45 * size
    with open(out / src.name, "rb") as got, open(src, "rb") as want:
        while True:
            a, b = got.read(1 << 20), want.read(1 << 20)
            assert a == b
            if not a:
                break
    assert _partials(out) == []
