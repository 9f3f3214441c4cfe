"""The sender's own rate cap (`rtcp send --rate`, rsync's --bwlimit, iperf3 -b): the rate the
connection paces at, whatever its congestion controller.

A rate-based controller (BBR) paces at its own estimate; the cap only lowers it. A window-based
one (Reno, CUBIC) does not pace (RFC 5681 sends as cwnd allows), so with a cap it paces at the
cap alone and its window still decides how much may be in flight. Linux does the same with
SO_MAX_PACING_RATE (fq's per-socket cap, for every congestion control).

The connection spaces segments by `bytes / rate` seconds after each other; over any span the
bytes that leave are at most rate * span plus one burst (connection.PACING_BURST_S and
PACING_SLACK_S of catching up) plus one segment: `max_paced_bytes` is that bound in integers.
"""

from __future__ import annotations

NS_PER_S = 1_000_000_000


def paced_rate(controller_rate: float | None, cap_bytes_per_s: int | None) -> float | None:
    """Bytes/s to pace at: the controller's rate (None: it does not pace) under the cap."""
    if cap_bytes_per_s is None:
        return controller_rate
    if not controller_rate:
        return float(cap_bytes_per_s)
    return min(controller_rate, float(cap_bytes_per_s))


def max_paced_bytes(rate_bytes_per_s: int, span_ns: int, burst_ns: int, segment_bytes: int) -> int:
    """The most bytes a sender pacing at rate may send in span_ns (integers, rounded up): the
    rate over the span and the burst it may catch up, plus the segment that starts at the
    span's end."""
    return -(-rate_bytes_per_s * (span_ns + burst_ns) // NS_PER_S) + segment_bytes
