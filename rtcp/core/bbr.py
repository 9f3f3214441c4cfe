"""BBR (v1): a rate-based congestion controller that models the path instead of reacting to loss.

After draft-cardwell-iccrg-bbr-congestion-control-00 ("BBR Congestion Control") and Linux's
tcp_bbr.c. BBR keeps two estimates, both fed by the connection's delivery-rate samples
(`on_rate_sample`, draft-cheng-iccrg-delivery-rate-estimation):

- BtlBw, the bottleneck bandwidth: the maximum delivery rate over the last 10 round trips;
- RTprop, the round-trip propagation time: the minimum RTT over the last 10 seconds.

It paces at pacing_gain * BtlBw (`pacing_rate`) and caps what is in flight at
cwnd_gain * BtlBw * RTprop plus a small allowance (`cwnd`). A state machine moves the gains:

- STARTUP: gains 2/ln2 (doubles the sending rate each round) until BtlBw stops growing by 25%
  for 3 rounds (the pipe is full);
- DRAIN: pacing gain ln2/2 until what is in flight falls to one BDP (the startup queue is gone);
- PROBE_BW: pacing gain cycles [5/4, 3/4, 1, 1, 1, 1, 1, 1], one RTprop per phase: probe for
  more bandwidth, drain the probe's queue, cruise; cwnd gain 2;
- PROBE_RTT: when RTprop was not refreshed for 10 s, cwnd drops to 4 segments for
  max(200 ms, one round trip) so that the queue drains and a fresh minimum RTT is seen.

Loss is not a congestion signal for the model: BtlBw and RTprop are untouched by it, so random
loss costs only the lost segments (and the retransmissions), not the sending rate. Loss only
shapes cwnd: recovery starts with one round trip of packet conservation, and a timeout drops
cwnd to one segment until a segment sent after it is delivered.

Driving it (what the connection must do): call `on_rate_sample` on every ACK that delivers data,
inside recovery too; everything here (model, state machine, cwnd growth) happens there. `on_ack`
only does bookkeeping, so the base class' slow start never fights the model. Pace at
`pacing_rate()` and keep pipe below `cwnd`. All per-ACK work is O(1).

Simplified relative to the draft / Linux (on purpose, documented so nobody is surprised):

- Idle restart: not handled. After an idle period BBR keeps its state and gains; the pacing
  rate already prevents a line-rate burst.
- App-limited: the connection marks samples (`is_app_limited`); BBR only uses that flag, and
  during PROBE_RTT it treats the samples of segments sent before the probe's flight is delivered
  as app-limited itself (the draft does it by setting the connection's C.app_limited).
- Recovery: on entry cwnd = min(cwnd, bytes_in_flight + 1 segment) (at least 4 segments) and
  packet conservation (cwnd >= pipe + newly delivered) for one round trip, then cwnd may grow
  again toward the model's target; on exit cwnd is restored to what it was before recovery.
  Newly lost bytes are subtracted from cwnd (as the draft's BBRModulateCwndForRecovery).
- Timeout: cwnd = 1 segment; the model is kept and cwnd grows by the bytes delivered; once a
  segment sent after the timeout is delivered, cwnd is restored to its value before it (Linux
  does this when leaving its Loss state). A spurious timeout is undone by the base class.
- No long-term ("policer") bandwidth sampling, no pacing margin, no TSO-based quantum: the
  quantum allowance is 3 segments.
- ssthresh is not used by BBR and stays "infinite" (as in Linux).
"""

from __future__ import annotations

import math
import random

from rtcp.core.congestion import (
    DEFAULT_INITIAL_WINDOW_SEGMENTS,
    INFINITE_SSTHRESH_BYTES,
    PHASE_RECOVERY,
    CongestionController,
    RateSample,
    register,
)

__all__ = [
    "HIGH_GAIN",
    "PACING_GAIN_CYCLE",
    "PHASE_DRAIN",
    "PHASE_PROBE_BW",
    "PHASE_PROBE_RTT",
    "PHASE_STARTUP",
    "Bbr",
    "WindowedMaxFilter",
]

PHASE_STARTUP = "startup"
PHASE_DRAIN = "drain"
PHASE_PROBE_BW = "probe_bw"
PHASE_PROBE_RTT = "probe_rtt"

HIGH_GAIN = 2 / math.log(2)  # ~2.885: the smallest gain that doubles the rate each round
DRAIN_GAIN = 1 / HIGH_GAIN
PROBE_BW_CWND_GAIN = 2.0
PACING_GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BTLBW_FILTER_ROUNDS = len(PACING_GAIN_CYCLE) + 2  # 10 round trips (Linux bbr_bw_rtts)
RTPROP_FILTER_S = 10.0
PROBE_RTT_DURATION_S = 0.2
FULL_BW_GROWTH = 1.25  # STARTUP: BtlBw must grow this much per round...
FULL_BW_ROUNDS = 3  # ...or the pipe is full after this many rounds
MIN_PIPE_CWND_SEGMENTS = 4
QUANTUM_SEGMENTS = 3  # allowance for delayed / stretched ACKs and send bursts
# ACK aggregation: a user-space receiver ACKs once per batch of datagrams it reads, so ACKs
# come in bursts up to a wakeup apart and a window of BDP alone (RTprop on loopback is ~100 us)
# starves the pipe. Two allowances: a constant floor of ACK_AGGREGATION_S of BtlBw in every
# window, and Linux BBR's measured estimate (bbr_update_ack_aggregation, "extra_acked"): the
# most data an ACK epoch delivered beyond what BtlBw explains, max over two windows of
# EXTRA_ACKED_WIN_ROUNDS round trips, added once the pipe is full, at most BtlBw *
# EXTRA_ACKED_MAX_S.
ACK_AGGREGATION_S = 0.002
EXTRA_ACKED_WIN_ROUNDS = 5
EXTRA_ACKED_MAX_S = 0.1
ACK_EPOCH_RESET_BYTES = 1 << 20  # an epoch this old (in bytes acked) starts over
NO_SRTT_S = 0.001  # the draft's initial pacing rate divides by SRTT, or 1 ms without one


class WindowedMaxFilter:
    """Running maximum over a sliding window, in O(1) per update and fixed memory.

    Kathleen Nichols' algorithm (as Linux's lib/win_minmax.c): keep the best, second best and
    third best samples, each from a later part of the window, so that when the best one ages
    out a good replacement is at hand. Times are any monotonic number (here: round trips).
    """

    __slots__ = ("_s",)

    def __init__(self) -> None:
        self._s = [(0, 0.0), (0, 0.0), (0, 0.0)]  # (time, value): best, 2nd, 3rd

    @property
    def value(self) -> float:
        return self._s[0][1]

    def reset(self, t: float, value: float) -> float:
        self._s[0] = self._s[1] = self._s[2] = (t, value)
        return value

    def update(self, window: float, t: float, value: float) -> float:
        """Add `value` measured at time `t`; samples older than `window` are forgotten."""
        s = self._s
        sample = (t, value)
        if value >= s[0][1] or t - s[2][0] > window:
            return self.reset(t, value)  # a new maximum, or nothing left in the window
        if value >= s[1][1]:
            s[2] = s[1] = sample
        elif value >= s[2][1]:
            s[2] = sample
        # Age the choices (lib/win_minmax.c minmax_subwin_update).
        dt = t - s[0][0]
        if dt > window:
            # The best one left the window: promote the 2nd and 3rd choices.
            s[0], s[1], s[2] = s[1], s[2], sample
            if t - s[0][0] > window:
                s[0], s[1], s[2] = s[1], s[2], sample
        elif s[1][0] == s[0][0] and dt > window / 4:
            # A quarter of the window without a new best: take a 2nd choice from now on.
            s[2] = s[1] = sample
        elif s[2][0] == s[1][0] and dt > window / 2:
            # Half the window without a new 2nd choice: take a 3rd choice from now on.
            s[2] = sample
        return s[0][1]


@register
class Bbr(CongestionController):
    """BBR v1: paces at the estimated bottleneck bandwidth; loss does not shrink the model.

    Read-only model figures (for tests, traces and stats): `btlbw` (bytes/s), `rtprop_s`
    (seconds, None before the first RTT sample), `bdp` (bytes), `state` (the phase without
    recovery), `pacing_gain`, `cwnd_gain`, `cycle_index`, `round_count`, `filled_pipe`,
    `target_cwnd`.
    """

    name = "bbr"
    uses_rng = True  # the first ProbeBW phase is random (draft 4.3.4.1)
    __slots__ = (
        "_ack_epoch_acked",
        "_ack_epoch_start",
        "_app_limited_until",
        "_btlbw",
        "_conservation_end",
        "_cycle_index",
        "_cycle_stamp",
        "_delivered",
        "_extra_acked",
        "_extra_acked_prev",
        "_extra_acked_rounds",
        "_full_bw",
        "_full_bw_count",
        "_initial_window_segments",
        "_next_round_delivered",
        "_pacing_rate",
        "_packet_conservation",
        "_prior_cwnd",
        "_probe_rtt_done_stamp",
        "_probe_rtt_round_done",
        "_rng",
        "_round_start",
        "_rto_round_end",
        "_rtprop",
        "_rtprop_expired",
        "_rtprop_stamp",
        "_state",
        "cwnd_gain",
        "filled_pipe",
        "pacing_gain",
        "round_count",
    )

    def __init__(
        self,
        mss: int,
        *,
        initial_window_segments: int = DEFAULT_INITIAL_WINDOW_SEGMENTS,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(mss, initial_window_segments=initial_window_segments)
        self.ssthresh = INFINITE_SSTHRESH_BYTES  # unused by BBR
        self._initial_window_segments = initial_window_segments
        self._rng = rng if rng is not None else random.Random()
        # Model.
        self._btlbw = WindowedMaxFilter()
        self._rtprop = math.inf  # seconds
        self._rtprop_stamp: float | None = None  # when RTprop was last set (None: never)
        self._rtprop_expired = False
        # Round trips (draft 4.1.1.3): a round ends when a segment sent after it began is
        # delivered, i.e. when a sample's prior_delivered reaches the marker.
        self.round_count = 0
        self._next_round_delivered = 0
        self._round_start = False
        self._delivered = 0  # the connection's delivered count at the latest sample
        # STARTUP's full-pipe detector (draft 4.3.2.2).
        self.filled_pipe = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        # State machine.
        self._state = PHASE_STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done_stamp: float | None = None
        self._probe_rtt_round_done = False
        self._app_limited_until = -1  # samples with prior_delivered <= this count as app-limited
        self._pacing_rate = 0.0  # bytes/s; 0 until the first bandwidth sample
        # ACK aggregation (Linux's extra_acked): the max of this window and of the one before.
        self._extra_acked = 0
        self._extra_acked_prev = 0
        self._extra_acked_rounds = 0
        self._ack_epoch_start: float | None = None
        self._ack_epoch_acked = 0
        # cwnd modulation by loss.
        self._prior_cwnd = 0  # cwnd to restore after recovery, PROBE_RTT or a timeout
        self._packet_conservation = False
        self._conservation_end = 0  # delivered count marking the end of conservation's round
        self._rto_round_end: int | None = None  # delivered count at the last timeout

    # -- read-only model --------------------------------------------------------------------

    @property
    def btlbw(self) -> float:
        """Bottleneck bandwidth estimate, bytes/s (0 before the first sample)."""
        return self._btlbw.value

    @property
    def rtprop_s(self) -> float | None:
        """Round-trip propagation time estimate, seconds (None before the first RTT sample)."""
        return None if self._rtprop == math.inf else self._rtprop

    @property
    def bdp(self) -> float:
        """BtlBw * RTprop in bytes (0 until both are known)."""
        if self._rtprop == math.inf:
            return 0.0
        return self._btlbw.value * self._rtprop

    @property
    def state(self) -> str:
        return self._state

    @property
    def phase(self) -> str:
        """One of startup, drain, probe_bw, probe_rtt; or recovery (the base class' phase)."""
        return PHASE_RECOVERY if self.in_recovery else self._state

    @property
    def cycle_index(self) -> int:
        """PROBE_BW's position in PACING_GAIN_CYCLE (meaningless in other states)."""
        return self._cycle_index

    @property
    def initial_window(self) -> int:
        return self._initial_window_segments * self.mss

    @property
    def target_cwnd(self) -> int:
        """The window the model aims at: BBRInflight with the current cwnd gain, plus the ACK
        aggregation allowance."""
        return self._inflight(self.cwnd_gain) + self._aggregation_cwnd()

    def _inflight(self, gain: float) -> int:
        """gain * BDP plus the quantum allowance; the initial window before a model exists."""
        bw = self._btlbw.value
        if self._rtprop == math.inf or bw <= 0:
            return self.initial_window
        return int(gain * bw * self._rtprop + bw * ACK_AGGREGATION_S) + QUANTUM_SEGMENTS * self.mss

    def pacing_rate(self, srtt_s: float | None) -> float | None:
        """pacing_gain * BtlBw in bytes/s. Until the pipe is full, never below the draft's
        BBRInitPacingRate, HIGH_GAIN * initial window / (SRTT, or 1 ms without one): the
        draft sets it first and then only raises it in STARTUP, so the small samples of the
        first round trips do not slow the start down (on loopback they paced a 64 KB
        datagram 10 ms apart)."""
        if self.filled_pipe and self._pacing_rate > 0:
            return self._pacing_rate
        rtt = srtt_s if srtt_s is not None and srtt_s > 0 else NO_SRTT_S
        return max(self._pacing_rate, HIGH_GAIN * self.initial_window / rtt)

    # -- the model, driven by delivery-rate samples ------------------------------------------

    def on_rate_sample(self, sample: RateSample, now: float) -> None:
        """One ACK's delivery-rate sample: update the model, the state and cwnd (draft 4.2)."""
        self._delivered = sample.total_delivered
        self._update_round(sample)
        self._update_btlbw(sample)
        self._update_ack_aggregation(sample, now)
        self._check_cycle_phase(sample, now)
        self._check_full_pipe(sample)
        self._check_drain(sample, now)
        self._update_rtprop(sample, now)
        self._check_probe_rtt(sample, now)
        self._set_pacing_rate()
        self._set_cwnd(sample)

    def _update_round(self, rs: RateSample) -> None:
        if rs.prior_delivered >= self._next_round_delivered:
            self._next_round_delivered = rs.total_delivered
            self.round_count += 1
            self._round_start = True
        else:
            self._round_start = False

    def _is_app_limited(self, rs: RateSample) -> bool:
        return rs.is_app_limited or rs.prior_delivered <= self._app_limited_until

    def _update_btlbw(self, rs: RateSample) -> None:
        rate = rs.delivery_rate
        if rate <= 0:
            return  # no valid rate in this sample (too short an interval)
        if rate >= self._btlbw.value or not self._is_app_limited(rs):
            self._btlbw.update(BTLBW_FILTER_ROUNDS, self.round_count, rate)

    def _update_ack_aggregation(self, rs: RateSample, now: float) -> None:
        """How far ACKs run ahead of BtlBw: a user-space receiver ACKs once per batch it reads,
        a proxy forwards in bursts, so data is delivered in clumps; a window of BDP alone would
        stall between them (Linux bbr_update_ack_aggregation)."""
        acked = rs.newly_delivered
        if acked <= 0:
            return
        if self._round_start:
            self._extra_acked_rounds += 1
            if self._extra_acked_rounds >= EXTRA_ACKED_WIN_ROUNDS:
                self._extra_acked_rounds = 0
                self._extra_acked_prev = self._extra_acked
                self._extra_acked = 0
        start = self._ack_epoch_start
        expected = 0.0 if start is None else self._btlbw.value * (now - start)
        if (
            start is None
            or self._ack_epoch_acked <= expected
            or self._ack_epoch_acked + acked >= ACK_EPOCH_RESET_BYTES
        ):
            self._ack_epoch_start = now  # ACKs at or below the expected rate: a new epoch
            self._ack_epoch_acked = 0
            expected = 0.0
        self._ack_epoch_acked += acked
        extra = min(int(self._ack_epoch_acked - expected), self.cwnd)
        self._extra_acked = max(self._extra_acked, extra)

    @property
    def extra_acked(self) -> int:
        """The ACK aggregation estimate, bytes (Linux bbr_extra_acked)."""
        return max(self._extra_acked, self._extra_acked_prev)

    def _aggregation_cwnd(self) -> int:
        """What cwnd adds for ACK aggregation: nothing in STARTUP, whose gain covers it."""
        if not self.filled_pipe:
            return 0
        return int(min(self.extra_acked, self._btlbw.value * EXTRA_ACKED_MAX_S))

    def _check_full_pipe(self, rs: RateSample) -> None:
        if self.filled_pipe or not self._round_start or self._is_app_limited(rs):
            return
        bw = self._btlbw.value
        if bw >= self._full_bw * FULL_BW_GROWTH:  # still growing: a new baseline
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self.filled_pipe = True

    def _enter_startup(self) -> None:
        self._state = PHASE_STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = HIGH_GAIN

    def _check_drain(self, rs: RateSample, now: float) -> None:
        if self._state == PHASE_STARTUP and self.filled_pipe:
            self._state = PHASE_DRAIN
            self.pacing_gain = DRAIN_GAIN  # drain the queue STARTUP built...
            self.cwnd_gain = HIGH_GAIN  # ...while keeping cwnd out of the way
        if self._state == PHASE_DRAIN and rs.bytes_in_flight <= self._inflight(1.0):
            self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        self._state = PHASE_PROBE_BW
        self.pacing_gain = 1.0
        self.cwnd_gain = PROBE_BW_CWND_GAIN
        # Start at a random phase other than the 3/4 one, so flows do not synchronise.
        n = len(PACING_GAIN_CYCLE)
        self._cycle_index = n - 1 - self._rng.randint(0, n - 2)
        self._advance_cycle_phase(now)

    def _advance_cycle_phase(self, now: float) -> None:
        self._cycle_stamp = now
        self._cycle_index = (self._cycle_index + 1) % len(PACING_GAIN_CYCLE)
        self.pacing_gain = PACING_GAIN_CYCLE[self._cycle_index]

    def _check_cycle_phase(self, rs: RateSample, now: float) -> None:
        if self._state != PHASE_PROBE_BW:
            return
        full_length = now - self._cycle_stamp > self._rtprop
        gain = self.pacing_gain
        if gain == 1.0:
            advance = full_length
        else:
            prior_in_flight = rs.bytes_in_flight + rs.newly_delivered + rs.newly_lost
            if gain > 1.0:
                # Probe until a phase has passed and the probe actually put more in flight
                # (or hit loss).
                advance = full_length and (
                    rs.newly_lost > 0 or prior_in_flight >= self._inflight(gain)
                )
            else:
                # Drain the probe's queue for a phase, or less if it is gone already.
                advance = full_length or prior_in_flight <= self._inflight(1.0)
        if advance:
            self._advance_cycle_phase(now)

    def _update_rtprop(self, rs: RateSample, now: float) -> None:
        stamp = self._rtprop_stamp
        self._rtprop_expired = stamp is not None and now > stamp + RTPROP_FILTER_S
        rtt = rs.rtt_s
        if rtt is not None and rtt >= 0 and (rtt <= self._rtprop or self._rtprop_expired):
            self._rtprop = rtt
            self._rtprop_stamp = now

    def _check_probe_rtt(self, rs: RateSample, now: float) -> None:
        if self._state != PHASE_PROBE_RTT and self._rtprop_expired:
            self._prior_cwnd = self._save_cwnd()
            self._state = PHASE_PROBE_RTT
            self.pacing_gain = 1.0
            self.cwnd_gain = 1.0
            self._probe_rtt_done_stamp = None
        if self._state != PHASE_PROBE_RTT:
            return
        # Samples of what is sent during PROBE_RTT reflect the tiny cwnd, not the path.
        self._app_limited_until = rs.total_delivered + max(rs.bytes_in_flight, 1)
        if self._probe_rtt_done_stamp is None:
            if rs.bytes_in_flight <= MIN_PIPE_CWND_SEGMENTS * self.mss:
                # The queue is drained: hold for PROBE_RTT_DURATION_S and one round trip.
                self._probe_rtt_done_stamp = now + PROBE_RTT_DURATION_S
                self._probe_rtt_round_done = False
                self._next_round_delivered = rs.total_delivered
        else:
            if self._round_start:
                self._probe_rtt_round_done = True
            if self._probe_rtt_round_done and now > self._probe_rtt_done_stamp:
                self._rtprop_stamp = now
                self.cwnd = max(self.cwnd, self._prior_cwnd)
                if self.filled_pipe:
                    self._enter_probe_bw(now)
                else:
                    self._enter_startup()

    def _set_pacing_rate(self) -> None:
        rate = self.pacing_gain * self._btlbw.value
        if rate <= 0:
            return
        # Until the pipe is full, never pace slower than before (the draft's rule; it keeps
        # STARTUP from being slowed by early, small samples).
        if self.filled_pipe or rate > self._pacing_rate:
            self._pacing_rate = rate

    def _set_cwnd(self, rs: RateSample) -> None:
        mss = self.mss
        if self._rto_round_end is not None and rs.prior_delivered >= self._rto_round_end:
            # A segment sent after the timeout arrived: the path works, restore cwnd.
            self._rto_round_end = None
            self.cwnd = max(self.cwnd, self._prior_cwnd)
        if self._packet_conservation and rs.prior_delivered >= self._conservation_end:
            self._packet_conservation = False  # one round trip of recovery has passed
        acked = rs.newly_delivered
        cwnd = self.cwnd
        if rs.newly_lost > 0:
            cwnd = max(cwnd - rs.newly_lost, mss)
        if self._packet_conservation:
            cwnd = max(cwnd, rs.bytes_in_flight + acked)
        else:
            target = self.target_cwnd
            if self.filled_pipe:
                cwnd = min(cwnd + acked, target)
            elif cwnd < target or self._delivered < self.initial_window:
                cwnd += acked
            cwnd = max(cwnd, MIN_PIPE_CWND_SEGMENTS * mss)
        if self._state == PHASE_PROBE_RTT:
            cwnd = min(cwnd, MIN_PIPE_CWND_SEGMENTS * mss)
        self.cwnd = int(cwnd)

    def _save_cwnd(self) -> int:
        """The cwnd to come back to (draft BBRSaveCwnd): in recovery, PROBE_RTT or after a
        timeout the current cwnd is already reduced, so keep the larger of it and the one
        saved before."""
        if not self.in_recovery and self._state != PHASE_PROBE_RTT and self._rto_round_end is None:
            return self.cwnd
        return max(self._prior_cwnd, self.cwnd)

    # -- loss events -------------------------------------------------------------------------

    def on_ack(
        self, acked_bytes: int, now: float, rtt_s: float | None, bytes_in_flight: int
    ) -> None:
        """Bookkeeping only: cwnd follows the model (on_rate_sample), not slow start."""
        if acked_bytes > 0:
            self._rto_pending = False

    def on_congestion_event(self, now: float, bytes_in_flight: int) -> None:
        """Loss found (entering recovery): the model is kept. cwnd drops to what is in flight
        (plus one segment for the fast retransmit, at least 4 segments) and packet conservation
        holds for one round trip; then cwnd may grow back toward the model's target."""
        if self.in_recovery:
            return
        self._prior_cwnd = self._save_cwnd()
        self.in_recovery = True
        self._undo = None
        floor = MIN_PIPE_CWND_SEGMENTS * self.mss
        self.cwnd = max(min(self.cwnd, bytes_in_flight + self.mss), floor)
        if self._state == PHASE_PROBE_RTT:
            self.cwnd = min(self.cwnd, floor)
        self._packet_conservation = True
        self._conservation_end = self._delivered

    def on_recovery_exit(self, now: float) -> None:
        """Recovery ended: leave packet conservation and restore the cwnd from before it."""
        if not self.in_recovery:
            return
        self.in_recovery = False
        self._packet_conservation = False
        self.cwnd = max(self.cwnd, self._prior_cwnd)
        if self._state == PHASE_PROBE_RTT:
            self.cwnd = min(self.cwnd, MIN_PIPE_CWND_SEGMENTS * self.mss)

    def on_idle_restart(self, now: float) -> None:
        """Not RFC 5681's restart window: BBR paces at its model's rate (see the docstring)."""

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """Timeout: cwnd = 1 segment for the retransmission; BtlBw and RTprop are kept, and
        cwnd is restored once a segment sent after the timeout is delivered."""
        if not self._rto_pending:
            self._undo = self._save()
            self._rto_pending = True
            self._prior_cwnd = self._save_cwnd()
        self.cwnd = self.mss
        self.in_recovery = False
        self._packet_conservation = False
        self._rto_round_end = self._delivered

    def _save(self) -> tuple:
        return (self._save_cwnd(), self.ssthresh)

    def _restore(self, saved: tuple) -> None:
        # A spurious timeout: back to the cwnd from before it (the model never changed).
        self.cwnd = max(self.cwnd, saved[0])
        self._rto_round_end = None
        self._packet_conservation = False

    def __repr__(self) -> str:
        rtprop = "-" if self._rtprop == math.inf else f"{self._rtprop * 1000:.2f}ms"
        return (
            f"<Bbr {self.phase} btlbw={self._btlbw.value:.0f}B/s rtprop={rtprop} "
            f"cwnd={self.cwnd} pacing_gain={self.pacing_gain:.3g}>"
        )
