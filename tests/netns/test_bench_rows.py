"""`make bench`'s rows over a veth pair (rtcp.bench.netns): one small run of each kind, and the
ratio rtcp / kernel TCP. Figures are not checked (speed is measured by `make bench`, not here)."""

from __future__ import annotations

import pytest

from rtcp.bench import netns, runner
from tests.netns.conftest import namespaces


@pytest.fixture
def root_only():
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)


def _ours() -> set[str]:
    return {n for n in namespaces() if n.startswith(netns.NS_PREFIX)}


def test_the_rows_run_and_leave_nothing_behind(root_only, tmp_path):
    before = _ours()
    src = tmp_path / "f.bin"
    src.write_bytes(bytes(300_000))
    row = netns.run_rtcp(src, 1500, startup_cpu=0.0, deadline_s=60.0)
    assert (row["datagram_bytes"], row["ip_fragments"], row["link_mtu"]) == (1472, 0, 1500)
    assert row["goodput_bytes_per_s"] > 0
    tcp = netns.run_tcp(9000, seconds=0.2)
    assert tcp["goodput_bytes_per_s"] > 0 and tcp["link_mtu"] == 9000
    assert _ours() == before


def test_the_rows_are_listed_in_pairs_and_get_their_ratio(root_only):
    names = [r.name for r in runner.all_rows() if r.name.startswith("netns-")]
    assert names == ["netns-tcp-mtu1500", "netns-rtcp-mtu1500",
                     "netns-tcp-mtu9000", "netns-rtcp-mtu9000"]
    results = [
        {"name": "netns-tcp-mtu1500", "goodput_bytes_per_s": 400e6},
        {"name": "netns-rtcp-mtu1500", "goodput_bytes_per_s": 40e6, "datagram_bytes": 1472,
         "ip_fragments": 0},
    ]
    netns.add_ratios(results)
    assert results[1]["ratio_to_kernel_tcp"] == pytest.approx(0.1)
    (line,) = netns.summary_lines(results)
    assert "0.100 x kernel TCP" in line and "1472-byte" in line and "0 IP fragments" in line
