"""The sender's rate cap (ConnectionConfig.max_pacing_rate_bytes_per_s, `rtcp send --rate`):
the pacing arithmetic, in integers (nanoseconds, bytes)."""

from __future__ import annotations

from rtcp.core.connection import PACING_BURST_S, PACING_SLACK_S
from rtcp.core.pacing import NS_PER_S, max_paced_bytes, paced_rate

from .conn_helpers import MSS, T0, established, recv

CAP_BYTES_PER_S = 100_000  # one 1000-byte segment every 10 ms
STEP_NS = 10_000_000
BURST_NS = round((PACING_BURST_S + PACING_SLACK_S) * NS_PER_S)
T0_NS = round(T0 * NS_PER_S)


def test_the_cap_lowers_a_controllers_rate_and_paces_one_that_does_not():
    assert paced_rate(None, None) is None
    assert paced_rate(5e6, None) == 5e6
    assert paced_rate(5e6, 1_000_000) == 1_000_000
    assert paced_rate(5e5, 1_000_000) == 5e5  # under the cap: the controller's own rate
    assert paced_rate(None, 1_000_000) == 1_000_000  # Reno, CUBIC: the cap alone
    assert paced_rate(0.0, 1_000_000) == 1_000_000  # BBR before its first sample


def test_max_paced_bytes_rounds_up():
    assert max_paced_bytes(100_000, 10_000_000, 0, 0) == 1000
    assert max_paced_bytes(100_000, 10_000_001, 0, 0) == 1001
    assert max_paced_bytes(3, 1, 0, 1000) == 1001


def _sent_bytes(segments) -> int:
    return sum(len(s.payload) for s in segments)


def test_reno_without_a_cap_sends_its_window_at_once():
    conn = established()
    conn.send(bytes(4 * MSS))
    assert _sent_bytes(recv(conn, T0)) == 4 * MSS  # the peer's window (4096): no pacing


def test_reno_with_a_cap_sends_one_segment_per_interval():
    conn = established(max_pacing_rate_bytes_per_s=CAP_BYTES_PER_S)
    conn.send(bytes(4 * MSS))
    sent = _sent_bytes(recv(conn, T0))
    assert sent == MSS  # one segment, then the pacing timer
    # the next segment is due 10 ms after the burst allowance (2 ms) the first one used
    due_ns = round(conn.get_timer() * NS_PER_S) - T0_NS
    assert abs(due_ns - (STEP_NS - round(PACING_BURST_S * NS_PER_S))) <= 1000
    for ms in range(1, 41):
        now_ns = T0_NS + ms * 1_000_000
        sent += _sent_bytes(recv(conn, now_ns / NS_PER_S))
        assert sent <= max_paced_bytes(CAP_BYTES_PER_S, now_ns - T0_NS, BURST_NS, MSS), ms
    assert sent == 4 * MSS  # and all of it within 40 ms (three more 10 ms steps)
