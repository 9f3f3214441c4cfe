"""The sans-IO impairer: statistics over thousands of datagrams with fixed seeds, virtual time."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.proxy.impair import (
    DISTRIBUTIONS,
    DirectionStats,
    ImpairConfig,
    Impairer,
    make_rng,
)

N = 20_000
SEED = 1234


def impairer(seed: int = SEED, **knobs: object) -> Impairer:
    return Impairer(ImpairConfig(**knobs), random.Random(seed))  # type: ignore[arg-type]


# Where the clock stands when the first datagram arrives: nothing may depend on it. 300 s and
# 40,000 s are where float seconds lose precision a zero-based clock does not (a machine up for
# minutes or half a day): `now + 0.001 - now` is 0.000999999999976 there.
CLOCK_OFFSETS_S = (0.0, 300.0, 40_000.0)


def feed(
    imp: Impairer, count: int = N, gap_s: float = 0.001, size: int = 100, start_s: float = 0.0
) -> list[tuple[int, float, float, bytes]]:
    """Send `count` numbered datagrams `gap_s` apart from start_s; return (index, arrival,
    release, data)."""
    out = []
    for i in range(count):
        now = start_s + i * gap_s
        data = i.to_bytes(4, "big") + bytes(size - 4)
        for release, emitted in imp.process(data, now):
            out.append((i, now, release, emitted))
    return out


def delay_ns(now: float, release: float) -> int:
    """The delay added, in integer nanoseconds (what the proxy counts): exact comparisons of it
    mean what they say at any clock value."""
    return round((release - now) * 1e9)


def loss_runs(lost: Iterable[bool]) -> list[int]:
    runs, current = [], 0
    for is_lost in lost:
        if is_lost:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def lost_flags(imp: Impairer, count: int = N) -> list[bool]:
    return [not imp.process(b"x" * 10, i * 0.001) for i in range(count)]


def check_conservation(stats: DirectionStats) -> None:
    assert stats.datagrams_in + stats.duplicated == (
        stats.datagrams_out + stats.dropped_loss + stats.dropped_queue + stats.dropped_mtu
    )


# --- the fast path ------------------------------------------------------------------------


def test_no_impairment_is_a_passthrough() -> None:
    imp = impairer()
    assert imp.passthrough
    data = b"hello"
    assert imp.process(data, 3.5) == [(3.5, data)]
    assert imp.process(b"", 4.0) == [(4.0, b"")]
    assert imp.stats.datagrams_in == imp.stats.datagrams_out == 2
    assert imp.stats.bytes_in == imp.stats.bytes_out == 5


def test_passthrough_draws_no_random_numbers() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    imp = Impairer(ImpairConfig(), rng)
    for i in range(100):
        imp.process(b"x", float(i))
    assert rng.getstate() == state


@pytest.mark.parametrize(
    "knobs",
    [{"loss": 0.01}, {"delay_s": 0.01}, {"mtu_bytes": 1500}, {"rate_bytes_per_s": 1e6}],
)
def test_any_impairment_leaves_the_fast_path(knobs: dict[str, float]) -> None:
    assert not ImpairConfig(**knobs).is_passthrough  # type: ignore[arg-type]


# --- loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.3])
def test_loss_rate_within_tolerance(rate: float) -> None:
    imp = impairer(loss=rate)
    lost = sum(lost_flags(imp))
    assert lost / N == pytest.approx(rate, abs=0.01 + 0.05 * rate)
    assert imp.stats.dropped_loss == lost
    check_conservation(imp.stats)


def test_full_loss_drops_everything() -> None:
    imp = impairer(loss=1.0)
    assert all(lost_flags(imp, 500))


def test_loss_correlation_keeps_the_mean_and_makes_bursts() -> None:
    independent = lost_flags(impairer(loss=0.1))
    correlated = lost_flags(impairer(loss=0.1, loss_correlation=0.7))
    assert sum(correlated) / N == pytest.approx(0.1, abs=0.02)
    mean_burst_independent = statistics.mean(loss_runs(independent))
    mean_burst_correlated = statistics.mean(loss_runs(correlated))
    # Markov chain: P(loss | loss) = p + c(1-p) = 0.73, so bursts average 1/(1-0.73) = 3.7.
    assert mean_burst_independent < 1.3
    assert mean_burst_correlated == pytest.approx(3.7, rel=0.2)


def test_gilbert_elliott_bursts_are_longer_than_independent_loss() -> None:
    p, r = 0.01, 0.25
    ge = lost_flags(impairer(gemodel=(p, r)))
    expected_rate = p / (p + r)  # stationary share of the bad state, where all are lost
    assert sum(ge) / N == pytest.approx(expected_rate, rel=0.25)
    independent = lost_flags(impairer(loss=sum(ge) / N))
    assert statistics.mean(loss_runs(ge)) == pytest.approx(1 / r, rel=0.25)
    assert statistics.mean(loss_runs(ge)) > 2 * statistics.mean(loss_runs(independent))


def test_gilbert_elliott_four_parameters() -> None:
    # Bad state loses only half, good state loses 1%.
    p, r, loss_bad, loss_good = 0.05, 0.2, 0.5, 0.01
    imp = impairer(gemodel=(p, r, loss_bad, loss_good))
    rate = sum(lost_flags(imp)) / N
    share_bad = p / (p + r)
    assert rate == pytest.approx(share_bad * loss_bad + (1 - share_bad) * loss_good, rel=0.15)


def test_gemodel_defaults_follow_netem() -> None:
    assert ImpairConfig(gemodel=(0.1,)).gemodel == pytest.approx((0.1, 0.9, 1.0, 0.0))
    assert ImpairConfig(gemodel=(0.1, 0.3)).gemodel == pytest.approx((0.1, 0.3, 1.0, 0.0))


# --- duplicate, corrupt, mtu --------------------------------------------------------------


def test_duplicates() -> None:
    imp = impairer(duplicate=0.05)
    out = feed(imp)
    dups = imp.stats.duplicated
    assert dups / N == pytest.approx(0.05, abs=0.01)
    assert len(out) == N + dups
    assert len({i for i, *_ in out}) == N
    # Both copies are intact copies of the original.
    by_index: dict[int, list[bytes]] = {}
    for i, _, _, data in out:
        by_index.setdefault(i, []).append(data)
    pairs = [copies for copies in by_index.values() if len(copies) == 2]
    assert len(pairs) == dups
    assert all(a == b for a, b in pairs)
    check_conservation(imp.stats)


def test_corrupted_datagrams_differ_by_one_bit() -> None:
    imp = impairer(corrupt=0.1)
    out = feed(imp)
    changed = 0
    for i, _, _, data in out:
        original = i.to_bytes(4, "big") + bytes(96)
        if data != original:
            changed += 1
            assert len(data) == len(original)
            flipped = sum((a ^ b).bit_count() for a, b in zip(data, original, strict=True))
            assert flipped == 1
    assert changed == imp.stats.corrupted
    assert changed / N == pytest.approx(0.1, abs=0.01)


def test_corrupting_an_empty_datagram_is_harmless() -> None:
    imp = impairer(corrupt=1.0)
    assert imp.process(b"", 0.0) == [(0.0, b"")]
    assert imp.stats.corrupted == 0


def test_mtu_drops_only_longer_datagrams() -> None:
    imp = impairer(mtu_bytes=1200)
    assert imp.process(b"x" * 1200, 0.0) == [(0.0, b"x" * 1200)]
    assert imp.process(b"x" * 1201, 0.0) == []
    assert imp.process(b"x" * 65507, 0.0) == []
    assert imp.stats.dropped_mtu == 2
    assert imp.stats.datagrams_out == 1


# --- delay, jitter, reorder ---------------------------------------------------------------


def test_constant_delay() -> None:
    imp = impairer(delay_s=0.020)
    out = feed(imp, 1000)
    assert all(release == pytest.approx(now + 0.020) for _, now, release, _ in out)
    stats = imp.stats.to_dict()
    assert stats["added_delay_mean_s"] == pytest.approx(0.020)
    assert stats["added_delay_max_s"] == pytest.approx(0.020)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_jitter_without_reorder_keeps_order(distribution: str) -> None:
    imp = impairer(delay_s=0.010, jitter_s=0.008, distribution=distribution)
    out = feed(imp, 5000, gap_s=0.0005)
    releases = [release for _, _, release, _ in out]
    assert releases == sorted(releases)
    assert [i for i, *_ in out] == list(range(5000))
    assert all(release >= now for _, now, release, _ in out)
    assert len(set(releases)) > 100  # the jitter did vary the delay (bunched by the order)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_jitter_distribution_moments(distribution: str) -> None:
    """Arrivals far apart, so order-keeping never kicks in: the raw delay distribution."""
    delay_s, jitter_s = 0.100, 0.010
    imp = impairer(delay_s=delay_s, jitter_s=jitter_s, distribution=distribution)
    out = feed(imp, 10_000, gap_s=1.0)
    delays = [release - now for _, now, release, _ in out]
    assert statistics.mean(delays) == pytest.approx(delay_s, abs=0.05 * jitter_s)
    if distribution == "uniform":  # netem: delay +- jitter (in integer ns: exact bounds)
        delays_ns = [delay_ns(now, release) for _, now, release, _ in out]
        assert min(delays_ns) >= 90_000_000
        assert max(delays_ns) <= 110_000_000
        assert statistics.stdev(delays) == pytest.approx(jitter_s / 3**0.5, rel=0.05)
    else:
        assert statistics.stdev(delays) == pytest.approx(jitter_s, rel=0.25)
    if distribution in ("pareto", "paretonormal"):  # a long tail of late datagrams
        assert max(delays) - delay_s > 4 * (delay_s - min(delays))


@pytest.mark.parametrize("start_s", CLOCK_OFFSETS_S)
def test_delay_is_never_negative_and_at_least_the_minimum(start_s: float) -> None:
    imp = impairer(delay_s=0.005, jitter_s=0.050, distribution="normal")
    out = feed(imp, 5000, gap_s=1.0, start_s=start_s)
    assert all(release >= now for _, now, release, _ in out)
    assert any(release == now for _, now, release, _ in out)  # clipped at zero


@pytest.mark.parametrize("start_s", CLOCK_OFFSETS_S)
def test_uniform_delay_at_least_the_asked_minimum(start_s: float) -> None:
    imp = impairer(delay_s=0.030, jitter_s=0.010)
    out = feed(imp, 5000, start_s=start_s)
    assert all(delay_ns(now, release) >= 20_000_000 for _, now, release, _ in out)
    assert imp.stats.added_delay_max_ns <= 40_000_000


def inversions(out: list[tuple[int, float, float, bytes]]) -> int:
    """Datagrams released after one that arrived later (each counted once)."""
    by_release = [i for i, _, _, _ in sorted(out, key=lambda item: (item[2], item[0]))]
    count, highest = 0, -1
    for i in by_release:
        if i < highest:
            count += 1
        highest = max(highest, i)
    return count


@pytest.mark.parametrize("start_s", CLOCK_OFFSETS_S)
def test_reorder_netem_style_sends_some_at_once(start_s: float) -> None:
    imp = impairer(delay_s=0.010, reorder=0.25)
    out = feed(imp, N, gap_s=0.001, start_s=start_s)
    reordered = [(i, now, release) for i, now, release, _ in out if release == now]
    assert len(reordered) == imp.stats.reordered
    assert imp.stats.reordered / N == pytest.approx(0.25, abs=0.02)
    assert all(
        delay_ns(now, release) == 10_000_000 for _, now, release, _ in out if release != now
    )
    assert inversions(out) > 0.2 * N


def test_reorder_gap_spaces_the_reordered_ones() -> None:
    imp = impairer(delay_s=0.010, reorder=0.5, reorder_gap=5)
    out = feed(imp, N)
    picked = [i for i, now, release, _ in out if release == now]
    assert picked
    assert picked[0] >= 4
    assert min(b - a for a, b in itertools.pairwise(picked)) >= 5


@pytest.mark.parametrize("start_s", CLOCK_OFFSETS_S)
def test_reorder_delay_holds_back_the_reordered_ones(start_s: float) -> None:
    imp = impairer(reorder=0.1, reorder_delay_s=0.005)
    out = feed(imp, N, gap_s=0.001, start_s=start_s)
    held = [item for item in out if item[2] > item[1]]
    assert len(held) == imp.stats.reordered
    assert all(delay_ns(now, release) == 5_000_000 for _, now, release, _ in held)
    assert inversions(out) > 0


def test_reorder_needs_a_delay() -> None:
    with pytest.raises(ValueError, match="reorder"):
        ImpairConfig(reorder=0.1)


# --- rate and queue -----------------------------------------------------------------------


@pytest.mark.parametrize("start_s", CLOCK_OFFSETS_S)
def test_rate_caps_throughput_in_virtual_time(start_s: float) -> None:
    rate = 1_000_000.0  # bytes/s
    size = 1000
    imp = impairer(rate_bytes_per_s=rate, queue_limit_packets=50)
    # Offer 10 MB/s for one second of virtual time.
    out = feed(imp, 10_000, gap_s=0.0001, size=size, start_s=start_s)
    releases = sorted(release for _, _, release, _ in out)
    gaps_ns = [delay_ns(a, b) for a, b in itertools.pairwise(releases)]
    assert min(gaps_ns) >= round(size / rate * 1e9)  # serialization time per datagram
    delivered_by_1s = sum(1 for r in releases if delay_ns(start_s, r) <= 1_000_000_000)
    assert delivered_by_1s * size <= rate * 1.0 + size
    assert delivered_by_1s * size >= 0.95 * rate
    assert imp.stats.dropped_queue == 10_000 - len(out)
    assert imp.stats.queue_peak_packets == 50
    check_conservation(imp.stats)


def test_rate_below_capacity_adds_only_serialization_time() -> None:
    imp = impairer(rate_bytes_per_s=1e6, queue_limit_packets=10)
    out = feed(imp, 1000, gap_s=0.01, size=1000)  # 100 kB/s offered
    assert len(out) == 1000
    assert all(release - now == pytest.approx(0.001) for _, now, release, _ in out)


def test_queue_tail_drop_in_bytes() -> None:
    imp = impairer(rate_bytes_per_s=1000.0, queue_limit_packets=None, queue_limit_bytes=5000)
    results = [imp.process(b"x" * 1000, 0.0) for _ in range(8)]
    assert [bool(r) for r in results] == [True] * 5 + [False] * 3
    assert imp.stats.dropped_queue == 3
    assert imp.stats.queue_peak_bytes == 5000
    # After the link drained two datagrams (2 s), two more fit.
    assert imp.process(b"x" * 1000, 2.0)
    assert imp.process(b"x" * 1000, 2.0)
    assert not imp.process(b"x" * 1000, 2.0)


def test_queue_tail_drop_in_packets_and_release_times() -> None:
    imp = impairer(rate_bytes_per_s=100.0, queue_limit_packets=3)
    results = [imp.process(b"y" * 10, 0.0) for _ in range(5)]
    assert [r[0][0] if r else None for r in results] == pytest.approx([0.1, 0.2, 0.3, None, None])


def test_rate_then_delay_adds_up() -> None:
    imp = impairer(rate_bytes_per_s=1000.0, delay_s=0.5)
    assert imp.process(b"z" * 100, 0.0) == [(pytest.approx(0.6), b"z" * 100)]


# --- reproducibility and robustness -------------------------------------------------------

EVERYTHING = {
    "loss": 0.05,
    "loss_correlation": 0.3,
    "duplicate": 0.05,
    "corrupt": 0.05,
    "reorder": 0.1,
    "delay_s": 0.01,
    "jitter_s": 0.005,
    "distribution": "paretonormal",
    "rate_bytes_per_s": 2e6,
    "queue_limit_packets": 30,
    "mtu_bytes": 1400,
}


def run_everything(seed: int) -> list[tuple[int, float, float, bytes]]:
    rng = random.Random(99)  # the same datagram sizes for every seed
    imp = Impairer(ImpairConfig(**EVERYTHING), make_rng(seed, "up"))  # type: ignore[arg-type]
    out = []
    for i in range(5000):
        data = rng.randbytes(rng.choice((0, 1, 40, 1400, 1401)))
        out.extend((i, i * 0.0002, release, d) for release, d in imp.process(data, i * 0.0002))
    check_conservation(imp.stats)
    return out


def test_same_seed_same_decisions() -> None:
    assert run_everything(5) == run_everything(5)


def test_different_seed_different_decisions() -> None:
    assert run_everything(5) != run_everything(6)


def test_directions_get_independent_generators() -> None:
    assert make_rng(1, "up").random() != make_rng(1, "down").random()
    assert make_rng(1, "up").random() == make_rng(1, "up").random()
    with pytest.raises(ValueError):
        make_rng(1, "sideways")


def test_stats_to_dict_reports_every_field() -> None:
    imp = impairer(**EVERYTHING)
    feed(imp, 2000, gap_s=0.0002, size=1000)
    d = imp.stats.to_dict()
    assert set(d["dropped"]) >= {"loss", "queue", "mtu"}
    for key in (
        "datagrams_in",
        "bytes_in",
        "datagrams_out",
        "bytes_out",
        "reordered",
        "duplicated",
        "corrupted",
        "added_delay_mean_s",
        "added_delay_max_s",
    ):
        assert key in d
    assert d["datagrams_in"] == 2000
    assert d["added_delay_max_s"] >= d["added_delay_mean_s"] >= 0.01 - 0.005


def test_unsend_moves_a_datagram_to_a_failure_count() -> None:
    stats = DirectionStats(datagrams_out=3, bytes_out=30)
    stats.unsend(10, "send_errors")
    assert (stats.datagrams_out, stats.bytes_out, stats.send_errors) == (2, 20, 1)
    assert stats.emitted == 3


@pytest.mark.parametrize(
    "knobs",
    [
        {"loss": 1.5},
        {"loss": -0.1},
        {"delay_s": -1.0},
        {"jitter_s": float("nan")},
        {"distribution": "cauchy"},
        {"reorder_gap": 0},
        {"mtu_bytes": 0},
        {"gemodel": (0.1, 0.2, 0.3, 0.4, 0.5)},
        {"gemodel": (1.1,)},
        {"rate_bytes_per_s": 1.0, "queue_limit_packets": None},
    ],
)
def test_bad_configs_are_refused(knobs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ImpairConfig(**knobs)  # type: ignore[arg-type]


probabilities = st.sampled_from([0.0, 0.0, 0.01, 0.5, 1.0])


@st.composite
def configs(draw: st.DrawFn) -> ImpairConfig:
    knobs = draw(knob_values)
    if knobs["rate_bytes_per_s"] and knobs["queue_limit_packets"] is None:
        knobs["queue_limit_bytes"] = knobs["queue_limit_bytes"] or 70_000
    return ImpairConfig(**knobs)


knob_values = st.fixed_dictionaries(
    {
        "loss": probabilities,
        "loss_correlation": probabilities,
        "duplicate": probabilities,
        "corrupt": probabilities,
        "reorder": probabilities,
        "reorder_gap": st.integers(1, 5),
        "reorder_delay_s": st.sampled_from([0.0, 0.003]),
        "delay_s": st.sampled_from([0.001, 0.05]),
        "jitter_s": st.sampled_from([0.0, 0.01]),
        "distribution": st.sampled_from(DISTRIBUTIONS),
        "rate_bytes_per_s": st.sampled_from([0.0, 1e3, 1e7]),
        "queue_limit_packets": st.sampled_from([None, 1, 100]),
        "queue_limit_bytes": st.sampled_from([None, 1, 70_000]),
        "mtu_bytes": st.sampled_from([None, 1, 1500, 65507]),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    config=configs(),
    seed=st.integers(0, 2**32),
    datagrams=st.lists(
        st.tuples(
            st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\xff" * 65507])),
            st.floats(0, 0.01),
        ),
        max_size=40,
    ),
)
def test_process_never_fails_and_keeps_its_invariants(
    config: ImpairConfig, seed: int, datagrams: list[tuple[bytes, float]]
) -> None:
    imp = Impairer(config, random.Random(seed))
    now = 0.0
    for data, step in datagrams:
        now += step
        out = imp.process(data, now)
        assert len(out) <= 2
        for release, emitted in out:
            assert release >= now
            assert isinstance(emitted, bytes)
            assert len(emitted) == len(data)
    check_conservation(imp.stats)
    assert imp.stats.datagrams_in == len(datagrams)


def test_a_byte_limited_queue_still_bounds_empty_datagrams() -> None:
    from rtcp.proxy.impair import QUEUE_HARD_LIMIT_PACKETS

    imp = impairer(rate_bytes_per_s=1.0, queue_limit_packets=None, queue_limit_bytes=10)
    imp.process(b"x" * 10, 0.0)  # the link is busy for 10 s
    kept = sum(bool(imp.process(b"", 0.0)) for _ in range(QUEUE_HARD_LIMIT_PACKETS + 10))
    assert kept == QUEUE_HARD_LIMIT_PACKETS - 1
