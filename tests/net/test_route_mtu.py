"""The driver's first-hop MTU lookups (RouteMtuCache): one throwaway socket per destination
address per ROUTE_MTU_TTL_S, never one per SYN; a bounded number of addresses remembered; a send
refused with EMSGSIZE always asks the kernel again. Measured by counting the lookups (each one
opens a socket), never by time."""

from __future__ import annotations

import socket
import time

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.net import udp
from rtcp.net.driver import (
    ROUTE_MTU_CACHE_ENTRIES,
    ROUTE_MTU_TTL_S,
    Driver,
    DriverStats,
    RouteMtuCache,
)

FLOOD_PORTS = 20
SYNS_PER_PORT = 10
DEADLINE_S = 60.0


def test_the_cache_asks_once_per_address_and_again_after_its_lifetime():
    asked = []
    stats = DriverStats()
    cache = RouteMtuCache(stats, lookup=lambda peer: asked.append(peer) or 1472)
    for port in range(1000, 1100):  # one address, many ports: one route
        assert cache.get(("198.18.0.1", port), now=10.0) == 1472
    assert len(asked) == 1 and stats.route_mtu_lookups == 1
    cache.get(("198.18.0.1", 1), now=10.0 + ROUTE_MTU_TTL_S)  # expired
    assert len(asked) == 2
    cache.refresh(("198.18.0.1", 1), now=10.5 + ROUTE_MTU_TTL_S)  # EMSGSIZE: always asks
    assert len(asked) == 3
    cache.get(("fd00::1", 1, 0, 0), now=20.0)  # another address: its own lookup
    assert len(asked) == 4


def test_the_cache_remembers_a_bounded_number_of_addresses():
    asked = []
    cache = RouteMtuCache(DriverStats(), lookup=lambda peer: asked.append(peer) or 1452)
    for i in range(ROUTE_MTU_CACHE_ENTRIES + 500):
        cache.get((f"fd00::{i:x}", 9000, 0, 0), now=1.0)
        assert len(cache) <= ROUTE_MTU_CACHE_ENTRIES
    assert len(asked) == ROUTE_MTU_CACHE_ENTRIES + 500
    cache.get(("fd00::0", 9000, 0, 0), now=1.0)  # the oldest was forgotten first
    cache.get((f"fd00::{ROUTE_MTU_CACHE_ENTRIES + 499:x}", 9000, 0, 0), now=1.0)  # the newest not
    assert len(asked) == ROUTE_MTU_CACHE_ENTRIES + 501


def _syn(src_id: int, token: bytes | None = None) -> bytes:
    opts = wire.opt_mss(1362)
    if token is not None:
        opts += wire.opt_bytes(wire.OPT_RETRY_TOKEN, token)
    return wire.build(wire.SYN, src_id, 0, src_id * 7 & 0xFFFFFFFF, 0, 65535, opts)


def test_a_syn_flood_opens_one_route_lookup_socket_not_one_per_syn(monkeypatch):
    # 200 SYNs from 20 ports of one address, each echoing the RETRY token it gets under
    # pressure (an attacker at its own address can): 200 half-open connections, which asked the
    # kernel for the route's MTU (a socket each) once in all; it was once per SYN
    lookups = []
    real = udp.path_mtu_payload
    monkeypatch.setattr(udp, "path_mtu_payload", lambda peer: lookups.append(peer) or real(peer))
    socks = []
    with Driver(("127.0.0.1", 0), clock=lambda: 1000.0) as d:  # a frozen clock: no expiry
        d.listen(ConnectionConfig(), lambda peer: None)
        port = d.local_address[1]
        try:
            for p in range(FLOOD_PORTS):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                for k in range(SYNS_PER_PORT):
                    s.sendto(_syn(1 + p * SYNS_PER_PORT + k), ("127.0.0.1", port))
            deadline = time.monotonic() + DEADLINE_S
            while (d.half_open < FLOOD_PORTS * SYNS_PER_PORT
                   and time.monotonic() < deadline):
                d.run_once(0.01)
                for s in socks:
                    while True:
                        try:
                            data = s.recv(65535)
                        except OSError:
                            break
                        seg = wire.decode(data)
                        if seg.flags & wire.RETRY:
                            token = seg.option(wire.OPT_RETRY_TOKEN)
                            s.sendto(_syn(seg.dst_id, token), ("127.0.0.1", port))
            assert d.half_open == FLOOD_PORTS * SYNS_PER_PORT
            assert d.stats.retries_sent > 0  # the flood was under pressure: tokens echoed
            assert len(lookups) == 1 and d.stats.route_mtu_lookups == 1
        finally:
            for s in socks:
                s.close()
