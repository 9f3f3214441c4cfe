"""The receiver's file handling: temporary + rename, hashing, refusals, cleanup."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import threading

import pytest

from rtcp.errors import LocalIOError
from rtcp.transfer import storage
from rtcp.transfer.protocol import TEMP_PREFIX, Status
from rtcp.transfer.storage import OutputDir, Refusal


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def temps(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith(TEMP_PREFIX))


def test_write_then_commit(tmp_path):
    out = OutputDir(tmp_path / "new" / "dir")  # created
    data = os.urandom(300_000)
    f = out.open("report.pdf", len(data))
    assert f.temp.parent == out.path
    assert f.temp.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
    assert f.temp.name.endswith("-report.pdf.part")
    assert not (out.path / "report.pdf").exists()
    for i in range(0, len(data), 7000):
        f.write(memoryview(data)[i : i + 7000])
    assert not (out.path / "report.pdf").exists()  # never under the final name before the end
    result = f.finish(sha(data))
    assert result.verdict.status == Status.OK
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (out.path / "report.pdf").read_bytes() == data
    assert temps(out.path) == []
    mode = (out.path / "report.pdf").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_empty_file(tmp_path):
    out = OutputDir(tmp_path)
    f = out.open("empty", 0)
    assert f.finish(sha(b"")).verdict.ok
    assert (tmp_path / "empty").read_bytes() == b""


def test_mismatch_leaves_nothing(tmp_path):
    out = OutputDir(tmp_path)
    f = out.open("x.bin", 3)
    f.write(b"abc")
    result = f.finish(sha(b"abd"))
    assert result.verdict.status == Status.HASH_MISMATCH
    assert result.path is None
    assert os.listdir(tmp_path) == []


def test_exists_refused_early(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    out = OutputDir(tmp_path)
    with pytest.raises(Refusal) as info:
        out.open("a.txt", 3)
    assert info.value.status == Status.FILE_EXISTS
    assert temps(tmp_path) == []
    assert (tmp_path / "a.txt").read_text() == "old"


def test_exists_symlink_or_dangling_symlink_refused(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    with pytest.raises(Refusal) as info:
        OutputDir(tmp_path).open("link", 1)
    assert info.value.status == Status.FILE_EXISTS


def test_file_appearing_during_the_transfer_is_not_overwritten(tmp_path):
    """The check after the header is not enough: the commit itself must not replace."""
    out = OutputDir(tmp_path)
    f = out.open("race.txt", 3)
    f.write(b"new")
    (tmp_path / "race.txt").write_text("someone else's")
    result = f.finish(sha(b"new"))
    assert result.verdict.status == Status.FILE_EXISTS
    assert (tmp_path / "race.txt").read_text() == "someone else's"
    assert temps(tmp_path) == []


def test_force_overwrites(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    out = OutputDir(tmp_path, force=True)
    f = out.open("a.txt", 3)
    f.write(b"new")
    assert f.finish(sha(b"new")).verdict.ok
    assert (tmp_path / "a.txt").read_text() == "new"
    assert temps(tmp_path) == []


def test_force_replaces_a_symlink_not_its_target(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    os.symlink(target, out_dir / "a.txt")
    f = OutputDir(out_dir, force=True).open("a.txt", 3)
    f.write(b"new")
    assert f.finish(sha(b"new")).verdict.ok
    assert target.read_text() == "keep"
    assert not (out_dir / "a.txt").is_symlink()
    assert (out_dir / "a.txt").read_text() == "new"


def test_force_does_not_replace_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(Refusal) as info:
        OutputDir(tmp_path, force=True).open("d", 1)
    assert info.value.status == Status.IO_ERROR


def test_no_link_support_falls_back_to_check_then_rename(tmp_path, monkeypatch):
    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(storage.os, "link", no_link)
    out = OutputDir(tmp_path)
    f = out.open("a", 1)
    f.write(b"z")
    assert f.finish(sha(b"z")).verdict.ok
    assert (tmp_path / "a").read_bytes() == b"z"
    g = out.open("b", 1)
    g.write(b"z")
    (tmp_path / "b").write_text("other")
    assert g.finish(sha(b"z")).verdict.status == Status.FILE_EXISTS
    assert temps(tmp_path) == []


@pytest.mark.parametrize("name", ["bad/name", "..", ".", "", "a\x00b", "\\x"])
def test_bad_names_refused(tmp_path, name):
    with pytest.raises(Refusal) as info:
        OutputDir(tmp_path).open(name, 1)
    assert info.value.status == Status.BAD_NAME
    assert os.listdir(tmp_path) == []


def test_too_large_refused_before_writing(tmp_path):
    with pytest.raises(Refusal) as info:
        OutputDir(tmp_path).open("huge", 2**62)
    assert info.value.status == Status.TOO_LARGE
    assert os.listdir(tmp_path) == []


def test_write_error_becomes_io_error_and_removes_the_temporary(tmp_path, monkeypatch):
    out = OutputDir(tmp_path)
    f = out.open("full.bin", 10 << 20)

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    real = f._file
    f._file = Full()
    f.write(b"x" * 100)  # queued: the writer thread meets the error
    f._stop_writer()  # (white box) wait for it
    real.close()
    with pytest.raises(Refusal) as info:
        f.write(b"x" * 100)  # the next write reports it
    assert info.value.status == Status.IO_ERROR
    assert "No space left" in info.value.message
    assert temps(tmp_path) == []


def test_abort_removes_the_temporary_and_is_idempotent(tmp_path):
    out = OutputDir(tmp_path)
    f = out.open("x", 10)
    f.write(b"12345")
    f.abort()
    f.abort()
    assert os.listdir(tmp_path) == []


def test_abort_after_commit_keeps_the_file(tmp_path):
    out = OutputDir(tmp_path)
    f = out.open("x", 1)
    f.write(b"1")
    assert f.finish(sha(b"1")).verdict.ok
    f.abort()
    assert (tmp_path / "x").read_bytes() == b"1"


def test_longest_name_gets_a_valid_temporary(tmp_path):
    name = "é" * 127  # 254 bytes: the temporary name must be shortened to fit NAME_MAX
    out = OutputDir(tmp_path)
    f = out.open(name, 1)
    assert len(f.temp.name.encode()) <= 255
    f.write(b"1")
    assert f.finish(sha(b"1")).verdict.ok
    assert (tmp_path / name).read_bytes() == b"1"


def test_cleanup_removes_dead_receivers_temporaries_only(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f"{TEMP_PREFIX}{dead_pid}-abcd1234-x.part").write_text("junk")
    (tmp_path / f"{TEMP_PREFIX}garbage").write_text("junk")
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abcd1234-y.part"
    live.write_text("in progress")
    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    out = OutputDir(tmp_path)
    removed = out.cleanup_leftovers()
    assert sorted(removed) == sorted(
        [f"{TEMP_PREFIX}{dead_pid}-abcd1234-x.part", f"{TEMP_PREFIX}garbage"]
    )
    assert live.exists() and (tmp_path / "keep.txt").exists()
    assert (tmp_path / f"{TEMP_PREFIX}dir").is_dir()  # never removes directories


def test_output_dir_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalIOError):
        OutputDir(tmp_path / "file")
    with pytest.raises(LocalIOError):
        OutputDir(tmp_path / "file" / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(LocalIOError):
            OutputDir(d)
    finally:
        d.chmod(0o700)


def test_temporary_creation_failure_is_io_error(tmp_path, monkeypatch):
    out = OutputDir(tmp_path)
    real_open = os.open

    def failing_open(path, flags, mode=0o777, **kw):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(storage.os, "open", failing_open)
    with pytest.raises(Refusal) as info:
        out.open("x", 1)
    assert info.value.status == Status.IO_ERROR
    assert "Permission denied" in info.value.message


def test_cleanup_treats_a_zombie_owner_as_dead(tmp_path):
    import time

    import psutil

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, not reaped yet
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        z = tmp_path / f"{TEMP_PREFIX}{zombie.pid}-abcd-z.part"
        z.write_text("junk")
        assert OutputDir(tmp_path).cleanup_leftovers() == [z.name]
    finally:
        zombie.wait()


def test_cleanup_treats_a_younger_process_as_a_reused_pid(tmp_path, monkeypatch):
    import psutil

    t = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-abcd-t.part"
    t.write_text("junk")
    ctime = os.stat(t).st_ctime
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: ctime + 60)
    assert OutputDir(tmp_path).cleanup_leftovers() == [t.name]


def test_data_is_synced_as_it_arrives(tmp_path, monkeypatch):
    """The final fsync must stay short: dirty data is flushed every SYNC_EVERY_BYTES."""
    synced = []
    monkeypatch.setattr(storage, "SYNC_EVERY_BYTES", 1000)
    monkeypatch.setattr(storage, "HANDOFF_BYTES", 0)  # every write to the thread at once
    monkeypatch.setattr(storage.os, "fdatasync", lambda fd: synced.append(fd))
    f = OutputDir(tmp_path).open("s", 5000)
    for _ in range(10):
        f.write(b"x" * 500)
    assert f.finish(sha(b"x" * 5000)).verdict.ok
    assert len(synced) == 6  # 5 while the data arrives, then the final one (store)


def test_the_flush_runs_beside_the_writes(tmp_path, monkeypatch):
    """Writes, hash and fdatasync in a helper thread: write() returns while it is blocked."""
    started, release = threading.Event(), threading.Event()

    def slow_fdatasync(fd):
        started.set()
        assert release.wait(10)

    monkeypatch.setattr(storage, "SYNC_EVERY_BYTES", 1000)
    monkeypatch.setattr(storage, "HANDOFF_BYTES", 0)  # every write to the thread at once
    monkeypatch.setattr(storage.os, "fdatasync", slow_fdatasync)
    f = OutputDir(tmp_path).open("s", 5000)
    f.write(b"x" * 1000)
    assert started.wait(10)
    for _ in range(8):
        f.write(b"x" * 500)  # returns although the flush is still blocked
    release.set()
    result = f.finish(sha(b"x" * 5000))
    assert result.verdict.ok and (tmp_path / "s").read_bytes() == b"x" * 5000


def _failing_flush(monkeypatch, errno_, message):
    """Every fdatasync fails with errno_; files flush every 1000 bytes."""

    def fail(fd):
        raise OSError(errno_, message)

    monkeypatch.setattr(storage, "SYNC_EVERY_BYTES", 1000)
    monkeypatch.setattr(storage, "HANDOFF_BYTES", 0)  # every write to the thread at once
    monkeypatch.setattr(storage.os, "fdatasync", fail)


def test_a_failed_background_flush_fails_the_file(tmp_path, monkeypatch):
    _failing_flush(monkeypatch, errno.ENOSPC, "No space left on device")
    f = OutputDir(tmp_path).open("s", 3000)
    f.write(b"x" * 1000)  # its flush fails in the writer thread
    f._stop_writer()  # (white box) wait for the thread to get there
    with pytest.raises(Refusal) as info:
        f.write(b"x" * 1000)  # the next write reports it
    assert info.value.verdict.status is Status.IO_ERROR
    assert "No space left" in info.value.verdict.message
    assert list(tmp_path.iterdir()) == []  # the temporary is gone


def test_a_failed_background_flush_is_the_verdict(tmp_path, monkeypatch):
    _failing_flush(monkeypatch, errno.EIO, "Input/output error")
    f = OutputDir(tmp_path).open("s", 1500)
    f.write(b"x" * 1500)
    result = f.finish(sha(b"x" * 1500))
    assert result.verdict.status is Status.IO_ERROR and not result.verdict.ok
    assert list(tmp_path.iterdir()) == []


def test_small_pieces_reach_the_writer_thread_gathered(tmp_path, monkeypatch):
    """One 1400-byte datagram per wakeup must not cost one thread hand-off each."""
    puts = []
    f = OutputDir(tmp_path).open("g", 10_000)
    real_put = f._queue.put
    monkeypatch.setattr(f._queue, "put", lambda item: (puts.append(item), real_put(item)))
    monkeypatch.setattr(storage, "HANDOFF_BYTES", 4000)
    data = bytes(range(250)) * 40
    for p in range(0, len(data), 1000):
        f.write(memoryview(data)[p:p + 1000])
    assert [len(x) for x in puts] == [4000, 4000]  # two hand-offs so far, 2000 bytes held
    assert f.finish(sha(data)).verdict.ok
    assert [len(x) for x in puts if x is not None] == [4000, 4000, 2000]
    assert (tmp_path / "g").read_bytes() == data


@pytest.mark.parametrize("force", [False, True])
def test_a_name_in_flight_is_refused_at_the_header(tmp_path, force):
    """A second sender of a name being received is refused before it uploads anything, and
    two writers never race for one final name, not even with --force (issue 11)."""
    out = OutputDir(tmp_path, force=force)
    first = out.open("same.bin", 3)
    with pytest.raises(Refusal) as info:
        out.open("same.bin", 3)
    assert info.value.status == Status.FILE_EXISTS
    assert "being received" in str(info.value)
    assert len(temps(tmp_path)) == 1
    first.write(b"abc")
    assert first.finish(sha(b"abc")).verdict.ok
    if force:  # once the first is stored, --force overwrites it as usual
        again = out.open("same.bin", 1)
        again.abort()
    other = out.open("other.bin", 1)
    other.abort()  # an aborted transfer frees its name too
    out.open("other.bin", 1).abort()


def test_out_that_is_a_file_says_not_a_directory(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LocalIOError, match="afile is not a directory"):
        OutputDir(tmp_path / "afile")
    with pytest.raises(LocalIOError, match="not a directory"):
        OutputDir(tmp_path / "afile" / "sub")
