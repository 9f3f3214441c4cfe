"""RttEstimator against the RFC 6298 formulas."""

import math

import pytest

from rtcp.core.rtt import RttEstimator


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_initial_state():
    e = RttEstimator()
    assert e.srtt_s is None and e.rttvar_s is None
    assert e.latest_rtt_s is None and e.min_rtt_s is None
    assert e.rto_s == 1.0 and e.backoff_count == 0


def test_first_sample():
    e = RttEstimator()
    e.on_sample(0.1)
    assert e.srtt_s == approx(0.1)
    assert e.rttvar_s == approx(0.05)
    assert e.rto_s == approx(0.1 + 4 * 0.05)  # 0.3
    assert e.latest_rtt_s == 0.1 and e.min_rtt_s == 0.1


def test_second_sample_uses_old_srtt_for_rttvar():
    e = RttEstimator()
    e.on_sample(0.1)
    e.on_sample(0.3)
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.3)  # 0.0875
    srtt = 0.875 * 0.1 + 0.125 * 0.3  # 0.125
    assert e.rttvar_s == approx(rttvar)
    assert e.srtt_s == approx(srtt)
    assert e.rto_s == approx(srtt + 4 * rttvar)  # 0.475
    assert e.latest_rtt_s == 0.3 and e.min_rtt_s == 0.1


def test_sequence_of_samples():
    e = RttEstimator(min_rto_s=0.001)
    srtt = rttvar = None
    for r in (0.2, 0.25, 0.18, 0.4, 0.21, 0.2, 0.2):
        e.on_sample(r)
        if srtt is None:
            srtt, rttvar = r, r / 2
        else:
            rttvar = 0.75 * rttvar + 0.25 * abs(srtt - r)
            srtt = 0.875 * srtt + 0.125 * r
    assert e.srtt_s == approx(srtt)
    assert e.rttvar_s == approx(rttvar)
    assert e.rto_s == approx(srtt + max(0.001, 4 * rttvar))
    assert e.min_rtt_s == 0.18 and e.latest_rtt_s == 0.2


def test_clock_granularity_term():
    # Steady samples drive RTTVAR towards 0; then max(G, K*RTTVAR) = G.
    e = RttEstimator(min_rto_s=0.01, clock_granularity_s=0.05)
    for _ in range(200):
        e.on_sample(0.1)
    assert e.rttvar_s < 0.001
    assert e.rto_s == approx(0.1 + 0.05)


def test_min_clamp():
    e = RttEstimator(min_rto_s=0.2)
    e.on_sample(0.01)  # 0.01 + 4 * 0.005 = 0.03
    assert e.rto_s == 0.2


def test_max_clamp():
    e = RttEstimator(max_rto_s=60.0)
    e.on_sample(30.0)  # 30 + 60 = 90
    assert e.rto_s == 60.0


def test_initial_rto_is_clamped():
    assert RttEstimator(initial_rto_s=0.05, min_rto_s=0.2).rto_s == 0.2
    assert RttEstimator(initial_rto_s=3.0).rto_s == 3.0


def test_backoff_doubles_and_caps():
    e = RttEstimator(initial_rto_s=1.0, max_rto_s=60.0)
    expected = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    for want in expected:
        e.backoff()
        assert e.rto_s == want
    assert e.backoff_count == len(expected)
    for _ in range(200):  # no overflow however long the peer is gone
        e.backoff()
    assert e.rto_s == 60.0


def test_backoff_before_sample_uses_initial_rto():
    e = RttEstimator(initial_rto_s=1.5)
    e.backoff()
    assert e.rto_s == 3.0


def test_sample_does_not_reset_backoff():
    e = RttEstimator()
    e.on_sample(0.1)  # RTO 0.3
    e.backoff()
    e.backoff()
    assert e.rto_s == approx(1.2)
    e.on_sample(0.1)  # srtt 0.1, rttvar 0.0375 -> base 0.25
    assert e.backoff_count == 2
    assert e.rto_s == approx((0.1 + 4 * 0.0375) * 4)
    e.reset_backoff()
    assert e.backoff_count == 0
    assert e.rto_s == approx(0.1 + 4 * 0.0375)


def test_backoff_applies_after_min_clamp():
    e = RttEstimator(min_rto_s=0.2)
    e.on_sample(0.01)
    e.backoff()
    assert e.rto_s == approx(0.4)


def test_bad_samples_ignored():
    e = RttEstimator()
    for bad in (-0.1, math.nan, math.inf):
        e.on_sample(bad)
    assert e.srtt_s is None and e.rto_s == 1.0
    e.on_sample(0.0)  # a zero sample is legal (same-tick ACK in a simulation)
    assert e.srtt_s == 0.0 and e.rto_s == 0.2


def test_invalid_bounds():
    with pytest.raises(ValueError):
        RttEstimator(min_rto_s=2.0, max_rto_s=1.0)
