"""ICMP "too big" reports as hints (RFC 8899 4.6): parsing the error queue (udp.read_errors),
the driver's validation against its live connections, and the search's checks of the size."""

from __future__ import annotations

import errno
import socket

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.pmtud import MIN_PLPMTU_BYTES, PathMtuDiscovery, PmtuState
from rtcp.net import driver as driver_mod
from rtcp.net import udp
from rtcp.net.driver import App, Driver


def _ee(err: int, origin: int, icmp_type: int, code: int, info: int) -> bytes:
    return udp._EXTENDED_ERR.pack(err, origin, icmp_type, code, 0, info, 0)


class _ErrQueue:
    def __init__(self, entries):
        self.entries = list(entries)

    def recvmsg(self, bufsize, ancbufsize, flags):
        assert flags == udp.MSG_ERRQUEUE
        if not self.entries:
            raise BlockingIOError
        return self.entries.pop(0)


def test_the_error_queue_yields_too_big_reports_and_counts_the_rest():
    peer = ("198.18.2.1", 9000)
    frag = _ee(errno.EMSGSIZE, udp.SO_EE_ORIGIN_ICMP, 3, 4, 1280)
    unreachable = _ee(errno.ECONNREFUSED, udp.SO_EE_ORIGIN_ICMP, 3, 3, 0)
    local = _ee(errno.EMSGSIZE, udp.SO_EE_ORIGIN_LOCAL, 0, 0, 1500)
    sock = _ErrQueue([
        (b"quoted", [(socket.IPPROTO_IP, udp.IP_RECVERR, frag)], 0, peer),
        (b"x", [(socket.IPPROTO_IP, udp.IP_RECVERR, unreachable)], 0, peer),
        (b"y", [(socket.IPPROTO_IP, udp.IP_RECVERR, local)], 0, peer),
    ])
    reports, other = udp.read_errors(sock)
    assert reports == [udp.PacketTooBig(1280, peer, b"quoted", False),
                       udp.PacketTooBig(1500, peer, b"y", True)]
    assert other == 1


def test_a_hint_is_checked_against_what_was_sent():
    d = PathMtuDiscovery(max_bytes=8972)
    d.start(0.0)
    assert d.probe_due(0.0) == 8972
    d.on_probe_sent(0.0, 0.2)
    assert not d.on_packet_too_big(9000, 0.001)  # not below the probe: inconsistent, ignored
    assert not d.on_packet_too_big(MIN_PLPMTU_BYTES - 1, 0.001)  # below the minimum: ignored
    assert not d.on_packet_too_big(3972, 0.001)  # the probe failed; plpmtu (1400) still fits
    assert d.probe_due(0.001) == 3972  # the next probe is the size it names
    d.on_probe_sent(0.001, 0.2)
    assert d.on_probe_acked(3972, 0.002) and d.state is PmtuState.SEARCH_COMPLETE
    assert d.on_packet_too_big(1252, 0.003)  # later, data above it: shrink at once
    assert d.plpmtu == 1252


class _Quiet(App):
    pass


def test_the_driver_uses_only_reports_that_quote_a_live_connection(monkeypatch):
    server = Driver(("127.0.0.1", 0))
    client = Driver(("127.0.0.1", 0))
    server.listen(ConnectionConfig(), lambda peer: _Quiet())
    try:
        h = client.connect(server.local_address, ConnectionConfig(), _Quiet())
        for _ in range(200):
            if h.conn.peer_id and server.handles:
                break
            client.run_once(0.005)
            server.run_once(0.005)
        conn = h.conn
        assert conn.peer_id
        mine = wire.build(wire.ACK, conn.local_id, conn.peer_id, 1, 1, 0)
        forged = wire.build(wire.ACK, conn.local_id, conn.peer_id ^ 1, 1, 1, 0)
        reports = [udp.PacketTooBig(1280, server.local_address, forged, False),
                   udp.PacketTooBig(1280, ("127.0.0.2", 1), mine, False),
                   udp.PacketTooBig(1280, server.local_address, mine, False)]
        monkeypatch.setattr(driver_mod.udp, "read_errors", lambda sock: (reports, 0))
        client._read_errors(client.clock())
        assert (client.stats.icmp_too_big_ignored, client.stats.icmp_too_big) == (2, 1)
        assert conn.stats.datagram_bytes <= 1280 - 28
    finally:
        client.close()
        server.close()
