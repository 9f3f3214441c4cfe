"""Datagram packetization-layer path MTU discovery (RFC 8899 DPLPMTUD), sans-IO.

rtcp starts with a datagram size every path carries (BASE_PLPMTU, 1400 bytes) and probes
upwards with padding-only probe segments (flag PROBE, no sequence space, no data): a probe that
the peer acknowledges (PMTU-ACK option) proves the size; a probe lost MAX_PROBES times proves
nothing and narrows the search. Probes carry no data, so their loss never costs a retransmission
and is never taken for congestion (RFC 8899 4.1, 4.4).

The search first sends one optimistic probe of the largest size allowed (the peer's limit:
on loopback, 65,507 bytes): when the path carries it, the search is over in one round trip
instead of six. If that probe is not acknowledged within OPTIMISTIC_PROBE_TIMER_S (a single
loss proves nothing, so the size is not ruled out), the search probes upwards through the
datagram sizes of common links (Ethernet, jumbo frames, loopback), each success costing one
round trip, and once a size fails MAX_PROBES times it binary-searches the gap between the
largest confirmed size and the failed one. RFC 8899 5.3 leaves the search algorithm open.
Black-hole detection (RFC 8899 4.3): when full-sized data keeps timing out after the size was
raised, the connection calls black_hole() and the size falls back to BASE_PLPMTU; when even
that keeps timing out (a link behind the first hop below 1,428 bytes: a 1280-byte tunnel), to
MIN_PLPMTU_BYTES (RFC 8899 5.2, the ERROR state's size), and the search runs at once between it
and BASE_PLPMTU (a 1280-byte link is then found within 16 bytes).

The first hop's MTU is known locally (the route's MTU: rtcp/net/udp.path_mtu_payload): the
driver makes it the ceiling (max_bytes) before the search starts, so on a 1500-byte Ethernet
the optimistic probe is exactly 1,472 bytes (IPv4) and the search is over in one round trip. A
send that the local stack refuses as too big (EMSGSIZE: the first hop's MTU fell) lowers the
ceiling at once (lower_ceiling): the local stack is not an off-path attacker, so this signal
needs no validation (RFC 8899 4.6.1 validates ICMP, which may be forged). An ICMP "too big"
report that the driver validated (it quotes this connection's ids) is a hint checked again here
(on_packet_too_big, RFC 8899 4.6.2).
"""

from __future__ import annotations

from enum import Enum

BASE_PLPMTU_BYTES = 1400  # RFC 8899 5.1.2 BASE_PLPMTU: what any sane path carries
# RFC 8899 5.1.2 MIN_PLPMTU: 1200 bytes over IPv4 (its BASE_PLPMTU); IPv6's 1280-byte minimum
# link carries 1232, so 1200 crosses both.
MIN_PLPMTU_BYTES = 1200
MAX_PROBES = 3  # RFC 8899 5.1.2
SEARCH_GRANULARITY_BYTES = 16  # stop the binary search when the gap is this small
# UDP payloads of common links: Ethernet 1500, 4 KiB pages, jumbo 9000, 16/32 KiB, IPv4's limit.
COMMON_DATAGRAM_BYTES = (1472, 4068, 8972, 16356, 32740, 65507)
MIN_PROBE_TIMER_S = 0.05
OPTIMISTIC_PROBE_TIMER_S = 0.05  # a late ACK of it still counts (any acked size > PLPMTU does)
RAISE_TIMER_S = 600.0  # RFC 8899 5.1.1 PMTU_RAISE_TIMER: search again after this long


class PmtuState(Enum):
    DISABLED = "disabled"
    BASE = "base"
    SEARCHING = "searching"
    SEARCH_COMPLETE = "search_complete"


class PathMtuDiscovery:
    """Decides probe sizes and when to send them; the connection sends and times them."""

    def __init__(self, base_bytes: int = BASE_PLPMTU_BYTES, max_bytes: int = BASE_PLPMTU_BYTES):
        self.base_bytes = base_bytes
        self.plpmtu = base_bytes  # largest datagram size confirmed to cross the path
        self.max_bytes = max_bytes
        self.state = PmtuState.BASE if max_bytes > base_bytes else PmtuState.DISABLED
        self._high = max_bytes  # largest size not known to fail, upper end of the search
        self._failed = False  # a size failed: binary search from now on
        self._optimistic = True  # the next candidate is the largest size, probed once
        self.probe_size: int | None = None  # size of the probe in flight
        self.probe_count = 0  # transmissions of the current probe size
        self.probe_deadline: float | None = None
        self._raise_at: float | None = None
        self.probes_sent = 0
        self.probes_acked = 0

    def start(self, now: float) -> None:
        """The connection is established: begin searching (RFC 8899 5.2 BASE -> SEARCHING)."""
        if self.state is PmtuState.BASE:
            self.state = PmtuState.SEARCHING
            self._next_candidate()

    def limit_max(self, max_bytes: int) -> None:
        """The peer cannot take more than this (its MSS option)."""
        self.max_bytes = min(self.max_bytes, max_bytes)
        self._high = min(self._high, self.max_bytes)
        if self.max_bytes <= self.base_bytes:
            self.state = PmtuState.DISABLED

    def _next_candidate(self) -> None:
        if self._high - self.plpmtu < SEARCH_GRANULARITY_BYTES:
            self.state = PmtuState.SEARCH_COMPLETE
            self.probe_size = None
            self.probe_deadline = None  # an acknowledged last probe leaves no timer behind
            return
        size = (self.plpmtu + self._high + 1) // 2
        if self._optimistic:
            size = self._high
        elif not self._failed:
            size = next((c for c in COMMON_DATAGRAM_BYTES if c > self.plpmtu), self._high)
            size = min(size, self._high)
        self.probe_size = size
        self.probe_count = 0
        self.probe_deadline = None

    def probe_due(self, now: float) -> int | None:
        """The size of a probe to send now, or None."""
        if (
            self.state is PmtuState.SEARCH_COMPLETE
            and self._raise_at is not None
            and now >= self._raise_at
        ):
            self._raise_at = None
            self._high = self.max_bytes
            self._failed = False
            self._optimistic = True
            self.state = PmtuState.SEARCHING
            self._next_candidate()
        if self.state is not PmtuState.SEARCHING or self.probe_size is None:
            return None
        if self.probe_deadline is not None:
            return None  # one probe in flight at a time
        return self.probe_size

    def on_probe_sent(self, now: float, rto_s: float) -> None:
        self.probe_count += 1
        self.probes_sent += 1
        timer = OPTIMISTIC_PROBE_TIMER_S if self._optimistic else max(rto_s, MIN_PROBE_TIMER_S)
        self.probe_deadline = now + timer

    def on_probe_acked(self, size: int, now: float) -> bool:
        """The peer received a probe of `size` bytes. True when plpmtu grew."""
        if size <= self.plpmtu or size > self.max_bytes:
            return False
        self.probes_acked += 1
        self._optimistic = False
        self.plpmtu = size
        if self.probe_size is not None and size >= self.probe_size:
            self.probe_size = None
        self._next_candidate()
        if self.state is PmtuState.SEARCH_COMPLETE:
            self._raise_at = now + RAISE_TIMER_S
        return True

    def on_timer(self, now: float) -> None:
        """The probe in flight was not acknowledged in time."""
        if self.probe_deadline is None or now < self.probe_deadline:
            return
        self.probe_deadline = None
        if self._optimistic:  # not acknowledged: climb the ladder instead (size not ruled out)
            self._optimistic = False
            self._next_candidate()
            return
        if self.probe_count >= MAX_PROBES and self.probe_size is not None:
            self._high = self.probe_size - 1  # this size does not cross the path
            self._failed = True
            self._next_candidate()
            if self.state is PmtuState.SEARCH_COMPLETE:
                self._raise_at = now + RAISE_TIMER_S

    def lower_ceiling(self, max_bytes: int, now: float) -> bool:
        """Nothing larger than max_bytes can leave (the local stack said EMSGSIZE): never probe
        above it again, and shrink plpmtu to it. True when plpmtu fell."""
        max_bytes = max(max_bytes, 1)
        if max_bytes >= self.max_bytes and self.plpmtu <= max_bytes:
            return False
        self.max_bytes = min(self.max_bytes, max_bytes)
        self._high = min(self._high, self.max_bytes)
        self.base_bytes = min(self.base_bytes, self.max_bytes)
        shrunk = self.plpmtu > self.max_bytes
        if shrunk:
            self.plpmtu = self.max_bytes
        if self.probe_size is not None and self.probe_size > self.max_bytes:
            self.probe_deadline = None
            self.probe_size = None
            if self.state is PmtuState.SEARCHING:
                self._next_candidate()
        if self.state is PmtuState.SEARCHING and self.probe_size is None:
            self._next_candidate()
        return shrunk

    def on_packet_too_big(self, size: int, now: float) -> bool:
        """A report (ICMP "fragmentation needed" / "packet too big", validated by the caller
        against a datagram this connection sent: RFC 8899 4.6.1) that nothing above `size`
        bytes crosses the path. A hint, checked here too (RFC 8899 4.6.2): ignored when it
        names less than MIN_PLPMTU_BYTES or no less than anything sent (plpmtu, the probe in
        flight); else a probe above it fails at once, the next probe is of exactly that size, the
        search stays below it until the raise timer, and data above it shrinks to it. True when
        plpmtu fell."""
        largest_sent = max(self.plpmtu, self.probe_size or 0)
        if size < MIN_PLPMTU_BYTES or size >= largest_sent:
            return False
        self._high = min(self._high, size)
        self._failed = True
        self._optimistic = True  # the next probe is the size it names, once (RFC 8899 4.6.2)
        if self.probe_size is not None and self.probe_size > size:
            self.probe_size = None
            self.probe_deadline = None
        if size < self.plpmtu:
            self.plpmtu = size
            self.probe_size = None
            self.probe_deadline = None
            if self.state is not PmtuState.DISABLED:
                self.state = PmtuState.SEARCH_COMPLETE
                self._raise_at = now + RAISE_TIMER_S / 10
            return True
        if self.state is PmtuState.SEARCHING and self.probe_size is None:
            self._next_candidate()
            if self.state is PmtuState.SEARCH_COMPLETE:
                self._raise_at = now + RAISE_TIMER_S
        return False

    def black_hole(self, now: float, current_bytes: int | None = None) -> int | None:
        """Datagrams of current_bytes (default: plpmtu) stopped getting through: fall back to
        the base size, or below it to MIN_PLPMTU_BYTES when the base size itself is lost.
        Returns the new size, or None when there is nothing smaller to fall back to."""
        current = self.plpmtu if current_bytes is None else current_bytes
        if current > self.base_bytes:
            size = self.base_bytes
        elif current > MIN_PLPMTU_BYTES:
            size = MIN_PLPMTU_BYTES
        else:
            return None
        self.plpmtu = size
        self.probe_size = None
        self.probe_deadline = None
        if size == MIN_PLPMTU_BYTES and self.state is not PmtuState.DISABLED:
            # even the base size is lost (RFC 8899 5.2 ERROR: a link below 1,428 bytes behind
            # the first hop, such as a 1280-byte tunnel): search between the minimum and the
            # base size at once, rather than run at the minimum until the raise timer. Below
            # the base, not below `current`: timeouts may be congestion, and only probes may
            # narrow the search (else each spurious black hole would ratchet the size down)
            self._high = self.base_bytes - 1
            self._failed = True
            self._optimistic = False
            self.state = PmtuState.SEARCHING
            self._raise_at = None
            self._next_candidate()
            return size
        self._high = self.max_bytes
        self.state = PmtuState.SEARCH_COMPLETE
        self._raise_at = now + RAISE_TIMER_S / 10
        return size

    def timer(self) -> float | None:
        return self.probe_deadline
