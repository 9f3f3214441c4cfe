"""BBR (rtcp.core.bbr): model, state machine, pacing and cwnd, on a synthetic link in virtual time.

`Link` is a tiny packet-level model of one bottleneck: a FIFO served at a fixed rate, a fixed
propagation delay, optional random loss, one ACK per packet. The sender side does what the
connection does: sends while pipe < cwnd and no faster than pacing_rate, makes a RateSample per
ACK (draft-cheng-iccrg-delivery-rate-estimation), detects a loss when 3 later packets are
acknowledged and drives on_congestion_event / on_recovery_exit / on_ack. Lost packets are not
retransmitted: only the controller's behaviour matters here.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass

import pytest

from rtcp.core.bbr import (
    ACK_AGGREGATION_S,
    BTLBW_FILTER_ROUNDS,
    DRAIN_GAIN,
    HIGH_GAIN,
    MIN_PIPE_CWND_SEGMENTS,
    PACING_GAIN_CYCLE,
    PROBE_RTT_DURATION_S,
    QUANTUM_SEGMENTS,
    RTPROP_FILTER_S,
    Bbr,
    WindowedMaxFilter,
)
from rtcp.core.congestion import (
    CONTROLLERS,
    CongestionController,
    RateSample,
    Reno,
    make_controller,
)

MSS = 1000
BW = 1_250_000.0  # bytes/s (10 Mbit/s)
RTT = 0.040  # propagation round trip, s
MIN_RTT = RTT + MSS / BW  # what an unqueued packet measures: propagation + its serialization
BDP = BW * MIN_RTT


@dataclass(slots=True)
class Packet:
    seq: int
    sent_at: float
    delivered: int
    delivered_time: float
    first_sent_time: float
    lost: bool = False
    acked: bool = False


class Link:
    """One sender (the controller under test) over one bottleneck; see the module docstring."""

    def __init__(self, cc, *, bw=BW, rtt=RTT, loss=0.0, seed=1, start=100.0, ack_batch_s=0.0):
        self.cc = cc
        self.ack_batch_s = ack_batch_s  # > 0: ACKs arrive together at multiples of this
        self.bw = bw
        self.rtt = rtt
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = start
        self.next_seq = 0
        self.next_send = start
        self.queue_free_at = start  # when the bottleneck finishes its backlog
        self.acks: list[tuple[float, int, Packet]] = []  # (arrival, seq, packet)
        self.unacked: deque[Packet] = deque()  # in send order; lost ones too until detected
        self.pipe = 0
        self.delivered = 0
        self.delivered_time = start
        self.first_sent_time = start
        self.in_recovery = False
        self.recover = 0
        self.samples = 0
        self.hook = None  # called as hook(link) after every ACK

    @property
    def srtt(self):
        return None

    def _send(self) -> None:
        now = self.now
        if self.pipe == 0:
            self.first_sent_time = self.delivered_time = now
        p = Packet(self.next_seq, now, self.delivered, self.delivered_time, self.first_sent_time)
        self.next_seq += 1
        self.unacked.append(p)
        self.pipe += MSS
        rate = self.cc.pacing_rate(None)
        self.next_send = now + (MSS / rate if rate else 0.0)
        if self.rng.random() < self.loss:
            p.lost = True  # dropped before the bottleneck; found when 3 later ones are acked
            return
        depart = max(now, self.queue_free_at) + MSS / self.bw
        self.queue_free_at = depart
        arrival = depart + self.rtt
        if self.ack_batch_s:
            arrival = math.ceil(arrival / self.ack_batch_s) * self.ack_batch_s
        heapq.heappush(self.acks, (arrival, p.seq, p))

    def _on_ack(self, p: Packet) -> None:
        cc, now = self.cc, self.now
        pipe_before = self.pipe
        self.delivered += MSS
        self.delivered_time = now
        self.first_sent_time = p.sent_at
        self.pipe -= MSS
        p.acked = True
        newly_lost = 0
        unacked = self.unacked
        while unacked:
            q = unacked[0]
            if q.acked:
                unacked.popleft()
            elif q.lost and q.seq + 3 <= p.seq:  # 3 later packets arrived: q is lost
                unacked.popleft()
                newly_lost += MSS
                self.pipe -= MSS
            else:
                break
        if self.in_recovery and p.seq >= self.recover:
            self.in_recovery = False
            cc.on_recovery_exit(now)
        if newly_lost and not self.in_recovery:
            self.in_recovery = True
            self.recover = self.next_seq
            cc.on_congestion_event(now, self.pipe + newly_lost)
        if not self.in_recovery:
            cc.on_ack(MSS, now, now - p.sent_at, pipe_before)
        interval = max(p.sent_at - p.first_sent_time, now - p.delivered_time)
        delivered = self.delivered - p.delivered
        cc.on_rate_sample(
            RateSample(
                delivery_rate=delivered / interval if interval > 0 else 0.0,
                interval_s=interval,
                delivered=delivered,
                prior_delivered=p.delivered,
                total_delivered=self.delivered,
                rtt_s=now - p.sent_at,
                is_app_limited=False,
                newly_delivered=MSS,
                newly_lost=newly_lost,
                bytes_in_flight=self.pipe,
            ),
            now,
        )
        self.samples += 1
        if self.hook is not None:
            self.hook(self)

    def run(self, duration: float) -> None:
        end = self.now + duration
        while True:
            while self.pipe < self.cc.cwnd and self.next_send <= self.now:
                self._send()
            t_ack = self.acks[0][0] if self.acks else math.inf
            t_send = self.next_send if self.pipe < self.cc.cwnd else math.inf
            t = min(t_ack, t_send)
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            while self.acks and self.acks[0][0] <= self.now:
                _, _, p = heapq.heappop(self.acks)
                self._on_ack(p)


def converged(seed=1, **kw) -> tuple[Bbr, Link]:
    cc = Bbr(MSS, rng=random.Random(seed))
    link = Link(cc, **kw)
    link.run(3.0)
    assert cc.state == "probe_bw"
    return cc, link


def sample(
    cc,
    now,
    *,
    rate=BW,
    rtt=MIN_RTT,
    prior=None,
    inflight=None,
    lost=0,
    acked=MSS,
    app_limited=False,
):
    """Feed one synthetic sample that continues cc's delivered count; returns it."""
    total = cc._delivered + acked
    rs = RateSample(
        delivery_rate=rate,
        interval_s=rtt,
        delivered=int(rate * rtt),
        prior_delivered=total - int(rate * rtt) if prior is None else prior,
        total_delivered=total,
        rtt_s=rtt,
        is_app_limited=app_limited,
        newly_delivered=acked,
        newly_lost=lost,
        bytes_in_flight=int(BDP) if inflight is None else inflight,
    )
    cc.on_rate_sample(rs, now)
    return rs


# -- registry and initial state -----------------------------------------------------------------


def test_registry():
    assert CONTROLLERS["bbr"] is Bbr
    cc = make_controller("bbr", 1400)
    assert type(cc) is Bbr and cc.name == "bbr" and isinstance(cc, CongestionController)
    assert make_controller("BBR", 1400, initial_window_segments=4).cwnd == 4 * 1400
    with pytest.raises(ValueError, match=r"bbr, cubic, reno"):
        make_controller("vegas", 1400)


def test_initial_state():
    cc = Bbr(1400)
    assert cc.phase == "startup" and cc.state == "startup"
    assert cc.cwnd == 10 * 1400
    assert cc.pacing_gain == cc.cwnd_gain == pytest.approx(2 / math.log(2))
    assert cc.btlbw == 0 and cc.rtprop_s is None and cc.bdp == 0
    # The draft's initial pacing rate: high gain * initial window / (SRTT or 1 ms).
    assert cc.pacing_rate(None) == pytest.approx(HIGH_GAIN * 14000 / 0.001)
    assert cc.pacing_rate(0.1) == pytest.approx(HIGH_GAIN * 14000 / 0.1)


def test_on_ack_does_not_grow_cwnd():
    cc = Bbr(MSS)
    for i in range(100):
        cc.on_ack(MSS, 1 + i * 0.001, 0.04, cc.cwnd)
    assert cc.cwnd == 10 * MSS and cc.phase == "startup"


# -- windowed max filter ------------------------------------------------------------------------


def test_windowed_max_filter():
    f = WindowedMaxFilter()
    assert f.update(10, 0, 5.0) == 5.0
    assert f.update(10, 1, 3.0) == 5.0  # smaller: the max stays
    assert f.update(10, 2, 7.0) == 7.0  # a new max replaces everything
    for t in range(3, 13):
        assert f.update(10, t, 4.0) == 7.0  # still inside the window
    # 7 was seen at t=2; at t=13 it is older than the window: a later choice takes over.
    assert f.update(10, 13, 4.0) == 4.0
    assert f.update(10, 14, 2.0) == 4.0


def test_windowed_max_filter_keeps_second_choice():
    f = WindowedMaxFilter()
    f.update(10, 0, 10.0)
    f.update(10, 3, 8.0)  # a 2nd choice from later in the window
    f.update(10, 6, 6.0)  # and a 3rd
    for t in range(7, 11):
        f.update(10, t, 1.0)
    assert f.value == 10.0
    assert f.update(10, 11, 1.0) == 8.0  # 10 aged out: the 2nd choice steps in, not 1.0


# -- the model on a link ------------------------------------------------------------------------


def test_startup_drain_probe_bw_on_a_link():
    cc = Bbr(MSS, rng=random.Random(3))
    link = Link(cc)
    seen = []  # (state, round) at each change

    def hook(link):
        if not seen or seen[-1][0] != cc.state:
            seen.append((cc.state, cc.round_count))

    link.hook = hook
    link.run(2.0)
    states = [s for s, _ in seen]
    assert states[:3] == ["startup", "drain", "probe_bw"]
    assert cc.filled_pipe
    # STARTUP doubles per round from the initial window (10 packets) to the BDP (~51 packets),
    # then needs 3 rounds without 25% growth: it must be over within ~10 rounds.
    startup_rounds = seen[1][1]
    assert 4 <= startup_rounds <= 10
    # DRAIN takes about a round; the queue STARTUP built is gone in PROBE_BW.
    assert seen[2][1] - seen[1][1] <= 3


def test_btlbw_and_rtprop_converge_to_the_link():
    cc, link = converged()
    assert cc.btlbw == pytest.approx(BW, rel=0.03)
    assert cc.rtprop_s == pytest.approx(MIN_RTT, rel=0.01)
    assert cc.bdp == pytest.approx(BDP, rel=0.03)
    # Goodput: BBR keeps the bottleneck busy.
    delivered_before = link.delivered
    link.run(2.0)
    assert (link.delivered - delivered_before) / 2.0 == pytest.approx(BW, rel=0.03)


def test_pacing_rate_is_gain_times_btlbw_and_cwnd_two_bdp():
    cc, link = converged()
    checked = []

    def hook(link):
        assert cc.pacing_rate(0.05) == pytest.approx(cc.pacing_gain * cc.btlbw)
        if not cc.in_recovery:
            checked.append(cc.cwnd)
            assert cc.cwnd <= cc.target_cwnd

    link.hook = hook
    link.run(1.0)
    assert checked
    expected = (
        2 * cc.btlbw * cc.rtprop_s + cc.btlbw * ACK_AGGREGATION_S + QUANTUM_SEGMENTS * MSS
        + cc.extra_acked
    )
    assert cc.target_cwnd == pytest.approx(expected, abs=1)
    assert cc.cwnd == cc.target_cwnd  # reached and held
    assert cc.cwnd == pytest.approx(2 * BDP + cc.btlbw * ACK_AGGREGATION_S + 3 * MSS, rel=0.03)


def test_probe_bw_cycles_its_gains():
    cc, link = converged(seed=5)
    changes = []  # (time, cycle index, pacing gain)

    def hook(link):
        if not changes or changes[-1][1] != cc.cycle_index:
            changes.append((link.now, cc.cycle_index, cc.pacing_gain))

    link.hook = hook
    link.run(2.0)
    indexes = [i for _, i, _ in changes]
    for a, b in itertools.pairwise(indexes):
        assert b == (a + 1) % len(PACING_GAIN_CYCLE)  # in order, none skipped
    assert len(indexes) >= 2 * len(PACING_GAIN_CYCLE)  # ~1 RTprop per phase: 2 s >> 8 * 41 ms
    for _, i, gain in changes:
        assert gain == PACING_GAIN_CYCLE[i]
    # Each phase lasts about one RTprop (the 3/4 one may end early once the queue is gone).
    for (t0, i, _), (t1, _, _) in itertools.pairwise(changes[1:]):
        if PACING_GAIN_CYCLE[i] != 0.75:
            assert MIN_RTT <= t1 - t0 <= MIN_RTT + 0.01
        else:
            assert t1 - t0 <= MIN_RTT + 0.01
    assert {g for _, _, g in changes} == {1.25, 0.75, 1.0}


def test_probe_bw_starts_at_a_random_phase_but_never_the_drain_one():
    starts = set()
    for seed in range(40):
        cc = Bbr(MSS, rng=random.Random(seed))
        cc._enter_probe_bw(0.0)
        starts.add(cc.cycle_index)
    assert 1 not in starts and len(starts) == len(PACING_GAIN_CYCLE) - 1


def test_btlbw_follows_a_slower_link_within_the_filter_window():
    cc, link = converged()
    link.bw = BW / 2
    rounds_at_change = cc.round_count
    link.run(3.0)
    assert cc.btlbw == pytest.approx(BW / 2, rel=0.05)
    assert cc.round_count - rounds_at_change > BTLBW_FILTER_ROUNDS


def test_startup_is_not_fooled_by_the_initial_pacing_rate():
    # The draft: C.pacing_rate starts at BBRInitPacingRate and STARTUP only ever raises it,
    # so the small samples of the first round trips cannot slow the start down; once the
    # pipe is full, pacing follows gain * BtlBw exactly.
    cc = Bbr(MSS)
    before = cc.pacing_rate(None)
    assert before == pytest.approx(HIGH_GAIN * 10 * MSS / 0.001)
    sample(cc, 1.0, rate=before / 100)
    assert cc.pacing_rate(None) == pytest.approx(before)  # a small first sample: not lower
    sample(cc, 1.01, rate=before)  # larger than the init rate: raised
    assert cc.pacing_rate(None) == pytest.approx(HIGH_GAIN * before)
    sample(cc, 1.02, rate=before / 200)  # smaller, in STARTUP: the rate does not go down
    assert cc.pacing_rate(None) == pytest.approx(HIGH_GAIN * before)


# -- PROBE_RTT ----------------------------------------------------------------------------------


def test_probe_rtt_after_ten_seconds_without_a_new_minimum():
    cc, link = converged()
    link.rtt = RTT + 0.005  # a route change: every RTT is now 5 ms longer than RTprop
    log = []

    def hook(link):
        log.append((link.now, cc.state, cc.cwnd, link.pipe))

    link.hook = hook
    stamp = cc._rtprop_stamp
    link.run(RTPROP_FILTER_S + 1.0)
    probe = [entry for entry in log if entry[1] == "probe_rtt"]
    assert probe, "no PROBE_RTT"
    t_in, t_out = probe[0][0], probe[-1][0]
    assert t_in == pytest.approx(stamp + RTPROP_FILTER_S, abs=0.05)
    # cwnd is 4 segments while in PROBE_RTT, for at least 200 ms and one round trip.
    assert all(cwnd <= MIN_PIPE_CWND_SEGMENTS * MSS for _, _, cwnd, _ in probe)
    assert PROBE_RTT_DURATION_S <= t_out - t_in <= PROBE_RTT_DURATION_S + 3 * (RTT + 0.005)
    after = [entry for entry in log if entry[0] > t_out]
    assert after and after[0][1] == "probe_bw"
    # The new (longer) propagation delay is the RTprop now, and the bandwidth was not
    # forgotten: the probe's small samples are treated as app-limited.
    assert cc.rtprop_s == pytest.approx(MIN_RTT + 0.005, rel=0.01)
    assert cc.btlbw == pytest.approx(BW, rel=0.03)
    link.run(0.5)
    assert cc.state == "probe_bw" and cc.cwnd == pytest.approx(
        2 * cc.bdp + cc.btlbw * ACK_AGGREGATION_S + 3 * MSS, rel=0.02
    )


def test_probe_rtt_not_entered_while_minimum_is_refreshed():
    cc, link = converged()
    t = link.now
    states = set()
    for i in range(1500):  # 15 s of samples that show the minimum RTT again and again
        sample(cc, t + i * 0.01, rtt=cc.rtprop_s)
        states.add(cc.state)
    assert states == {"probe_bw"}
    # One more sample 10 s after the last minimum, with a higher RTT: now it is PROBE_RTT.
    sample(cc, t + 14.99 + RTPROP_FILTER_S + 0.01, rtt=2 * MIN_RTT)
    assert cc.state == "probe_rtt" and cc.rtprop_s == 2 * MIN_RTT


def test_probe_rtt_with_synthetic_samples_and_exit_to_startup_when_pipe_not_full():
    cc = Bbr(MSS)
    t = 1.0
    sample(cc, t, rate=BW / 10)  # first sample: RTprop stamped at t
    t += 0.05
    for _ in range(5):  # still STARTUP: samples with a higher RTT do not refresh RTprop
        sample(cc, t, rate=BW / 10, rtt=2 * MIN_RTT)
        t += 0.05
    t = 1.0 + RTPROP_FILTER_S + 0.01
    sample(cc, t, rate=BW / 10, rtt=2 * MIN_RTT, inflight=20 * MSS)
    assert cc.state == "probe_rtt" and cc.cwnd <= MIN_PIPE_CWND_SEGMENTS * MSS
    # inflight falls to 4 segments: the 200 ms starts; plus one round.
    sample(cc, t + 0.05, rate=BW / 10, rtt=2 * MIN_RTT, inflight=4 * MSS)
    sample(cc, t + 0.1, rate=BW / 10, rtt=2 * MIN_RTT, inflight=4 * MSS, prior=cc._delivered)
    assert cc.state == "probe_rtt"  # a round is over, but not the 200 ms
    sample(cc, t + 0.2, rate=BW / 10, rtt=2 * MIN_RTT, inflight=4 * MSS)
    assert cc.state == "probe_rtt"
    sample(cc, t + 0.26, rate=BW / 10, rtt=2 * MIN_RTT, inflight=4 * MSS)
    assert cc.state == "startup"  # the pipe was never filled: back to STARTUP
    assert cc.rtprop_s == pytest.approx(2 * MIN_RTT)


# -- loss ---------------------------------------------------------------------------------------


def test_random_loss_does_not_lower_btlbw_or_pacing_rate():
    cc, link = converged()
    bw0, pacing0 = cc.btlbw, cc.pacing_rate(None) / cc.pacing_gain
    link.loss = 0.01
    lows = []

    def hook(link):
        lows.append(cc.btlbw)

    link.hook = hook
    delivered_before = link.delivered
    link.run(5.0)
    assert min(lows) >= 0.95 * bw0  # loss is not congestion: the model stays
    assert cc.pacing_rate(None) / cc.pacing_gain >= 0.95 * pacing0
    # and the link stays busy: ~99% of the packets are delivered, at the link rate
    goodput = (link.delivered - delivered_before) / 5.0
    assert goodput >= 0.9 * BW


def test_random_loss_from_the_start():
    cc = Bbr(MSS, rng=random.Random(1))
    link = Link(cc, loss=0.01, seed=7)
    link.run(5.0)
    assert cc.filled_pipe and cc.btlbw == pytest.approx(BW, rel=0.05)
    delivered_before = link.delivered
    link.run(5.0)
    assert (link.delivered - delivered_before) / 5.0 >= 0.9 * BW


def test_reno_collapses_where_bbr_does_not():
    # Sanity check of the premise on the same link: 1% random loss, BDP ~51 packets.
    reno = Reno(MSS)
    link = Link(reno, loss=0.01, seed=7)
    link.run(10.0)
    assert link.delivered / 10.0 < 0.6 * BW


def test_congestion_event_keeps_model_and_conserves_packets():
    cc, link = converged()
    now = link.now
    bw, pacing, cwnd = cc.btlbw, cc.pacing_rate(None), cc.cwnd
    inflight = cwnd - 10 * MSS
    cc.on_congestion_event(now, inflight)
    assert cc.phase == "recovery" and cc.state == "probe_bw"
    assert cc.cwnd == inflight + MSS  # packet conservation: what is in flight, plus the rexmit
    assert cc.btlbw == bw and cc.pacing_rate(None) == pacing
    cc.on_congestion_event(now, MSS)  # the same episode: ignored
    assert cc.cwnd == inflight + MSS
    # During the first round: cwnd >= what is in flight + what this ACK delivered, minus losses.
    start = cc._delivered
    sample(cc, now + 0.001, prior=start - 1, inflight=inflight + 2 * MSS)
    assert cc.cwnd == inflight + 3 * MSS
    sample(cc, now + 0.002, prior=start - 1, inflight=inflight - 5 * MSS, lost=MSS)
    assert cc.cwnd == inflight + 2 * MSS  # lowered by the loss, not below pipe + acked
    assert cc.btlbw == bw
    # After a round, cwnd grows back by what is delivered, up to the model's target.
    for i in range(200):
        sample(cc, now + 0.01 + i * 0.0001, prior=start, inflight=inflight)
    assert cc.cwnd == cc.target_cwnd
    assert cc.phase == "recovery"
    cc.on_recovery_exit(now + 0.05)
    assert cc.phase == "probe_bw" and cc.cwnd >= cwnd
    assert cc.btlbw == bw and cc.pacing_rate(None) == pytest.approx(cc.pacing_gain * bw)


def test_recovery_exit_restores_cwnd():
    cc, link = converged()
    cwnd = cc.cwnd
    cc.on_congestion_event(link.now, 5 * MSS)
    assert cc.cwnd == 6 * MSS
    cc.on_recovery_exit(link.now + 0.01)
    assert cc.cwnd == cwnd and cc.phase == "probe_bw"
    cc.on_recovery_exit(link.now + 0.02)  # not in recovery: nothing
    assert cc.cwnd == cwnd


def test_rto_keeps_model_and_restores_after_a_round():
    cc, link = converged()
    now = link.now
    bw, pacing, cwnd = cc.btlbw, cc.pacing_rate(None), cc.cwnd
    marker = cc._delivered
    cc.on_rto(now, cwnd)
    assert cc.cwnd == MSS and cc.phase == "probe_bw"
    assert cc.btlbw == bw and cc.pacing_rate(None) == pacing
    cc.on_rto(now + 0.4, cwnd)  # backed-off timeout: still 1 segment, saved cwnd kept
    assert cc.cwnd == MSS
    # An ACK of something sent before the timeout: cwnd grows by it, no restore yet.
    sample(cc, now + 0.5, prior=marker - 1, inflight=0)
    assert cc.cwnd == MIN_PIPE_CWND_SEGMENTS * MSS  # floor of the model's cwnd
    # The retransmission (sent after the timeout) is acknowledged: cwnd comes back.
    sample(cc, now + 0.6, prior=marker, inflight=0)
    assert cc.cwnd == cwnd
    assert cc.btlbw == bw


def test_spurious_rto_is_undone():
    cc, link = converged()
    cwnd = cc.cwnd
    cc.on_rto(link.now, cwnd)
    assert cc.cwnd == MSS
    cc.on_spurious_rto(link.now + 0.01)
    assert cc.cwnd == cwnd and cc.phase == "probe_bw"
    cc.on_spurious_rto(link.now + 0.02)  # nothing left to undo
    assert cc.cwnd == cwnd


def test_rto_in_the_middle_of_recovery_restores_pre_recovery_cwnd():
    cc, link = converged()
    cwnd = cc.cwnd
    cc.on_congestion_event(link.now, 5 * MSS)
    cc.on_rto(link.now + 0.3, 5 * MSS)
    assert cc.cwnd == MSS and not cc.in_recovery
    sample(cc, link.now + 0.4, prior=cc._delivered, inflight=0)
    assert cc.cwnd == cwnd


# -- samples, app-limited, mss --------------------------------------------------------------------


def test_app_limited_samples_only_raise_btlbw():
    cc, link = converged()
    bw = cc.btlbw
    for i in range(50):
        sample(cc, link.now + i * 0.01, rate=bw / 4, app_limited=True)
    assert cc.btlbw == bw
    sample(cc, link.now + 0.6, rate=bw * 1.5, app_limited=True)
    assert cc.btlbw == bw * 1.5


def test_app_limited_rounds_do_not_end_startup():
    cc = Bbr(MSS)
    t = 1.0
    for _ in range(20):  # rounds of app-limited samples at a constant rate
        sample(cc, t, rate=BW / 10, prior=cc._delivered, app_limited=True)
        t += MIN_RTT
    assert cc.state == "startup" and not cc.filled_pipe


def test_constant_rate_rounds_end_startup():
    cc = Bbr(MSS, rng=random.Random(2))
    t = 1.0
    states = []
    for _ in range(6):  # each sample starts a new round; the rate never grows
        sample(cc, t, rate=BW, prior=cc._delivered, inflight=int(3 * BDP))
        states.append(cc.state)
        t += MIN_RTT
    # round 1 sets the baseline, rounds 2-4 show no growth -> full pipe after the 4th.
    assert states[:3] == ["startup"] * 3 and states[3] == "drain"
    sample(cc, t, rate=BW, prior=cc._delivered, inflight=int(BDP))  # queue drained
    assert cc.state == "probe_bw"
    assert cc.pacing_rate(None) == pytest.approx(cc.pacing_gain * BW)


def test_drain_gain():
    cc = Bbr(MSS)
    t = 1.0
    for _ in range(4):
        sample(cc, t, rate=BW, prior=cc._delivered, inflight=int(3 * BDP))
        t += MIN_RTT
    assert cc.state == "drain" and cc.pacing_gain == pytest.approx(DRAIN_GAIN)
    assert cc.pacing_rate(None) == pytest.approx(BW / HIGH_GAIN)


def test_sample_without_rate_or_rtt_is_harmless():
    cc = Bbr(MSS)
    rs = RateSample(0.0, 0.0, 0, 0, MSS, None, False, MSS, 0, 9 * MSS)
    cc.on_rate_sample(rs, 1.0)
    assert cc.btlbw == 0 and cc.rtprop_s is None
    assert cc.cwnd == 11 * MSS  # STARTUP still grows by what was delivered


def test_mss_change_moves_the_floors():
    cc, link = converged()
    cc.mss = 9000  # path MTU discovery raised the segment size
    cc.on_congestion_event(link.now, 0)
    assert cc.cwnd == MIN_PIPE_CWND_SEGMENTS * 9000
    assert cc.target_cwnd == (
        int(2 * cc.bdp + cc.btlbw * ACK_AGGREGATION_S) + QUANTUM_SEGMENTS * 9000 + cc.extra_acked
    )


def test_per_ack_state_is_bounded():
    # O(1) per ACK: nothing grows with the number of samples.
    cc, link = converged()
    link.run(2.0)
    assert len(cc._btlbw._s) == 3
    assert not any(isinstance(getattr(cc, a, None), (list, dict, deque)) for a in Bbr.__slots__)


def test_ack_aggregation_is_measured_and_widens_cwnd():
    # Linux's extra_acked: a receiver that ACKs in bursts delivers data in clumps; cwnd grows
    # by the clump BtlBw does not explain, or the sender would stall between bursts.
    smooth, _ = converged()
    assert smooth.extra_acked <= 2 * MSS
    batch = 0.010
    cc, link = converged(ack_batch_s=batch)
    link.run(2.0)
    assert cc.extra_acked >= 0.5 * BW * batch
    assert cc.extra_acked <= 2 * BW * batch
    assert cc.target_cwnd == (
        int(2 * cc.bdp + cc.btlbw * ACK_AGGREGATION_S) + QUANTUM_SEGMENTS * MSS + cc.extra_acked
    )
    assert cc.btlbw == pytest.approx(BW, rel=0.1)  # the clumps do not inflate the model


def test_ack_aggregation_is_not_added_in_startup():
    cc = Bbr(MSS, rng=random.Random(1))
    link = Link(cc, ack_batch_s=0.010)
    link.run(0.15)
    assert not cc.filled_pipe and cc.extra_acked > 0
    assert cc.target_cwnd == cc._inflight(cc.cwnd_gain)
