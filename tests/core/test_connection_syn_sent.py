"""SYN-SENT (RFC 9293 3.10.7.3): the active open, its retransmission, RSTs, simultaneous open,
and the active side of option negotiation."""

from __future__ import annotations

import pytest

from rtcp.core import events
from rtcp.core.connection import TS_TICKS_PER_S, LocalProtocolError

from .conn_helpers import (
    ACK,
    BUF,
    FIN,
    MSS,
    REMOTE,
    RST,
    SYN,
    T0,
    Connection,
    State,
    config,
    drain,
    lseq,
    out,
    recv,
    recv_nothing,
    recv_one,
    rseq,
    send,
    syn_sent,
)


def ts(now: float) -> int:
    return int(now * TS_TICKS_PER_S) & 0xFFFFFFFF


def test_connect_sends_syn_with_every_offered_option():
    conn = Connection(config(sack=True, timestamps=True, window_scaling=True,
                             receive_buffer_bytes=1 << 20), is_client=True, now=T0)
    assert conn.state is State.CLOSED
    conn.connect(T0)
    assert conn.state is State.SYN_SENT
    assert recv(conn, T0) == [
        out(SYN, lseq(0), 0, window=0xFFFF, dst=0, mss=MSS, wscale=5, sack_permitted=True,
            ts_val=ts(T0), ts_ecr=0)
    ]
    recv_nothing(conn, T0)  # once
    assert conn.get_timer() == T0 + 1.0


def test_syn_ack_establishes():
    conn = syn_sent()
    t = T0 + 0.05
    send(conn, t, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert conn.state is State.ESTABLISHED
    assert conn.peer_id == REMOTE
    assert recv(conn, t) == [out(ACK, lseq(1), rseq(1))]
    assert drain(conn) == [events.HandshakeComplete()]
    assert conn.get_timer() is None  # nothing outstanding, nothing to wait for
    assert conn.stats.srtt_s == pytest.approx(0.05)  # the SYN's RTT sample (RFC 6298)


def test_syn_ack_with_wrong_ack_earns_reset():
    # RFC 9293 3.10.7.3: an unacceptable ACK -> <SEQ=SEG.ACK><CTL=RST>, stay in SYN-SENT.
    conn = syn_sent()
    for bad in (lseq(0), lseq(2), lseq(1000)):
        send(conn, T0, SYN | ACK, rseq(0), bad, mss=MSS)
        assert recv(conn, T0) == [out(RST, bad, 0, window=0)]
    assert conn.state is State.SYN_SENT
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert conn.state is State.ESTABLISHED


def test_rst_with_acceptable_ack_refuses():
    conn = syn_sent()
    send(conn, T0, RST | ACK, 0, lseq(1))
    assert conn.state is State.CLOSED
    assert [(e.reason, bool(e.error)) for e in drain(conn)] == [("reset", True)]
    recv_nothing(conn, T0)
    assert conn.get_timer() is None


def test_rst_without_acceptable_ack_is_ignored():
    conn = syn_sent()
    send(conn, T0, RST | ACK, 0, lseq(5))
    send(conn, T0, RST, 0)  # no ACK: RFC 9293 says drop
    assert conn.state is State.SYN_SENT
    recv_nothing(conn, T0)
    assert drain(conn) == []


def test_ack_without_syn_is_dropped():
    conn = syn_sent()
    send(conn, T0, ACK, rseq(1), lseq(1))
    assert conn.state is State.SYN_SENT
    recv_nothing(conn, T0)


def test_syn_ack_from_anyone_addressed_to_someone_else_is_foreign():
    conn = syn_sent()
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), dst=12345, mss=MSS)
    assert conn.state is State.SYN_SENT
    assert conn.stats.foreign_datagrams == 1


def test_lost_syn_is_retransmitted_with_backoff():
    conn = syn_sent()
    syn = out(SYN, lseq(0), 0, mss=MSS, dst=0)
    t = T0
    for rto in (1.0, 2.0, 4.0, 8.0):
        assert conn.get_timer() == pytest.approx(t + rto)
        t += rto
        recv_nothing(conn, t - 0.001)
        conn.handle_timer(t)
        assert recv(conn, t) == [syn]  # RFC 6298 5.4: the same SYN again
    assert conn.stats.timeouts == 4
    assert conn.stats.retransmissions == 4
    assert conn.stats.retransmits_timeout == 4
    # the SYN-ACK that finally arrives gives no RTT sample (Karn): the SYN was retransmitted
    send(conn, t + 0.5, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert conn.state is State.ESTABLISHED
    assert conn.stats.srtt_s is None
    # the backoff is dropped once the SYN is acknowledged; without a sample, RFC 6298 5.7's 3 s
    assert conn.rtt.rto_s == 3.0


def test_syn_retransmission_respects_max_rto():
    conn = syn_sent(max_rto_s=3.0, user_timeout_s=100)
    t = T0
    gaps = []
    for _ in range(5):
        nxt = conn.get_timer()
        gaps.append(round(nxt - t, 6))
        t = nxt
        conn.handle_timer(t)
        recv_one(conn, t)
    assert gaps == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_user_timeout_when_no_answer():
    conn = syn_sent(user_timeout_s=10.0)
    t = T0
    while conn.state is State.SYN_SENT:
        t = conn.get_timer()
        assert t <= T0 + 10.0
        conn.handle_timer(t)
        recv(conn, t)
    assert t == pytest.approx(T0 + 10.0)
    assert conn.state is State.CLOSED
    closed = drain(conn)
    assert [e.reason for e in closed] == ["timeout"]
    assert closed[0].error
    assert conn.get_timer() is None


def test_close_in_syn_sent():
    conn = syn_sent()
    conn.close()
    assert conn.state is State.CLOSED
    assert drain(conn) == [events.ConnectionClosed("closed")]
    recv_nothing(conn, T0)
    assert conn.get_timer() is None


def test_abort_in_syn_sent_sends_no_reset():
    # RFC 9293 3.10.5: in SYN-SENT there is no peer state to reset.
    conn = syn_sent()
    conn.abort()
    assert conn.state is State.CLOSED
    recv_nothing(conn, T0)
    assert [e.reason for e in drain(conn)] == ["aborted"]


def test_send_before_established_is_queued():
    conn = syn_sent()
    assert conn.send(b"hello") == 5
    recv_nothing(conn, T0)  # no data before the handshake completes
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert recv(conn, T0) == [out(ACK, lseq(1), rseq(1), payload=b"hello")]


def test_send_in_closed_is_an_error():
    conn = Connection(config(), is_client=True, now=T0)
    with pytest.raises(LocalProtocolError):
        conn.send(b"x")
    with pytest.raises(LocalProtocolError):
        syn_sent().connect(T0)


# --- simultaneous open (RFC 9293 figure 7) ----------------------------------------------------


def test_simultaneous_open_by_hand():
    conn = syn_sent()
    send(conn, T0 + 0.01, SYN, rseq(0), dst=0, mss=MSS)  # the peer's own SYN crosses ours
    assert conn.state is State.SYN_RECEIVED
    assert recv(conn, T0 + 0.01) == [out(SYN | ACK, lseq(0), rseq(1), mss=MSS)]
    send(conn, T0 + 0.02, SYN | ACK, rseq(0), lseq(1), mss=MSS)  # the peer's SYN-ACK
    assert conn.state is State.ESTABLISHED
    assert drain(conn) == [events.HandshakeComplete()]
    assert recv(conn, T0 + 0.02) == [out(ACK, lseq(1), rseq(1))]
    assert conn.get_timer() is None


def test_simultaneous_open_two_clients():
    a = Connection(config(local_id=0xA, initial_seq=1), is_client=True, now=T0)
    b = Connection(config(local_id=0xB, initial_seq=2**32 - 1), is_client=True, now=T0)
    a.connect(T0)
    b.connect(T0)
    t = T0
    for _ in range(6):  # exchange everything each side has, simultaneously
        t += 0.01
        from_a, from_b = a.datagrams_to_send(t), b.datagrams_to_send(t)
        for d in from_a:
            b.receive_datagram(d, t)
        for d in from_b:
            a.receive_datagram(d, t)
    assert a.state is State.ESTABLISHED and b.state is State.ESTABLISHED
    assert (a.peer_id, b.peer_id) == (0xB, 0xA)
    assert events.HandshakeComplete() in drain(a)
    assert events.HandshakeComplete() in drain(b)
    a.send(b"from a")
    b.send(b"from b")
    for _ in range(3):
        t += 0.01
        from_a, from_b = a.datagrams_to_send(t), b.datagrams_to_send(t)
        for d in from_a:
            b.receive_datagram(d, t)
        for d in from_b:
            a.receive_datagram(d, t)
    assert (a.read(), b.read()) == (b"from b", b"from a")


# --- negotiation, active side ---------------------------------------------------------------


def test_mss_minimum_segments_data():
    conn = syn_sent()
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=400, window=5000)
    assert conn.mss == 400
    recv(conn, T0)
    conn.send(bytes(1000))
    sizes = [len(s.payload) for s in recv(conn, T0)]
    assert sizes == [400, 400, 200]


def test_window_scale_used_both_ways():
    conn = syn_sent(window_scaling=True, receive_buffer_bytes=1 << 20)
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS, window=20000, wscale=3)
    assert conn.ws_ok
    # the SYN-ACK's own window is not scaled
    assert conn.refresh_stats().peer_window_bytes == 20000
    # our ACK announces 1 MiB, rounded down to whole segments (receiver SWS avoidance), >> 5
    wnd = (1 << 20) - (1 << 20) % MSS
    assert recv_one(conn, T0) == out(ACK, lseq(1), rseq(1), window=wnd >> 5)
    # the peer's later windows are scaled by 3
    send(conn, T0, ACK, rseq(1), lseq(1), window=10000)
    assert conn.refresh_stats().peer_window_bytes == 80000


def test_window_scale_only_when_both_offer():
    conn = syn_sent(window_scaling=True, receive_buffer_bytes=1 << 20)
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS, window=20000)  # no wscale
    assert not conn.ws_ok
    assert recv_one(conn, T0) == out(ACK, lseq(1), rseq(1), window=0xFFFF)  # unscaled
    send(conn, T0, ACK, rseq(1), lseq(1), window=10000)
    assert conn.refresh_stats().peer_window_bytes == 10000


@pytest.mark.parametrize("peer_offers", [False, True])
def test_sack_only_when_both_offer(peer_offers):
    conn = syn_sent(sack=True)
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS, sack_permitted=peer_offers)
    assert conn.sack_ok is peer_offers
    recv(conn, T0)
    send(conn, T0, ACK, rseq(11), lseq(1), payload=b"x" * 10)  # out of order: a hole before
    ack = recv(conn, T0)[-1]
    assert ack.ack == rseq(1)
    assert ack.sack_blocks == (((rseq(11), rseq(21)),) if peer_offers else ())


@pytest.mark.parametrize("peer_offers", [False, True])
def test_timestamps_only_when_both_offer(peer_offers):
    conn = syn_sent(timestamps=True)
    extra = {"ts_val": 777, "ts_ecr": ts(T0)} if peer_offers else {}
    send(conn, T0 + 0.1, SYN | ACK, rseq(0), lseq(1), mss=MSS, **extra)
    assert conn.ts_ok is peer_offers
    ack = recv_one(conn, T0 + 0.1)
    if peer_offers:
        assert (ack.ts_val, ack.ts_ecr) == (ts(T0 + 0.1), 777)
    else:
        assert ack.ts_val is None


def test_sack_offer_declined_locally():
    conn = syn_sent()  # sack off
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS, sack_permitted=True, ts_val=1,
         ts_ecr=0, wscale=4)
    assert not (conn.sack_ok or conn.ts_ok or conn.ws_ok)
    assert recv_one(conn, T0) == out(ACK, lseq(1), rseq(1), window=BUF)


def test_fin_right_after_the_handshake():
    conn = syn_sent()
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    recv(conn, T0)
    send(conn, T0, FIN | ACK, rseq(1), lseq(1))
    assert conn.state is State.CLOSE_WAIT


@pytest.mark.parametrize("lost", [("a", SYN), ("b", SYN | ACK), ("a", SYN | ACK), ("both", SYN)])
def test_simultaneous_open_with_losses(lost):
    from .conn_helpers import exchange, run_pair

    who, flags = lost
    a = Connection(config(local_id=0xA, initial_seq=5), is_client=True, now=T0)
    b = Connection(config(local_id=0xB, initial_seq=7), is_client=True, now=T0)
    a.connect(T0)
    b.connect(T0)
    done = []

    def drop(name, seg):
        if (who in (name, "both")) and seg.flags == flags and (name, flags) not in done:
            done.append((name, flags))
            return True
        return False

    exchange(a, b, T0, drop)
    t = run_pair(a, b, T0 + 0.01, drop=drop,
                 until=lambda: a.state is b.state is State.ESTABLISHED)
    assert done
    a.send(b"ping")
    b.send(b"pong")
    a.close()
    b.close()
    run_pair(a, b, t, until=lambda: a.state in (State.TIME_WAIT, State.CLOSED)
             and b.state in (State.TIME_WAIT, State.CLOSED))
    assert (a.read(), b.read()) == (b"pong", b"ping")
    for c in (a, b):
        assert [e for e in drain(c) if isinstance(e, events.ConnectionClosed)] == [
            events.ConnectionClosed("closed")
        ]
