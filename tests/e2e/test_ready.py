"""The readiness contract and what the sender says when nobody, or something else, answers
(issue 11): real processes on ephemeral loopback ports, every wait on an event."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from tests.e2e.conftest import make_file, send


def syns_sent(trace) -> int:
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    return sum(1 for r in records if r["event"] == "segment_sent" and r["flags"] == "SYN")

# A bound no test waits for: a sender that waited this long failed the test already.
GENEROUS_S = 60


def closed_port() -> int:
    """A UDP port nobody has bound (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_refused_at_once(tmp_path):
    """ECONNREFUSED (ICMP port unreachable) ends the sender at once, not after --timeout: with
    a 60 s timeout, an answer within the subprocess's 30 s bound can only be the refusal."""
    src = make_file(tmp_path / "x.bin", 1000)
    res = send(src, closed_port(), "--timeout", f"{GENEROUS_S}s", timeout=GENEROUS_S / 2)
    assert res.returncode == 3, res.stderr
    assert res.stderr.startswith("rtcp: error: connection refused by 127.0.0.1:")
    assert res.stderr.count("\n") == 1


def test_nothing_listening_is_refused_at_once_for_a_tree_too(tmp_path):
    """The same for several files (it waited for --timeout and said 'no answer'); the
    summary says it only tried."""
    import subprocess

    from tests.e2e.conftest import RTCP

    src = tmp_path / "d"
    src.mkdir()
    for name in ("a", "b"):
        make_file(src / name, 1000)
    res = subprocess.run(
        [RTCP, "send", src, "--to", f"127.0.0.1:{closed_port()}", "--timeout", f"{GENEROUS_S}s"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=GENEROUS_S / 2,
        check=False,
    )
    assert res.returncode == 3, res.stderr
    assert res.stderr.startswith("rtcp: error: connection refused by 127.0.0.1:")
    assert res.stdout.startswith("tried to send 2 files and 1 folder to 127.0.0.1:")
    assert "d/a: connection refused" in res.stdout


class NotRtcp:
    """A UDP server that answers every datagram with text: something, but not rtcp."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                _data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.stopped.is_set():
                return  # close()'s wake-up
            self.sock.sendto(b"HTTP/1.1 400 Bad Request\r\n\r\n", addr)

    def close(self) -> None:
        self.stopped.set()
        try:  # wake the thread now rather than at its next receive timeout
            self.sock.sendto(b"", self.sock.getsockname())
        except OSError:
            pass
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def not_rtcp():
    server = NotRtcp()
    yield server
    server.close()


def test_a_peer_that_is_not_rtcp_gets_its_own_message(tmp_path, not_rtcp):
    src = make_file(tmp_path / "x.bin", 1000)
    res = send(src, not_rtcp.port, "--timeout", f"{GENEROUS_S}s", timeout=GENEROUS_S / 2)
    assert res.returncode == 8, res.stderr
    assert "answers, but not as rtcp" in res.stderr and "no answer" not in res.stderr


def test_wait_ready_waits_for_the_receiver(spawn, tmp_path):
    """Sender first, receiver later: the sender sends its first SYN only once the receiver's
    socket is bound, so nothing is lost or retransmitted."""
    port = closed_port()
    src = make_file(tmp_path / "late.bin", 100_000)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{port}", "--wait-ready", "--json",
                    "--timeout", f"{GENEROUS_S}s", "--trace", tmp_path / "send.jsonl"])
    recv = spawn(["recv", "--listen", f"127.0.0.1:{port}", "--out", tmp_path / "out"])
    recv.wait_port()
    assert sender.wait(GENEROUS_S) == 0, sender.stderr
    report = json.loads(sender.stdout)
    assert report["verified"] is True
    assert syns_sent(tmp_path / "send.jsonl") == 1 and report["driver"]["refused"] == 0
    assert (tmp_path / "out" / "late.bin").read_bytes() == src.read_bytes()


def test_the_readme_order_works_started_backwards(spawn, tmp_path):
    """send --wait-ready, then proxy --wait-upstream, then recv: the proxy listens only once
    its upstream is bound, the sender only sends once the proxy listens: one SYN, no loss."""
    upstream, front = closed_port(), closed_port()
    src = make_file(tmp_path / "path.bin", 100_000)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{front}", "--wait-ready", "--json",
                    "--timeout", f"{GENEROUS_S}s", "--trace", tmp_path / "send.jsonl"])
    proxy = spawn(["proxy", "--listen", f"127.0.0.1:{front}", "--upstream",
                   f"127.0.0.1:{upstream}", "--wait-upstream", "--delay", "1ms"])
    recv = spawn(["recv", "--listen", f"127.0.0.1:{upstream}", "--out", tmp_path / "out"])
    recv.wait_port()
    assert proxy.wait_port() == front
    assert sender.wait(GENEROUS_S) == 0, sender.stderr
    report = json.loads(sender.stdout)
    assert syns_sent(tmp_path / "send.jsonl") == 1 and report["driver"]["refused"] == 0
    assert (tmp_path / "out" / "path.bin").read_bytes() == src.read_bytes()


def test_a_second_sender_of_a_name_in_flight_is_refused_at_the_header(receiver, proxy, spawn,
                                                                     tmp_path):
    import os

    from tests.e2e.conftest import wait_for

    _recv, port, out = receiver()
    _proxy, slow = proxy(port, "--rate", "40mbit")  # ~5 MB/s: the first stays in flight
    src = make_file(tmp_path / "same.bin", 20_000_000)
    first = spawn(["send", src, "--to", f"127.0.0.1:{slow}", "--timeout", f"{GENEROUS_S}s"])
    wait_for(lambda: out.exists() and any(n.startswith(".rtcp-tmp-") for n in os.listdir(out)),
             GENEROUS_S, "the first transfer's temporary file")
    res = send(src, port, "--json", "--timeout", f"{GENEROUS_S}s", timeout=GENEROUS_S)
    assert res.returncode == 6, res.stderr
    report = json.loads(res.stdout)
    assert "being received from another sender" in report["error"]
    assert "send again then, and it resumes" in report["error"]  # what to do about it
    assert report["stats"]["data_bytes_sent"] < src.stat().st_size // 2  # refused early
    assert first.wait(GENEROUS_S) == 0, first.stderr
