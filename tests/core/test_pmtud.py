"""Path MTU discovery's search (rtcp.core.pmtud, RFC 8899) against model paths in virtual time:
a probe no larger than the path's limit is acknowledged one RTT later, a larger one never."""

from __future__ import annotations

import pytest

from rtcp.core.pmtud import (
    BASE_PLPMTU_BYTES,
    COMMON_DATAGRAM_BYTES,
    MAX_PROBES,
    MIN_PLPMTU_BYTES,
    OPTIMISTIC_PROBE_TIMER_S,
    RAISE_TIMER_S,
    SEARCH_GRANULARITY_BYTES,
    PathMtuDiscovery,
    PmtuState,
)

RTT = 0.001
RTO = 0.2


def search(path_mtu: int, max_bytes: int = 65507, *, lose_first: int = 0, until: float = 60.0):
    """Run the search to completion; returns (the discovery, probe sizes in order, end time)."""
    d = PathMtuDiscovery(max_bytes=max_bytes)
    d.start(0.0)
    return run_search(d, path_mtu, 0.0, lose_first=lose_first, until=until)


def run_search(d, path_mtu: int, now: float, *, lose_first: int = 0, until: float = 60.0):
    sizes = []
    while d.state is PmtuState.SEARCHING and now < until:
        size = d.probe_due(now)
        if size is not None:
            d.on_probe_sent(now, RTO)
            sizes.append(size)
            if size <= path_mtu and len(sizes) > lose_first:
                now += RTT
                d.on_probe_acked(size, now)
                continue
        now = d.timer() if d.timer() is not None else now + RTT
        d.on_timer(now)
    return d, sizes, now


def test_a_path_that_carries_the_largest_size_is_found_in_one_round_trip():
    d, sizes, end = search(path_mtu=65507)
    assert sizes == [65507]
    assert d.plpmtu == 65507 and d.state is PmtuState.SEARCH_COMPLETE
    assert end == pytest.approx(RTT)


def test_behind_an_ethernet_mtu_the_optimistic_probe_costs_one_short_wait():
    d, sizes, _ = search(path_mtu=1400)
    assert sizes[0] == 65507  # optimistic, once
    assert sizes[1:1 + MAX_PROBES] == [1472] * MAX_PROBES  # then the ladder: 1472 fails
    assert d.plpmtu == BASE_PLPMTU_BYTES
    assert d.state is PmtuState.SEARCH_COMPLETE
    assert all(s > 1400 for s in sizes)  # never a probe the base size already proves


def test_jumbo_path_climbs_the_ladder_then_binary_searches():
    d, sizes, _ = search(path_mtu=9000)
    assert sizes[:4] == [65507, 1472, 4068, 8972]
    assert sizes[4:4 + MAX_PROBES] == [16356] * MAX_PROBES
    assert 9000 - SEARCH_GRANULARITY_BYTES <= d.plpmtu <= 9000
    assert d.state is PmtuState.SEARCH_COMPLETE


@pytest.mark.parametrize("path_mtu", [1500, 5000, 20000, 40000, 65000])
def test_the_search_ends_within_the_granularity_below_the_path(path_mtu):
    d, sizes, _ = search(path_mtu=path_mtu)
    assert path_mtu - SEARCH_GRANULARITY_BYTES < d.plpmtu <= path_mtu
    # each size at most MAX_PROBES times (the largest once more: the optimistic probe)
    assert all(sizes.count(s) <= MAX_PROBES + (s == 65507) for s in set(sizes))


def test_a_lost_optimistic_probe_does_not_rule_its_size_out():
    d, sizes, _ = search(path_mtu=65507, lose_first=1)
    assert sizes == [65507, *COMMON_DATAGRAM_BYTES]  # the ladder reaches it anyway
    assert d.plpmtu == 65507


def test_the_optimistic_probe_waits_briefly_and_a_late_ack_still_counts():
    d = PathMtuDiscovery(max_bytes=65507)
    d.start(0.0)
    assert d.probe_due(0.0) == 65507
    d.on_probe_sent(0.0, RTO)
    assert d.timer() == pytest.approx(OPTIMISTIC_PROBE_TIMER_S)  # not a whole RTO
    d.on_timer(OPTIMISTIC_PROBE_TIMER_S)
    assert d.probe_due(OPTIMISTIC_PROBE_TIMER_S) == 1472
    assert d.on_probe_acked(65507, 0.08)  # the first probe's ACK, late
    assert d.plpmtu == 65507 and d.state is PmtuState.SEARCH_COMPLETE


def test_the_peer_limit_caps_the_search():
    d = PathMtuDiscovery(max_bytes=65507)
    d.limit_max(9000)
    d.start(0.0)
    assert d.probe_due(0.0) == 9000
    d.limit_max(1400)
    assert d.state is PmtuState.DISABLED


def test_black_hole_falls_back_and_searches_again_later():
    d, _, end = search(path_mtu=65507)
    d.black_hole(end)
    assert d.plpmtu == BASE_PLPMTU_BYTES and d.state is PmtuState.SEARCH_COMPLETE
    assert d.probe_due(end + 1) is None
    later = end + RAISE_TIMER_S / 10
    assert d.probe_due(later) == 65507  # the search starts over, optimistic again
    assert d.state is PmtuState.SEARCHING


def test_a_completed_search_leaves_no_probe_timer():
    d = PathMtuDiscovery(max_bytes=65507)
    d.start(0.0)
    d.on_probe_sent(0.0, RTO)
    assert d.on_probe_acked(65507, RTT)
    assert d.state is PmtuState.SEARCH_COMPLETE and d.timer() is None


def test_the_search_finds_a_path_within_16_bytes():
    assert SEARCH_GRANULARITY_BYTES <= 16
    d, _, _ = search(path_mtu=3972, max_bytes=8972)  # a 4000-byte link behind a jumbo first hop
    assert 3972 - 16 < d.plpmtu <= 3972


def test_the_first_hop_ceiling_makes_the_first_probe_exact():
    d, sizes, _ = search(path_mtu=1472, max_bytes=1472)  # 1500-byte Ethernet, IPv4
    assert sizes == [1472] and d.plpmtu == 1472


def test_black_hole_at_the_base_size_falls_to_the_minimum_then_gives_up():
    d, _, end = search(path_mtu=65507)
    assert d.black_hole(end, 65507) == BASE_PLPMTU_BYTES
    assert d.black_hole(end, BASE_PLPMTU_BYTES) == MIN_PLPMTU_BYTES  # e.g. a 1280-byte tunnel
    assert d.plpmtu == MIN_PLPMTU_BYTES <= 1280 - 48
    assert d.black_hole(end, MIN_PLPMTU_BYTES) is None


def test_below_the_base_size_the_search_runs_at_once_from_the_minimum():
    # a 1500-byte first hop, a 1280-byte link behind it that says nothing (IPv4: 1252 bytes of
    # UDP payload): the base size's data times out, the size falls to the minimum, and the
    # search between the minimum and the failed base size starts without waiting for the raise
    # timer (it waited 60 s)
    d, _, end = search(path_mtu=1252, max_bytes=1472)
    assert d.plpmtu == BASE_PLPMTU_BYTES  # the probes above the base failed; data then times out
    assert d.black_hole(end, BASE_PLPMTU_BYTES) == MIN_PLPMTU_BYTES
    assert d.state is PmtuState.SEARCHING
    first = d.probe_due(end)
    assert MIN_PLPMTU_BYTES < first < BASE_PLPMTU_BYTES
    d, sizes, later = run_search(d, 1252, end)
    assert 1252 - SEARCH_GRANULARITY_BYTES < d.plpmtu <= 1252
    assert all(s < BASE_PLPMTU_BYTES for s in sizes)
    assert later - end < RAISE_TIMER_S / 100
    # a later black hole at the size found (timeouts: maybe only congestion) searches the same
    # range again: only probes narrow it, so the size never ratchets down
    assert d.black_hole(later, d.plpmtu) == MIN_PLPMTU_BYTES
    d, _, _ = run_search(d, 1252, later)
    assert 1252 - SEARCH_GRANULARITY_BYTES < d.plpmtu <= 1252


def test_lower_ceiling_shrinks_at_once_and_never_probes_above_it():
    d, _, end = search(path_mtu=8972, max_bytes=8972)
    assert d.plpmtu > 8900
    assert d.lower_ceiling(1252, end)  # the first hop fell to 1280 (EMSGSIZE)
    assert d.plpmtu == 1252 and d.max_bytes == 1252
    assert not d.lower_ceiling(1252, end)  # nothing new
    assert d.probe_due(end + RAISE_TIMER_S) is None  # no size above the ceiling to try


def test_lower_ceiling_cancels_a_probe_above_it():
    d = PathMtuDiscovery(max_bytes=8972)
    d.start(0.0)
    assert d.probe_due(0.0) == 8972
    d.on_probe_sent(0.0, RTO)
    assert not d.lower_ceiling(4000, 0.01)  # plpmtu (the base) still fits
    size = d.probe_due(0.01)
    assert size is not None and size <= 4000


def test_a_datagram_refused_as_too_big_shrinks_the_connection_at_once():
    from rtcp.core import wire
    from tests.core.conn_helpers import T0, established, recv

    conn = established()
    conn.send(bytes(3000))  # MSS 1000: three segments
    first = [len(wire.encode(s)) for s in recv(conn, T0)]
    assert max(first) > 700
    conn.datagram_too_big(700, T0)  # EMSGSIZE: the first hop now carries 700 bytes
    assert conn.stats.datagram_bytes <= 700
    conn.send(bytes(3000))
    later = [len(wire.encode(s)) for s in recv(conn, T0 + 0.01)]
    assert later and max(later) <= 700
