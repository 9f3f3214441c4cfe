"""The proxy's socket loop: non-blocking UDP sockets, one selector, one timer heap.

One listening socket faces the clients; each client gets its own socket connected to the
upstream, so replies find their way back and the kernel filters strangers. Each wakeup drains
every ready socket (bounded per socket so timers still run under a flood), feeds the datagrams to
the direction's `Impairer`, sends what is due now and pushes the rest onto one heap of
(release_time, seq, ...) entries that the loop sleeps towards. When a direction has no
impairment the loop skips the impairer and sends straight from the receive buffer.

Every socket asks for UDP GRO and sends with GSO (rtcp/net/udp.py): a sender's GSO batch
arrives in one read and, on the no-impairment path, leaves in one send, whole. A direction whose
only impairment is an MTU takes the same path for a batch whose segments fit (only datagrams
above the MTU are dropped, so such a batch passes whole). Any other impairment cuts the batch
into its datagrams, and the Impairer sees each one, as without GRO. Counters stay per datagram.
RTCP_NO_GSO=1 (or a kernel without GRO) reads and sends one datagram per system call.

Live changes (rtcp.proxy.control: the control API, scenarios, the Lab) run on the loop's own
thread, between two wakeups: another thread hands a function to `call_soon` and the loop runs it
after its current batch, so a change never lands in the middle of a datagram's decision. The
loop also offers what a change needs: a pause holds a direction's datagrams here (before the
impairer) and feeds them in when the link resumes; `reset` forgets every client mapping, as a
NAT reboot does.
"""

from __future__ import annotations

import dataclasses
import heapq
import queue
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from rtcp.errors import LocalIOError, UsageError
from rtcp.net import udp
from rtcp.proxy.defaults import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_CLIENTS
from rtcp.proxy.impair import DirectionStats, Impairer
from rtcp.units import format_hostport

RECV_BUFFER_BYTES = 65536  # larger than any UDP payload (65507 over IPv4)
RECV_BATCH_PER_WAKEUP = 256  # datagrams per socket per wakeup: due releases are not starved
MAX_HELD_DATAGRAMS = 200_000  # delay line cap (both directions), beyond: dropped "overflow"
MAX_HELD_BYTES = 256 * 1024 * 1024
HOUSEKEEPING_INTERVAL_S = 1.0  # idle expiry and the periodic callback (stats file)
MAX_SELECT_TIMEOUT_S = 0.5
MAX_PAUSED_DATAGRAMS = 100_000  # held by a pause (both directions); beyond: dropped "down"
MAX_PAUSED_BYTES = 128 * 1024 * 1024


_WAKE = object()  # selector key data of the self-pipe that stop() writes to


def _resolve(host: str, port: int, what: str, passive: bool) -> tuple[int, tuple[Any, ...]]:
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {what} address {format_hostport(host, port)}: {exc}")
    # a name with both families: IPv4 first, as the sender and receiver resolve it
    # (rtcp.net.driver.resolve), so that "localhost" means the same socket to all three
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _tune(sock: socket.socket) -> None:
    """Large buffers absorb bursts (rtcp.net.udp.tune_buffers); the loop never blocks; the
    kernel never fragments what the proxy sends (udp.forbid_fragmentation: Don't Fragment)."""
    udp.tune_buffers(sock)
    udp.forbid_fragmentation(sock)
    sock.setblocking(False)


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _mtu_only(impairer: Any) -> int | None:
    """The MTU of a direction whose only impairment is an MTU (a plain Impairer), else None."""
    if (
        not isinstance(impairer, Impairer)
        or impairer.passthrough
        or impairer.link_down
        or impairer.paused
    ):
        return None
    config = impairer.config
    if config.mtu_bytes is None or not dataclasses.replace(config, mtu_bytes=None).is_passthrough:
        return None
    return config.mtu_bytes


class _Client:
    __slots__ = ("addr", "gro", "gso", "last_seen_s", "link_mtu", "sock")

    def __init__(
        self,
        addr: tuple[Any, ...],
        sock: socket.socket,
        now: float,
        gro: bool = False,
        gso: udp.Gso | None = None,
    ):
        self.addr = addr
        self.sock = sock
        self.last_seen_s = now
        self.gro = gro  # GRO on its upstream socket: one read may hold a batch
        self.gso = gso if gso is not None else udp.Gso(enabled=False)
        # the largest datagram the link toward the client carries whole (None: unknown)
        self.link_mtu = udp.path_mtu_payload(addr)


class Proxy:
    """Forwards client <-> upstream datagrams through two impairers until stop() is called."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        up: Impairer,
        down: Impairer,
        *,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        periodic: Callable[[Proxy], None] | None = None,
        periodic_interval_s: float = HOUSEKEEPING_INTERVAL_S,
        pcap: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """pcap: a rtcp.trace.pcap.PcapWriter (--pcap) that records every datagram in and out
        of the proxy's sockets (the caller closes it); None costs nothing. clock: the seconds
        that release times and idle expiry count in (a test offsets it: nothing may depend on
        the clock's absolute value)."""
        self._clock = clock
        self.up = up
        self._pcap = pcap
        self.down = down
        self.idle_timeout_s = idle_timeout_s
        self.max_clients = max_clients
        self.periodic = periodic
        self.periodic_interval_s = periodic_interval_s
        self.clients_total = 0
        self.clients_rejected = 0  # datagrams from new clients refused: table full or no socket
        self.recv_errors = 0
        self._upstream_text = format_hostport(*upstream)
        self._up_family, self._up_addr = _resolve(*upstream, "upstream", passive=False)
        # a datagram larger than the outgoing link carries is dropped and counted (dropped.mtu),
        # as a router drops it: DF is set, the proxy never fragments
        self._up_link_mtu = udp.path_mtu_payload(self._up_addr)
        family, listen_addr = _resolve(*listen, "listen", passive=True)
        self._clients: dict[tuple[Any, ...], _Client] = {}
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._held_bytes = 0
        self._stopping = False
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        # held by a pause, in arrival order: (impairer, datagram, client address, is_up)
        self._paused: deque[tuple[Any, bytes, tuple[Any, ...], bool]] = deque()
        self._paused_bytes = 0
        self._holding = False  # some direction is paused: _impair checks which
        self.controller: Any = None  # rtcp.proxy.control.Controller: live changes, timers
        self.first_datagram_s: float | None = None  # when the first client datagram arrived
        self._buf = bytearray(RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._sel = selectors.DefaultSelector()
        self._listen = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:  # [::] serves IPv4 clients too, where the OS allows
                self._listen.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            _tune(self._listen)
            self._listen.bind(listen_addr)
        except OSError as exc:
            self._listen.close()
            self._sel.close()
            raise LocalIOError(f"cannot listen on {format_hostport(*listen)}: {exc.strerror}")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._gro = udp.enable_gro(self._listen)
        self._gso = udp.Gso(self._listen)
        # the MTU of a direction impaired by nothing but an MTU: it keeps the batch fast path
        self._mtu_up = _mtu_only(up)
        self._mtu_down = _mtu_only(down)
        if pcap is not None:
            from rtcp.trace.pcap import TapSocket

            self._listen = TapSocket(self._listen, pcap)
        self._sel.register(self._listen, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._closed = False
        host, port = self._listen.getsockname()[:2]
        self.local_address: tuple[str, int] = (host, port)  # the real port when asked for 0
        self.started_s = clock()

    @property
    def held_datagrams(self) -> int:
        return len(self._heap)

    def stop(self) -> None:
        """Ask run() to return; safe from a signal handler or another thread."""
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def call_soon(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run fn() on the loop's thread between two wakeups; safe from any thread. The future
        gets its result or its exception (a stopped loop never runs it: wait with a timeout)."""
        future: Future[Any] = Future()
        self._calls.put((fn, future))
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        return future

    def _run_calls(self) -> None:
        calls = self._calls
        while not calls.empty():
            fn, future = calls.get_nowait()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - handed to the caller, never lost
                future.set_exception(exc)

    def now(self) -> float:
        """The loop's clock: what release times, change records and timers count in."""
        return self._clock()

    def refresh_paths(self) -> None:
        """After a change to an impairer: recompute which directions take the MTU-only path,
        and whether any direction is paused."""
        self._mtu_up = _mtu_only(self.up)
        self._mtu_down = _mtu_only(self.down)
        self._holding = bool(self.up.paused or self.down.paused)

    @property
    def paused_datagrams(self) -> int:
        return len(self._paused)

    def resume(self, impairer: Any, now: float) -> int:
        """After `impairer.set_paused(False)`: feed its held datagrams to the pipeline, in
        arrival order, as if they arrived now (a held client datagram takes its client's
        current mapping, a new one after a reset). Returns how many were fed."""
        fed = 0
        keep: deque[tuple[Any, bytes, tuple[Any, ...], bool]] = deque()
        held = self._paused
        while held:
            entry = held.popleft()
            owner, data, client_addr, is_up = entry
            if owner is not impairer:
                keep.append(entry)
                continue
            self._paused_bytes -= len(data)
            fed += 1
            if is_up:
                client = self._clients.get(client_addr) or self._add_client(client_addr, now)
                if client is None:  # counted in clients_rejected, as a new datagram would be
                    continue
                client.last_seen_s = now
                self._impair(impairer, data, client.sock, None, client_addr)
            else:
                self._impair(impairer, data, self._listen, client_addr, client_addr)
        self._paused = keep
        return fed

    def reset_clients(self) -> tuple[int, int]:
        """Forget every client mapping, as a NAT reboot does: each upstream socket closes, the
        next datagram from a client gets a new one (a new upstream port). Datagrams already
        decided for a forgotten socket are lost with it (`dropped.reset`). Returns (mappings
        forgotten, datagrams dropped)."""
        closed = {id(client.sock) for client in self._clients.values()}
        forgotten = len(self._clients)
        for client in self._clients.values():
            self._sel.unregister(client.sock)
            client.sock.close()
        self._clients.clear()
        dropped = 0
        if closed:
            kept = []
            for entry in self._heap:
                if id(entry[2]) in closed:
                    entry[5].unsend(len(entry[4]), "dropped_reset")
                    self._held_bytes -= len(entry[4])
                    dropped += 1
                else:
                    kept.append(entry)
            if dropped:
                heapq.heapify(kept)
                self._heap[:] = kept
        return forgotten, dropped

    def snapshot(self) -> dict[str, Any]:
        """Everything the stats file and the summary report, as plain JSON-able data."""
        snap = {
            "listen": format_hostport(*self.local_address),
            "upstream": self._upstream_text,
            "elapsed_s": round(self._clock() - self.started_s, 6),
            "clients_active": len(self._clients),
            "clients_total": self.clients_total,
            "clients_rejected": self.clients_rejected,
            "held_datagrams": len(self._heap),
            "paused_datagrams": len(self._paused),
            "recv_errors": self.recv_errors,
            "up": self.up.stats.to_dict(),
            "down": self.down.stats.to_dict(),
        }
        if self.controller is not None:
            snap.update(self.controller.snapshot())
        return snap

    def run(self) -> None:
        """Serve until stop(); then count what was still held and close every socket."""
        try:
            self._serve()
        finally:
            for entry in self._heap:
                entry[5].unsend(len(entry[4]), "unsent_at_exit")
            self._heap.clear()
            for impairer, data, _, _ in self._paused:  # never fed: in, and unsent
                stats = impairer.stats
                stats.datagrams_in += 1
                stats.bytes_in += len(data)
                stats.unsent_at_exit += 1
            self._paused.clear()
            self._paused_bytes = 0
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in self._clients.values():
            client.sock.close()
        self._clients.clear()
        self._sel.close()
        self._listen.close()
        self._wake_r.close()
        self._wake_w.close()

    def _serve(self) -> None:
        select = self._sel.select
        heap = self._heap
        monotonic = self._clock
        next_housekeeping = monotonic() + self.periodic_interval_s
        controller = self.controller
        while not self._stopping:
            now = monotonic()
            timeout = next_housekeeping - now
            if heap and heap[0][0] - now < timeout:
                timeout = heap[0][0] - now
            if controller is not None and controller.next_deadline_s - now < timeout:
                timeout = controller.next_deadline_s - now
            timeout = min(max(timeout, 0.0), MAX_SELECT_TIMEOUT_S)
            for key, _ in select(timeout):
                data = key.data
                if data is None:
                    self._read_clients()
                elif data is _WAKE:
                    self._drain_wake()
                else:
                    self._read_upstream(data)
            if controller is not None and controller.next_deadline_s <= monotonic():
                controller.run_due(monotonic())
            if heap:
                self._release_due(monotonic())
            now = monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + self.periodic_interval_s
                self._expire_idle(now)
                if self.periodic is not None:
                    self.periodic(self)
        # Whatever arrived before the stop request still counts: one last pass over every socket.
        self._read_clients()
        for client in list(self._clients.values()):
            self._read_upstream(client)
        if heap:
            self._release_due(monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        self._run_calls()

    def _first_datagram(self, now: float) -> None:
        self.first_datagram_s = now
        if self.controller is not None:
            self.controller.on_first_datagram(now)

    def _read_clients(self) -> None:
        """Client -> upstream ("up"): every ready datagram on the listening socket. With GRO
        one read may be a batch of datagrams of one sender; without it (an old kernel,
        RTCP_NO_GSO=1) every read is one datagram and the same loop serves."""
        recvmsg_into = self._listen.recvmsg_into
        buffers, view, ancbuf = [self._buf], self._view, udp.GRO_ANCBUF
        gro_size = udp.gro_size
        clients = self._clients
        impairer = self.up
        mtu = self._mtu_up
        forward = impairer.passthrough or mtu is not None
        link = self._up_link_mtu
        if forward:
            mtu = _smaller(mtu, link)
        now = self._clock()
        # the forwarding paths' counts: sent, failed (send errors), dropped (above the MTU)
        sent = sent_bytes = failed = failed_bytes = dropped = dropped_bytes = 0
        batched = 0  # datagrams beyond the first in batch reads: they count against the bound
        first = self.first_datagram_s is None
        for _ in range(RECV_BATCH_PER_WAKEUP):
            try:
                n, ancdata, _flags, addr = recvmsg_into(buffers, ancbuf)
            except BlockingIOError:
                break
            except OSError:
                self.recv_errors += 1
                continue
            if first:  # a scenario may start now: the settings may change before this one
                first = False
                self._first_datagram(now)
                mtu = self._mtu_up
                forward = impairer.passthrough or mtu is not None
            client = clients.get(addr)
            if client is None:
                client = self._add_client(addr, now)
                if client is None:
                    if ancdata:  # counted per datagram
                        self.clients_rejected += udp.count_segments(n, gro_size(ancdata)) - 1
                    continue
            client.last_seen_s = now
            if not ancdata and forward:  # one datagram: the common case without GSO peers
                if mtu is not None and n > mtu:
                    dropped += 1
                    dropped_bytes += n
                    continue
                try:
                    client.sock.send(view[:n])
                except OSError:
                    failed += 1
                    failed_bytes += n
                    continue
                sent += 1
                sent_bytes += n
                continue
            size = gro_size(ancdata) if ancdata else 0
            if not forward:
                for datagram in udp.split(view, n, size):
                    if link is not None and len(datagram) > link:
                        dropped += 1
                        dropped_bytes += len(datagram)
                        continue
                    self._impair(impairer, bytes(datagram), client.sock, None, addr)
            else:
                done = self._forward(view, n, size, client.sock, None, client.gso, mtu)
                sent += done[0]
                sent_bytes += done[1]
                failed += done[2]
                failed_bytes += done[3]
                dropped += done[4]
                dropped_bytes += done[5]
            batched += udp.count_segments(n, size) - 1
            if batched >= RECV_BATCH_PER_WAKEUP:
                break
        if sent or failed or dropped:
            self._count(
                impairer.stats, sent, sent_bytes, failed, failed_bytes, dropped, dropped_bytes
            )

    @staticmethod
    def _forward(
        view: memoryview,
        n: int,
        size: int,
        sock: Any,
        addr: tuple[Any, ...] | None,
        gso: udp.Gso,
        mtu: int | None,
    ) -> tuple[int, int, int, int, int, int]:
        """The no-impairment path (mtu None) or the MTU-only one for one GRO read (n bytes,
        segments of `size`; 0: one datagram): forwarded whole when every datagram fits the MTU.
        Returns (sent, bytes), (failed, bytes), (dropped above the MTU, bytes)."""
        count = udp.count_segments(n, size)
        if mtu is None or (size if 0 < size < n else n) <= mtu:
            sent, sent_bytes = udp.send_segments(sock, view[:n], size, addr, gso)
            return sent, sent_bytes, count - sent, n - sent_bytes, 0, 0
        sent = sent_bytes = failed = failed_bytes = dropped = dropped_bytes = 0
        for datagram in udp.split(view, n, size):  # some are above the MTU: one by one
            length = len(datagram)
            if length > mtu:
                dropped += 1
                dropped_bytes += length
                continue
            try:
                if addr is None:
                    sock.send(datagram)
                else:
                    sock.sendto(datagram, addr)
            except OSError:
                failed += 1
                failed_bytes += length
                continue
            sent += 1
            sent_bytes += length
        return sent, sent_bytes, failed, failed_bytes, dropped, dropped_bytes

    @staticmethod
    def _count(
        stats: DirectionStats,
        sent: int,
        sent_bytes: int,
        failed: int,
        failed_bytes: int,
        dropped: int,
        dropped_bytes: int,
    ) -> None:
        """Add what the forwarding paths did to a direction's counters, as Impairer.process
        and the send-error accounting would have, datagram by datagram."""
        stats.datagrams_in += sent + failed + dropped
        stats.bytes_in += sent_bytes + failed_bytes + dropped_bytes
        stats.datagrams_out += sent
        stats.bytes_out += sent_bytes
        stats.dropped_mtu += dropped
        stats.send_errors += failed

    def _read_upstream(self, client: _Client) -> None:
        """Upstream -> client ("down"): every ready datagram on one client's upstream socket,
        read like _read_clients reads (a batch per read with GRO, one datagram without)."""
        recvmsg_into = client.sock.recvmsg_into
        buffers, view, ancbuf = [self._buf], self._view, udp.GRO_ANCBUF
        listen = self._listen
        sendto = listen.sendto
        addr = client.addr
        impairer = self.down
        mtu = self._mtu_down
        forward = impairer.passthrough or mtu is not None
        link = client.link_mtu
        if forward:
            mtu = _smaller(mtu, link)
        sent = sent_bytes = failed = failed_bytes = dropped = dropped_bytes = 0
        batched = 0
        received = False
        for _ in range(RECV_BATCH_PER_WAKEUP):
            try:
                n, ancdata, _flags, _src = recvmsg_into(buffers, ancbuf)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                self.up.stats.refused += 1  # an earlier up datagram met a closed port
                continue
            except OSError:
                self.recv_errors += 1
                break
            received = True
            if not ancdata and forward:  # one datagram
                if mtu is not None and n > mtu:
                    dropped += 1
                    dropped_bytes += n
                    continue
                try:
                    sendto(view[:n], addr)
                except OSError:
                    failed += 1
                    failed_bytes += n
                    continue
                sent += 1
                sent_bytes += n
                continue
            size = udp.gro_size(ancdata) if ancdata else 0
            if not forward:
                for datagram in udp.split(view, n, size):
                    if link is not None and len(datagram) > link:
                        dropped += 1
                        dropped_bytes += len(datagram)
                        continue
                    self._impair(impairer, bytes(datagram), listen, addr, addr)
            else:
                done = self._forward(view, n, size, listen, addr, self._gso, mtu)
                sent += done[0]
                sent_bytes += done[1]
                failed += done[2]
                failed_bytes += done[3]
                dropped += done[4]
                dropped_bytes += done[5]
            batched += udp.count_segments(n, size) - 1
            if batched >= RECV_BATCH_PER_WAKEUP:
                break
        if received:
            client.last_seen_s = self._clock()
        if sent or failed or dropped:
            self._count(
                impairer.stats, sent, sent_bytes, failed, failed_bytes, dropped, dropped_bytes
            )

    def _impair(
        self,
        impairer: Impairer,
        data: bytes,
        sock: socket.socket,
        addr: tuple[Any, ...] | None,
        client_addr: tuple[Any, ...],
    ) -> None:
        if self._holding and impairer.paused:
            self._hold(impairer, data, client_addr, addr is None)
            return
        now = self._clock()
        heap = self._heap
        stats = impairer.stats
        for release, out in impairer.process(data, now):
            # Send at once only if nothing due earlier is still waiting: keeps the order.
            if release <= now and (not heap or heap[0][0] > release):
                self._send(sock, addr, out, stats)
            elif len(heap) >= MAX_HELD_DATAGRAMS or self._held_bytes + len(out) > MAX_HELD_BYTES:
                stats.unsend(len(out), "dropped_overflow")
            else:
                self._seq += 1
                self._held_bytes += len(out)
                heapq.heappush(heap, (release, self._seq, sock, addr, out, stats))

    def _hold(
        self, impairer: Impairer, data: bytes, client_addr: tuple[Any, ...], is_up: bool
    ) -> None:
        stats = impairer.stats
        if (
            len(self._paused) >= MAX_PAUSED_DATAGRAMS
            or self._paused_bytes + len(data) > MAX_PAUSED_BYTES
        ):
            stats.datagrams_in += 1
            stats.bytes_in += len(data)
            stats.dropped_down += 1
            return
        stats.held += 1
        self._paused_bytes += len(data)
        self._paused.append((impairer, data, client_addr, is_up))

    @staticmethod
    def _send(
        sock: socket.socket, addr: tuple[Any, ...] | None, data: bytes, stats: DirectionStats
    ) -> None:
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:  # refused, buffer full, client socket closed: count, never fail
            stats.unsend(len(data), "send_errors")

    def _release_due(self, now: float) -> None:
        heap = self._heap
        send = self._send
        while heap and heap[0][0] <= now:
            _, _, sock, addr, data, stats = heapq.heappop(heap)
            self._held_bytes -= len(data)
            send(sock, addr, data, stats)

    def _add_client(self, addr: tuple[Any, ...], now: float) -> _Client | None:
        if len(self._clients) >= self.max_clients:
            self._expire_idle(now)
            if len(self._clients) >= self.max_clients:
                self.clients_rejected += 1
                return None
        sock = socket.socket(self._up_family, socket.SOCK_DGRAM)
        try:
            _tune(sock)
            sock.connect(self._up_addr)
        except OSError:
            sock.close()
            self.clients_rejected += 1
            return None
        gro = udp.enable_gro(sock) if self._gro else False
        gso = udp.Gso(sock)
        if self._pcap is not None:
            from rtcp.trace.pcap import TapSocket

            sock = TapSocket(sock, self._pcap)
        client = _Client(addr, sock, now, gro, gso)
        self._sel.register(sock, selectors.EVENT_READ, client)
        self._clients[addr] = client
        self.clients_total += 1
        return client

    def _expire_idle(self, now: float) -> None:
        deadline = now - self.idle_timeout_s
        for addr, client in list(self._clients.items()):
            if client.last_seen_s < deadline:
                del self._clients[addr]
                self._sel.unregister(client.sock)
                client.sock.close()
