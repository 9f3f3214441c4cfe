"""The sending application: files and folders over one connection (format version 2,
records.py), driven by rtcp.net.driver. It is rtcp's only way of sending: a lone
`rtcp send FILE` is a tree of one file (send_tree, then lone_result for its summary), so it
resumes as any file of a tree.

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
from dataclasses import asdict, dataclass, field, replace

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.core.protection import FAILURE_MESSAGES, ClientProtection, Secret
from rtcp.errors import (
    ConnectionRefused,
    ExitCode,
    KeyRejected,
    LocalIOError,
    PeerTimeout,
    RtcpError,
    TransferRefused,
    UsageError,
)
from rtcp.net.driver import App, Handle
from rtcp.transfer import protocol as proto
from rtcp.transfer import records as rec
from rtcp.transfer.readahead import ReadAhead, SourceError
from rtcp.transfer.sender import (
    CLOSE_GRACE_S,
    DEFAULT_TIMEOUT_S,
    NOT_RTCP_DATAGRAMS,
    READ_CHUNK_BYTES,
    SendResult,
    _protection_stats,
    closed_error,
    make_config,
    open_driver,
    run_reporting,
    stat_value,
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
    resumed_bytes: int = 0  # of `bytes`, held by the receiver already (resumed partials)
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
    stats: dict = field(default_factory=dict)  # the connections' counters (summed)
    driver: dict = field(default_factory=dict)  # the socket's counters (DriverStats)

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
            _check_readable(arg)
            entries.append(Entry("file", _checked(top), arg, st.st_size, st.st_mtime_ns))
        else:
            raise LocalIOError(f"{arg} is not a regular file or a folder")
    seen: set[str] = set()
    for entry in entries:
        if entry.rel in seen and entry.kind == "file":
            raise UsageError(f"two files would arrive as {entry.rel!r}")
        seen.add(entry.rel)
    return entries


def _check_readable(path: str) -> None:
    """A file named on the command line that cannot be opened fails before anything is sent
    (one inside a folder fails on its own, as the tree goes on)."""
    try:
        with open(path, "rb", buffering=0):
            pass
    except PermissionError:
        raise LocalIOError(f"{path}: permission denied") from None
    except OSError as exc:
        raise LocalIOError(f"cannot open {path}: {exc.strerror or exc}") from None


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
        wait_ready: bool = False,
    ):
        self.entries = entries
        self.wait_ready = wait_ready  # a refusal before the handshake means "not yet"
        self.refusals = 0
        self.linger = False  # after an abort: stay a moment to answer the peer's challenge ACK
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
        self._prefix: tuple | None = None  # a prefix check under way (_start_prefix_check)
        self._hash = None
        self._body_left: int | None = None  # bytes of the current body still to queue
        self._body_index = -1
        self._body_size = 0
        self._end_queued = False
        self.stream_started = False
        self.stream_bytes_queued = 0
        self.overhead_bytes_queued = 0
        self.file_bytes_queued = 0  # bytes of files accepted by conn.send()
        self.resumed_bytes = 0  # bytes the receiver held already (resumed partials)
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
        """Bytes of files sent and acknowledged (the records' own bytes left out, to within
        those in flight; exact once every entry is answered)."""
        if self.complete:
            return self.file_bytes_queued
        return min(self.file_bytes_queued, max(0, self.stream_bytes_acked - self.overhead_bytes_queued))

    def _note_acked(self, now: float) -> None:
        acked = self.stream_bytes_acked
        if acked > self._last_acked:
            self._last_acked = acked
            self.last_progress = now

    @property
    def complete(self) -> bool:
        return self._end_queued and self.answered == len(self.entries)

    @property
    def decided(self) -> bool:
        """Every entry has its outcome (the stream may still be running: a refused last file)."""
        return self.answered == len(self.entries)

    @property
    def succeeded(self) -> bool:
        return self.complete and self.verified == len(self.entries) and self.error is None

    # --- failures ------------------------------------------------------------------------

    def fail(self, error: RtcpError | None, *, abort: bool = True, linger: bool = False) -> None:
        """Stop (error None: every entry is decided already). abort resets the connection;
        linger asks send_tree to stay a moment after it, to answer the peer's challenge ACK
        (see Driver._reply_rst) so that the receiver drops the transfer at once rather than
        after its idle timeout."""
        if self.error is None and error is not None:
            self.error = error
        self.close()
        if abort and not self.handle.conn.is_closed:
            self.handle.conn.abort()
            self.linger = self.linger or linger
        self.done = True

    def linger_seconds(self) -> float:
        srtt = stat_value(self.handle.conn.stats, "srtt_s", default=None) or 0.05
        return min(1.0, 0.05 + 4 * srtt)

    def connection_refused(self, now: float) -> None:
        """ICMP port unreachable (the driver's connected socket): nothing is bound at the
        receiver's port. Before the handshake that is final at once, unless --wait-ready asked
        to wait for it (the SYN's retransmissions then keep knocking)."""
        if self.established or self.done:
            return
        self.refusals += 1
        if not self.wait_ready:
            self.fail(
                ConnectionRefused(
                    f"connection refused by {self.peer_text}: nothing listens there "
                    "(--wait-ready waits for it)"
                ),
                abort=False,
            )

    def _not_rtcp_datagrams(self) -> int:
        """Datagrams from the peer that were not rtcp segments of this connection."""
        stats = self.handle.conn.stats
        count = stats.malformed_datagrams + stats.checksum_failures + stats.foreign_datagrams
        if self.handle.driver is not None:
            count += self.handle.driver.stats.unroutable
        return count

    def _not_rtcp_error(self, count: int) -> RtcpError:
        return TransferRefused(
            f"{self.peer_text} answers, but not as rtcp ({count} datagrams that are not rtcp "
            "segments): is `rtcp recv` listening there?"
        )

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._prefix is not None:
            self._prefix[-1].close()
            self._prefix = None
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
            if not self.decided and self.error is None:
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
                result.error = (
                    f"the receiver answered OK with SHA-256 {verdict.message[:64]!r}, not ours "
                    f"({result.sha256})"
                )
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
        elif self.decided and not self.complete:
            # refused while its body streams, and nothing after it: the rest would be read and
            # dropped, so stop here (RST), as for a lone file refused after its record
            self.finished_at = now
            self.fail(None, linger=True)
        # else: refused while its body streams; the receiver reads and drops the rest

    def _offer(self, item: rec.OfferFor, now: float) -> None:
        if item.index != self.waiting:
            self.fail(TransferRefused(f"an offer for entry {item.index}, not asked"))
            return
        self.last_progress = now
        self.waiting = None
        index = self.sent[item.index]
        if item.offset and self.resume:
            if item.offset <= (self.results[index].bytes or 0):
                self._start_prefix_check(index, item.offset, item.prefix_digest)
                return
            self._changed(index)
        self._start_body_at(index, 0, hashlib.sha256())

    def _start_body_at(self, index: int, offset: int, hasher) -> None:
        """START (offset: where the body begins) and the body from there."""
        self.resumed_bytes += offset
        self.results[index].resumed_from = offset
        self._queue_overhead(rec.encode_start(offset))
        self._begin_body(index, offset, hasher)

    def _changed(self, index: int) -> None:
        path = self.results[index].path
        self.warn(f"{path}: changed since the partial on the receiver: starting over")

    def _start_prefix_check(self, index: int, offset: int, digest: bytes) -> None:
        """Hash our own first `offset` bytes (locally: nothing is sent) to compare them with
        the receiver's partial, in a ReadAhead helper: the loop goes on meanwhile (ACKs,
        timers), and each chunk hashed counts as progress (a prefix of many GB on a slow
        disk takes longer than --timeout). _prefix_step finishes it."""
        hasher = hashlib.sha256()
        reader = ReadAhead(
            self._file, offset, hasher.update, chunk_bytes=READ_CHUNK_BYTES,
            name=self.entries[index].source or "stdin",
            on_chunk=self.handle.driver.wakeup if self.handle.driver else None,
        )
        self._prefix = (index, offset, digest, hasher, reader)

    def _prefix_step(self, now: float) -> bool:
        """Take what the prefix check hashed; True once it is over (the body started)."""
        index, offset, digest, hasher, reader = self._prefix
        while reader.ready():
            try:
                chunk = reader.take()
            except SourceError:  # shorter or unreadable now: start over (the body tells)
                chunk, hasher = None, None
            if chunk is not None:
                self.last_progress = now
                continue
            reader.close()
            self._prefix = None
            if hasher is not None and hasher.digest() == digest:
                self._start_body_at(index, offset, hasher)
            else:
                self._changed(index)
                self._file.seek(0)
                self._start_body_at(index, 0, hashlib.sha256())
            return True
        return False

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
            self.file_bytes_queued += len(chunk)
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
        self.fail(LocalIOError(message), linger=True)
        return False

    def poll(self, now: float) -> None:
        if self.done:
            return
        if not self.established:
            count = self._not_rtcp_datagrams()
            if count >= NOT_RTCP_DATAGRAMS:
                self.fail(self._not_rtcp_error(count))
            return
        conn = self.handle.conn
        self._note_acked(now)
        if self._prefix is not None and not self._prefix_step(now):
            conn.cork = False
            return
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
            return self.closing_since + min(CLOSE_GRACE_S, self.timeout_s)
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
        elif self.refusals:
            what = f"nothing listened at {self.peer_text} within {self.timeout_s:g} s"
        elif count := self._not_rtcp_datagrams():
            self.fail(self._not_rtcp_error(count))
            return
        else:
            what = f"no answer from {self.peer_text} within {self.timeout_s:g} s"
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
    """The connections of one send (--parallel), seen as one by the progress bar and the
    --interval report (rtcp.transfer.report)."""

    def __init__(self, apps: list[TreeSendApp]):
        self.apps = apps
        self.clock = apps[0].clock
        self.started = min(a.started for a in apps)

    @property
    def established(self) -> bool:
        return any(a.established for a in self.apps)

    @property
    def file_bytes_acked(self) -> int:
        """Bytes of files sent by this run and acknowledged."""
        return sum(a.file_bytes_acked for a in self.apps if a.established)

    @property
    def resumed_bytes(self) -> int:
        """Bytes of files the receiver held already (resumed partials)."""
        return sum(a.resumed_bytes for a in self.apps)

    @property
    def file_bytes_done(self) -> int:
        """Bytes of files the receiver holds: acknowledged, or resumed from a partial."""
        return self.file_bytes_acked + self.resumed_bytes

    @property
    def results(self) -> list[FileResult]:
        return [r for a in self.apps for r in a.results]

    @property
    def done(self) -> bool:
        return all(a.done for a in self.apps)

    @property
    def succeeded(self) -> bool:
        return all(a.succeeded for a in self.apps)

    @property
    def finished_at(self) -> float | None:
        """When the last verdict arrived, once every entry has one (the summary's end)."""
        ends = [a.finished_at for a in self.apps]
        return None if None in ends else max(ends)

    @property
    def retransmissions(self) -> int:
        return sum(a.handle.conn.stats.retransmissions for a in self.apps if hasattr(a, "handle"))

    def connection_sample(self) -> tuple[int, int | None, float | None]:
        """(retransmissions, cwnd, SRTT) for an --interval line: retransmissions over every
        connection; the congestion windows summed over the connections still sending (what
        the whole transfer may have in flight; once all are done, their last values) and the
        SRTT the mean of theirs (they share the path)."""
        connected = [a for a in self.apps if hasattr(a, "handle")]
        retx = 0
        for app in connected:
            conn = app.handle.conn
            retx += (conn.refresh_stats() if hasattr(conn, "refresh_stats") else conn.stats).retransmissions
        sending = [a for a in connected if a.established and not a.done]
        if not sending:
            sending = [a for a in connected if a.established]
        cwnd = sum(a.handle.conn.stats.cwnd_bytes for a in sending) if sending else None
        srtts = [a.handle.conn.stats.srtt_s for a in sending]
        srtts = [x for x in srtts if x is not None]
        return retx, cwnd, (sum(srtts) / len(srtts) if srtts else None)


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
    carries each entry's outcome, exit_code and error (RtcpError for local problems before
    anything is sent: an unresolvable host).

    pcap: a rtcp.trace.pcap.PcapWriter (--pcap) that records every datagram of the socket;
    the caller closes it. Tracing goes through config.event_hook.

    The socket is connected to the receiver, so that "nothing listens there" (ICMP port
    unreachable) arrives as ECONNREFUSED and ends the transfer at once (ConnectionRefused,
    exit 3). wait_ready (--wait-ready) waits instead: for an address of this host until a
    socket is bound there, before the first SYN (rtcp.net.ready: nothing is sent meanwhile);
    elsewhere the SYN's retransmissions keep knocking. Both within timeout_s.

    secret: a key or a code (rtcp.core.protection): the transfer is then authenticated and
    encrypted; without one, a receiver that requires a key is still told apart from a
    timeout."""
    driver, addr, peer_text = open_driver(host, port, timeout_s, wait_ready, pcap)
    cfg = make_config(config, timeout_s=timeout_s)
    groups = split_entries(entries, parallel) if parallel > 1 else [entries]
    cap = cfg.max_pacing_rate_bytes_per_s
    if cap and len(groups) > 1:  # --rate caps the whole send: each connection its share
        cfg = replace(cfg, max_pacing_rate_bytes_per_s=max(1, cap // len(groups)))
    # keys made (and the cryptography library loaded) before the clocks start: `seconds`
    # runs from the handshake, for a key as for plaintext
    protections = [ClientProtection(secret, keylog) for _ in groups]
    apps = [
        TreeSendApp(
            group, peer_text=peer_text, timeout_s=timeout_s, clock=driver.clock, stdin=stdin,
            resume=resume, wait_ready=wait_ready,
        )
        for group in groups
    ]
    group = TreeApps(apps)
    handles: list[Handle] = []
    with driver:
        try:
            for app, protection in zip(apps, protections):
                handles.append(driver.connect(addr, cfg, app, protection))
            run_reporting(driver, group, on_progress, progress_interval_s)
        except KeyboardInterrupt:
            # reset every connection, and answer the receivers' challenge ACKs a moment, so
            # that they drop (or keep, for a resume) their partials at once
            for app in apps[: len(handles)]:
                app.fail(RtcpError("interrupted"), linger=True)
            driver.service()
            driver.linger(max(a.linger_seconds() for a in apps[: len(handles)] or apps[:1]))
            raise
        finally:
            for app in apps:
                app.close()
        # flush what the last iteration queued (an RST, the last ACK)
        driver.service()
        lingering = [a.linger_seconds() for a in apps[: len(handles)] if a.linger]
        if lingering:
            driver.linger(max(lingering))
        if on_progress is not None:
            on_progress(group, driver.clock())
        result = _tree_result(entries, apps, handles, peer_text)
        result.driver = stats_dict(driver.stats)
    return result


def lone_result(path: str, tree: TreeResult) -> SendResult:
    """The SendResult (`rtcp send FILE --json`) of a tree of one file."""
    one = tree.results[0]
    result = SendResult(
        file=str(path),
        name=one.path,
        peer=tree.peer,
        bytes=one.bytes or 0,
        resumed_bytes=one.resumed_from,
        sha256=one.sha256,
        verified=one.verified and tree.verified,
        seconds=tree.seconds,
        goodput_bytes_per_s=tree.goodput_bytes_per_s,
        segments_sent=tree.segments_sent,
        retransmissions=tree.retransmissions,
        exit_code=tree.exit_code,
        error=tree.error,
        verdict=one.verdict,
        stats=tree.stats,
        driver=tree.driver,
    )
    srtt = tree.stats.get("srtt_s")
    if srtt:
        result.rtt_ms = round(float(srtt) * 1000.0, 3)
    if result.verified:
        result.verdict = proto.Verdict(proto.Status.OK, one.sha256 or "").describe()
    elif one.error is not None and tree.exit_code == one.exit_code:
        result.error = one.error  # the file's own reason, not "1 of 1 entries not verified"
    return result


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
    result.resumed_bytes = sum(a.resumed_bytes for a in apps)
    if result.seconds > 0:  # the bytes this run carried (a resumed file's rest, not its prefix)
        result.goodput_bytes_per_s = sum(a.file_bytes_acked for a in apps) / result.seconds
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
