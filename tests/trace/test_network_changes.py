"""The proxy's live changes (proxy_change) on `rtcp explain`'s ladder and `rtcp plot`'s time
axis, at the moment they took effect."""

from __future__ import annotations

import json

import pytest

from rtcp.trace.ladder import render_ladder
from rtcp.trace.network_changes import change_label
from rtcp.trace.writer import read_trace

from .simtrace import traced_transfer


def _add_change(path, t: float, **fields) -> None:
    record = {"t": t, "role": "proxy", "event": "proxy_change", **fields}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def test_the_ladder_draws_a_change_between_the_segments_it_separates(tmp_path):
    tr = traced_transfer(tmp_path, 10_000)
    synack = next(r for r in read_trace(tr.recv) if r["event"] == "segment_sent")
    data = next(r for r in read_trace(tr.send) if r["event"] == "segment_sent" and r.get("len"))
    assert synack["t"] < data["t"]
    _add_change(tr.proxy, (synack["t"] + data["t"]) / 2, seq=1, source="api", action="set",
                summary="loss 30%")
    lines = render_ladder(tr.paths).splitlines()
    change = [i for i, line in enumerate(lines) if "network: loss 30% (api)" in line]
    before = [i for i, line in enumerate(lines) if "SYN-ACK seq=0" in line]
    after = [i for i, line in enumerate(lines) if "data seq=1 " in line]
    assert len(change) == 1 and before[0] < change[0] < after[0]


@pytest.mark.parametrize(
    ("record", "label"),
    [
        ({"source": "api", "action": "set", "summary": "loss 30%"}, "network: loss 30% (api)"),
        (
            {"source": "scenario", "step": 2, "cycle": 3, "action": "down",
             "summary": "link down both directions: partition (drop)"},
            "network: link down both directions: partition (drop) (scenario step 2, cycle 3)",
        ),
        (
            {"source": "timer", "ends": 4, "action": "set", "summary": "loss off"},
            "network: loss off (end of change 4)",
        ),
        (
            {"source": "timer", "ends": 4, "action": "set", "error": "two loss models"},
            "network: set refused (two loss models) (end of change 4)",
        ),
        ({"source": "scenario", "action": "start", "name": "wifi"},
         "network: scenario 'wifi' starts"),
    ],
)
def test_change_labels(record, label):
    assert change_label(record) == label


def test_plot_marks_each_change_on_every_graph(tmp_path):
    pytest.importorskip("matplotlib")
    from rtcp.trace.plot import extract, plot_trace

    tr = traced_transfer(tmp_path, 20_000)
    records = read_trace(tr.send)
    t0 = extract(records).t0  # the plot's time 0: the connection's first segment
    fig = plot_trace(records, marks=[(t0 + 0.05, "network: loss 30% (api)")])
    for ax in fig.axes:  # drawn 50 ms after the first segment (the axis is in ms)
        xs = [list(line.get_xdata()) for line in ax.get_lines()]
        assert any(len(x) == 2 and all(abs(v - 50.0) < 1e-6 for v in x) for x in xs)
    assert any("network: loss 30% (api)" in text.get_text() for text in fig.axes[0].texts)


def test_plot_command_takes_the_proxy_trace(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from rtcp.cli import _register, app

    _register()
    tr = traced_transfer(tmp_path, 20_000)
    _add_change(tr.proxy, 0.01, seq=1, source="api", action="set", summary="loss 30%")
    out = tmp_path / "x.svg"
    result = CliRunner().invoke(
        app, ["plot", str(tr.send), "-o", str(out), "--network", str(tr.proxy)]
    )
    assert result.exit_code == 0, result.output
    assert "network: loss 30% (api)" in out.read_text()
