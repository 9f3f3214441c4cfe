"""Helpers for smoltcp-style connection tests: feed exact segments at explicit times and assert
the exact segments that come back.

The connection under test is "local" (id LOCAL, ISN LOCAL_ISS); the test plays the remote
(id REMOTE, ISN REMOTE_ISS). `lseq(n)` / `rseq(n)` are the wire sequence numbers of offset n
(offset 0 is the SYN, stream byte i is offset i + 1) on each side.
"""

from __future__ import annotations

import dataclasses

from rtcp.core import events, wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection, State
from rtcp.core.wire import ACK, FIN, RST, SYN, Segment

LOCAL = 0x0A0A0A0A
REMOTE = 0x0B0B0B0B
LOCAL_ISS = 10_000
REMOTE_ISS = 500_000
BUF = 8192  # the local receive buffer: the window it advertises while nothing is unread
MSS = 1000
REMOTE_WINDOW = 4096
T0 = 100.0

__all__ = [
    "ACK",
    "BUF",
    "FIN",
    "LOCAL",
    "LOCAL_ISS",
    "MSS",
    "REMOTE",
    "REMOTE_ISS",
    "REMOTE_WINDOW",
    "RST",
    "SYN",
    "T0",
    "Connection",
    "Segment",
    "State",
    "close_wait",
    "closed_events",
    "closing",
    "config",
    "drain",
    "established",
    "exchange",
    "fin_wait_1",
    "fin_wait_2",
    "last_ack",
    "listen",
    "lseq",
    "out",
    "pair",
    "recv",
    "recv_nothing",
    "recv_one",
    "rseq",
    "run_pair",
    "send",
    "syn_received",
    "syn_sent",
    "time_wait",
]

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ConnectionConfig)}


def config(**kw) -> ConnectionConfig:
    """A deterministic config: fixed id and ISN, no options unless a test asks for them."""
    base = {
        "local_id": LOCAL, "initial_seq": LOCAL_ISS, "receive_buffer_bytes": BUF, "mss_bytes": MSS,
        "sack": False, "timestamps": False, "window_scaling": False,
        # exact-segment tests count on window-limited sending, not BBR's pacing
        "congestion_control": "reno",
        "quickack_segments": 0,  # and on plain delayed ACKs
        "max_backoff_rto_s": None,  # and on RFC 6298's doubling (rtcp caps it: test_fine_print)
    }
    if "pmtud" in _CONFIG_FIELDS:
        base["pmtud"] = False  # no path-MTU probes in exact-segment tests
    base.update(kw)
    return ConnectionConfig(**base)


def lseq(n: int) -> int:
    return (LOCAL_ISS + n) % 2**32


def rseq(n: int) -> int:
    return (REMOTE_ISS + n) % 2**32


def send(conn: Connection, now: float, flags: int, seq: int, ack: int = 0, *,
         window: int = REMOTE_WINDOW, payload: bytes = b"", src: int = REMOTE,
         dst: int = LOCAL, **opts) -> None:
    """Deliver one segment from the remote to the connection."""
    conn.receive_datagram(
        wire.encode(Segment(flags, src, dst, seq, ack, window, payload, **opts)), now
    )


def out(flags: int, seq: int, ack: int = 0, *, window: int = BUF, payload: bytes = b"",
        dst: int = REMOTE, **opts) -> Segment:
    """A segment the local connection is expected to send."""
    return Segment(flags, LOCAL, dst, seq, ack, window, payload, **opts)


def recv(conn: Connection, now: float) -> list[Segment]:
    return [wire.decode(d) for d in conn.datagrams_to_send(now)]


def recv_one(conn: Connection, now: float) -> Segment:
    segs = recv(conn, now)
    assert len(segs) == 1, segs
    return segs[0]


def recv_nothing(conn: Connection, now: float) -> None:
    segs = recv(conn, now)
    assert segs == [], segs


def drain(conn: Connection) -> list[events.Event]:
    got = []
    while (ev := conn.next_event()) is not None:
        got.append(ev)
    return got


def closed_events(conn: Connection) -> list[events.ConnectionClosed]:
    return [e for e in drain(conn) if isinstance(e, events.ConnectionClosed)]


# --- reaching each state (the remote side is played by hand) ---------------------------------


def listen(**kw) -> Connection:
    conn = Connection(config(**kw), is_client=False, now=T0)
    assert conn.state is State.LISTEN
    return conn


def syn_sent(**kw) -> Connection:
    conn = Connection(config(**kw), is_client=True, now=T0)
    conn.connect(T0)
    syn = recv_one(conn, T0)
    assert (syn.flags, syn.seq, syn.ack, syn.dst_id) == (SYN, lseq(0), 0, 0)
    if not kw:
        assert syn == out(SYN, lseq(0), 0, mss=MSS, dst=0)
    assert conn.state is State.SYN_SENT
    return conn


def syn_received(**kw) -> Connection:
    conn = listen(**kw)
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS)
    syn_ack = recv_one(conn, T0)
    assert (syn_ack.flags, syn_ack.seq, syn_ack.ack) == (SYN | ACK, lseq(0), rseq(1))
    if not kw:
        assert syn_ack == out(SYN | ACK, lseq(0), rseq(1), mss=MSS)
    assert conn.state is State.SYN_RECEIVED
    return conn


def established(**kw) -> Connection:
    """A client that completed the handshake: local snd offset 1, rcv offset 1."""
    conn = syn_sent(**kw)
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    ack = recv_one(conn, T0)
    assert (ack.flags, ack.seq, ack.ack) == (ACK, lseq(1), rseq(1))
    if not kw:
        assert ack == out(ACK, lseq(1), rseq(1))
    assert conn.state is State.ESTABLISHED
    assert drain(conn) == [events.HandshakeComplete()]
    return conn


def fin_wait_1(**kw) -> Connection:
    conn = established(**kw)
    conn.close()
    assert recv_one(conn, T0) == out(FIN | ACK, lseq(1), rseq(1))
    assert conn.state is State.FIN_WAIT_1
    return conn


def fin_wait_2(**kw) -> Connection:
    conn = fin_wait_1(**kw)
    send(conn, T0, ACK, rseq(1), lseq(2))
    assert conn.state is State.FIN_WAIT_2
    recv_nothing(conn, T0)
    return conn


def closing(**kw) -> Connection:
    conn = fin_wait_1(**kw)
    send(conn, T0, FIN | ACK, rseq(1), lseq(1))  # the remote's FIN, not acking ours
    assert conn.state is State.CLOSING
    assert recv_one(conn, T0) == out(ACK, lseq(2), rseq(2))
    return conn


def close_wait(**kw) -> Connection:
    conn = established(**kw)
    send(conn, T0, FIN | ACK, rseq(1), lseq(1))
    assert conn.state is State.CLOSE_WAIT
    assert recv_one(conn, T0) == out(ACK, lseq(1), rseq(2))
    assert drain(conn) == [events.StreamEnded()]
    return conn


def last_ack(**kw) -> Connection:
    conn = close_wait(**kw)
    conn.close()
    assert conn.state is State.LAST_ACK
    assert recv_one(conn, T0) == out(FIN | ACK, lseq(1), rseq(2))
    return conn


def time_wait(**kw) -> Connection:
    conn = fin_wait_2(**kw)
    send(conn, T0, FIN | ACK, rseq(1), lseq(2))
    assert conn.state is State.TIME_WAIT
    assert recv_one(conn, T0) == out(ACK, lseq(2), rseq(2))
    return conn


# --- two real connections, joined by hand ------------------------------------------------------


def pair(**kw) -> tuple[Connection, Connection]:
    """A client and a server (both with the deterministic config), not yet connected."""
    a = Connection(config(local_id=0xA1, initial_seq=1_000, **kw), is_client=True, now=T0)
    b = Connection(config(local_id=0xB2, initial_seq=9_000, **kw), is_client=False, now=T0)
    return a, b


def exchange(a: Connection, b: Connection, t: float, drop=None) -> list[tuple[str, Segment]]:
    """Both sides send what they have at time t; each datagram is delivered at once unless
    drop(name, segment) says otherwise. Returns what was sent, as ("a"|"b", Segment)."""
    from_a, from_b = a.datagrams_to_send(t), b.datagrams_to_send(t)
    sent = []
    for name, dgrams, dest in (("a", from_a, b), ("b", from_b, a)):
        for d in dgrams:
            seg = wire.decode(d)
            sent.append((name, seg))
            if drop is None or not drop(name, seg):
                dest.receive_datagram(d, t)
    return sent


def run_pair(a: Connection, b: Connection, t: float, *, until, step: float = 0.01,
             drop=None, limit_s: float = 120.0) -> float:
    """Exchange every `step` seconds, firing due timers, until until() is true; returns t."""
    end = t + limit_s
    while not until():
        assert t < end, "the pair did not get there in time"
        for c in (a, b):
            deadline = c.get_timer()
            if deadline is not None and deadline <= t:
                c.handle_timer(t)
        exchange(a, b, t, drop)
        t = round(t + step, 9)
    return t
