"""IPv6 on loopback: a dual-stack receiver ([::]) serves IPv4 and IPv6 senders on one socket;
bracketed addresses work for send, recv and proxy; the pcap of an IPv6 transfer is IPv6."""

from __future__ import annotations

import socket

import pytest

from rtcp.trace.pcap import read_pcap
from tests.e2e.conftest import make_file


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here")


def test_a_dual_stack_receiver_serves_ipv4_and_ipv6_senders(spawn, tmp_path):
    recv = spawn(["recv", "--listen", "[::]:0", "--out", tmp_path / "out", "--insecure"])
    port = recv.wait_port()
    for i, to in enumerate((f"127.0.0.1:{port}", f"[::1]:{port}")):
        src = make_file(tmp_path / f"f{i}.bin", 300_000, seed=i)
        sender = spawn(["send", src, "--to", to, "--quiet"])
        assert sender.wait(60) == 0, sender.stderr
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes()


def test_ipv6_through_the_proxy_and_its_capture(spawn, tmp_path):
    recv = spawn(["recv", "--listen", "[::1]:0", "--out", tmp_path / "out"])
    port = recv.wait_port()
    proxy = spawn(["proxy", "--listen", "[::1]:0", "--upstream", f"[::1]:{port}",
                   "--delay", "1ms"])
    proxy_port = proxy.wait_port()
    src = make_file(tmp_path / "f.bin", 300_000)
    pcap = tmp_path / "send.pcap"
    sender = spawn(["send", src, "--to", f"[::1]:{proxy_port}", "--quiet", "--pcap", pcap])
    assert sender.wait(60) == 0, sender.stderr
    assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes()
    packets = read_pcap(pcap)
    assert packets and {p.ip_version for p in packets} == {6}
    assert all(p.udp_checksum_ok for p in packets)
    assert {p.dst for p in packets if p.src[0] == "::1" and p.dst[1] == proxy_port}
