"""--pcap: datagrams wrapped in synthetic IPv4/IPv6 + UDP headers, read back by a parser."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import pytest

from rtcp.core import wire
from rtcp.trace.pcap import (
    LINKTYPE_RAW,
    PCAP_MAGIC,
    PcapWriter,
    TapSocket,
    build_packet,
    internet_checksum,
    read_pcap,
)


def test_header_and_records_read_back(tmp_path):
    path = tmp_path / "t.pcap"
    seg = wire.build(wire.SYN, 5, 0, 1000, 0, 65535, wire.opt_mss(1400))
    with PcapWriter(path) as pcap:
        pcap.write(seg, ("127.0.0.1", 40000), ("127.0.0.1", 9000), t=1_700_000_000.25)
        pcap.write(b"x" * 1001, ("10.0.0.2", 9000), ("10.0.0.1", 40000), t=1_700_000_001.5)
    raw = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, major, minor, linktype) == (PCAP_MAGIC, 2, 4, LINKTYPE_RAW)
    assert snaplen >= 65535
    packets = read_pcap(path)
    assert len(packets) == 2
    first, second = packets
    assert first.payload == seg and wire.decode(first.payload).seq == 1000
    assert first.src == ("127.0.0.1", 40000) and first.dst == ("127.0.0.1", 9000)
    assert round(first.t * 1e6) == 1_700_000_000_250_000  # microseconds, as the file has them
    assert first.ip_version == 4 and first.ip_checksum_ok and first.udp_checksum_ok
    assert second.payload == b"x" * 1001 and second.src == ("10.0.0.2", 9000)
    assert second.ip_checksum_ok and second.udp_checksum_ok


def test_ipv4_header_fields():
    packet = build_packet(b"abc", ("192.0.2.1", 1), ("192.0.2.2", 2), ident=7)
    assert packet[0] == 0x45 and packet[9] == 17
    assert struct.unpack("!H", packet[2:4])[0] == 20 + 8 + 3
    assert internet_checksum(packet[:20]) == 0  # the header checksum verifies
    assert struct.unpack("!HHH", packet[20:26]) == (1, 2, 11)


def test_ipv6_packets(tmp_path):
    path = tmp_path / "t6.pcap"
    with PcapWriter(path) as pcap:
        pcap.write(b"hello", ("::1", 5000, 0, 0), ("::1", 6000, 0, 0), t=1.0)
    (p,) = read_pcap(path)
    assert p.ip_version == 6 and p.src == ("::1", 5000) and p.dst == ("::1", 6000)
    assert p.payload == b"hello" and p.udp_checksum_ok and p.ip_checksum_ok is None


def test_a_dual_stack_sockets_ipv4_peer_is_written_as_ipv4(tmp_path):
    # a [::] socket names an IPv4 client ::ffff:198.51.100.7: the wire carried IPv4
    path = tmp_path / "mapped.pcap"
    with PcapWriter(path) as pcap:
        pcap.write(b"hi", ("::ffff:198.51.100.1", 9000, 0, 0), ("::ffff:198.51.100.7", 4000, 0, 0))
        pcap.write(b"hi", ("::ffff:198.51.100.1", 9000), ("2001:db8::7", 4000))  # not a wire's
    first, odd = read_pcap(path)
    assert first.ip_version == 4 and first.ip_checksum_ok and first.udp_checksum_ok
    assert first.src == ("198.51.100.1", 9000) and first.dst == ("198.51.100.7", 4000)
    assert odd.ip_version == 6 and odd.src == ("::ffff:c633:6401", 9000)  # 198.51.100.1


def test_largest_datagram_fits(tmp_path):
    path = tmp_path / "big.pcap"
    with PcapWriter(path) as pcap:
        pcap.write(bytes(65507), ("127.0.0.1", 1), ("127.0.0.1", 2))
    (p,) = read_pcap(path)
    assert len(p.payload) == 65507


def test_read_pcap_rejects_other_files(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError):
        read_pcap(path)


def test_tap_socket_records_both_directions(tmp_path):
    path = tmp_path / "tap.pcap"
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("0.0.0.0", 0))  # the wildcard: the capture shows the address used towards the peer
    pcap = PcapWriter(path)
    tap = TapSocket(raw, pcap)
    try:
        server_addr = server.getsockname()
        tap.sendto(b"ping", server_addr)
        _, client_addr = server.recvfrom(100)
        server.sendto(b"pong!", client_addr)
        buf = bytearray(100)
        tap.settimeout(2.0)  # forwarded to the socket
        n, addr = tap.recvfrom_into(buf)
        assert bytes(buf[:n]) == b"pong!" and addr == server_addr
        assert tap.fileno() == raw.fileno()
    finally:
        pcap.close()
        raw.close()
        server.close()
    sent, received = read_pcap(path)
    port = client_addr[1]
    assert (sent.payload, sent.src, sent.dst) == (b"ping", ("127.0.0.1", port), server_addr)
    assert (received.payload, received.src, received.dst) == (
        b"pong!", server_addr, ("127.0.0.1", port)
    )
    assert sent.t <= received.t


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_tcpdump_reads_it(tmp_path):
    path = tmp_path / "t.pcap"
    with PcapWriter(path) as pcap:
        pcap.write(b"x" * 10, ("127.0.0.1", 40000), ("127.0.0.1", 9000), t=1.0)
    out = subprocess.run(
        ["tcpdump", "-nr", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert "127.0.0.1.40000 > 127.0.0.1.9000: UDP, length 10" in out.stdout


def test_tap_socket_on_a_connected_socket(tmp_path):
    path = tmp_path / "c.pcap"
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    where = server.getsockname()
    pcap = PcapWriter(path)
    tap = TapSocket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), pcap)
    try:
        tap.connect(where)
        tap.send(b"up")
        _, addr = server.recvfrom(10)
        server.sendto(b"down", addr)
        tap.settimeout(2.0)
        buf = bytearray(10)
        assert tap.recv_into(buf) == 4
    finally:
        pcap.close()
        tap.close()
        server.close()
    up, down = read_pcap(path)
    assert (up.payload, up.src, up.dst) == (b"up", addr, where)
    assert (down.payload, down.src, down.dst) == (b"down", where, addr)
