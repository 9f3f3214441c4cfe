"""What a connection reports to its user, popped from Connection.next_event() in order."""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    """Base class of every connection event."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """The connection reached ESTABLISHED."""


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """In-order bytes became readable (the receive buffer was empty): read() until b''."""


@dataclass(frozen=True, slots=True)
class SendSpaceAvailable(Event):
    """The send buffer, full at the last send(), has room again."""


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The peer sent FIN and every byte before it arrived; read() returns b'' after the data."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection will deliver nothing more.

    reason: "closed" (orderly FIN exchange), "reset" (the peer sent RST), "timeout" (the peer
    stayed silent past the user timeout), "aborted" (local abort()), "protocol" (peer misbehaved).
    error is None for an orderly close, else a one-line human explanation.
    """

    reason: str
    error: str | None = None
