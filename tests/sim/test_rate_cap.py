"""`rtcp send --rate`: over a clean fast link the sender's goodput stays within a stated
tolerance of its own cap (ConnectionConfig.max_pacing_rate_bytes_per_s), whatever the
congestion controller. Virtual time: the bounds are in integers (bytes, nanoseconds)."""

from __future__ import annotations

import pytest

from rtcp.core import wire
from rtcp.core.connection import PACING_BURST_S, PACING_SLACK_S
from rtcp.core.pacing import NS_PER_S, max_paced_bytes
from rtcp.proxy.impair import ImpairConfig

from .checks import assert_intact, config
from .network import START_TIME_S, SimNetwork

CAP_BYTES_PER_S = 1_000_000  # 8 Mbit/s over a link that would carry far more
FILE_BYTES = 1_500_000
# Goodput at least this share of the cap: BBR spends one phase in eight at 3/4 of its
# estimate (ProbeBW) and the handshake and the last round trip carry no data
MIN_SHARE_PERCENT = 85
BURST_NS = round((PACING_BURST_S + PACING_SLACK_S) * NS_PER_S)


def _payload(datagram: bytes) -> int:
    segment = wire.decode(datagram)
    return len(segment.payload)


@pytest.mark.parametrize("cc", ["bbr", "cubic", "reno"])
def test_goodput_over_a_clean_fast_link_follows_the_cap(cc):
    link = ImpairConfig(delay_s=0.002)
    cfg = config(congestion_control=cc, max_pacing_rate_bytes_per_s=CAP_BYTES_PER_S)
    net = SimNetwork(seed=3, up=link, down=link, client_config=cfg, server_config=config())
    net.keep_log = True
    data = bytes(range(256)) * (FILE_BYTES // 256)
    net.start(data)
    net.run(until=lambda: len(net.server.received) == len(data), max_time_s=60)
    delivered_ns = round((net.now - START_TIME_S) * NS_PER_S)
    net.run(max_time_s=60)
    assert_intact(net, data, b"")
    sends = [(round(t * NS_PER_S), _payload(d)) for t, who, d in net.log if who == "client"]
    data_sends = [(t, n) for t, n in sends if n]
    first_ns, last_ns = data_sends[0][0], data_sends[-1][0]
    sent = sum(n for _, n in data_sends)  # retransmissions count: they use the cap too
    mss = max(n for _, n in data_sends)
    assert sent <= max_paced_bytes(CAP_BYTES_PER_S, last_ns - first_ns, BURST_NS, mss)
    # no span of the transfer goes faster than the cap (each 100 ms window from each send)
    window_ns = 100_000_000
    j = 0
    in_window = 0
    for i, (start_ns, _) in enumerate(data_sends):
        while j < len(data_sends) and data_sends[j][0] < start_ns + window_ns:
            in_window += data_sends[j][1]
            j += 1
        assert in_window <= max_paced_bytes(CAP_BYTES_PER_S, window_ns, BURST_NS, mss)
        in_window -= data_sends[i][1]
    # and the goodput (from the first SYN to the last byte's delivery) is close to the cap
    goodput_bytes_per_s = len(data) * NS_PER_S // delivered_ns
    assert goodput_bytes_per_s * 100 >= MIN_SHARE_PERCENT * CAP_BYTES_PER_S, goodput_bytes_per_s
