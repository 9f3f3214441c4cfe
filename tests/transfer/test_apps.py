"""The sending and receiving applications over two in-memory core connections: a lone file
(`rtcp send FILE`, a tree of one file in format version 2).

A tiny virtual-clock harness calls the apps exactly as rtcp.net.driver does (timers, events,
poll, flush), with seeded loss, duplication, reordering and corruption: no sockets, no sleeps.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
import threading
from pathlib import Path

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
)
from rtcp.net.driver import Handle
from rtcp.transfer import protocol as proto
from rtcp.transfer.receiver import ReceiveApp
from rtcp.transfer.sender import closed_error, verdict_error
from rtcp.transfer.storage import OutputDir
from rtcp.transfer.tree import TreeSendApp, collect_entries

T0 = 1000.0
THREAD_WAIT_S = 60.0  # real seconds a writer or commit thread may take (a generous bound)


class _Waker:
    """The receiver's Handle.driver: its writer and commit threads wake it when a file is
    checked or committed (the harness then polls); flush is left to the next service."""

    def __init__(self) -> None:
        self.woken = threading.Event()

    def wakeup(self) -> None:
        self.woken.set()

    def _flush(self, handle, now: float) -> None:
        pass


class Harness:
    """out: the receiver's folder (tmp_path); the file to send is written beside it (under
    out's parent, in a folder of its own) unless source names one."""

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
        source: Path | None = None,
        app_class: type[TreeSendApp] = TreeSendApp,
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
        if source is None:
            source = Path(f"{out.path}-src") / name
            source.parent.mkdir(exist_ok=True)
            source.write_bytes(data)
        self.source = source
        clock = lambda: self.now
        self.send_app = app_class(
            collect_entries([str(source)]), peer_text="sim", timeout_s=timeout_s, clock=clock,
            warn=lambda text: None,
        )
        self.recv_app = ReceiveApp(
            out,
            ("10.0.0.1", 1),
            on_finished=self.results.append,
            idle_timeout_s=timeout_s,
            clock=clock,
        )
        self.c = Handle(conn=client, peer=None, app=self.send_app, driver=None, created=self.now)
        self.waker = _Waker()
        self.s = Handle(
            conn=server, peer=None, app=self.recv_app, driver=self.waker, created=self.now
        )
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
            tree = self.recv_app.tree
            if tree is not None and tree.waiting:  # threads check and commit: the clock stops
                assert self.waker.woken.wait(THREAD_WAIT_S), "the receiver's threads hang"
                self.waker.woken.clear()
                continue
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


def _visible(folder) -> list[str]:
    """What a user sees in the receiver's folder (not its temporaries and partials)."""
    return [name for name in os.listdir(folder) if not name.startswith(proto.TEMP_PREFIX)]


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


@pytest.mark.parametrize("size", [3_000_000, 900_000])
def test_file_exists_refused_early(tmp_path, size):
    # 3 MB asks for an offer: refused before any of its bytes; 900 kB streams at once (more
    # than the send buffer): refused while it streams, the sender stops there (RST)
    (tmp_path / "file.bin").write_bytes(b"old")
    data = os.urandom(size)
    config = ConnectionConfig(send_buffer_bytes=256 * 1024)
    h = Harness(OutputDir(tmp_path), data, config=config)
    h.run_to_end()
    (refused,) = h.send_app.results
    assert not h.send_app.succeeded and refused.exit_code == ExitCode.FILE_EXISTS
    assert "needs --force" in refused.error
    assert h.send_app.file_bytes_queued < (1 if size > 1 << 20 else 600_000)
    (result,) = h.results  # one line at the receiver: the file's
    assert result.exit_code == ExitCode.FILE_EXISTS and result.name == "file.bin"
    assert os.listdir(tmp_path) == ["file.bin"]
    assert (tmp_path / "file.bin").read_bytes() == b"old"


def test_force_overwrites(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"old")
    data = os.urandom(10_000)
    h = Harness(OutputDir(tmp_path, force=True), data)
    h.run_to_end()
    assert h.send_app.succeeded
    assert (tmp_path / "file.bin").read_bytes() == data


class _LyingHash:
    def update(self, data) -> None:
        pass

    def digest(self) -> bytes:
        return hashlib.sha256(b"something else").digest()


class LyingSender(TreeSendApp):
    """Announces the SHA-256 of other bytes: the receiver must refuse to store the file."""

    def _begin_body(self, index: int, offset: int = 0, hasher=None) -> None:
        super()._begin_body(index, offset, hasher)
        self._hash = _LyingHash()


def test_hash_mismatch(tmp_path):
    data = os.urandom(50_000)
    h = Harness(OutputDir(tmp_path), data, app_class=LyingSender)
    h.run_to_end()
    (refused,) = h.send_app.results
    assert refused.exit_code == ExitCode.HASH_MISMATCH and not h.send_app.succeeded
    assert isinstance(verdict_error(proto.Verdict(proto.Status.HASH_MISMATCH)), HashMismatch)
    assert h.results[0].exit_code == ExitCode.HASH_MISMATCH
    assert os.listdir(tmp_path) == []


def test_receiver_io_error_refuses(tmp_path, monkeypatch):
    from rtcp.transfer import storage

    def no_space(self, rel, size, **_options):
        raise storage.Refusal(proto.Status.IO_ERROR, "No space left on device")

    monkeypatch.setattr(storage.OutputDir, "open_relative", no_space)
    h = Harness(OutputDir(tmp_path), b"x" * 1000)
    h.run_to_end()
    (refused,) = h.send_app.results
    assert refused.exit_code == ExitCode.REFUSED and "No space left" in refused.error
    assert h.results[0].exit_code == ExitCode.LOCAL_IO


def test_file_shrinking_while_sent(tmp_path):
    data = os.urandom(2_000_000)
    h = Harness(OutputDir(tmp_path), data)
    h.run(lambda: h.send_app.waiting is not None)  # its record went; the offer is awaited
    os.truncate(h.source, 1_000_000)
    h.run(lambda: h.send_app.done and bool(h.results))
    assert isinstance(h.send_app.error, LocalIOError)
    assert "shrank" in str(h.send_app.error)
    assert h.results[0].exit_code == ExitCode.RESET  # the sender aborted
    assert h.results[0].name == "file.bin"
    assert _visible(tmp_path) == []


def test_receiver_vanishes_sender_times_out(tmp_path):
    data = os.urandom(2_000_000)
    h = Harness(OutputDir(tmp_path), data, timeout_s=3.0)
    h.run(lambda: h.send_app.file_bytes_acked > 100_000)
    h.blackhole = True
    start = h.now
    h.run(lambda: h.send_app.done)
    assert isinstance(h.send_app.error, PeerTimeout)
    assert h.now - start <= 3.0 + 0.5
    # the receiver, left alone, gives up too, and keeps only the partial (for a resume)
    h.run(lambda: bool(h.results))
    assert h.results[0].exit_code == ExitCode.TIMEOUT
    assert _visible(tmp_path) == []


def test_receiver_abort_resets_sender(tmp_path):
    data = os.urandom(2_000_000)
    h = Harness(OutputDir(tmp_path), data)
    h.run(lambda: h.send_app.file_bytes_acked > 100_000)
    h.recv_app.abort(h.now, "the receiver is shutting down")
    h.run(lambda: h.send_app.done)
    assert isinstance(h.send_app.error, PeerReset)
    assert h.results[0].reason == "the receiver is shutting down"
    assert _visible(tmp_path) == []


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
