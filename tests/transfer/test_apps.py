"""The sending and receiving applications over two in-memory core connections.

A tiny virtual-clock harness calls the apps exactly as rtcp.net.driver does (timers, events,
poll, flush), with seeded loss, duplication, reordering and corruption: no sockets, no sleeps.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import os
import random

import pytest

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection
from rtcp.errors import (
    ExitCode,
    FileExistsRefused,
    HashMismatch,
    LocalIOError,
    PeerReset,
    PeerTimeout,
    TransferRefused,
)
from rtcp.net.driver import Handle
from rtcp.transfer import protocol as proto
from rtcp.transfer.receiver import ReceiveApp
from rtcp.transfer.sender import SendApp, closed_error, verdict_error
from rtcp.transfer.storage import OutputDir

T0 = 1000.0


class Harness:
    def __init__(
        self,
        out: OutputDir,
        data: bytes,
        *,
        name: str = "file.bin",
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        corrupt: float = 0.0,
        delay_s: float = 0.002,
        timeout_s: float = 10.0,
        config: ConnectionConfig | None = None,
        fileobj=None,
        sender: proto.FileSender | None = None,
    ):
        self.now = T0
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.reorder, self.corrupt = loss, duplicate, reorder, corrupt
        self.delay_s = delay_s
        self.queue: list = []  # (time, seq, dest handle, datagram)
        self.seq = 0
        self.blackhole = False
        cfg = config or ConnectionConfig(user_timeout_s=timeout_s)
        self.results = []
        client = Connection(cfg, is_client=True, now=self.now)
        server = Connection(cfg, is_client=False, now=self.now)
        fs = sender or proto.FileSender(name, len(data))
        clock = lambda: self.now
        self.send_app = SendApp(
            fileobj or io.BytesIO(data), fs, peer_text="sim", timeout_s=timeout_s, clock=clock
        )
        self.recv_app = ReceiveApp(
            out,
            ("10.0.0.1", 1),
            on_finished=self.results.append,
            idle_timeout_s=timeout_s,
            clock=clock,
        )
        self.c = Handle(conn=client, peer=None, app=self.send_app, driver=None, created=self.now)
        self.s = Handle(conn=server, peer=None, app=self.recv_app, driver=None, created=self.now)
        self.c.peer, self.s.peer = self.s, self.c
        self.send_app.connection_made(self.c)
        self.recv_app.connection_made(self.s)
        client.connect(self.now)

    def _service(self, h: Handle) -> None:
        conn, app, now = h.conn, h.app, self.now
        t = conn.get_timer()
        if t is not None and t <= now:
            conn.handle_timer(now)
        t = app.deadline()
        if t is not None and t <= now:
            app.on_deadline(now)
        self._drain(h)
        app.poll(now)
        self._drain(h)
        for d in conn.datagrams_to_send(now):
            self._transmit(h.peer, d)

    def _drain(self, h: Handle) -> None:
        while (e := h.conn.next_event()) is not None:
            h.app.event_received(e, self.now)

    def _transmit(self, dest: Handle, d: bytes) -> None:
        if self.blackhole or self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            data = bytearray(d)
            if self.rng.random() < self.corrupt:
                bit = self.rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
            delay = self.delay_s if self.rng.random() >= self.reorder else self.delay_s / 4
            self.seq += 1
            heapq.heappush(self.queue, (self.now + delay, self.seq, dest, bytes(data)))

    def run(self, until, max_time_s: float = 120.0) -> None:
        while not until():
            self._service(self.c)
            self._service(self.s)
            if until():
                return
            deadlines = [q[0] for q in self.queue[:1]]
            for h in (self.c, self.s):
                for t in (h.conn.get_timer(), h.app.deadline()):
                    if t is not None:
                        deadlines.append(t)
            if not deadlines:
                raise AssertionError("nothing pending: the harness would hang")
            self.now = max(self.now, min(deadlines))
            assert self.now - T0 < max_time_s, "simulated transfer took too long"
            while self.queue and self.queue[0][0] <= self.now:
                _t, _s, dest, d = heapq.heappop(self.queue)
                dest.conn.receive_datagram(d, self.now)

    def run_to_end(self, max_time_s: float = 120.0) -> None:
        self.run(lambda: self.send_app.done and bool(self.results), max_time_s)


def test_clean_transfer(tmp_path):
    data = os.urandom(1_000_000)
    h = Harness(OutputDir(tmp_path), data)
    h.run_to_end()
    assert h.send_app.error is None and h.send_app.succeeded
    (result,) = h.results
    assert result.verified and result.exit_code == ExitCode.OK
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "file.bin").read_bytes() == data
    assert h.send_app.file_bytes_acked == len(data)


@pytest.mark.parametrize("size", [0, 1, 1361, 1362, 1363, 2 * 1362])
def test_edge_sizes(tmp_path, size):
    data = os.urandom(size)
    h = Harness(OutputDir(tmp_path), data)
    h.run_to_end()
    assert h.send_app.succeeded, h.send_app.error
    assert (tmp_path / "file.bin").read_bytes() == data


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_impaired_transfer(tmp_path, seed):
    data = os.urandom(300_000)
    h = Harness(
        OutputDir(tmp_path),
        data,
        seed=seed,
        loss=0.05,
        duplicate=0.02,
        reorder=0.05,
        corrupt=0.02,
    )
    h.run_to_end()
    assert h.send_app.succeeded, h.send_app.error
    assert (tmp_path / "file.bin").read_bytes() == data
    assert h.c.conn.stats.retransmissions > 0


def test_file_exists_refused_early(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"old")
    data = os.urandom(3_000_000)  # larger than the send buffer: the refusal stops it early
    config = ConnectionConfig(send_buffer_bytes=256 * 1024)
    h = Harness(OutputDir(tmp_path), data, config=config)
    h.run_to_end()
    assert isinstance(h.send_app.error, FileExistsRefused)
    assert h.send_app.error.exit_code == ExitCode.FILE_EXISTS
    assert h.send_app.file_bytes_read < len(data)
    assert h.results[0].exit_code == ExitCode.FILE_EXISTS
    assert os.listdir(tmp_path) == ["file.bin"]
    assert (tmp_path / "file.bin").read_bytes() == b"old"


def test_force_overwrites(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"old")
    data = os.urandom(10_000)
    h = Harness(OutputDir(tmp_path, force=True), data)
    h.run_to_end()
    assert h.send_app.succeeded
    assert (tmp_path / "file.bin").read_bytes() == data


class LyingSender(proto.FileSender):
    """Announces the SHA-256 of other bytes: the receiver must refuse to store the file."""

    def trailer(self) -> bytes:
        super().trailer()
        self._digest = hashlib.sha256(b"something else").digest()
        return self._digest


def test_hash_mismatch(tmp_path):
    data = os.urandom(50_000)
    h = Harness(OutputDir(tmp_path), data, sender=LyingSender("file.bin", len(data)))
    h.run_to_end()
    assert isinstance(h.send_app.error, HashMismatch)
    assert h.results[0].exit_code == ExitCode.HASH_MISMATCH
    assert os.listdir(tmp_path) == []


def test_receiver_io_error_refuses(tmp_path, monkeypatch):
    from rtcp.transfer import storage

    def no_space(self, name, size):
        raise storage.Refusal(proto.Status.IO_ERROR, "No space left on device")

    monkeypatch.setattr(storage.OutputDir, "check", no_space)
    h = Harness(OutputDir(tmp_path), b"x" * 1000)
    h.run_to_end()
    assert isinstance(h.send_app.error, TransferRefused)
    assert "No space left" in str(h.send_app.error)
    assert h.results[0].exit_code == ExitCode.LOCAL_IO


def test_file_shrinking_while_sent(tmp_path):
    data = os.urandom(100_000)
    h = Harness(OutputDir(tmp_path), data, fileobj=io.BytesIO(data[:50_000]))
    h.run(lambda: h.send_app.done and bool(h.results))
    assert isinstance(h.send_app.error, LocalIOError)
    assert "shrank" in str(h.send_app.error)
    assert h.results[0].exit_code == ExitCode.RESET  # the sender aborted
    assert os.listdir(tmp_path) == []


def test_receiver_vanishes_sender_times_out(tmp_path):
    data = os.urandom(2_000_000)
    h = Harness(OutputDir(tmp_path), data, timeout_s=3.0)
    h.run(lambda: h.send_app.file_bytes_acked > 100_000)
    h.blackhole = True
    start = h.now
    h.run(lambda: h.send_app.done)
    assert isinstance(h.send_app.error, PeerTimeout)
    assert h.now - start <= 3.0 + 0.5
    # the receiver, left alone, gives up too and removes its temporary
    h.run(lambda: bool(h.results))
    assert h.results[0].exit_code == ExitCode.TIMEOUT
    assert os.listdir(tmp_path) == []


def test_receiver_abort_resets_sender(tmp_path):
    data = os.urandom(2_000_000)
    h = Harness(OutputDir(tmp_path), data)
    h.run(lambda: h.send_app.file_bytes_acked > 100_000)
    h.recv_app.abort(h.now, "the receiver is shutting down")
    h.run(lambda: h.send_app.done)
    assert isinstance(h.send_app.error, PeerReset)
    assert h.results[0].reason == "the receiver is shutting down"
    assert os.listdir(tmp_path) == []


def test_no_answer_at_all(tmp_path):
    h = Harness(OutputDir(tmp_path), b"abc", timeout_s=2.0)
    h.blackhole = True
    h.run(lambda: h.send_app.done)
    assert isinstance(h.send_app.error, PeerTimeout)
    assert "no answer" in str(h.send_app.error)


def test_error_mapping():
    assert isinstance(verdict_error(proto.Verdict(proto.Status.HASH_MISMATCH)), HashMismatch)
    assert isinstance(verdict_error(proto.Verdict(proto.Status.FILE_EXISTS)), FileExistsRefused)
    for status in (
        proto.Status.BAD_NAME,
        proto.Status.IO_ERROR,
        proto.Status.PROTOCOL_ERROR,
        proto.Status.UNSUPPORTED_VERSION,
        proto.Status.TOO_LARGE,
        77,
    ):
        err = verdict_error(proto.Verdict(status, "why"))
        assert err.exit_code == ExitCode.REFUSED and "why" in str(err)
    assert closed_error("reset", None, "p", 1).exit_code == ExitCode.RESET
    assert closed_error("timeout", "x", "p", 1).exit_code == ExitCode.TIMEOUT
    assert closed_error("protocol", None, "p", 1).exit_code == ExitCode.REFUSED
    assert closed_error("closed", None, "p", 1).exit_code == ExitCode.REFUSED


def test_event_types_are_the_cores():
    # the apps dispatch on these classes: a rename in the core must fail here first
    for name in (
        "HandshakeComplete",
        "DataReceived",
        "SendSpaceAvailable",
        "StreamEnded",
        "ConnectionClosed",
    ):
        assert hasattr(ev, name)
