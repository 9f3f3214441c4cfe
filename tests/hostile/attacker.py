"""A hostile client for tests/hostile: a real handshake from this process, then segments
crafted on its connection's ids and sequence numbers, sent from the same socket."""

from __future__ import annotations

import time

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.seqnum import wrap
from rtcp.net.driver import App, Driver, Handle

HANDSHAKE_DEADLINE_S = 20.0


class Idle(App):
    """Does nothing with its connection: the attack is sent around it."""


class Attacker:
    """One handshaken connection to 127.0.0.1:port, and ways to abuse it."""

    def __init__(self, port: int, **config):
        self.driver = Driver(("127.0.0.1", 0))
        # no timestamps: the crafted segments carry none (they would be dropped once negotiated)
        cfg = ConnectionConfig(timestamps=False, pmtud=False, **config)
        self.handle: Handle = self.driver.connect(("127.0.0.1", port), cfg, Idle())
        deadline = time.monotonic() + HANDSHAKE_DEADLINE_S
        conn = self.handle.conn
        while getattr(conn.state, "name", "") != "ESTABLISHED":
            if time.monotonic() > deadline or conn.is_closed:
                raise AssertionError(f"no handshake with port {port}: {conn.state}")
            self.driver.run_once(0.05)
        self.peer = ("127.0.0.1", port)

    def segment(self, offset: int, payload: bytes, flags: int = wire.ACK) -> bytes:
        """A data segment at stream offset `offset` (1 is the first data byte)."""
        c = self.handle.conn
        return wire.build(
            flags, c.local_id, c.peer_id, wrap(offset, c.iss), wrap(c.rcv_nxt, c.irs),
            0xFFFF, b"", payload,
        )

    def send_raw(self, datagrams) -> None:
        sock = self.driver.sock
        for d in datagrams:
            while True:
                try:
                    sock.sendto(d, self.peer)
                    break
                except BlockingIOError:
                    time.sleep(0.001)  # the socket buffer is full: let the kernel drain it

    def drain(self) -> None:
        """Read (and drop) what the receiver answered, so our socket buffer never fills."""
        sock = self.driver.sock
        while True:
            try:
                sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return

    def reset(self) -> None:
        c = self.handle.conn
        self.send_raw([wire.build(wire.RST, c.local_id, c.peer_id, wrap(c.snd_nxt, c.iss), 0, 0)])

    def close(self) -> None:
        self.driver.close()


def _decode(data):
    try:
        return wire.decode(data)
    except wire.WireError:
        return None


def hold_windows_out_of_order(attackers, deadline_s: float, segment_bytes: int = 60_000):
    """Every attacker fills the window its receiver offers with data after a one-byte hole
    (offset 1 is never sent), resending what is not SACKed, until each receiver SACKs one
    range [2, its window's right edge). Returns the bytes each one holds (per its SACKs)."""
    from rtcp.core.seqnum import unwrap

    state = {}
    for a in attackers:
        c = a.handle.conn
        state[a] = {"edge": 1 + c.snd_wnd, "held": (2, 2)}
    end = time.monotonic() + deadline_s
    while True:
        # (the window field counts in units of 2^wscale: the edge may fall short of what is held)
        pending = [a for a in attackers if state[a]["held"][1] < state[a]["edge"]]
        if not pending:
            return [state[a]["held"][1] - 2 for a in attackers]
        if time.monotonic() > end:
            raise AssertionError(f"windows not held within {deadline_s} s: {state}")
        for a in pending:
            st = state[a]
            start = st["held"][1]
            a.send_raw(
                a.segment(off, bytes(min(segment_bytes, st["edge"] - off)))
                for off in range(start, st["edge"], segment_bytes)
            )
        time.sleep(0.02)  # the receiver's answers: read them below (a poll, not a wait)
        for a in attackers:
            c, st = a.handle.conn, state[a]
            sock = a.driver.sock
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                seg = _decode(data)
                if seg is None or not seg.flags & wire.ACK:
                    continue
                ack = unwrap(seg.ack, c.iss, c.snd_nxt)
                st["edge"] = ack + (seg.window << c._snd_wscale)  # the receiver's latest offer
                for left, right in seg.sack_blocks[:1]:
                    lo, hi = unwrap(left, c.iss, 2), unwrap(right, c.iss, 2)
                    if lo == 2:
                        st["held"] = (2, max(st["held"][1], hi))


def drip(attackers, data: bytes, interval_s: float, until, deadline_s: float) -> None:
    """Each attacker sends `data` one byte every interval_s through its connection (acked and
    retransmitted as a real, slow sender), until until() is true or data runs out."""
    end = time.monotonic() + deadline_s
    sent = 0
    next_at = time.monotonic()
    while not until():
        now = time.monotonic()
        if now > end:
            raise AssertionError(f"still dripping after {deadline_s} s")
        if now >= next_at and sent < len(data):
            for a in attackers:
                if not a.handle.conn.is_closed:
                    a.handle.conn.send(data[sent : sent + 1])
            sent += 1
            next_at = now + interval_s
        for a in attackers:
            a.driver.run_once(0.01)
