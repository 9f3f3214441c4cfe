"""RFC fine print (issue 13), each behaviour over the simulator's virtual clock: two real
connections, an impaired in-memory path, the time of each event measured in virtual seconds."""

from __future__ import annotations

import itertools
import random

from tests.sim.checks import assert_intact, config
from tests.sim.network import START_TIME_S, SimNetwork

BUFFER_BYTES = 8192


def _stream_ended_at(net: SimNetwork):
    """Run until the server's application sees the end of the stream; returns the time."""
    net.run(until=lambda: net.server.stream_ended, max_time_s=300)
    return net.now


def test_a_zero_window_that_answers_its_probes_is_never_aborted():
    # RFC 1122 4.2.2.17: the persist interval grows to 60 s, past the 30 s user timeout; the
    # receiver answers every probe, so the connection stays open however long it stalls.
    net = SimNetwork(seed=1, server_config=config(receive_buffer_bytes=BUFFER_BYTES))
    data = random.Random(1).randbytes(64_000)
    net.server.read_enabled = False
    net.start(data)
    net.run(until=lambda: net.now - START_TIME_S > 200, max_time_s=300)
    assert net.client.closed is None and net.server.closed is None
    assert net.client.conn.stats.window_probes >= 5
    net.server.read_enabled = True
    net.run(max_time_s=300)
    assert_intact(net, data, b"")


def test_a_silent_zero_window_peer_still_times_out():
    # The other half of the rule: probes that nobody answers count toward the user timeout.
    net = SimNetwork(seed=2, server_config=config(receive_buffer_bytes=BUFFER_BYTES))
    net.server.read_enabled = False
    net.start(random.Random(2).randbytes(64_000))
    net.run(until=lambda: net.client.conn.stats.window_probes >= 1, max_time_s=60)
    net.drop_filter = lambda sender, dgram: sender == "server"
    net.run(until=lambda: net.client.closed is not None, max_time_s=300)
    assert net.client.closed.reason == "timeout"


def test_the_fin_waits_for_the_window_and_goes_as_soon_as_it_opens():
    # CS144's "FIN must fit the window": the data fills the receiver's buffer exactly, so
    # the FIN that follows has no room until the application reads. Sent into the closed
    # window, it was dropped and only the backed-off RTO resent it, seconds after the reader
    # came back; waiting for the window (probing it meanwhile), it goes with the update.
    net = SimNetwork(seed=3, server_config=config(receive_buffer_bytes=BUFFER_BYTES))
    data = random.Random(3).randbytes(BUFFER_BYTES)
    net.server.read_enabled = False
    net.start(data)
    net.run(until=lambda: net.now - START_TIME_S > 20, max_time_s=60)
    assert not net.server.stream_ended
    resumed = net.now
    net.server.read_enabled = True
    assert _stream_ended_at(net) - resumed < 0.1  # the update's round trip (2 ms), not an RTO
    assert net.client.conn.stats.timeouts == 0
    net.run(max_time_s=60)
    assert_intact(net, data, b"")


def _drop_first(net: SimNetwork, sender: str, pick) -> list:
    """Drop the first datagram from `sender` that pick(segment) selects; returns [its time]."""
    from rtcp.core import wire

    dropped: list = []

    def drop(name, dgram):
        if dropped or name != sender:
            return False
        seg = wire.decode(dgram)
        if pick(seg):
            dropped.append(net.now)
            return True
        return False

    net.drop_filter = drop
    return dropped


def test_a_tail_loss_on_a_long_path_gets_a_probe_not_a_timeout():
    # RTT 200 ms: once RTTVAR settles, 2 SRTT exceeds the RTO, and the probe was skipped;
    # RFC 8985 7.2 cuts the probe timeout to the RTO instead, so the lost last segment is
    # repaired by a probe (and SACK recovery), without a timeout and its collapsed window.
    # The FIN after it is lost too (else its SACK repairs the tail, tests/core).
    from rtcp.core import wire

    size = 40 * 1362
    net = SimNetwork(seed=4, base_delay_s=0.1,
                     client_config=config(congestion_control="reno"))
    data = random.Random(4).randbytes(size)
    end_seq = None

    def last_data(seg):
        nonlocal end_seq
        if end_seq is None:
            end_seq = (net.client.conn.iss + 1 + size) % 2**32
        return seg.payload and (seg.seq + len(seg.payload)) % 2**32 == end_seq

    dropped = []

    def drop(name, dgram):
        seg = wire.decode(dgram)
        for what, pick in (("tail", last_data), ("FIN", lambda seg: seg.flags & wire.FIN)):
            if name == "client" and what not in dropped and pick(seg):
                dropped.append(what)
                return True
        return False

    net.drop_filter = drop
    net.start(data)
    net.run(max_time_s=60)
    assert_intact(net, data, b"")
    stats = net.client.conn.stats
    assert stats.retransmits_tlp >= 1
    assert stats.timeouts == 0


def test_a_lost_fin_gets_a_tail_loss_probe():
    from rtcp.core.wire import FIN

    net = SimNetwork(seed=5)
    data = random.Random(5).randbytes(10_000)
    dropped = _drop_first(net, "client", lambda seg: seg.flags & FIN)
    net.start(data)
    _stream_ended_at(net)
    assert dropped
    stats = net.client.conn.stats
    assert stats.timeouts == 0 and stats.retransmits_tlp == 1
    net.run(max_time_s=60)
    assert_intact(net, data, b"")


def test_the_rack_reordering_timer_marks_the_first_of_a_burst():
    # RFC 8985 6.3: two segments leave together and the first is lost. The second's SACK
    # cannot mark it by send time (they are equal), and one duplicate ACK is not three: the
    # reordering timer marks it one RTT plus reo_wnd (min_RTT / 4) after it left, 125 ms
    # here, before the tail loss probe (2 SRTT, 200 ms) or the RTO (300 ms).
    from rtcp.core import wire

    net = SimNetwork(seed=6, base_delay_s=0.05)
    net.keep_log = True
    data = random.Random(6).randbytes(2 * 1362)
    first_seq = []

    def drop_first_data(name, dgram):
        seg = wire.decode(dgram)
        if name != "client" or not seg.payload:
            return False
        if not first_seq:
            first_seq.append(seg.seq)
            return True
        return False

    net.drop_filter = drop_first_data
    net.start(data)
    net.run(max_time_s=60)
    assert_intact(net, data, b"")
    sends = [t for t, name, d in net.log
             if name == "client" and (seg := wire.decode(d)).payload and seg.seq == first_seq[0]]
    assert len(sends) == 2
    assert 0.1 < sends[1] - sends[0] < 0.15
    stats = net.client.conn.stats
    assert stats.retransmits_fast == 1 and stats.retransmits_tlp == 0 and stats.timeouts == 0


def test_one_forged_ack_with_a_timestamp_far_ahead_changes_nothing():
    # Issue 14: the right ids, an ACK number never sent, a TSval 2^31 - 1 ahead. Recorded as
    # TS.Recent before the ACK check dropped the segment, it made PAWS discard every real
    # segment after it, and the transfer stalled for good. RFC 7323 4.3: only an acceptable
    # segment moves TS.Recent.
    from rtcp.core import wire
    from rtcp.core.seqnum import wrap

    size = 2_000_000
    data = random.Random(7).randbytes(size)
    net = SimNetwork(seed=7)
    net.start(data)
    net.run(until=lambda: len(net.server.received) >= size // 2, max_time_s=60)
    client = net.client.conn
    recent = client._ts_recent
    forged = wire.encode(wire.Segment(
        wire.ACK, net.server.conn.local_id, client.local_id, wrap(client.rcv_nxt, client.irs),
        wrap(client.snd_nxt + 1_000_000, client.iss), 1000,
        ts_val=(recent + 2**31 - 1) % 2**32, ts_ecr=0,
    ))
    before = net.now
    client.receive_datagram(forged, net.now)
    assert client._ts_recent == recent
    net.run(max_time_s=60)
    assert_intact(net, data, b"")
    assert net.now - before < 2.0
    assert client.stats.timeouts == 0


def _data_segment_sizes(net: SimNetwork, sender: str) -> list[int]:
    from rtcp.core import wire

    return [len(p) for _t, name, d in net.log if name == sender and (p := wire.decode(d).payload)]


def _paced_reader_transfer(seed: int, size: int, buffer_bytes: int, chunk: int, every_s: float,
                           **server) -> SimNetwork:
    net = SimNetwork(seed=seed, server_config=config(receive_buffer_bytes=buffer_bytes, **server))
    net.keep_log = True
    net.server.read_chunk = chunk
    net.server.read_every_s = every_s
    data = random.Random(seed).randbytes(size)
    net.start(data)
    net.run(max_time_s=600)
    assert_intact(net, data, b"")
    return net


def test_a_slow_reader_gets_full_segments_not_runts():
    # Issue 13 item 4, RFC 9293 3.8.6.2.2 (MUST-39): a reader taking 100 B every 10 ms. The
    # window reopened by what each read freed and the sender filled it: 19 of 36 data
    # segments were runts (100 to 638 bytes). Now the right edge moves by whole segments, the
    # sender holds a runt the window cuts short (3.8.6.2.1), and only the stream's tail is short.
    size = 24_000
    net = _paced_reader_transfer(11, size, 8192, chunk=100, every_s=0.01)
    sizes = _data_segment_sizes(net, "client")
    mss = net.client.conn.mss
    assert sizes.count(mss) == size // mss == 17
    assert len(sizes) == 18 and sizes[-1] == size % mss
    assert net.client.conn.stats.timeouts == 0


def test_a_reader_freeing_one_byte_at_a_time_is_not_left_to_the_persist_timer():
    # The trap of an earlier attempt: space freed a byte at a time reaches a whole segment
    # long after the window closed, while the sender's persist timer backs off. The update is
    # sent when the freed space reaches the step, so the reader alone sets the pace: 6,000
    # bytes at 1 B/ms take 6 s (plus round trips), not 6 s plus backed-off probe intervals.
    net = _paced_reader_transfer(12, 6000, 3000, chunk=1, every_s=0.001)
    assert net.now - START_TIME_S < 6.2
    sizes = _data_segment_sizes(net, "client")
    assert sum(size < 1000 for size in sizes) <= 2  # the window's leftover and the tail


def test_the_right_edge_of_the_window_never_moves_left():
    # RFC 9293 3.8.6 (SHLD-14) with window scaling (a 256 KiB buffer: shift 3), an odd-sized
    # reader and 5% loss each way: every window the receiver sends ends at or beyond the
    # last one (ACK + window << shift, in the order they left). A guard for the held edge
    # and its rounding to the scale unit (rounded down, a held edge would move left).
    from rtcp.core import wire
    from rtcp.proxy.impair import ImpairConfig

    impair = ImpairConfig(loss=0.05, delay_s=0.002)
    net = SimNetwork(seed=13, up=impair, down=impair,
                     server_config=config(receive_buffer_bytes=256 * 1024))
    net.keep_log = True
    net.server.read_chunk = 777
    net.server.read_every_s = 0.0005
    data = random.Random(13).randbytes(600_000)
    net.start(data)
    net.run(max_time_s=600)
    assert_intact(net, data, b"")
    server = net.server.conn
    shift = server._rcv_wscale
    assert shift == 3
    edges = []
    for _t, name, dgram in net.log:
        seg = wire.decode(dgram)
        if name == "server" and seg.flags & wire.ACK and not seg.flags & wire.SYN:
            edges.append((seg.ack - server.irs) % 2**32 + (seg.window << shift))
    assert len(edges) > 100
    assert all(b >= a for a, b in itertools.pairwise(edges))
