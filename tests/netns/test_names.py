"""Host names and IPv6 addresses on real links: send, recv and proxy take names that resolve to
either family (each namespace has its own /etc/hosts), and [ADDR]:PORT forms."""

from __future__ import annotations

from tests.netns.conftest import RECEIVER_V4, RECEIVER_V6, ROUTER_V6_S, make_file
from tests.netns.test_pmtu import _receiver, _send


def test_names_resolve_to_either_family(netbed, tmp_path):
    bed = netbed(mtu=1500)
    bed.hosts(bed.sender, f"{RECEIVER_V6} rcv6.test\n{RECEIVER_V4} rcv4.test\n"
                          f"{RECEIVER_V4} rcv.test\n{RECEIVER_V6} rcv.test\n")
    bed.hosts(bed.receiver, f"{RECEIVER_V6} me6.test\n")
    _receiver(bed, tmp_path, listen="me6.test:9000")  # a name for an IPv6 address
    src = make_file(tmp_path / "in.bin", 500_000)
    rc, result, err = _send(bed, src, "rcv6.test:9000")
    assert rc == 0, err
    assert result["peer"] == f"[{RECEIVER_V6}]:9000"
    assert result["stats"]["datagram_bytes"] == 1452  # IPv6 on the wire


def test_a_dual_stack_name_means_ipv4_and_the_proxy_takes_names(netbed, tmp_path):
    bed = netbed(mtu=1500)
    bed.hosts(bed.sender, f"{RECEIVER_V4} rcv.test\n{RECEIVER_V6} rcv.test\n")
    bed.hosts(bed.router, f"{RECEIVER_V6} rcv6.test\n")
    _receiver(bed, tmp_path)  # [::]: both families
    src = make_file(tmp_path / "in.bin", 500_000)
    rc, result, err = _send(bed, src, "rcv.test:9000", "--timeout", "30s")
    assert rc == 0, err
    assert result["peer"] == f"{RECEIVER_V4}:9000"
    proxy = bed.rtcp(bed.router, "proxy", "--listen", f"[{ROUTER_V6_S}]:9000",
                     "--upstream", "rcv6.test:9000")
    proxy.wait_port()
    src = make_file(tmp_path / "via-proxy.bin", 500_000, seed=1)
    rc, result, err = _send(bed, src, f"[{ROUTER_V6_S}]:9000")
    assert rc == 0, err
    assert result["verified"] is True
