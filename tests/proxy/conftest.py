"""Helpers for the proxy tests: a UDP echo server, and waiting on a condition (never a sleep)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

WAIT_LIMIT_S = 10.0


class EchoServer:
    """Echoes every datagram back to its sender and remembers who sent what."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.sources: list[tuple[str, int]] = []
        self.payloads: list[bytes] = []
        self.received = 0
        self.echo = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set():
                return  # close()'s wake-up, or anything after it
            self.received += 1
            self.sources.append(addr)
            self.payloads.append(data)
            if self.echo:
                self.sock.sendto(data, addr)

    def close(self) -> None:
        self._stop.set()
        try:  # wake the thread now rather than at its next receive timeout
            self.sock.sendto(b"", self.address)
        except OSError:
            pass
        self._thread.join(WAIT_LIMIT_S)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def wait_until(condition: Callable[[], bool], limit_s: float = WAIT_LIMIT_S) -> bool:
    """Poll until the condition holds; the limit only bounds a failing test."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(WAIT_LIMIT_S)
    return sock


def free_udp_port() -> int:
    """A port with nothing listening (bound then released): sends to it are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
