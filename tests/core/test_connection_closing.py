"""The close: FIN-WAIT-1, FIN-WAIT-2, CLOSING, CLOSE-WAIT, LAST-ACK and TIME-WAIT
(RFC 9293 3.10.4 and 3.10.7.4 eighth check), simultaneous close, FIN retransmission."""

from __future__ import annotations

import pytest

from rtcp.core import events
from rtcp.core.connection import LocalProtocolError

from .conn_helpers import (
    ACK,
    FIN,
    RST,
    T0,
    State,
    close_wait,
    closed_events,
    closing,
    drain,
    established,
    exchange,
    fin_wait_1,
    fin_wait_2,
    last_ack,
    lseq,
    out,
    pair,
    recv,
    recv_nothing,
    rseq,
    run_pair,
    send,
    time_wait,
)

CLOSED_OK = events.ConnectionClosed("closed")


# --- FIN-WAIT-1 ----------------------------------------------------------------------------------


def test_close_sends_fin_after_queued_data():
    conn = established()
    conn.send(b"last words")
    conn.close()
    assert conn.state is State.FIN_WAIT_1
    assert recv(conn, T0) == [
        out(ACK, lseq(1), rseq(1), payload=b"last words"),
        out(FIN | ACK, lseq(11), rseq(1)),
    ]
    with pytest.raises(LocalProtocolError):
        conn.send(b"after close")


def test_fin_waits_for_the_window():
    conn = established()
    send(conn, T0, ACK, rseq(1), lseq(1), window=500)
    conn.send(b"d" * 800)
    conn.close()
    # 500 bytes of 800 is a runt of a window less than half the largest offered (sender SWS
    # avoidance, RFC 9293 3.8.6.2.1): it waits for the persist timer, the override timeout
    assert recv(conn, T0) == []
    t = conn.get_timer()
    conn.handle_timer(t)
    segs = recv(conn, t)
    assert [(s.flags, s.seq, len(s.payload)) for s in segs] == [(ACK, lseq(1), 500)]
    assert conn.stats.window_probes == 0  # the probe was the data that fits
    send(conn, t + 0.1, ACK, rseq(1), lseq(501), window=500)
    segs = recv(conn, t + 0.1)
    assert [(s.flags, s.seq, len(s.payload)) for s in segs] == [
        (ACK, lseq(501), 300), (FIN | ACK, lseq(801), 0)
    ]


def test_fin_wait_1_ack_of_fin_to_fin_wait_2():
    conn = fin_wait_1()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(2))
    assert conn.state is State.FIN_WAIT_2
    assert drain(conn) == []  # not closed yet: the peer may still send
    recv_nothing(conn, T0 + 0.1)


def test_fin_wait_1_ack_short_of_fin_stays():
    conn = established()
    conn.send(b"abc")
    conn.close()
    recv(conn, T0)
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(4))  # data acked, FIN not
    assert conn.state is State.FIN_WAIT_1


def test_fin_wait_1_fin_and_ack_of_fin_at_once_to_time_wait():
    conn = fin_wait_1()
    send(conn, T0 + 0.1, FIN | ACK, rseq(1), lseq(2))
    assert conn.state is State.TIME_WAIT
    assert recv(conn, T0 + 0.1) == [out(ACK, lseq(2), rseq(2))]
    assert drain(conn) == [events.StreamEnded(), CLOSED_OK]
    assert conn.get_timer() == pytest.approx(T0 + 0.1 + 1.0)  # time_wait_s


def test_fin_wait_1_receives_data():
    conn = fin_wait_1()
    send(conn, T0, ACK, rseq(1), lseq(1), payload=b"still talking")
    assert conn.read() == b"still talking"
    assert conn.state is State.FIN_WAIT_1


def test_fin_retransmitted_in_fin_wait_1():
    conn = fin_wait_1()
    fin = out(FIN | ACK, lseq(1), rseq(1))
    t = T0
    for gap in (0.2, 0.4, 0.8):  # RTO from the handshake sample is the 0.2 s floor
        assert conn.get_timer() == pytest.approx(t + gap)
        t += gap
        conn.handle_timer(t)
        assert recv(conn, t) == [fin]
    assert conn.stats.retransmits_timeout == 3
    send(conn, t, ACK, rseq(1), lseq(2))
    assert conn.state is State.FIN_WAIT_2


def test_fin_wait_1_user_timeout():
    conn = fin_wait_1(user_timeout_s=5.0)
    t = T0
    while conn.state is State.FIN_WAIT_1:
        t = conn.get_timer()
        conn.handle_timer(t)
        recv(conn, t)
    assert t == pytest.approx(T0 + 5.0)
    assert [e.reason for e in closed_events(conn)] == ["timeout"]


# --- CLOSING -------------------------------------------------------------------------------------


def test_closing_ack_of_fin_to_time_wait():
    conn = closing()
    assert drain(conn) == [events.StreamEnded()]
    send(conn, T0 + 0.1, ACK, rseq(2), lseq(2))
    assert conn.state is State.TIME_WAIT
    assert drain(conn) == [CLOSED_OK]
    recv_nothing(conn, T0 + 0.1)


def test_closing_retransmits_fin():
    conn = closing()
    t = conn.get_timer()
    conn.handle_timer(t)
    assert recv(conn, t) == [out(FIN | ACK, lseq(1), rseq(2))]


def test_closing_reacks_retransmitted_fin():
    conn = closing()
    send(conn, T0 + 0.05, FIN | ACK, rseq(1), lseq(1))
    assert recv(conn, T0 + 0.05) == [out(ACK, lseq(2), rseq(2))]
    assert conn.state is State.CLOSING


# --- FIN-WAIT-2 ----------------------------------------------------------------------------------


def test_fin_wait_2_receives_data_then_fin():
    conn = fin_wait_2()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(2), payload=b"tail")
    assert conn.read() == b"tail"
    send(conn, T0 + 0.2, FIN | ACK, rseq(5), lseq(2))
    assert conn.state is State.TIME_WAIT
    assert recv(conn, T0 + 0.2) == [out(ACK, lseq(2), rseq(6))]
    assert drain(conn) == [events.DataReceived(), events.StreamEnded(), CLOSED_OK]
    assert conn.read() == b""


def test_fin_wait_2_out_of_order_fin_waits_for_the_data():
    conn = fin_wait_2()
    send(conn, T0, FIN | ACK, rseq(6), lseq(2))  # FIN after 5 bytes not yet received
    assert conn.state is State.FIN_WAIT_2
    assert recv(conn, T0) == [out(ACK, lseq(2), rseq(1))]
    send(conn, T0, ACK, rseq(1), lseq(2), payload=b"12345")
    assert conn.state is State.TIME_WAIT
    assert conn.read() == b"12345"
    assert recv(conn, T0) == [out(ACK, lseq(2), rseq(7))]


def test_fin_wait_2_user_timeout():
    # waiting for the peer's FIN is bounded too
    conn = fin_wait_2(user_timeout_s=7.0)
    assert conn.get_timer() == pytest.approx(T0 + 7.0)
    conn.handle_timer(T0 + 7.0)
    assert conn.state is State.CLOSED
    assert [e.reason for e in closed_events(conn)] == ["timeout"]


# --- CLOSE-WAIT and LAST-ACK ---------------------------------------------------------------------


def test_close_wait_can_still_send():
    conn = close_wait()
    assert conn.get_timer() is None
    conn.send(b"reply")
    assert recv(conn, T0) == [out(ACK, lseq(1), rseq(2), payload=b"reply")]
    send(conn, T0 + 0.1, ACK, rseq(2), lseq(6))
    conn.close()
    assert conn.state is State.LAST_ACK
    assert recv(conn, T0 + 0.1) == [out(FIN | ACK, lseq(6), rseq(2))]


def test_close_wait_reacks_retransmitted_fin():
    conn = close_wait()
    send(conn, T0 + 0.1, FIN | ACK, rseq(1), lseq(1))
    assert recv(conn, T0 + 0.1) == [out(ACK, lseq(1), rseq(2))]
    assert conn.state is State.CLOSE_WAIT
    assert drain(conn) == []  # StreamEnded once only


def test_last_ack_ack_of_fin_closes():
    conn = last_ack()
    send(conn, T0 + 0.1, ACK, rseq(2), lseq(2))
    assert conn.state is State.CLOSED
    assert drain(conn) == [CLOSED_OK]
    recv_nothing(conn, T0 + 0.1)
    assert conn.get_timer() is None
    assert conn.is_closed


def test_last_ack_retransmits_fin_and_reacks_peer_fin():
    conn = last_ack()
    t = conn.get_timer()
    conn.handle_timer(t)
    assert recv(conn, t) == [out(FIN | ACK, lseq(1), rseq(2))]
    send(conn, t, FIN | ACK, rseq(1), lseq(1))  # the peer's FIN again: our ACK was lost
    assert recv(conn, t) == [out(ACK, lseq(2), rseq(2))]
    assert conn.state is State.LAST_ACK


def test_last_ack_user_timeout():
    conn = last_ack(user_timeout_s=3.0)
    t = T0
    while conn.state is State.LAST_ACK:
        t = conn.get_timer()
        conn.handle_timer(t)
        recv(conn, t)
    assert t == pytest.approx(T0 + 3.0)
    assert [e.reason for e in closed_events(conn)] == ["timeout"]


# --- TIME-WAIT -----------------------------------------------------------------------------------


def test_time_wait_expires_after_time_wait_s():
    conn = time_wait(time_wait_s=2.5)
    assert drain(conn) == [events.StreamEnded(), CLOSED_OK]
    assert conn.get_timer() == pytest.approx(T0 + 2.5)
    conn.handle_timer(T0 + 2.4)
    assert conn.state is State.TIME_WAIT
    conn.handle_timer(T0 + 2.5)
    assert conn.state is State.CLOSED
    assert drain(conn) == []  # ConnectionClosed was reported once, on entering TIME-WAIT
    assert conn.get_timer() is None


def test_time_wait_reacks_retransmitted_fin_and_restarts_timer():
    # RFC 9293 3.10.7.4 eighth check, TIME-WAIT: "Remain in the TIME-WAIT state. Restart the
    # 2 MSL time-wait timeout."
    conn = time_wait(time_wait_s=2.0)
    send(conn, T0 + 1.5, FIN | ACK, rseq(1), lseq(2))
    assert recv(conn, T0 + 1.5) == [out(ACK, lseq(2), rseq(2))]
    assert conn.state is State.TIME_WAIT
    assert conn.get_timer() == pytest.approx(T0 + 3.5)
    conn.handle_timer(T0 + 2.0)
    assert conn.state is State.TIME_WAIT
    conn.handle_timer(T0 + 3.5)
    assert conn.state is State.CLOSED


def test_time_wait_acks_other_old_segments():
    conn = time_wait()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(2))  # below RCV.NXT (the FIN): unacceptable
    assert recv(conn, T0 + 0.1) == [out(ACK, lseq(2), rseq(2))]
    assert conn.readable == 0


def test_closing_timers_clear_in_closed():
    conn = time_wait()
    conn.handle_timer(conn.get_timer())
    assert conn.state is State.CLOSED
    send(conn, T0 + 5, FIN | ACK, rseq(1), lseq(2))
    assert conn.state is State.CLOSED


# --- two connections -----------------------------------------------------------------------------


def test_orderly_close_both_ways():
    a, b = pair()
    a.connect(T0)
    t = run_pair(a, b, T0, until=lambda: b.state is State.ESTABLISHED)
    a.send(b"request")
    a.close()
    t = run_pair(a, b, t, until=lambda: b.state is State.CLOSE_WAIT)
    assert b.read() == b"request"
    b.send(b"response")
    b.close()
    t = run_pair(a, b, t, until=lambda: b.state is State.CLOSED)
    assert a.state is State.TIME_WAIT
    assert a.read() == b"response"
    assert [e for e in drain(a) if isinstance(e, events.ConnectionClosed)] == [CLOSED_OK]
    assert [e for e in drain(b) if isinstance(e, events.ConnectionClosed)] == [CLOSED_OK]
    run_pair(a, b, t, until=lambda: a.state is State.CLOSED)


def test_simultaneous_close():
    a, b = pair()
    a.connect(T0)
    t = run_pair(a, b, T0, until=lambda: b.state is State.ESTABLISHED)
    a.close()
    b.close()
    sent = exchange(a, b, t)  # both FINs cross
    assert [(n, s.flags) for n, s in sent] == [("a", FIN | ACK), ("b", FIN | ACK)]
    assert a.state is State.CLOSING and b.state is State.CLOSING
    sent = exchange(a, b, t + 0.01)
    assert [(n, s.flags) for n, s in sent] == [("a", ACK), ("b", ACK)]
    assert a.state is State.TIME_WAIT and b.state is State.TIME_WAIT
    for c in (a, b):
        assert [e for e in drain(c) if isinstance(e, events.ConnectionClosed)] == [CLOSED_OK]
    run_pair(a, b, t, until=lambda: a.is_closed and b.is_closed)


def test_simultaneous_close_with_lost_fins():
    a, b = pair()
    a.connect(T0)
    t = run_pair(a, b, T0, until=lambda: b.state is State.ESTABLISHED)
    a.close()
    b.close()
    lost = {"a": 1, "b": 2}  # the first FIN of a, the first two of b are lost

    def drop(name, seg):
        if seg.flags & FIN and lost[name]:
            lost[name] -= 1
            return True
        return False

    run_pair(a, b, t, drop=drop, until=lambda: a.is_closed and b.is_closed)
    for c in (a, b):
        assert [e for e in drain(c) if isinstance(e, events.ConnectionClosed)] == [CLOSED_OK]


def test_lost_final_ack_recovered_by_fin_retransmission():
    a, b = pair()
    a.connect(T0)
    t = run_pair(a, b, T0, until=lambda: b.state is State.ESTABLISHED)
    a.close()
    t = run_pair(a, b, t, until=lambda: b.state is State.CLOSE_WAIT)
    b.close()
    dropped = []

    def drop(name, seg):
        if name == "a" and seg.flags == ACK and not dropped and a.state is State.TIME_WAIT:
            dropped.append(seg)
            return True
        return False

    run_pair(a, b, t, drop=drop, until=lambda: b.is_closed)
    assert dropped and b.stats.retransmits_timeout >= 1
    assert [e for e in drain(b) if isinstance(e, events.ConnectionClosed)] == [CLOSED_OK]


def test_rst_in_time_wait_only_ends_it():
    conn = time_wait()
    drain(conn)
    send(conn, T0 + 0.1, RST, rseq(2))
    assert conn.state is State.CLOSED
    assert drain(conn) == []  # "closed" was already reported
