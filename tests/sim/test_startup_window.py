"""The first path-MTU raise gives cwnd the initial window of the new segment size (IW10 counts
segments): on loopback the size grows about 48-fold in the first round trip."""

from __future__ import annotations

import dataclasses

from rtcp.core.config import ConnectionConfig
from rtcp.proxy.impair import ImpairConfig

from .network import SimNetwork


def _raised(net: SimNetwork) -> bool:
    return net.client.conn.mss > 2 * ConnectionConfig().mss_bytes


def test_the_initial_window_follows_the_first_path_mtu_raise():
    net = SimNetwork(seed=5, up=ImpairConfig(delay_s=0.0005), down=ImpairConfig(delay_s=0.0005))
    net.start(bytes(4_000_000))
    net.run(until=lambda: _raised(net), max_time_s=5)
    conn = net.client.conn
    assert _raised(net), "path MTU discovery did not raise the segment size"
    assert conn.cc.cwnd >= ConnectionConfig().initial_window_segments * conn.mss
    net.run(max_time_s=30)
    assert bytes(net.server.received) == bytes(4_000_000)


def test_not_after_a_loss():
    net = SimNetwork(seed=5, up=ImpairConfig(delay_s=0.0005), down=ImpairConfig(delay_s=0.0005))
    net.start(bytes(100_000))
    net.run(until=lambda: net.client.conn.state.value == "ESTABLISHED", max_time_s=5)
    conn = net.client.conn
    conn.stats = dataclasses.replace(conn.stats, retransmissions=1)  # something was lost
    before = conn.cc.cwnd
    conn._set_mss(conn.mss * 40)
    conn._initial_window_for_new_mss()
    assert conn.cc.cwnd == before
