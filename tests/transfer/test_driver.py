"""The UDP driver on real loopback sockets, in one process: demultiplexing, concurrency,
garbage datagrams. Several drivers are stepped in turn from one thread."""

from __future__ import annotations

import os
import socket

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.errors import ExitCode
from rtcp.net.driver import App, Driver, Handle
from rtcp.transfer.receiver import FileServer
from rtcp.transfer.storage import OutputDir
from tests.sending import lone_sender


def step_all(drivers, until, limit_s=20.0):
    import time

    end = time.monotonic() + limit_s
    while not until():
        assert time.monotonic() < end, "timed out"
        for d in drivers:
            d.run_once(0.002)


def start_sender(folder, data: bytes, name: str, server_addr, config=None):
    driver = Driver(("127.0.0.1", 0))
    app = lone_sender(folder / name, name, data, peer_text="srv", timeout_s=10.0,
                      clock=driver.clock)
    cfg = config or ConnectionConfig(user_timeout_s=10.0)
    driver.connect(server_addr, cfg, app)
    return driver, app


def test_four_concurrent_transfers_on_one_socket(tmp_path):
    server = Driver(("127.0.0.1", 0))
    results = []
    srv = FileServer(server, OutputDir(tmp_path / "inbox"), on_result=results.append)
    files = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(4)}
    senders = [
        start_sender(tmp_path, data, name, server.local_address) for name, data in files.items()
    ]
    drivers = [server] + [d for d, _ in senders]
    try:
        step_all(drivers, lambda: all(a.done for _, a in senders) and len(results) == 4)
        for _, app in senders:
            assert app.succeeded, app.error
        assert sorted(r.name for r in results) == sorted(files)
        assert all(r.exit_code == ExitCode.OK for r in results)
        for name, data in files.items():
            assert (tmp_path / "inbox" / name).read_bytes() == data
        # connections are forgotten once closed (TIME-WAIT is shortcut after a linger)
        step_all([server], lambda: not server.handles, limit_s=5.0)
        assert srv.active == 0
    finally:
        for d in drivers:
            d.close()


def test_garbage_does_not_create_connections(tmp_path):
    server = Driver(("127.0.0.1", 0))
    FileServer(server, OutputDir(tmp_path))
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        addr = server.local_address
        junk.sendto(b"", addr)
        junk.sendto(b"short", addr)
        junk.sendto(os.urandom(200), addr)
        syn = wire.build(wire.SYN, 1234, 0, 1, 0, 1000)
        bad = bytearray(syn)
        bad[-1] ^= 0xFF  # the checksum no longer matches
        junk.sendto(bytes(bad), addr)
        junk.sendto(wire.build(wire.ACK, 1234, 0, 1, 0, 1000), addr)  # not a SYN
        step_all([server], lambda: server.stats.datagrams_received >= 5, limit_s=5.0)
        assert server.handles == []
        assert server.stats.unroutable >= 4
        # a real SYN still gets a connection
        junk.sendto(syn, addr)
        step_all([server], lambda: len(server.handles) == 1, limit_s=5.0)
        # its retransmission goes to the same connection
        junk.sendto(syn, addr)
        step_all([server], lambda: server.stats.datagrams_received >= 7, limit_s=5.0)
        assert len(server.handles) == 1
    finally:
        junk.close()
        server.close()


class Echo(App):
    """A generic app: proves the loop knows nothing about files."""

    def __init__(self):
        self.got = bytearray()
        self.closed = None

    def event_received(self, event, now):
        from rtcp.core import events as ev

        conn = self.handle.conn
        if isinstance(event, ev.DataReceived):
            data = conn.read()
            self.got += data
            conn.send(data)
        elif isinstance(event, ev.StreamEnded):
            conn.close()
        elif isinstance(event, ev.ConnectionClosed):
            self.closed = event


class Client(App):
    def __init__(self, payload):
        self.payload = payload
        self.got = bytearray()
        self.closed = None
        self.sent = False

    def event_received(self, event, now):
        from rtcp.core import events as ev

        conn = self.handle.conn
        if isinstance(event, ev.HandshakeComplete) and not self.sent:
            conn.send(self.payload)
            conn.close()
            self.sent = True
        elif isinstance(event, ev.DataReceived):
            self.got += conn.read()
        elif isinstance(event, ev.ConnectionClosed):
            self.closed = event


def test_generic_echo_app():
    server = Driver(("127.0.0.1", 0))
    echoes = []

    def factory(peer):
        echoes.append(Echo())
        return echoes[-1]

    server.listen(ConnectionConfig(), factory)
    client = Driver(("127.0.0.1", 0))
    app = Client(b"hello rtcp" * 1000)
    client.connect(server.local_address, ConnectionConfig(), app)
    try:
        step_all([server, client], lambda: app.closed is not None)
        assert bytes(app.got) == app.payload
        assert app.closed.reason == "closed"
        assert bytes(echoes[0].got) == app.payload
    finally:
        server.close()
        client.close()


def test_refusing_factory_resets_the_client():
    server = Driver(("127.0.0.1", 0))
    server.listen(ConnectionConfig(), lambda peer: None)
    client = Driver(("127.0.0.1", 0))
    app = Client(b"x")
    client.connect(server.local_address, ConnectionConfig(), app)
    try:
        step_all([server, client], lambda: app.closed is not None)
        assert app.closed.reason == "reset"
    finally:
        server.close()
        client.close()


def test_segment_for_unknown_connection_gets_a_reset():
    """RFC 9293 3.10.7.1, as a closed port: RST with SEQ = the segment's ACK."""
    server = Driver(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        peer.sendto(
            wire.build(wire.ACK, 777, 4242, 10, 99_999, 1000, b"", b"data"), server.local_address
        )
        step_all([server], lambda: server.stats.resets_sent == 1, limit_s=5.0)
        seg = wire.decode(peer.recvfrom(65536)[0])
        assert seg.flags == wire.RST
        assert (seg.src_id, seg.dst_id, seg.seq) == (4242, 777, 99_999)
        # never a RST for a RST
        peer.sendto(wire.build(wire.RST, 777, 4242, 10, 0, 0), server.local_address)
        step_all([server], lambda: server.stats.datagrams_received == 2, limit_s=5.0)
        assert server.stats.resets_sent == 1
    finally:
        peer.close()
        server.close()


class _RecordingConn:
    """A core stand-in that records how the driver hands it datagrams."""

    is_closed = False

    def __init__(self, local_id: int):
        self.local_id = local_id
        self.calls: list[tuple[str, list[bytes]]] = []

    def receive_datagrams(self, batch, now):
        taken = 0
        for d in batch:
            if wire.peek_ids(d)[2] != self.local_id:
                break
            taken += 1
        self.calls.append(("batch", [bytes(d) for d in batch[:taken]]))
        return taken

    def receive_datagram(self, data, now):
        self.calls.append(("one", [bytes(data)]))


def test_a_gro_batch_is_routed_in_runs_per_connection():
    driver = Driver(("127.0.0.1", 0))
    try:
        conns = {cid: _RecordingConn(cid) for cid in (0x11, 0x22)}
        for cid, conn in conns.items():
            driver._by_id[cid] = Handle(conn, ("127.0.0.1", 9), App(), driver, 0.0)

        def dgram(dst: int, n: int) -> bytes:
            return wire.build(wire.ACK, 0x99, dst, n, 0, 100, b"", bytes([n]) * 20)

        a1, a2, b1, a3 = dgram(0x11, 1), dgram(0x11, 2), dgram(0x22, 3), dgram(0x11, 4)
        unknown, short = dgram(0x33, 5), b"\x01\x10"
        batch = [memoryview(d) for d in (a1, a2, b1, unknown, short, a3)]
        driver._route_batch(batch, ("127.0.0.1", 9), driver.clock())
        assert conns[0x11].calls == [("batch", [a1, a2]), ("batch", [a3])]
        assert conns[0x22].calls == [("batch", [b1])]
        assert driver.stats.unroutable == 2  # the unknown id and the runt
    finally:
        driver.close()
