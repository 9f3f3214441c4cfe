"""ESTABLISHED (RFC 9293 3.10.7.4): data both ways, ACK policy, acceptability, challenge ACKs
(RFC 5961), window updates (SND.WL1/WL2), buffers, abort and the user timeout."""

from __future__ import annotations

import pytest

from rtcp.core import events, wire
from rtcp.core.connection import LocalProtocolError

from .conn_helpers import (
    ACK,
    BUF,
    FIN,
    MSS,
    REMOTE,
    REMOTE_WINDOW,
    RST,
    SYN,
    T0,
    State,
    drain,
    established,
    lseq,
    out,
    recv,
    recv_nothing,
    rseq,
    send,
)

T1 = T0 + 1.0


# --- receiving ---------------------------------------------------------------------------------


def test_data_delivered_and_ack_delayed():
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"x" * 100)
    assert drain(conn) == [events.DataReceived()]
    assert conn.readable == 100
    recv_nothing(conn, T1)  # RFC 9293 3.8.6.3: the ACK may wait
    assert conn.get_timer() == pytest.approx(T1 + 0.04)
    conn.handle_timer(T1 + 0.04)
    assert recv(conn, T1 + 0.04) == [out(ACK, lseq(1), rseq(101), window=BUF - 100)]
    assert conn.read() == b"x" * 100
    assert conn.read() == b""
    assert conn.get_timer() is None


def test_send_ack_now_skips_the_delayed_ack_wait():
    # An application about to block (the receiver's fsync) acknowledges what it has first.
    conn = established()
    conn.send_ack_now()
    recv_nothing(conn, T1)  # nothing to acknowledge: no ACK
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"x" * 100)
    conn.send_ack_now()
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(101), window=BUF - 100)]
    assert conn.get_timer() is None  # the delayed-ACK timer went with it


def test_every_second_full_segment_is_acked_at_once():
    # RFC 5681 4.2 / RFC 9293 3.8.6.3: an ACK for at least every second full-sized segment.
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"a" * MSS)
    send(conn, T1, ACK, rseq(1 + MSS), lseq(1), payload=b"b" * MSS)
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1 + 2 * MSS), window=BUF - 2 * MSS)]
    assert conn.read() == b"a" * MSS + b"b" * MSS


def test_out_of_order_data_acked_at_once_then_filled():
    conn = established()
    send(conn, T1, ACK, rseq(11), lseq(1), payload=b"B" * 10)
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]  # duplicate ACK, at once
    assert conn.readable == 0
    assert conn.stats.out_of_order_segments == 1
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"A" * 10)
    # the hole is filled: ACK at once (RFC 5681 4.2), everything delivered
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(21), window=BUF - 20)]
    assert conn.read() == b"A" * 10 + b"B" * 10


def test_one_duplicate_ack_per_out_of_order_segment_without_sack():
    conn = established()
    for i in range(3):
        send(conn, T1, ACK, rseq(101 + 10 * i), lseq(1), payload=b"z" * 10)
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))] * 3


def test_duplicate_data_is_acked_not_redelivered():
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"hello")
    conn.read()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"hello")
    # the right edge holds (receiver SWS avoidance): 5 bytes read do not move it
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(6), window=8192 - 5)]
    assert conn.readable == 0
    assert conn.stats.duplicate_segments == 1
    # partly old, partly new
    send(conn, T1, ACK, rseq(3), lseq(1), payload=b"llo world")
    assert conn.read() == b" world"


def test_segment_beyond_window_is_acked_and_dropped():
    # RFC 9293 3.10.7.4: not acceptable -> <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, drop.
    conn = established()
    send(conn, T1, ACK, rseq(1 + BUF), lseq(1), payload=b"late")
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    assert conn.readable == 0


def test_data_trimmed_to_the_window():
    conn = established(receive_buffer_bytes=100)
    send(conn, T1, ACK, rseq(1), lseq(1), payload=bytes(range(150)))
    assert conn.readable == 100
    conn.handle_timer(T1 + 0.04)
    assert recv(conn, T1 + 0.04) == [out(ACK, lseq(1), rseq(101), window=0)]
    assert conn.read() == bytes(range(100))


def test_segment_without_ack_bit_is_dropped():
    conn = established()
    send(conn, T1, 0, rseq(1), payload=b"no ack")
    assert conn.readable == 0
    recv_nothing(conn, T1)


def test_corrupt_segment_is_not_acknowledged():
    conn = established()
    d = bytearray(wire.encode(wire.Segment(ACK, REMOTE, conn.local_id, rseq(1), lseq(1),
                                           REMOTE_WINDOW, b"payload")))
    d[-1] ^= 1
    conn.receive_datagram(bytes(d), T1)
    assert conn.stats.checksum_failures == 1
    assert conn.readable == 0
    recv_nothing(conn, T1)
    assert conn.get_timer() is None


def test_foreign_segments_are_ignored():
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"x", src=0x777)  # not our peer
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"x", dst=0x777)  # not our id
    assert conn.readable == 0
    assert conn.stats.foreign_datagrams == 2
    recv_nothing(conn, T1)


# --- challenge ACKs and RST --------------------------------------------------------------------


def test_syn_in_established_gets_challenge_ack():
    # RFC 5961 4.2 (RFC 9293 3.10.7.4 fourth check): any SYN -> challenge ACK, no reset.
    conn = established()
    send(conn, T1, SYN, rseq(1), dst=conn.local_id)
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    send(conn, T1, SYN, rseq(0), dst=conn.local_id)  # the old SYN, out of window
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    assert conn.state is State.ESTABLISHED
    assert drain(conn) == []


def test_old_syn_ack_is_reacked():
    # the peer's SYN-ACK again: our ACK was lost
    conn = established()
    send(conn, T1, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    assert conn.state is State.ESTABLISHED


def test_exact_rst_resets():
    conn = established()
    conn.send(b"unsent")
    send(conn, T1, RST, rseq(1))
    assert conn.state is State.CLOSED
    ev = drain(conn)
    assert [e.reason for e in ev if isinstance(e, events.ConnectionClosed)] == ["reset"]
    recv_nothing(conn, T1)
    assert conn.get_timer() is None


def test_in_window_rst_gets_challenge_ack():
    conn = established()
    send(conn, T1, RST, rseq(2))
    assert conn.state is State.ESTABLISHED
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    send(conn, T1, RST | ACK, rseq(BUF), lseq(1))  # the last in-window sequence number
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    assert conn.state is State.ESTABLISHED


def test_out_of_window_rst_is_silently_dropped():
    conn = established()
    send(conn, T1, RST, rseq(1 + BUF))
    send(conn, T1, RST, rseq(0))
    assert conn.state is State.ESTABLISHED
    recv_nothing(conn, T1)


def test_abort_sends_rst_at_snd_nxt():
    conn = established()
    conn.send(b"abc")
    assert [s.seq for s in recv(conn, T1)] == [lseq(1)]
    conn.abort()
    assert conn.state is State.CLOSED
    assert recv(conn, T1) == [out(RST, lseq(4), 0, window=0)]
    assert [e.reason for e in drain(conn)] == ["aborted"]
    assert conn.get_timer() is None
    with pytest.raises(LocalProtocolError):
        conn.send(b"more")


# --- sending -------------------------------------------------------------------------------------


def test_send_segments_by_mss_within_window():
    conn = established()  # the peer's window is REMOTE_WINDOW = 4096
    assert conn.send(b"q" * 5000) == 5000
    segs = recv(conn, T1)
    assert [(s.seq, len(s.payload)) for s in segs] == [
        (lseq(1), 1000), (lseq(1001), 1000), (lseq(2001), 1000), (lseq(3001), 1000)
    ]
    # RFC 9293 3.8.6.2.1 sender SWS avoidance: 96 bytes of window are not worth a segment
    assert all(s.flags == ACK and s.ack == rseq(1) for s in segs)
    assert conn.get_timer() == pytest.approx(T1 + conn.rtt.rto_s)
    send(conn, T1 + 0.05, ACK, rseq(1), lseq(2001))
    segs = recv(conn, T1 + 0.05)
    assert [(s.seq, len(s.payload)) for s in segs] == [(lseq(4001), 1000)]


def test_cork_holds_a_short_tail_until_more_data_or_the_end():
    # Like TCP_CORK: the application says more follows, so the queued data's short tail
    # waits instead of leaving as a runt; more data makes it a full segment.
    conn = established()
    conn.cork = True
    conn.send(b"a" * 1500)
    assert [len(s.payload) for s in recv(conn, T1)] == [1000]  # 500 bytes held
    conn.send(b"b" * 700)
    assert [len(s.payload) for s in recv(conn, T1)] == [1000]  # 200 held
    conn.cork = False  # the stream is complete
    assert [len(s.payload) for s in recv(conn, T1)] == [200]
    conn.cork = True
    conn.send(b"c" * 10)
    conn.close()  # a FIN waits for nothing: the tail goes with it
    segs = recv(conn, T1)
    assert [len(s.payload) for s in segs] == [10, 0] and segs[-1].flags & FIN


def test_small_window_with_nothing_in_flight_is_used():
    # at least half the largest window offered (RFC 9293 3.8.6.2.1, Fs = 1/2): sent at once
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), window=300)
    conn.send(b"w" * 1000)
    assert recv(conn, T1) == []  # 300 of the SYN-ACK's REMOTE_WINDOW: a runt, it waits
    send(conn, T1, ACK, rseq(1), lseq(1), window=4096)
    segs = recv(conn, T1)
    assert [len(s.payload) for s in segs] == [1000]


def test_ack_of_data_frees_buffer_and_stops_timer():
    conn = established(send_buffer_bytes=2000)
    assert conn.send(b"a" * 3000) == 2000  # bounded send buffer
    assert conn.send_buffer_space == 0
    recv(conn, T1)
    send(conn, T1 + 0.1, ACK, rseq(1), lseq(2001))
    assert conn.send_buffer_space == 2000
    assert events.SendSpaceAvailable() in drain(conn)
    assert conn.get_timer() is None
    assert conn.rtt.latest_rtt_s == pytest.approx(0.1)  # an RTT sample from the ACK


def test_ack_of_unsent_data_is_acked_and_dropped():
    # RFC 9293 3.10.7.4: SEG.ACK > SND.NXT -> send an ACK, drop the segment.
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(50), payload=b"data")
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(1))]
    assert conn.readable == 0


def test_piggybacked_ack_on_data():
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"ping")
    conn.send(b"pong")
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(5), window=BUF - 4, payload=b"pong")]
    assert conn.get_timer() == pytest.approx(T1 + conn.rtt.rto_s)  # no delayed ACK pending


def test_old_window_update_is_ignored():
    # RFC 9293 3.10.7.4: update SND.WND only from a segment newer than SND.WL1/WL2.
    conn = established()
    send(conn, T1, ACK, rseq(1), lseq(1), payload=b"x" * 10, window=2000)
    assert conn.refresh_stats().peer_window_bytes == 2000
    send(conn, T1, ACK, rseq(1), lseq(1), window=9000)  # older (lower seq): ignored
    assert conn.refresh_stats().peer_window_bytes == 2000
    send(conn, T1, ACK, rseq(11), lseq(1), window=3000)
    assert conn.refresh_stats().peer_window_bytes == 3000


def test_window_update_after_read():
    conn = established(receive_buffer_bytes=4000)
    for i in range(4):
        send(conn, T1, ACK, rseq(1 + 1000 * i), lseq(1), payload=b"f" * 1000)
    assert recv(conn, T1)[-1] == out(ACK, lseq(1), rseq(4001), window=0)
    conn.read(500)  # not enough to be worth announcing (receiver SWS avoidance)
    recv_nothing(conn, T1)
    conn.read()
    assert recv(conn, T1) == [out(ACK, lseq(1), rseq(4001), window=4000)]


# --- timers --------------------------------------------------------------------------------------


def test_idle_connection_has_no_timer_and_never_times_out():
    conn = established(user_timeout_s=1.0)
    assert conn.get_timer() is None
    conn.handle_timer(T0 + 1000)
    assert conn.state is State.ESTABLISHED


def test_user_timeout_with_data_outstanding():
    conn = established(user_timeout_s=10.0)
    conn.send(b"unanswered")
    recv(conn, T1)
    t = T1
    sends = 0
    while conn.state is State.ESTABLISHED:
        t = conn.get_timer()
        conn.handle_timer(t)
        sends += len(recv(conn, t))
    # silence measured from the last segment heard (the SYN-ACK at T0)
    assert t == pytest.approx(T0 + 10.0)
    assert sends >= 3
    closed = [e for e in drain(conn) if isinstance(e, events.ConnectionClosed)]
    assert [c.reason for c in closed] == ["timeout"]
    assert conn.get_timer() is None


def test_user_timeout_restarts_when_the_peer_speaks():
    conn = established(user_timeout_s=10.0)
    conn.send(b"a" * 3000)
    recv(conn, T1)
    send(conn, T0 + 8.0, ACK, rseq(1), lseq(1001))  # partial progress at t=8
    t = T0 + 8.0
    while conn.state is State.ESTABLISHED:
        t = conn.get_timer()
        conn.handle_timer(t)
        recv(conn, t)
    assert t == pytest.approx(T0 + 18.0)


def test_fin_without_ack_is_dropped():
    conn = established()
    send(conn, T1, FIN, rseq(1))
    assert conn.state is State.ESTABLISHED
