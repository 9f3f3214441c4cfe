"""Sending many files and folders over one connection (format version 2, records.py).

`rtcp send A B DIR/ -`: the entries are listed first (collect_entries: a folder's own name is
the top of its paths, like `scp -r`; symlinks are skipped unless followed; special files are
skipped with a warning), then TreeSendApp streams them one after the other on one connection
and gathers one verdict per entry. Success means every entry verified, nothing less.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.core.protection import FAILURE_MESSAGES, ClientProtection, Secret
from rtcp.errors import ExitCode, KeyRejected, LocalIOError, RtcpError, TransferRefused, UsageError
from rtcp.net.driver import App, Handle
from rtcp.transfer import protocol as proto
from rtcp.transfer import records as rec
from rtcp.transfer.readahead import ReadAhead, SourceError
from rtcp.transfer.sender import (
    DEFAULT_TIMEOUT_S,
    READ_CHUNK_BYTES,
    _protection_stats,
    closed_error,
    make_config,
    open_driver,
    run_reporting,
    stats_dict,
    verdict_error,
)

# Files at least this large ask the receiver for an offer before their data (one round trip):
# a refusal (the file exists) then costs nothing, and it is where resume will answer.
ASK_OFFER_MIN_BYTES = 1 << 20
# Files up to this size are read in the event loop at once; larger ones by a ReadAhead thread.
SMALL_FILE_BYTES = 256 * 1024
STDIN = "-"


@dataclass
class Entry:
    """One thing to send: a file (source None: stdin) or a folder (kind "dir")."""

    kind: str  # "file" or "dir"
    rel: str  # the path on the receiver, under its --out
    source: str | None
    size: int | None  # None: unknown (stdin)
    mtime_ns: int = 0


@dataclass
class FileResult:
    path: str
    source: str | None
    kind: str
    bytes: int | None
    verified: bool = False
    sha256: str | None = None
    verdict: str | None = None
    error: str | None = None
    exit_code: int = int(ExitCode.FAILURE)
    resumed_from: int = 0  # bytes the receiver held already (a resumed partial)


@dataclass
class TreeResult:
    """What `rtcp send` with many entries did; to_json() is the --json object."""

    peer: str
    entries: int
    files: int
    bytes: int
    verified: bool = False
    verified_entries: int = 0
    seconds: float = 0.0
    goodput_bytes_per_s: float = 0.0
    segments_sent: int = 0
    retransmissions: int = 0
    handshakes: int = 0
    exit_code: int = int(ExitCode.OK)
    error: str | None = None
    results: list[FileResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["failures"] = [
            {"path": r.path, "error": r.error or r.verdict} for r in self.results if not r.verified
        ]
        return out


def collect_entries(
    args: list[str],
    *,
    follow_symlinks: bool = False,
    stdin_name: str | None = None,
    warn: Callable[[str], None] = lambda text: print(f"rtcp: warning: {text}", file=sys.stderr),
) -> list[Entry]:
    """The entries for FILE arguments, in order; raises RtcpError for a missing argument or
    two entries with the same path on the receiver."""
    entries: list[Entry] = []
    for arg in args:
        if arg == STDIN:
            if not stdin_name:
                raise UsageError("sending stdin (-) needs --name NAME")
            entries.append(Entry("file", _checked(stdin_name), None, None, time.time_ns()))
            continue
        try:
            st = os.stat(arg) if follow_symlinks else os.lstat(arg)
        except FileNotFoundError:
            raise LocalIOError(f"{arg}: no such file") from None
        except OSError as exc:
            raise LocalIOError(f"cannot read {arg}: {exc.strerror or exc}") from None
        top = os.path.basename(os.path.abspath(arg))
        if stat.S_ISLNK(st.st_mode):  # given by name: follow it (as cp and scp do)
            st = os.stat(arg)
        if stat.S_ISDIR(st.st_mode):
            _walk(arg, top, entries, follow_symlinks, warn, {(st.st_dev, st.st_ino)})
        elif stat.S_ISREG(st.st_mode):
            entries.append(Entry("file", _checked(top), arg, st.st_size, st.st_mtime_ns))
        else:
            raise LocalIOError(f"{arg} is not a regular file or a folder")
    seen: set[str] = set()
    for entry in entries:
        if entry.rel in seen and entry.kind == "file":
            raise UsageError(f"two files would arrive as {entry.rel!r}")
        seen.add(entry.rel)
    return entries


def _checked(rel: str) -> str:
    try:
        return rec.validate_path(rel)
    except proto.BadName as exc:
        raise UsageError(f"cannot send {rel!r}: {exc}") from None


def _walk(folder: str, rel: str, entries: list, follow: bool, warn, seen: set) -> None:
    st = os.stat(folder)
    entries.append(Entry("dir", _checked(rel), folder, 0, st.st_mtime_ns))
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        warn(f"skipped {folder}: {exc.strerror or exc}")
        return
    for name in names:
        path = os.path.join(folder, name)
        child = f"{rel}/{name}"
        try:
            rec.validate_path(child)
        except proto.BadName as exc:
            warn(f"skipped {path}: {exc}")
            continue
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not follow:
                    warn(f"skipped the symlink {path} (--follow-symlinks follows it)")
                    continue
                st = os.stat(path)
        except OSError as exc:
            warn(f"skipped {path}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                warn(f"skipped {path}: a folder loop through symlinks")
                continue
            _walk(path, child, entries, follow, warn, seen | {(st.st_dev, st.st_ino)})
        elif stat.S_ISREG(st.st_mode):
            entries.append(Entry("file", child, path, st.st_size, st.st_mtime_ns))
        else:
            warn(f"skipped {path}: not a regular file or a folder")


class TreeSendApp(App):
    """Streams entries over one connection: records, bodies, trailers; one verdict each."""

    def __init__(
        self,
        entries: list[Entry],
        *,
        peer_text: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        stdin=None,
        resume: bool = True,
        warn: Callable[[str], None] | None = None,
    ):
        self.entries = entries
        self.resume = resume  # --no-resume: every file from byte 0
        self.warn = warn or (lambda text: print(f"rtcp: {text}", file=sys.stderr, flush=True))
        self.results = [
            FileResult(e.rel + ("/" if e.kind == "dir" else ""), e.source, e.kind, e.size)
            for e in entries
        ]
        self.peer_text = peer_text
        self.timeout_s = timeout_s
        self.clock = clock
        self.stdin = stdin
        self.replies = rec.ReplyParser()
        self.next_index = 0  # the entry whose record goes out next
        self.sent: list[int] = []  # entry index of each record sent (the wire's numbering)
        self.waiting: int | None = None  # a FILE asked for an offer: its wire index
        self._out: list = []  # pieces of the stream not yet accepted by conn.send()
        self._file = None  # the current file's object
        self._reader: ReadAhead | None = None
        self._hash = None
        self._body_left: int | None = None  # bytes of the current body still to queue
        self._body_index = -1
        self._body_size = 0
        self._end_queued = False
        self.stream_started = False
        self.stream_bytes_queued = 0
        self.overhead_bytes_queued = 0
        self._queue_overhead(rec.stream_start())
        self.answered = 0
        self.verified = 0
        self.total_bytes = sum(e.size or 0 for e in entries)
        self.established = False
        self.started = clock()
        self.last_progress = self.started
        self._last_acked = 0
        self.error: RtcpError | None = None
        self.done = False
        self.closing_since: float | None = None
        self.finished_at: float | None = None

    # --- progress ----------------------------------------------------------------------

    @property
    def stream_bytes_acked(self) -> int:
        una = self.handle.conn.snd_una
        return max(0, min(una - 1, self.stream_bytes_queued))

    @property
    def file_bytes_acked(self) -> int:
        """Bytes of files acknowledged (the records' own bytes left out, to within those in
        flight)."""
        return max(0, self.stream_bytes_acked - self.overhead_bytes_queued)

    def _note_acked(self, now: float) -> None:
        acked = self.stream_bytes_acked
        if acked > self._last_acked:
            self._last_acked = acked
            self.last_progress = now

    @property
    def complete(self) -> bool:
        return self._end_queued and self.answered == len(self.entries)

    @property
    def succeeded(self) -> bool:
        return self.complete and self.verified == len(self.entries) and self.error is None

    # --- failures ------------------------------------------------------------------------

    def fail(self, error: RtcpError, *, abort: bool = True) -> None:
        if self.error is None:
            self.error = error
        self.close()
        if abort and not self.handle.conn.is_closed:
            self.handle.conn.abort()
        self.done = True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._file is not None and self._file is not self.stdin:
            self._file.close()
        self._file = None

    # --- App -----------------------------------------------------------------------------

    def event_received(self, event, now: float) -> None:
        if isinstance(event, ev.HandshakeComplete):
            self.established = True
            self.last_progress = now
        elif isinstance(event, ev.DataReceived):
            self._read_replies(now)
        elif isinstance(event, ev.SendSpaceAvailable):
            self._note_acked(now)
        elif isinstance(event, ev.StreamEnded):
            self._read_replies(now)
            if not self.complete and not self.done:
                self.fail(TransferRefused(
                    f"{self.peer_text} closed the connection after {self.answered} of "
                    f"{len(self.entries)} verdicts"
                ))
            elif self.closing_since is None and not self.done:
                self.handle.conn.close()
                self.closing_since = now
        elif isinstance(event, ev.ConnectionClosed):
            self.close()
            failure = getattr(self.handle.protection, "failure", None)
            if failure is not None and self.error is None:
                self.error = KeyRejected(FAILURE_MESSAGES[failure])
            if not self.complete and self.error is None:
                self.error = closed_error(event.reason, event.error, self.peer_text, self.timeout_s)
            self.done = True

    def _read_replies(self, now: float) -> None:
        conn = self.handle.conn
        while data := conn.read(65536):
            for item in self.replies.feed(data):
                if isinstance(item, rec.VerdictFor):
                    self._verdict(item, now)
                elif isinstance(item, rec.OfferFor):
                    self._offer(item, now)
                elif isinstance(item, rec.ConnectionVerdict):
                    self.fail(verdict_error(item.verdict))
                    return
                elif isinstance(item, proto.ProtocolFailure):
                    self.fail(TransferRefused(f"{item.message} ({self.peer_text})"))
                    return
                if self.done:
                    return
        if self.complete and self.closing_since is None and not self.done:
            self.finished_at = now
            conn.close()
            self.closing_since = now

    def _verdict(self, item: rec.VerdictFor, now: float) -> None:
        if not 0 <= item.index < len(self.sent) or self.results[self.sent[item.index]].verdict:
            self.fail(TransferRefused(f"a verdict for entry {item.index}, not expected"))
            return
        self.last_progress = now
        result = self.results[self.sent[item.index]]
        verdict = item.verdict
        result.verdict = verdict.describe() if not verdict.ok else "verified"
        self.answered += 1
        if verdict.ok:
            if result.kind == "file" and (
                result.sha256 is None or verdict.message.strip().lower() != result.sha256
            ):
                result.verdict = "OK, with a SHA-256 that is not the sender's: not verified"
                result.error = result.verdict
                result.exit_code = int(ExitCode.HASH_MISMATCH)
                return
            result.verified = True
            result.exit_code = int(ExitCode.OK)
            self.verified += 1
            return
        error = verdict_error(verdict)
        result.error, result.exit_code = str(error), int(error.exit_code)
        if item.index == self.waiting:  # refused before its data: go on with the next
            self.waiting = None
            self.close()
        # refused while its body streams: the receiver reads and drops the rest

    def _offer(self, item: rec.OfferFor, now: float) -> None:
        if item.index != self.waiting:
            self.fail(TransferRefused(f"an offer for entry {item.index}, not asked"))
            return
        self.last_progress = now
        self.waiting = None
        index = self.sent[item.index]
        offset, hasher = 0, hashlib.sha256()
        if item.offset and self.resume:
            offset, hasher = self._check_prefix(index, item.offset, item.prefix_digest)
        self._queue_overhead(rec.encode_start(offset))
        self._begin_body(index, offset, hasher)

    def _check_prefix(self, index: int, offset: int, digest: bytes):
        """Hash our own first `offset` bytes (locally: nothing is sent) and compare them with
        the receiver's partial. (offset, hash so far) to resume, else (0, fresh hash)."""
        result = self.results[index]
        hasher = hashlib.sha256()
        if offset <= (result.bytes or 0):
            try:
                done = 0
                while done < offset:
                    chunk = self._file.read(min(READ_CHUNK_BYTES, offset - done))
                    if not chunk:
                        break
                    hasher.update(chunk)
                    done += len(chunk)
                if done == offset and hasher.digest() == digest:
                    result.resumed_from = offset
                    return offset, hasher
                self._file.seek(0)
            except OSError:
                self._file.seek(0)
        self.warn(f"{result.path}: changed since the partial on the receiver: starting over")
        return 0, hashlib.sha256()

    # --- the stream ----------------------------------------------------------------------

    def _queue_overhead(self, data: bytes) -> None:
        self._out.append(memoryview(data))
        self.overhead_bytes_queued += len(data)

    def _next_record(self) -> bool:
        """Queue the next entry's record (and open its file); False when nothing is left."""
        if self.next_index >= len(self.entries):
            if not self._end_queued:
                self._queue_overhead(rec.END)
                self._end_queued = True
                return True
            return False
        index = self.next_index
        self.next_index += 1
        entry = self.entries[index]
        if entry.kind == "dir":
            self.sent.append(index)
            self._queue_overhead(rec.encode_dir(entry.rel, entry.mtime_ns))
            return True
        if entry.source is None:
            self._file, size = self.stdin, None
        else:
            try:
                self._file = open(entry.source, "rb", buffering=0)  # noqa: SIM115
                st = os.fstat(self._file.fileno())
            except OSError as exc:
                self._local_failure(index, f"cannot read {entry.source}: {exc.strerror or exc}")
                return True
            size = st.st_size
        self.results[index].bytes = size
        ask = size is not None and size >= ASK_OFFER_MIN_BYTES
        self.sent.append(index)
        self._queue_overhead(rec.encode_file(entry.rel, size, entry.mtime_ns, ask_offer=ask))
        if ask:
            self.waiting = len(self.sent) - 1
        else:
            self._begin_body(index)
        return True

    def _local_failure(self, index: int, message: str) -> None:
        """A file that cannot be read before its record: not sent, counted as failed."""
        result = self.results[index]
        result.error, result.exit_code = message, int(ExitCode.LOCAL_IO)
        result.verdict = "not sent"
        self.answered += 1
        self.close()

    def _begin_body(self, index: int, offset: int = 0, hasher=None) -> None:
        """The body of entries[index] from offset (hasher: SHA-256 of the bytes before)."""
        self._body_index = index
        size = self.results[index].bytes
        self._body_size = offset
        self._body_left = None if size is None else size - offset
        self._hash = hasher or hashlib.sha256()
        if size is None or size > SMALL_FILE_BYTES:
            self._reader = ReadAhead(
                self._file, self._body_left, self._hash.update, chunk_bytes=READ_CHUNK_BYTES,
                name=self.entries[index].source or "stdin",
                on_chunk=self.handle.driver.wakeup if self.handle.driver else None,
            )

    def _body_piece(self, wait: bool) -> bool:
        """Queue the next piece of the current body (or its trailer); False: nothing ready."""
        index = self._body_index
        unknown = self.results[index].bytes is None
        if self._reader is None:
            try:
                data = self._file.read(self._body_left) if self._body_left else b""
            except OSError as exc:
                return self._source_failed(f"cannot read {self._file.name}: {exc}")
            if len(data) != self._body_left:
                return self._source_failed(f"{self.entries[index].source} changed while sent")
            chunk = data
        else:
            if not wait and not self._reader.ready():
                return False
            try:
                chunk = self._reader.take()
            except SourceError as exc:
                return self._source_failed(str(exc))
        if chunk:
            if self._reader is None:
                self._hash.update(chunk)
            if unknown:
                self._queue_overhead(rec.encode_chunk_length(len(chunk)))
            self._out.append(memoryview(chunk))
            self._body_size += len(chunk)
            if not unknown:
                self._body_left -= len(chunk)
            if unknown or self._body_left:
                return True
            if self._reader is not None:
                return True  # the reader's end comes next (None)
        digest = self._hash.digest()
        result = self.results[index]
        result.sha256 = digest.hex()
        if unknown:
            result.bytes = self._body_size
            self._queue_overhead(rec.encode_sized_trailer(self._body_size, digest))
        else:
            self._queue_overhead(digest)
        self._body_left = None
        self._body_index = -1
        self.close()
        return True

    def _source_failed(self, message: str) -> bool:
        """The file cannot be read whole after its record went: the stream cannot go on."""
        self.fail(LocalIOError(message))
        return False

    def poll(self, now: float) -> None:
        if self.done:
            return
        if not self.established:
            return
        conn = self.handle.conn
        self._note_acked(now)
        space = conn.send_buffer_space
        while space > 0:
            if not self._out:
                if self._body_index >= 0:
                    if not self._body_piece(wait=conn.unsent_bytes < conn.mss):
                        break
                elif self.waiting is not None or not self._next_record():
                    break
                continue
            piece = self._out[0]
            n = conn.send(piece)
            if n <= 0:
                break
            self.stream_bytes_queued += n
            if n < len(piece):
                self._out[0] = piece[n:]
            else:
                self._out.pop(0)
            space = conn.send_buffer_space
        idle = not self._out and (self.waiting is not None or self._end_queued)
        conn.cork = not idle

    def deadline(self) -> float | None:
        if self.done and self.closing_since is None:
            return None
        if self.closing_since is not None:
            return self.closing_since + min(2.0, self.timeout_s)
        return self.last_progress + self.timeout_s

    def on_deadline(self, now: float) -> None:
        if self.closing_since is not None:
            self.done = True
            self.closing_since = None
            return
        if self.done:
            return
        if self.established:
            what = f"no progress for {self.timeout_s:g} s sending to {self.peer_text}"
        else:
            what = f"no answer from {self.peer_text} within {self.timeout_s:g} s"
        from rtcp.errors import PeerTimeout

        self.fail(PeerTimeout(what))


def split_entries(entries: list[Entry], parallel: int) -> list[list[Entry]]:
    """entries for `parallel` connections: the folders on the first (a file's folders are
    created with it anyway), each file to the connection with the fewest bytes so far
    (largest first), the order kept within each connection."""
    groups: list[list[int]] = [[] for _ in range(parallel)]
    load = [0] * parallel
    files = [i for i, e in enumerate(entries) if e.kind == "file"]
    for i in sorted(files, key=lambda i: -(entries[i].size or 0)):
        k = min(range(parallel), key=lambda k: (load[k], k))
        groups[k].append(i)
        load[k] += entries[i].size or 0
    groups[0] += [i for i, e in enumerate(entries) if e.kind == "dir"]
    return [[entries[i] for i in sorted(g)] for g in groups if g]


class TreeApps:
    """The connections of one send (--parallel), seen as one for the progress bar."""

    def __init__(self, apps: list[TreeSendApp]):
        self.apps = apps

    @property
    def established(self) -> bool:
        return any(a.established for a in self.apps)

    @property
    def file_bytes_acked(self) -> int:
        return sum(a.file_bytes_acked for a in self.apps if a.established)

    @property
    def results(self) -> list[FileResult]:
        return [r for a in self.apps for r in a.results]

    @property
    def done(self) -> bool:
        return all(a.done for a in self.apps)


def send_tree(
    entries: list[Entry],
    host: str,
    port: int,
    *,
    config: ConnectionConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[TreeApps, float], None] | None = None,
    progress_interval_s: float = 0.1,
    pcap=None,
    wait_ready: bool = False,
    secret: Secret | None = None,
    keylog: Callable[[str], None] | None = None,
    stdin=None,
    resume: bool = True,
    parallel: int = 1,
) -> TreeResult:
    """Send entries to an `rtcp recv` over `parallel` connections (files distributed, see
    split_entries), all on one socket. Never raises for a failed transfer: the TreeResult
    carries each entry's outcome, exit_code and error."""
    driver, addr, peer_text = open_driver(host, port, timeout_s, wait_ready, pcap)
    cfg = make_config(config, timeout_s=timeout_s)
    apps = [
        TreeSendApp(
            group, peer_text=peer_text, timeout_s=timeout_s, clock=driver.clock, stdin=stdin,
            resume=resume,
        )
        for group in (split_entries(entries, parallel) if parallel > 1 else [entries])
    ]
    group = TreeApps(apps)
    handles: list[Handle] = []
    with driver:
        try:
            for app in apps:
                handles.append(driver.connect(addr, cfg, app, ClientProtection(secret, keylog)))
            run_reporting(driver, group, on_progress, progress_interval_s)
        except KeyboardInterrupt:
            for app in apps[: len(handles)]:
                app.fail(RtcpError("interrupted"))
            driver.service()
            driver.linger(0.2)
            raise
        finally:
            for app in apps:
                app.close()
        driver.service()
        if on_progress is not None:
            on_progress(group, driver.clock())
    return _tree_result(entries, apps, handles, peer_text)


def _tree_result(
    entries: list[Entry], apps: list[TreeSendApp], handles: list[Handle], peer_text: str
) -> TreeResult:
    by_entry = {id(e): r for app in apps for e, r in zip(app.entries, app.results)}
    results = [by_entry[id(e)] for e in entries]  # in the order given
    files = sum(1 for r in results if r.kind == "file")
    ends = [a.finished_at if a.finished_at is not None else a.clock() for a in apps]
    result = TreeResult(
        peer=peer_text,
        entries=len(results),
        files=files,
        bytes=sum(r.bytes or 0 for r in results if r.kind == "file"),
        results=results,
        seconds=max(0.0, max(ends) - min(a.started for a in apps)),
        verified_entries=sum(a.verified for a in apps),
        handshakes=sum(1 for a in apps if a.established),
    )
    for app in apps:
        for r in app.results:
            if r.verdict is None and r.error is None:
                r.error = str(app.error) if app.error else "no verdict"
                r.verdict = "not verified"
                r.exit_code = int(app.error.exit_code) if app.error else int(ExitCode.FAILURE)
    totals: dict = {}
    for handle in handles:
        stats = handle.conn.refresh_stats()
        result.segments_sent += int(stats.segments_sent)
        result.retransmissions += int(stats.retransmissions)
        one = stats_dict(stats)
        _protection_stats(one, handle.protection)
        for key, value in one.items():
            if len(handles) == 1:
                totals[key] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value  # counters add up over connections
    result.stats = totals
    verified_bytes = sum(r.bytes or 0 for r in results if r.verified and r.kind == "file")
    if result.seconds > 0:
        result.goodput_bytes_per_s = verified_bytes / result.seconds
    failed = [r for r in results if not r.verified]
    errors = [a.error for a in apps if a.error is not None]
    result.verified = all(a.succeeded for a in apps)
    if result.verified:
        result.exit_code, result.error = int(ExitCode.OK), None
    elif errors:
        result.exit_code, result.error = int(errors[0].exit_code), str(errors[0])
    else:
        first = failed[0]
        result.exit_code = first.exit_code
        result.error = (
            f"{len(failed)} of {len(results)} entries not verified "
            f"(first: {first.path}: {first.error})"
        )
    return result
