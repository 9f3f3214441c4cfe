"""`rtcp plot`: the time-sequence graph (needs the optional matplotlib; skipped without it)."""

from __future__ import annotations

import builtins
import sys

import pytest

from rtcp.errors import ExitCode, UsageError
from rtcp.proxy.impair import ImpairConfig
from rtcp.trace.plot import (
    CWND_AXIS_LABEL,
    INSTALL_HINT,
    RTT_AXIS_LABEL,
    SEQ_AXIS_LABEL,
    TIME_AXIS_LABEL,
    extract,
    require_matplotlib,
)
from rtcp.trace.writer import read_trace

from .simtrace import traced_transfer


def test_series_of_a_lossy_transfer(tmp_path):
    tr = traced_transfer(tmp_path, 100_000, drop_data=(5, 40))
    s = extract(read_trace(tr.send))
    assert s.view == "sender" and s.role == "send"
    assert len(s.rtx_t) == 2 and sorted(s.rtx_lo) == [4001, 38001]  # the 40th transmission is the 39th segment
    assert s.sent_lo[0] == 1 and max(s.sent_hi) == 100_001
    assert s.ack[-1] == 100_002  # the FIN acknowledged
    assert s.sack_t and s.cwnd_t and s.srtt_t and s.flight_t
    assert all(edge >= a for edge, a in zip(s.wnd_edge, s.ack[-len(s.wnd_edge):]))
    r = extract(read_trace(tr.recv))
    assert r.view == "receiver" and len(r.sent_t) + len(r.rtx_t) >= 100


def test_plot_file_with_the_expected_axes(tmp_path):
    pytest.importorskip("matplotlib")
    from rtcp.trace.plot import plot_trace

    tr = traced_transfer(tmp_path, 100_000, drop_data=(5,))
    out = tmp_path / "graph.png"
    fig = plot_trace(read_trace(tr.send), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    seq_ax, cwnd_ax, rtt_ax = fig.axes
    assert seq_ax.get_ylabel() == SEQ_AXIS_LABEL
    assert cwnd_ax.get_ylabel() == CWND_AXIS_LABEL
    assert rtt_ax.get_ylabel() == RTT_AXIS_LABEL and rtt_ax.get_xlabel() == TIME_AXIS_LABEL
    labels = seq_ax.get_legend_handles_labels()[1]
    for label in ("segments sent", "retransmissions", "cumulative ACK", "SACKed"):
        assert label in labels
    assert any(label.startswith("receive window edge") for label in labels)
    assert cwnd_ax.get_legend_handles_labels()[1] == ["cwnd", "bytes in flight after an ACK (pipe)"]


def test_plot_command_writes_the_file(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from rtcp.cli import _register, app

    _register()
    tr = traced_transfer(tmp_path, 20_000)
    out = tmp_path / "x.svg"
    result = CliRunner().invoke(app, ["plot", str(tr.recv), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().lstrip().startswith("<?xml")


def test_without_matplotlib_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(UsageError) as info:
        require_matplotlib()
    assert str(info.value) == INSTALL_HINT and info.value.exit_code == ExitCode.USAGE

    from rtcp import cli

    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t":0,"event":"trace_start","role":"send"}\n')
    monkeypatch.setattr(sys, "argv", ["rtcp", "plot", str(trace), "-o", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "rtcp: error: plotting needs matplotlib: pip install 'rtcp[plot]'\n"


# --- what the plot says is true -----------------------------------------------------------


def test_flight_is_the_senders_own_pipe(tmp_path):
    """Not snd.nxt - snd.una: the in_flight the sender traced (RFC 6675 pipe, what cwnd
    limits), so the sender never seems to break its window."""
    tr = traced_transfer(tmp_path, 100_000, drop_data=(5, 40))
    records = read_trace(tr.send)
    s = extract(records)
    cc = [r for r in records if r["event"] == "congestion"]
    assert s.flight == [r["in_flight"] for r in cc]
    assert s.flight_t == s.cwnd_t


def test_marks_recovery_timeout_and_pmtu_raise(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3, 11), sack=False)  # fast, then RTO
    records = read_trace(tr.send)
    s = extract(records)
    assert len(s.recovery_t) == 1 and len(s.rto_t) == 1
    assert 0 < s.recovery_t[0] < s.rto_t[0] < s.end_t
    conn = s.conn
    negotiated = next(r for r in records if r["event"] == "negotiated")
    raised = {"t": s.rto_t[0], "conn": conn, "event": "pmtu",
              "datagram_bytes": 1500, "mss": negotiated["mss"] + 100}
    s = extract([*records, raised])
    assert s.pmtu_bytes == [1500]


def test_time_axis_is_the_connections_lifetime_in_ms(tmp_path):
    pytest.importorskip("matplotlib")
    from rtcp.trace.plot import plot_trace

    tr = traced_transfer(tmp_path, 50_000, drop_data=(5,))
    for path in (tr.send, tr.recv):
        records = read_trace(path)
        segments = [r["t"] for r in records if r["event"].startswith("segment_")]
        s = extract(records)
        # time 0 is the connection's first segment (the SYN, sent or received)
        assert round((s.end_t - (segments[-1] - segments[0])) * 1e6) == 0
        first = min(s.sent_t + s.ack_t + s.rtx_t)
        assert first > 0
        fig = plot_trace(records)
        seq_ax, _, rtt_ax = fig.axes
        low, high = rtt_ax.get_xlim()
        assert (round(low * 1000), round(high * 1000)) == (0, round(s.end_t * 1e6))
        assert "(ms)" in rtt_ax.get_xlabel() and "(kB)" in seq_ax.get_ylabel()
        (acks,) = [line for line in seq_ax.get_lines() if line.get_label() == "cumulative ACK"]
        assert 49 < max(acks.get_ydata()) < 52  # kB, not bytes


def test_title_names_the_scenario(tmp_path):
    pytest.importorskip("matplotlib")
    from rtcp.trace.plot import plot_trace

    tr = traced_transfer(tmp_path, 20_000, up=ImpairConfig(duplicate=0.05, delay_s=0.01))
    records = [*read_trace(tr.send), {"t": 0.0, "event": "config", "congestion_control": "reno"}]
    fig = plot_trace(records, proxy_records=read_trace(tr.proxy))
    title = fig.axes[0].get_title()
    assert "send, connection" in title and "20.0 kB sent, Reno" in title
    assert "up: delay 10 ms, duplicate 5%; down: none" in title


def test_plot_without_a_suffix_reports_the_file_it_wrote(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from rtcp import cli

    tr = traced_transfer(tmp_path, 5_000)
    out = tmp_path / "noext"
    monkeypatch.setattr(sys, "argv", ["rtcp", "plot", str(tr.send), "-o", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    written = tmp_path / "noext.png"
    assert capsys.readouterr().err == f"wrote {written}\n"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not out.exists()
