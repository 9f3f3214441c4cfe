"""Receivers that lie: an OK verdict with the wrong SHA-256, a zero window with a verdict that
drips for ever. The sender must fail them with the right exit code, and never say verified."""

from __future__ import annotations

import json

from tests.e2e.conftest import make_file, send


def test_ok_verdict_with_a_wrong_digest_is_a_mismatch(pyproc, tmp_path):
    evil = pyproc("tests.hostile.evil_receiver", "lying")
    port = evil.wait_port()
    src = make_file(tmp_path / "a.bin", 300_000)
    r = send(src, port, "--json", "--timeout", "10s")
    assert r.returncode == 5, r.stderr
    result = json.loads(r.stdout)
    assert result["verified"] is False
    assert "not ours" in result["error"]
    assert "verified" not in r.stderr.replace("not verified", "")


def test_dripping_verdict_under_zero_window_times_out(pyproc, tmp_path):
    evil = pyproc("tests.hostile.evil_receiver", "dripping")
    port = evil.wait_port()
    src = make_file(tmp_path / "b.bin", 1_000_000)
    # the drip would last 1000 * 0.3 s: the sender gives up after --timeout without progress
    r = send(src, port, "--timeout", "3s", timeout=120)
    assert r.returncode == 3, r.stderr
    assert "no progress" in r.stderr


def test_verdict_length_is_bounded():
    """A verdict announcing more than MAX_MESSAGE_BYTES is refused at its header, at once."""
    from rtcp.transfer import protocol as proto
    from rtcp.transfer import records as rec

    for head in (
        bytes((rec.REPLY_VERDICT,)) + (0).to_bytes(4, "big") + bytes((0,)),  # entry 0's
        bytes((0,)),  # about the whole connection
    ):
        events = rec.ReplyParser().feed(head + (proto.MAX_MESSAGE_BYTES + 1).to_bytes(2, "big"))
        assert isinstance(events[0], proto.ProtocolFailure)
        assert f"{proto.MAX_MESSAGE_BYTES + 1} bytes" in events[0].message
