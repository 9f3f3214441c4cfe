"""The receiver's lines about refused handshakes: at most one per interval, and none lost."""

from __future__ import annotations

from rtcp.transfer.keys import REFUSED_LOG_INTERVAL_S, RefusedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_within_the_interval_are_counted_in_the_next_line(capsys):
    clock = _Clock()
    log = RefusedLog(clock)
    log(("198.18.0.2", 4000), "a sender with another key")
    log(("198.18.0.3", 4001), "a sender without a key")
    log(("198.18.0.4", 4002), "a sender without a key")
    clock.now += REFUSED_LOG_INTERVAL_S
    log(("fd00::5", 4003), "a sender with another key")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "rtcp: refused a handshake from 198.18.0.2:4000: a sender with another key",
        (
            "rtcp: refused a handshake from [fd00::5]:4003: a sender with another key"
            " (and 2 more since the last line)"
        ),
    ]
    assert log.count == 4


def test_refusals_that_no_line_told_are_told_at_exit(capsys):
    log = RefusedLog(_Clock())
    log(("198.18.0.2", 4000), "a sender with another key")
    log.flush()  # nothing left to tell
    log(("198.18.0.3", 4001), "a sender without a key")
    log.flush()
    log.flush()
    assert capsys.readouterr().err.splitlines() == [
        "rtcp: refused a handshake from 198.18.0.2:4000: a sender with another key",
        "rtcp: refused 1 more handshake since the last line",
    ]


def test_quiet_prints_nothing(capsys):
    log = RefusedLog(_Clock(), quiet=True)
    log(("198.18.0.2", 4000), "a sender with another key")
    log.flush()
    assert capsys.readouterr().err == ""
    assert log.count == 1
