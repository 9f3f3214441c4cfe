"""Flow control: the zero-window stall and its probes (RFC 9293 3.8.6.1), receiver and sender
silly-window avoidance, and window scaling (RFC 7323) announcing more than 64 KiB."""

from __future__ import annotations

import os

import pytest

from rtcp.core import events
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import State
from rtcp.proxy.impair import ImpairConfig
from tests.sim.network import SimNetwork

from .conn_helpers import ACK, T0, established, lseq, recv, rseq, send


def _done(net: SimNetwork) -> None:
    for ep in (net.client, net.server):
        assert ep.closed == events.ConnectionClosed("closed"), (ep.name, ep.closed)
        assert ep.conn.state in (State.CLOSED, State.TIME_WAIT)


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_zero_window_stall_probe_and_resume(loss):
    data = os.urandom(60_000)
    buf = 8_000
    impair = ImpairConfig(loss=loss, delay_s=0.005)
    net = SimNetwork(
        seed=3, up=impair, down=impair,
        client_config=ConnectionConfig(user_timeout_s=60),
        server_config=ConnectionConfig(receive_buffer_bytes=buf, user_timeout_s=60),
    )
    net.server.read_enabled = False
    net.start(data, b"ok")
    client = net.client.conn
    net.run(until=lambda: client.stats.window_probes >= 4, max_time_s=120)
    # stalled at the window: exactly the buffer's worth arrived, nothing more was sent
    server = net.server.conn
    assert server.readable == buf
    assert client.refresh_stats().peer_window_bytes == 0
    assert client.snd_nxt - 1 <= buf + 1  # never beyond the window it was given
    assert server.state is State.ESTABLISHED
    assert client.state is State.FIN_WAIT_1  # all data queued, close() called, FIN not sent
    probes = client.stats.window_probes
    stalled_at = net.now
    # the stall lasts: probes back off but keep coming, nobody times out
    net.run(until=lambda: net.now - stalled_at > 30, max_time_s=60)
    assert client.stats.window_probes > probes
    assert client.state is State.FIN_WAIT_1 and server.state is State.ESTABLISHED
    # the reader resumes: the transfer completes intact
    net.server.read_enabled = True
    net.run(max_time_s=300)
    assert bytes(net.server.received) == data
    assert bytes(net.client.received) == b"ok"
    _done(net)
    if not loss:
        # nothing was sent beyond the window, so nothing was dropped and resent
        assert client.stats.retransmissions == 0
        assert server.stats.duplicate_segments == 0


def test_slow_reader_small_chunks():
    data = os.urandom(100_000)
    net = SimNetwork(
        seed=5, server_config=ConnectionConfig(receive_buffer_bytes=4_000),
        up=ImpairConfig(delay_s=0.002), down=ImpairConfig(delay_s=0.002),
    )
    net.server.read_chunk = 700
    net.start(data, b"")
    net.run(max_time_s=300)
    assert bytes(net.server.received) == data
    _done(net)


def test_zero_window_probe_by_hand():
    conn = established()
    # the peer closes its window after the first 1000 bytes
    conn.send(b"p" * 3000)
    segs = recv(conn, T0)
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(3001), window=0)
    assert conn.refresh_stats().peer_window_bytes == 0
    conn.send(b"more")
    assert recv(conn, T0 + 0.1) == []
    assert len(segs) == 3
    t = conn.get_timer()
    assert t is not None and t > T0 + 0.1  # the persist timer
    conn.handle_timer(t)
    probe = recv(conn, t)
    assert len(probe) == 1 and probe[0].payload == b""  # a probe: an ACK below SND.UNA
    assert probe[0].seq == lseq(3000)
    assert conn.stats.window_probes == 1
    t2 = conn.get_timer()
    assert t2 - t == pytest.approx(2 * (t - (T0 + 0.1)), rel=0.01)  # backed off
    send(conn, t + 0.01, ACK, rseq(1), lseq(3001), window=4000)  # the window opens
    assert [s.payload for s in recv(conn, t + 0.01)] == [b"more"]


def test_receiver_answers_zero_window_probe_and_announces_reopening():
    conn = established(receive_buffer_bytes=2000)
    send(conn, T0, ACK, rseq(1), lseq(1), payload=b"a" * 1000)
    send(conn, T0, ACK, rseq(1001), lseq(1), payload=b"b" * 1000)
    assert recv(conn, T0)[-1].window == 0
    send(conn, T0 + 1, ACK, rseq(2000), lseq(1))  # a zero-window probe (seq below RCV.NXT)
    segs = recv(conn, T0 + 1)
    assert [(s.ack, s.window) for s in segs] == [(rseq(2001), 0)]
    send(conn, T0 + 1, ACK, rseq(2001), lseq(1), payload=b"c")  # data into a zero window
    segs = recv(conn, T0 + 1)
    assert [(s.ack, s.window) for s in segs] == [(rseq(2001), 0)]  # dropped, ACKed
    conn.read()
    segs = recv(conn, T0 + 1.1)
    assert [(s.ack, s.window) for s in segs] == [(rseq(2001), 2000)]  # window update


def test_window_scaling_announces_more_than_64k():
    data = os.urandom(2_000_000)
    big = 4 * 1024 * 1024
    seen = []
    net = SimNetwork(
        seed=1,
        client_config=ConnectionConfig(receive_buffer_bytes=big),
        server_config=ConnectionConfig(receive_buffer_bytes=big),
        up=ImpairConfig(delay_s=0.01), down=ImpairConfig(delay_s=0.01),
    )
    net.start(data, b"")
    client = net.client.conn

    def watch():
        seen.append(client.refresh_stats().peer_window_bytes)
        return False

    net.run(until=lambda: watch() or net.client.done and net.server.done)
    assert client.ws_ok and net.server.conn.ws_ok
    assert max(seen) > 65535
    assert max(seen) > 2 * 1024 * 1024
    assert bytes(net.server.received) == data
    _done(net)


def test_without_window_scaling_the_window_caps_at_64k():
    data = os.urandom(500_000)
    seen = []
    cfg = ConnectionConfig(window_scaling=False)
    net = SimNetwork(seed=1, client_config=cfg, server_config=cfg,
                     up=ImpairConfig(delay_s=0.01), down=ImpairConfig(delay_s=0.01))
    net.start(data, b"")
    client = net.client.conn

    def watch():
        seen.append(client.refresh_stats().peer_window_bytes)
        return False

    net.run(until=lambda: watch() or net.client.done and net.server.done)
    assert max(seen) == 65535
    assert bytes(net.server.received) == data
    _done(net)


def test_window_scaling_one_side_only():
    data = os.urandom(300_000)
    net = SimNetwork(
        seed=2,
        client_config=ConnectionConfig(window_scaling=True),
        server_config=ConnectionConfig(window_scaling=False),
    )
    net.start(data, b"back")
    net.run()
    assert not net.client.conn.ws_ok and not net.server.conn.ws_ok
    assert bytes(net.server.received) == data
    assert bytes(net.client.received) == b"back"
    _done(net)


def test_read_chunks_takes_everything_as_it_arrived_and_reopens_the_window():
    # read_chunks(): the bytes as the segments brought them (no join), all of them at once
    from rtcp.core.config import ConnectionConfig
    from tests.sim.network import SimNetwork

    data = bytes(range(256)) * 40  # 10,240 bytes: several segments
    cfg = ConnectionConfig(pmtud=False, congestion_control="reno", receive_buffer_bytes=8192)
    net = SimNetwork(seed=4, client_config=cfg, server_config=cfg)
    net.server.read_enabled = False
    net.start(data, b"")
    net.run(until=lambda: net.server.conn.readable >= 8192 - cfg.mss_bytes, max_time_s=30)
    conn = net.server.conn
    held = conn.readable
    chunks = conn.read_chunks()
    assert len(chunks) > 1 and sum(map(len, chunks)) == held
    assert b"".join(chunks) == data[:held]
    assert conn.readable == 0 and conn.read_chunks() == [] and conn.read() == b""
    # the window that reading freed is announced, and the rest of the stream arrives
    net.server.read_enabled = True
    net.run(max_time_s=60)
    assert b"".join(chunks) + bytes(net.server.received) == data
