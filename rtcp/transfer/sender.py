"""What every send shares: the socket (open_driver), the loop with its progress hook
(run_reporting), the connection's settings (make_config), the result of a lone file
(SendResult, `rtcp send FILE --json`) and the mapping of the receiver's refusals and of the
core's closes to errors with exit codes.

The sending application itself is rtcp.transfer.tree.TreeSendApp: a lone file is a tree of
one file (format version 2), so that it resumes as any file of a tree.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field

from rtcp.core.config import ConnectionConfig
from rtcp.core.congestion import INFINITE_SSTHRESH_BYTES
from rtcp.core.protection import TAG_BYTES
from rtcp.errors import (
    ConnectionRefused,
    ExitCode,
    FileExistsRefused,
    HashMismatch,
    LocalIOError,
    PeerReset,
    PeerTimeout,
    RtcpError,
    TransferRefused,
)
from rtcp.net.driver import Driver, resolve
from rtcp.net.ready import wait_until_bound
from rtcp.transfer import protocol as proto

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
    resumed_bytes: int = 0  # of `bytes`, held by the receiver already (a resumed partial)
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
        if "being received" in verdict.message:  # in flight on another connection
            # (the receiver's module: not imported by every send)
            from rtcp.transfer.receiver import DEFAULT_IDLE_TIMEOUT_S, TAKEOVER_SILENCE_S

            return FileExistsRefused(
                f"{text} (if that is an interrupted send: its connection is taken over once "
                f"silent for {TAKEOVER_SILENCE_S:g} s when it came from this address, else "
                f"dropped after the receiver's --timeout, {DEFAULT_IDLE_TIMEOUT_S:g} s by "
                "default; send again then, and it resumes)"
            )
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


def make_config(
    base: ConnectionConfig | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S, **overrides
) -> ConnectionConfig:
    """A ConnectionConfig for a transfer: the user timeout follows --timeout."""
    from dataclasses import replace

    config = base if base is not None else ConnectionConfig()
    values = {k: v for k, v in overrides.items() if v is not None}
    values.setdefault("user_timeout_s", timeout_s)
    return replace(config, **values)


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
