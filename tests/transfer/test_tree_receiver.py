"""The receiver of format version 2 fed record by record (no network, no sender process):
resume offers cost no hashing, a resumed prefix is hashed in proportion to what arrives and
beside the event loop, partials are bounded in bytes, the sender's mtimes are applied, and
files are committed in groups (one folder fsync per batch).

The apps' threads (writer, group commit) wake the "driver" when a file is ready: the tests
wait on that event (with generous deadlines), never on a sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from rtcp.core import events as ev
from rtcp.transfer import limits as lim
from rtcp.transfer import records as rec
from rtcp.transfer import storage
from rtcp.transfer.receiver import ReceiveApp
from rtcp.transfer.storage import OutputDir

WAIT_S = 30.0
MTIME_NS = 1_600_000_000_123_456_789
BIG = 3 * 1024 * 1024  # the partial's size in most tests


class FakeConn:
    """What ReceiveApp uses of a core connection: bytes in, replies out."""

    def __init__(self) -> None:
        self.inbox: list[bytes] = []
        self.sent = bytearray()
        self.is_closed = False
        self.closed_by_us = False
        self.unacknowledged_bytes = 0
        self.stats = None

    @property
    def readable(self) -> int:
        return sum(len(c) for c in self.inbox)

    def read_chunks(self) -> list:
        chunks, self.inbox = self.inbox, []
        return chunks

    def send(self, data) -> int:
        self.sent += data
        return len(data)

    def close(self) -> None:
        self.closed_by_us = True

    def abort(self) -> None:
        self.is_closed = True

    def send_ack_now(self) -> None:
        pass


class FakeDriver:
    def __init__(self) -> None:
        self.woken = threading.Event()

    def wakeup(self) -> None:
        self.woken.set()


class FakeHandle:
    def __init__(self) -> None:
        self.conn = FakeConn()
        self.driver = FakeDriver()
        self.protection = None

    def flush(self, now: float) -> None:
        pass


class Peer:
    """One connection to a ReceiveApp: send() records, read its replies."""

    def __init__(self, out: OutputDir) -> None:
        self.now = 1000.0
        self.results: list = []
        self.app = ReceiveApp(
            out, ("10.0.0.1", 1), on_finished=self.results.append, clock=lambda: self.now
        )
        self.handle = FakeHandle()
        self.app.connection_made(self.handle)
        self.parser = rec.ReplyParser()
        self.replies: list = []
        self.send(rec.stream_start())

    def send(self, data: bytes) -> None:
        self.handle.conn.inbox.append(bytes(data))
        self.app.event_received(ev.DataReceived(), self.now)
        self.poll()

    def poll(self) -> None:
        self.app.poll(self.now)
        self._collect()

    def _collect(self) -> None:
        conn = self.handle.conn
        if conn.sent:
            self.replies += self.parser.feed(bytes(conn.sent))
            conn.sent.clear()

    def end(self) -> None:
        self.send(rec.END)
        self.handle.conn.inbox.append(b"")
        self.app.event_received(ev.StreamEnded(), self.now)
        self.poll()

    def close(self, reason: str = "reset") -> None:
        self.app.event_received(ev.ConnectionClosed(reason=reason, error=None), self.now)

    def offers(self) -> list:
        return [r for r in self.replies if isinstance(r, rec.OfferFor)]

    def verdict(self, index: int):
        for r in self.replies:
            if isinstance(r, rec.VerdictFor) and r.index == index:
                return r.verdict
        return None

    def wait_verdict(self, index: int):
        """Poll whenever a writer or commit thread wakes the 'driver', until the verdict."""
        woken = self.handle.driver.woken
        while True:
            self.poll()
            verdict = self.verdict(index)
            if verdict is not None:
                return verdict
            assert woken.wait(WAIT_S), f"no verdict for entry {index}"
            woken.clear()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def send_file(peer: Peer, path: str, data: bytes, *, mtime_ns: int = MTIME_NS) -> None:
    peer.send(rec.encode_file(path, len(data), mtime_ns) + data + sha(data))


def keep_a_partial(out: OutputDir, data: bytes, held: int) -> None:
    """A first connection sends `held` bytes of data (asking for an offer), then is reset:
    the receiver keeps them as the partial of big.bin."""
    peer = Peer(out)
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert [o.offset for o in peer.offers()] == [0]
    peer.send(rec.encode_start(0))
    peer.send(data[:held])
    peer.close()
    assert peer.results[-1].stats["partials_kept"] == 1


def test_the_sidecar_holds_the_prefix_digest_and_an_offer_costs_no_hashing(tmp_path, monkeypatch):
    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    keep_a_partial(out, data, 2 * 1024 * 1024)
    [(_mtime, _data, sidecar, nbytes)] = out.partials()
    meta = json.loads(sidecar.read_text())
    assert nbytes == meta["bytes"] == 2 * 1024 * 1024
    assert meta["prefix_sha256"] == hashlib.sha256(data[: meta["bytes"]]).hexdigest()

    read = []
    real_read = os.read

    def counting_read(fd, n):
        chunk = real_read(fd, n)
        read.append(len(chunk))
        return chunk

    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "pread", lambda *a: pytest.fail("the prefix was read"))
    for _ in range(20):  # a peer that asks again and again, then goes away
        peer = Peer(out)
        peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
        [offer] = peer.offers()
        assert offer.offset == meta["bytes"]
        assert offer.prefix_digest == sha(data[: offer.offset])
        peer.close()
    assert sum(read) < 20 * 16384  # the sidecars, never the prefix


def test_a_resume_that_stops_early_hashes_in_proportion_and_keeps_the_prefix(tmp_path):
    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    held = 2 * 1024 * 1024
    keep_a_partial(out, data, held)
    for _ in range(5):  # resume, send a little, reset: again and again
        peer = Peer(out)
        peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
        [offer] = peer.offers()
        assert offer.offset == held and offer.prefix_digest == sha(data[:held])
        peer.send(rec.encode_start(held))
        peer.send(data[held : held + 1000])
        peer.close()
        stats = peer.results[-1].stats
        assert stats["resumed_files"] == 1 and stats["resumed_bytes"] == held
        assert stats["prefix_bytes_hashed"] <= storage.RESUME_HASH_BYTES_PER_BYTE * 1000
    [(_mtime, _data, sidecar, nbytes)] = out.partials()
    assert nbytes == held and json.loads(sidecar.read_text())["bytes"] == held


def test_another_transfer_goes_on_while_a_prefix_is_hashed(tmp_path, monkeypatch):
    """The prefix is hashed again in the file's writer thread, not on the event loop: while
    that hashing is held, a second connection's file is received, committed and answered."""
    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    held = 2 * 1024 * 1024
    keep_a_partial(out, data, held)

    hashing, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def held_pread(fd, n, offset):
        hashing.set()
        assert release.wait(WAIT_S)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", held_pread)
    resumed = Peer(out)
    resumed.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    resumed.send(rec.encode_start(held) + data[held:] + sha(data))
    assert hashing.wait(WAIT_S)

    other = Peer(out)
    send_file(other, "small.txt", b"hello")
    other.end()
    assert other.wait_verdict(0).ok  # while the resumed file's prefix is still held
    assert (tmp_path / "small.txt").read_bytes() == b"hello"
    assert resumed.verdict(0) is None

    release.set()
    assert resumed.wait_verdict(0).ok
    assert (tmp_path / "big.bin").read_bytes() == data
    resumed.end()
    resumed.close("closed")
    # the prefix, and what arrived while it was held (read back: the hash is in order)
    assert held <= resumed.results[-1].stats["prefix_bytes_hashed"] <= len(data)
    assert out.partials() == []


def test_partials_are_bounded_in_bytes_oldest_first(tmp_path):
    out = OutputDir(tmp_path)
    for i, size in enumerate((3000, 2000, 1000)):  # oldest first
        data = tmp_path / f"{storage.PARTIAL_PREFIX}{i:032}.part"
        data.write_bytes(b"x" * size)
        sidecar = data.with_suffix(".json")
        sidecar.write_text("{}")
        os.utime(sidecar, (1000 + i, 1000 + i))
    assert out.remove_old_partials(3600, 2000, max_bytes=3500) == (1, 3000)
    assert [n for *_rest, n in out.partials()] == [2000, 1000]
    assert out.remove_old_partials(3600, 2000, max_bytes=500) == (2, 3000)  # each is too big
    assert out.partials() == []


def server_for(out: OutputDir, **kwargs):
    """A FileServer whose counters the tests read (its driver is never run)."""
    from rtcp.transfer.receiver import FileServer

    class Driver:
        clock = staticmethod(lambda: 0.0)

        def listen(self, *_args) -> None:
            pass

    return FileServer(Driver(), out, **kwargs)


def test_the_server_sums_the_prefix_bytes_hashed(tmp_path):
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    held = 2 * 1024 * 1024
    keep_a_partial(out, data, held)
    peer = Peer(out)
    peer.app.on_finished = server._finished
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    peer.send(rec.encode_start(held) + data[held:] + sha(data))
    assert peer.wait_verdict(0).ok
    peer.end()
    peer.close("closed")
    hashed = server.results[-1].stats["prefix_bytes_hashed"]
    assert held <= hashed <= len(data)
    assert server.counters[lim.PREFIX_BYTES_HASHED] == hashed


def test_a_kept_partial_beyond_the_byte_bound_is_removed_and_counted(tmp_path):
    out = OutputDir(tmp_path)
    server = server_for(out, partial_max_bytes=1024 * 1024)
    peer = Peer(out)
    peer.app.on_finished = server._finished
    data = os.urandom(BIG)
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    peer.send(rec.encode_start(0) + data[: 2 * 1024 * 1024])
    peer.close()
    assert out.partials() == []
    assert server.counters[lim.PARTIALS_REMOVED] == 1
    assert server.counters[lim.PARTIAL_BYTES_REMOVED] == 2 * 1024 * 1024


@pytest.mark.parametrize("keep_times", [True, False])
def test_files_and_folders_get_the_senders_mtime(tmp_path, keep_times):
    out = OutputDir(tmp_path, keep_times=keep_times)
    peer = Peer(out)
    folder_ns, file_ns = 1_500_000_000_000_000_000, 1_400_000_000_987_654_321
    peer.send(rec.encode_dir("d", folder_ns))
    peer.send(rec.encode_dir("d/e", folder_ns + 1))
    send_file(peer, "d/e/f.txt", b"content", mtime_ns=file_ns)  # held in memory
    big = os.urandom(100_000)
    send_file(peer, "d/big.bin", big, mtime_ns=file_ns + 2)  # through the writer thread
    peer.end()
    assert peer.wait_verdict(2).ok and peer.wait_verdict(3).ok
    assert peer.handle.conn.closed_by_us  # all answered: the receiver closed
    assert (tmp_path / "d/big.bin").read_bytes() == big
    paths = ("d", "d/e", "d/e/f.txt", "d/big.bin")
    times = [os.stat(tmp_path / p).st_mtime_ns for p in paths]
    if keep_times:
        assert times == [folder_ns, folder_ns + 1, file_ns, file_ns + 2]
    else:
        assert folder_ns not in times and file_ns not in times


def test_files_are_committed_in_groups_one_folder_fsync_per_batch(tmp_path, monkeypatch):
    """While the first file's fdatasync is held, the other files arrive and are checked; they
    are then stored as one batch: one fsync of their folder, every verdict after it."""
    held, release = threading.Event(), threading.Event()
    events: list[str] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        if not held.is_set():
            held.set()
            assert release.wait(WAIT_S)
        real_fdatasync(fd)

    def fsync(fd):
        events.append("folder fsync")

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(storage, "_fsync_quietly", fsync)
    out = OutputDir(tmp_path)
    peer = Peer(out)
    real_send = peer.handle.conn.send

    def send(data):
        events.extend("verdict" for _ in range(bytes(data).count(rec.REPLY_VERDICT)))
        return real_send(data)

    peer.handle.conn.send = send
    send_file(peer, "d/f0", b"first")
    assert held.wait(WAIT_S)
    for i in range(1, 40):
        send_file(peer, f"d/f{i}", b"x" * i)
    peer.end()
    release.set()
    for i in range(40):
        assert peer.wait_verdict(i).ok
    assert out.committer.batches == 2
    assert events.count("folder fsync") == 2
    assert events.index("folder fsync") < events.index("verdict")
    assert sorted(os.listdir(tmp_path / "d")) == sorted(f"f{i}" for i in range(40))


def test_a_stream_end_held_back_waits_for_the_bytes_before_it(tmp_path, monkeypatch):
    """Reading stops while too many files wait for their commit; the FIN that arrives
    meanwhile is parsed only after the bytes before it (no false "stream ended early")."""
    held, release = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        held.set()
        assert release.wait(WAIT_S)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr("rtcp.transfer.receiver.MAX_FILES_WAITING", 1)
    out = OutputDir(tmp_path)
    peer = Peer(out)
    send_file(peer, "f0", b"abc")
    assert held.wait(WAIT_S)  # f0 waits for its commit: the receiver reads no more
    rest = b"".join(rec.encode_file(f"f{i}", 3, MTIME_NS) + b"abc" + sha(b"abc") for i in (1, 2))
    peer.handle.conn.inbox.append(rest + rec.END)
    peer.app.event_received(ev.StreamEnded(), peer.now)
    assert peer.handle.conn.readable  # held back, FIN or not
    release.set()
    for i in range(3):
        assert peer.wait_verdict(i).ok
    assert sorted(os.listdir(tmp_path)) == ["f0", "f1", "f2"]
    assert not any(isinstance(r, rec.ConnectionVerdict) for r in peer.replies)
    assert peer.handle.conn.closed_by_us


def test_a_folder_removed_between_two_connections_is_made_again(tmp_path):
    """The open folders that speed up a tree's commits never outlive what they point to."""
    import shutil

    out = OutputDir(tmp_path)
    for name in ("a", "b"):
        peer = Peer(out)
        send_file(peer, f"d/{name}", name.encode())
        peer.end()
        assert peer.wait_verdict(0).ok
        assert (tmp_path / "d" / name).read_bytes() == name.encode()
        peer.close("closed")
        shutil.rmtree(tmp_path / "d")


def test_a_sender_waiting_for_a_long_hash_is_not_timed_out(tmp_path, monkeypatch):
    """After END the sender waits while the receiver hashes a resumed prefix: the idle and
    minimum-rate limits judge the sender, so they do not cut it off meanwhile."""
    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    held = 2 * 1024 * 1024
    keep_a_partial(out, data, held)
    hashing, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def held_pread(fd, n, offset):
        hashing.set()
        assert release.wait(WAIT_S)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", held_pread)
    peer = Peer(out)
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    peer.send(rec.encode_start(held) + data[held:] + sha(data))
    peer.end()
    assert hashing.wait(WAIT_S)
    for _ in range(3):  # long past the idle timeout (30 s) and the rate window (10 s)
        peer.now = peer.app.deadline()
        peer.app.on_deadline(peer.now)
        assert peer.results == [] and not peer.handle.conn.is_closed
    release.set()
    assert peer.wait_verdict(0).ok
    assert (tmp_path / "big.bin").read_bytes() == data
