"""Is something bound at a UDP address of this host? The readiness contract's local half.

`rtcp send --wait-ready` and `rtcp proxy --wait-upstream` wait until a UDP socket is bound at
their target before they send anything to it, so that commands started together (`recv &`,
`proxy &`, `send`) work in any order without a datagram lost to a port nobody has bound yet.
For an address of this host the kernel's socket table says so without sending a datagram
(Linux: /proc/net/udp and /proc/net/udp6); for any other address, or without /proc, nothing can
be known in advance and the caller falls back to retrying (see rtcp.transfer.sender).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

_PROC_TABLES = {socket.AF_INET: "/proc/net/udp", socket.AF_INET6: "/proc/net/udp6"}
# How often the socket table is read while waiting: a bind is seen within this.
POLL_INTERVAL_S = 0.01
_UNCONNECTED_REMOTE_PORT = "0000"


def is_local_address(family: int, address: tuple) -> bool:
    """True when address's IP belongs to this host (loopback or one of its own addresses):
    binding port 0 there succeeds only then. Sends nothing."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((address[0], 0, *address[2:]))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _hex_to_ip(family: int, text: str) -> str:
    """/proc/net/udp* print an address as 32-bit words in the host's byte order."""
    raw = bytes.fromhex(text)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(int.from_bytes(w, "big").to_bytes(4, sys.byteorder) for w in words)
    return socket.inet_ntop(family, packed)


def _bound_ips(port: int) -> set[tuple[int, str]] | None:
    """(family, ip) of every unconnected UDP socket bound to port; None without /proc."""
    found: set[tuple[int, str]] = set()
    seen_a_table = False
    for family, table in _PROC_TABLES.items():
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        seen_a_table = True
        for line in lines:
            fields = line.split()
            if len(fields) < 3:
                continue
            local, remote = fields[1], fields[2]
            ip_hex, _, port_hex = local.partition(":")
            if int(port_hex, 16) != port or not remote.endswith(":" + _UNCONNECTED_REMOTE_PORT):
                continue
            try:
                found.add((family, _hex_to_ip(family, ip_hex)))
            except (ValueError, OSError):
                continue
    return found if seen_a_table else None


def is_bound(family: int, address: tuple) -> bool | None:
    """Whether a UDP socket of this host would receive datagrams sent to address: True, False,
    or None when that cannot be known (not an address of this host, no socket table)."""
    if not is_local_address(family, address):
        return None
    bound = _bound_ips(address[1])
    if bound is None:
        return None
    ip = socket.inet_ntop(family, socket.inet_pton(family, address[0]))
    wanted = {(family, ip), (family, "0.0.0.0" if family == socket.AF_INET else "::")}
    if family == socket.AF_INET:  # a dual-stack IPv6 socket receives IPv4 too
        wanted |= {(socket.AF_INET6, "::"), (socket.AF_INET6, f"::ffff:{ip}")}
    return bool(bound & wanted)


def wait_until_bound(
    family: int,
    address: tuple,
    timeout_s: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool | None:
    """Wait until is_bound(); True once bound, False when timeout_s passed first (None: wait
    forever), None at once when it cannot be known."""
    deadline = None if timeout_s is None else clock() + timeout_s
    while True:
        bound = is_bound(family, address)
        if bound is not False:
            return bound
        if deadline is not None and clock() >= deadline:
            return False
        sleep(POLL_INTERVAL_S)
