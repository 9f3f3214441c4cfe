"""RFC fine print (issue 13) on exact segments: the test plays the peer by hand."""

from __future__ import annotations

from tests.core.conn_helpers import (
    ACK,
    REMOTE_WINDOW,
    T0,
    established,
    lseq,
    out,
    recv,
    recv_one,
    rseq,
    send,
)

SENT_BYTES = 3 * REMOTE_WINDOW


def _after_sending(nbytes: int, **kw):
    """An established connection that sent nbytes, all acknowledged: SND.UNA = nbytes + 1."""
    conn = established(**kw)
    assert conn.send(bytes(nbytes)) == nbytes
    t = T0
    while conn.snd_una < nbytes + 1:
        t += 0.01
        segs = recv(conn, t)
        assert segs
        end = max((s.seq - lseq(0)) % 2**32 + len(s.payload) for s in segs)
        send(conn, t, ACK, rseq(1), lseq(end))
    return conn, t


def test_data_with_an_ack_older_than_any_window_is_dropped_with_a_challenge_ack():
    # RFC 5961 5.2: SEG.ACK below SND.UNA - MAX.SND.WND is a blind guess, not an old ACK.
    conn, t = _after_sending(SENT_BYTES)
    una = SENT_BYTES + 1
    send(conn, t + 0.1, ACK, rseq(1), lseq(una - REMOTE_WINDOW - 1), payload=b"forged")
    assert conn.readable == 0
    assert recv_one(conn, t + 0.1) == out(ACK, lseq(una), rseq(1))
    # An ACK just inside MAX.SND.WND is an old duplicate's: its data is taken.
    send(conn, t + 0.2, ACK, rseq(1), lseq(una - REMOTE_WINDOW), payload=b"real")
    assert conn.read() == b"real"


def test_challenge_acks_are_rate_limited():
    # RFC 5961 7: a flood of forged segments gets a bounded number of answers.
    conn, t = _after_sending(SENT_BYTES)
    answers = 0
    for i in range(100):
        now = t + 0.1 + i * 0.001
        send(conn, now, ACK, rseq(1), lseq(1), payload=b"x")
        answers += len(recv(conn, now))
    assert 1 <= answers <= 10
    assert conn.stats.challenge_acks_limited == 100 - answers
    assert conn.readable == 0
