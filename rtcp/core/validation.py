"""Address validation (RFC 9000 section 8): proof that a peer can receive at the address its
datagrams come from, before a listener spends state or bytes on it.

Three pieces, all sans-IO (the caller passes `now` and the bytes):

- RetryTokens: a listener under a SYN flood answers a SYN statelessly with a RETRY segment
  carrying a token, an HMAC over the client's address, its connection id and a coarse time
  (RFC 9000 8.1.2, the role SYN cookies play for TCP, RFC 4987 3.6). The client's second SYN
  echoes it; only a SYN whose token validates creates state, and its address is validated.
- AmplificationLimit: until an address is validated, send it at most
  AMPLIFICATION_FACTOR times the bytes received from it (RFC 9000 8.1).
- PathValidator: when a live connection's segments arrive from a new address (a NAT rebinding,
  a restarted middlebox), a PATH_CHALLENGE of 8 random bytes goes to that address; the
  connection moves there once the same bytes come back from it (RFC 9000 8.2, 9). A
  segment from elsewhere moves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct

from rtcp.core import wire

AMPLIFICATION_FACTOR = 3  # RFC 9000 8.1
# Tokens name a time slot of this length and are accepted for the slot they name and the
# next one: a token lives 10 to 20 s, long enough for a client's SYN to come back.
TOKEN_SLOT_S = 10.0
TOKEN_MAC_BYTES = 16
_SLOT = struct.Struct("!I")
CHALLENGE_BYTES = 8
# A challenge is sent again this often, at most CHALLENGE_ATTEMPTS times, then abandoned.
CHALLENGE_INTERVAL_S = 0.5
CHALLENGE_ATTEMPTS = 4


def _address_bytes(addr: tuple) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class RetryTokens:
    """Issue and check a listener's address-validation tokens (the key lives in memory)."""

    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, slot: int, addr: tuple, src_id: int) -> bytes:
        msg = _SLOT.pack(slot) + _SLOT.pack(src_id) + _address_bytes(addr)
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:TOKEN_MAC_BYTES]

    @staticmethod
    def _slot(now: float) -> int:
        return int(now // TOKEN_SLOT_S) & 0xFFFFFFFF

    def issue(self, addr: tuple, src_id: int, now: float) -> bytes:
        slot = self._slot(now)
        return _SLOT.pack(slot) + self._mac(slot, addr, src_id)

    def valid(self, token: bytes, addr: tuple, src_id: int, now: float) -> bool:
        if len(token) != _SLOT.size + TOKEN_MAC_BYTES:
            return False
        slot = _SLOT.unpack_from(token)[0]
        if (self._slot(now) - slot) & 0xFFFFFFFF > 1:
            return False
        return hmac.compare_digest(token[_SLOT.size :], self._mac(slot, addr, src_id))

    def retry_for(self, syn: wire.Segment, addr: tuple, now: float) -> bytes:
        """The RETRY datagram answering `syn` from `addr` (no state kept)."""
        token = self.issue(addr, syn.src_id, now)
        return wire.build(
            wire.RETRY, 0, syn.src_id, 0, (syn.seq + 1) & 0xFFFFFFFF, 0,
            wire.opt_bytes(wire.OPT_RETRY_TOKEN, token),
        )


class AmplificationLimit:
    """Bytes sent to an address not validated yet: at most AMPLIFICATION_FACTOR x received."""

    __slots__ = ("received", "sent", "validated", "withheld")

    def __init__(self, validated: bool = False):
        self.validated = validated
        self.received = 0
        self.sent = 0
        self.withheld = 0  # datagrams not sent because of the limit

    def on_received(self, nbytes: int) -> None:
        self.received += nbytes

    def allow(self, datagrams: list) -> list:
        """The datagrams that may go now (in order); the others are dropped and counted (the
        protocol's retransmission repairs that, once the peer speaks again or is validated)."""
        if self.validated:
            return datagrams
        room = AMPLIFICATION_FACTOR * self.received - self.sent
        out = []
        for d in datagrams:
            if len(d) <= room:
                out.append(d)
                room -= len(d)
                self.sent += len(d)
            else:
                self.withheld += 1
        return out


class PathValidator:
    """One connection's path: the validated address and, at most one at a time, a candidate
    that is being challenged. The caller sends what challenge_due() returns to the candidate,
    feeds every PATH_RESPONSE, and moves the connection when on_response() says so."""

    def __init__(self, address: tuple):
        self.address = address
        self.candidate: tuple | None = None
        self._challenge: bytes | None = None
        self._attempts = 0
        self._next_at = 0.0
        self.amplification = AmplificationLimit(validated=True)
        self.migrations = 0
        self.challenges_sent = 0
        self.responses_bad = 0

    def on_datagram_from(self, addr: tuple, nbytes: int, now: float) -> None:
        """A datagram of this connection arrived from addr (already accepted by the core)."""
        if addr == self.address:
            return
        if addr != self.candidate:  # a new candidate replaces the old one
            self.candidate = addr
            self._challenge = secrets.token_bytes(CHALLENGE_BYTES)
            self._attempts = 0
            self._next_at = now
            self.amplification = AmplificationLimit()
        self.amplification.on_received(nbytes)

    def challenge_due(self, now: float) -> bytes | None:
        """The challenge to send to the candidate now (None: nothing due)."""
        if self._challenge is None or now < self._next_at:
            return None
        if self._attempts >= CHALLENGE_ATTEMPTS:
            self.candidate = self._challenge = None
            return None
        self._attempts += 1
        self._next_at = now + CHALLENGE_INTERVAL_S
        self.challenges_sent += 1
        return self._challenge

    def next_deadline(self) -> float | None:
        return self._next_at if self._challenge is not None else None

    def on_response(self, value: bytes, addr: tuple) -> bool:
        """A PATH_RESPONSE arrived from addr: True when it validates the candidate, which is
        then the connection's address."""
        if self._challenge is None or addr != self.candidate:
            return False
        if not hmac.compare_digest(value, self._challenge):
            self.responses_bad += 1
            return False
        self.address = addr
        self.candidate = self._challenge = None
        self.amplification = AmplificationLimit(validated=True)
        self.migrations += 1
        return True
