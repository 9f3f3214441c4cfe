"""The namespace test bed itself: it forwards IPv4 and IPv6, applies its MTUs, cleans up."""

from __future__ import annotations

import sys

import pytest

from tests.netns.conftest import (
    RECEIVER_V4,
    RECEIVER_V6,
    build_testbeds,
    namespaces,
    skip_reason,
)

# One UDP datagram of SIZE bytes from the sender to the receiver with fragmentation forbidden
# (rtcp.net.udp); the sender prints the first hop's payload limit, then sent or its error.
_RECV = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 7000)); print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535); print("got", len(data), flush=True)
"""
_SEND = """
import socket, sys
from rtcp.net import udp
host, size = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
assert udp.forbid_fragmentation(s)
print(udp.path_mtu_payload((host, 7000)))
try:
    s.sendto(bytes(size), (host, 7000)); print("sent")
except OSError as exc:
    print("error", exc.errno)
"""


def test_forwards_ipv4_and_ipv6_within_the_mtu(netbed):
    bed = netbed(mtu=1500)
    server = bed.spawn(bed.receiver, sys.executable, "-c", _RECV)
    server.wait_line("^ready$")
    for host, size in ((RECEIVER_V4, 1472), (RECEIVER_V6, 1452)):
        out = bed.run(bed.sender, sys.executable, "-c", _SEND, host, str(size)).stdout
        assert out.split() == [str(size), "sent"]  # the first hop's MTU, known locally
        server.wait_line(f"^got {size}$")


def test_a_datagram_above_the_first_hop_mtu_fails_locally(netbed):
    bed = netbed(mtu=1500)
    for host, size in ((RECEIVER_V4, 1473), (RECEIVER_V6, 1453)):
        out = bed.run(bed.sender, sys.executable, "-c", _SEND, host, str(size)).stdout
        assert out.split() == [str(size - 1), "error", "90"]  # EMSGSIZE: never fragmented


def test_teardown_removes_every_namespace_also_on_failure():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    made = []
    with pytest.raises(RuntimeError), build_testbeds() as make:
        bed = make(mtu=1280)
        made = [bed.sender, bed.router, bed.receiver]
        bed.spawn(bed.receiver, sys.executable, "-c", _RECV).wait_line("^ready$")
        assert set(made) <= namespaces()
        raise RuntimeError("a failing test")
    assert made and not set(made) & namespaces()
