"""The sending application: one file over one connection, driven by rtcp.net.driver.

It keeps the connection's send buffer full from 256 KiB reads into one preallocated buffer
(memory stays bounded whatever the file size), hashes while streaming, sends the trailer,
waits for the receiver's verdict, then closes. Success means an OK verdict, nothing less.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.core.congestion import INFINITE_SSTHRESH_BYTES
from rtcp.core.protection import FAILURE_MESSAGES, TAG_BYTES, ClientProtection, Secret
from rtcp.errors import (
    ConnectionRefused,
    ExitCode,
    FileExistsRefused,
    HashMismatch,
    KeyRejected,
    LocalIOError,
    PeerReset,
    PeerTimeout,
    RtcpError,
    TransferRefused,
    UsageError,
)
from rtcp.net.driver import App, Driver, Handle, resolve
from rtcp.net.ready import wait_until_bound
from rtcp.transfer import protocol as proto
from rtcp.transfer.readahead import ReadAhead, SourceError

READ_CHUNK_BYTES = 256 * 1024
# --timeout: give up after this long without progress. 30 s, not 15 s: through 30% loss each
# way a verdict sent at RFC 6298's ~3 s RTO gets eleven tries instead of six (README,
# "Handshake and close through heavy loss").
DEFAULT_TIMEOUT_S = 30.0
# After an OK verdict and our close(), wait this long at most for the FIN exchange to end:
# the file is verified already, so a lost final ACK must not turn success into failure.
CLOSE_GRACE_S = 2.0
# Datagrams from the peer that are not rtcp segments for us (undecodable, bad checksum, for no
# connection) before the handshake completed: this many, and the peer is something else.
NOT_RTCP_DATAGRAMS = 3


@dataclass
class SendResult:
    """What a transfer did; to_json() is the --json object."""

    file: str
    name: str
    peer: str
    bytes: int
    sha256: str | None = None
    verified: bool = False
    seconds: float = 0.0
    goodput_bytes_per_s: float = 0.0
    segments_sent: int = 0
    retransmissions: int = 0
    rtt_ms: float | None = None
    exit_code: int = int(ExitCode.OK)
    error: str | None = None
    verdict: str | None = None
    stats: dict = field(default_factory=dict)  # the connection's counters (ConnectionStats)
    driver: dict = field(default_factory=dict)  # the socket's counters (DriverStats)

    def to_json(self) -> dict:
        return asdict(self)


def verdict_error(verdict: proto.Verdict) -> RtcpError:
    """The local error for a receiver's non-OK verdict."""
    text = f"the receiver refused: {verdict.describe()}"
    if verdict.status == proto.Status.HASH_MISMATCH:
        return HashMismatch(f"SHA-256 mismatch at the receiver ({verdict.message})")
    if verdict.status == proto.Status.FILE_EXISTS:
        if "being received" in verdict.message:  # in flight from another sender: wait
            return FileExistsRefused(text)
        return FileExistsRefused(f"{text} (the receiver needs --force to overwrite)")
    return TransferRefused(text)


def closed_error(reason: str, error: str | None, peer: str, timeout_s: float) -> RtcpError:
    """The local error for the core's ConnectionClosed(reason) before an OK verdict."""
    detail = f" ({error})" if error else ""
    if reason == "reset":
        return PeerReset(f"the connection was reset by {peer}{detail}")
    if reason == "timeout":
        return PeerTimeout(f"no answer from {peer} within {timeout_s:g} s{detail}")
    if reason == "protocol":
        return TransferRefused(f"{peer} violated the protocol{detail}")
    if reason == "aborted":
        return PeerReset(f"the connection was aborted{detail}")
    return TransferRefused(f"{peer} closed the connection without a verdict{detail}")


def stat_value(stats, *names, default=0):
    """First present attribute of the core's ConnectionStats among names."""
    for name in names:
        value = getattr(stats, name, None)
        if value is not None:
            return value
    return default


def stats_dict(stats) -> dict:
    """Every counter of a stats dataclass, for --json. A "none yet" ssthresh (the core's
    stand-in for RFC 5681's "arbitrarily high": 2^62) is null, not a huge number."""
    if stats is None:
        return {}
    try:
        values = asdict(stats)
    except TypeError:
        values = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    out = {k: v for k, v in values.items() if isinstance(v, int | float | str | None)}
    if out.get("ssthresh_bytes", 0) >= INFINITE_SSTHRESH_BYTES:
        out["ssthresh_bytes"] = None
    return out


class SendApp(App):
    """Drives one FileSender over one connection. result_error is None on success."""

    def __init__(
        self,
        fileobj,
        sender: proto.FileSender,
        *,
        peer_text: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_chunk_bytes: int = READ_CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wait_ready: bool = False,
    ):
        self.file = fileobj
        self.wait_ready = wait_ready  # a refusal before the handshake means "not yet"
        self.refusals = 0
        self.fs = sender
        self.peer_text = peer_text
        self.timeout_s = timeout_s
        self.clock = clock
        # read and hashed in a helper thread, from now on: the handshake overlaps it
        self._reader = ReadAhead(
            fileobj, sender.size, sender.update, chunk_bytes=read_chunk_bytes, name=sender.name
        )
        self._out: memoryview | None = None  # bytes given to conn.send() next
        self._header_queued = False
        self._trailer_queued = False
        self.file_bytes_read = 0
        self.stream_bytes_queued = 0  # header + data + trailer accepted by conn.send()
        self.header_len = 0
        self.established = False
        self.started = clock()
        self.established_at: float | None = None
        self.verdict_at: float | None = None
        self.closing_since: float | None = None
        self.last_progress = self.started
        self._last_acked = 0  # stream bytes acknowledged when progress was last noted
        self.verdict: proto.Verdict | None = None
        self.error: RtcpError | None = None
        self.done = False
        self.linger = False
        self.close_reason: str | None = None

    # --- progress ----------------------------------------------------------------------

    def _progress(self, now: float) -> None:
        self.last_progress = now

    def _note_acked(self, now: float) -> None:
        """Progress is file bytes acknowledged (or a complete verdict, see _read_verdict):
        nothing else a receiver sends, so that a receiver that offers a zero window and drips
        a never-ending verdict cannot keep the sender waiting past --timeout."""
        acked = self.stream_bytes_acked
        if acked > self._last_acked:
            self._last_acked = acked
            self._progress(now)

    @property
    def stream_bytes_acked(self) -> int:
        """Bytes of our stream the peer acknowledged (snd_una counts the SYN as offset 0)."""
        conn = self.handle.conn
        una = getattr(conn, "snd_una", None)
        if una is None:  # a core without snd_una: infer from the send buffer's occupancy
            in_buffer = max(0, conn.config.send_buffer_bytes - conn.send_buffer_space)
            return max(0, self.stream_bytes_queued - in_buffer)
        return max(0, min(una - 1, self.stream_bytes_queued))

    @property
    def file_bytes_acked(self) -> int:
        return min(self.fs.size, max(0, self.stream_bytes_acked - self.header_len))

    # --- failure and success -----------------------------------------------------------

    def fail(self, error: RtcpError, *, abort: bool = True, linger: bool = False) -> None:
        """Stop with error. abort resets the connection; linger asks send_file to stay a
        moment after it, to answer the peer's challenge ACK (see Driver._reply_rst) so that
        the receiver drops the transfer at once rather than after its idle timeout."""
        if self.error is None and not self.succeeded:
            self.error = error
        self.close()
        if abort:
            self.handle.conn.abort()
            self.linger = self.linger or linger
        self.done = True

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

    def connection_made(self, handle: Handle) -> None:
        super().connection_made(handle)
        if handle.driver is not None:
            self._reader.on_chunk = handle.driver.wakeup  # a chunk is ready: poll again

    def close(self) -> None:
        """Stop the read-ahead helper (idempotent); send_file calls it at the end."""
        self._reader.close()

    def linger_seconds(self) -> float:
        srtt = stat_value(self.handle.conn.stats, "srtt_s", default=None) or 0.05
        return min(1.0, 0.05 + 4 * srtt)

    @property
    def succeeded(self) -> bool:
        return (
            self.verdict is not None
            and self.verdict.ok
            and self._trailer_queued
            and self._digest_confirmed
        )

    @property
    def _digest_confirmed(self) -> bool:
        """An OK verdict carries the receiver's SHA-256 of the stored file: it must be ours.
        (A lying receiver could echo our digest; only authentication rules that out.)"""
        digest = self.fs.hexdigest
        return digest is not None and self.verdict.message.strip().lower() == digest

    # --- App ---------------------------------------------------------------------------

    def event_received(self, event, now: float) -> None:
        if isinstance(event, ev.HandshakeComplete):
            self.established = True
            self.established_at = now
            self._progress(now)
        elif isinstance(event, ev.DataReceived):
            self._read_verdict(now)
        elif isinstance(event, ev.SendSpaceAvailable):
            self._note_acked(now)
        elif isinstance(event, ev.StreamEnded):
            self._read_verdict(now)
            for item in self.fs.end_of_stream():
                if isinstance(item, proto.ProtocolFailure) and self.error is None:
                    self.fail(TransferRefused(f"{item.message} ({self.peer_text})"))
            if self.succeeded and self.closing_since is None:
                self.handle.conn.close()
                self.closing_since = now
        elif isinstance(event, ev.ConnectionClosed):
            self.close()
            self.close_reason = event.reason
            failure = getattr(self.handle.protection, "failure", None)
            if failure is not None and self.error is None:
                self.error = KeyRejected(FAILURE_MESSAGES[failure])
            if not self.succeeded and self.error is None:
                self.error = closed_error(event.reason, event.error, self.peer_text, self.timeout_s)
            self.done = True

    def _read_verdict(self, now: float) -> None:
        conn = self.handle.conn
        while True:
            data = conn.read(65536)
            if not data:
                return
            for item in self.fs.receive(data):
                if isinstance(item, proto.VerdictReceived):
                    self.verdict = item.verdict
                    self.verdict_at = now
                    if not item.verdict.ok:
                        # an early refusal, or a failed final verdict: stop at once (RST)
                        self.fail(verdict_error(item.verdict))
                    elif not self._trailer_queued:
                        self.fail(TransferRefused("the receiver answered OK before the trailer"))
                    elif not self._digest_confirmed:
                        self.fail(
                            HashMismatch(
                                f"the receiver answered OK with SHA-256 "
                                f"{item.verdict.message[:64]!r}, not ours ({self.fs.hexdigest})"
                            )
                        )
                    elif self.closing_since is None:
                        self._progress(now)
                        conn.close()
                        self.closing_since = now
                elif isinstance(item, proto.ProtocolFailure):
                    if not self.succeeded:
                        self.fail(TransferRefused(f"{item.message} ({self.peer_text})"))
                    return

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
        space = conn.send_buffer_space
        while space > 0 and not self._trailer_queued:
            # Wait for the next chunk only when less than a full segment is queued: otherwise
            # the connection sends a runt (the end of a chunk) while the rest is being read.
            if self._out is None and not self._next_chunk(wait=conn.unsent_bytes < conn.mss):
                break
            out = self._out
            n = conn.send(out)
            if n <= 0:
                break
            self.stream_bytes_queued += n
            self._out = out[n:] if n < len(out) else None
            space = conn.send_buffer_space
        if self._out is None and self._trailer_pending_sent():
            self._trailer_queued = True
        conn.cork = not self._trailer_queued  # a chunk's tail waits for the next chunk

    def _trailer_pending_sent(self) -> bool:
        return self._header_queued and self.fs.digest is not None and self._out is None

    def _next_chunk(self, *, wait: bool = True) -> bool:
        """Load the next piece of the stream into self._out; False when nothing is left, or
        (not wait) when the next chunk of the file is not read yet."""
        if not self._header_queued:
            header = self.fs.header()
            self.header_len = len(header)
            self._out = memoryview(header)
            self._header_queued = True
            return True
        if self.file_bytes_read < self.fs.size:
            if not wait and not self._reader.ready():
                return False  # the connection has data to send meanwhile; a wakeup follows
            try:
                chunk = self._reader.take()  # fresh bytes: the connection keeps them, no copy
            except SourceError as exc:
                self.fail(LocalIOError(str(exc)), linger=True)
                return False
            if chunk is None:  # pragma: no cover - the reader stops at fs.size or raises
                self.fail(LocalIOError(f"{self.fs.name} ended early"), linger=True)
                return False
            self.file_bytes_read += len(chunk)
            self._out = memoryview(chunk)
            return True
        if self.fs.digest is None:
            self._out = memoryview(self.fs.trailer())
            return True
        return False

    def deadline(self) -> float | None:
        if self.done and self.closing_since is None:
            return None
        if self.closing_since is not None:
            return self.closing_since + min(CLOSE_GRACE_S, self.timeout_s)
        return self.last_progress + self.timeout_s

    def on_deadline(self, now: float) -> None:
        if self.closing_since is not None:
            self.done = True  # verified; the FIN exchange did not finish in time: fine
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


def make_config(
    base: ConnectionConfig | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S, **overrides
) -> ConnectionConfig:
    """A ConnectionConfig for a transfer: the user timeout follows --timeout."""
    from dataclasses import replace

    config = base if base is not None else ConnectionConfig()
    values = {k: v for k, v in overrides.items() if v is not None}
    values.setdefault("user_timeout_s", timeout_s)
    return replace(config, **values)


def open_source(path: str | os.PathLike) -> tuple[object, int, str]:
    """Open the file to send: (binary file object, size, base name). Raises RtcpError."""
    p = Path(path)
    try:
        f = open(p, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        raise LocalIOError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise LocalIOError(f"{p} is a directory, not a file") from None
    except PermissionError:
        raise LocalIOError(f"{p}: permission denied") from None
    except OSError as exc:
        raise LocalIOError(f"cannot open {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise LocalIOError(f"{p} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise LocalIOError(f"{p} is not a regular file")
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        name = os.path.basename(os.path.abspath(p))
        try:
            name = proto.validate_name(name)
        except proto.BadName as exc:
            raise UsageError(f"cannot send a file named {name!r}: {exc}") from None
    except BaseException:
        f.close()
        raise
    return f, st.st_size, name


def open_driver(host: str, port: int, timeout_s: float, wait_ready: bool, pcap=None):
    """Resolve host, wait for it with --wait-ready, and open a Driver whose socket is
    connected to it: (driver, address, peer text). Raises RtcpError."""
    try:
        family, addr = resolve(host, port)
    except OSError as exc:
        raise LocalIOError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    peer_text = f"[{addr[0]}]:{addr[1]}" if family == socket.AF_INET6 else f"{addr[0]}:{addr[1]}"
    if wait_ready and wait_until_bound(family, addr, timeout_s) is False:
        raise ConnectionRefused(
            f"nothing listened at {peer_text} within {timeout_s:g} s (--wait-ready)"
        )
    try:
        driver = Driver(family=family)
    except OSError as exc:
        raise LocalIOError(f"cannot open a UDP socket: {exc.strerror or exc}") from None
    try:
        driver.connect_socket(addr)
    except OSError as exc:
        driver.close()
        raise LocalIOError(f"cannot send to {peer_text}: {exc.strerror or exc}") from None
    if pcap is not None:
        from rtcp.trace.pcap import TapSocket

        driver.sock = TapSocket(driver.sock, pcap)  # the selector keys on the fd: unchanged
    return driver, addr, peer_text


def run_reporting(driver, subject, on_progress, interval_s: float) -> None:
    """Run driver until subject.done, calling on_progress(subject, now) at most every
    interval_s on the driver's clock (the loop wakes for it: no thread)."""
    next_report = 0.0
    while not subject.done:
        driver.run_once(interval_s if on_progress else None)
        if on_progress is not None:
            now = driver.clock()
            if now >= next_report:
                on_progress(subject, now)
                next_report = now + interval_s


def send_file(
    path: str | os.PathLike,
    host: str,
    port: int,
    *,
    config: ConnectionConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_progress: Callable[[SendApp, float], None] | None = None,
    progress_interval_s: float = 0.1,
    pcap=None,
    wait_ready: bool = False,
    secret: Secret | None = None,
    keylog: Callable[[str], None] | None = None,
) -> SendResult:
    """Send one file to an `rtcp recv` at host:port. Never raises for a failed transfer:
    the returned SendResult carries exit_code and error (RtcpError for local problems that
    happen before anything is sent: a missing file, an unresolvable host).

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
    f, size, name = open_source(path)
    with f:
        driver, addr, peer_text = open_driver(host, port, timeout_s, wait_ready, pcap)
        cfg = make_config(config, timeout_s=timeout_s)
        fs = proto.FileSender(name, size)
        app = SendApp(
            f, fs, peer_text=peer_text, timeout_s=timeout_s, clock=driver.clock,
            wait_ready=wait_ready,
        )
        result = SendResult(file=str(path), name=name, peer=peer_text, bytes=size)
        with driver:
            handle: Handle | None = None
            try:
                handle = driver.connect(addr, cfg, app, ClientProtection(secret, keylog))
                run_reporting(driver, app, on_progress, progress_interval_s)
            except KeyboardInterrupt:
                if handle is not None:
                    app.fail(RtcpError("interrupted"), linger=True)
                    driver.service()
                    driver.linger(app.linger_seconds())
                raise
            finally:
                app.close()
            # flush what the last iteration queued (an RST, the last ACK)
            driver.service()
            if app.linger:
                driver.linger(app.linger_seconds())
            if on_progress is not None:
                on_progress(app, driver.clock())
        _fill_result(result, app, handle)
    return result


def _fill_result(result: SendResult, app: SendApp, handle: Handle | None) -> None:
    end = app.verdict_at if app.succeeded and app.verdict_at is not None else app.clock()
    result.seconds = max(0.0, end - app.started)
    result.sha256 = app.fs.hexdigest
    result.verified = app.succeeded
    if app.verdict is not None:
        result.verdict = app.verdict.describe()
        if app.verdict.ok and not app.succeeded:
            result.verdict = "OK, with a SHA-256 that is not the sender's: not verified"
    if result.verified:
        result.goodput_bytes_per_s = result.bytes / result.seconds if result.seconds > 0 else 0.0
    elif result.seconds > 0:
        result.goodput_bytes_per_s = app.file_bytes_acked / result.seconds if handle else 0.0
    if handle is not None:
        conn = handle.conn
        stats = conn.refresh_stats() if hasattr(conn, "refresh_stats") else conn.stats
        result.segments_sent = int(stat_value(stats, "segments_sent", "data_segments_sent"))
        result.retransmissions = int(
            stat_value(stats, "retransmissions", "segments_retransmitted", "retransmitted_segments")
        )
        srtt = stat_value(stats, "srtt_s", "smoothed_rtt_s", "srtt", default=None)
        if srtt:
            result.rtt_ms = round(float(srtt) * 1000.0, 3)
        result.stats = stats_dict(stats)
        if handle.driver is not None:
            result.driver = stats_dict(handle.driver.stats)
        _protection_stats(result.stats, handle.protection)
    if app.succeeded:
        result.exit_code = int(ExitCode.OK)
        result.error = None
    else:
        err = app.error or RtcpError("the transfer did not complete")
        result.exit_code = int(err.exit_code)
        result.error = str(err)


def _protection_stats(stats: dict, protection) -> None:
    """With a key or a code: the counters of packet protection, and the byte counts and the
    datagram size as they were on the wire (each protected datagram carries a 16-byte tag)."""
    if protection is None or getattr(protection, "secret", None) is None:
        stats["encrypted"] = False
        return
    stats["encrypted"] = True
    stats["auth_failures"] = protection.stats.auth_failures
    stats["replayed"] = protection.stats.replayed
    stats["bytes_sent"] = protection.wire_bytes_sent
    stats["bytes_received"] = protection.wire_bytes_received
    if stats.get("datagram_bytes"):
        stats["datagram_bytes"] += TAG_BYTES


def result_error(result: SendResult) -> RtcpError | None:
    """The RtcpError to raise for a failed result (None when verified)."""
    if result.verified:
        return None
    return RtcpError(result.error or "the transfer failed", ExitCode(result.exit_code))
