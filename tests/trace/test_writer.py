"""The trace writer: the core's event hook to JSON lines, with time and relative numbers."""

from __future__ import annotations

import io
import json

import pytest

from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection
from rtcp.trace.writer import TraceWriter, read_trace, unwrap_near

from .simtrace import traced_transfer


class Clock:
    def __init__(self, now: float = 500.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_hook_writes_one_json_line_per_event_with_time_role_and_conn():
    buf = io.StringIO()
    clock = Clock()
    writer = TraceWriter(buf, "send", clock_start=500.0, clock=clock)
    hook = writer.hook()
    clock.now = 500.25
    hook("state_change", {"old": "CLOSED", "new": "SYN-SENT", "cause": "connect", "conn": 7})
    hook("rtt_sample", {"rtt": 0.1, "srtt": 0.1, "rttvar": 0.05, "rto": 0.3, "conn": 7})
    writer.write("note", {"text": "hello"}, t=1.5)
    writer.close()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["event"] == "trace_start"
    assert lines[0]["role"] == "send" and lines[0]["clock_start"] == 500.0
    assert lines[1] == {
        "t": 0.25, "role": "send", "conn": 7, "event": "state_change",
        "old": "CLOSED", "new": "SYN-SENT", "cause": "connect",
    }
    assert list(lines[1])[:4] == ["t", "role", "conn", "event"]
    assert lines[2]["srtt"] == 0.1
    assert lines[3] == {"t": 1.5, "role": "send", "event": "note", "text": "hello"}
    assert writer.records == 4
    hook("late", {"conn": 7})  # after close: ignored, no error


def test_hook_label_is_recorded_as_peer():
    buf = io.StringIO()
    writer = TraceWriter(buf, "recv", clock=Clock())
    writer.hook("127.0.0.1:4000")("state_change", {"conn": 1, "old": "LISTEN", "new": "CLOSED"})
    writer.close()
    assert json.loads(buf.getvalue().splitlines()[1])["peer"] == "127.0.0.1:4000"


def test_file_writes_are_buffered_until_flush_or_close(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, "send", clock=Clock())
    for i in range(100):
        writer.hook()("timer_fired", {"timer": "delayed_ack", "conn": i})
    assert path.stat().st_size == 0  # nothing written yet: one buffer, no write per event
    writer.close()
    records = read_trace(path)
    assert len(records) == 101
    assert [r["conn"] for r in records[1:]] == list(range(100))


def test_read_trace_skips_a_torn_last_line_and_rejects_garbage(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"t":0,"event":"trace_start"}\n{"t":1,"event":"x"}\n{"t":2,"ev')
    assert [r["event"] for r in read_trace(path)] == ["trace_start", "x"]
    path.write_text('{"t":0,"event":"trace_start"}\nnot json\n{"t":1,"event":"x"}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_trace(path)


def test_unwrap_near():
    assert unwrap_near(5, 0) == 5
    assert unwrap_near(0xFFFFFFF0, 0x1_0000_0010) == 0xFFFFFFF0
    assert unwrap_near(0x10, 0xFFFFFFF0) == 0x1_0000_0010


def test_syn_fields_are_normalised_and_relative_numbers_added():
    buf = io.StringIO()
    writer = TraceWriter(buf, "recv", clock=Clock())
    hook = writer.hook()
    # the core traces a sent SYN-ACK as kind "SYN-ACK", seq 0, the wire ack, no relative numbers
    hook("segment_received", {"flags": "SYN", "seq": 1000, "ack": 0, "len": 0, "window": 100,
                              "sack": [], "rel_seq": 0, "rel_ack": 123456, "conn": 9})
    hook("segment_sent", {"flags": "SYN-ACK", "seq": 0, "ack": 1001, "len": 0, "window": 100,
                          "conn": 9})
    hook("segment_sent", {"flags": "SYN-ACK", "seq": 0, "ack": 1001, "len": 0, "window": 100,
                          "conn": 9})  # sent again: only the retransmission timer does that
    hook("segment_sent", {"flags": "ACK", "seq": 5001, "ack": 1001, "len": 0, "window": 100,
                          "retransmit": None, "rel_seq": 1, "rel_ack": 1, "conn": 9})
    hook("segment_received", {"flags": "ACK", "seq": 1001, "ack": 5001, "len": 0, "window": 99,
                              "sack": [[5101, 5201]], "rel_seq": 1, "rel_ack": 1, "conn": 9})
    writer.close()
    recs = [json.loads(line) for line in buf.getvalue().splitlines()[1:]]
    assert recs[0]["rel_ack"] == 0  # a SYN acknowledges nothing
    assert recs[1]["flags"] == "SYN|ACK"
    assert (recs[1]["rel_seq"], recs[1]["rel_ack"], recs[1]["retransmit"]) == (0, 1, None)
    assert recs[2]["retransmit"] == "timeout" and recs[2]["retransmit_inferred"] is True
    assert recs[4]["rel_sack"] == [[101, 201]]


def test_tracing_a_lossy_transfer_emits_every_kind_of_event(tmp_path):
    tr = traced_transfer(tmp_path, 50_000, drop_data=(3, 20))
    send = read_trace(tr.send)
    recv = read_trace(tr.recv)
    events = {r["event"] for r in send} | {r["event"] for r in recv}
    for name in ("trace_start", "segment_sent", "segment_received", "state_change",
                 "rtt_sample", "congestion", "out_of_order", "window_update"):
        assert name in events, name
    for r in send + recv:
        assert r["t"] >= 0 and r["role"] in ("send", "recv")
        if r["event"].startswith("segment_"):
            for key in ("flags", "seq", "ack", "len", "window", "rel_seq", "rel_ack"):
                assert key in r, (key, r)
    data = [r for r in send if r["event"] == "segment_sent" and r["len"]]
    assert data[0]["rel_seq"] == 1 and data[1]["rel_seq"] == 1 + data[0]["len"]
    assert [r["retransmit"] for r in data if r["retransmit"]] == ["fast", "fast"]
    sacks = [r for r in send if r["event"] == "segment_received" and r.get("rel_sack")]
    assert sacks and all(lo < hi for r in sacks for lo, hi in r["rel_sack"])
    states = [(r["old"], r["new"]) for r in send if r["event"] == "state_change"]
    assert states[0] == ("CLOSED", "SYN-SENT") and states[-1][1] == "TIME-WAIT"


def test_no_hook_no_trace_cost():
    # the default config has no hook: the connection never builds a trace record
    conn = Connection(ConnectionConfig(), is_client=True, now=0.0)
    assert conn.config.event_hook is None
    conn.connect(0.0)
    assert conn.datagrams_to_send(0.0)
