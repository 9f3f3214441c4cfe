"""The UDP event loop that drives sans-IO core connections (selectors, one socket).

One Driver owns one non-blocking UDP socket and any number of connections on it: client
connections opened with connect(), and, once listen() was called, server connections created
for each new SYN. Datagrams are routed by the destination connection id (the id the local
side chose) when it is non-zero; a first SYN (dst_id 0) by (peer address, source id).

Each connection has an application object (an App subclass) that the loop calls:

    app.connection_made(handle)       once, before anything else
    app.event_received(event, now)    for every core event, in order
    app.poll(now)                     after the events of an iteration: read/send more here
    app.deadline() -> float | None    an application timer (absolute monotonic time)
    app.on_deadline(now)              called once now >= deadline()

One iteration: read EVERY ready datagram (until BlockingIOError) and feed it, run the due
timers, drain each connection's events into its app, let the app poll, send every datagram the
core wants to send, then sleep until the earliest timer or the next datagram.
The clock is time.monotonic(). Nothing here knows about files: the benchmark and other
applications reuse it.

System calls (rtcp/net/udp.py): the socket asks for UDP GRO, so one read returns every
datagram a peer sent with one GSO send (up to 64); each connection's datagrams of an iteration
go out with send_batch, one GSO sendmsg per run of equal-sized datagrams. Where the kernel
lacks either (or RTCP_NO_GSO=1), one recvfrom_into / sendto per datagram, as before.

Real links (docs/design.md): the socket never lets the kernel fragment (udp.forbid_fragmentation:
Don't Fragment, the kernel's cached path MTU ignored); each connection's largest datagram is
capped at its first hop's MTU (udp.path_mtu_payload toward the peer, cached per address:
RouteMtuCache), the ceiling of its path MTU
discovery; a send the kernel refuses as too big (EMSGSIZE) shrinks the connection at once
(Connection.datagram_too_big), never ends it. An IPv6 socket is dual stack where the OS allows
(IPV6_V6ONLY off): `--listen [::]:9000` serves IPv4 clients too, as IPv4-mapped addresses.
"""

from __future__ import annotations

import dataclasses
import errno
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from rtcp.core import events as ev
from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection
from rtcp.core.validation import AmplificationLimit, PathValidator, RetryTokens
from rtcp.net import heap, udp

_RECV_BUFFER_BYTES = udp.RECV_BUFFER_BYTES
# Datagrams read per wakeup before the loop services timers and sends; it goes on reading at
# once (select with a zero timeout) so nothing waits, but acks and timers are not starved.
_MAX_READS_PER_WAKEUP = 4096
# The same bound for a GRO socket, where one read returns up to 64 datagrams for one system call:
# read that cheaply, 4096 datagrams would be decoded before the ACK for them goes out while the
# sender, having sent its window, idles. Acknowledging every 128 or so keeps both ends busy:
# 50 MB through `rtcp proxy --mtu 1400`, 100-110 MB/s with 4096, 140-150 MB/s with 128
# (64: 130-145, 256: 120-158, 1: 100-114). docs/performance.md, "System calls: GSO and GRO".
_MAX_GRO_DATAGRAMS_PER_WAKEUP = 128
# After ConnectionClosed a connection stays routed this long (at most) so that its final
# ACKs answer a peer that retransmits its FIN; TIME-WAIT is otherwise shortcut.
_LINGER_S = 2.0
# Queued datagrams (EAGAIN) handed to one send_batch call when the socket is writable again.
_MAX_PENDING_BATCH = 1024
# The first hop's MTU toward a peer (udp.path_mtu_payload: a throwaway socket, a connect and a
# getsockopt) is remembered per destination address this long, so that a SYN flood costs no
# socket per SYN; short, so that new connections soon see a route that changed. A send refused
# with EMSGSIZE always asks the kernel again (and refreshes the entry).
ROUTE_MTU_TTL_S = 2.0
# At most this many destination addresses remembered (the oldest forgotten first): a flood from
# many addresses costs one lookup per address, and bounded memory.
ROUTE_MTU_CACHE_ENTRIES = 1024


@dataclass
class ListenLimits:
    """What SYNs may make a listener spend (README: Security and limits). A half-open
    connection (a SYN answered, its handshake not complete) has no application yet and sends
    at most 3x what its address sent (validation.AmplificationLimit)."""

    max_half_open: int = 1024  # half-open connections in all; a SYN beyond is dropped
    # Pressure: with this many half-open (or this many from one IP address), a SYN without a
    # token is answered statelessly with RETRY and only a SYN echoing a valid token gets state.
    retry_above_half_open: int = 64
    retry_above_half_open_per_source: int = 8
    half_open_lifetime_s: float = 5.0  # a handshake not complete by then is dropped, silently
# on_refused's reason for a sender that failed to prove its code after the SYN (SPAKE2 needs the
# round trip): its connection existed, half-open, and is aborted
MID_HANDSHAKE_REFUSAL = "a sender whose code did not match"


class App:
    """Base class of a per-connection application. Override what you need."""

    handle: Handle

    def connection_made(self, handle: Handle) -> None:
        self.handle = handle

    def event_received(self, event: ev.Event, now: float) -> None:
        pass

    def poll(self, now: float) -> None:
        pass

    def deadline(self) -> float | None:
        return None

    def on_deadline(self, now: float) -> None:
        pass

    def connection_refused(self, now: float) -> None:
        """The kernel reported ICMP port unreachable for the peer (ECONNREFUSED): nothing is
        bound there. Only on a socket connected with Driver.connect_socket."""


@dataclass(eq=False)
class Handle:
    """A connection as the loop sees it: the core object, its peer, its app."""

    conn: object
    peer: tuple
    app: App
    driver: Driver
    created: float
    closed_at: float | None = None  # when ConnectionClosed was delivered
    close_reason: str | None = None
    close_error: str | None = None
    syn_key: tuple | None = None
    local_id: int | None = None
    removed: bool = False
    extra: dict = field(default_factory=dict)
    # A listener's connection before its handshake completes: no app yet (app_factory runs
    # when it does), and an address not validated: amplification-limited.
    half_open: bool = False
    amplification: AmplificationLimit | None = None
    path: PathValidator | None = None  # created when a datagram comes from another address
    # packet protection (rtcp.core.protection): seals what the connection sends and opens
    # what it receives; None = plaintext
    protection: object | None = None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def flush(self, now: float) -> None:
        """Send what the connection has queued now, before the app does something slow."""
        if self.driver is not None:
            self.driver._flush(self, now)


@dataclass
class DriverStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    unroutable: int = 0  # datagrams for no known connection (or too short to route)
    resets_sent: int = 0  # RSTs answering segments for no (open) connection
    handshakes_refused: int = 0  # SYNs the listener's Acceptor refused (wrong or no key, ...)
    send_queue_peak: int = 0
    refused: int = 0  # ECONNREFUSED on a connected socket: nothing bound at the peer's port
    too_big: int = 0  # datagrams the kernel refused as larger than the first hop (EMSGSIZE)
    icmp_too_big: int = 0  # ICMP "too big" reports that quoted a live connection: hints used
    icmp_too_big_ignored: int = 0  # ones that did not (forged, or for a closed connection)
    icmp_other: int = 0  # other errors read from the error queue (port unreachable, ...)
    retries_sent: int = 0  # stateless RETRY answers to SYNs under pressure
    tokens_invalid: int = 0  # SYNs with a token that did not validate (dropped)
    half_open_refused: int = 0  # SYNs dropped: limit "half-open connections" reached
    half_open_expired: int = 0  # handshakes not complete within half_open_lifetime_s
    amplification_withheld: int = 0  # datagrams not sent to an unvalidated address (3x limit)
    half_open_peak: int = 0
    path_challenges_sent: int = 0  # PATH_CHALLENGEs to a connection's new address
    path_responses_sent: int = 0
    migrations: int = 0  # connections moved to a new address once it answered
    route_mtu_lookups: int = 0  # first-hop MTUs asked of the kernel (a throwaway socket each)


class RouteMtuCache:
    """The first hop's UDP payload limit per destination address (udp.path_mtu_payload),
    remembered for ROUTE_MTU_TTL_S, at most ROUTE_MTU_CACHE_ENTRIES addresses."""

    def __init__(
        self,
        stats: DriverStats,
        lookup: Callable[[tuple], int | None] | None = None,  # default: udp.path_mtu_payload
        ttl_s: float = ROUTE_MTU_TTL_S,
        max_entries: int = ROUTE_MTU_CACHE_ENTRIES,
    ):
        self._stats = stats
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        # destination (address, scope) -> (limit, asked at); insertion order is age order
        self._entries: dict[tuple, tuple[int | None, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, peer: tuple, now: float) -> int | None:
        entry = self._entries.get(_destination(peer))
        if entry is not None and now - entry[1] < self._ttl_s:
            return entry[0]
        return self.refresh(peer, now)

    def refresh(self, peer: tuple, now: float) -> int | None:
        """Ask the kernel now (the route may have changed: EMSGSIZE) and remember the answer."""
        key = _destination(peer)
        self._stats.route_mtu_lookups += 1
        limit = (self._lookup or udp.path_mtu_payload)(peer)
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (limit, now)
        return limit


def _destination(peer: tuple) -> tuple:
    """What a route depends on: the address (and an IPv6 scope), not the port."""
    return (peer[0], peer[3]) if len(peer) >= 4 else (peer[0], 0)


class Driver:
    """A selectors loop around one UDP socket. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        bind: tuple | None = None,
        *,
        family: int | None = None,
        sock: socket.socket | None = None,
        buffer_bytes: int = udp.SOCKET_BUFFER_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ):
        if sock is None:
            address = tuple(bind) if bind is not None else ("", 0)
            if family is None:
                family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    _dual_stack(sock)
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        heap.keep_freed_memory()  # no page faults from 64 KB buffers going back and forth
        self.sock = sock
        self.sock.setblocking(False)
        udp.tune_buffers(self.sock, buffer_bytes)
        self.dont_fragment = udp.forbid_fragmentation(self.sock)
        self.recverr = udp.enable_recverr(self.sock)  # ICMP "too big" hints (_read_errors)
        self.clock = clock
        self.stats = DriverStats()
        self.route_mtu = RouteMtuCache(self.stats)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, "sock")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._buf = bytearray(_RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        # GRO and GSO are properties of the fd: a TapSocket put in front later keeps them
        self.gro = udp.enable_gro(self.sock)
        self.gso = udp.Gso(self.sock)
        self._by_id: dict[int, Handle] = {}
        self._by_syn: dict[tuple, Handle] = {}
        self._handles: list[Handle] = []
        self._pending: deque[tuple[bytes, tuple]] = deque()  # datagrams waiting for EVENT_WRITE
        self._want_write = False
        self._listen: tuple[Callable[[], ConnectionConfig], Callable[[tuple], App | None]] | None
        self._listen = None
        self.listen_limits = ListenLimits()
        self._tokens = RetryTokens()
        self._half_open: set[Handle] = set()
        self._half_open_by_source: dict[str, int] = {}
        self._acceptor = None  # rtcp.core.protection.Acceptor: listen only to keyed senders
        self._on_refused: Callable[[tuple, str], None] | None = None
        self._more_to_read = False
        self._closed = False
        self._old_wakeup_fd: int | None = None
        self._connected = False  # connect_socket(): refusals are the one peer's

    # --- setup -------------------------------------------------------------------------

    @property
    def local_address(self) -> tuple:
        return self.sock.getsockname()

    @property
    def handles(self) -> list[Handle]:
        return list(self._handles)

    def listen(
        self,
        config: ConnectionConfig | Callable[[], ConnectionConfig],
        app_factory: Callable[[tuple], App | None],
        limits: ListenLimits | None = None,
    ) -> None:
        """Accept connections: app_factory(peer) returns the App for a connection whose
        handshake just completed (None refuses it: RST). SYNs are bounded by limits."""
        factory = config if callable(config) else (lambda: config)
        self._listen = (factory, app_factory)
        if limits is not None:
            self.listen_limits = limits

    @property
    def half_open(self) -> int:
        return len(self._half_open)

    def require_key(self, acceptor, on_refused: Callable[[tuple, str], None] | None = None) -> None:
        """Accept only SYNs that the Acceptor accepts (packet protection); on_refused(peer,
        why) is called for every SYN it refuses, and for a peer whose code did not match."""
        self._acceptor = acceptor
        self._on_refused = on_refused

    def stop_listening(self) -> None:
        self._listen = None

    def connect(
        self, peer: tuple, config: ConnectionConfig, app: App, protection=None
    ) -> Handle:
        """Open a client connection to peer (a resolved socket address) driven by app;
        protection: a rtcp.core.protection.ClientProtection between it and the socket."""
        now = self.clock()
        config = _fit_to_first_hop(config, self.route_mtu.get(peer, now))
        if protection is not None:
            config = protection.adjust_config(config)
        conn = Connection(config, is_client=True, now=now)
        handle = self._add(conn, peer, app, now)
        handle.protection = protection
        conn.connect(now)
        self._flush(handle, now)
        return handle

    def _add(self, conn, peer, app: App, now: float) -> Handle:
        handle = Handle(conn=conn, peer=peer, app=app, driver=self, created=now)
        handle.local_id = conn.local_id
        self._by_id[conn.local_id] = handle
        self._handles.append(handle)
        app.connection_made(handle)
        return handle

    def connect_socket(self, peer: tuple) -> None:
        """Connect the UDP socket to its one peer (a client's): the kernel then reports an ICMP
        port unreachable as ECONNREFUSED, which the apps hear as connection_refused(), and
        drops datagrams from any other address. Call it before wrapping self.sock."""
        self.sock.connect(peer)
        self._connected = True

    def _socket_error(self, exc: OSError, now: float) -> None:
        """A receive or send error: ECONNREFUSED on a connected socket goes to the apps."""
        if exc.errno == errno.ECONNREFUSED and self._connected:
            self.stats.refused += 1
            for h in list(self._handles):
                h.app.connection_refused(now)

    def install_signal_wakeup(self) -> None:
        """Make a signal wake select() at once (signal.set_wakeup_fd): the handler then runs."""
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    def wakeup(self) -> None:
        """Wake a loop blocked in select() (safe from a signal handler or another thread)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._old_wakeup_fd is not None:
            try:
                signal.set_wakeup_fd(self._old_wakeup_fd)
            except (ValueError, OSError):
                pass
        self._sel.close()
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        best = None
        for h in self._handles:
            t = h.conn.get_timer()
            if t is not None and (best is None or t < best):
                best = t
            t = h.app.deadline()
            if t is not None and (best is None or t < best):
                best = t
            if h.closed_at is not None:
                t = h.closed_at + _LINGER_S
                if best is None or t < best:
                    best = t
            if h.half_open:
                t = h.created + self.listen_limits.half_open_lifetime_s
                if best is None or t < best:
                    best = t
            if h.path is not None:
                t = h.path.next_deadline()
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def run(self, until: Callable[[], bool], max_wait_s: float | None = None) -> None:
        """Iterate until until() is true (checked before every iteration)."""
        while not until():
            self.run_once(max_wait_s)

    def run_once(self, max_wait_s: float | None = None) -> None:
        """One iteration: wait for a datagram or the next timer, then do all that is due."""
        now = self.clock()
        if self._more_to_read:
            wait = 0.0
        else:
            deadline = self.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - now)
            if max_wait_s is not None:
                wait = max_wait_s if wait is None else min(wait, max_wait_s)
        try:
            ready = self._sel.select(wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            ready = []
        now = self.clock()
        self._more_to_read = False
        for key, mask in ready:
            if key.data == "sock":
                if mask & selectors.EVENT_READ:
                    self._read_all(now)
                if mask & selectors.EVENT_WRITE:
                    self._send_pending()
            elif key.data == "wake":
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
        self.service(now)

    def service(self, now: float | None = None) -> None:
        """Timers, events, app polls and sends for every connection (no waiting)."""
        if now is None:
            now = self.clock()
        for h in list(self._handles):
            conn = h.conn
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
            if h.half_open and not self._settle_half_open(h, now):
                continue
            if h.path is not None:
                self._challenge(h, now)
            t = h.app.deadline()
            if t is not None and t <= now:
                h.app.on_deadline(now)
            self._drain_events(h, now)
            if not h.closed:
                h.app.poll(now)
                self._drain_events(h, now)
            self._flush(h, now)
            if h.closed_at is not None and (
                now >= h.closed_at + _LINGER_S or _state_name(conn) == "CLOSED"
            ):
                self._remove(h)

    def _settle_half_open(self, h: Handle, now: float) -> bool:
        """A half-open connection: give it its app once the handshake completed (the peer's
        ACK proves its address), drop it once it failed or outlived its lifetime. False: it
        is still half-open (or gone) and needs nothing more this iteration."""
        conn = h.conn
        state = _state_name(conn)
        if state == "SYN_RECEIVED":
            if now >= h.created + self.listen_limits.half_open_lifetime_s:
                self.stats.half_open_expired += 1
                self._remove(h)
                return False
            self._flush(h, now)  # a retransmitted SYN-ACK, within the amplification limit
            return False
        self._leave_half_open(h)
        if conn.is_closed or self._listen is None:
            self._remove(h)
            return False
        h.amplification = None  # validated: the ACK echoed our SYN-ACK's ids and ISS
        app = self._listen[1](h.peer)
        if app is None:
            conn.abort()  # "refused": RST
            self._flush(h, now)
            self._remove(h)
            return False
        h.app = app
        app.connection_made(h)
        return True

    def _leave_half_open(self, h: Handle) -> None:
        if h.half_open:
            h.half_open = False
            self._half_open.discard(h)
            source = h.peer[0]
            left = self._half_open_by_source.get(source, 1) - 1
            if left > 0:
                self._half_open_by_source[source] = left
            else:
                self._half_open_by_source.pop(source, None)

    def _drain_events(self, h: Handle, now: float) -> None:
        conn, app = h.conn, h.app
        while True:
            event = conn.next_event()
            if event is None:
                return
            if isinstance(event, ev.ConnectionClosed) and h.closed_at is None:
                h.closed_at = now
                h.close_reason = event.reason
                h.close_error = event.error
            app.event_received(event, now)

    def _flush(self, h: Handle, now: float) -> None:
        datagrams = h.conn.datagrams_to_send(now)
        if h.protection is not None:
            datagrams = h.protection.seal_all(datagrams)
        if datagrams:
            if h.amplification is not None:
                before = h.amplification.withheld
                datagrams = h.amplification.allow(datagrams)
                self.stats.amplification_withheld += h.amplification.withheld - before
                if not datagrams:
                    return
            if self._send(datagrams, h.peer):
                limit = self.route_mtu.refresh(h.peer, now)
                if limit is not None:
                    h.conn.datagram_too_big(limit - _sealing_overhead(h), now)

    def _open(self, h: Handle, data):
        """The plaintext of a datagram for h, through its protection layer; None = dropped.
        A layer that found the handshake cannot succeed (another key, or a key on one side
        only) ends the connection: its app reads the reason from h.protection.failure."""
        p = h.protection
        opened = p.open(data)
        if p.failure is not None and not h.conn.is_closed:
            if not h.conn.is_client and self._on_refused is not None:
                self._on_refused(h.peer, MID_HANDSHAKE_REFUSAL)
            h.conn.abort()
        elif p.transparent:
            h.protection = None
        return opened

    def _remove(self, h: Handle) -> None:
        if h.removed:
            return
        h.removed = True
        if self._by_id.get(h.local_id) is h:
            del self._by_id[h.local_id]
        if h.syn_key is not None and self._by_syn.get(h.syn_key) is h:
            del self._by_syn[h.syn_key]
        self._leave_half_open(h)
        try:
            self._handles.remove(h)
        except ValueError:
            pass

    def forget(self, h: Handle) -> None:
        """Stop routing a connection at once (its app is done with it)."""
        self._remove(h)

    # --- datagrams ---------------------------------------------------------------------

    def _read_all(self, now: float) -> None:
        if self.gro:
            self._read_all_gro(now)
            return
        sock, buf, view = self.sock, self._buf, self._view
        stats = self.stats
        for i in range(_MAX_READS_PER_WAKEUP):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                if i == 0 and self.recverr:
                    self._read_errors(now)  # woken for nothing to read: an error is queued
                return
            except OSError as exc:
                # e.g. ECONNREFUSED reported for an earlier send (ICMP port unreachable)
                stats.receive_errors += 1
                self._socket_error(exc, now)
                if self.recverr:
                    self._read_errors(now)
                continue
            stats.datagrams_received += 1
            stats.bytes_received += n
            self._route(bytes(view[:n]), addr, now)
        self._more_to_read = True

    def _read_all_gro(self, now: float) -> None:
        """_read_all on a GRO socket: one read may hold many datagrams of one sender. Each read
        is copied once into bytes, and its datagrams go to the core as memoryviews of that
        (Connection.receive_datagrams: a run of in-order data segments is taken in one call,
        their payloads lent to the reader by reference, not copied again)."""
        recvmsg_into = self.sock.recvmsg_into
        buffers, view, ancbuf = [self._buf], self._view, udp.GRO_ANCBUF
        stats = self.stats
        route = self._route
        left = _MAX_GRO_DATAGRAMS_PER_WAKEUP
        while left > 0:
            try:
                n, ancdata, _flags, addr = recvmsg_into(buffers, ancbuf)
            except (BlockingIOError, InterruptedError):
                if left == _MAX_GRO_DATAGRAMS_PER_WAKEUP and self.recverr:
                    self._read_errors(now)  # woken for nothing to read: an error is queued
                return
            except OSError as exc:
                # e.g. ECONNREFUSED reported for an earlier send (ICMP port unreachable)
                stats.receive_errors += 1
                self._socket_error(exc, now)
                left -= 1
                if self.recverr:
                    self._read_errors(now)
                continue
            stats.bytes_received += n
            size = udp.gro_size(ancdata) if ancdata else 0
            if size <= 0 or n <= size:
                stats.datagrams_received += 1
                left -= 1
                route(view[:n], addr, now)
                continue
            whole = memoryview(bytes(view[:n]))
            batch = [whole[pos : pos + size] for pos in range(0, n, size)]
            stats.datagrams_received += len(batch)
            left -= len(batch)
            self._route_batch(batch, addr, now)
        self._more_to_read = True

    def _read_errors(self, now: float) -> None:
        """Drain the socket's error queue (IP_RECVERR): the loop calls this when a read fails
        with the socket's pending error or a wakeup finds nothing to read (epoll reports a
        queued error as readable; undrained, it would wake the loop forever and its entries
        would fill the receive buffer). An ICMP "too big" report is a hint only once it
        quotes a datagram of a live connection to the peer it came for: both connection ids
        (64 random bits an off-path attacker cannot guess, RFC 8899 4.6.1); the connection's
        path MTU discovery then checks the size it names (RFC 8899 4.6.2)."""
        reports, other = udp.read_errors(self.sock)
        stats = self.stats
        stats.icmp_other += other
        for report in reports:
            if report.local:  # EMSGSIZE from the local stack: the send path handled it
                continue
            ids = wire.peek_ids(report.quoted)
            h = self._by_id.get(ids[1]) if ids is not None else None
            if (
                h is None or h.removed or ids[2] != getattr(h.conn, "peer_id", None)
                or tuple(report.peer[:2]) != tuple(h.peer[:2]) or report.mtu <= 0
            ):
                stats.icmp_too_big_ignored += 1
                continue
            stats.icmp_too_big += 1
            h.conn.packet_too_big(
                report.mtu - udp.ip_udp_overhead(h.peer) - _sealing_overhead(h), now
            )

    def _route_batch(self, batch: list, addr: tuple, now: float) -> None:
        """Route datagrams read together: a run addressed to one live connection goes to it in
        one call; anything else (a SYN, an unknown id) one by one through _route."""
        while batch:
            first = batch[0]
            ids = wire.peek_ids(first)
            taken = 0
            if ids is not None and ids[2] and ids[0]:  # flags 0: a path segment, below
                h = self._by_id.get(ids[2])
                if (
                    h is not None
                    and not h.removed
                    and h.amplification is None
                    and addr == h.peer
                    and not h.conn.is_closed
                ):
                    if h.protection is None:
                        taken = h.conn.receive_datagrams(batch, now)
                    else:
                        taken = self._receive_protected(h, batch, ids[2], now)
            if not taken:
                self._route(first, addr, now)
                taken = 1
            batch = batch[taken:]

    def _receive_protected(self, h: Handle, batch: list, dst_id: int, now: float) -> int:
        """_route_batch for a protected connection: open the run of datagrams addressed to it,
        then hand the plaintexts to the connection together (its receive fast path). Returns
        how many datagrams of the batch it consumed."""
        opened = []
        used = h.protection.open_run(batch, dst_id, opened)  # the steady state: one loop
        if used is not None:
            if opened:
                self._receive_opened(h, opened, now)
            return used
        run = 0
        for data in batch:
            ids = wire.peek_ids(data)
            if ids is None or ids[2] != dst_id or not ids[0]:
                break  # another connection's, or a path segment (flags 0): _route's
            run += 1
        opened = []
        used = 0
        for data in batch[:run]:
            used += 1
            plain = self._open(h, data)
            if plain is not None:
                opened.append(plain)
            if h.protection is None or h.conn.is_closed:
                break  # the layer is done (or failed): the rest is routed as usual
        self._receive_opened(h, opened, now)
        return used

    @staticmethod
    def _receive_opened(h: Handle, opened: list, now: float) -> None:
        while opened:
            taken = h.conn.receive_datagrams(opened, now)
            if not taken:  # each one carries its id: only for safety, one by one
                h.conn.receive_datagram(opened[0], now)
                taken = 1
            opened = opened[taken:]

    def _route(self, data: bytes, addr: tuple, now: float) -> None:
        ids = wire.peek_ids(data)
        if ids is None:
            self.stats.unroutable += 1
            return
        flags, src_id, dst_id = ids
        if dst_id and not flags:
            self._on_path_segment(data, addr, dst_id, now)
            return
        if dst_id:
            h = self._by_id.get(dst_id)
            if h is None or h.removed or h.conn.is_closed:
                # no such connection (any more): answer like a closed port would
                self.stats.unroutable += 1
                if not flags & wire.RST:
                    self._reply_rst(data, addr)
                return
            if h.amplification is not None and addr == h.peer:
                h.amplification.on_received(len(data))
            if h.protection is not None:
                data = self._open(h, data)
                if data is None:
                    return
            h.conn.receive_datagram(data, now)
            if addr != h.peer and not h.half_open:
                self._on_new_address(h, addr, len(data), now)
            return
        key = (addr, src_id)
        h = self._by_syn.get(key)
        if h is not None and not h.removed:
            if h.amplification is not None:
                h.amplification.on_received(len(data))
            if h.protection is not None:
                data = self._open(h, data)
                if data is None:
                    return
            h.conn.receive_datagram(data, now)
            return
        if self._listen is None or not (flags & wire.SYN) or (flags & wire.ACK):
            self.stats.unroutable += 1
            return
        self._on_new_syn(data, addr, key, now)

    # --- path validation (rtcp/core/validation.py, RFC 9000 8.2 and 9) -----------------

    def _on_new_address(self, h: Handle, addr: tuple, nbytes: int, now: float) -> None:
        """A live connection's datagram came from another address (a NAT rebinding, a
        restarted middlebox): challenge that address; the connection moves there only once
        it answers. Replies keep going to the validated address meanwhile."""
        if h.path is None:
            h.path = PathValidator(h.peer)
        h.path.on_datagram_from(addr, nbytes, now)
        self._challenge(h, now)

    def _challenge(self, h: Handle, now: float) -> None:
        path = h.path
        value = path.challenge_due(now)
        if value is None:
            return
        dgram = wire.build(
            0, h.conn.local_id, h.conn.peer_id, 0, 0, 0,
            wire.opt_bytes(wire.OPT_PATH_CHALLENGE, value),
        )
        sealed = self._seal_path_segment(h, dgram)
        allowed = path.amplification.allow(sealed) if sealed else []  # 3x what the new address sent
        if allowed:
            self.stats.path_challenges_sent += 1
            self._send(allowed, path.candidate)

    def _on_path_segment(self, data, addr: tuple, dst_id: int, now: float) -> None:
        """A segment with no flags: a PATH_CHALLENGE (answer it to where it came from, the
        same size back) or a PATH_RESPONSE (which may validate a connection's new address)."""
        h = self._by_id.get(dst_id)
        if h is None or h.removed or h.half_open:
            self.stats.unroutable += 1
            return
        if h.protection is not None:
            data = self._open(h, data)  # with a key, only the peer can challenge or answer
            if data is None:
                return
        try:
            seg = wire.decode(data, verify_checksum=h.protection is None)
        except wire.WireError:
            self.stats.unroutable += 1
            return
        if seg.src_id != h.conn.peer_id:
            self.stats.unroutable += 1
            return
        challenge = seg.option(wire.OPT_PATH_CHALLENGE)
        if challenge is not None:
            response = self._seal_path_segment(
                h,
                wire.build(
                    0, h.conn.local_id, h.conn.peer_id, 0, 0, 0,
                    wire.opt_bytes(wire.OPT_PATH_RESPONSE, challenge),
                ),
            )
            if response:
                self.stats.path_responses_sent += 1
                self._send(response, addr)
            return
        response = seg.option(wire.OPT_PATH_RESPONSE)
        if response is not None and h.path is not None and h.path.on_response(response, addr):
            h.peer = addr
            self.stats.migrations += 1
            self._flush(h, now)

    @staticmethod
    def _seal_path_segment(h: Handle, dgram: bytes) -> list:
        """A PATH_CHALLENGE or PATH_RESPONSE as h sends it: sealed like its data when the
        connection is protected (as QUIC's, so that an on-path attacker can neither read a
        challenge nor answer one); nothing while the keys are not there yet."""
        if h.protection is None:
            return [dgram]
        return h.protection.seal_all([dgram])

    def _on_new_syn(self, data, addr: tuple, key: tuple, now: float) -> None:
        """A SYN for no connection yet. Under pressure (many half-open, or many from this
        source) it is answered statelessly with RETRY (validation.RetryTokens) unless it
        echoes a valid token; otherwise a half-open connection answers it with a SYN-ACK
        (within 3x the bytes its address sent, until the handshake completes)."""
        try:
            seg = wire.decode(data)
        except wire.WireError:
            self.stats.unroutable += 1
            return
        limits, stats = self.listen_limits, self.stats
        token = seg.option(wire.OPT_RETRY_TOKEN)
        if token is not None:
            if not self._tokens.valid(token, addr, seg.src_id, now):
                stats.tokens_invalid += 1
                return
        elif (
            len(self._half_open) >= limits.retry_above_half_open
            or self._half_open_by_source.get(addr[0], 0)
            >= limits.retry_above_half_open_per_source
        ):
            stats.retries_sent += 1
            self._send([self._tokens.retry_for(seg, addr, now)], addr)
            return
        if len(self._half_open) >= limits.max_half_open:
            stats.half_open_refused += 1
            return
        config = _fit_to_first_hop(self._listen[0](), self.route_mtu.get(addr, now))
        protection = None
        if self._acceptor is not None:
            # the SYN proves the key before anything is kept for the peer
            protection, reply, why = self._acceptor.accept(data)
            if protection is None:
                stats.handshakes_refused += 1
                if reply is not None:
                    stats.resets_sent += 1
                    self._send([reply], addr)
                if self._on_refused is not None:
                    self._on_refused(addr, why)
                return
            config = protection.adjust_config(config)
        conn = Connection(config, is_client=False, now=now)
        conn.receive_datagram(data, now)
        if _state_name(conn) in ("LISTEN", "CLOSED"):
            # the SYN did not pass the core's checks: nothing to keep
            stats.unroutable += 1
            return
        h = Handle(conn=conn, peer=addr, app=_HALF_OPEN_APP, driver=self, created=now)
        h.local_id = conn.local_id
        h.half_open = True
        h.protection = protection
        h.syn_key = key
        if token is None:  # a valid token proved the address already
            h.amplification = AmplificationLimit()
            h.amplification.on_received(len(data))
        self._by_id[conn.local_id] = h
        self._by_syn[key] = h
        self._handles.append(h)
        self._half_open.add(h)
        self._half_open_by_source[addr[0]] = self._half_open_by_source.get(addr[0], 0) + 1
        stats.half_open_peak = max(stats.half_open_peak, len(self._half_open))
        self._flush(h, now)  # the SYN-ACK

    def _reply_rst(self, data, addr) -> None:
        """Answer a segment for a connection that does not exist (any more) with a RST, as
        RFC 9293 3.10.7.1 has a CLOSED port do: <SEQ=SEG.ACK><CTL=RST> if it carries an ACK,
        else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. This refuses an unwanted SYN, and
        answers the challenge ACK (RFC 5961) that a peer sends for our abort's RST when data
        was in flight, so that the peer learns at once that we are gone. One RST per segment
        received, never for a RST, never for a datagram that fails its checksum."""
        try:
            seg = wire.decode(data)
        except wire.WireError:
            return
        if seg.flags & wire.RST:
            return
        if seg.flags & wire.ACK:
            rst = wire.build(wire.RST, seg.dst_id, seg.src_id, seg.ack, 0, 0)
        else:
            seg_len = 0 if seg.flags & getattr(wire, "PROBE", 0) else len(seg.payload)
            seg_len += 1 if seg.flags & wire.SYN else 0
            seg_len += 1 if seg.flags & wire.FIN else 0
            ack = (seg.seq + seg_len) & 0xFFFFFFFF
            rst = wire.build(wire.RST | wire.ACK, seg.dst_id, seg.src_id, 0, ack, 0)
        self.stats.resets_sent += 1
        self._send([rst], addr)

    def linger(self, seconds: float) -> None:
        """Keep serving (timers, replies to a closed connection's peer) for a short while."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            self.run_once(left)

    def _send(self, datagrams, addr) -> int:
        """Send or queue datagrams to addr. Returns how many the kernel refused as too big
        (EMSGSIZE): the first hop's MTU is below their size."""
        if self._pending:
            self._pending.extend((d, addr) for d in datagrams)
            self._note_queue()
            return 0
        if len(datagrams) > 1 and self.gso.enabled:
            result = udp.send_batch(self.sock, datagrams, addr, self.gso)
            stats = self.stats
            stats.datagrams_sent += result.sent
            stats.bytes_sent += result.sent_bytes
            stats.send_errors += result.errors
            stats.too_big += result.too_big
            if result.done < len(datagrams):
                self._pending.extend((x, addr) for x in datagrams[result.done :])
                self._note_queue()
            return result.too_big
        sock, stats = self.sock, self.stats
        too_big = 0
        for i, d in enumerate(datagrams):
            try:
                sock.sendto(d, addr)
            except (BlockingIOError, InterruptedError):
                self._pending.extend((x, addr) for x in datagrams[i:])
                self._note_queue()
                return too_big
            except OSError as exc:
                # ECONNREFUSED and friends: the datagram is lost, the protocol recovers
                stats.send_errors += 1
                self._socket_error(exc, self.clock())
                if exc.errno == errno.EMSGSIZE:
                    stats.too_big += 1
                    too_big += 1
                continue
            stats.datagrams_sent += 1
            stats.bytes_sent += len(d)
        return too_big

    def _note_queue(self) -> None:
        self.stats.send_queue_peak = max(self.stats.send_queue_peak, len(self._pending))
        if not self._want_write:
            self._want_write = True
            self._sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "sock")

    def _send_pending(self) -> None:
        sock, stats, pending = self.sock, self.stats, self._pending
        if self.gso.enabled:
            # batches of the queue's front datagrams that share an address
            while pending:
                addr = pending[0][1]
                batch = []
                for d, a in pending:
                    if a != addr or len(batch) >= _MAX_PENDING_BATCH:
                        break
                    batch.append(d)
                result = udp.send_batch(sock, batch, addr, self.gso)
                stats.datagrams_sent += result.sent
                stats.bytes_sent += result.sent_bytes
                stats.send_errors += result.errors
                for _ in range(result.done):
                    pending.popleft()
                if result.done < len(batch):
                    return  # EAGAIN again: wait for the next EVENT_WRITE
            self._want_write = False
            self._sel.modify(self.sock, selectors.EVENT_READ, "sock")
            return
        while pending:
            d, addr = pending[0]
            try:
                sock.sendto(d, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.send_errors += 1
            else:
                stats.datagrams_sent += 1
                stats.bytes_sent += len(d)
            pending.popleft()
        self._want_write = False
        self._sel.modify(self.sock, selectors.EVENT_READ, "sock")


_HALF_OPEN_APP = App()  # stands in until the handshake completes (it ignores everything)


def _state_name(conn) -> str:
    state = conn.state
    return getattr(state, "name", str(state))


def _dual_stack(sock: socket.socket) -> None:
    """Let an IPv6 socket bound to :: serve IPv4 too (RFC 3493 5.3), where the OS allows."""
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except (OSError, AttributeError):
        pass


def _sealing_overhead(h: Handle) -> int:
    """Bytes that packet protection adds to each of h's datagrams (its AEAD tag): a size
    limit from the kernel or from ICMP counts sealed bytes, the Connection plaintext ones."""
    return 0 if h.protection is None else h.protection.overhead_bytes


def _fit_to_first_hop(config: ConnectionConfig, limit: int | None) -> ConnectionConfig:
    """config with its largest datagram capped at `limit`, what the first hop toward the peer
    carries whole (its MTU minus the IP and UDP headers: RouteMtuCache), the ceiling of path
    MTU discovery and of the MSS announced; the first segments' size fits it too."""
    if limit is None or limit >= config.max_datagram_bytes:
        return config
    overhead = wire.HEADER_BYTES + wire.TIMESTAMPS_OPTION_BYTES
    mss = max(64, min(config.mss_bytes, limit - overhead))
    return dataclasses.replace(config, max_datagram_bytes=limit, mss_bytes=mss)


def resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, tuple]:
    """(family, sockaddr) for a UDP HOST:PORT; raises OSError (socket.gaierror).

    A name with both IPv4 and IPv6 addresses resolves to IPv4 on both sides (sender and
    receiver), so that "localhost" means the same socket to both of them.
    """
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host or None, port, 0, socket.SOCK_DGRAM, 0, flags)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _type, _proto, _canon, addr = infos[0]
    return family, addr
