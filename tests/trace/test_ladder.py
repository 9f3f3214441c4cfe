"""`rtcp explain`: the ladder of scripted losses in the simulator, drawn from the traces."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from rtcp.cli import _register, app
from rtcp.proxy.impair import ImpairConfig
from rtcp.trace.ladder import render_ladder
from rtcp.trace.writer import read_trace

from .simtrace import traced_transfer

_register()
runner = CliRunner()


def _arrow_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_ladder_shows_handshake_loss_fast_retransmit_and_close(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,))  # data seq=2001 is lost once
    text = render_ladder(tr.paths)

    # the handshake, as textbooks draw it
    assert re.search(r"\|-- SYN seq=0 -+>\| SYN-RECEIVED", text)
    assert re.search(r"ESTABLISHED \|<-+ SYN-ACK seq=0 ack=1 --\|", text)
    assert "SYN-SENT" in text and "LISTEN" in text
    assert re.search(r"\|-- data seq=1 len=1000 -+>\| ESTABLISHED", text)  # ACK of SYN on data

    # the lost datagram stops at an X in the middle, marked by the proxy
    lost = _arrow_lines(text, "data seq=2001 len=1000")
    assert len(lost) == 2
    assert re.search(r"\|-- data seq=2001 len=1000 -+X +lost by the proxy +\|", lost[0])
    # later segments arrive out of order, the receiver SACKs them
    assert re.search(r"data seq=3001 len=1000 -+>\| out of order: buffered", text)
    assert "ACK ack=2001 SACK=3001-10002" in text  # the FIN (seq 10001) arrived too
    # the retransmission says why, and fills the gap
    assert re.search(r"data seq=2001 len=1000 -+>\| fills the gap", lost[1])
    retransmit_note = text.splitlines()[text.splitlines().index(lost[1]) + 1]
    assert "fast retransmit" in retransmit_note

    # the close
    assert re.search(r"\|-- FIN seq=10001 ack=1 -+>\|", text)
    assert re.search(r"FIN-WAIT-2 \|<-+ FIN seq=1 ack=10002 --\|", text)
    assert "TIME-WAIT" in text and "LAST-ACK" in text
    assert re.search(r"\|-- ACK ack=2 -+>\| CLOSED", text)
    assert "send: 14 segments, 10.0 kB of data, 1 retransmitted (1 fast retransmit), 1 lost" in text
    assert "proxy: 17 datagrams: 16 forwarded, 1 lost" in text


def test_fast_retransmit_after_three_duplicate_acks_without_sack(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,), sack=False)
    text = render_ladder(tr.paths)
    assert "ACK ack=2001 (dup 3)" in text
    assert "fast retransmit after three duplicate ACKs" in text
    assert "SACK=" not in text


def test_timeout_retransmission_when_the_repair_is_lost_too(tmp_path):
    # the 3rd data segment and its fast retransmission (the 11th data transmission) are lost
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3, 11), sack=False)
    assert tr.net.client.conn.stats.retransmits_timeout == 1
    fired = [r for r in read_trace(tr.send) if r["event"] == "timer_fired"]
    assert [r["timer"] for r in fired] == ["retransmission"]
    rto = [r for r in read_trace(tr.send) if r["event"] == "segment_sent" and r["retransmit"]]
    assert [r["retransmit"] for r in rto] == ["fast", "timeout"]
    text = render_ladder(tr.paths)
    assert re.search(r"RTO expired \|", text)
    assert "retransmission: timeout (RTO)" in text
    assert len(re.findall(r"data seq=2001 len=1000 -+X +lost by the proxy", text)) == 2


def test_loss_without_the_proxy_trace_is_seen_as_never_arrived(tmp_path):
    dropped = []

    def drop(sender, dgram):
        # the 4th datagram the client sends carrying data, before any impairer sees it
        if sender == "client" and len(dgram) > 100:
            dropped.append(dgram)
            return len(dropped) == 4
        return False

    tr = traced_transfer(tmp_path, 8_000, drop_filter=drop)
    text = render_ladder([tr.send, tr.recv])
    assert re.search(r"data seq=3001 len=1000 -+X +lost: never arrived", text)
    assert "fills the gap" in text
    # the sender's trace alone still shows the retransmission and its cause
    alone = render_ladder([tr.send])
    assert "server (no trace)" in alone
    assert "fast retransmit" in alone
    assert "X" not in alone.split("\n\n")[0].replace("(no trace)", "")


def test_corruption_and_duplication_are_drawn(tmp_path):
    tr = traced_transfer(
        tmp_path, 30_000, up=ImpairConfig(corrupt=0.1, duplicate=0.1), seed=3
    )
    text = render_ladder(tr.paths, full=True)
    assert "corrupted by the proxy (one bit flipped)" in text
    assert re.search(r"-+>X\| bad checksum, dropped", text)
    assert "duplicated by the proxy" in text
    assert "duplicate: discarded" in text


def test_long_transfer_is_condensed(tmp_path):
    tr = traced_transfer(tmp_path, 1_500_000, drop_data=(300, 900))
    condensed = render_ladder(tr.paths)
    full = render_ladder(tr.paths, full=True)
    summaries = re.findall(
        r"\.\.\. ([\d,]+) segments, ([\d.]+ [kM]?B), (\d+) retransmitted \.\.\.", condensed
    )
    assert len(summaries) >= 3
    assert max(int(n.replace(",", "")) for n, _, _ in summaries) > 300
    assert len(condensed.splitlines()) < len(full.splitlines()) / 5
    assert "..." not in full.split("\n\n")[0]
    # drawn in full: handshake, the first segments, both losses and repairs, the close
    for needle in ("SYN seq=0", "SYN-ACK seq=0 ack=1", "data seq=1 len=1000",
                   "data seq=5001 len=1000", "FIN seq=1500001", "TIME-WAIT"):
        assert needle in condensed, needle
    assert len(re.findall(r"-X +lost by the proxy", condensed)) == 2
    assert condensed.split("\n\n")[0].count("fast retransmit") == 2
    assert len(condensed.split("\n\n")[0].splitlines()) < 120


def test_width_option(tmp_path):
    tr = traced_transfer(tmp_path, 3_000)
    wide = render_ladder(tr.paths, width=140)
    assert max(len(line) for line in wide.split("\n\n")[0].splitlines()) <= 140
    assert max(len(line) for line in wide.splitlines()[:10]) > 120
    narrow = render_ladder(tr.paths, width=72)
    assert max(len(line) for line in narrow.split("\n\n")[0].splitlines()) <= 72


def test_explain_command(tmp_path):
    tr = traced_transfer(tmp_path, 10_000, drop_data=(3,))
    result = runner.invoke(app, ["explain", *map(str, tr.paths), "--width", "90"])
    assert result.exit_code == 0, result.output
    assert "SYN-ACK seq=0 ack=1" in result.output
    assert "lost by the proxy" in result.output

    result = runner.invoke(app, ["explain", str(tr.send), "--width", "20"])
    assert result.exit_code != 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\nnot json either\n")
    result = runner.invoke(app, ["explain", str(bad)])
    assert result.exit_code != 0


def test_cli_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert "explain" in result.output and "plot" in result.output
