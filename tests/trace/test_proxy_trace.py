"""The proxy's decisions in the trace: TracingImpairer wraps an Impairer without changing it."""

from __future__ import annotations

import io
import json
import random

import pytest

from rtcp.core import wire
from rtcp.proxy.impair import ImpairConfig, Impairer
from rtcp.trace.proxy_trace import TracingImpairer, header_fields
from rtcp.trace.writer import TraceWriter


def _segment(seq: int, payload: bytes = b"x" * 100, flags: int = wire.ACK, src=11, dst=22) -> bytes:
    return wire.build(flags, src, dst, seq, 500, 1000, wire.opt_sack([(10, 20)]), payload)


def _traced(
    config: ImpairConfig, seed: int = 4, start_s: float = 100.0
) -> tuple[TracingImpairer, io.StringIO]:
    buf = io.StringIO()
    writer = TraceWriter(buf, "proxy", clock_start=start_s, clock=lambda: start_s)
    return TracingImpairer(Impairer(config, random.Random(seed)), writer, "up"), buf


def _decisions(buf: io.StringIO) -> list[dict]:
    records = [json.loads(line) for line in buf.getvalue().splitlines()[1:]]
    return [r for r in records if r["event"] == "proxy_decision"]


def test_same_results_as_the_wrapped_impairer():
    config = ImpairConfig(loss=0.2, duplicate=0.2, corrupt=0.2, reorder=0.3, delay_s=0.01,
                          jitter_s=0.005)
    plain = Impairer(config, random.Random(9))
    traced, buf = _traced(config, seed=9)
    for i in range(300):
        dgram = _segment(1000 + 100 * i)
        now = 100.0 + i * 0.001
        assert traced.process(dgram, now) == plain.process(dgram, now)
    assert traced.stats.to_dict() == plain.stats.to_dict()
    assert traced.passthrough is False  # the proxy loop must not bypass process()
    assert traced.config is config
    decisions = _decisions(buf)
    assert [d["id"] for d in decisions] == list(range(1, 301))
    kinds = {d["decision"] for d in decisions}
    assert {"lost", "duplicated", "corrupted", "reordered"} <= kinds
    assert sum(d["decision"] == "lost" for d in decisions) == plain.stats.dropped_loss
    assert sum(d["duplicated"] for d in decisions if d["copies"]) == plain.stats.duplicated
    assert sum(d["corrupted"] for d in decisions if d["copies"]) == plain.stats.corrupted


@pytest.mark.parametrize("start_s", [100.0, 300.0, 40_000.0])
def test_each_decision_and_its_fields(start_s: float):
    """The delay is traced rounded to the microsecond: 0.02 exactly, whatever the clock reads."""
    traced, buf = _traced(ImpairConfig(mtu_bytes=200, delay_s=0.02), start_s=start_s)
    traced.process(_segment(1), start_s)
    traced.process(_segment(2, payload=b"y" * 500), start_s + 0.001)  # over the MTU
    traced.process(b"short", start_s + 0.002)
    d = _decisions(buf)
    assert d[0]["decision"] == "delayed" and d[0]["delay"] == 0.02 and d[0]["copies"] == 1
    assert (d[0]["flags"], d[0]["src"], d[0]["dst"], d[0]["seq"], d[0]["ack"]) == (
        "ACK", 11, 22, 1, 500
    )
    assert d[0]["len"] == 100 and d[0]["window"] == 1000 and d[0]["sack"] == [[10, 20]]
    assert d[0]["checksum_ok"] is True and d[0]["dir"] == "up" and d[0]["t"] == 0.0
    assert d[1]["decision"] == "lost" and d[1]["cause"] == "mtu" and d[1]["copies"] == 0
    assert d[2]["parse"] and d[2]["decision"] == "delayed"


def test_reorder_is_recorded_with_the_overtaken_count():
    traced, buf = _traced(ImpairConfig(reorder=0.5, delay_s=0.05), seed=1)
    for i in range(40):
        traced.process(_segment(i), 100.0 + i * 0.001)
    d = _decisions(buf)
    reordered = [x for x in d if x["reordered"]]
    assert reordered and all(x["decision"] == "reordered" for x in reordered)
    assert any(x.get("overtakes", 0) >= 1 for x in reordered)
    assert traced.stats.reordered == len(reordered)


def test_relative_numbers_once_the_syns_are_seen():
    buf = io.StringIO()
    writer = TraceWriter(buf, "proxy", clock=lambda: 0.0)
    up = TracingImpairer(Impairer(ImpairConfig(), random.Random(1)), writer, "up")
    down = TracingImpairer(Impairer(ImpairConfig(), random.Random(2)), writer, "down")
    up.process(wire.build(wire.SYN, 11, 0, 1000, 0, 100), 0.0)
    down.process(wire.build(wire.SYN | wire.ACK, 22, 11, 7000, 1001, 100), 0.0)
    up.process(wire.build(wire.ACK, 11, 22, 1001, 7001, 100, b"", b"abc"), 0.0)
    d = _decisions(buf)
    assert d[1]["rel_seq"] == 0 and d[1]["rel_ack"] == 1
    assert d[2]["rel_seq"] == 1 and d[2]["rel_ack"] == 1
    assert [x["id"] for x in d] == [1, 2, 3]  # one numbering for both directions


def test_header_fields_of_a_corrupted_datagram():
    dgram = bytearray(_segment(77))
    dgram[-1] ^= 0x40
    fields = header_fields(bytes(dgram))
    assert fields["checksum_ok"] is False and fields["seq"] == 77 and fields["len"] == 100
