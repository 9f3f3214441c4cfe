"""Kernel TCP over the same links as rtcp, as the reference (#12): on each test bed a kernel TCP
transfer (Python sockets in the namespaces) and an rtcp transfer both complete, create no IP
fragment, and fill the same path MTU: the kernel's segments (its MSS plus TCP and IP headers)
and rtcp's datagrams (plus UDP and IP headers) are IP packets of the same size."""

from __future__ import annotations

import hashlib
import sys

import pytest

from tests.netns.conftest import RECEIVER_V4, RECEIVER_V6, make_file
from tests.netns.test_pmtu import _receiver, _send

TCP_PORT = 7001
TCP_TIMESTAMPS_BYTES = 12  # the option Linux puts in every segment (net.ipv4.tcp_timestamps)

# Reads one connection to its end; prints its length and SHA-256, answers "ok".
_TCP_SERVER = f"""
import hashlib, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {TCP_PORT})); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while data := c.recv(1 << 16):
    h.update(data); n += len(data)
c.sendall(b"ok"); c.close()
print(n, h.hexdigest(), flush=True)
"""
# Sends the file, then prints the connection's MSS (TCP_MAXSEG: after path MTU discovery).
_TCP_CLIENT = f"""
import socket, sys
host, path = sys.argv[1], sys.argv[2]
c = socket.create_connection((host, {TCP_PORT}), timeout=60)
with open(path, "rb") as f:
    c.sendall(f.read())
c.shutdown(socket.SHUT_WR)
assert c.recv(2) == b"ok"
print(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
"""


@pytest.mark.parametrize(
    ("host", "router_out_mtu", "path_mtu"),
    [(RECEIVER_V4, None, 1500), (RECEIVER_V6, 1280, 1280)],
    ids=["ipv4-1500", "ipv6-1280-behind-the-router"],
)
def test_kernel_tcp_and_rtcp_fill_the_same_path_mtu(netbed, tmp_path, host, router_out_mtu,
                                                    path_mtu):
    bed = netbed(mtu=1500, router_out_mtu=router_out_mtu)
    ip_header = 40 if ":" in host else 20
    src = make_file(tmp_path / "in.bin", 400_000)
    before = bed.frag_creates(bed.sender)

    server = bed.spawn(bed.receiver, sys.executable, "-c", _TCP_SERVER)
    server.wait_line("^ready$")
    client = bed.run(bed.sender, sys.executable, "-c", _TCP_CLIENT, host, str(src))
    mss = int(client.stdout.split()[0])
    assert server.wait_line(r"^\d+ [0-9a-f]{64}$").group(0) == (
        f"{src.stat().st_size} {hashlib.sha256(src.read_bytes()).hexdigest()}")
    assert mss + TCP_TIMESTAMPS_BYTES + 20 + ip_header == path_mtu

    _receiver(bed, tmp_path)
    to = f"[{host}]:9000" if ":" in host else f"{host}:9000"
    rc, result, err = _send(bed, src, to)
    assert rc == 0, err
    assert result["verified"] is True
    assert result["stats"]["datagram_bytes"] + 8 + ip_header == path_mtu

    assert bed.frag_creates(bed.sender) - before == 0
