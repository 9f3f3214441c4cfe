"""Sequence-number wraparound: ISNs just below 2^32 on both sides, or on one, and megabytes
across the wrap, clean and lossy (SACK blocks and duplicate ACKs straddling the wrap); and the
microsecond timestamp clock wrapping mid-transfer (PAWS must not reject the new segments)."""

from __future__ import annotations

import random

import pytest

from rtcp.proxy.impair import ImpairConfig
from tests.sim import network
from tests.sim.network import SimNetwork

from .checks import assert_intact, config

NEAR_WRAP = 2**32 - 5000
REPLY = b"and back across the wrap " * 400  # ~10 KB the other way, wrapping too


def _run(client_isn, server_isn, size, *, impair=None, sack=True, seed=1, **kw):
    data = random.Random(seed).randbytes(size)
    net = SimNetwork(
        seed=seed, up=impair, down=impair,
        client_config=config(initial_seq=client_isn, sack=sack, **kw),
        server_config=config(initial_seq=server_isn, sack=sack, **kw),
    )
    net.start(data, REPLY)
    net.run(max_time_s=600)
    assert_intact(net, data, REPLY)
    return net


@pytest.mark.parametrize(
    "client_isn,server_isn",
    [(NEAR_WRAP, NEAR_WRAP), (NEAR_WRAP, 12345), (777, NEAR_WRAP), (2**32 - 1, 2**32 - 1)],
    ids=["both", "client-only", "server-only", "isn-max"],
)
def test_wrap_clean(client_isn, server_isn):
    net = _run(client_isn, server_isn, 4_000_000)
    # each stream that starts near 2^32 really crossed it (4 MB up, ~10 KB back)
    for conn in (net.client.conn, net.server.conn):
        if conn.iss >= NEAR_WRAP:
            assert conn.iss + conn.snd_nxt >= 2**32 > conn.iss


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "nosack"])
def test_wrap_lossy(sack):
    _run(NEAR_WRAP, NEAR_WRAP, 4_000_000, sack=sack, seed=9,
         impair=ImpairConfig(loss=0.03, reorder=0.05, duplicate=0.01, delay_s=0.005))


def test_wrap_with_loss_right_at_the_wrap():
    # Drop the data segments whose bytes straddle or follow the wrap point, once each, so the
    # repair (SACK blocks, retransmission) happens exactly at 2^32.
    data = random.Random(3).randbytes(200_000)
    net = SimNetwork(seed=3, client_config=config(initial_seq=NEAR_WRAP),
                     server_config=config(initial_seq=NEAR_WRAP))
    from rtcp.core import wire

    dropped = set()

    def drop(name, dgram):
        seg = wire.decode(dgram)
        if name != "client" or not seg.payload:
            return False
        # the segments from 2 below the wrap to 3 above: crossing 2^32 in wire numbers
        rel = (seg.seq - NEAR_WRAP) % 2**32
        if 5000 - 2 * 1362 <= rel <= 5000 + 3 * 1362 and seg.seq not in dropped:
            dropped.add(seg.seq)
            return True
        return False

    net.drop_filter = drop
    net.start(data, REPLY)
    net.run(max_time_s=600)
    assert len(dropped) >= 4
    assert_intact(net, data, REPLY)
    assert net.client.conn.stats.retransmissions >= len(dropped)


def test_timestamp_clock_wraps(monkeypatch):
    # the microsecond TSval wraps at 2^32 us = 4294.967296 s: start just before it
    monkeypatch.setattr(network, "START_TIME_S", 4294.9)
    net = _run(NEAR_WRAP, NEAR_WRAP, 2_000_000, seed=4, timestamps=True,
               impair=ImpairConfig(loss=0.01, delay_s=0.02))
    assert net.client.conn.ts_ok
    assert net.now > 4294.967296
    assert net.server.conn.stats.duplicate_segments < 50  # PAWS did not throw segments away
