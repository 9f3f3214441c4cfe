"""SYN-RECEIVED (RFC 9293 3.10.7.4 with RFC 5961): completing the passive open, the lost
SYN-ACK, the retransmitted SYN, RSTs, a close() that waits for ESTABLISHED, the user timeout."""

from __future__ import annotations

import pytest

from rtcp.core import events

from .conn_helpers import (
    ACK,
    FIN,
    MSS,
    RST,
    SYN,
    T0,
    State,
    drain,
    lseq,
    out,
    recv,
    recv_nothing,
    recv_one,
    rseq,
    send,
    syn_received,
)

SYN_ACK = out(SYN | ACK, lseq(0), rseq(1), mss=MSS)


def test_ack_of_syn_establishes():
    conn = syn_received()
    send(conn, T0 + 0.03, ACK, rseq(1), lseq(1), window=3000)
    assert conn.state is State.ESTABLISHED
    assert drain(conn) == [events.HandshakeComplete()]
    recv_nothing(conn, T0 + 0.03)  # a pure ACK is not acknowledged
    assert conn.get_timer() is None
    assert conn.refresh_stats().peer_window_bytes == 3000


@pytest.mark.parametrize("bad_ack", [lseq(0), lseq(2), lseq(99999)])
def test_unacceptable_ack_earns_reset(bad_ack):
    # RFC 9293 3.10.7.4 fifth check, SYN-RECEIVED: <SEQ=SEG.ACK><CTL=RST>.
    conn = syn_received()
    send(conn, T0, ACK, rseq(1), bad_ack)
    assert recv(conn, T0) == [out(RST, bad_ack, 0, window=0)]
    assert conn.state is State.SYN_RECEIVED
    send(conn, T0, ACK, rseq(1), lseq(1))
    assert conn.state is State.ESTABLISHED


def test_retransmitted_syn_gets_the_syn_ack_again():
    conn = syn_received()
    send(conn, T0 + 0.5, SYN, rseq(0), dst=0, mss=MSS)
    assert recv(conn, T0 + 0.5) == [SYN_ACK]
    assert conn.state is State.SYN_RECEIVED


def test_lost_syn_ack_is_retransmitted_with_backoff():
    conn = syn_received()
    t = T0
    for rto in (1.0, 2.0, 4.0):
        assert conn.get_timer() == pytest.approx(t + rto)
        t += rto
        conn.handle_timer(t)
        assert recv(conn, t) == [SYN_ACK]
    assert conn.stats.timeouts == 3
    send(conn, t + 0.1, ACK, rseq(1), lseq(1))
    assert conn.state is State.ESTABLISHED
    assert conn.rtt.rto_s == 3.0  # backoff dropped, no sample (Karn): RFC 6298 5.7's 3 s
    assert conn.stats.srtt_s is None


def test_data_with_the_ack_establishes_and_delivers():
    # the client's third-segment ACK was lost; its first data segment carries the same ACK
    conn = syn_received()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1), payload=b"hello")
    assert conn.state is State.ESTABLISHED
    assert drain(conn) == [events.HandshakeComplete(), events.DataReceived()]
    assert conn.read() == b"hello"
    assert conn.get_timer() == pytest.approx(T0 + 0.1 + 0.04)  # delayed ACK
    conn.handle_timer(T0 + 0.14)
    # the right edge holds (receiver SWS avoidance): 5 bytes read do not move it
    assert recv(conn, T0 + 0.14) == [out(ACK, lseq(1), rseq(6), window=8192 - 5)]


def test_exact_rst_closes():
    conn = syn_received()
    send(conn, T0, RST, rseq(1))
    assert conn.state is State.CLOSED
    assert [e.reason for e in drain(conn)] == ["reset"]
    recv_nothing(conn, T0)
    assert conn.get_timer() is None


def test_in_window_rst_gets_challenge_ack():
    # RFC 5961 3.2: in the window but not RCV.NXT -> challenge ACK, no reset.
    conn = syn_received()
    send(conn, T0, RST, rseq(100))
    assert conn.state is State.SYN_RECEIVED
    assert recv(conn, T0) == [out(ACK, lseq(1), rseq(1))]
    assert drain(conn) == []


def test_out_of_window_rst_is_ignored():
    conn = syn_received()
    send(conn, T0, RST, rseq(100_000))
    send(conn, T0, RST, rseq(0))
    assert conn.state is State.SYN_RECEIVED
    recv_nothing(conn, T0)


def test_close_waits_for_established_then_sends_fin():
    # RFC 9293 3.10.4: CLOSE in SYN-RECEIVED queues the FIN until ESTABLISHED.
    conn = syn_received()
    conn.close()
    assert conn.state is State.SYN_RECEIVED
    recv_nothing(conn, T0)
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1))
    assert conn.state is State.FIN_WAIT_1
    assert recv(conn, T0 + 0.1) == [out(FIN | ACK, lseq(1), rseq(1))]
    send(conn, T0 + 0.2, ACK, rseq(1), lseq(2))
    assert conn.state is State.FIN_WAIT_2


def test_close_with_queued_data_in_syn_received():
    conn = syn_received()
    conn.send(b"abc")
    conn.close()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1))
    assert recv(conn, T0 + 0.1) == [
        out(ACK, lseq(1), rseq(1), payload=b"abc"), out(FIN | ACK, lseq(4), rseq(1))
    ]


def test_abort_sends_reset():
    conn = syn_received()
    conn.abort()
    assert conn.state is State.CLOSED
    assert recv(conn, T0) == [out(RST, lseq(1), 0, window=0)]
    assert [e.reason for e in drain(conn)] == ["aborted"]


def test_user_timeout():
    conn = syn_received(user_timeout_s=5.0)
    t = T0
    while conn.state is State.SYN_RECEIVED:
        t = conn.get_timer()
        conn.handle_timer(t)
        recv(conn, t)
    assert t == pytest.approx(T0 + 5.0)
    assert [e.reason for e in drain(conn)] == ["timeout"]


def test_unacceptable_segment_is_acked():
    conn = syn_received()
    send(conn, T0, ACK, rseq(50_000), lseq(1), payload=b"far")
    assert recv(conn, T0) == [out(ACK, lseq(1), rseq(1))]
    assert conn.state is State.SYN_RECEIVED
    assert conn.readable == 0


def test_segment_without_ack_is_dropped():
    conn = syn_received()
    send(conn, T0, 0, rseq(1), payload=b"no ack bit")
    assert conn.state is State.SYN_RECEIVED
    assert conn.readable == 0
    recv_nothing(conn, T0)


def test_segment_from_another_peer_is_foreign():
    conn = syn_received()
    send(conn, T0, ACK, rseq(1), lseq(1), src=0x999)
    assert conn.state is State.SYN_RECEIVED
    assert conn.stats.foreign_datagrams == 1


def test_syn_ack_in_syn_received_completes_simultaneous_open():
    conn = syn_received()
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert conn.state is State.ESTABLISHED
    assert recv_one(conn, T0) == out(ACK, lseq(1), rseq(1))
