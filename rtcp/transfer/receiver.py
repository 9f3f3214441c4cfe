"""The receiving application: one FileReceiver + one IncomingFile per connection, and the
server that accepts concurrent transfers on one Driver.

Per connection: parse the stream; after the header, check the name and create the
temporary (or refuse at once with an early verdict); write and hash the data; after the
trailer, compare the SHA-256, move the file into place, answer the verdict and close. A
connection that dies first (reset, timeout, shutdown) leaves no file and no temporary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import LocalProtocolError
from rtcp.errors import ExitCode
from rtcp.net.driver import App, Driver
from rtcp.transfer import limits as lim
from rtcp.transfer import protocol as proto
from rtcp.transfer import records as rec
from rtcp.transfer import report
from rtcp.transfer.storage import (
    DEFAULT_PARTIAL_MAX_AGE_S,
    DEFAULT_PARTIAL_MAX_BYTES,
    CommitJob,
    FolderCache,
    IncomingFile,
    InFlight,
    OutputDir,
    Refusal,
)
from rtcp.units import format_rate

DEFAULT_IDLE_TIMEOUT_S = 30.0
# After our verdict, the FIN exchange gets this long before the connection is dropped, counted
# again while the verdict is not acknowledged: through heavy loss it may need many
# retransmissions, and the sender waits for it (the connection's user timeout ends a sender
# that went silent).
CLOSE_GRACE_S = 5.0
# A new connection from the same address for a file that a connection is receiving takes it
# over (ends it as its idle timeout would, keeping the partial, and resumes from that) once
# nothing at all has arrived on the old one for this long: a sender killed with SIGKILL or cut
# off by its network, sent again at once. A live sender is heard from well within it: with data
# in flight it retransmits at least every second (ConnectionConfig.max_backoff_rto_s), and it
# ACKs our replies; one we hold back (its window closed by us: it then probes, less and less
# often) is never taken over.
TAKEOVER_SILENCE_S = 2.0

_STATUS_EXIT = {
    proto.Status.OK: ExitCode.OK,
    proto.Status.HASH_MISMATCH: ExitCode.HASH_MISMATCH,
    proto.Status.FILE_EXISTS: ExitCode.FILE_EXISTS,
    proto.Status.IO_ERROR: ExitCode.LOCAL_IO,
    proto.Status.TOO_LARGE: ExitCode.LOCAL_IO,
    proto.Status.BUSY: ExitCode.REFUSED,
    proto.Status.BAD_NAME: ExitCode.REFUSED,
    proto.Status.PROTOCOL_ERROR: ExitCode.REFUSED,
    proto.Status.UNSUPPORTED_VERSION: ExitCode.REFUSED,
}


class Takeover(Enum):
    """What a connection that wants a path in flight on another one does (FileServer)."""

    DONE = "the other connection was ended: the path is free"
    WAIT = "ask again at the given time (the other one may still prove alive)"
    REFUSE = "refused as in flight (a live transfer, another address)"


@dataclass
class ReceiveResult:
    """The outcome of one incoming transfer (what the log line and `recv --once` report)."""

    peer: str
    name: str | None
    size: int | None
    bytes_received: int
    seconds: float
    exit_code: ExitCode
    verified: bool
    reason: str  # "verified", or why not
    sha256: str | None = None
    path: str | None = None
    stats: dict | None = None  # the connection's counters at the end (`rtcp recv --json`)
    # False for one file of a connection that carries many (format version 2): the
    # connection's own result follows, with entries (how many it carried) and failed set
    final: bool = True
    entries: int | None = None
    failed: int = 0
    # the file under way when the connection ended (path, bytes_received, size, kept: its
    # partial was kept for a resume), or None
    cut: dict | None = None

    def log_line(self) -> str:
        if self.entries is not None:
            ok = self.entries - self.failed
            noun = "entry" if self.entries == 1 else "entries"
            what = f"{self.entries} {noun} from {self.peer} in {self.seconds:.2f} s"
            if self.verified:
                return f"received {what}: all {ok} verified"
            counts = f"{ok} verified, {self.failed} failed"
            if self.cut is not None:
                cut = self.cut
                of = f" of {cut['size']}" if cut["size"] is not None else ""
                counts += f"; {cut['path']} cut off at {cut['bytes_received']}{of} bytes"
                if cut["kept"]:
                    counts += " (kept: sending it again resumes it)"
            verb = "failed" if self.failed else "interrupted"
            return f"{verb} {what}: {counts} ({self.reason})"
        name = repr(self.name) if self.name is not None else "(no header)"
        size = f"{self.size} bytes" if self.size is not None else f"{self.bytes_received} bytes"
        rate = ""
        if self.verified and self.seconds > 0:
            rate = f", {format_rate(self.size / self.seconds)}"
        if self.verified:
            return (
                f"received {name} {size} from {self.peer} in {self.seconds:.2f} s{rate}: "
                f"verified sha256 {self.sha256}"
            )
        return f"failed {name} {size} from {self.peer} after {self.seconds:.2f} s: {self.reason}"


def _peer_text(addr: tuple) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

# Received chunks smaller than this on average are joined before they are parsed.
_JOIN_BELOW_BYTES = 16384
# A version 2 stream is parsed this much at a time, the limits checked in between.
FEED_SLICE_BYTES = 64 * 1024
# Replies (verdicts, offers) not yet taken by the connection: above this, the receiver stops
# reading the sender's stream until they drain (a sender that never reads its replies cannot
# make them pile up).
MAX_REPLY_BACKLOG_BYTES = 256 * 1024
# Partials older than --partial-max-age are removed at start and, at most this often, when a
# connection arrives.
PARTIAL_SWEEP_S = 60.0


class ReceiveApp(App):
    """One incoming transfer."""

    def __init__(
        self,
        out: OutputDir,
        peer: tuple,
        *,
        on_finished: Callable[[ReceiveResult], None],
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        budget: lim.ReceiveMemoryBudget | None = None,
        limits: lim.ReceiverLimits | None = None,
        on_limit: Callable[[str, str, str], None] | None = None,
        server: FileServer | None = None,
    ):
        self.out = out
        self.server = server  # where a takeover finds the connection that holds a path
        self.budget = budget
        self.limits = limits or lim.ReceiverLimits()
        self.on_limit = on_limit
        self.source = peer[0]
        self.peer = _peer_text(peer)
        self.on_finished = on_finished
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.parser = proto.FileReceiver()
        self.incoming: IncomingFile | None = None
        self.started = clock()
        self.last_activity = self.started
        self.verdict: proto.Verdict | None = None
        self._verdict_out: memoryview | None = None
        self.verdict_at: float | None = None
        self._close_grace_from: float | None = None
        self.result: ReceiveResult | None = None
        self._outcome: tuple[ExitCode, bool, str] | None = None  # decided, not yet reported
        self._sha256: str | None = None
        self._path: str | None = None
        self._discarding = False
        self._sniff = bytearray()  # the magic and version, until the version is known
        self._sniffed = False
        self.tree: TreeSession | None = None  # format version 2
        self._replies = bytearray()  # version 2 replies not yet taken by the connection
        self._close_after_replies = False
        # slowloris: the header must be complete by header_deadline_s, and every
        # MIN_RATE_INTERVAL_S after it at least min_rate_bytes_per_s x interval must arrive
        self._rate_check_at: float | None = None
        self._bytes_at_check = 0
        self.bytes_in = 0  # stream bytes read from the connection
        self._unparsed: deque = deque()  # read, not parsed yet (version 2: held back)
        self._stream_ended = False  # the sender's FIN arrived
        self._eof_parsed = False  # ... and the parser was told, after the last byte
        self.takeovers = 0  # silent connections this one ended (TAKEOVER_SILENCE_S)

    # --- outcome -----------------------------------------------------------------------

    def _decide(self, code: ExitCode, verified: bool, reason: str) -> None:
        if self._outcome is None:
            self._outcome = (code, verified, reason)

    def _finish(self, now: float) -> None:
        """Report the outcome once; removes any temporary left, returns its memory grant."""
        if self.result is not None:
            return
        if self.budget is not None:
            self.budget.remove(self.handle.conn)
        if self.incoming is not None and not self.incoming.committed:
            self.incoming.abort()
        code, verified, reason = self._outcome or (ExitCode.FAILURE, False, "unknown")
        if self.tree is not None:
            self.result = self.tree.finish(code, verified, reason, now)
            self.on_finished(self.result)
            return
        header = self.parser.header
        end = self.verdict_at if self.verdict_at is not None else now
        self.result = ReceiveResult(
            peer=self.peer,
            name=header.name if header else None,
            size=header.size if header else None,
            bytes_received=self.incoming.bytes_written if self.incoming else 0,
            seconds=max(0.0, end - self.started),
            exit_code=code,
            verified=verified,
            reason=reason,
            sha256=self._sha256,
            path=self._path,
            stats=report.connection_stats(self.handle) | {"takeovers": self.takeovers},
        )
        self.on_finished(self.result)

    # --- takeover of a silent connection -----------------------------------------------

    @property
    def receiving(self) -> str | None:
        """The path whose bytes this connection is writing now (its name in the output
        folder's in_flight), or None."""
        if self.result is not None:
            return None
        if self.tree is not None:
            current = self.tree.current
            return current.name if current is not None and not current.committed else None
        incoming = self.incoming
        if incoming is None or incoming.committed or self.verdict is not None:
            return None
        return incoming.name

    def holding_back(self) -> bool:
        """We are not reading this sender's stream now: its silence says nothing about it."""
        return self._held_back() or bool(self._unparsed) or bool(self.handle.conn.readable)

    def take_over(
        self, path: str, now: float, asked_at: float | None
    ) -> tuple[Takeover, float | None]:
        """Another connection holds path: ask the server to end it (asked_at: when this
        connection first asked, None when it cannot wait). (decision, when to ask again)."""
        if self.server is None:
            return Takeover.REFUSE, None
        return self.server.take_over(self, path, now, asked_at)

    def taken_over(self, by: str, silence_s: float, now: float) -> None:
        """A new connection from this sender's address wants the file this one is receiving,
        and nothing came from this sender for silence_s: end it as its idle timeout would (RST,
        the partial kept, reported as interrupted)."""
        self._decide(
            ExitCode.TIMEOUT,
            False,
            f"taken over by a new connection from the same address ({by}): nothing from "
            f"this sender for {silence_s:.1f} s",
        )
        self.abort(now)

    def _answer(self, verdict: proto.Verdict, now: float) -> None:
        """Send our verdict once, then close our direction (the sender may still be sending
        after an early refusal: its bytes are read and dropped until it stops)."""
        if self.verdict is not None:
            return
        self.verdict = verdict
        self.verdict_at = self._close_grace_from = now
        if verdict.ok:
            self._decide(ExitCode.OK, True, "verified")
        else:
            self._decide(
                _STATUS_EXIT.get(verdict.status, ExitCode.REFUSED), False, verdict.describe()
            )
        self._verdict_out = memoryview(verdict.encode())
        self._push_verdict()

    def _push_verdict(self) -> None:
        conn = self.handle.conn
        if conn.is_closed:
            return
        if self._replies:
            try:
                n = conn.send(self._replies)
            except LocalProtocolError:
                self._replies.clear()
                return
            del self._replies[:n]
            if self._replies:
                return
        if self._verdict_out is None:
            if self._close_after_replies and not self._replies:
                conn.close()  # after END: every reply is out (they may have left long ago)
            return
        try:
            n = conn.send(self._verdict_out)
        except LocalProtocolError:  # the core refuses sends in this state: nothing to say
            self._verdict_out = None
            return
        rest = self._verdict_out[n:]
        if len(rest):
            self._verdict_out = rest
            return
        self._verdict_out = None
        conn.close()

    # --- App ---------------------------------------------------------------------------

    def connection_made(self, handle) -> None:
        super().connection_made(handle)
        if self.budget is not None:
            self.budget.add(handle.conn)

    def event_received(self, event, now: float) -> None:
        if isinstance(event, ev.DataReceived):
            self.last_activity = now
            self._read(now)
        elif isinstance(event, ev.StreamEnded):
            self.last_activity = now
            self._stream_ended = True
            self._read(now)
            self._end_of_stream(now)
        elif isinstance(event, ev.ConnectionClosed):
            if self._outcome is None:
                if event.reason == "reset":
                    self._decide(ExitCode.RESET, False, "reset by the sender")
                elif event.reason == "timeout":
                    self._decide(ExitCode.TIMEOUT, False, "the sender stopped answering")
                elif event.reason == "aborted":
                    self._decide(ExitCode.RESET, False, "aborted")
                else:
                    self._decide(
                        ExitCode.REFUSED,
                        False,
                        f"connection {event.reason} before the end of the transfer",
                    )
            self._finish(now)

    def _read(self, now: float) -> None:
        conn = self.handle.conn
        if self._unparsed:
            self._feed_tree(now)
        if self._held_back() or self._unparsed:
            return  # poll() reads on once the replies drained and the commits caught up
        # The chunks as they arrived: the parser slices them (memoryviews) for the file and the
        # hash, so no byte is copied on the way from the connection to the disk. Small ones
        # (1400-byte datagrams) are joined first: one copy is cheaper than a parser step, a
        # write and a hash update for each.
        total = conn.readable
        self.bytes_in += total
        chunks = conn.read_chunks()
        if len(chunks) > 1 and total < _JOIN_BELOW_BYTES * len(chunks):
            chunks = [b"".join(chunks)]
        for data in chunks:
            if self._discarding:
                continue
            if not self._sniffed:
                data = self._sniff_version(data, now)
                if data is None:
                    continue
            if self.tree is not None:
                self._unparsed.append(data)
            else:
                self._handle(self.parser.feed(data), now)
        if self._unparsed:
            self._feed_tree(now)

    def _feed_tree(self, now: float) -> None:
        """Parse what was read, FEED_SLICE_BYTES at a time, while nothing holds us back: a
        read may bring a whole window of small files, and each waiting file costs memory and
        descriptors until it is committed."""
        unparsed = self._unparsed
        while unparsed and not self._discarding and not self._held_back():
            data = unparsed[0]
            if len(data) > FEED_SLICE_BYTES:
                view = memoryview(data)
                data, unparsed[0] = view[:FEED_SLICE_BYTES], view[FEED_SLICE_BYTES:]
            else:
                unparsed.popleft()
            self.tree.handle(self.tree.parser.feed(data), now)
        if self._discarding:
            unparsed.clear()

    def _end_of_stream(self, now: float) -> None:
        """The sender's stream ended: tell the parser once every byte of it was parsed (the
        reading may be held back)."""
        if (
            not self._stream_ended or self._eof_parsed or self.handle.conn.readable
            or self._unparsed
        ):
            return
        self._eof_parsed = True
        if self.tree is not None:
            if not self._discarding:
                self.tree.handle(self.tree.parser.end_of_stream(), now)
            return
        if self._sniff and not self._sniffed:
            self._sniffed = True
            self._handle(self.parser.feed(bytes(self._sniff)), now)
        if not self._discarding:
            self._handle(self.parser.end_of_stream(), now)
        if self.verdict is None:  # cannot happen: end_of_stream fails or we answered
            self._answer(proto.Verdict(proto.Status.PROTOCOL_ERROR, "stream ended"), now)

    def _busy_here(self) -> bool:
        """Files of this connection wait for their hash or their commit, and the sender is
        done or held back by them (a bounded wait: a prefix is hashed once, a commit ends)."""
        tree = self.tree
        return tree is not None and bool(tree.waiting) and (tree.ended or self._held_back())

    def _sender_checks_prefix(self, now: float) -> bool:
        """We offered a prefix and the sender has not answered: it reads and hashes its own
        copy first, for as long as that takes at PREFIX_CHECK_FLOOR_BYTES_PER_S."""
        answer_by = self.tree.offer_answer_by if self.tree is not None else None
        return answer_by is not None and now < answer_by

    def _held_back(self) -> bool:
        """Too much waiting on our side (replies the sender has not taken, files not yet
        committed): leave the sender's bytes in the connection, whose window then closes."""
        if self._discarding:
            return False
        return (
            len(self._replies) > MAX_REPLY_BACKLOG_BYTES
            or self.out.commit_backlog_full
        )

    def wake(self) -> None:
        """Wake the driver's loop (from a writer or commit thread): a file is ready."""
        driver = getattr(self.handle, "driver", None)
        if driver is not None:
            driver.wakeup()

    def _sniff_version(self, data, now: float):
        """Gather the magic and the version byte; version 2 starts a TreeSession. Returns
        the bytes to parse (None: not enough yet)."""
        self._sniff += data
        head = bytes(self._sniff[: len(proto.MAGIC) + 1])
        if len(head) <= len(proto.MAGIC) and proto.MAGIC.startswith(head):
            return None
        self._sniffed = True
        data = bytes(self._sniff)
        self._sniff = bytearray()
        if head[: len(proto.MAGIC)] == proto.MAGIC and head[-1] == rec.VERSION:
            self.tree = TreeSession(self, now)
            return data[len(head) :]
        return data

    @property
    def header_seen(self) -> bool:
        if self.tree is not None:
            return self.tree.parser.entries > 0 or self.tree.parser.finished
        return self.parser.header is not None

    def _handle(self, items, now: float) -> None:
        for item in items:
            if self._discarding:
                return
            if isinstance(item, proto.DataReceived):
                try:
                    self.incoming.write(item.data)
                except Refusal as exc:
                    self._refuse(exc.verdict, now)
            elif isinstance(item, proto.HeaderReceived):
                self._rate_check_at = now + lim.MIN_RATE_INTERVAL_S
                self._bytes_at_check = self.bytes_in
                largest = self.limits.max_size_bytes
                if largest is not None and item.size > largest:
                    if self.on_limit is not None:
                        self.on_limit(lim.MAX_SIZE, self.peer, "refused")
                    self._refuse(
                        proto.Verdict(
                            proto.Status.TOO_LARGE,
                            f"{item.size} bytes, more than the receiver's limit "
                            f"'{lim.MAX_SIZE}' of {largest} bytes (--max-size)",
                        ),
                        now,
                    )
                    continue
                try:
                    self.incoming = self._open_v1(item, now)
                except Refusal as exc:
                    self._refuse(exc.verdict, now)
            elif isinstance(item, proto.TrailerReceived):
                # ACK the end of the stream before the fsync, which can take longer than the
                # sender waits before it probes for a lost tail (a needless retransmission)
                self.handle.conn.send_ack_now()
                self.handle.flush(now)
                commit = self.incoming.finish(item.digest)
                self._sha256 = commit.sha256
                self._path = str(commit.path) if commit.path is not None else None
                self._answer(commit.verdict, now)
                self._discarding = not commit.verdict.ok
            elif isinstance(item, proto.ProtocolFailure):
                self._refuse(proto.Verdict(item.status, item.message), now)

    def _open_v1(self, item: proto.HeaderReceived, now: float) -> IncomingFile:
        """The temporary of a version 1 header; a silent connection that holds the name is
        taken over at once (version 1 cannot wait: its data follows the header). Raises
        Refusal."""
        try:
            return self.out.open(item.name, item.size)
        except InFlight as exc:
            if self.take_over(exc.path, now, None)[0] is not Takeover.DONE:
                raise
        return self.out.open(item.name, item.size)

    def _refuse(self, verdict: proto.Verdict, now: float) -> None:
        if self.incoming is not None:
            self.incoming.abort()
        self._discarding = True
        self._answer(verdict, now)

    def poll(self, now: float) -> None:
        if self.budget is not None:
            self.budget.maybe_regrant(now)
        if self.tree is not None and self.result is None:
            self.tree.advance(now)
        if self._verdict_out is not None or self._replies:
            self._push_verdict()
        if self.result is None and not self._held_back() and (
            self._unparsed or self.handle.conn.readable
        ):
            self._read(now)
            self._end_of_stream(now)

    def deadline(self) -> float | None:
        if self.result is not None:
            return None
        if self._close_grace_from is not None:
            return self._close_grace_from + CLOSE_GRACE_S
        deadline = self.last_activity + self.idle_timeout_s
        if not self.header_seen:
            deadline = min(deadline, self.started + self.limits.header_deadline_s)
        elif self._rate_check_at is not None:
            deadline = min(deadline, self._rate_check_at)
        if self.tree is not None and self.tree.pending_until is not None:
            deadline = min(deadline, self.tree.pending_until)  # poll() decides it then
        return deadline

    def on_deadline(self, now: float) -> None:
        if self.result is not None:
            return
        conn = self.handle.conn
        if self._close_grace_from is not None and conn.unacknowledged_bytes and not conn.is_closed:
            self._close_grace_from = now  # the verdict is still on its way
            return
        if self.verdict_at is None:
            if self._busy_here() or self._sender_checks_prefix(now):
                # we are the slow side, or the sender reads its own copy of the prefix we
                # offered: it is neither idle nor slow
                self.last_activity = now
                if self._rate_check_at is not None:
                    self._rate_check_at = now + lim.MIN_RATE_INTERVAL_S
                    self._bytes_at_check = self.bytes_in
                return
            if not self.header_seen and now >= self.started + self.limits.header_deadline_s:
                self._cut_off(
                    lim.HEADER_DEADLINE,
                    f"no complete header within {self.limits.header_deadline_s:g} s",
                    now,
                )
                return
            if self._rate_check_at is not None and now >= self._rate_check_at:
                moved = self.bytes_in - self._bytes_at_check
                floor = self.limits.min_rate_bytes_per_s * lim.MIN_RATE_INTERVAL_S
                if moved < floor:
                    self._cut_off(
                        lim.MIN_RATE,
                        f"{moved} bytes in {lim.MIN_RATE_INTERVAL_S:g} s, below the minimum "
                        f"rate of {self.limits.min_rate_bytes_per_s} bytes/s",
                        now,
                    )
                    return
                self._rate_check_at = now + lim.MIN_RATE_INTERVAL_S
                self._bytes_at_check = self.bytes_in
            if now < self.last_activity + self.idle_timeout_s:
                return
            self._decide(
                ExitCode.TIMEOUT, False, f"nothing from the sender for {self.idle_timeout_s:g} s"
            )
        self.abort(now)

    def _cut_off(self, limit: str, why: str, now: float) -> None:
        """A limit ends this transfer: RST, the temporary removed, the limit named."""
        if self.on_limit is not None:
            self.on_limit(limit, self.peer, "cut off")
        self._decide(ExitCode.TIMEOUT, False, f"cut off by the limit '{limit}': {why}")
        self.abort(now)

    def abort(self, now: float, reason: str | None = None) -> None:
        """Drop the transfer: RST to the sender, remove the temporary, report."""
        if reason is not None:
            self._decide(ExitCode.RESET, False, reason)
        conn = self.handle.conn
        if not conn.is_closed:
            conn.abort()
        self._finish(now)


class TreeSession:
    """Format version 2 on one connection (rtcp.transfer.records): many files and folders,
    each checked, stored and answered on its own. A refused entry (a bad path, an existing
    file) gets its VERDICT and the rest of the tree goes on; a broken stream ends the
    connection with a version 1 verdict, as in version 1."""

    def __init__(self, app: ReceiveApp, now: float):
        self.app = app
        self.parser = rec.TreeReceiver()
        self.current: IncomingFile | None = None
        self.current_index = -1
        self.current_path = ""
        self.current_size: int | None = None
        self.current_started = now
        self.skipping = False  # the current file's body is read and dropped (refused)
        self.current_mtime_ns = 0
        self.current_asked = False  # the current file asked for an offer: it may resume
        self.offer: tuple[int, bytes] | None = None  # (offset, prefix SHA-256) offered
        self.offer_answer_by: float | None = None  # the sender checks our offer until then
        # a FILE that asked for an offer, for a path a silent-looking connection from the same
        # address holds: (the record, when it first asked), decided by poll() from pending_until
        self.pending: tuple[rec.FileStarted, float] | None = None
        self.pending_until: float | None = None
        self.waiting: list[_Waiting] = []  # files ended, verdict not out yet (in order)
        self.folders: list[tuple[str, int]] = []  # (path, mtime) of the folders made
        self.ended = False  # END arrived: close once every file's verdict is out
        self.folders_open = FolderCache()  # the folders this connection's files go into
        self.resumed: list[IncomingFile] = []  # files continued from a partial
        self.resumed_bytes = 0  # bytes of partials kept instead of received again
        self.entries = 0
        self.results: list[ReceiveResult] = []  # the failed ones
        self.first_failure: ReceiveResult | None = None
        # the first entry's result, held until a second record comes: a connection of one
        # file (`rtcp send FILE`) is reported by that file's result alone (finish)
        self.held: ReceiveResult | None = None

    # --- replies and per-entry results --------------------------------------------------

    def _reply(self, data: bytes) -> None:
        self.app._replies += data

    def _entry_done(
        self, index: int, path: str, verdict: proto.Verdict, now: float, *, size=None,
        received: int = 0, sha256: str | None = None, stored: str | None = None,
        report: bool = True, started: float | None = None,
    ) -> None:
        self._reply(rec.encode_verdict(index, verdict))
        self.entries += 1
        if not report and verdict.ok:
            return
        code = ExitCode.OK if verdict.ok else _STATUS_EXIT.get(verdict.status, ExitCode.REFUSED)
        result = ReceiveResult(
            peer=self.app.peer,
            name=path,
            size=size,
            bytes_received=received,
            seconds=max(0.0, now - (self.current_started if started is None else started)),
            exit_code=code,
            verified=verdict.ok,
            reason="verified" if verdict.ok else verdict.describe(),
            sha256=sha256,
            path=stored,
            final=False,
        )
        if not verdict.ok:
            self.results.append(result)
            if self.first_failure is None:
                self.first_failure = result
        if self.entries == 1:
            self.held = result
        else:
            self._release_held()
            self.app.on_finished(result)

    def _release_held(self) -> None:
        """More than one entry: the first one's result is reported on its own after all."""
        held, self.held = self.held, None
        if held is not None:
            self.app.on_finished(held)

    # --- events -------------------------------------------------------------------------

    def handle(self, items, now: float) -> None:
        app = self.app
        for item in items:
            if app._discarding:
                return
            if isinstance(item, proto.DataReceived):
                if self.skipping or self.current is None:
                    continue
                try:
                    self.current.write(item.data)
                except Refusal as exc:
                    self._refuse_current(exc.verdict, now)
            elif isinstance(item, rec.FileStarted):
                self._file_started(item, now)
            elif isinstance(item, rec.BodyStarted):
                self._body_started(item, now)
            elif isinstance(item, rec.FileEnded):
                self._file_ended(item, now)
            elif isinstance(item, rec.DirReceived):
                self._release_held()
                self.current_started = now
                self._first_record(now)
                if item.bad_path is not None:
                    verdict = proto.Verdict(proto.Status.BAD_NAME, f"{item.path}: {item.bad_path}")
                else:
                    try:
                        app.out.make_dir(item.path)
                        verdict = proto.Verdict(proto.Status.OK, "")
                        self.folders.append((item.path, item.mtime_ns))
                    except Refusal as exc:
                        verdict = exc.verdict
                self._entry_done(item.index, item.path + "/", verdict, now, report=False)
            elif isinstance(item, rec.StreamFinished):
                self._stream_finished(now)
            elif isinstance(item, proto.ProtocolFailure):
                self._abort_current(keep=False)
                app._refuse(proto.Verdict(item.status, item.message), now)

    def _first_record(self, now: float) -> None:
        app = self.app
        if app._rate_check_at is None:
            app._rate_check_at = now + lim.MIN_RATE_INTERVAL_S
            app._bytes_at_check = app.bytes_in

    def _file_started(self, item: rec.FileStarted, now: float) -> None:
        app = self.app
        self._release_held()
        self._first_record(now)
        self.current_index, self.current_path, self.current_size = item.index, item.path, item.size
        self.current_started = now
        self.current, self.skipping, self.offer = None, False, None
        self.offer_answer_by = None
        self.current_mtime_ns, self.current_asked = item.mtime_ns, item.ask_offer
        refusal: proto.Verdict | None = None
        largest = app.limits.max_size_bytes
        if item.bad_path is not None:
            refusal = proto.Verdict(proto.Status.BAD_NAME, f"{item.path}: {item.bad_path}")
        elif largest is not None and item.size is not None and item.size > largest:
            if app.on_limit is not None:
                app.on_limit(lim.MAX_SIZE, app.peer, "refused")
            refusal = proto.Verdict(
                proto.Status.TOO_LARGE,
                f"{item.size} bytes, more than the receiver's limit '{lim.MAX_SIZE}' of "
                f"{largest} bytes (--max-size)",
            )
        else:
            refusal = self._open_started(item, now, now if item.ask_offer else None)
            if refusal is _WAITING:
                return
        self._answer_started(item, refusal, now)

    def _open_started(self, item: rec.FileStarted, now: float, asked_at: float | None):
        """Open the file of a FILE record (only check it when it asks for an offer): None, the
        refusal's verdict, or _WAITING (pending: another connection from the same address
        holds the path and has been silent, but not for long enough yet). asked_at: when this
        record first asked (None: it cannot wait, its data follows)."""
        out = self.app.out

        def open_it() -> None:
            self.current = out.open_relative(
                item.path, item.size, check_only=item.ask_offer, folders=self.folders_open
            )

        try:
            open_it()
            return None
        except InFlight as exc:
            decision, until = self.app.take_over(exc.path, now, asked_at)
            if decision is Takeover.WAIT:
                self.pending, self.pending_until = (item, asked_at), until
                return _WAITING
            if decision is Takeover.REFUSE:
                return exc.verdict
        except Refusal as exc:
            return exc.verdict
        try:  # taken over: the path is free now
            open_it()
        except Refusal as exc:
            return exc.verdict
        return None

    def _decide_pending(self, now: float) -> None:
        """A FILE waiting for a takeover: ask again (the other connection may have ended,
        been heard from, or stayed silent long enough)."""
        item, asked_at = self.pending
        self.pending = self.pending_until = None
        if self.app._discarding:  # this connection failed meanwhile
            return
        refusal = self._open_started(item, now, asked_at)
        if refusal is not _WAITING:
            self._answer_started(item, refusal, now)

    def _answer_started(
        self, item: rec.FileStarted, refusal: proto.Verdict | None, now: float
    ) -> None:
        """Refuse a FILE record, or go on with it: an OFFER if it asked for one."""
        app = self.app
        if refusal is not None:
            self._entry_done(item.index, item.path, refusal, now, size=item.size)
            if item.ask_offer:
                self.handle(self.parser.skip(), now)
            else:
                self.skipping = True
            return
        if item.ask_offer:
            partial = app.out.find_partial(item.path, item.size, item.mtime_ns)
            if partial is None:
                self._reply(rec.encode_offer(item.index, 0, bytes(proto.DIGEST_BYTES)))
            else:
                self.offer = partial
                self.offer_answer_by = now + partial[0] / lim.PREFIX_CHECK_FLOOR_BYTES_PER_S
                self._reply(rec.encode_offer(item.index, *partial))
            self.handle(self.parser.accept(), now)

    def _body_started(self, item: rec.BodyStarted, now: float) -> None:
        """START after our OFFER: from the offered offset (resume) or from 0 (fresh)."""
        self.offer_answer_by = None
        offered = self.offer[0] if self.offer is not None else 0
        if item.offset not in (0, offered):
            self.app._refuse(
                proto.Verdict(proto.Status.PROTOCOL_ERROR, "START at neither 0 nor the offer"), now
            )
            return
        out = self.app.out
        resume = self.offer if item.offset and self.offer is not None else None
        if resume is None and self.offer is not None:
            out.drop_partial(self.current_path)  # the sender's file changed, or --no-resume
        try:
            self.current = out.open_relative(
                self.current_path, self.current_size, resume=resume, folders=self.folders_open
            )
        except Refusal as exc:
            self._refuse_current(exc.verdict, now)
            return
        if resume is not None:
            self.resumed.append(self.current)
            self.resumed_bytes += resume[0]

    def _refuse_current(self, verdict: proto.Verdict, now: float) -> None:
        self._abort_current(keep=False)
        self.skipping = True
        self._entry_done(
            self.current_index, self.current_path, verdict, now, size=self.current_size
        )

    def _abort_current(self, *, keep: bool = False) -> bool:
        """Drop the current file; keep: an interruption, keep its data for a resume (files
        that asked for an offer only). True when a partial was kept."""
        current, self.current = self.current, None
        if current is None or current.committed:
            return False
        if keep and self.current_asked and current.keep_partial(self.current_mtime_ns):
            return True
        current.abort()
        return False

    def _file_ended(self, item: rec.FileEnded, now: float) -> None:
        if self.skipping or self.current is None:
            self.skipping = False
            return
        incoming, self.current = self.current, None
        incoming.on_ready = self.app.wake
        incoming.end(item.digest, item.size)
        incoming.count_waiting()
        waiting = _Waiting(
            item.index, self.current_path, incoming, self.current_started, self.current_mtime_ns
        )
        if not self._step(waiting, now):
            self.waiting.append(waiting)

    def advance(self, now: float) -> None:
        """Move the files that ended on (poll): checked once their writer is done, then
        handed to the group commit, then answered once committed (VERDICTs may leave out of
        order: each names its entry). After END, close once all are answered. A FILE waiting
        for a takeover is decided."""
        if self.pending is not None:
            self._decide_pending(now)
        if self.waiting:
            self.waiting = [w for w in self.waiting if not self._step(w, now)]
        if self.ended and not self.waiting and self.app._outcome is None:
            self._stream_finished(now)

    def _step(self, waiting: _Waiting, now: float) -> bool:
        """One file's next step, if it can take it now; True once it is answered."""
        incoming = waiting.incoming
        if waiting.job is None:
            if not incoming.ready:
                return False
            commit = incoming.check()
            if commit is None:
                out = self.app.out
                mtime = waiting.mtime_ns if out.keep_times else None
                waiting.job = CommitJob(incoming, mtime, notify=self.app.wake)
                out.committer.submit(waiting.job)
                return False
        elif not waiting.job.done:
            return False
        else:
            commit = waiting.job.result
        self._entry_done(
            waiting.index, waiting.path, commit.verdict, now, size=incoming.size,
            received=incoming.bytes_written, sha256=commit.sha256,
            stored=str(commit.path) if commit.path is not None else None,
            started=waiting.started,
        )
        return True

    def _set_folder_times(self) -> None:
        """The sender's mtime on each folder of this connection, deepest first, once its
        content is in place (creating a file in a folder changes its mtime)."""
        out = self.app.out
        for path, mtime_ns in sorted(self.folders, key=lambda f: -f[0].count("/")):
            try:
                fd = out.open_folder(path)
            except Refusal:
                continue
            try:
                os.utime(fd, ns=(time.time_ns(), mtime_ns))
            except OSError:
                pass
            finally:
                os.close(fd)

    def _stream_finished(self, now: float) -> None:
        app = self.app
        if self.waiting:
            self.ended = True  # advance() comes back here once every file is answered
            app._rate_check_at = None  # the sender has sent all: it waits, it is not slow
            return
        if app.out.keep_times:
            self._set_folder_times()
        app.verdict_at = app._close_grace_from = now
        if self.first_failure is None:
            app._decide(ExitCode.OK, True, "verified")
        else:
            first = self.first_failure
            app._decide(first.exit_code, False, f"first failure: {first.name}: {first.reason}")
        app._close_after_replies = True
        app._push_verdict()

    def finish(self, code: ExitCode, verified: bool, reason: str, now: float) -> ReceiveResult:
        """The connection's own result, once it is over (the files' results came before).
        Files still being checked are dropped; those in the group commit are committed (their
        verdicts cannot leave any more)."""
        written = self.current.bytes_written if self.current is not None else 0
        under_way = self.current is not None and not self.current.committed
        kept = self._abort_current(keep=not verified)
        for waiting in self.waiting:
            if waiting.job is None:
                waiting.incoming.abort()
        self.waiting = []
        self.folders_open.close()
        app = self.app
        stats = report.connection_stats(app.handle)
        stats["partials_kept"] = int(kept)
        stats["resumed_files"] = len(self.resumed)
        stats["resumed_bytes"] = self.resumed_bytes
        stats["prefix_bytes_hashed"] = sum(f.prefix_bytes_hashed for f in self.resumed)
        stats["takeovers"] = app.takeovers
        if not self.parser.finished and verified:
            code, verified = ExitCode.FAILURE, False
        end = app.verdict_at if app.verdict_at is not None else now
        lone = self._lone_file_result(code, verified, reason, now, written, stats)
        if lone is not None:
            return lone
        self._release_held()
        return ReceiveResult(
            peer=app.peer,
            name=None,
            size=None,
            bytes_received=app.bytes_in,
            seconds=max(0.0, end - app.started),
            exit_code=code,
            verified=verified,
            reason=reason,
            stats=stats,
            entries=self.entries,
            failed=len(self.results),
            cut=(
                {"path": self.current_path, "bytes_received": written,
                 "size": self.current_size, "kept": kept}
                if under_way and not verified else None
            ),
        )


    def _lone_file_result(
        self,
        code: ExitCode,
        verified: bool,
        reason: str,
        now: float,
        written: int,
        stats: dict,
    ) -> ReceiveResult | None:
        """A connection that carried one file, answered or interrupted (`rtcp send FILE`):
        its result is that file's, final, with the connection's counters and, when the
        connection failed after the file's verdict, the connection's outcome."""
        app = self.app
        held = self.held
        if held is not None and not held.name.endswith("/"):
            self.held = None
            if held.verified and not verified:
                held.exit_code, held.verified, held.reason = code, False, reason
            held.final, held.stats = True, stats
            return held
        if self.entries == 0 and self.current_index == 0 and not verified:  # interrupted
            return ReceiveResult(
                peer=app.peer,
                name=self.current_path,
                size=self.current_size,
                bytes_received=written,
                seconds=max(0.0, now - app.started),
                exit_code=code,
                verified=False,
                reason=reason,
                stats=stats,
            )
        return None


_WAITING = object()  # TreeSession._open_started: the FILE waits for a takeover decision


@dataclass(eq=False)
class _Waiting:
    """A file whose last byte arrived: its check, then its commit (job), then its verdict."""

    index: int
    path: str
    incoming: IncomingFile
    started: float
    mtime_ns: int
    job: CommitJob | None = None


class RefusingApp(App):
    """A connection a limit refuses: it gets a BUSY verdict that names the limit (the sender
    reports it, exit 8) instead of a bare RST; whatever the sender sent meanwhile is read and
    dropped, its window is shrunk to the least, and it is gone within CLOSE_GRACE_S."""

    REFUSING_WINDOW_BYTES = 1

    def __init__(self, message: str):
        self.message = message
        self.until: float | None = None

    def connection_made(self, handle) -> None:
        super().connection_made(handle)
        conn = handle.conn
        conn.config.receive_buffer_bytes = self.REFUSING_WINDOW_BYTES
        conn.send(proto.Verdict(proto.Status.BUSY, self.message).encode())
        conn.close()

    def event_received(self, event, now: float) -> None:
        if self.until is None:
            self.until = now + CLOSE_GRACE_S
        if isinstance(event, ev.DataReceived | ev.StreamEnded):
            self.handle.conn.read_chunks()

    def deadline(self) -> float | None:
        return self.until

    def on_deadline(self, now: float) -> None:
        self.until = None
        if not self.handle.conn.is_closed:
            self.handle.conn.abort()


def _heap_trimmer() -> Callable[[], None]:
    """glibc's malloc_trim: give freed heap memory back to the system when a transfer ends
    (without it, the RSS that peers' buffers raised stays raised). A no-op elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


_trim_heap = _heap_trimmer()


class FileServer:
    """Accepts transfers on a driver; calls on_result(ReceiveResult) for each one finished.

    Its limits (limits.ReceiverLimits) bound what peers can make it hold: connections,
    receive memory (each connection's window is its share of the budget), and the time a
    transfer may take to send its header or spend below the minimum rate."""

    def __init__(
        self,
        driver: Driver,
        out: OutputDir,
        *,
        config: ConnectionConfig | None = None,
        on_result: Callable[[ReceiveResult], None] | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        limits: lim.ReceiverLimits | None = None,
        on_refusal: Callable[[str, str, str], None] | None = None,
        partial_max_age_s: float = DEFAULT_PARTIAL_MAX_AGE_S,
        partial_max_bytes: int = DEFAULT_PARTIAL_MAX_BYTES,
    ):
        self.driver = driver
        self.partial_max_age_s = partial_max_age_s
        self.partial_max_bytes = partial_max_bytes
        self._partials_swept_at: float | None = None
        self.out = out
        self.config = config or ConnectionConfig()
        self.on_result = on_result
        self.on_refusal = on_refusal
        self.idle_timeout_s = idle_timeout_s
        self.limits = limits or lim.ReceiverLimits()
        self.counters = lim.LimitCounters()
        self.budget = lim.ReceiveMemoryBudget(self.limits.max_memory_bytes)
        self.results: list[ReceiveResult] = []
        self.apps: list[ReceiveApp] = []
        # each connection gets its own copy of the config: its window is its memory grant
        driver.listen(lambda: replace(self.config), self._accept)

    def _refuse(self, limit: str, peer: tuple, value) -> RefusingApp:
        self._limit_hit(limit, _peer_text(peer), "refused")
        return RefusingApp(f"limit '{limit}' ({value}) reached")

    def _limit_hit(self, limit: str, peer: str, action: str) -> None:
        self.counters.hit(limit)
        if self.on_refusal is not None:
            self.on_refusal(limit, peer, action)

    def _accept(self, peer: tuple) -> App:
        self.apps = [a for a in self.apps if a.result is None]
        now = self.driver.clock()
        if self._partials_swept_at is None or now - self._partials_swept_at >= PARTIAL_SWEEP_S:
            self._partials_swept_at = now
            self.sweep_partials()
        limits = self.limits
        if len(self.apps) >= limits.max_connections:
            return self._refuse(lim.CONNECTIONS, peer, limits.max_connections)
        if not self.budget.fits_another():
            return self._refuse(lim.MEMORY, peer, f"{limits.max_memory_bytes} bytes")
        if sum(a.source == peer[0] for a in self.apps) >= limits.max_per_source:
            return self._refuse(lim.PER_SOURCE, peer, limits.max_per_source)
        app = ReceiveApp(
            self.out,
            peer,
            on_finished=self._finished,
            idle_timeout_s=self.idle_timeout_s,
            clock=self.driver.clock,
            budget=self.budget,
            limits=self.limits,
            on_limit=self._limit_hit,
            server=self,
        )
        self.apps.append(app)
        return app

    def take_over(
        self, app: ReceiveApp, path: str, now: float, asked_at: float | None
    ) -> tuple[Takeover, float | None]:
        """app wants path, which another connection is receiving. That one is ended (DONE)
        when it comes from the same IP address, we are not holding it back, and nothing has
        arrived on it for TAKEOVER_SILENCE_S; while it is silent for less, app may WAIT
        (asked_at: since when it asks) until then, unless it was heard from since it asked.
        Otherwise, or for a path no connection is writing (its file is being committed):
        REFUSE, as in flight. Returns (decision, when to ask again)."""
        holder = next(
            (a for a in self.apps if a is not app and a.receiving == path), None
        )
        if holder is None or holder.source != app.source or holder.holding_back():
            return Takeover.REFUSE, None
        heard = holder.handle.conn.last_heard
        until = heard + TAKEOVER_SILENCE_S
        if now >= until:  # (not now - heard: the same sum as the deadline WAIT returns)
            self.counters[lim.TAKEOVERS] += 1
            app.takeovers += 1
            holder.taken_over(app.peer, now - heard, now)
            return Takeover.DONE, None
        if asked_at is not None and heard <= asked_at:
            return Takeover.WAIT, until
        return Takeover.REFUSE, None

    def sweep_partials(self) -> None:
        """Remove the partials beyond --partial-max-age, MAX_PARTIALS or --partial-max-bytes
        (the oldest first), and count them."""
        removed, nbytes = self.out.remove_old_partials(
            self.partial_max_age_s, time.time(), self.partial_max_bytes
        )
        self.counters[lim.PARTIALS_REMOVED] += removed
        self.counters[lim.PARTIAL_BYTES_REMOVED] += nbytes

    def _finished(self, result: ReceiveResult) -> None:
        self.results.append(result)
        if result.final:
            stats = result.stats or {}
            self.counters[lim.PREFIX_BYTES_HASHED] += stats.get("prefix_bytes_hashed", 0)
            if stats.get("partials_kept"):
                self.sweep_partials()  # the partials just kept count against the bounds now
            _trim_heap()  # a connection's buffers were freed (not after each file of a tree)
        if self.on_result is not None:
            self.on_result(result)

    def limit_report(self) -> str:
        """The counters of every limit hit and defence used, nonzero ones only, in one line
        ("" when none): printed by `rtcp recv` when it stops."""
        stats = self.driver.stats
        counts = dict(self.counters)
        for name, value in (
            ("retries sent", stats.retries_sent),
            ("invalid tokens", stats.tokens_invalid),
            ("half-open refused", stats.half_open_refused),
            ("half-open expired", stats.half_open_expired),
            ("amplification withheld", stats.amplification_withheld),
            ("path challenges", stats.path_challenges_sent),
            ("migrations", stats.migrations),
            (lim.COMMIT_PAUSES, self.out.commit_pauses),
        ):
            counts[name] = value
        return ", ".join(f"{name} {n}" for name, n in counts.items() if n)

    @property
    def active(self) -> int:
        return sum(1 for a in self.apps if a.result is None)

    def shutdown(self, reason: str = "the receiver is shutting down") -> None:
        """Abort every open transfer (RST) and remove their temporaries; flush the RSTs."""
        self.driver.stop_listening()
        now = self.driver.clock()
        for app in list(self.apps):
            if app.result is None:
                app.abort(now, reason)
        self.driver.service(now)
        self.out.drain_commits()
