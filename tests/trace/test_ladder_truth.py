"""What `rtcp explain` draws is what happened: each end's states in its own order, one-sided
ladders that say what they cannot know, the receiver's SACK blocks, the PMTU-ACK, one trace
given twice refused, and --conn with the same default as `rtcp plot`."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtcp.cli import _register, app
from rtcp.proxy.impair import ImpairConfig
from rtcp.trace.ladder import build_ladder, default_connection, render_ladder
from rtcp.trace.writer import read_trace

from .simtrace import traced_transfer

_register()
runner = CliRunner()

STATES = {
    "CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
    "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT",
}
LEFT_COLUMN = slice(9, 23)  # the time column (9) and the left end's column (14)


def drawn_states(text: str) -> tuple[list[str], list[str]]:
    """The state names drawn beside each end's line, top to bottom."""
    left: list[str] = []
    right: list[str] = []
    for line in text.split("\n\n")[0].splitlines()[1:]:
        if "|" not in line:
            continue
        name = line[LEFT_COLUMN].strip()
        if name in STATES:
            left.append(name)
        tail = line.rsplit("|", 1)[1].strip() if line.count("|") >= 2 else ""
        if tail in STATES:
            right.append(tail)
    return left, right


def trace_states(path: Path) -> list[str]:
    changes = [r for r in read_trace(path) if r["event"] == "state_change"]
    return [changes[0]["old"]] + [r["new"] for r in changes]


# --- each end's events in its own order -----------------------------------------------------


def _write(path: Path, role: str, records: list[dict]) -> Path:
    header = {"t": 0.0, "role": role, "event": "trace_start", "format": 1, "clock_start": 50.0,
              "unix_time": 1.0e9, "pid": 1 if role == "send" else 2, "host": "h"}
    with open(path, "w") as f:
        f.writelines(json.dumps({"role": role, **rec}) + "\n" for rec in [header, *records])
    return path


def _seg(t, conn, event, flags, seq, ack, rel_seq, rel_ack, length=0, **extra) -> dict:
    return {"t": t, "conn": conn, "event": event, "flags": flags, "seq": seq, "ack": ack,
            "len": length, "window": 100, "rel_seq": rel_seq, "rel_ack": rel_ack, "sack": [],
            "pmtu_ack": None, "retransmit": None, **extra}


def _state(t, conn, old, new, cause) -> dict:
    return {"t": t, "conn": conn, "event": "state_change", "old": old, "new": new, "cause": cause}


def crossing_fins(tmp_path: Path) -> tuple[Path, Path]:
    """A handshake, then both ends close at nearly the same time: the server's FIN is still on
    its way when the client closes, so the client goes FIN-WAIT-1 -> CLOSING."""
    c, s = 11, 22  # connection ids; ISNs 1000 (client) and 5000 (server)
    send = [
        _state(0.000, c, "CLOSED", "SYN-SENT", "connect"),
        _seg(0.000, c, "segment_sent", "SYN", 1000, 0, 0, 0),
        _seg(0.020, c, "segment_received", "SYN|ACK", 5000, 1001, 0, 1),
        _state(0.020, c, "SYN-SENT", "ESTABLISHED", "recv SYN-ACK"),
        _seg(0.020, c, "segment_sent", "ACK", 1001, 5001, 1, 1),
        _state(0.045, c, "ESTABLISHED", "FIN-WAIT-1", "close"),
        _seg(0.045, c, "segment_sent", "FIN|ACK", 1001, 5001, 1, 1),
        _seg(0.050, c, "segment_received", "FIN|ACK", 5001, 1001, 1, 1),
        _state(0.050, c, "FIN-WAIT-1", "CLOSING", "recv FIN"),
        _seg(0.050, c, "segment_sent", "ACK", 1002, 5002, 2, 2),
        _seg(0.065, c, "segment_received", "ACK", 5002, 1002, 2, 2),
        _state(0.065, c, "CLOSING", "TIME-WAIT", "recv ACK of FIN"),
    ]
    recv = [
        _state(0.010, s, "LISTEN", "SYN-RECEIVED", "recv SYN"),
        _seg(0.010, s, "segment_received", "SYN", 1000, 0, 0, 0),
        _seg(0.010, s, "segment_sent", "SYN|ACK", 5000, 1001, 0, 1),
        _seg(0.030, s, "segment_received", "ACK", 1001, 5001, 1, 1),
        _state(0.030, s, "SYN-RECEIVED", "ESTABLISHED", "recv ACK of SYN"),
        _state(0.040, s, "ESTABLISHED", "FIN-WAIT-1", "close"),
        _seg(0.040, s, "segment_sent", "FIN|ACK", 5001, 1001, 1, 1),
        _seg(0.055, s, "segment_received", "FIN|ACK", 1001, 5001, 1, 1),
        _state(0.055, s, "FIN-WAIT-1", "CLOSING", "recv FIN"),
        _seg(0.055, s, "segment_sent", "ACK", 5002, 1002, 2, 2),
        _seg(0.060, s, "segment_received", "ACK", 1002, 5002, 2, 2),
        _state(0.060, s, "CLOSING", "TIME-WAIT", "recv ACK of FIN"),
    ]
    return _write(tmp_path / "send.jsonl", "send", send), _write(tmp_path / "recv.jsonl", "recv", recv)


def test_crossing_fins_keep_each_ends_state_order(tmp_path):
    send, recv = crossing_fins(tmp_path)
    text = render_ladder([send, recv])
    left, right = drawn_states(text)
    assert left == trace_states(send)  # never ESTABLISHED -> CLOSING -> FIN-WAIT-1
    assert right == trace_states(recv)
    assert left.index("FIN-WAIT-1") < left.index("CLOSING")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 10_000, "drop_data": (3,)},
        {"size": 10_000, "drop_data": (3, 11), "sack": False},
        {"size": 30_000, "up": ImpairConfig(reorder=0.3, delay_s=0.002), "seed": 2},
        {"size": 20_000, "down": ImpairConfig(loss=0.2), "seed": 5},
    ],
)
def test_simulated_transfers_keep_each_ends_state_order(tmp_path, kwargs):
    size = kwargs.pop("size")
    tr = traced_transfer(tmp_path, size, **kwargs)
    text = render_ladder(tr.paths, full=True, width=140)
    left, right = drawn_states(text)
    assert left == trace_states(tr.send)
    assert right == trace_states(tr.recv)


# --- one-sided ladders say what they can know ---------------------------------------------


def test_receiver_only_ladder_infers_and_draws_its_sack_blocks(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,))  # data seq=2001 lost once
    text = render_ladder([tr.recv])
    assert re.search(r"<-+ ACK ack=2001 SACK=3001-10002 --\|", text)  # data and FIN
    assert "late or again: retransmitted or reordered" in text  # not "retransmission"
    footer = " ".join(text.split("\n\n")[1].split())  # unwrapped
    assert "0 retransmitted" not in footer.split("recv:")[0]  # the client's line
    assert "client (no trace; what arrived at recv)" in footer
    assert "1 arrived again or late (retransmitted or reordered)" in footer
    assert "what was lost on the way is not known" in footer
    assert "10.0 kB of data" in footer  # the data that arrived, each byte once


def test_sender_only_ladder_does_not_claim_what_it_cannot_see(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,))
    footer = " ".join(render_ladder([tr.send]).split("\n\n")[1].split())
    assert "1 retransmitted (1 fast retransmit); losses not known" in footer
    assert "server (no trace; what arrived at send)" in footer


def test_the_pmtu_ack_is_drawn(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,))
    records = {p: read_trace(p) for p in (tr.send, tr.recv)}
    # the receiver's first ACK confirms a 1200-byte probe: both traces say so
    sent = [r for r in records[tr.recv] if r["event"] == "segment_sent" and r["flags"] == "ACK"]
    target = sent[0]
    target["pmtu_ack"] = 1200
    match = next(r for r in records[tr.send] if r["event"] == "segment_received"
                 and (r["seq"], r["ack"]) == (target["seq"], target["ack"])
                 and r["len"] == target["len"])
    match["pmtu_ack"] = 1200
    for path, recs in records.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for traces, width in (([tr.send, tr.recv], 140), ([tr.send, tr.recv], 100), ([tr.recv], 140)):
        text = render_ladder(traces, width=width)
        lines = text.splitlines()
        (i,) = [n for n, line in enumerate(lines) if f"<- ACK ack={target['rel_ack']}" in line
                or re.search(rf"<-+ ACK ack={target['rel_ack']} ", line)][:1]
        # on the arrow when it fits, else on the line below it
        assert "PMTU-ACK=1200" in lines[i] or "PMTU-ACK: the 1200-byte probe arrived" in lines[i + 1]


# --- the CLI: one trace given twice, --conn ---------------------------------------------------


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`rtcp ARGS` as the shell runs it (errors mapped to their exit codes)."""
    from rtcp import cli

    monkeypatch.setattr(sys, "argv", ["rtcp", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_the_same_trace_twice_is_refused(tmp_path, monkeypatch, capsys):
    tr = traced_transfer(tmp_path, 5_000)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(tr.send, copy)
    for args in ([str(tr.send), str(tr.send)], [str(tr.send), str(tr.recv), str(copy)]):
        code, out, err = run_cli(["explain", *args], monkeypatch, capsys)
        assert code == 2 and not out
        assert err.count("\n") == 1 and err.startswith("rtcp: error: "), err
        assert f"{args[-1]} is the same trace as {args[0]}: give each trace once" in err


def two_connections(tmp_path: Path) -> tuple[Path, int, int]:
    """One receiver trace holding two transfers: a small one first, then a larger one."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = traced_transfer(tmp_path / "a", 5_000, seed=1)
    second = traced_transfer(tmp_path / "b", 40_000, seed=2)
    a, b = read_trace(first.recv), read_trace(second.recv)
    merged = tmp_path / "recv.jsonl"
    merged.write_text("".join(json.dumps(r) + "\n" for r in a + b[1:]))
    return merged, default_connection(a), default_connection(b)


def test_explain_and_plot_default_to_the_same_connection_and_take_conn(
    tmp_path, monkeypatch, capsys
):
    from rtcp.trace.plot import extract

    merged, first, second = two_connections(tmp_path)
    records = read_trace(merged)
    assert default_connection(records) == first
    assert extract(records).conn == first  # plot: the first, not the one with the most data
    ladder = build_ladder([merged])
    assert f"conn {first:08x}" in " ".join(ladder.names)
    assert f"{second:08x}" in ladder.footer[-1] and "--conn" in ladder.footer[-1]

    result = runner.invoke(app, ["explain", str(merged), "--conn", f"{second:08x}"])
    assert result.exit_code == 0, result.output
    assert f"conn {second:08x}" in result.output.splitlines()[0]
    assert extract(records, second).conn == second
    code, out, err = run_cli(["explain", str(merged), "--conn", "abc"], monkeypatch, capsys)
    assert code == 2 and not out
    assert "rtcp: error: --conn: no connection 00000abc in the traces" in err
    assert f"{first:08x}" in err and f"{second:08x}" in err
