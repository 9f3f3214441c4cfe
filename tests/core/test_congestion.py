"""Congestion controllers: Reno (RFC 5681) and CUBIC (RFC 9438) behind one interface."""

from itertools import pairwise

import pytest

from rtcp.core.congestion import (
    CONTROLLERS,
    CUBIC_ALPHA,
    CUBIC_BETA,
    CUBIC_C,
    INFINITE_SSTHRESH_BYTES,
    CongestionController,
    Cubic,
    Reno,
    make_controller,
)

MSS = 1000
RTT = 0.1


def one_rtt(cc, now, rtt=RTT, ack_bytes=MSS, flight=None):
    """Acknowledge one cwnd's worth of data in ACKs of ack_bytes spread over one RTT."""
    cwnd = cc.cwnd
    flight = cwnd if flight is None else flight
    sizes = [ack_bytes] * (cwnd // ack_bytes)
    if cwnd % ack_bytes:
        sizes.append(cwnd % ack_bytes)
    n = len(sizes)
    for i, size in enumerate(sizes):
        cc.on_ack(size, now + rtt * (i + 1) / n, rtt, flight)
    return now + rtt


def in_ca(cls, cwnd_segments, **kw):
    """A controller in congestion avoidance at the given window (ssthresh just reached)."""
    cc = cls(MSS, initial_window_segments=cwnd_segments, **kw)
    cc.ssthresh = cc.cwnd
    return cc


# -- registry ---------------------------------------------------------------------------------


def test_registry():
    from rtcp.core.bbr import Bbr

    assert CONTROLLERS == {"reno": Reno, "cubic": Cubic, "bbr": Bbr}
    for name, cls in CONTROLLERS.items():
        cc = make_controller(name, MSS)
        assert type(cc) is cls and cc.name == name
        assert isinstance(cc, CongestionController)
    assert make_controller("CUBIC", MSS).name == "cubic"
    assert make_controller("reno", MSS, initial_window_segments=4).cwnd == 4 * MSS


def test_unknown_controller_lists_names():
    with pytest.raises(ValueError, match=r"vegas.*bbr, cubic, reno"):
        make_controller("vegas", MSS)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Reno(0)
    with pytest.raises(ValueError):
        Cubic(MSS, initial_window_segments=0)


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_initial_state(cls):
    cc = cls(MSS)
    assert cc.cwnd == 10 * MSS  # RFC 6928 IW10
    assert cc.ssthresh == INFINITE_SSTHRESH_BYTES
    assert cc.phase == "slow_start" and not cc.in_recovery
    assert cc.pacing_rate(0.05) is None and cc.pacing_rate(None) is None
    assert cls.name in repr(cc) or cls.__name__ in repr(cc)


# -- slow start -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_slow_start_doubles_per_rtt(cls):
    cc = cls(MSS)
    now = 0.0
    for expected in (20, 40, 80, 160):
        now = one_rtt(cc, now)
        assert cc.cwnd == expected * MSS
        assert cc.phase == "slow_start"


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_slow_start_with_delayed_acks_still_doubles(cls):
    # RFC 3465: appropriate byte counting lets an ACK of two segments grow cwnd by two.
    cc = cls(MSS)
    one_rtt(cc, 0.0, ack_bytes=2 * MSS)
    assert cc.cwnd == 20 * MSS


def test_slow_start_counts_every_byte_of_a_stretch_ack():
    # rtcp's receiver ACKs once per batch it reads: an ACK of 8 segments grows cwnd by 8
    # (Linux's rule; RFC 3465's L = 2*SMSS would cap it at 2 and slow start would crawl).
    cc = Reno(MSS)
    cc.on_ack(8 * MSS, 0.1, RTT, 10 * MSS)
    assert cc.cwnd == 18 * MSS
    cc.on_ack(500, 0.1, RTT, 18 * MSS)
    assert cc.cwnd == 18 * MSS + 500  # small ACKs grow by what they acked


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_slow_start_doubles_per_round_trip_with_one_ack_per_flight(cls):
    cc = cls(MSS)
    for _ in range(3):
        cc.on_ack(cc.cwnd, 0.1, RTT, cc.cwnd)  # one stretch ACK for the whole flight
    assert cc.cwnd == 80 * MSS


def test_slow_start_stops_at_ssthresh():
    cc = Reno(MSS)
    cc.ssthresh = 15 * MSS
    one_rtt(cc, 0.0)
    assert cc.cwnd == 15 * MSS
    assert cc.phase == "congestion_avoidance"


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_no_growth_when_not_cwnd_limited(cls):
    # An application-limited sender (tiny flight) must not inflate cwnd (RFC 7661).
    cc = cls(MSS)
    for i in range(100):
        cc.on_ack(MSS, i * 0.01, RTT, 0)
    assert cc.cwnd == 10 * MSS


def test_zero_ack_is_ignored():
    cc = Reno(MSS)
    cc.on_ack(0, 0.0, RTT, 10 * MSS)
    assert cc.cwnd == 10 * MSS


# -- Reno congestion avoidance, loss and timeout ----------------------------------------------


def test_reno_ca_grows_one_mss_per_rtt():
    cc = in_ca(Reno, 20)
    now = 0.0
    for k in range(1, 11):
        now = one_rtt(cc, now)
        assert cc.cwnd == (20 + k) * MSS
        assert cc.phase == "congestion_avoidance"


def test_reno_ca_byte_counting_with_delayed_acks():
    cc = in_ca(Reno, 20)
    now = 0.0
    for _ in range(10):
        now = one_rtt(cc, now, ack_bytes=2 * MSS)
    assert cc.cwnd == 30 * MSS


def test_reno_congestion_event_halves():
    cc = in_ca(Reno, 40)
    cc.on_congestion_event(1.0, 40 * MSS)
    assert cc.ssthresh == 20 * MSS and cc.cwnd == 20 * MSS
    assert cc.in_recovery and cc.phase == "recovery"
    # The same episode: no second reduction, and no growth from ACKs.
    cc.on_congestion_event(1.1, 20 * MSS)
    cc.on_ack(5 * MSS, 1.2, RTT, 20 * MSS)
    assert cc.cwnd == 20 * MSS and cc.ssthresh == 20 * MSS
    cc.on_recovery_exit(1.3)
    assert not cc.in_recovery and cc.cwnd == 20 * MSS
    assert cc.phase == "congestion_avoidance"
    one_rtt(cc, 1.3)
    assert cc.cwnd == 21 * MSS


def test_reno_ssthresh_uses_flight_size_and_floor():
    cc = in_ca(Reno, 40)
    cc.on_congestion_event(0.0, 10 * MSS)  # flight, not cwnd (RFC 5681 eq. 4)
    assert cc.ssthresh == 5 * MSS
    cc = in_ca(Reno, 40)
    cc.on_congestion_event(0.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS


def test_recovery_exit_without_recovery_is_a_no_op():
    cc = in_ca(Reno, 20)
    cc.on_recovery_exit(0.0)
    assert cc.cwnd == 20 * MSS and cc.phase == "congestion_avoidance"


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_rto_collapses_to_one_mss(cls):
    cc = in_ca(cls, 40)
    cc.on_rto(1.0, 40 * MSS)
    assert cc.cwnd == MSS
    expected = 20 * MSS if cls is Reno else int(40 * MSS * CUBIC_BETA)
    assert cc.ssthresh == expected
    assert cc.phase == "slow_start" and not cc.in_recovery
    # Repeated timeouts of the same data keep ssthresh (RFC 5681 3.1).
    cc.on_rto(2.0, MSS)
    assert cc.ssthresh == expected and cc.cwnd == MSS
    # Slow start back up to ssthresh.
    now = 3.0
    for _ in range(6):
        now = one_rtt(cc, now, flight=cc.ssthresh)
    assert cc.cwnd >= expected and cc.phase == "congestion_avoidance"


def test_rto_after_progress_recomputes_ssthresh():
    cc = in_ca(Reno, 40)
    cc.on_rto(1.0, 40 * MSS)
    cc.on_ack(MSS, 1.5, RTT, MSS)
    cc.on_rto(3.0, 8 * MSS)
    assert cc.ssthresh == 4 * MSS


def test_rto_leaves_recovery():
    cc = in_ca(Reno, 40)
    cc.on_congestion_event(1.0, 40 * MSS)
    cc.on_rto(2.0, 20 * MSS)
    assert not cc.in_recovery and cc.cwnd == MSS and cc.ssthresh == 10 * MSS


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_spurious_rto_undo(cls):
    cc = in_ca(cls, 40)
    cc.on_rto(1.0, 40 * MSS)
    cc.on_ack(MSS, 1.1, RTT, MSS)  # the ACK that shows the original arrived
    cc.on_spurious_rto(1.1)
    assert cc.cwnd == 40 * MSS and cc.ssthresh == 40 * MSS
    assert cc.phase == "congestion_avoidance"
    cc.on_spurious_rto(1.2)  # nothing left to undo
    assert cc.cwnd == 40 * MSS
    one_rtt(cc, 1.2)
    assert cc.cwnd > 40 * MSS


def test_spurious_rto_without_rto_is_a_no_op():
    cc = in_ca(Reno, 40)
    cc.on_spurious_rto(0.0)
    assert cc.cwnd == 40 * MSS
    cc.on_rto(1.0, 40 * MSS)
    cc.on_congestion_event(1.5, MSS)  # a newer congestion signal voids the undo
    cc.on_spurious_rto(1.6)
    assert cc.cwnd == 2 * MSS


# -- CUBIC ------------------------------------------------------------------------------------


def test_cubic_congestion_event_multiplies_by_beta():
    cc = in_ca(Cubic, 100)
    cc.on_congestion_event(0.0, 100 * MSS)
    assert cc.ssthresh == cc.cwnd == 70 * MSS
    assert cc.in_recovery and cc.phase == "recovery"
    assert cc._w_max == pytest.approx(100)


def test_cubic_fast_convergence():
    cc = in_ca(Cubic, 100)
    cc.on_congestion_event(0.0, 100 * MSS)
    cc.on_recovery_exit(0.5)
    cc.on_congestion_event(1.0, 70 * MSS)  # lost again below the previous W_max
    assert cc._w_max == pytest.approx(70 * (1 + CUBIC_BETA) / 2)
    assert cc.cwnd == 49 * MSS
    plain = in_ca(Cubic, 100, fast_convergence=False)
    plain.on_congestion_event(0.0, 100 * MSS)
    plain.on_recovery_exit(0.5)
    plain.on_congestion_event(1.0, 70 * MSS)
    assert plain._w_max == pytest.approx(70)


def test_cubic_growth_follows_cubic_curve():
    """After a loss at W_max the window rises fast, flattens (concave) near W_max at t = K,
    then accelerates again (convex), tracking W_cubic(t) of RFC 9438 eq. (1)."""
    w_max = 1000
    cc = in_ca(Cubic, w_max)
    cc.on_congestion_event(0.0, w_max * MSS)
    cc.on_recovery_exit(0.0)
    k = ((w_max - w_max * CUBIC_BETA) / CUBIC_C) ** (1 / 3)  # ~9.09 s
    now = 0.0
    samples = []  # (t, cwnd in segments) at the end of each RTT
    while now < k + 4.0:
        now = one_rtt(cc, now, ack_bytes=10 * MSS)
        samples.append((now, cc.cwnd / MSS))
    growth = [b[1] - a[1] for a, b in pairwise(samples)]
    times = [t for t, _ in samples[1:]]
    early = [g for t, g in zip(times, growth) if t < k - 1]
    late = [g for t, g in zip(times, growth) if t > k + 1]
    near = [g for t, g in zip(times, growth) if abs(t - k) < 0.5]
    # Concave: per-RTT growth shrinks on the way up to W_max.
    assert all(a >= b - 1e-9 for a, b in pairwise(early))
    # Convex: per-RTT growth increases past W_max.
    assert all(b >= a - 1e-9 for a, b in pairwise(late))
    assert max(near) < min(early[0], late[-1]) / 5  # plateau around t = K
    at_k = min(samples, key=lambda s: abs(s[0] - k))[1]
    assert at_k == pytest.approx(w_max, rel=0.01)
    for t, w in samples:  # never above the curve one RTT ahead, never far below it
        assert w <= cc.w_cubic(t + RTT) + 1
        assert w >= cc.w_cubic(t) - 0.05 * w_max
    # Growth is time-based: ACK granularity does not change the window much.
    other = in_ca(Cubic, w_max)
    other.on_congestion_event(0.0, w_max * MSS)
    other.on_recovery_exit(0.0)
    now = 0.0
    while now < k + 4.0:
        now = one_rtt(other, now, ack_bytes=50 * MSS)
    assert other.cwnd == pytest.approx(cc.cwnd, rel=0.02)


def test_cubic_reno_friendly_region():
    """With a short RTT and small window Reno would grow faster than the cubic curve:
    CUBIC then follows W_est (RFC 9438 4.3), alpha_cubic segments per RTT."""
    cc = in_ca(Cubic, 20)
    cc.on_congestion_event(0.0, 20 * MSS)
    cc.on_recovery_exit(0.0)
    assert cc.cwnd == 14 * MSS
    now = 0.0
    rtt = 0.001
    for _ in range(10):
        now = one_rtt(cc, now, rtt=rtt)
    assert cc.w_cubic(now) < 14.1  # the cubic curve has barely moved
    # ~alpha_cubic per RTT (slightly less: cwnd grows within each RTT of ACKs)
    assert cc.cwnd / MSS == pytest.approx(14 + 10 * CUBIC_ALPHA, abs=0.6)
    assert cc.cwnd / MSS > 14 + 8 * CUBIC_ALPHA
    for _ in range(30):
        now = one_rtt(cc, now, rtt=rtt)
    # Past the window before the loss (20), W_est grows like Reno: ~1 segment per RTT.
    before = cc.cwnd
    for _ in range(10):
        now = one_rtt(cc, now, rtt=rtt)
    assert (cc.cwnd - before) / MSS == pytest.approx(10, abs=1.0)


def test_cubic_after_rto_starts_convex():
    cc = in_ca(Cubic, 100)
    cc.on_rto(0.0, 100 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 70 * MSS
    now = 0.0
    while cc.phase == "slow_start":
        now = one_rtt(cc, now, flight=cc.ssthresh)
    assert cc.cwnd == pytest.approx(70 * MSS, rel=0.01)  # the last ACKs already count as CA
    # RFC 9438 4.8: K = 0 and W_max = cwnd at the start of CA, so growth only accelerates.
    prev = cc.cwnd
    growth = []
    for _ in range(70):
        now = one_rtt(cc, now, ack_bytes=5 * MSS)
        growth.append(cc.cwnd - prev)
        prev = cc.cwnd
    assert cc._k_s == 0.0 and cc._w_max == pytest.approx(70, rel=0.01)
    # Reno-friendly (linear) at first, then the cubic term takes over (from t ~ 3.7 s).
    assert max(growth[:30]) - min(growth[:30]) <= 2
    cubic_part = growth[45:]
    assert all(b >= a - 2 for a, b in pairwise(cubic_part))
    assert growth[-1] > 2 * growth[0]


def test_cubic_first_ca_without_loss_is_convex_from_cwnd():
    cc = Cubic(MSS)
    cc.ssthresh = 50 * MSS
    now = 0.0
    while cc.phase == "slow_start":
        now = one_rtt(cc, now)
    assert cc._w_max == 50 and cc._k_s == 0.0  # the epoch began when cwnd reached ssthresh
    prev, growth = cc.cwnd, []
    for _ in range(20):
        now = one_rtt(cc, now)
        growth.append(cc.cwnd - prev)
        prev = cc.cwnd
    assert all(g >= 0 for g in growth) and growth[-1] > growth[0]


def test_cubic_no_growth_in_recovery():
    cc = in_ca(Cubic, 50)
    cc.on_congestion_event(0.0, 50 * MSS)
    one_rtt(cc, 0.0)
    assert cc.cwnd == 35 * MSS
