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
from rtcp.errors import ExitCode
from rtcp.transfer import limits as lim
from rtcp.transfer import protocol as proto
from rtcp.transfer import receiver, storage
from rtcp.transfer import records as rec
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
        self.last_heard = 0.0  # when the peer's last datagram arrived (Peer.send sets it)

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
    """One connection to a ReceiveApp: send() records, read its replies. server: the
    FileServer (server_for) whose transfers it joins (a takeover looks for them there)."""

    def __init__(
        self, out: OutputDir, *, addr=("10.0.0.1", 1), server=None, now: float = 1000.0,
        version: int = rec.VERSION,
    ) -> None:
        self.now = now
        self.peer_text = f"{addr[0]}:{addr[1]}"
        self.results: list = []
        self.app = ReceiveApp(
            out, addr, on_finished=self.results.append, clock=lambda: self.now, server=server
        )
        if server is not None:
            server.apps.append(self.app)
        self.handle = FakeHandle()
        self.handle.conn.last_heard = now
        self.app.connection_made(self.handle)
        self.parser = rec.ReplyParser()
        self.replies: list = []
        if version == rec.VERSION:
            self.send(rec.stream_start())

    def send(self, data: bytes) -> None:
        self.handle.conn.last_heard = self.now
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


def hold_prefix_reads(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Reading a partial back for its hash blocks until released: (hashing, release)."""
    hashing, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def held_pread(fd, n, offset):
        hashing.set()
        assert release.wait(WAIT_S)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", held_pread)
    return hashing, release


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

    hashing, release = hold_prefix_reads(monkeypatch)
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
    from rtcp.net.driver import DriverStats
    from rtcp.transfer.receiver import FileServer

    class Driver:
        clock = staticmethod(lambda: 0.0)
        stats = DriverStats()

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
    monkeypatch.setattr(storage, "MAX_FILES_WAITING", 1)
    out = OutputDir(tmp_path)
    peer = Peer(out)
    send_file(peer, "f0", b"abc")
    assert held.wait(WAIT_S)  # f0 waits for its commit: the receiver reads no more
    rest = b"".join(rec.encode_file(f"f{i}", 3, MTIME_NS) + b"abc" + sha(b"abc") for i in (1, 2))
    peer.handle.conn.inbox.append(rest + rec.END)
    peer.app.event_received(ev.StreamEnded(), peer.now)
    assert peer.handle.conn.readable  # held back, FIN or not
    assert out.commit_pauses == 1  # counted (the closing 'limits and defences' line)
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
    hashing, release = hold_prefix_reads(monkeypatch)
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


def test_a_sender_checking_its_copy_of_the_offered_prefix_is_not_timed_out(tmp_path, monkeypatch):
    """After our OFFER the sender reads and hashes its own copy of the prefix and sends
    nothing: the idle and minimum-rate limits wait for its START as long as reading the prefix
    takes at PREFIX_CHECK_FLOOR_BYTES_PER_S, then count again."""
    monkeypatch.setattr(lim, "PREFIX_CHECK_FLOOR_BYTES_PER_S", 16 * 1024)  # a very slow disk
    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    held = 2 * 1024 * 1024
    keep_a_partial(out, data, held)
    peer = Peer(out)
    offered_at = peer.now
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    [offer] = peer.offers()
    assert offer.offset == held
    answer_by = offered_at + held / (16 * 1024)  # 128 s: past the idle timeout (30 s)
    while peer.now < answer_by - 1:
        peer.now = min(peer.app.deadline(), answer_by - 1)
        peer.app.on_deadline(peer.now)
        assert peer.results == [] and not peer.handle.conn.is_closed
    peer.send(rec.encode_start(held) + data[held:] + sha(data))  # the prefix matched
    assert peer.wait_verdict(0).ok
    assert (tmp_path / "big.bin").read_bytes() == data

    # a sender that never answers is dropped once the wait has passed (by the minimum rate)
    (tmp_path / "big.bin").unlink()
    keep_a_partial(out, data, held)
    peer = Peer(out)
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    for _ in range(100):
        if peer.results:
            break
        peer.now = peer.app.deadline()
        peer.app.on_deadline(peer.now)
    [result] = peer.results
    assert not result.verified and result.exit_code == ExitCode.TIMEOUT
    assert peer.now >= 1000.0 + held / (16 * 1024) and "minimum rate" in result.reason


# --- a new connection takes over a silent one for the same file ----------------------------

HELD = 1024 * 1024  # what the first connection delivered before it went silent


def a_silent_first(out: OutputDir, server, data: bytes, *, now: float = 1000.0) -> Peer:
    """A first connection that asked for an offer and delivered HELD bytes of big.bin at
    `now`, then nothing more (a sender killed with SIGKILL)."""
    first = Peer(out, server=server, now=now)
    first.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert [o.offset for o in first.offers()] == [0]
    first.send(rec.encode_start(0) + data[:HELD])
    return first


def assert_taken_over(first: Peer, second: Peer) -> None:
    [result] = first.results
    assert not result.verified and result.exit_code == ExitCode.TIMEOUT
    assert result.reason.startswith("taken over by a new connection from the same address")
    assert second.peer_text in result.reason
    assert result.stats["partials_kept"] == 1
    assert first.handle.conn.is_closed  # RST: a sender stalled but alive learns it


def resume_the_rest(second: Peer, data: bytes) -> None:
    [offer] = second.offers()
    assert offer.offset == HELD and offer.prefix_digest == sha(data[:HELD])
    second.send(rec.encode_start(HELD) + data[HELD:] + sha(data))
    assert second.wait_verdict(0).ok
    second.end()
    second.close("closed")


def test_a_new_connection_takes_over_one_silent_for_long_enough(tmp_path):
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = a_silent_first(out, server, data)
    second = Peer(out, addr=("10.0.0.1", 2), server=server,
                  now=first.now + receiver.TAKEOVER_SILENCE_S)
    second.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert_taken_over(first, second)
    resume_the_rest(second, data)
    assert (tmp_path / "big.bin").read_bytes() == data
    [result] = second.results
    assert result.verified and result.stats["resumed_bytes"] == HELD
    assert result.stats["takeovers"] == 1
    assert server.counters[lim.TAKEOVERS] == 1
    assert "takeovers 1" in server.limit_report()
    assert out.partials() == []


def test_a_file_asked_for_while_the_other_is_silent_for_less_waits_for_the_silence(tmp_path):
    """Sent again at once: the FILE waits (no OFFER, no refusal) until the first connection
    has been silent for TAKEOVER_SILENCE_S (the app's deadline), then takes it over."""
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = a_silent_first(out, server, data)
    second = Peer(out, addr=("10.0.0.1", 2), server=server, now=first.now + 0.5)
    second.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert second.replies == [] and first.results == []
    deadline = second.app.deadline()
    assert deadline == first.now + receiver.TAKEOVER_SILENCE_S
    second.now = deadline
    second.app.on_deadline(second.now)
    second.poll()
    assert_taken_over(first, second)
    resume_the_rest(second, data)
    assert (tmp_path / "big.bin").read_bytes() == data


def test_a_connection_heard_from_while_the_new_one_waits_is_not_taken_over(tmp_path):
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = a_silent_first(out, server, data)
    second = Peer(out, addr=("10.0.0.1", 2), server=server, now=first.now + 1.0)
    second.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert second.replies == []
    first.now = second.now = first.now + 1.5
    first.send(data[HELD : HELD + 1000])  # alive after all (a pause, not a kill)
    second.poll()
    verdict = second.verdict(0)
    assert verdict.status == proto.Status.FILE_EXISTS
    assert "being received from another sender" in verdict.message
    # the first goes on to the end, untouched
    first.send(data[HELD + 1000 :] + sha(data))
    assert first.wait_verdict(0).ok
    assert (tmp_path / "big.bin").read_bytes() == data
    assert server.counters[lim.TAKEOVERS] == 0


@pytest.mark.parametrize(
    "case", ["another address", "a file that cannot wait", "held back by us"]
)
def test_these_are_refused_as_in_flight(tmp_path, case):
    """Another address, however long silent; a file that does not wait for an offer (its
    data follows the record) from one silent for less; a connection whose stream we are not
    reading (its silence is ours)."""
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = a_silent_first(out, server, data)
    addr, later, ask = ("10.0.0.1", 2), 10.0, True
    if case == "another address":
        addr = ("10.0.0.9", 2)
    elif case == "a file that cannot wait":
        later, ask = 1.0, False
    else:
        first.handle.conn.inbox.append(data[HELD : HELD + 1000])  # arrived, not read yet
    second = Peer(out, addr=addr, server=server, now=first.now + later)
    second.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=ask))
    verdict = second.verdict(0)
    assert verdict is not None and verdict.status == proto.Status.FILE_EXISTS
    assert "being received from another sender" in verdict.message
    assert first.results == [] and not first.handle.conn.is_closed
    assert server.counters[lim.TAKEOVERS] == 0


def test_a_file_that_cannot_wait_takes_over_one_silent_for_long_enough(tmp_path):
    """A FILE that does not ask for an offer (under 1 MiB, or stdin) and a version 1 header
    take over at once, without a resume: the old connection's temporary is removed."""
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = a_silent_first(out, server, data)
    second = Peer(out, addr=("10.0.0.1", 2), server=server, now=first.now + 3.0)
    send_file(second, "big.bin", data)
    assert first.results[0].reason.startswith("taken over by a new connection")
    assert second.wait_verdict(0).ok
    assert (tmp_path / "big.bin").read_bytes() == data

    (tmp_path / "big.bin").unlink()
    out.drop_partial("big.bin")  # kept by the takeover, unused by a file that did not ask
    first = a_silent_first(out, server, data, now=2000.0)
    v1 = Peer(out, addr=("10.0.0.1", 3), server=server, now=2003.0, version=1)
    v1.send(proto.encode_header("big.bin", len(data)) + data + sha(data))
    assert first.results[0].reason.startswith("taken over by a new connection")
    assert v1.app.verdict is not None and v1.app.verdict.ok
    assert (tmp_path / "big.bin").read_bytes() == data
    assert server.counters[lim.TAKEOVERS] == 2


def test_a_takeover_leaves_the_old_connections_group_commit_to_finish(tmp_path, monkeypatch):
    """The old connection's file whose commit is under way (its fdatasync held) is committed
    after the takeover, which neither waits for it nor blocks the new connection's OFFER."""
    held, release = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        if not held.is_set():
            held.set()
            assert release.wait(WAIT_S)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    out = OutputDir(tmp_path)
    server = server_for(out)
    data = os.urandom(BIG)
    first = Peer(out, server=server)
    send_file(first, "small.txt", b"committed anyway")
    first.poll()
    assert held.wait(WAIT_S)  # small.txt is in the group commit
    first.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    first.send(rec.encode_start(0) + data[:HELD])
    second = Peer(out, addr=("10.0.0.1", 2), server=server, now=first.now + 2.0)
    second.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    assert_taken_over(first, second)
    assert [o.offset for o in second.offers()] == [HELD]
    release.set()
    out.drain_commits(WAIT_S)
    assert (tmp_path / "small.txt").read_bytes() == b"committed anyway"
    resume_the_rest(second, data)
    assert (tmp_path / "big.bin").read_bytes() == data


def test_an_interrupted_tree_names_the_file_it_cut_and_whether_it_was_kept(tmp_path):
    from rtcp.transfer.report import receive_json

    out = OutputDir(tmp_path)
    data = os.urandom(BIG)
    peer = Peer(out)
    send_file(peer, "small.txt", b"hello")
    assert peer.wait_verdict(0).ok
    peer.send(rec.encode_file("big.bin", len(data), MTIME_NS, ask_offer=True))
    peer.send(rec.encode_start(0) + data[:HELD])
    peer.close()
    conn = peer.results[-1]
    assert conn.entries == 1 and not conn.verified
    line = conn.log_line()
    assert line.startswith("interrupted 1 entry from 10.0.0.1:1")
    assert f"1 verified, 0 failed; big.bin cut off at {HELD} of {BIG} bytes" in line
    assert "(kept: sending it again resumes it)" in line
    assert receive_json(conn)["cut"] == {
        "path": "big.bin", "bytes_received": HELD, "size": BIG, "kept": True
    }


def test_after_end_the_receiver_closes_even_when_every_reply_left_before(tmp_path):
    """A refused lone file: its VERDICT left at once; the END that follows closes the
    connection (it waited for the close grace instead: seconds per refused send)."""
    (tmp_path / "doc.txt").write_bytes(b"precious")
    peer = Peer(OutputDir(tmp_path))
    send_file(peer, "doc.txt", b"new")
    assert peer.wait_verdict(0).status == proto.Status.FILE_EXISTS
    assert not peer.handle.conn.closed_by_us
    peer.end()
    assert peer.handle.conn.closed_by_us
