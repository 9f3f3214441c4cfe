"""Retransmission: the RFC 6298 timer inside the connection (initial RTO, SRTT/RTTVAR, backoff,
min/max clamps, Karn), fast retransmit after three duplicate ACKs with SACK (RFC 6675) and
without (NewReno, RFC 6582), SACK blocks from the receiver (RFC 2018), and the counters."""

from __future__ import annotations

import os

import pytest

from rtcp.core import events, wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import TS_TICKS_PER_S, Connection, State
from tests.sim.network import SimNetwork

from .conn_helpers import (
    ACK,
    MSS,
    SYN,
    T0,
    config,
    drain,
    lseq,
    recv,
    recv_one,
    rseq,
    send,
    syn_received,
)

BIG_WINDOW = 60_000


def client(rtt: float = 0.1, **kw) -> Connection:
    """An ESTABLISHED client whose handshake took `rtt` seconds (its first RTT sample)."""
    conn = Connection(config(**kw), is_client=True, now=T0)
    conn.connect(T0)
    recv_one(conn, T0)
    extra = {}
    if conn.config.sack:
        extra["sack_permitted"] = True
    if conn.config.timestamps:
        extra.update(ts_val=1, ts_ecr=int(T0 * TS_TICKS_PER_S))
    send(conn, T0 + rtt, SYN | ACK, rseq(0), lseq(1), mss=MSS, window=BIG_WINDOW, **extra)
    recv(conn, T0 + rtt)
    assert conn.state is State.ESTABLISHED
    drain(conn)
    return conn


def data_segments(segs) -> list[tuple[int, int]]:
    """(offset of the first byte, length) of each data segment, offsets relative to the ISS."""
    return [((s.seq - lseq(0)) % 2**32, len(s.payload)) for s in segs if s.payload]


# --- the RFC 6298 timer --------------------------------------------------------------------------


def test_first_rto_is_initial_rto():
    # no RTT sample yet (the server's handshake gives none without timestamps): RFC 6298 2.1
    conn = syn_received(initial_rto_s=1.5)
    send(conn, T0 + 0.2, ACK, rseq(1), lseq(1), window=BIG_WINDOW)
    assert conn.stats.srtt_s is None
    conn.send(b"x" * 100)
    recv(conn, T0 + 0.3)
    assert conn.get_timer() == pytest.approx(T0 + 0.3 + 1.5)


def test_rto_from_the_first_sample():
    conn = client(rtt=0.1)
    # RFC 6298 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + max(G, 4 RTTVAR) = 0.1 + 0.2
    assert conn.stats.srtt_s == pytest.approx(0.1)
    assert conn.stats.rttvar_s == pytest.approx(0.05)
    assert conn.rtt.rto_s == pytest.approx(0.3)
    t = T0 + 1
    conn.send(b"y" * 100)
    recv(conn, t)
    assert conn.get_timer() == pytest.approx(t + 0.3)


def test_rto_backoff_doubles_and_clamps_at_max():
    conn = client(rtt=0.1, max_rto_s=2.0, user_timeout_s=100)
    t = T0 + 1
    conn.send(b"z" * 500)
    first = recv(conn, t)
    assert data_segments(first) == [(1, 500)]
    gaps = []
    for _ in range(6):
        nxt = conn.get_timer()
        gaps.append(round(nxt - t, 6))
        t = nxt
        conn.handle_timer(t)
        again = recv(conn, t)
        assert data_segments(again) == [(1, 500)]  # RFC 6298 5.4: the earliest segment
    assert gaps == [0.3, 0.6, 1.2, 2.0, 2.0, 2.0]  # 5.5 doubling, 2.5 maximum
    assert conn.stats.timeouts == 6
    assert conn.stats.retransmits_timeout == 6
    assert conn.stats.retransmissions == 6
    assert conn.stats.retransmits_fast == 0


def test_rto_min_clamp():
    conn = client(rtt=0.001, min_rto_s=0.25)
    # SRTT + 4 RTTVAR = 0.003 s, raised to the floor (RFC 6298 2.4)
    assert conn.rtt.rto_s == pytest.approx(0.25)
    conn.send(b"m")
    recv(conn, T0 + 1)
    assert conn.get_timer() == pytest.approx(T0 + 1.25)


def test_ack_of_new_data_resets_backoff_without_sampling_retransmission():
    conn = client(rtt=0.1)
    t = T0 + 1
    conn.send(b"a" * 100)
    recv(conn, t)
    t = conn.get_timer()
    conn.handle_timer(t)
    recv(conn, t)  # retransmitted once; RTO now 0.6
    assert conn.rtt.rto_s == pytest.approx(0.6)
    send(conn, t + 0.05, ACK, rseq(1), lseq(101))
    # Karn (RFC 6298 3): the ACK covers a retransmission, so no sample; the backoff goes
    assert conn.rtt.rto_s == pytest.approx(0.3)
    assert conn.stats.srtt_s == pytest.approx(0.1)
    assert conn.get_timer() is None  # RFC 6298 5.2: all data acknowledged, timer off


def test_timestamps_give_a_sample_for_a_retransmission():
    # RFC 7323 4: the echoed timestamp tells which transmission the ACK answers.
    conn = client(rtt=0.1, timestamps=True)
    assert conn.ts_ok
    t = T0 + 1
    conn.send(b"a" * 100)
    recv(conn, t)
    t = conn.get_timer()
    conn.handle_timer(t)
    retx = recv_one(conn, t)
    assert retx.ts_val == int(t * TS_TICKS_PER_S) & 0xFFFFFFFF
    send(conn, t + 0.02, ACK, rseq(1), lseq(101), ts_val=2, ts_ecr=retx.ts_val)
    assert conn.rtt.latest_rtt_s == pytest.approx(0.02, abs=1e-5)


def test_timer_restarts_on_partial_ack():
    # RFC 6298 5.3: an ACK of new data restarts the timer for what is still outstanding
    conn = client(rtt=0.1)
    t = T0 + 1
    conn.send(b"b" * 3000)
    assert len(recv(conn, t)) == 3
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001))
    assert conn.get_timer() == pytest.approx(t + 0.1 + conn.rtt.rto_s)


# --- fast retransmit -----------------------------------------------------------------------------


def _send_ten(conn: Connection, t: float) -> None:
    conn.send(bytes(10 * MSS))
    assert data_segments(recv(conn, t)) == [(1 + i * MSS, MSS) for i in range(10)]


def test_fast_retransmit_newreno_without_sack():
    conn = client(rtt=0.1)
    t = T0 + 1
    _send_ten(conn, t)
    w = {"window": BIG_WINDOW}
    # segments at 1001 and 4001 lost; 1 arrives (new ACK), then 3, 4, 6..10 (7 dup ACKs)
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), **w)
    for _ in range(2):
        send(conn, t + 0.1, ACK, rseq(1), lseq(1001), **w)
        assert data_segments(recv(conn, t + 0.1)) == []  # not yet: DupThresh is 3
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), **w)
    segs = recv(conn, t + 0.1)
    assert data_segments(segs) == [(1001, MSS)]  # RFC 5681 3.2 step 2
    assert conn.stats.retransmits_fast == 1
    assert conn.stats.fast_recoveries == 1
    for _ in range(4):
        send(conn, t + 0.1, ACK, rseq(1), lseq(1001), **w)
    recv(conn, t + 0.1)  # cwnd inflation may send new data; nothing is repaired twice
    assert conn.stats.retransmissions == 1
    # the repair arrives: a partial ACK up to the second hole, which is retransmitted at once
    # (RFC 6582 3.2 step 5), whatever cwnd says
    send(conn, t + 0.2, ACK, rseq(1), lseq(4001), **w)
    segs = recv(conn, t + 0.2)
    assert data_segments(segs)[0] == (4001, MSS)
    assert conn.stats.retransmits_sack == 1  # a further repair in the same episode
    assert conn.stats.fast_recoveries == 1
    send(conn, t + 0.3, ACK, rseq(1), lseq(10001), **w)
    assert conn.stats.retransmits_timeout == 0
    assert conn.stats.retransmissions == 2


def _sack(*ranges):
    return tuple((lseq(lo), lseq(hi)) for lo, hi in ranges)


def test_fast_retransmit_with_sack_repairs_every_hole():
    conn = client(rtt=0.1, sack=True)
    assert conn.sack_ok
    t = T0 + 1
    _send_ten(conn, t)
    # segments at 1001 and 4001 lost; SACKs report what arrived above them
    w = {"window": BIG_WINDOW}
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), **w)
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), sack_blocks=_sack((2001, 3001)), **w)
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), sack_blocks=_sack((2001, 4001)), **w)
    assert data_segments(recv(conn, t + 0.1)) == []
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001), sack_blocks=_sack((5001, 6001), (2001, 4001)),
         **w)
    segs = data_segments(recv(conn, t + 0.1))
    assert segs[0] == (1001, MSS)
    assert conn.stats.retransmits_fast == 1
    send(conn, t + 0.1, ACK, rseq(1), lseq(1001),
         sack_blocks=_sack((5001, 8001), (2001, 4001)), **w)
    segs = data_segments(recv(conn, t + 0.1))
    # RFC 6675 IsLost: 4001 has three SACKed segments above it now -> repaired in recovery
    assert (4001, MSS) in segs
    assert conn.stats.retransmits_sack >= 1
    assert conn.stats.retransmits_timeout == 0
    send(conn, t + 0.2, ACK, rseq(1), lseq(10001), **w)
    assert conn.get_timer() is None


def test_no_fast_retransmit_on_window_updates():
    # RFC 5681 2: an ACK that changes the window is not a duplicate ACK.
    conn = client(rtt=0.1)
    t = T0 + 1
    _send_ten(conn, t)
    for w in (50_000, 51_000, 52_000, 53_000):
        send(conn, t + 0.1, ACK, rseq(1), lseq(1001), window=w)
    assert data_segments(recv(conn, t + 0.1)) == []
    assert conn.stats.retransmits_fast == 0


def test_ack_carrying_data_is_not_a_duplicate():
    conn = client(rtt=0.1)
    t = T0 + 1
    _send_ten(conn, t)
    for i in range(4):
        send(conn, t + 0.1, ACK, rseq(1 + i), lseq(1001), window=BIG_WINDOW, payload=b"d")
    assert conn.stats.retransmits_fast == 0


# --- SACK blocks from the receiver ---------------------------------------------------------------


def test_receiver_sack_blocks_for_holes():
    conn = client(rtt=0.1, sack=True)
    t = T0 + 1

    def deliver(start, n=100):
        send(conn, t, ACK, rseq(start), lseq(1), payload=bytes(n))
        return recv(conn, t)[-1]

    def blocks(ack_seg):
        return [((lo - rseq(0)) % 2**32, (hi - rseq(0)) % 2**32) for lo, hi in ack_seg.sack_blocks]

    send(conn, t, ACK, rseq(1), lseq(1), payload=bytes(100))
    conn.handle_timer(t + 0.04)
    assert recv_one(conn, t + 0.04).sack_blocks == ()  # no hole, no SACK
    a = deliver(201)  # hole 101..201
    assert a.ack == rseq(101) and blocks(a) == [(201, 301)]
    a = deliver(401)
    assert blocks(a) == [(401, 501), (201, 301)]  # most recent first (RFC 2018 4)
    a = deliver(601)
    a = deliver(801)
    a = deliver(1001)
    assert a.ack == rseq(101)
    assert blocks(a) == [(1001, 1101), (801, 901), (601, 701), (401, 501), (201, 301)]
    a = deliver(301)  # joins 201..301 and 401..501
    assert blocks(a)[0] == (201, 501)
    a = deliver(101)  # fills the first hole
    assert a.ack == rseq(501)
    assert blocks(a) == [(1001, 1101), (801, 901), (601, 701)] or set(blocks(a)) == {
        (601, 701), (801, 901), (1001, 1101)
    }


def test_no_sack_blocks_without_holes_or_without_permission():
    conn = client(rtt=0.1, sack=False)
    send(conn, T0 + 1, ACK, rseq(201), lseq(1), payload=b"x" * 10)
    assert recv_one(conn, T0 + 1).sack_blocks == ()


# --- counters in the simulator, with deterministic drops -----------------------------------------


def _sim(
    sack: bool, drop_nth: set[int], size: int = 60 * 1362, drop_retx: int = 0,
    drop_fin: bool = False,
):
    """Send `size` bytes; drop the data segments whose first transmissions are numbered in
    drop_nth (1-based), and the first `drop_retx` retransmissions of each of them (and with
    drop_fin the sender's first FIN)."""
    cfg = {"sack": sack, "user_timeout_s": 60}
    if "pmtud" in ConnectionConfig.__dataclass_fields__:
        cfg["pmtud"] = False
    net = SimNetwork(seed=1, client_config=ConnectionConfig(**cfg),
                     server_config=ConnectionConfig(**cfg))
    first_sent: dict[int, int] = {}  # seq -> number of the first transmission
    retx_dropped: dict[int, int] = {}
    dropped = []

    def drop(name, dgram):
        seg = wire.decode(dgram)
        if name == "client" and seg.flags & wire.FIN and drop_fin and "FIN" not in dropped:
            dropped.append("FIN")
            return True
        if name != "client" or not seg.payload:
            return False
        if seg.seq not in first_sent:
            first_sent[seg.seq] = len(first_sent) + 1
            hit = first_sent[seg.seq] in drop_nth
        elif first_sent[seg.seq] in drop_nth and retx_dropped.get(seg.seq, 0) < drop_retx:
            retx_dropped[seg.seq] = retx_dropped.get(seg.seq, 0) + 1
            hit = True
        else:
            hit = False
        if hit:
            dropped.append((seg.seq, len(seg.payload)))
        return hit

    net.drop_filter = drop
    data = os.urandom(size)
    net.start(data, b"")
    net.run(max_time_s=120)
    assert bytes(net.server.received) == data
    assert net.client.closed == events.ConnectionClosed("closed")
    assert net.server.closed == events.ConnectionClosed("closed")
    return net.client.conn.stats, dropped


@pytest.mark.parametrize("sack", [True, False])
def test_one_loss_mid_stream_is_fast_retransmitted(sack):
    stats, dropped = _sim(sack, {5})
    assert len(dropped) == 1
    assert stats.retransmits_fast == 1
    assert stats.fast_recoveries == 1
    assert stats.retransmits_timeout == 0
    assert stats.timeouts == 0
    assert stats.retransmissions == 1


@pytest.mark.parametrize("sack", [True, False])
def test_two_losses_in_one_window(sack):
    stats, dropped = _sim(sack, {5, 8})
    assert len(dropped) == 2
    assert stats.fast_recoveries == 1  # one episode (RFC 6582 / 6675)
    assert stats.retransmits_fast == 1
    assert stats.retransmits_sack == 1  # the second hole, repaired inside recovery
    assert stats.retransmits_timeout == 0
    assert stats.retransmissions == 2


@pytest.mark.parametrize("sack", [True, False])
def test_two_losses_near_the_tail(sack):
    # Nothing new to send after the repairs, so no further duplicate ACKs arrive: the second
    # hole must be repaired on the partial ACK itself (RFC 6582 3.2 step 5), or with SACK by
    # recovery or a tail loss probe (segments sent in the same burst are within RACK's
    # reordering window), not left to the retransmission timer.
    stats, dropped = _sim(sack, {15, 18}, size=20 * 1362)
    assert len(dropped) == 2
    assert stats.fast_recoveries == 1
    assert stats.retransmits_fast == 1
    assert stats.retransmits_sack + stats.retransmits_tlp == 1
    assert stats.timeouts == 0
    assert stats.retransmissions == 2


def test_tail_loss_needs_the_timer_without_sack():
    # the very last data segment lost: no later segment, no duplicate ACK, so the RTO repairs it
    stats, dropped = _sim(False, {60})
    assert dropped
    assert stats.timeouts >= 1
    assert stats.retransmits_timeout >= 1
    assert stats.retransmits_fast == 0


def test_tail_loss_is_repaired_by_a_tail_loss_probe():
    # RFC 8985 7: with SACK, a probe 2*SRTT after the tail resends the last segment; its SACK
    # reveals the hole and recovery repairs it long before the RTO would have fired. (The FIN
    # after the tail is lost too: else its SACK repairs the tail first, see below.)
    stats, dropped = _sim(True, {60}, drop_fin=True)
    assert len(dropped) == 2
    assert stats.retransmits_tlp == 2  # the last segment, then the FIN
    assert stats.timeouts == 0


def test_tail_loss_before_the_fin_is_repaired_when_the_fin_is_sacked():
    # The last data segment lost, the FIN after it arrives: the receiver SACKs the FIN, and
    # RACK (RFC 8985 6.2) repairs the tail after the reordering window, before any probe.
    stats, dropped = _sim(True, {60})
    assert len(dropped) == 1
    assert stats.retransmits_fast == 1
    assert stats.retransmits_tlp == stats.timeouts == 0
    assert stats.retransmissions == 1


def test_lost_retransmission_falls_back_to_the_timer_without_sack():
    # segment 5 and its fast retransmission both lost: NewReno has only the timer left
    stats, dropped = _sim(False, {5}, drop_retx=1)
    assert len(dropped) == 2 and dropped[0] == dropped[1]
    assert stats.retransmits_fast == 1
    assert stats.timeouts >= 1
    assert stats.retransmits_timeout >= 1


def test_lost_retransmission_is_detected_by_later_sacks():
    # segment 5 and its fast retransmission both lost: segments sent after the retransmission
    # are SACKed, so the retransmission is known lost and resent without waiting for the RTO
    stats, dropped = _sim(True, {5}, drop_retx=1)
    assert len(dropped) == 2 and dropped[0] == dropped[1]
    assert stats.retransmits_fast == 1
    assert stats.timeouts == 0
    assert stats.retransmits_sack >= 1


# --- the handshake's RTT sample ------------------------------------------------------------------


def _ts(t: float) -> int:
    return int(t * TS_TICKS_PER_S) & 0xFFFFFFFF


@pytest.mark.parametrize("echo_latest", [False, True])
def test_syn_ack_echoing_the_first_syn_after_retransmissions_is_no_sample(echo_latest):
    # The peer's TS.Recent still holds the TSval of our first SYN (its retransmissions were out
    # of window there): that echo spans the whole backoff and is not an RTT (Karn, RFC 6298 3).
    conn = Connection(config(timestamps=True), is_client=True, now=T0)
    conn.connect(T0)
    recv(conn, T0)
    for t in (T0 + 1, T0 + 3):
        conn.handle_timer(t)
        assert recv_one(conn, t).ts_val == _ts(t)
    echo = _ts(T0 + 3) if echo_latest else _ts(T0)
    send(conn, T0 + 3.01, SYN | ACK, rseq(0), lseq(1), mss=MSS, ts_val=5, ts_ecr=echo)
    assert conn.state is State.ESTABLISHED
    if echo_latest:
        assert conn.stats.srtt_s == pytest.approx(0.01, abs=1e-5)
    else:
        assert conn.stats.srtt_s is None
    assert conn.rtt.rto_s <= (1.0 if echo_latest else 3.0)  # RFC 6298 5.7 without a sample


def test_ack_of_retransmitted_syn_ack_echoing_the_first_is_no_sample():
    conn2 = Connection(config(timestamps=True), is_client=False, now=T0)
    send(conn2, T0, SYN, rseq(0), dst=0, mss=MSS, ts_val=7, ts_ecr=0)
    first = recv_one(conn2, T0)
    conn2.handle_timer(T0 + 1)
    again = recv_one(conn2, T0 + 1)
    assert again.ts_val != first.ts_val
    send(conn2, T0 + 1.02, ACK, rseq(1), lseq(1), ts_val=8, ts_ecr=first.ts_val)
    assert conn2.state is State.ESTABLISHED
    assert conn2.stats.srtt_s is None  # not a 1.02 s "RTT"


def test_handshake_with_lost_syns_does_not_poison_the_rto():
    # 30% loss on a 12 ms path with the SYNs lost three times: the transfer must not run on a
    # multi-second RTO afterwards (it did when the first SYN's echoed TSval was sampled).
    from rtcp.proxy.impair import ImpairConfig
    from tests.sim.checks import config as sim_config

    cfg = {"sack": False, "pmtud": False, "user_timeout_s": 600}
    net = SimNetwork(seed=32, up=ImpairConfig(loss=0.3, delay_s=0.005),
                     down=ImpairConfig(loss=0.3, delay_s=0.005),
                     client_config=sim_config(**cfg), server_config=sim_config(**cfg))
    data = os.urandom(100_000)
    net.start(data, b"reply" * 10)
    net.run(max_time_s=1200)
    assert net.client.conn.stats.timeouts >= 3
    assert bytes(net.server.received) == data
    assert net.client.conn.stats.srtt_s < 0.5


# --- control segments lost in the simulator ------------------------------------------------------


def _kind(seg: wire.Segment) -> str:
    if seg.flags & wire.SYN:
        return "SYN-ACK" if seg.flags & ACK else "SYN"
    if seg.flags & wire.FIN:
        return "FIN"
    return "DATA" if seg.payload else "ACK"


@pytest.mark.parametrize(
    "sender,kind,times",
    [
        ("client", "SYN", 1), ("client", "SYN", 3), ("server", "SYN-ACK", 1),
        ("server", "SYN-ACK", 2), ("client", "ACK", 1), ("client", "FIN", 1),
        ("client", "FIN", 3), ("server", "FIN", 1), ("server", "FIN", 2),
    ],
)
def test_lost_control_segments_are_retransmitted(sender, kind, times):
    from tests.sim.checks import assert_intact
    from tests.sim.checks import config as sim_config

    net = SimNetwork(seed=4, client_config=sim_config(), server_config=sim_config())
    dropped = []

    def drop(name, dgram):
        if name == sender and len(dropped) < times and _kind(wire.decode(dgram)) == kind:
            dropped.append(dgram)
            return True
        return False

    net.drop_filter = drop
    data = os.urandom(20_000)
    net.start(data, b"reply")
    net.run(max_time_s=120)
    assert len(dropped) == times
    assert_intact(net, data, b"reply")
    conn = net.client.conn if sender == "client" else net.server.conn
    if kind == "FIN":  # a lost FIN gets a tail loss probe first (RFC 8985 7.2), then RTOs
        assert conn.stats.retransmits_tlp + conn.stats.retransmits_timeout >= times
    elif kind != "ACK":
        assert conn.stats.timeouts >= times
        assert conn.stats.retransmits_timeout >= times


def test_final_ack_lost_server_still_closes_orderly():
    from tests.sim.checks import assert_intact
    from tests.sim.checks import config as sim_config

    net = SimNetwork(seed=4, client_config=sim_config(), server_config=sim_config())
    dropped = []

    def drop(name, dgram):
        seg = wire.decode(dgram)
        if name == "client" and net.client.conn.state is State.TIME_WAIT and not dropped:
            dropped.append(seg)
            return True
        return False

    net.drop_filter = drop
    net.start(b"x" * 5000, b"y" * 100)
    net.run(max_time_s=120)
    assert dropped and _kind(dropped[0]) == "ACK"
    assert_intact(net, b"x" * 5000, b"y" * 100)


@pytest.mark.parametrize("dead_after_s", [0.0, 0.05, 0.3])
def test_dead_link_times_out_both_sides(dead_after_s):
    # the path dies (every datagram lost from some time on): whoever is waiting on the peer
    # gives up after user_timeout_s of silence, with reason "timeout"; nothing hangs
    from rtcp.proxy.impair import ImpairConfig
    from tests.sim.checks import assert_prefix_or_intact
    from tests.sim.checks import config as sim_config

    cfg = {"user_timeout_s": 8.0}
    slow = ImpairConfig(delay_s=0.02)
    net = SimNetwork(seed=4, up=slow, down=slow, client_config=sim_config(**cfg),
                     server_config=sim_config(**cfg))
    start = net.now
    net.drop_filter = lambda name, dgram: net.now - start >= dead_after_s
    data = os.urandom(2_000_000)
    net.start(data, b"")
    net.run(max_time_s=120)
    client = net.client
    assert client.closed is not None and client.closed.reason == "timeout"
    assert net.now - start <= dead_after_s + 8.0 + 0.5
    assert_prefix_or_intact(net, data, b"")
