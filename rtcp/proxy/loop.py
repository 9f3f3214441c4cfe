"""The proxy's socket loop: non-blocking UDP sockets, one selector, one timer heap.

One listening socket faces the clients; each client gets its own socket connected to the
upstream, so replies find their way back and the kernel filters strangers. Each wakeup drains
every ready socket (bounded per socket so timers still run under a flood), feeds the datagrams to
the direction's `Impairer`, sends what is due now and pushes the rest onto one heap of
(release_time, seq, ...) entries that the loop sleeps towards. When a direction has no
impairment the loop skips the impairer and sends straight from the receive buffer.
"""

from __future__ import annotations

import heapq
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from rtcp.errors import LocalIOError, UsageError
from rtcp.proxy.impair import DirectionStats, Impairer
from rtcp.units import format_hostport

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
RECV_BUFFER_BYTES = 65536  # larger than any UDP payload (65507 over IPv4)
RECV_BATCH_PER_WAKEUP = 256  # per socket per wakeup: bounded so due releases are not starved
DEFAULT_MAX_CLIENTS = 1024
DEFAULT_IDLE_TIMEOUT_S = 60.0
MAX_HELD_DATAGRAMS = 200_000  # delay line cap (both directions), beyond: dropped "overflow"
MAX_HELD_BYTES = 256 * 1024 * 1024
HOUSEKEEPING_INTERVAL_S = 1.0  # idle expiry and the periodic callback (stats file)
MAX_SELECT_TIMEOUT_S = 0.5

# Linux option numbers that Python does not export: let root exceed net.core.rmem_max/wmem_max.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if sys.platform == "linux" else None)

_WAKE = object()  # selector key data of the self-pipe that stop() writes to


def _resolve(host: str, port: int, what: str, passive: bool) -> tuple[int, tuple[Any, ...]]:
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {what} address {format_hostport(host, port)}: {exc}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _tune(sock: socket.socket) -> None:
    """Large buffers absorb bursts; FORCE works for root beyond the sysctl maximum."""
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            if force is None:
                raise OSError
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)
            except OSError:
                pass
    sock.setblocking(False)


class _Client:
    __slots__ = ("addr", "last_seen_s", "sock")

    def __init__(self, addr: tuple[Any, ...], sock: socket.socket, now: float):
        self.addr = addr
        self.sock = sock
        self.last_seen_s = now


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
    ):
        """pcap: a rtcp.trace.pcap.PcapWriter (--pcap) that records every datagram in and out
        of the proxy's sockets (the caller closes it); None costs nothing."""
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
        family, listen_addr = _resolve(*listen, "listen", passive=True)
        self._clients: dict[tuple[Any, ...], _Client] = {}
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self._held_bytes = 0
        self._stopping = False
        self._buf = bytearray(RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._sel = selectors.DefaultSelector()
        self._listen = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _tune(self._listen)
            self._listen.bind(listen_addr)
        except OSError as exc:
            self._listen.close()
            self._sel.close()
            raise LocalIOError(f"cannot listen on {format_hostport(*listen)}: {exc.strerror}")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if pcap is not None:
            from rtcp.trace.pcap import TapSocket

            self._listen = TapSocket(self._listen, pcap)
        self._sel.register(self._listen, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._closed = False
        host, port = self._listen.getsockname()[:2]
        self.local_address: tuple[str, int] = (host, port)  # the real port when asked for 0
        self.started_s = time.monotonic()

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

    def snapshot(self) -> dict[str, Any]:
        """Everything the stats file and the summary report, as plain JSON-able data."""
        return {
            "listen": format_hostport(*self.local_address),
            "upstream": self._upstream_text,
            "elapsed_s": round(time.monotonic() - self.started_s, 6),
            "clients_active": len(self._clients),
            "clients_total": self.clients_total,
            "clients_rejected": self.clients_rejected,
            "held_datagrams": len(self._heap),
            "recv_errors": self.recv_errors,
            "up": self.up.stats.to_dict(),
            "down": self.down.stats.to_dict(),
        }

    def run(self) -> None:
        """Serve until stop(); then count what was still held and close every socket."""
        try:
            self._serve()
        finally:
            for entry in self._heap:
                entry[5].unsend(len(entry[4]), "unsent_at_exit")
            self._heap.clear()
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
        monotonic = time.monotonic
        next_housekeeping = monotonic() + self.periodic_interval_s
        while not self._stopping:
            now = monotonic()
            timeout = next_housekeeping - now
            if heap and heap[0][0] - now < timeout:
                timeout = heap[0][0] - now
            timeout = min(max(timeout, 0.0), MAX_SELECT_TIMEOUT_S)
            for key, _ in select(timeout):
                data = key.data
                if data is None:
                    self._read_clients()
                elif data is _WAKE:
                    self._drain_wake()
                else:
                    self._read_upstream(data)
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

    def _read_clients(self) -> None:
        """Client -> upstream ("up"): every ready datagram on the listening socket."""
        recvfrom_into = self._listen.recvfrom_into
        buf = self._buf
        view = self._view
        clients = self._clients
        impairer = self.up
        fast = impairer.passthrough
        now = time.monotonic()
        sent = sent_bytes = failed = failed_bytes = 0
        for _ in range(RECV_BATCH_PER_WAKEUP):
            try:
                n, addr = recvfrom_into(buf)
            except BlockingIOError:
                break
            except OSError:
                self.recv_errors += 1
                continue
            client = clients.get(addr)
            if client is None:
                client = self._add_client(addr, now)
                if client is None:
                    continue
            client.last_seen_s = now
            if fast:
                try:
                    client.sock.send(view[:n])
                    sent += 1
                    sent_bytes += n
                except OSError:
                    failed += 1
                    failed_bytes += n
            else:
                self._impair(impairer, bytes(view[:n]), client.sock, None)
        if sent or failed:
            stats = impairer.stats
            stats.datagrams_in += sent + failed
            stats.bytes_in += sent_bytes + failed_bytes
            stats.datagrams_out += sent
            stats.bytes_out += sent_bytes
            stats.send_errors += failed

    def _read_upstream(self, client: _Client) -> None:
        """Upstream -> client ("down"): every ready datagram on one client's upstream socket."""
        recv_into = client.sock.recv_into
        sendto = self._listen.sendto
        addr = client.addr
        view = self._view
        impairer = self.down
        fast = impairer.passthrough
        sent = sent_bytes = failed = failed_bytes = 0
        received = False
        for _ in range(RECV_BATCH_PER_WAKEUP):
            try:
                n = recv_into(view)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                self.up.stats.refused += 1  # an earlier up datagram met a closed port
                continue
            except OSError:
                self.recv_errors += 1
                break
            received = True
            if fast:
                try:
                    sendto(view[:n], addr)
                    sent += 1
                    sent_bytes += n
                except OSError:
                    failed += 1
                    failed_bytes += n
            else:
                self._impair(impairer, bytes(view[:n]), self._listen, addr)
        if received:
            client.last_seen_s = time.monotonic()
        if sent or failed:
            stats = impairer.stats
            stats.datagrams_in += sent + failed
            stats.bytes_in += sent_bytes + failed_bytes
            stats.datagrams_out += sent
            stats.bytes_out += sent_bytes
            stats.send_errors += failed

    def _impair(
        self, impairer: Impairer, data: bytes, sock: socket.socket, addr: tuple[Any, ...] | None
    ) -> None:
        now = time.monotonic()
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
        if self._pcap is not None:
            from rtcp.trace.pcap import TapSocket

            sock = TapSocket(sock, self._pcap)
        client = _Client(addr, sock, now)
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
