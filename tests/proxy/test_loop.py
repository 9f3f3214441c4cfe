"""The socket loop, in-process: a Proxy in a thread between real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rtcp.errors import LocalIOError, UsageError
from rtcp.proxy import loop
from rtcp.proxy.impair import ImpairConfig, Impairer
from rtcp.proxy.loop import Proxy

from .conftest import WAIT_LIMIT_S, EchoServer, client_socket, free_udp_port, wait_until


@contextmanager
def running_proxy(
    upstream: tuple[str, int],
    up: ImpairConfig | None = None,
    down: ImpairConfig | None = None,
    **options: Any,
) -> Iterator[Proxy]:
    proxy = Proxy(
        ("127.0.0.1", 0),
        upstream,
        Impairer(up or ImpairConfig(), random.Random(1)),
        Impairer(down or ImpairConfig(), random.Random(2)),
        **options,
    )
    thread = threading.Thread(target=proxy.run, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        thread.join(WAIT_LIMIT_S)
        assert not thread.is_alive()


def round_trip(proxy: Proxy, payloads: list[bytes]) -> list[bytes]:
    sock = client_socket()
    try:
        replies = []
        for payload in payloads:
            sock.sendto(payload, proxy.local_address)
            replies.append(sock.recv(65535))
        return replies
    finally:
        sock.close()


def test_forwards_both_ways(echo: EchoServer) -> None:
    with running_proxy(echo.address) as proxy:
        payloads = [b"datagram %d" % i for i in range(200)]
        assert round_trip(proxy, payloads) == payloads
        # The loop adds a batch's counts after sending it: wait for the last batch.
        assert wait_until(lambda: proxy.down.stats.datagrams_out == 200)
        snapshot = proxy.snapshot()
    assert snapshot["up"]["datagrams_in"] == snapshot["up"]["datagrams_out"] == 200
    assert snapshot["down"]["datagrams_out"] == 200
    assert snapshot["up"]["bytes_out"] == sum(map(len, payloads))
    assert snapshot["clients_total"] == 1


def test_each_client_gets_its_own_upstream_socket(echo: EchoServer) -> None:
    with running_proxy(echo.address) as proxy:
        sockets = [client_socket() for _ in range(3)]
        try:
            for n, sock in enumerate(sockets):
                sock.sendto(b"from %d" % n, proxy.local_address)
            for n, sock in enumerate(sockets):
                assert sock.recv(100) == b"from %d" % n
        finally:
            for sock in sockets:
                sock.close()
        assert len(set(echo.sources)) == 3
        assert proxy.snapshot()["clients_active"] == 3


def test_empty_huge_and_garbage_datagrams(echo: EchoServer) -> None:
    payloads = [b"", b"\x00", bytes(range(256)) * 10, b"\xff" * 65507]
    with running_proxy(echo.address) as proxy:
        assert round_trip(proxy, payloads) == payloads
    up = ImpairConfig(corrupt=1.0, delay_s=0.001, mtu_bytes=65507)
    with running_proxy(echo.address, up=up) as proxy:
        replies = round_trip(proxy, payloads[1:])
        assert [len(r) for r in replies] == [len(p) for p in payloads[1:]]
        assert all(r != p for r, p in zip(replies, payloads[1:], strict=True))


def test_impaired_path_delays_and_counts(echo: EchoServer) -> None:
    config = ImpairConfig(delay_s=0.010, jitter_s=0.002)
    with running_proxy(echo.address, up=config, down=config) as proxy:
        payloads = [b"%d" % i for i in range(8)]
        assert round_trip(proxy, payloads) == payloads
        snapshot = proxy.snapshot()
    for direction in ("up", "down"):
        assert snapshot[direction]["datagrams_out"] == 8
        assert snapshot[direction]["added_delay_mean_s"] >= 0.008


@pytest.mark.parametrize("clock_offset_s", [0.0, 300.0, 40_000.0])
def test_delay_is_never_short_whatever_the_clock_reads(
    echo: EchoServer, clock_offset_s: float
) -> None:
    """The proxy's clock is injected: at 300 s and 40,000 s a float `release - now` of 1 ms
    reads 0.999999999976 ms; the delay counted in integer ns is never below the one asked."""
    config = ImpairConfig(delay_s=0.001)
    clock = lambda: time.monotonic() + clock_offset_s
    with running_proxy(echo.address, up=config, down=config, clock=clock) as proxy:
        payloads = [b"%d" % i for i in range(20)]
        assert round_trip(proxy, payloads) == payloads
        up, down = proxy.up.stats, proxy.down.stats
        snapshot = proxy.snapshot()
    for stats in (up, down):
        assert stats.datagrams_out == 20
        assert stats.added_delay_max_ns >= 1_000_000
        assert stats.added_delay_sum_ns >= 20 * 1_000_000  # no datagram early
    assert 0 <= snapshot["elapsed_s"] < 3600  # measured on the injected clock


def test_loss_applies_to_real_traffic(echo: EchoServer) -> None:
    with running_proxy(echo.address, up=ImpairConfig(loss=1.0)) as proxy:
        sock = client_socket()
        try:
            for _ in range(10):
                sock.sendto(b"gone", proxy.local_address)
            assert wait_until(lambda: proxy.up.stats.datagrams_in == 10)
        finally:
            sock.close()
        assert proxy.up.stats.dropped_loss == 10
        assert echo.received == 0


def test_closed_upstream_port_is_counted_not_fatal() -> None:
    with running_proxy(("127.0.0.1", free_udp_port())) as proxy:
        sock = client_socket()
        try:
            for _ in range(20):
                sock.sendto(b"anyone?", proxy.local_address)
            assert wait_until(lambda: proxy.up.stats.datagrams_in == 20)
            assert wait_until(lambda: proxy.up.stats.refused + proxy.up.stats.send_errors > 0)
        finally:
            sock.close()
        stats = proxy.up.stats
        assert stats.datagrams_out + stats.send_errors == 20


def test_new_clients_beyond_the_limit_are_refused(echo: EchoServer) -> None:
    with running_proxy(echo.address, max_clients=2) as proxy:
        sockets = [client_socket() for _ in range(3)]
        try:
            for sock in sockets[:2]:
                sock.sendto(b"hi", proxy.local_address)
                assert sock.recv(10) == b"hi"
            sockets[2].sendto(b"hi", proxy.local_address)
            assert wait_until(lambda: proxy.clients_rejected == 1)
        finally:
            for sock in sockets:
                sock.close()
        assert proxy.snapshot()["clients_active"] == 2


def test_idle_clients_expire(echo: EchoServer) -> None:
    with running_proxy(echo.address, idle_timeout_s=0.05, periodic_interval_s=0.02) as proxy:
        assert round_trip(proxy, [b"once"]) == [b"once"]
        assert wait_until(lambda: proxy.snapshot()["clients_active"] == 0)
        assert round_trip(proxy, [b"again"]) == [b"again"]  # a fresh mapping works
        assert proxy.clients_total == 2


def test_periodic_callback_runs(echo: EchoServer) -> None:
    calls: list[dict[str, Any]] = []
    with running_proxy(
        echo.address, periodic=lambda p: calls.append(p.snapshot()), periodic_interval_s=0.01
    ):
        assert wait_until(lambda: len(calls) >= 3)


def test_held_datagrams_at_stop_are_counted(echo: EchoServer) -> None:
    with running_proxy(echo.address, up=ImpairConfig(delay_s=60.0)) as proxy:
        sock = client_socket()
        try:
            for _ in range(5):
                sock.sendto(b"slow", proxy.local_address)
            assert wait_until(lambda: proxy.held_datagrams == 5)
        finally:
            sock.close()
    assert proxy.up.stats.unsent_at_exit == 5
    assert proxy.up.stats.datagrams_out == 0


def test_hold_limit_drops_overflow(echo: EchoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "MAX_HELD_DATAGRAMS", 3)
    with running_proxy(echo.address, up=ImpairConfig(delay_s=60.0)) as proxy:
        sock = client_socket()
        try:
            for _ in range(10):
                sock.sendto(b"slow", proxy.local_address)
            assert wait_until(lambda: proxy.up.stats.datagrams_in == 10)
        finally:
            sock.close()
        assert proxy.up.stats.dropped_overflow == 7
        assert proxy.held_datagrams == 3


def test_reordering_reaches_the_wire(echo: EchoServer) -> None:
    """Datagrams sent at once overtake the delayed ones: the echo sees them out of order."""
    echo.echo = False
    config = ImpairConfig(delay_s=0.050, reorder=0.5)
    with running_proxy(echo.address, up=config) as proxy:
        sock = client_socket()
        try:
            for i in range(40):
                sock.sendto(b"%d" % i, proxy.local_address)
            assert wait_until(lambda: echo.received == 40)
        finally:
            sock.close()
        assert proxy.up.stats.reordered > 0
    order = [int(p) for p in echo.payloads]
    assert sorted(order) == list(range(40))
    assert order != sorted(order)


def test_listen_errors_are_local_io_errors(echo: EchoServer) -> None:
    with pytest.raises(LocalIOError, match="cannot listen"):
        Proxy(
            echo.address,
            ("127.0.0.1", 9),
            Impairer(ImpairConfig(), random.Random()),
            Impairer(ImpairConfig(), random.Random()),
        )
    with pytest.raises(UsageError, match="cannot resolve"):
        Proxy(
            ("127.0.0.1", 0),
            ("no such host.invalid", 9),
            Impairer(ImpairConfig(), random.Random()),
            Impairer(ImpairConfig(), random.Random()),
        )


def test_every_datagram_is_accounted_for(echo: EchoServer) -> None:
    config = ImpairConfig(
        loss=0.1,
        duplicate=0.2,
        corrupt=0.1,
        delay_s=0.002,
        jitter_s=0.001,
        mtu_bytes=500,
        rate_bytes_per_s=1e6,
        queue_limit_packets=5,
    )
    with running_proxy(echo.address, up=config, down=config) as proxy:
        sock = client_socket()
        try:
            for i in range(300):
                sock.sendto(b"%d" % i * (1 + i % 300), proxy.local_address)
            assert wait_until(lambda: proxy.up.stats.datagrams_in == 300)
        finally:
            sock.close()
    for stats in (proxy.up.stats, proxy.down.stats):
        assert stats.datagrams_in + stats.duplicated == (
            stats.datagrams_out
            + stats.dropped_loss
            + stats.dropped_queue
            + stats.dropped_mtu
            + stats.dropped_overflow
            + stats.send_errors
            + stats.unsent_at_exit
        )
    assert proxy.up.stats.dropped_mtu > 0
    assert proxy.up.stats.dropped_queue > 0
