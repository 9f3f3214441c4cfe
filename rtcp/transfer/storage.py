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
from dataclasses import dataclass
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
MAX_PARTIALS = 64  # partials kept at once in one output folder: the oldest go first
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

    def __init__(self, path: str | os.PathLike, *, force: bool = False):
        self.path = Path(path)
        self.force = force
        self.in_flight: set[str] = set()  # names being received now (IncomingFile)
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

    def partials(self) -> list[tuple[float, Path, Path]]:
        """(modification time, data, sidecar) of every partial, oldest first."""
        found = []
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith(PARTIAL_PREFIX) and entry.name.endswith(".json"):
                data = Path(entry.path).with_suffix(".part")
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime, data, Path(entry.path)))
                except OSError:
                    continue
        return sorted(found)

    def remove_old_partials(self, max_age_s: float, now_wall: float) -> int:
        """Remove the partials older than max_age_s, and the oldest beyond MAX_PARTIALS."""
        found = self.partials()
        removed = 0
        for i, (mtime, data, sidecar) in enumerate(found):
            if now_wall - mtime > max_age_s or len(found) - i > MAX_PARTIALS:
                for path in (data, sidecar):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                removed += 1
        return removed

    def find_partial(self, rel: str, size: int, mtime_ns: int):
        """(offset, SHA-256 object of the prefix) of a partial of this very file (same path,
        size and mtime), or None. Hashes the prefix (read from disk)."""
        data, sidecar = self._partial_paths(rel)
        try:
            fd = os.open(sidecar, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, "rb") as f:
                meta = json.loads(f.read(_SIDECAR_MAX_BYTES))
            if (meta.get("path"), meta.get("size"), meta.get("mtime_ns")) != (rel, size, mtime_ns):
                return None
            fd = os.open(data, os.O_RDONLY | os.O_NOFOLLOW)
        except (OSError, ValueError, AttributeError):
            return None
        hasher = hashlib.sha256()
        offset = 0
        with open(fd, "rb") as f:
            want = min(int(meta.get("bytes", 0)), size)
            while offset < want:
                chunk = f.read(min(1 << 20, want - offset))
                if not chunk:
                    break
                hasher.update(chunk)
                offset += len(chunk)
        return (offset, hasher) if offset > 0 else None

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
            raise Refusal(Status.FILE_EXISTS, f"{name} is being received from another sender")
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

    def open_relative(
        self, rel: str, size: int | None, *, resume=None, check_only: bool = False
    ) -> IncomingFile | None:
        """The temporary for out/rel (parents created as folders); raises Refusal.
        resume: (offset, SHA-256 of the prefix) from find_partial: continue that partial.
        check_only: the same checks (and folders), no temporary (None)."""
        try:
            rel = validate_path(rel)
        except BadName as exc:
            raise Refusal(Status.BAD_NAME, str(exc)) from None
        if rel in self.in_flight:
            raise Refusal(Status.FILE_EXISTS, f"{rel} is being received from another sender")
        *parents, leaf = rel.split("/")
        parent_fd = self._walk(parents, rel)
        try:
            try:
                st = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if not self.force:
                    raise Refusal(Status.FILE_EXISTS, f"{rel} exists on the receiver")
                if stat.S_ISDIR(st.st_mode):
                    raise Refusal(Status.IO_ERROR, f"{rel} is a directory on the receiver")
            if size is not None:
                try:
                    free = shutil.disk_usage(self.path).free
                except OSError:
                    free = None
                if free is not None and size > free:
                    raise Refusal(
                        Status.TOO_LARGE, f"{size} bytes do not fit in the {free} bytes free"
                    )
            if check_only:
                os.close(parent_fd)
                return None
            return IncomingFile(self, rel, size, parent_fd=parent_fd, leaf=leaf, resume=resume)
        except BaseException:
            os.close(parent_fd)
            raise


@dataclass(slots=True)
class CommitResult:
    verdict: Verdict
    path: Path | None  # the final path when OK
    sha256: str


class IncomingFile:
    """One file being received: write(), then finish(digest) or abort().

    The bytes go to disk and into SHA-256 in a helper thread, in order: the file write, the
    hash and the periodic fdatasync all release the GIL, so they run beside the event loop
    (on its thread an fdatasync stalled reading for tens of milliseconds, long enough to
    overflow the socket buffer). A failure there is reported by the next write() or by
    finish()."""

    def __init__(
        self,
        out: OutputDir,
        name: str,
        size: int | None,
        *,
        parent_fd: int | None = None,
        leaf: str | None = None,
        resume: tuple[int, object] | None = None,
    ):
        """name: a base name, or (with parent_fd, the open folder that gets the file, which
        this object closes, and leaf, the last segment) a relative path. size None: unknown,
        the trailer says it (finish)."""
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
        for _attempt in range(8):
            self.temp = out.path / _temp_name(self._leaf)
            try:
                fd = os.open(
                    self.temp,
                    os.O_WRONLY
                    | os.O_CREAT
                    | os.O_EXCL
                    | getattr(os, "O_CLOEXEC", 0)
                    | getattr(os, "O_NOFOLLOW", 0),
                    0o600,
                )
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise Refusal(
                    Status.IO_ERROR,
                    f"cannot create a file in the output folder: {_io_message(exc)}",
                ) from None
        else:
            raise Refusal(Status.IO_ERROR, "cannot create a unique temporary file")
        if resume is not None:  # the partial becomes this temporary (its prefix kept)
            offset, hasher = resume
            partial, _sidecar = out._partial_paths(name)
            os.close(fd)
            try:
                os.replace(partial, self.temp)
                fd = os.open(self.temp, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
            except OSError as exc:
                try:
                    os.unlink(self.temp)
                except OSError:
                    pass
                raise Refusal(
                    Status.IO_ERROR, f"cannot resume from the partial: {_io_message(exc)}"
                ) from None
            out.drop_partial(name)
            self._hash = hasher
            self.bytes_written = self.resumed_from = offset
        self._file = open(fd, "wb", buffering=_WRITE_BUFFER, closefd=True)  # noqa: SIM115
        out.in_flight.add(name)
        self._writer_stopped = False  # the writer thread starts with the first hand-off

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
        if not (type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes)):
            data = bytes(data)  # the caller may reuse a mutable buffer: the thread gets a copy
        self.bytes_written += len(data)
        if self._gathered or len(data) < HANDOFF_BYTES:
            self._gathered.append(data)
            self._gathered_bytes += len(data)
            if self._gathered_bytes >= HANDOFF_BYTES:
                self._hand_off()
            return
        self._put(data)

    def _put(self, data) -> None:
        """Queue data for the writer thread, started here the first time: a file smaller
        than HANDOFF_BYTES never needs one (finish writes it), which is most of a tree of
        small files."""
        if self._writer is None and not self._writer_stopped:
            self._writer = threading.Thread(
                target=self._write_loop, name="rtcp-writer", daemon=True
            )
            self._writer.start()
        self._queue.put(data)

    def _hand_off(self) -> None:
        """Queue the gathered small pieces as one chunk."""
        gathered = self._gathered
        if gathered:
            self._put(gathered[0] if len(gathered) == 1 else b"".join(gathered))
            self._gathered = []
            self._gathered_bytes = 0

    def _write_loop(self) -> None:
        """The writer thread: write, hash and flush what write() queued; None ends it."""
        update, get = self._hash.update, self._queue.get
        unsynced = 0
        while (data := get()) is not None:
            if self._write_error is not None:
                continue  # failed: drain what is queued, write nothing more
            file = self._file
            try:
                file.write(data)
                update(data)
                unsynced += len(data)
                if unsynced >= SYNC_EVERY_BYTES:
                    file.flush()
                    os.fdatasync(file.fileno())
                    unsynced = 0
            except Exception as exc:  # noqa: BLE001 - reported by write() or finish()
                self._write_error = exc if isinstance(exc, OSError) else OSError(str(exc))

    def _stop_writer(self) -> None:
        """Wait until everything queued is written (or failed) and the thread is gone; with
        no thread (a small file), write what was gathered here."""
        if self._writer is not None:
            self._hand_off()
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        elif self._gathered and self._write_error is None:
            try:
                for data in self._gathered:
                    self._file.write(data)
                    self._hash.update(data)
            except OSError as exc:
                self._write_error = exc
            self._gathered = []
            self._gathered_bytes = 0
        self._writer_stopped = True

    def finish(self, expected_digest: bytes, size: int | None = None) -> CommitResult:
        """Compare the SHA-256, then fsync and move into place. Never leaves the temporary.
        size: the trailer's size of a file whose size was unknown at the start."""
        if self.size is None:
            self.size = size if size is not None else self.bytes_written
        self._stop_writer()
        if self._write_error is not None:
            exc = self._write_error
            self.abort()
            return CommitResult(
                Verdict(Status.IO_ERROR, f"cannot write {self.name}: {_io_message(exc)}"),
                None,
                self._hash.hexdigest(),
            )
        digest = self._hash.digest()
        hexd = digest.hex()
        if self.bytes_written != self.size:
            self.abort()
            return CommitResult(
                Verdict(Status.PROTOCOL_ERROR, f"{self.bytes_written} of {self.size} bytes"),
                None,
                hexd,
            )
        if digest != bytes(expected_digest):
            self.abort()
            return CommitResult(
                Verdict(
                    Status.HASH_MISMATCH,
                    f"received SHA-256 {hexd}, sender's {bytes(expected_digest).hex()}",
                ),
                None,
                hexd,
            )
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(self._file.fileno(), 0o666 & ~umask)
            self._file.close()
            self._closed = True
            self._commit()
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
        self.committed = True
        self.out.in_flight.discard(self.name)
        if self._parent_fd is not None:
            self._close_parent()  # fsyncs the folder that got the final name
        else:
            _fsync_dir(self.out.path)
        return CommitResult(Verdict(Status.OK, hexd), self.final, hexd)

    def _close_parent(self) -> None:
        if self._parent_fd is not None:
            try:
                os.fsync(self._parent_fd)
            except OSError:
                pass
            os.close(self._parent_fd)
            self._parent_fd = None

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
        its sidecar) for a later resume, instead of removing it. False when nothing is kept."""
        if self.committed or self._closed or self.size is None:
            return False
        self._stop_writer()
        if self._write_error is not None or self.bytes_written == 0:
            return False
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            partial, sidecar = self.out._partial_paths(self.name)
            meta = {"path": self.name, "size": self.size, "mtime_ns": mtime_ns,
                    "bytes": self.bytes_written}
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
        return True

    def abort(self) -> None:
        """Drop the transfer: close and remove the temporary (idempotent; no-op once committed)."""
        if self.committed:
            return
        self._close_parent()
        self.out.in_flight.discard(self.name)
        if self._writer is not None:
            self._write_error = self._write_error or OSError("aborted")  # drain, write no more
            self._stop_writer()  # the file must stay open until the thread is done with it
        if not self._closed:
            self._closed = True
            try:
                self._file.close()
            except OSError:
                pass
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass
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
