"""The receiver's named limits: what one `rtcp recv` lets peers make it spend.

Every limit has a name (used in the refusal a user sees and in the README's "Security and
limits" table), a default, a flag where a user would want one, and a counter of the times it
was hit (LimitCounters). The memory budget (ReceiveMemoryBudget) divides one total between
the connections: the window each one offers is its share, so what peers can make the receiver
hold stays inside the total whatever they send.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MIB = 1024 * 1024

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_HALF_OPEN = 1024
DEFAULT_MAX_PER_SOURCE = 32
DEFAULT_MAX_MEMORY_BYTES = 256 * MIB
DEFAULT_HEADER_DEADLINE_S = 10.0
DEFAULT_MIN_RATE_BYTES_PER_S = 1024
# The minimum rate is judged over windows of this length: a sender must move at least
# min_rate * this many bytes in each (a pause of a few seconds is fine, a drip is not).
MIN_RATE_INTERVAL_S = 10.0
# The smallest window a connection may be granted: below it, new connections are refused (the
# budget is full) rather than every transfer crawling.
MIN_GRANT_BYTES = 64 * 1024

# The names a refusal or a counter uses, as in the README's table.
CONNECTIONS = "concurrent connections"
HALF_OPEN = "half-open connections"
PER_SOURCE = "connections per source"
MEMORY = "receive memory"
HEADER_DEADLINE = "header deadline"
MIN_RATE = "minimum rate"
MAX_SIZE = "largest file"
# Counters of the partials (resume) removed by their bounds: --partial-max-age, MAX_PARTIALS,
# --partial-max-bytes (storage.py has the defaults).
PARTIALS_REMOVED = "partials removed"
PARTIAL_BYTES_REMOVED = "partial bytes removed"
# Bytes of resumed partials read back and hashed (storage.RESUME_HASH_BYTES_PER_BYTE bounds it).
PREFIX_BYTES_HASHED = "resumed prefix bytes hashed"
# Silent connections ended by a new one from the same address for the same file
# (receiver.TAKEOVER_SILENCE_S).
TAKEOVERS = "takeovers"
# Times the receiver stopped reading because storage.MAX_FILES_WAITING files waited for the
# group commit.
COMMIT_PAUSES = "pauses for the group commit"
# While the sender checks its own copy of a prefix we offered (reading and hashing it), it
# sends nothing: the idle and minimum-rate limits wait for its START for the time reading the
# prefix takes at this rate (a slow disk), then count as usual. At the largest partial (16 GiB
# by default) that is at most 17 minutes, for a prefix that this sender put here itself.
PREFIX_CHECK_FLOOR_BYTES_PER_S = 16 * MIB


@dataclass
class ReceiverLimits:
    """Every limit of one receiver, with its default (flags of `rtcp recv`)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS  # --max-connections
    max_half_open: int = DEFAULT_MAX_HALF_OPEN  # above it, SYNs get a stateless retry
    max_per_source: int = DEFAULT_MAX_PER_SOURCE  # connections (any state) per IP address
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES  # --max-memory: windows of all connections
    header_deadline_s: float = DEFAULT_HEADER_DEADLINE_S  # --header-deadline
    min_rate_bytes_per_s: int = DEFAULT_MIN_RATE_BYTES_PER_S  # --min-rate
    max_size_bytes: int | None = None  # --max-size: largest file accepted (None: any)


class LimitCounters(Counter):
    """How many times each named limit refused or cut off something."""

    def hit(self, name: str) -> None:
        self[name] += 1


class ReceiveMemoryBudget:
    """One total of receive memory shared by the connections of a receiver.

    A connection may hold, in order and out of order, as much as its window lets a peer send:
    its config.receive_buffer_bytes, which the core reads live. The budget sets that limit for
    each connection to what it already uses (never less: nothing held is dropped, nothing
    SACKed is reneged) plus an equal share of what is free, capped at the connection's own
    buffer. The limits then add up to at most the total, so whatever peers send, the bytes the
    receiver holds for them stay inside it; an idle total is shared out again as connections
    end (regrant, also every REGRANT_INTERVAL_S while connections run). "Uses" counts the holes
    before out-of-order data (they fill within the window) and RANGE_OVERHEAD_BYTES per held
    range, the bookkeeping a one-byte range costs.
    """

    REGRANT_INTERVAL_S = 0.1
    RANGE_OVERHEAD_BYTES = 256

    def __init__(self, total_bytes: int):
        self.total_bytes = total_bytes
        self._conns: dict[int, tuple[object, int]] = {}  # id -> (connection, its full buffer)
        self._next_regrant = 0.0
        self.used_bytes = 0  # at the last regrant
        self.peak_used_bytes = 0

    def __len__(self) -> int:
        return len(self._conns)

    def _used(self, conn) -> tuple[int, int]:
        """(bytes held or reserved for holes, those plus the bookkeeping of held ranges)."""
        held, ranges = conn.receive_memory()
        return held, held + ranges * self.RANGE_OVERHEAD_BYTES

    def fits_another(self) -> bool:
        """Room for one more connection's smallest window (else refuse it: limit MEMORY)."""
        free = self.total_bytes - sum(self._used(c)[1] for c, _full in self._conns.values())
        return free // (len(self._conns) + 1) >= MIN_GRANT_BYTES

    @property
    def granted_bytes(self) -> int:
        return sum(conn.config.receive_buffer_bytes for conn, _full in self._conns.values())

    def add(self, conn) -> None:
        """Count a connection; conn.config must be its own (the limit is written there)."""
        self._conns[id(conn)] = (conn, conn.config.receive_buffer_bytes)
        self.regrant()

    def remove(self, conn) -> None:
        if self._conns.pop(id(conn), None) is not None:
            self.regrant()

    def maybe_regrant(self, now: float) -> None:
        if now >= self._next_regrant:
            self._next_regrant = now + self.REGRANT_INTERVAL_S
            self.regrant()

    def regrant(self) -> None:
        conns = list(self._conns.values())
        if not conns:
            self.used_bytes = 0
            return
        used = [self._used(conn) for conn, _full in conns]
        self.used_bytes = total_used = sum(u for _held, u in used)
        self.peak_used_bytes = max(self.peak_used_bytes, total_used)
        share = max(0, self.total_bytes - total_used) // len(conns)
        for (conn, full), (held, _u) in zip(conns, used, strict=True):
            conn.config.receive_buffer_bytes = max(1, min(full, held + share))
