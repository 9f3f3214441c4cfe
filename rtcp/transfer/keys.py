"""Keys and codes on the command line: `rtcp keygen`, --psk-file / --code / --insecure /
--keylog for send and recv, the protected-mode rule (a receiver reachable from other machines
needs a key, a code or an explicit --insecure, as Redis's protected mode), and the receiver's
one line per refused handshake.

Every `rtcp` start imports this module (the options of send and recv, `rtcp keygen`): the
protection layer and its cryptography are imported by the functions that use them, so that a
plaintext transfer never loads them."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from rtcp.errors import LocalIOError, UsageError

if TYPE_CHECKING:
    from rtcp.core import protection as prot

PANEL_KEYS = "Keys and encryption"
# Lines a receiver prints about refused handshakes: at most one per this many seconds; the
# ones in between are counted in the next line (a flood of bad SYNs cannot flood the log).
REFUSED_LOG_INTERVAL_S = 1.0


def psk_file_option() -> typer.models.OptionInfo:
    return typer.Option(
        None,
        "--psk-file",
        envvar="RTCP_PSK_FILE",
        metavar="FILE",
        help="Shared key (from `rtcp keygen FILE`): authenticate the peer, encrypt everything.",
        rich_help_panel=PANEL_KEYS,
        show_default=False,
    )


def keylog_option() -> typer.models.OptionInfo:
    return typer.Option(
        None,
        "--keylog",
        metavar="FILE",
        help="Append the traffic keys here (like SSLKEYLOGFILE) for `rtcp decrypt`.",
        rich_help_panel=PANEL_KEYS,
        show_default=False,
    )


def keygen_command(
    file: str = typer.Argument(..., metavar="FILE", help="Where to write the new key."),
) -> None:
    """Write a new random 256-bit key to FILE (mode 0600; an existing file is kept).

    Example: rtcp keygen team.key, then copy team.key to the other machine and use
    --psk-file team.key (or RTCP_PSK_FILE=team.key) on both `rtcp recv` and `rtcp send`.
    """
    from rtcp.core import protection as prot

    try:
        prot.write_key_file(file, prot.generate_key())
    except FileExistsError:
        raise UsageError(f"{file} exists: keygen never replaces a key (remove it first)") from None
    except OSError as exc:
        raise LocalIOError(f"cannot write {file}: {exc.strerror or exc}") from None
    print(f"wrote a new key to {file} (keep it secret; copy it to the other side)")


def new_code() -> str:
    """A fresh one-time code for `rtcp recv --code` (7-guitar-oxygen-banjo)."""
    from rtcp.core import protection as prot

    return prot.generate_code()


def load_secret(psk_file: str | None, code: str | None) -> prot.Secret | None:
    """The Secret that --psk-file or --code give (at most one of them), or None."""
    if psk_file is not None and code is not None:
        raise UsageError("--psk-file and --code: give one of them")
    if psk_file is None and code is None:
        return None
    from rtcp.core import protection as prot

    if psk_file is not None:
        try:
            secret = prot.Secret(psk=prot.read_key_file(psk_file))
        except prot.KeyFileError as exc:
            raise UsageError(f"--psk-file: {psk_file}: {exc}") from None
    else:
        try:
            secret = prot.Secret(code=prot.normalize_code(code))
        except ValueError as exc:
            raise UsageError(f"--code: {exc}") from None
    prot.load_cryptography()  # part of start-up, before any transfer's clock
    return secret


def check_protected_mode(listen: str, addr: tuple, keyed: bool, insecure: bool) -> None:
    """Refuse a plaintext receiver that other machines can reach (anything but loopback)."""
    if keyed or insecure:
        return
    try:
        loopback = ipaddress.ip_address(str(addr[0]).split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"--listen {listen} is reachable from other machines: give --psk-file FILE or "
            "--code (or --insecure to accept anyone's files, unencrypted)"
        )


def keylog_writer(path: str | None) -> Callable[[str], None] | None:
    """A function that appends one line to the keylog file (0600), or None without --keylog."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise LocalIOError(f"--keylog: cannot open {path}: {exc.strerror or exc}") from None
    os.close(fd)

    def write(line: str) -> None:
        try:
            with open(path, "a", encoding="ascii") as f:
                f.write(line)
        except OSError as exc:
            print(f"rtcp: cannot write --keylog {path}: {exc.strerror or exc}", file=sys.stderr)

    return write


class RefusedLog:
    """The receiver's line for each refused handshake, at most one per REFUSED_LOG_INTERVAL_S."""

    def __init__(self, clock: Callable[[], float], quiet: bool = False):
        from rtcp.net.driver import MID_HANDSHAKE_REFUSAL

        self._mid_handshake = MID_HANDSHAKE_REFUSAL
        self.clock = clock
        self.quiet = quiet
        self.count = 0
        self._last: float | None = None
        self._suppressed = 0
        # peers whose half-open connection was aborted for a wrong code: this line tells, so
        # the transfer's own "failed (no header)" line is left out (bounded by the attempts
        # a code allows)
        self.aborted_peers: set[str] = set()

    def told(self, result) -> bool:
        """True for a transfer result that this log's line already explained."""
        if result.name is None and result.peer in self.aborted_peers:
            self.aborted_peers.discard(result.peer)
            return True
        return False

    def __call__(self, peer: tuple, why: str) -> None:
        self.count += 1
        host, port = peer[0], peer[1]
        where = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        if why == self._mid_handshake:
            self.aborted_peers.add(where)
        now = self.clock()
        if self.quiet or (self._last is not None and now - self._last < REFUSED_LOG_INTERVAL_S):
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        self._last, self._suppressed = now, 0
        self._print(f"rtcp: refused a handshake from {where}: {why}{more}")

    def flush(self) -> None:
        """At exit: the refusals that no line has told yet (they came within the interval)."""
        if self._suppressed and not self.quiet:
            n, self._suppressed = self._suppressed, 0
            plural = "s" if n > 1 else ""
            self._print(f"rtcp: refused {n} more handshake{plural} since the last line")

    @staticmethod
    def _print(line: str) -> None:
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:
            pass


def protection_summary(stats: prot.ProtectionStats) -> str | None:
    """The receiver's last line about packet protection, when something was refused."""
    if not (stats.auth_failures or stats.replayed):
        return None
    return (
        f"rtcp: packet protection: {stats.handshakes} handshakes proved the key; dropped "
        f"{stats.auth_failures} that failed authentication (auth_failures) and "
        f"{stats.replayed} replayed datagrams"
    )
