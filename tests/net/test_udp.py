"""Many datagrams per system call (rtcp/net/udp.py): GSO sends and GRO reads over real loopback
sockets, the fallbacks (RTCP_NO_GSO, a kernel that refuses), the driver's queueing and counters,
pcap captures of batches, and the proxy's batch path with exact per-datagram stats."""

from __future__ import annotations

import errno
import os
import random
import socket
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from rtcp.core.config import ConnectionConfig
from rtcp.net import udp
from rtcp.net.driver import Driver
from rtcp.proxy.impair import ImpairConfig, Impairer
from rtcp.proxy.loop import Proxy
from rtcp.trace.pcap import PcapWriter, TapSocket, read_pcap

WAIT_S = 10.0


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    return sock


def _kernel_has_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return udp.gso_supported(sock)


def _kernel_has_gro() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.setsockopt(udp.SOL_UDP, udp.UDP_GRO, 1)  # not enable_gro: RTCP_NO_GSO aside
        except OSError:
            return False
        return True


@pytest.fixture(autouse=True)
def _batching_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the mechanism: RTCP_NO_GSO in the outer environment is ignored
    (the tests of the switch set it themselves)."""
    monkeypatch.delenv(udp.NO_GSO_ENV, raising=False)


needs_gso = pytest.mark.skipif(not _kernel_has_gso(), reason="no UDP_SEGMENT in this kernel")
needs_gro = pytest.mark.skipif(not _kernel_has_gro(), reason="no UDP_GRO in this kernel")


def _payloads(sizes: list[int]) -> list[bytes]:
    """Distinct contents, so that order and boundaries are checked, not just lengths."""
    rng = random.Random(len(sizes))
    return [
        bytes([i % 251]) + rng.randbytes(max(0, s - 1)) if s else b"" for i, s in enumerate(sizes)
    ]


def _receive(sock: socket.socket, count: int, gro: bool) -> tuple[list[bytes], int]:
    """Read until `count` datagrams arrived: (datagrams, reads it took)."""
    sock.settimeout(WAIT_S)
    buf = bytearray(udp.RECV_BUFFER_BYTES)
    got: list[bytes] = []
    reads = 0
    while len(got) < count:
        if gro:
            views, _addr = udp.recv_batch(sock, buf)
            got.extend(bytes(v) for v in views)
        else:
            n, _addr = sock.recvfrom_into(buf)
            got.append(bytes(buf[:n]))
        reads += 1
    return got, reads


SIZES_RUNS = [1400] * 10 + [700] + [1400] * 5 + [300] * 3 + [1200] + [50] + [1000] * 150 + [999]


@pytest.mark.parametrize("gso_on", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("gro_on", [True, False], ids=["gro", "no-gro"])
def test_round_trip(gso_on: bool, gro_on: bool) -> None:
    if gso_on and not _kernel_has_gso():
        pytest.skip("no UDP_SEGMENT in this kernel")
    if gro_on and not _kernel_has_gro():
        pytest.skip("no UDP_GRO in this kernel")
    rx, tx = _udp_socket(), _udp_socket()
    try:
        if gro_on:
            assert udp.enable_gro(rx)
        gso = udp.Gso(tx, enabled=gso_on)
        datagrams = _payloads(SIZES_RUNS)
        result = udp.send_batch(tx, datagrams, rx.getsockname(), gso)
        assert result.done == result.sent == len(datagrams)
        assert result.sent_bytes == sum(map(len, datagrams))
        assert result.errors == result.error_bytes == 0
        got, reads = _receive(rx, len(datagrams), gro_on)
        assert got == datagrams
        if gso_on:
            assert gso.sends < len(datagrams) // 10 and gso.segments > len(datagrams) - 10
            assert gso.fallbacks == 0
        else:
            assert gso.sends == 0
        if gso_on and gro_on:
            assert reads == gso.sends + (len(datagrams) - gso.segments)  # a GSO send, one read
        else:
            assert reads == len(datagrams)
    finally:
        rx.close()
        tx.close()


class _FakeSocket:
    """Records what send_batch asks of a socket; sendmsg can be made to fail."""

    def __init__(self, fail_sendmsg: list[BaseException] | None = None, fail_sendto=()):
        self.calls: list[tuple[str, list[bytes]]] = []
        self.fail_sendmsg = list(fail_sendmsg or [])
        self.fail_sendto = list(fail_sendto)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None):
        if self.fail_sendmsg:
            raise self.fail_sendmsg.pop(0)
        ((level, kind, value),) = ancdata
        assert (level, kind) == (udp.SOL_UDP, udp.UDP_SEGMENT) and len(value) == 2
        size = int.from_bytes(value, sys.byteorder)
        data = b"".join(bytes(b) for b in buffers)
        segments = [data[p : p + size] for p in range(0, len(data), size)]
        assert all(len(s) == size for s in segments[:-1]) and 0 < len(segments[-1]) <= size
        assert len(segments) <= udp.MAX_SEGMENTS and len(data) <= udp.MAX_GSO_BYTES
        self.calls.append(("gso", segments))
        return len(data)

    def sendto(self, data, address):
        if self.fail_sendto:
            exc = self.fail_sendto.pop(0)
            if exc is not None:
                raise exc
        self.calls.append(("one", [bytes(data)]))
        return len(data)

    def send(self, data):
        return self.sendto(data, None)

    def sent(self) -> list[bytes]:
        return [d for _, segs in self.calls for d in segs]

    def shape(self) -> list[tuple[str, int]]:
        return [(kind, len(segs)) for kind, segs in self.calls]


def test_runs_are_grouped_by_size_with_a_shorter_last() -> None:
    sizes = [100] * 3 + [50] + [200] * 5 + [0] + [1400] * 70 + [700] + [1400] * 2 + [9] + [8]
    datagrams = _payloads(sizes)
    sock = _FakeSocket()
    result = udp.send_batch(sock, datagrams, ("127.0.0.1", 9), udp.Gso(enabled=True))
    assert sock.sent() == datagrams
    assert result[:5] == (len(sizes), len(sizes), sum(sizes), 0, 0)
    assert sock.shape() == [
        ("gso", 4),  # 3 x 100, and the shorter 50 ends the run
        ("gso", 5),  # 5 x 200: the empty datagram never joins a run
        ("one", 1),  # the empty one
        ("gso", 46),  # 1400: 46 fit in 65507 bytes
        ("gso", 25),  # the other 24, and the shorter 700 ends the run
        ("gso", 3),  # 2 x 1400 and the shorter 9
        ("one", 1),  # the 8 (a run of one)
    ]


def test_more_than_64_small_datagrams_and_the_byte_limit() -> None:
    sock = _FakeSocket()
    datagrams = _payloads([100] * 150)
    udp.send_batch(sock, datagrams, ("127.0.0.1", 9), udp.Gso(enabled=True))
    assert sock.shape() == [("gso", 64), ("gso", 64), ("gso", 22)]
    assert sock.sent() == datagrams
    sock = _FakeSocket()
    datagrams = _payloads([30000] * 5)
    udp.send_batch(sock, datagrams, ("127.0.0.1", 9), udp.Gso(enabled=True))
    assert sock.shape() == [("gso", 2), ("gso", 2), ("one", 1)]  # 65507 // 30000 = 2
    sock = _FakeSocket()
    datagrams = _payloads([65507] * 3)
    udp.send_batch(sock, datagrams, ("127.0.0.1", 9), udp.Gso(enabled=True))
    assert sock.shape() == [("one", 1)] * 3


def test_kernel_rejecting_gso_falls_back_for_good() -> None:
    for code in (errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
        sock = _FakeSocket(fail_sendmsg=[OSError(code, os.strerror(code))])
        gso = udp.Gso(enabled=True)
        datagrams = _payloads([1000] * 10 + [500] * 10)
        result = udp.send_batch(sock, datagrams, ("127.0.0.1", 9), gso)
        assert result[:5] == (20, 20, sum(map(len, datagrams)), 0, 0)
        assert sock.sent() == datagrams
        assert sock.shape() == [("one", 1)] * 20
        assert not gso.enabled and gso.fallbacks == 1


def test_a_refused_segment_size_is_remembered() -> None:
    sock = _FakeSocket(fail_sendmsg=[OSError(errno.EINVAL, "Invalid argument")])
    gso = udp.Gso(enabled=True)
    datagrams = _payloads([9000] * 4 + [1400] * 4 + [9000] * 2)
    result = udp.send_batch(sock, datagrams, ("127.0.0.1", 9), gso)
    assert result.sent == 10 and sock.sent() == datagrams
    assert gso.enabled and gso.max_segment == 8999
    assert sock.shape() == [("one", 1)] * 4 + [("gso", 4)] + [("one", 1)] * 2
    # a small size refused means no GSO at all on this path
    sock = _FakeSocket(fail_sendmsg=[OSError(errno.EINVAL, "Invalid argument")])
    gso = udp.Gso(enabled=True)
    udp.send_batch(sock, _payloads([500] * 4), ("127.0.0.1", 9), gso)
    assert not gso.enabled and sock.shape() == [("one", 1)] * 4


def test_a_pending_error_costs_one_datagram_as_with_sendto() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    sock = _FakeSocket(fail_sendmsg=[refused])
    gso = udp.Gso(enabled=True)
    datagrams = _payloads([1000] * 10)
    result = udp.send_batch(sock, datagrams, ("127.0.0.1", 9), gso)
    assert result[:5] == (10, 9, 9000, 1, 1000)
    assert sock.sent() == datagrams[1:]
    assert gso.enabled
    # and a failing single datagram, the same
    sock = _FakeSocket(fail_sendto=[None, refused])
    result = udp.send_batch(sock, _payloads([10, 20, 30]), ("127.0.0.1", 9), gso)
    assert result[:5] == (3, 2, 40, 1, 20)


def test_eagain_stops_at_the_first_datagram_not_taken() -> None:
    sock = _FakeSocket()
    datagrams = _payloads([1000] * 10 + [10] + [1000] * 10)
    calls = {"n": 0}
    real = sock.sendmsg

    def sendmsg(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BlockingIOError(errno.EAGAIN, "again")
        return real(*args)

    sock.sendmsg = sendmsg
    result = udp.send_batch(sock, datagrams, ("127.0.0.1", 9), udp.Gso(enabled=True))
    assert result[:5] == (11, 11, 10_010, 0, 0)  # 10 + the shorter 10 in one send, then EAGAIN
    sock = _FakeSocket(fail_sendto=[None, BlockingIOError(errno.EAGAIN, "again")])
    result = udp.send_batch(sock, datagrams[:3], ("127.0.0.1", 9), udp.Gso(enabled=False))
    assert result[:5] == (1, 1, 1000, 0, 0)


def test_no_gso_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(udp.NO_GSO_ENV, "1")
    sock = _udp_socket()
    try:
        assert udp.disabled_by_env()
        assert not udp.Gso(sock).enabled
        assert not udp.enable_gro(sock)
        driver = Driver(("127.0.0.1", 0))
        try:
            assert not driver.gro and not driver.gso.enabled
        finally:
            driver.close()
    finally:
        sock.close()
    for off in ("0", "", "no", "false"):
        monkeypatch.setenv(udp.NO_GSO_ENV, off)
        assert not udp.disabled_by_env()


def test_gro_control_message_and_split() -> None:
    assert udp.gro_size([]) == 0
    assert udp.gro_size([(udp.SOL_UDP, udp.UDP_GRO, (1400).to_bytes(4, sys.byteorder))]) == 1400
    assert udp.gro_size([(udp.SOL_UDP, udp.UDP_GRO, (1400).to_bytes(2, sys.byteorder))]) == 1400
    assert udp.gro_size([(socket.SOL_SOCKET, 1, b"\0\0\0\1")]) == 0
    view = memoryview(bytes(range(10)))
    assert [bytes(v) for v in udp.split(view, 10, 4)] == [b"\0\1\2\3", b"\4\5\6\7", b"\x08\x09"]
    assert [bytes(v) for v in udp.split(view, 7, 0)] == [bytes(range(7))]
    assert [bytes(v) for v in udp.split(view, 4, 4)] == [bytes(range(4))]
    assert udp.split(view, 0, 0)[0].nbytes == 0
    assert (udp.count_segments(10, 4), udp.count_segments(8, 4), udp.count_segments(3, 0)) == (
        3,
        2,
        1,
    )


@needs_gso
def test_send_segments_forwards_a_batch_whole() -> None:
    rx, tx = _udp_socket(), _udp_socket()
    try:
        tx.connect(rx.getsockname())
        datagrams = _payloads([1000] * 100 + [10])
        gso = udp.Gso(tx)
        sent, sent_bytes = udp.send_segments(tx, b"".join(datagrams), 1000, None, gso)
        assert (sent, sent_bytes) == (101, 100_010)
        assert gso.sends == 2 and gso.segments == 101  # 64 + 37
        assert _receive(rx, 101, gro=False)[0] == datagrams
    finally:
        rx.close()
        tx.close()


@needs_gso
def test_datagrams_to_two_addresses_queued_on_eagain_keep_order_and_counts() -> None:
    """The driver queues what the socket did not take (EAGAIN) and sends the queue, batched
    per address, when writable: nothing lost, nothing twice, counters per datagram."""
    rx1, rx2 = _udp_socket(), _udp_socket()
    driver = Driver(("127.0.0.1", 0))
    try:
        raw = driver.sock

        class Full:
            """The socket as it is when its buffer is full: everything would block."""

            def __getattr__(self, name):
                return getattr(raw, name)

            def fileno(self):
                return raw.fileno()

            def sendmsg(self, *args):
                raise BlockingIOError(errno.EAGAIN, "full")

            def sendto(self, *args):
                raise BlockingIOError(errno.EAGAIN, "full")

        first = _payloads([1200] * 30 + [77])
        second = _payloads([500] * 20)
        third = _payloads([1200] * 5)
        driver.sock = Full()
        driver._send(first, rx1.getsockname())
        driver._send(second, rx2.getsockname())
        driver._send(third, rx1.getsockname())
        assert len(driver._pending) == 56 and driver.stats.datagrams_sent == 0
        assert driver.stats.send_queue_peak == 56
        driver.sock = raw
        driver._send_pending()
        assert not driver._pending and not driver._want_write
        assert driver.stats.datagrams_sent == 56
        assert driver.stats.bytes_sent == sum(map(len, first + second + third))
        assert driver.stats.send_errors == 0
        assert driver.gso.sends == 3
        assert _receive(rx1, 36, gro=False)[0] == first + third
        assert _receive(rx2, 20, gro=False)[0] == second
    finally:
        driver.close()
        rx1.close()
        rx2.close()


def _transfer(payload: bytes) -> tuple[Driver, Driver, bytes]:
    """A Client -> Echo exchange between two drivers (tests/transfer/test_driver's apps)."""
    from tests.transfer.test_driver import Client, Echo, step_all

    server, client = Driver(("127.0.0.1", 0)), Driver(("127.0.0.1", 0))
    echoes: list = []
    server.listen(ConnectionConfig(), lambda peer: echoes.append(Echo()) or echoes[-1])
    app = Client(payload)
    client.connect(server.local_address, ConnectionConfig(), app)
    try:
        step_all([server, client], lambda: app.closed is not None)
    except BaseException:
        server.close()
        client.close()
        raise
    assert app.closed.reason == "closed"
    assert bytes(echoes[0].got) == payload
    return server, client, bytes(app.got)


@pytest.mark.parametrize("no_gso", ["0", "1"], ids=["batched", "RTCP_NO_GSO"])
def test_driver_transfer_batched_or_not(no_gso: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(udp.NO_GSO_ENV, no_gso)
    payload = random.Random(7).randbytes(2_000_000)
    server, client, echoed = _transfer(payload)
    try:
        assert echoed == payload
        for d in (server, client):
            assert d.stats.send_errors == 0 and d.stats.receive_errors == 0
        if no_gso == "1" or not _kernel_has_gso():
            assert client.gso.sends == server.gso.sends == 0
        else:
            # both ends sent data (the echo) in runs: many datagrams per system call
            assert client.gso.segments > 4 * client.gso.sends > 0
            assert server.gso.segments > 4 * server.gso.sends > 0
    finally:
        server.close()
        client.close()


# --- pcap: a batch is recorded datagram by datagram ----------------------------------------


@needs_gso
@needs_gro
def test_tapsocket_records_each_segment_of_a_batch(tmp_path) -> None:
    rx, tx = _udp_socket(), _udp_socket()
    try:
        assert udp.enable_gro(rx)
        with (
            PcapWriter(tmp_path / "tx.pcap") as tx_pcap,
            PcapWriter(tmp_path / "rx.pcap") as rx_pcap,
        ):
            tap_tx, tap_rx = TapSocket(tx, tx_pcap), TapSocket(rx, rx_pcap)
            datagrams = _payloads([1400] * 50 + [100] + [64] * 3)
            result = udp.send_batch(tap_tx, datagrams, rx.getsockname(), udp.Gso(tx))
            assert result.sent == len(datagrams)
            got, reads = _receive(tap_rx, len(datagrams), gro=True)
            assert got == datagrams and reads < len(datagrams)
        for name, src, dst in (("tx", tx, rx), ("rx", tx, rx)):
            packets = read_pcap(tmp_path / f"{name}.pcap")
            assert [p.payload for p in packets] == datagrams
            assert all(p.udp_checksum_ok and p.ip_checksum_ok for p in packets)
            assert {p.src for p in packets} == {src.getsockname()}
            assert {p.dst for p in packets} == {dst.getsockname()}
    finally:
        rx.close()
        tx.close()


# --- the proxy: a batch through the passthrough path, stats per datagram ------------------


class _Sink:
    """An upstream that counts datagrams (plain reads: one per datagram) and echoes them."""

    def __init__(self) -> None:
        self.sock = _udp_socket()
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set():
                return  # close()'s wake-up
            self.payloads.append(data)
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self._stop.set()
        try:  # wake the thread now rather than at its next receive timeout
            self.sock.sendto(b"", self.address)
        except OSError:
            pass
        self._thread.join(WAIT_S)
        self.sock.close()


@contextmanager
def _proxy(up: ImpairConfig, down: ImpairConfig | None = None, clock_offset_s: float = 0.0):
    sink = _Sink()
    proxy = Proxy(
        ("127.0.0.1", 0),
        sink.address,
        Impairer(up, random.Random(1)),
        Impairer(down or ImpairConfig(), random.Random(2)),
        clock=lambda: time.monotonic() + clock_offset_s,
    )
    thread = threading.Thread(target=proxy.run, daemon=True)
    thread.start()
    try:
        yield proxy, sink
    finally:
        proxy.stop()
        thread.join(WAIT_S)
        sink.close()
        assert not thread.is_alive()


def _wait(condition, limit_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def _send_batch_through(proxy: Proxy, datagrams: list[bytes]) -> socket.socket:
    client = _udp_socket()
    result = udp.send_batch(client, datagrams, proxy.local_address, udp.Gso(client))
    assert result.sent == len(datagrams)
    return client


@needs_gso
@needs_gro
@pytest.mark.parametrize("mtu", [None, 1400], ids=["passthrough", "mtu-fits"])
def test_proxy_forwards_a_batch_whole_with_exact_stats(mtu: int | None) -> None:
    datagrams = _payloads([1200] * 40 + [333])
    with _proxy(ImpairConfig(mtu_bytes=mtu)) as (proxy, sink):
        client = _send_batch_through(proxy, datagrams)
        try:
            assert _wait(lambda: proxy.down.stats.datagrams_out == len(datagrams))
            echoed, _ = _receive(client, len(datagrams), gro=False)
        finally:
            client.close()
        up, down = proxy.up.stats, proxy.down.stats
        ((_, record),) = proxy._clients.items()
        upstream_gso = record.gso
    total = sum(map(len, datagrams))
    assert sink.payloads == datagrams and echoed == datagrams
    assert (up.datagrams_in, up.bytes_in, up.datagrams_out, up.bytes_out) == (41, total, 41, total)
    assert up.dropped_mtu == up.send_errors == 0
    assert (down.datagrams_in, down.datagrams_out, down.bytes_out) == (41, 41, total)
    # the client's one GSO send reached the proxy as one read and left it as one send
    assert upstream_gso.sends == 1 and upstream_gso.segments == 41


@needs_gso
@needs_gro
def test_proxy_mtu_drops_only_the_datagrams_above_it() -> None:
    datagrams = _payloads([1500] * 6 + [800])  # one GRO batch of 1500-byte segments
    with _proxy(ImpairConfig(mtu_bytes=1400)) as (proxy, sink):
        client = _send_batch_through(proxy, datagrams)
        try:
            assert _wait(lambda: proxy.up.stats.datagrams_in == 7)
            assert _wait(lambda: proxy.down.stats.datagrams_out == 1)
        finally:
            client.close()
        up = proxy.up.stats
    assert sink.payloads == datagrams[-1:]
    assert (up.datagrams_in, up.bytes_in) == (7, 6 * 1500 + 800)
    assert (up.datagrams_out, up.bytes_out, up.dropped_mtu, up.send_errors) == (1, 800, 6, 0)


@needs_gso
@needs_gro
@pytest.mark.parametrize("clock_offset_s", [0.0, 300.0, 40_000.0])
def test_proxy_impairs_each_datagram_of_a_batch(clock_offset_s: float) -> None:
    """Any impairment but an MTU: the Impairer sees each datagram of the batch on its own. At
    a clock of 300 s or 40,000 s, float seconds round `now + 0.001 - now` below 1 ms."""
    datagrams = _payloads([1000] * 30)
    with _proxy(ImpairConfig(delay_s=0.001), clock_offset_s=clock_offset_s) as (proxy, sink):
        client = _send_batch_through(proxy, datagrams)
        try:
            assert _wait(lambda: len(sink.payloads) == 30)
            assert _wait(lambda: proxy.down.stats.datagrams_out == 30)
            echoed, _ = _receive(client, 30, gro=False)
        finally:
            client.close()
        up = proxy.up.stats
    assert sink.payloads == datagrams and echoed == datagrams
    assert (up.datagrams_in, up.bytes_in, up.datagrams_out, up.bytes_out) == (
        30,
        30_000,
        30,
        30_000,
    )
    assert up.added_delay_max_ns >= 1_000_000  # never early


@needs_gso
@needs_gro
def test_proxy_forwards_a_batch_downstream_whole() -> None:
    """Upstream -> client: a GSO batch from the upstream leaves the proxy's listening socket as
    one GSO send, with exact "down" counters."""
    upstream = _udp_socket()
    upstream.settimeout(WAIT_S)
    proxy = Proxy(
        ("127.0.0.1", 0),
        upstream.getsockname(),
        Impairer(ImpairConfig(), random.Random(1)),
        Impairer(ImpairConfig(), random.Random(2)),
    )
    thread = threading.Thread(target=proxy.run, daemon=True)
    thread.start()
    client = _udp_socket()
    try:
        client.sendto(b"hello", proxy.local_address)
        data, proxy_side = upstream.recvfrom(100)
        assert data == b"hello"
        datagrams = _payloads([1300] * 45 + [1])
        result = udp.send_batch(upstream, datagrams, proxy_side, udp.Gso(upstream))
        assert result.sent == 46
        got, _ = _receive(client, 46, gro=False)
        assert got == datagrams
        assert _wait(lambda: proxy.down.stats.datagrams_out == 46)
        down = proxy.down.stats
        total = sum(map(len, datagrams))
        assert (down.datagrams_in, down.bytes_in, down.datagrams_out, down.bytes_out) == (
            46,
            total,
            46,
            total,
        )
        assert down.send_errors == 0
        assert proxy._gso.sends == 1 and proxy._gso.segments == 46
    finally:
        proxy.stop()
        thread.join(WAIT_S)
        client.close()
        upstream.close()
    assert not thread.is_alive()


def test_a_datagram_above_the_first_hop_mtu_is_counted_too_big() -> None:
    too_big = OSError(errno.EMSGSIZE, "Message too long")
    sock = _FakeSocket(fail_sendto=[None, too_big])
    result = udp.send_batch(sock, _payloads([10, 2000, 30]), ("127.0.0.1", 9))
    assert (result.sent, result.errors, result.too_big) == (2, 1, 1)
