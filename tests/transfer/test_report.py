"""rtcp.transfer.report: the interval arithmetic of `rtcp send --interval`, on a fake clock."""

from __future__ import annotations

import pytest

from rtcp.core.connection import ConnectionStats
from rtcp.errors import UsageError
from rtcp.transfer import report


class FakeApp:
    """What IntervalReport reads of a send (tree.TreeApps): its clock, start, acked bytes,
    and the connections' sample."""

    def __init__(self) -> None:
        self.now = 100.0
        self.started = 100.0
        self.file_bytes_acked = 0
        self.succeeded = False
        self.finished_at = None
        self.stats = ConnectionStats(cwnd_bytes=14_000, srtt_s=0.002)

    def clock(self) -> float:
        return self.now

    def connection_sample(self):
        return self.stats.retransmissions, self.stats.cwnd_bytes, self.stats.srtt_s


def _run(lines: list[str] | None):
    app = FakeApp()
    rep = report.IntervalReport(1.0, None if lines is None else lines.append)
    # the driver loop calls the hook every 10 ms; 1 MB acked per second, 2 retransmissions
    for step in range(1, 251):
        app.now = 100.0 + step / 100
        app.file_bytes_acked = step * 10_000
        app.stats.retransmissions = step // 100 * 2
        rep(app, app.now)
    app.succeeded, app.finished_at = True, app.now
    app.now += 0.5  # the FIN exchange after the verdict: not part of the transfer's time
    rep.finish()
    return rep


def test_intervals_add_up_and_the_last_partial_one_is_reported():
    rep = _run(None)
    spans = [(round(i.start_s * 1000), round(i.end_s * 1000)) for i in rep.intervals]
    assert spans == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert [i.bytes for i in rep.intervals] == [1_000_000, 1_000_000, 500_000]
    assert [i.retransmissions for i in rep.intervals] == [2, 2, 0]
    assert rep.intervals[0].cwnd_bytes == 14_000 and rep.intervals[0].srtt_ms == 2.0
    assert [round(d["bytes_per_s"]) for d in rep.to_json()] == [1_000_000] * 3


def test_lines_header_intervals_separator_and_sum():
    lines: list[str] = []
    _run(lines)
    assert lines[0] == report.HEADER
    assert lines[1].split()[:5] == ["0.00-1.00", "s", "1.0", "MB", "1.0"]
    assert "(8.00 Mbit/s)" in lines[1] and lines[1].endswith("2.000 ms")
    assert lines[-2] == report.SEPARATOR
    assert lines[-1].split()[:4] == ["0.00-2.50", "s", "2.5", "MB"] and lines[-1].endswith("sum")
    assert len(lines) == 6


def test_nothing_reported_before_the_transfer_started():
    rep = report.IntervalReport(1.0, print)
    rep.finish()
    assert rep.intervals == []


@pytest.mark.parametrize("value", ["1", "50ms", "-1s"])
def test_bad_intervals(value):
    with pytest.raises(UsageError, match="--interval"):
        report.parse_interval(value)


def test_rate_cap_units_are_the_proxys():
    assert report.parse_rate_cap("10mbit") == 1_250_000
    assert report.parse_rate_cap("2MBps") == 2_000_000
    for bad in ("10", "100bit", "-1mbit"):
        with pytest.raises(UsageError, match="--rate"):
            report.parse_rate_cap(bad)


def test_a_late_sample_does_not_shift_the_next_interval_ends():
    app = FakeApp()
    rep = report.IntervalReport(1.0)
    for t in (0.5, 1.3, 1.9, 2.05, 3.6):  # a busy loop samples late now and then
        app.now = 100.0 + t
        rep(app, app.now)
    ends = [round(i.end_s * 1000) for i in rep.intervals]
    assert ends == [1300, 2050, 3600]  # each interval ends at the first sample past 1, 2, 3 s


def test_recv_json_objects():
    from rtcp.errors import ExitCode
    from rtcp.transfer.receiver import ReceiveResult

    assert report.listening_json("127.0.0.1:9", None) == {
        "event": "listening", "address": "127.0.0.1:9"
    }
    assert report.listening_json("[::1]:9", "7-a-b-c")["code"] == "7-a-b-c"
    ok = ReceiveResult(
        peer="127.0.0.1:5", name="a", size=1000, bytes_received=1000, seconds=0.5,
        exit_code=ExitCode.OK, verified=True, reason="verified", sha256="ab", path="out/a",
        stats={"srtt_s": 0.002, "segments_received": 3},
    )
    obj = report.receive_json(ok)
    assert obj["event"] == "transfer" and obj["file"] == "out/a" and obj["bytes"] == 1000
    assert obj["goodput_bytes_per_s"] == 2000 and obj["rtt_ms"] == 2.0
    assert obj["error"] is None and obj["exit_code"] == 0 and obj["segments_received"] == 3
    failed = ReceiveResult(
        peer="127.0.0.1:5", name=None, size=None, bytes_received=10, seconds=0.0,
        exit_code=ExitCode.REFUSED, verified=False, reason="bad name",
    )
    obj = report.receive_json(failed)
    assert obj["bytes"] == 10 and obj["error"] == "bad name" and obj["exit_code"] == 8
    assert obj["rtt_ms"] is None and obj["stats"] == {} and obj["goodput_bytes_per_s"] == 0.0


def test_a_parallel_send_sums_retransmissions_and_cwnd_and_averages_srtt():
    """--interval over --parallel: one sample for the whole send (tree.TreeApps)."""
    from types import SimpleNamespace

    from rtcp.transfer.tree import TreeApps

    def app(retx, cwnd, srtt, *, done=False):
        stats = ConnectionStats(retransmissions=retx, cwnd_bytes=cwnd, srtt_s=srtt)
        conn = SimpleNamespace(stats=stats, refresh_stats=lambda: stats)
        return SimpleNamespace(
            handle=SimpleNamespace(conn=conn), established=True, done=done, clock=lambda: 0.0,
            started=0.0,
        )

    apps = [app(2, 10_000, 0.002), app(3, 30_000, 0.004), app(5, 99_000, 0.5, done=True)]
    retx, cwnd, srtt = TreeApps(apps).connection_sample()
    assert retx == 10  # every connection's, the finished one's too
    assert cwnd == 40_000 and round(srtt * 1000) == 3  # those still sending
    for a in apps:
        a.done = True
    assert TreeApps(apps).connection_sample()[1] == 139_000  # at the end: their last values
