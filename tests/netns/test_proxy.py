"""`rtcp proxy` on the router's real addresses: it never fragments what it forwards, and drops
(and counts) a datagram its outgoing link cannot carry, as a router does."""

from __future__ import annotations

import json

import pytest

from tests.netns.conftest import (
    RECEIVER_V4,
    RECEIVER_V6,
    ROUTER_V4_S,
    ROUTER_V6_S,
    make_file,
)
from tests.netns.test_pmtu import _receiver, _send


def test_the_proxy_drops_what_its_outgoing_link_cannot_carry(netbed, tmp_path):
    # 1500-byte links, but the router's way out to the receiver carries only 1280 bytes
    bed = netbed(mtu=1500, router_out_mtu=1280)
    _receiver(bed, tmp_path)
    stats = tmp_path / "proxy.json"
    proxy = bed.rtcp(bed.router, "proxy", "--listen", f"{ROUTER_V4_S}:9000", "--upstream",
                     f"{RECEIVER_V4}:9000", "--loss", "1%", "--delay", "5ms", "--seed", "7",
                     "--stats", stats)
    proxy.wait_port()
    src = make_file(tmp_path / "in.bin", 2_000_000)
    before = bed.frag_creates(bed.router), bed.frag_creates(bed.sender)
    rc, result, err = _send(bed, src, f"{ROUTER_V4_S}:9000")
    assert rc == 0, err
    assert result["verified"] is True
    assert result["stats"]["datagram_bytes"] <= 1280 - 28  # found: black-hole detection
    proxy.stop()
    assert proxy.popen.returncode is not None
    up = json.loads(stats.read_text())["up"]
    assert up["dropped"]["mtu"] > 0  # the 1472- and 1400-byte datagrams, counted
    assert (bed.frag_creates(bed.router), bed.frag_creates(bed.sender)) == before


@pytest.mark.parametrize(
    ("listen", "upstream", "expected"),
    [
        (f"{ROUTER_V4_S}:9000", f"{RECEIVER_V4}:9000", 1472),
        (f"[{ROUTER_V6_S}]:9000", f"[{RECEIVER_V6}]:9000", 1452),
    ],
    ids=["ipv4", "ipv6"],
)
def test_under_1_percent_loss_datagrams_fill_the_1500_link_and_never_fragment(
    netbed, tmp_path, listen, upstream, expected
):
    # the proxy on the router drops 1% each way (seeded): a lost probe proves nothing, so the
    # search still settles on the whole Ethernet MTU, and nothing fragments
    bed = netbed(mtu=1500)
    _receiver(bed, tmp_path)
    stats = tmp_path / "proxy.json"
    proxy = bed.rtcp(bed.router, "proxy", "--listen", listen, "--upstream", upstream,
                     "--loss", "1%", "--seed", "3", "--stats", stats)
    proxy.wait_port()
    src = make_file(tmp_path / "in.bin", 600_000)
    before = bed.frag_creates(bed.sender), bed.frag_creates(bed.router)
    rc, result, err = _send(bed, src, listen)
    assert rc == 0, err
    assert result["verified"] is True
    assert result["stats"]["datagram_bytes"] == expected
    proxy.stop()
    dropped = json.loads(stats.read_text())
    assert dropped["up"]["dropped"]["loss"] + dropped["down"]["dropped"]["loss"] > 0
    assert (bed.frag_creates(bed.sender), bed.frag_creates(bed.router)) == before
    assert (tmp_path / "out" / "in.bin").read_bytes() == src.read_bytes()
