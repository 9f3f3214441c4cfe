"""Paths that change: the proxy between sender and receiver is killed and a new one started
on the same port mid-transfer (a NAT rebinding, a restarted middlebox). The receiver sees the
connection from a new address, challenges it, and moves the connection there once it answers.
"""

from __future__ import annotations

import json
import signal

import pytest

from rtcp.transfer import protocol as proto
from tests.e2e.conftest import make_file, needs_proxy, wait_for

SIZE = 8_000_000


def _proxy_args(listen_port: int, upstream_port: int) -> list:
    return [
        "proxy", "--listen", f"127.0.0.1:{listen_port}", "--upstream",
        f"127.0.0.1:{upstream_port}", "--rate", "40mbit",
    ]


def _temp_size(out) -> int:
    if not out.exists():
        return 0
    return sum(p.stat().st_size for p in out.iterdir() if p.name.startswith(proto.TEMP_PREFIX))


@needs_proxy
def test_proxy_restarted_on_the_same_port_mid_transfer(receiver, spawn, tmp_path):
    _recv, port, out = receiver()
    first = spawn(_proxy_args(0, port))
    pport = first.wait_port()
    src = make_file(tmp_path / "moved.bin", SIZE)
    sender = spawn(["send", str(src), "--to", f"127.0.0.1:{pport}", "--json"])
    wait_for(lambda: _temp_size(out) > SIZE // 8, 60, "the transfer under way")
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = spawn(_proxy_args(pport, port))  # the same port: the sender's peer is unchanged
    assert second.wait_port() == pport
    assert sender.wait(120) == 0, sender.stderr
    assert json.loads(sender.stdout)["verified"] is True
    assert (out / "moved.bin").read_bytes() == src.read_bytes()


def _swap_socket(driver) -> None:
    """The client's source port changes (its NAT rebinds): a new socket on another port."""
    import selectors
    import socket

    new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new.bind(("127.0.0.1", 0))
    new.setblocking(False)
    driver._sel.unregister(driver.sock)
    driver.sock.close()
    driver.sock = new
    driver._sel.register(new, selectors.EVENT_READ, "sock")
    driver.gro = False
    driver.gso.enabled = False


@pytest.mark.parametrize("keyed", [False, True], ids=["plaintext", "with-a-key"])
def test_sender_source_port_change_and_an_off_path_sender(tmp_path, keyed):
    """In one process: the sender's socket is replaced mid-transfer (its source port changes)
    and the transfer completes on the new path; a copy of one of its segments sent from a
    third address (which never answers the challenge) moves nothing. With a key, the
    challenge and its answer are sealed like data (only the peer can answer) and the forged
    copy fails authentication."""
    import os
    import socket
    import time

    from rtcp.core import protection as prot
    from rtcp.net.driver import Driver
    from rtcp.transfer.receiver import FileServer
    from rtcp.transfer.sender import make_config
    from rtcp.transfer.storage import OutputDir
    from rtcp.transfer.tree import TreeSendApp, collect_entries

    size = 3_000_000
    src = make_file(tmp_path / "p.bin", size)
    results = []
    with Driver(("127.0.0.1", 0)) as server, Driver(("127.0.0.1", 0)) as client:
        FileServer(server, OutputDir(tmp_path / "out"), on_result=results.append)
        secret = prot.Secret(psk=os.urandom(prot.KEY_BYTES)) if keyed else None
        acceptor = prot.Acceptor(secret) if keyed else None
        if keyed:
            server.require_key(acceptor)
        app = TreeSendApp(collect_entries([str(src)]), peer_text="receiver")
        client.connect(server.local_address, make_config(), app, prot.ClientProtection(secret))
        swapped = forged = False
        off_path = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        off_path.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + 60
        try:
            while not app.done and time.monotonic() < deadline:
                client.run_once(0.005)
                server.run_once(0.005)
                if not forged and app.file_bytes_acked > size // 4:
                    forged = True
                    c = app.handle.conn
                    from rtcp.core import wire
                    from rtcp.core.seqnum import wrap

                    copy = wire.build(
                        wire.ACK,
                        c.local_id,
                        c.peer_id,
                        wrap(c.snd_una, c.iss),
                        wrap(c.rcv_nxt, c.irs),
                        0xFFFF,
                    )
                    off_path.sendto(copy, server.local_address)
                if not swapped and app.file_bytes_acked > size // 2:
                    swapped = True
                    old_peer = server.handles[0].peer
                    _swap_socket(client)
            app.close()
        finally:
            off_path.close()
        assert app.succeeded, app.error
        assert swapped and forged
        assert server.stats.migrations == 1  # the real move, not the forged one
        if keyed:  # the forged copy failed authentication: no challenge to its address
            assert server.stats.path_challenges_sent >= 1  # a resend if the answer is late
            assert acceptor.stats.auth_failures >= 1
        else:  # one to the off-path address, which never answers, and one to the real move
            assert server.stats.path_challenges_sent >= 2
        new_peer = client.local_address
        assert old_peer != new_peer
    assert results and results[0].verified
