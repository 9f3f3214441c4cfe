"""`rtcp plot`: the time-sequence graph (needs the optional matplotlib; skipped without it)."""

from __future__ import annotations

import builtins
import sys

import pytest

from rtcp.errors import ExitCode, UsageError
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
    assert cwnd_ax.get_legend_handles_labels()[1] == ["cwnd", "bytes in flight"]


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
