"""Exit codes and the errors that map to them: one table, shared by every command.

Every failure a user can meet ends in one readable line and one of these codes,
never a traceback. The README's "Exit codes" section is this table.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # transfer verified (send), or clean shutdown (recv, proxy)
    FAILURE = 1  # an unexpected internal error (a bug: please report it)
    USAGE = 2  # bad flags or arguments
    TIMEOUT = 3  # no answer from the peer, or no progress within --timeout
    RESET = 4  # the peer reset or aborted the connection
    HASH_MISMATCH = 5  # the receiver's SHA-256 did not match the sender's
    FILE_EXISTS = 6  # the receiver refused: the file exists and --force was not given
    LOCAL_IO = 7  # a local file or socket error (missing file, disk full, permission)
    REFUSED = 8  # the receiver refused the transfer for another reason (bad name, protocol)
    KEY_REJECTED = 9  # the keys do not match: another --psk-file or --code, or one side has none
    INTERRUPTED = 130  # SIGINT / Ctrl-C


class RtcpError(Exception):
    """An error that ends a command with a clear message and a documented exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(RtcpError):
    exit_code = ExitCode.USAGE


class PeerTimeout(RtcpError):
    exit_code = ExitCode.TIMEOUT


class ConnectionRefused(RtcpError):
    """Nothing is bound at the peer's port (ICMP port unreachable): no answer, at once."""

    exit_code = ExitCode.TIMEOUT


class PeerReset(RtcpError):
    exit_code = ExitCode.RESET


class HashMismatch(RtcpError):
    exit_code = ExitCode.HASH_MISMATCH


class FileExistsRefused(RtcpError):
    exit_code = ExitCode.FILE_EXISTS


class LocalIOError(RtcpError):
    exit_code = ExitCode.LOCAL_IO


class TransferRefused(RtcpError):
    exit_code = ExitCode.REFUSED


class KeyRejected(RtcpError):
    exit_code = ExitCode.KEY_REJECTED
