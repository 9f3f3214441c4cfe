"""SYN floods and amplification against a real receiver: real clients are served during a
flood of 100,000 SYNs, and an address that never completes its handshake gets at most 3x the
bytes it sent."""

from __future__ import annotations

import json
import random
import socket
import threading
import time

import psutil

from rtcp.core import wire
from tests.e2e.conftest import RTCP, make_file, needs_proxy

FLOOD_SYNS = 100_000
FLOOD_PORTS = 200
FLOOD_DEADLINE_S = 120.0
NEW_CLIENTS = 4
MIB = 1024 * 1024


def syn(src_id: int, seq: int) -> bytes:
    """A SYN as `rtcp send` makes it (same options, so the same size)."""
    opts = (
        wire.opt_mss(1362) + wire.opt_wscale(7) + wire.opt_sack_permitted()
        + wire.opt_timestamps(seq, 0)
    )
    return wire.build(wire.SYN, src_id, 0, seq, 0, 65535, opts)


def flood(
    port: int, count: int, stop: threading.Event, sent: list, per_s: float | None = None
) -> None:
    """count SYNs from FLOOD_PORTS source ports, each SYN with its own connection id; as fast
    as possible, or per_s a second."""
    rng = random.Random(7)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FLOOD_PORTS)]
    deadline = time.monotonic() + FLOOD_DEADLINE_S
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        n = 0
        start = time.monotonic()
        while n < count and not stop.is_set() and time.monotonic() < deadline:
            if per_s is not None and n > (time.monotonic() - start) * per_s:
                stop.wait(0.01)  # paced: the next SYN is not due yet
                continue
            s = socks[n % FLOOD_PORTS]
            try:
                s.sendto(syn(rng.getrandbits(32) or 1, rng.getrandbits(32)), ("127.0.0.1", port))
                n += 1
            except BlockingIOError:
                time.sleep(0.0005)
            except OSError:  # ECONNREFUSED for an earlier datagram: go on
                n += 1
            if n % 1000 == 0:  # drop what came back (RETRYs) so the buffers never fill
                for r in socks[:FLOOD_PORTS]:
                    try:
                        while r.recv(2048):
                            pass
                    except OSError:
                        pass
        sent.append(n)
    finally:
        for s in socks:
            s.close()


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@needs_proxy
def test_syn_flood_serves_real_clients(receiver, proxy, spawn, tmp_path):
    proc, port, out = receiver()
    baseline = _rss(proc.pid)
    _p, pport = proxy(port, "--rate", "80mbit")  # the running transfer takes a few seconds
    big = make_file(tmp_path / "big.bin", 20_000_000)
    running = spawn(["send", str(big), "--to", f"127.0.0.1:{pport}", "--json"])
    stop, sent = threading.Event(), []
    flooder = threading.Thread(target=flood, args=(port, FLOOD_SYNS, stop, sent), daemon=True)
    flooder.start()
    try:
        clients = []
        for i in range(NEW_CLIENTS):
            small = make_file(tmp_path / f"new{i}.bin", 200_000, seed=i + 1)
            clients.append(spawn(["send", str(small), "--to", f"127.0.0.1:{port}", "--json"]))
        for c in [running, *clients]:
            assert c.wait(FLOOD_DEADLINE_S) == 0, c.stderr
            assert json.loads(c.stdout)["verified"] is True
        flooder.join(FLOOD_DEADLINE_S)
        assert sent and sent[0] == FLOOD_SYNS
        assert _rss(proc.pid) - baseline < 64 * MIB
    finally:
        stop.set()
        flooder.join(10)
    assert (out / "big.bin").stat().st_size == 20_000_000
    for i in range(NEW_CLIENTS):
        assert (out / f"new{i}.bin").exists()


AMPLIFICATION_WATCH_S = 8.0  # SYN-ACKs at 0, 1, 3 and 7 s without the limit


def test_unvalidated_address_gets_at_most_3x(receiver):
    _proc, port, _out = receiver()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        first = syn(12345, 777)
        s.sendto(first, ("127.0.0.1", port))
        got = 0
        end = time.monotonic() + AMPLIFICATION_WATCH_S
        while (left := end - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                got += len(s.recv(65536))
            except TimeoutError:
                break
        assert 0 < got <= 3 * len(first)
    finally:
        s.close()


def test_forged_retry_token_creates_nothing(receiver, tmp_path):
    """A SYN echoing a token the receiver never issued is dropped: no SYN-ACK comes back,
    while a real client still connects."""
    _proc, port, _out = receiver()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        opts = wire.opt_mss(1362) + wire.opt_bytes(wire.OPT_RETRY_TOKEN, bytes(20))
        s.sendto(wire.build(wire.SYN, 99, 0, 5, 0, 65535, opts), ("127.0.0.1", port))
        small = make_file(tmp_path / "real.bin", 50_000)
        import subprocess

        r = subprocess.run(
            [RTCP, "send", str(small), "--to", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert r.returncode == 0, r.stderr
        s.setblocking(False)
        try:
            answer = s.recv(65536)
        except BlockingIOError:
            answer = b""
        assert answer == b""
    finally:
        s.close()
