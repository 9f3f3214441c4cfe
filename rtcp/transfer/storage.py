"""The receiver's files: a temporary beside the final name, hashed while written, fsynced,
and moved into place only once the SHA-256 matched.

Nothing is ever created outside the output directory: names are validated by
protocol.validate_name (a base name, no separator, not "." or ".."), every path is
out_dir / name, and temporaries are created with O_EXCL (never through an existing entry).

A temporary is named ``.rtcp-tmp-<pid>-<random>-<name>.part``: a receiver removes, when it
starts, the temporaries of receivers that are no longer running (their pid is gone).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rtcp.errors import LocalIOError
from rtcp.transfer.protocol import TEMP_PREFIX, BadName, Status, Verdict, validate_name
from rtcp.transfer.records import validate_path

_WRITE_BUFFER = 1 << 20
# Flush to disk every this many bytes while receiving, so that the final fsync (which the
# sender waits for: it is part of every transfer's time) has little left to write.
SYNC_EVERY_BYTES = 4 << 20  # the final fsync then costs at most ~3 ms here
# Received data waits for the writer thread in a queue of at most this many chunks (one
# datagram's payload, or a joined GRO read of small ones: at most ~11 MB per file); a full
# queue holds the event loop back until the disk catches up.
WRITE_QUEUE_CHUNKS = 64
# Smaller pieces (one 1400-byte datagram each, when the network delivers them one at a time)
# are gathered up to this size first: a hand-off to the writer thread costs more than a copy.
HANDOFF_BYTES = 32 * 1024
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[0-9a-f]+-")
# A partial (resume): the data of an interrupted file, with a sidecar that says what it is.
PARTIAL_PREFIX = TEMP_PREFIX + "partial-"
DEFAULT_PARTIAL_MAX_AGE_S = 24 * 3600.0  # `rtcp recv --partial-max-age`
DEFAULT_PARTIAL_MAX_BYTES = 16 << 30  # `rtcp recv --partial-max-bytes`: all partials together
MAX_PARTIALS = 64  # partials kept at once in one output folder: the oldest go first
# A resumed file's SHA-256 must cover its prefix, read back from the partial (a SHA-256 cannot
# be saved half-way). That costs the receiver CPU the peer does not pay for, so it is paid out
# of what the peer sends: each byte received after a START buys this many bytes of the prefix
# hashed; the rest is hashed once the file's last byte has arrived, at most once per partial
# (a resumed file that fails is not kept again with that debt). The OFFER itself costs no
# hashing: the prefix's digest is in the sidecar, saved when the partial was kept.
RESUME_HASH_BYTES_PER_BYTE = 8
HASH_SLICE_BYTES = 1 << 20  # the prefix is read and hashed this much at a time
# Group commit: the fdatasyncs of one batch run on this many threads at once, so that the
# filesystem's journal commits them together (ext4: one commit for the lot, not one per file).
COMMIT_SYNC_THREADS = 16
# Files whose last byte arrived but whose verdict is not out yet (each holds two fds): above
# this, the receiver stops reading its connections until the commits catch up.
MAX_FILES_WAITING = 128
# Files of a tree smaller than this wait in memory for their end (at most MAX_FILES_WAITING x
# this much per receiver), and the group commit creates and writes their temporaries.
SMALL_FILE_BYTES = 32 * 1024
COMMIT_DRAIN_S = 30.0  # a stopping receiver waits this long at most for the commits
_SIDECAR_MAX_BYTES = 16384
_NAME_MAX = 255
# Hard links are the race-free "rename unless it exists"; these say a filesystem lacks them.
_NO_LINK_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


class Refusal(Exception):
    """The file cannot be received: carries the verdict to send back."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.status, self.message)


class InFlight(Refusal):
    """The path is being received on another connection now (FILE_EXISTS): `path` is its
    name in OutputDir.in_flight, for the receiver to find that connection (a takeover)."""

    def __init__(self, path: str):
        super().__init__(Status.FILE_EXISTS, f"{path} is being received from another sender")
        self.path = path


def _io_message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _owner_alive(pid: int, file_ctime: float) -> bool:
    """Is the receiver that created a temporary still running? A zombie is dead, and a
    process started after the file last changed is another one that reused the pid."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= file_ctime + 1.0
    except ImportError:  # pragma: no cover - psutil is a dependency; plain check otherwise
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied: it exists, and it is not ours to judge
        return True


def _temp_name(name: str) -> str:
    """A temporary name for `name`, at most NAME_MAX bytes (the name part is shortened)."""
    prefix = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"
    suffix = ".part"
    room = _NAME_MAX - len(prefix.encode()) - len(suffix)
    raw = name.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return prefix + raw + suffix


class OutputDir:
    """The folder a receiver writes into."""

    def __init__(
        self, path: str | os.PathLike, *, force: bool = False, keep_times: bool = True
    ):
        self.path = Path(path)
        self.force = force
        self.keep_times = keep_times  # give files and folders the sender's mtime
        self.in_flight: set[str] = set()  # names being received now (IncomingFile)
        self.files_waiting = 0  # files whose last byte arrived, verdict not out (IncomingFile)
        self.commit_pauses = 0  # times files_waiting reached MAX_FILES_WAITING (reading paused)
        self._waiting_lock = threading.Lock()
        self._committer: Committer | None = None
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise LocalIOError(f"{self.path} is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LocalIOError(
                f"cannot create {self.path}: a part of the path is not a directory"
            ) from None
        except OSError as exc:
            raise LocalIOError(f"cannot create {self.path}: {_io_message(exc)}") from None
        if not self.path.is_dir():
            raise LocalIOError(f"{self.path} is not a directory")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise LocalIOError(f"{self.path} is not writable")

    @property
    def committer(self) -> Committer:
        """The group commit of this folder's files (its threads start with the first file)."""
        if self._committer is None:
            self._committer = Committer()
        return self._committer

    def drain_commits(self, timeout_s: float = COMMIT_DRAIN_S) -> None:
        """Let the files being committed reach their final names before the process ends."""
        if self._committer is not None:
            self._committer.drain(timeout_s)

    @property
    def commit_backlog_full(self) -> bool:
        """MAX_FILES_WAITING files wait for their commit: receivers stop reading until they
        catch up."""
        return self.files_waiting >= MAX_FILES_WAITING

    def files_waiting_add(self, n: int) -> None:
        with self._waiting_lock:
            self.files_waiting += n
            if n > 0 and self.files_waiting - n < MAX_FILES_WAITING <= self.files_waiting:
                self.commit_pauses += 1

    def cleanup_leftovers(self) -> list[str]:
        """Remove temporaries left by dead receivers; return the names removed."""
        removed = []
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            raise LocalIOError(f"cannot list {self.path}: {_io_message(exc)}") from None
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIX) or entry.name.startswith(PARTIAL_PREFIX):
                continue
            m = _TEMP_RE.match(entry.name)
            try:
                ctime = entry.stat(follow_symlinks=False).st_ctime
            except OSError:
                continue
            if m and _owner_alive(int(m.group(1)), ctime):
                continue  # a transfer in progress in a running receiver
            try:
                if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except OSError:
                pass
        return removed

    # --- partials (resume) ---------------------------------------------------------------

    def _partial_paths(self, rel: str) -> tuple[Path, Path]:
        key = hashlib.sha256(rel.encode("utf-8")).hexdigest()[:32]
        base = self.path / f"{PARTIAL_PREFIX}{key}"
        return base.with_suffix(".part"), base.with_suffix(".json")

    def partials(self) -> list[tuple[float, Path, Path, int]]:
        """(modification time, data, sidecar, data bytes) of every partial, oldest first."""
        found = []
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith(PARTIAL_PREFIX) and entry.name.endswith(".json"):
                data = Path(entry.path).with_suffix(".part")
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                try:
                    nbytes = os.stat(data, follow_symlinks=False).st_size
                except OSError:
                    nbytes = 0
                found.append((mtime, data, Path(entry.path), nbytes))
        return sorted(found)

    def remove_old_partials(
        self, max_age_s: float, now_wall: float, max_bytes: int | None = None
    ) -> tuple[int, int]:
        """Remove the partials older than max_age_s, then the oldest while there are more
        than MAX_PARTIALS or they hold more than max_bytes together (a partial larger than
        max_bytes alone goes too). Returns (partials removed, their bytes)."""
        found = self.partials()
        total = sum(nbytes for *_rest, nbytes in found)
        removed = removed_bytes = 0
        for i, (mtime, data, sidecar, nbytes) in enumerate(found):
            too_many = len(found) - i > MAX_PARTIALS
            too_big = max_bytes is not None and total > max_bytes
            if now_wall - mtime > max_age_s or too_many or too_big:
                for path in (data, sidecar):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                removed += 1
                removed_bytes += nbytes
                total -= nbytes
        return removed, removed_bytes

    def find_partial(self, rel: str, size: int, mtime_ns: int) -> tuple[int, bytes] | None:
        """(offset, SHA-256 of the prefix) of a partial of this very file (same path, size
        and mtime), or None. Reads the sidecar only: the digest was saved with the partial, so
        an OFFER costs no hashing however often a peer asks."""
        data, sidecar = self._partial_paths(rel)
        try:
            fd = os.open(sidecar, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, "rb") as f:
                meta = json.loads(f.read(_SIDECAR_MAX_BYTES))
            if (meta.get("path"), meta.get("size"), meta.get("mtime_ns")) != (rel, size, mtime_ns):
                return None
            offset = int(meta.get("bytes", 0))
            digest = bytes.fromhex(meta.get("prefix_sha256", ""))
            held = os.stat(data, follow_symlinks=False).st_size
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if len(digest) != hashlib.sha256().digest_size or not 0 < offset <= min(size, held):
            return None
        return offset, digest

    def drop_partial(self, rel: str) -> None:
        for path in self._partial_paths(rel):
            try:
                os.unlink(path)
            except OSError:
                pass

    def final_path(self, name: str) -> Path:
        return self.path / validate_name(name)

    def check(self, name: str, size: int) -> None:
        """Early checks right after the header: raise Refusal to refuse before the data."""
        try:
            name = validate_name(name)
        except BadName as exc:
            raise Refusal(Status.BAD_NAME, str(exc)) from None
        final = self.path / name
        if name in self.in_flight:
            # checked at the header: a second sender of the same name must not upload it all
            # first, and two writers must never race for one final name (not even with --force)
            raise InFlight(name)
        if os.path.lexists(final):
            if not self.force:
                raise Refusal(Status.FILE_EXISTS, f"{name} exists on the receiver")
            if os.path.isdir(final) and not os.path.islink(final):
                raise Refusal(Status.IO_ERROR, f"{name} is a directory on the receiver")
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            free = None
        if free is not None and size > free:
            raise Refusal(Status.TOO_LARGE, f"{size} bytes do not fit in the {free} bytes free")

    def open(self, name: str, size: int) -> IncomingFile:
        """Run check() and create the temporary; raises Refusal."""
        self.check(name, size)
        return IncomingFile(self, validate_name(name), size)

    # --- relative paths (format version 2) ---------------------------------------------

    def _walk(self, segments: list[str], rel: str) -> int:
        """An fd of the folder out/segments, creating what is missing, never through a
        symlink (O_NOFOLLOW at every step, relative to the previous fd): whatever is already
        in the output folder, nothing is created outside it. Raises Refusal."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise Refusal(
                Status.IO_ERROR, f"cannot open the output folder: {_io_message(exc)}"
            ) from None
        for i, segment in enumerate(segments):
            try:
                try:
                    nxt = os.open(segment, flags, dir_fd=fd)
                except FileNotFoundError:
                    try:
                        os.mkdir(segment, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = os.open(segment, flags, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                where = "/".join(segments[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refusal(
                        Status.BAD_NAME,
                        f"{rel}: {where} is a symlink or not a folder on the receiver",
                    ) from None
                raise Refusal(
                    Status.IO_ERROR, f"cannot create {where}: {_io_message(exc)}"
                ) from None
            os.close(fd)
            fd = nxt
        return fd

    def make_dir(self, rel: str) -> Path:
        """Create the folder out/rel (and its parents) if missing; raises Refusal."""
        try:
            rel = validate_path(rel)
        except BadName as exc:
            raise Refusal(Status.BAD_NAME, str(exc)) from None
        os.close(self._walk(rel.split("/"), rel))
        return self.path / rel

    def open_folder(self, rel: str) -> int:
        """An fd of the folder out/rel (created if missing), never through a symlink; raises
        Refusal."""
        try:
            rel = validate_path(rel)
        except BadName as exc:
            raise Refusal(Status.BAD_NAME, str(exc)) from None
        return self._walk(rel.split("/"), rel)

    def open_relative(
        self, rel: str, size: int | None, *, resume=None, check_only: bool = False,
        folders: FolderCache | None = None,
    ) -> IncomingFile | None:
        """The temporary for out/rel (parents created as folders); raises Refusal.
        resume: (offset, SHA-256 of the prefix) from find_partial: continue that partial.
        check_only: the same checks (and folders), no temporary (None). folders: the
        connection's open folders, reused instead of walking to them again."""
        try:
            rel = validate_path(rel)
        except BadName as exc:
            raise Refusal(Status.BAD_NAME, str(exc)) from None
        if rel in self.in_flight:
            raise InFlight(rel)
        *parents, leaf = rel.split("/")
        # the folder: our own fd (walked now), or one the connection keeps open (borrowed)
        parent_fd = self._walk(parents, rel) if folders is None else None
        folder_fd = parent_fd if folders is None else folders.get(self, parents, rel)
        small = resume is None and size is not None and size < SMALL_FILE_BYTES
        try:
            try:
                st = os.stat(leaf, dir_fd=folder_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if not self.force:
                    raise Refusal(Status.FILE_EXISTS, f"{rel} exists on the receiver")
                if stat.S_ISDIR(st.st_mode):
                    raise Refusal(Status.IO_ERROR, f"{rel} is a directory on the receiver")
            if size is not None and not small:  # a small file that does not fit: ENOSPC
                try:
                    free = shutil.disk_usage(self.path).free
                except OSError:
                    free = None
                if free is not None and size > free:
                    raise Refusal(
                        Status.TOO_LARGE, f"{size} bytes do not fit in the {free} bytes free"
                    )
            if check_only:
                return None
            if small:  # held in memory: no fd until its commit finds the folder again
                return IncomingFile(self, rel, size, leaf=leaf, small=True)
            if parent_fd is None:
                parent_fd = os.dup(folder_fd)
            incoming = IncomingFile(
                self, rel, size, parent_fd=parent_fd, leaf=leaf, resume=resume
            )
            parent_fd = None  # the file's now
            return incoming
        finally:
            if parent_fd is not None:
                os.close(parent_fd)


class FolderCache:
    """The folders a connection wrote into last, kept open: a tree's files share a few
    folders, and walking to one again costs an open per segment (each waiting for the journal
    while commits run: opening a folder updates its atime). A folder is reached only by
    OutputDir._walk (O_NOFOLLOW from the output folder), as without the cache."""

    MAX_FOLDERS = 16

    def __init__(self) -> None:
        self._fds: dict[tuple[str, ...], int] = {}

    def open(self, out: OutputDir, parents: list[str], rel: str) -> int:
        """A new fd (the caller closes it) of the folder out/parents; raises Refusal."""
        return os.dup(self.get(out, parents, rel))

    def get(self, out: OutputDir, parents: list[str], rel: str) -> int:
        """The cache's fd of the folder out/parents (valid until the next call or close());
        raises Refusal."""
        key = tuple(parents)
        fd = self._fds.get(key)
        if fd is None:
            fd = out._walk(parents, rel)
            if len(self._fds) >= self.MAX_FOLDERS:
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[key] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass(slots=True)
class CommitResult:
    verdict: Verdict
    path: Path | None  # the final path when OK
    sha256: str


class IncomingFile:
    """One file being received: write(), then finish(digest) or abort(); or, to commit it with
    others (format version 2): end(digest), then once `ready`, check(), then a Committer.

    The bytes go to disk and into SHA-256 in a helper thread, in order: the file write, the
    hash and the periodic fdatasync all release the GIL, so they run beside the event loop
    (on its thread an fdatasync stalled reading for tens of milliseconds, long enough to
    overflow the socket buffer). A failure there is reported by the next write() or by
    finish(). A resumed file's thread also hashes the partial's prefix again, read back from
    disk, paced by what arrives (RESUME_HASH_BYTES_PER_BYTE)."""

    def __init__(
        self,
        out: OutputDir,
        name: str,
        size: int | None,
        *,
        parent_fd: int | None = None,
        leaf: str | None = None,
        resume: tuple[int, bytes] | None = None,
        small: bool = False,
    ):
        """name: a base name, or (with parent_fd, the open folder that gets the file, which
        this object closes, and leaf, the last segment) a relative path. size None: unknown,
        the trailer says it (finish). resume: (offset, SHA-256 of the prefix) from
        find_partial: the partial of this path becomes the temporary, its prefix kept.
        small: a file of a tree under SMALL_FILE_BYTES, held in memory until the group commit
        creates its temporary (no parent_fd: the commit finds its folder again)."""
        self.out = out
        self.name = name
        self.size = size
        self.final = out.path / name
        self._parent_fd = parent_fd
        self._leaf = leaf or name
        self.resumed_from = 0
        self.bytes_written = 0
        self._hash = hashlib.sha256()
        self._closed = False
        self.committed = False
        self._queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE_CHUNKS)
        self._gathered: list = []  # small pieces not handed off yet
        self._gathered_bytes = 0
        self._writer: threading.Thread | None = None
        self._write_error: OSError | None = None
        self._expected: bytes | None = None  # the sender's SHA-256, from end()
        self._settle = False  # end() was called: the writer pays the whole hash debt
        self._writer_done = False
        self.on_ready: Callable[[], None] | None = None  # called by the writer thread at its end
        # resume: bytes on disk, and how far the hash has read them (behind: the prefix debt)
        self._on_disk = 0
        self._hashed = 0
        self._hash_credit = 0
        self._read_fd: int | None = None
        self._resume_digest = b""
        self.prefix_bytes_hashed = 0  # bytes read back from disk to be hashed (the counter)
        self._counted = False  # in out's count of files waiting for their verdict
        # A small file of a tree is held in memory until its end, and its temporary created
        # by the group commit, off the event loop (a create waits for the journal's commits)
        self._deferred = small
        self.temp: Path | None = None
        self._deferred_hashed = False
        if small:
            self._file = None
            out.in_flight.add(name)
            self._writer_stopped = True  # never a thread: the data stays gathered
            return
        fd = self._create_temp()
        if resume is not None:  # the partial becomes this temporary (its prefix kept)
            offset, digest = resume
            partial, _sidecar = out._partial_paths(name)
            os.close(fd)
            try:
                os.replace(partial, self.temp)
                fd = os.open(self.temp, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
                self._read_fd = os.open(
                    self.temp, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
                )
            except OSError as exc:
                try:
                    os.unlink(self.temp)
                except OSError:
                    pass
                raise Refusal(
                    Status.IO_ERROR, f"cannot resume from the partial: {_io_message(exc)}"
                ) from None
            out.drop_partial(name)
            self._resume_digest = bytes(digest)
            self.bytes_written = self.resumed_from = self._on_disk = offset
        self._file = open(fd, "wb", buffering=_WRITE_BUFFER, closefd=True)  # noqa: SIM115
        out.in_flight.add(name)
        self._writer_stopped = False  # the writer thread starts with the first hand-off
        if resume is not None:
            self._start_writer()  # it owes the prefix's hash: never pay it on the event loop

    def _create_temp(self) -> int:
        """Create the temporary (O_EXCL: never through an existing entry); its fd."""
        for _attempt in range(8):
            self.temp = self.out.path / _temp_name(self._leaf)
            try:
                return os.open(
                    self.temp,
                    os.O_WRONLY
                    | os.O_CREAT
                    | os.O_EXCL
                    | getattr(os, "O_CLOEXEC", 0)
                    | getattr(os, "O_NOFOLLOW", 0),
                    0o600,
                )
            except FileExistsError:
                continue
            except OSError as exc:
                self.temp = None
                raise Refusal(
                    Status.IO_ERROR,
                    f"cannot create a file in the output folder: {_io_message(exc)}",
                ) from None
        self.temp = None
        raise Refusal(Status.IO_ERROR, "cannot create a unique temporary file")

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        """Queue bytes for the file; raises Refusal (the temporary is then removed) for more
        bytes than announced, or when an earlier write failed."""
        if self.size is not None and self.bytes_written + len(data) > self.size:
            self.abort()
            raise Refusal(Status.PROTOCOL_ERROR, "more bytes than announced")
        if self._write_error is not None:
            exc = self._write_error
            self.abort()
            raise Refusal(Status.IO_ERROR, f"cannot write {self.name}: {_io_message(exc)}")
        if self._deferred or not (
            type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)
        ):
            # the caller may reuse a mutable buffer: the thread gets a copy; a small file
            # that waits keeps its own bytes, not the whole read its view points into
            data = bytes(data)
        self.bytes_written += len(data)
        if self._deferred or self._gathered or len(data) < HANDOFF_BYTES:
            self._gathered.append(data)
            self._gathered_bytes += len(data)
            if self._gathered_bytes >= HANDOFF_BYTES and not self._deferred:
                self._hand_off()
            return
        self._put(data)

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="rtcp-writer", daemon=True)
        self._writer.start()

    def _put(self, data) -> None:
        """Queue data for the writer thread, started here the first time: a file smaller
        than HANDOFF_BYTES never needs one (finish writes it), which is most of a tree of
        small files."""
        if self._writer is None and not self._writer_stopped:
            self._start_writer()
        self._queue.put(data)

    def _hand_off(self) -> None:
        """Queue the gathered small pieces as one chunk."""
        gathered = self._gathered
        if gathered:
            self._put(gathered[0] if len(gathered) == 1 else b"".join(gathered))
            self._gathered = []
            self._gathered_bytes = 0

    def _write_loop(self) -> None:
        """The writer thread: write, hash and flush what write() queued; None ends it (after
        end(): once the hash covers every byte)."""
        update, get = self._hash.update, self._queue.get
        unsynced = 0
        while (data := get()) is not None:
            if self._write_error is not None:
                continue  # failed: drain what is queued, write nothing more
            file = self._file
            try:
                file.write(data)
                self._on_disk += len(data)
                if self._hashed < self._on_disk - len(data):  # a resumed prefix not hashed yet
                    self._hash_credit += RESUME_HASH_BYTES_PER_BYTE * len(data)
                    self._pay_hash_debt(limited=True)
                else:
                    update(data)
                    self._hashed = self._on_disk
                unsynced += len(data)
                if unsynced >= SYNC_EVERY_BYTES:
                    file.flush()
                    os.fdatasync(file.fileno())
                    unsynced = 0
            except Exception as exc:  # noqa: BLE001 - reported by write() or finish()
                self._write_error = exc if isinstance(exc, OSError) else OSError(str(exc))
        if self._settle and self._write_error is None:
            try:
                self._pay_hash_debt(limited=False)
            except OSError as exc:
                self._write_error = exc
        self._writer_done = True
        if self.on_ready is not None:
            self.on_ready()

    def _pay_hash_debt(self, *, limited: bool) -> None:
        """Hash the bytes on disk the hash has not covered yet (a resumed prefix, then what
        was written after it meanwhile), in slices; limited: no more than the credit."""
        if self._hashed >= self._on_disk:
            return
        self._file.flush()  # what the read below must see
        while self._hashed < self._on_disk and self._write_error is None:
            want = min(HASH_SLICE_BYTES, self._on_disk - self._hashed)
            if limited:
                want = min(want, self._hash_credit)
                if want <= 0:
                    return
            chunk = os.pread(self._read_fd, want, self._hashed)
            if not chunk:
                raise OSError(errno.EIO, "the partial shrank while it was hashed")
            self._hash.update(chunk)
            self._hashed += len(chunk)
            self._hash_credit -= len(chunk)
            self.prefix_bytes_hashed += len(chunk)

    def _write_gathered(self) -> None:
        if self._deferred:  # hashed here once, written by store()
            if not self._deferred_hashed:
                self._deferred_hashed = True
                for data in self._gathered:
                    self._hash.update(data)
            return
        if self._gathered and self._write_error is None:
            try:
                for data in self._gathered:
                    self._file.write(data)
                    self._hash.update(data)
            except OSError as exc:
                self._write_error = exc
        self._gathered = []
        self._gathered_bytes = 0

    def _stop_writer(self) -> None:
        """Wait until everything queued is written (or failed) and the thread is gone; with
        no thread (a small file), write what was gathered here."""
        if self._writer is not None:
            if not self._writer_done:
                self._hand_off()
                self._queue.put(None)
            self._writer.join()
            self._writer = None
        else:
            self._write_gathered()
        self._writer_stopped = True

    # --- the end of a file: end(), ready, check(), then store() and place() -------------

    def end(self, expected_digest: bytes, size: int | None = None) -> None:
        """The file's last byte has arrived: let the writer finish (and hash what it still
        owes) without waiting for it. size: the trailer's size of a file whose size was
        unknown at the start."""
        if self.size is None:
            self.size = size if size is not None else self.bytes_written
        self._expected = bytes(expected_digest)
        self._settle = True
        if self._writer is not None:
            self._hand_off()
            self._queue.put(None)
        else:
            self._write_gathered()
            self._writer_stopped = True

    @property
    def ready(self) -> bool:
        """end() was called and the writer (if any) is done: check() will not wait."""
        return self._settle and (self._writer is None or self._writer_done)

    def check(self) -> CommitResult | None:
        """After end(): the failure (the temporary is then removed), or None when the bytes
        are the sender's (same size, same SHA-256)."""
        self._stop_writer()
        if self._write_error is not None:
            exc = self._write_error
            self.abort()
            return CommitResult(
                Verdict(Status.IO_ERROR, f"cannot write {self.name}: {_io_message(exc)}"),
                None,
                self._hash.hexdigest(),
            )
        hexd = self._hash.hexdigest()
        if self.bytes_written != self.size:
            self.abort()
            return CommitResult(
                Verdict(Status.PROTOCOL_ERROR, f"{self.bytes_written} of {self.size} bytes"),
                None,
                hexd,
            )
        if self._hash.digest() != self._expected:
            self.abort()
            return CommitResult(
                Verdict(
                    Status.HASH_MISMATCH,
                    f"received SHA-256 {hexd}, sender's {self._expected.hex()}",
                ),
                None,
                hexd,
            )
        return None

    def store(self, mtime_ns: int | None = None) -> None:
        """A checked file to disk: fdatasync, the mode a new file gets, the sender's mtime
        (mtime_ns; None keeps the time of receipt), close. Any thread; raises OSError or
        Refusal (a small file's temporary cannot be created)."""
        if self._deferred:
            self._file = open(self._create_temp(), "wb", buffering=0)  # noqa: SIM115
            for data in self._gathered:
                self._file.write(data)
            self._gathered = []
        self._file.flush()
        fileno = self._file.fileno()
        os.fdatasync(fileno)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fileno, 0o666 & ~umask)
        if mtime_ns is not None:
            os.utime(fileno, ns=(time.time_ns(), mtime_ns))
        self._file.close()
        self._closed = True
        self._close_read_fd()

    def place(self, folders: FolderCache | None = None) -> None:
        """A stored file under its final name (not yet durable there: its folder's fsync
        does that). Raises Refusal (it exists, its folder is gone) or OSError. folders: where
        a small file (which held no fd) finds its folder again."""
        if self._deferred and self._parent_fd is None:
            *parents, _leaf = self.name.split("/")
            if folders is None:
                self._parent_fd = self.out._walk(parents, self.name)
            else:
                self._parent_fd = folders.open(self.out, parents, self.name)
        self._commit()

    def settled(self) -> CommitResult:
        """After place() and the folder's fsync: the file is committed."""
        self.committed = True
        self.out.in_flight.discard(self.name)
        self._release()
        return CommitResult(Verdict(Status.OK, self.hexdigest), self.final, self.hexdigest)

    def finish(self, expected_digest: bytes, size: int | None = None) -> CommitResult:
        """Compare the SHA-256, then fsync and move into place, waiting for all of it (format
        version 1, one file per connection). Never leaves the temporary."""
        self.end(expected_digest, size)
        failed = self.check()
        if failed is not None:
            return failed
        hexd = self.hexdigest
        try:
            self.store()
            self.place()
        except Refusal as exc:
            self.abort()
            return CommitResult(exc.verdict, None, hexd)
        except OSError as exc:
            self.abort()
            return CommitResult(
                Verdict(Status.IO_ERROR, f"cannot store {self.name}: {_io_message(exc)}"),
                None,
                hexd,
            )
        if self._parent_fd is not None:
            self._close_parent()  # fsyncs the folder that got the final name
        else:
            _fsync_dir(self.out.path)
        return self.settled()

    def _close_parent(self, *, sync: bool = True) -> None:
        if self._parent_fd is not None:
            if sync:
                try:
                    os.fsync(self._parent_fd)
                except OSError:
                    pass
            os.close(self._parent_fd)
            self._parent_fd = None

    def _close_read_fd(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None

    def count_waiting(self) -> None:
        """Count this file among the output folder's files waiting for a verdict (each holds
        fds) until it is committed or removed."""
        if not self._counted:
            self._counted = True
            self.out.files_waiting_add(1)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.out.files_waiting_add(-1)

    def _commit(self) -> None:
        if self._parent_fd is not None:
            self._commit_at(self._parent_fd)
            return
        if self.out.force:
            os.replace(self.temp, self.final)
            return
        try:
            os.link(self.temp, self.final, follow_symlinks=False)
        except FileExistsError:
            raise Refusal(Status.FILE_EXISTS, f"{self.name} exists on the receiver") from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            # No hard links here: check then rename (a small window, the best we can do).
            if os.path.lexists(self.final):
                raise Refusal(Status.FILE_EXISTS, f"{self.name} exists on the receiver") from None
            os.replace(self.temp, self.final)
            return
        os.unlink(self.temp)

    def _commit_at(self, parent_fd: int) -> None:
        """Move the temporary (in the output folder) to leaf in the folder parent_fd."""
        leaf = self._leaf
        if self.out.force:
            os.replace(self.temp, leaf, dst_dir_fd=parent_fd)
            return
        try:
            os.link(self.temp, leaf, dst_dir_fd=parent_fd, follow_symlinks=False)
        except FileExistsError:
            raise Refusal(Status.FILE_EXISTS, f"{self.name} exists on the receiver") from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            try:
                os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                os.replace(self.temp, leaf, dst_dir_fd=parent_fd)
                return
            raise Refusal(Status.FILE_EXISTS, f"{self.name} exists on the receiver") from None
        os.unlink(self.temp)

    def keep_partial(self, mtime_ns: int) -> bool:
        """An interrupted transfer: keep what was written as the partial of this path (with
        its sidecar: the sender's size and mtime, the bytes held and their SHA-256) for a later
        resume, instead of removing it. False when nothing is kept. A resumed file whose hash
        has not caught up with its prefix keeps that prefix only (hashing the rest now would
        be CPU the peer did not pay for); one whose end arrived is not kept."""
        if self.committed or self._closed or self.size is None or self._settle:
            return False
        if self._deferred:
            self.abort()
            return False
        self._stop_writer()
        if self._write_error is not None or self.bytes_written == 0:
            return False
        try:
            self._file.flush()
            if self._hashed < self.bytes_written:  # a resumed prefix not hashed again yet
                kept, digest = self.resumed_from, self._resume_digest
                os.ftruncate(self._file.fileno(), kept)
            else:
                kept, digest = self.bytes_written, self._hash.digest()
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            self._close_read_fd()
            partial, sidecar = self.out._partial_paths(self.name)
            meta = {"path": self.name, "size": self.size, "mtime_ns": mtime_ns,
                    "bytes": kept, "prefix_sha256": digest.hex()}
            tmp_meta = self.temp.with_suffix(".json")
            fd = os.open(tmp_meta, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "w") as f:
                json.dump(meta, f)
            os.replace(self.temp, partial)
            os.replace(tmp_meta, sidecar)
        except OSError:
            return False
        self.out.in_flight.discard(self.name)
        self.committed = True  # nothing left to remove
        self._close_parent()
        self._release()
        return True

    def abort(self) -> None:
        """Drop the transfer: close and remove the temporary (idempotent; no-op once committed)."""
        if self.committed:
            return
        self._close_parent(sync=False)
        self.out.in_flight.discard(self.name)
        if self._writer is not None:
            self._write_error = self._write_error or OSError("aborted")  # drain, write no more
            self._stop_writer()  # the file must stay open until the thread is done with it
        if not self._closed and self._file is not None:
            self._closed = True
            try:
                self._file.close()
            except OSError:
                pass
        self._close_read_fd()
        self._gathered = []
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except FileNotFoundError:
                pass
            except OSError:
                pass
        self._release()


@dataclass(eq=False)
class CommitJob:
    """One checked file for a Committer; `result` is set (then `done`) by its thread."""

    incoming: IncomingFile
    mtime_ns: int | None
    notify: Callable[[], None] | None = None  # called once the job is done (wake the loop)
    result: CommitResult | None = None
    done: bool = False
    error: BaseException | None = field(default=None, repr=False)


class Committer:
    """Group commit (what databases do with their log): the files checked while one batch
    was being stored form the next batch. Their fdatasyncs run at once on COMMIT_SYNC_THREADS
    threads (the filesystem's journal commits them together instead of once per file), then
    each is linked under its final name, then every folder that got names is fsynced once, and
    only then is each job done and its verdict sent: a file the sender is told is verified is
    on disk under its final name, as when each file had its own fsyncs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._jobs: list[CommitJob] = []
        self._thread: threading.Thread | None = None  # runs while there are jobs
        self._outstanding = 0  # jobs submitted and not done
        self.folders = FolderCache()  # the commit thread's, for one batch: small files' folders
        self.batches = 0  # counters: batches stored, files in them
        self.files = 0

    def submit(self, job: CommitJob) -> None:
        with self._lock:
            self._jobs.append(job)
            self._outstanding += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rtcp-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Commit batches until none is left, then end (an idle receiver keeps no thread)."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None
                    return
                batch, self._jobs = self._jobs, []
            self._commit(batch)

    def _commit(self, batch: list[CommitJob]) -> None:
        def store(job: CommitJob) -> None:
            try:
                job.incoming.store(job.mtime_ns)
            except (Refusal, OSError) as exc:
                job.error = exc
            except Exception as exc:  # noqa: BLE001 - a verdict, never a lost thread
                job.error = OSError(str(exc))

        _in_parallel(store, batch)
        folders: dict[tuple[int, int], int] = {}
        for job in batch:
            if job.error is not None:
                continue
            try:
                job.incoming.place(self.folders)
                fd = job.incoming._parent_fd
                if fd is not None:
                    st = os.fstat(fd)
                    folders.setdefault((st.st_dev, st.st_ino), fd)
            except (Refusal, OSError) as exc:
                job.error = exc
        self.folders.close()  # walked again next batch: a folder may be removed meanwhile
        _in_parallel(_fsync_quietly, list(folders.values()))
        if any(job.incoming._parent_fd is None and job.error is None for job in batch):
            _fsync_dir(batch[0].incoming.out.path)
        notify = []
        for job in batch:
            incoming = job.incoming
            if job.error is None:
                incoming._close_parent(sync=False)
                job.result = incoming.settled()
            else:
                hexd = incoming.hexdigest
                if isinstance(job.error, Refusal):
                    verdict = job.error.verdict
                else:
                    verdict = Verdict(
                        Status.IO_ERROR, f"cannot store {incoming.name}: {_io_message(job.error)}"
                    )
                incoming.abort()
                job.result = CommitResult(verdict, None, hexd)
            job.done = True
            if job.notify is not None and job.notify not in notify:
                notify.append(job.notify)
        with self._lock:
            self.batches += 1
            self.files += len(batch)
            self._outstanding -= len(batch)
            self._wake.notify_all()
        for wake in notify:
            wake()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every file submitted is committed (a receiver that stops first)."""
        with self._lock:
            return self._wake.wait_for(lambda: self._outstanding == 0, timeout_s)


def _in_parallel(work: Callable[[object], None], items: list) -> None:
    """work(item) for every item, on up to COMMIT_SYNC_THREADS threads at once (threads of
    this batch only: they end with it)."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    todo = iter(items)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                item = next(todo, todo)
            if item is todo:
                return
            work(item)

    threads = [
        threading.Thread(target=worker, name="rtcp-sync", daemon=True)
        for _ in range(min(COMMIT_SYNC_THREADS, len(items)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _fsync_quietly(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
