"""A 32 MB transfer over 5 ms delay with 10% reordering (netem-style: reordered datagrams skip
the delay) once stalled for seconds: a reordered fast retransmission raised the receiver's
TS.Recent above the TSval of the whole window sent just before it, PAWS discarded that window,
and the sender repaired it one tail loss probe at a time (RACK ignored the probes' SACKs, and
each probe pushed the RTO back)."""

from __future__ import annotations

import random

from rtcp.proxy.impair import ImpairConfig
from tests.sim.network import START_TIME_S, SimNetwork


def test_reordered_retransmission_does_not_stall_the_transfer():
    # Seed 38 stalled for 9.8 s before the fix (223 tail loss probes); like every simulated
    # run it is reproducible: the simulator seeds ids, ISNs and BBR's random phase.
    link = ImpairConfig(delay_s=0.005, reorder=0.10, mtu_bytes=1400)
    size = 32_000_000
    data = random.Random(38).randbytes(size)
    net = SimNetwork(seed=38, up=link, down=link)
    net.start(data)
    net.run(until=lambda: len(net.server.received) >= size, max_time_s=60)
    assert bytes(net.server.received) == data
    assert net.now - START_TIME_S < 1.5  # was 9.8 s
    assert net.client.conn.stats.retransmits_tlp < 20  # was 223
