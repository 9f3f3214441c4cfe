"""RFC fine print (issue 13) on exact segments: the test plays the peer by hand."""

from __future__ import annotations

import pytest

from tests.core.conn_helpers import (
    ACK,
    FIN,
    MSS,
    REMOTE_WINDOW,
    SYN,
    T0,
    State,
    established,
    lseq,
    out,
    recv,
    recv_one,
    rseq,
    send,
    syn_sent,
)

SENT_BYTES = 3 * REMOTE_WINDOW


def _established_with_timestamps():
    conn = syn_sent(timestamps=True)
    send(conn, T0, SYN | ACK, rseq(0), lseq(1), mss=1000, ts_val=6000, ts_ecr=0)
    assert conn.state is State.ESTABLISHED and conn.ts_ok
    recv(conn, T0)
    return conn


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


def test_a_segment_without_timestamps_is_dropped_once_they_were_negotiated():
    # RFC 7323 3.2: after both SYNs carried timestamps, every non-RST segment must too.
    conn = _established_with_timestamps()
    ts = {"ts_val": 6100, "ts_ecr": 0}
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1), payload=b"no-ts")
    assert conn.readable == 0
    assert conn.stats.segments_without_timestamps == 1
    send(conn, T0 + 0.2, ACK, rseq(1), lseq(1), payload=b"ts", **ts)
    assert conn.read() == b"ts"


def test_a_delayed_ack_echoes_the_earliest_unacknowledged_segments_tsval():
    # RFC 7323 4.3: TS.Recent moves only for a segment at or below Last.ACK.sent, so one ACK
    # for two segments echoes the first one's TSval (the peer's RTT then includes the delay).
    conn = _established_with_timestamps()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1), payload=b"a" * 100, ts_val=7000, ts_ecr=0)
    send(conn, T0 + 0.11, ACK, rseq(101), lseq(1), payload=b"b" * 100, ts_val=7010, ts_ecr=0)
    ack = recv_one(conn, T0 + 0.11)
    assert (ack.flags, ack.ack) == (ACK, rseq(201))
    assert ack.ts_ecr == 7000


def test_a_forged_ack_does_not_move_ts_recent():
    conn = _established_with_timestamps()
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1), payload=b"a", ts_val=7000, ts_ecr=0)
    assert conn.read() == b"a"
    recv(conn, T0 + 0.1)
    # An ACK of data never sent, with a TSval 2^31 - 1 ahead: dropped, and TS.Recent stays.
    send(conn, T0 + 0.2, ACK, rseq(2), lseq(50_000), ts_val=7000 + 2**31 - 1, ts_ecr=0)
    send(conn, T0 + 0.3, ACK, rseq(2), lseq(1), payload=b"b", ts_val=7100, ts_ecr=0)
    assert conn.read() == b"b"


def test_after_two_syn_timeouts_data_starts_with_a_3_s_rto_and_one_segment():
    # RFC 6298 5.7: the SYN timed out and the handshake gave no RTT sample (Karn): the data's
    # RTO is 3 s, not 1 s. RFC 6928 2: after two SYN retransmissions, the initial window is
    # one segment, not ten: the path just lost what little was sent.
    conn = syn_sent()
    for t in (T0 + 1, T0 + 3):
        conn.handle_timer(t)
        assert [s.flags for s in recv(conn, t)] == [SYN]
    send(conn, T0 + 3.5, SYN | ACK, rseq(0), lseq(1), mss=MSS, window=64_000)
    assert conn.state is State.ESTABLISHED
    assert conn.rtt.rto_s == 3.0
    conn.send(bytes(10 * MSS))
    segs = recv(conn, T0 + 3.5)
    assert [len(s.payload) for s in segs] == [MSS]
    assert conn.get_timer() == T0 + 6.5


def test_rto_backoff_stops_at_one_second_by_default():
    # The deliberate deviation from RFC 6298 5.5 (README, mechanism map): the SYN is resent
    # every second, not after 1, 2, 4, 8 s, so that a 15 s deadline holds fifteen tries.
    conn = syn_sent(max_backoff_rto_s=1.0)
    times = []
    t = T0
    while len(times) < 5:
        t = conn.get_timer()
        conn.handle_timer(t)
        if recv(conn, t):
            times.append(t - T0)
    assert times == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])


HANDSHAKE_RTT_S = 0.1


def _established_with_sack():
    """A client with SACK whose handshake took HANDSHAKE_RTT_S (its RTT sample)."""
    conn = syn_sent(sack=True)
    t = T0 + HANDSHAKE_RTT_S
    send(conn, t, SYN | ACK, rseq(0), lseq(1), mss=MSS, sack_permitted=True)
    assert conn.state is State.ESTABLISHED and conn.sack_ok
    recv(conn, t)
    return conn


def test_sack_marks_are_forgotten_at_a_timeout_so_a_reneging_receiver_does_not_stall():
    # RFC 2018 8: the receiver SACKed the second and third segments, then dropped them
    # (reneged). After the timeout the sender must resend them too, not wait for ever.
    conn = _established_with_sack()
    conn.send(bytes(3 * MSS))
    first = recv(conn, T0 + 0.1)
    assert [(s.seq, len(s.payload)) for s in first] == [(lseq(1 + i * MSS), MSS) for i in range(3)]
    send(conn, T0 + 0.2, ACK, rseq(1), lseq(1), sack_blocks=((lseq(1 + MSS), lseq(1 + 3 * MSS)),))
    resent = []
    t = T0 + 0.2
    while conn.snd_una < 1 + 3 * MSS and t < T0 + 20:
        t = conn.get_timer()
        conn.handle_timer(t)
        for seg in recv(conn, t):
            if seg.payload:
                resent.append(seg.seq)
                # the receiver kept none of the SACKed data: it ACKs only what is contiguous
                end = (seg.seq - lseq(0)) % 2**32 + len(seg.payload)
                if (seg.seq - lseq(0)) % 2**32 <= conn.snd_una:
                    send(conn, t, ACK, rseq(1), lseq(end))
    assert conn.snd_una == 1 + 3 * MSS
    assert lseq(1 + MSS) in resent and lseq(1 + 2 * MSS) in resent


def test_with_sack_an_ack_without_new_sack_information_is_no_duplicate_ack():
    # RFC 6675 2: three copies of one ACK (a network that duplicates) are one duplicate ACK,
    # not three: no fast retransmit.
    conn = _established_with_sack()
    conn.send(bytes(4 * MSS))
    assert len(recv(conn, T0 + 0.1)) == 4
    block = ((lseq(1 + 3 * MSS), lseq(1 + 4 * MSS)),)
    for _ in range(3):
        send(conn, T0 + 0.101, ACK, rseq(1), lseq(1), sack_blocks=block)
    assert [s for s in recv(conn, T0 + 0.101) if s.payload] == []
    assert conn.stats.fast_recoveries == 0


def test_a_spurious_timeout_is_undone():
    # RFC 4015: the ACK echoes the TSval of the original transmission, so the timeout was
    # spurious (the ACKs were late, not lost): cwnd and ssthresh return to what they were.
    from rtcp.core.connection import TS_TICKS_PER_S

    conn = _established_with_timestamps()
    before = (conn.cc.cwnd, conn.cc.ssthresh)
    conn.send(bytes(4 * MSS))
    sent_at = T0 + 0.1
    assert len(recv(conn, sent_at)) == 4
    t = conn.get_timer()
    conn.handle_timer(t)
    assert [s.seq for s in recv(conn, t) if s.payload] == [lseq(1)]
    assert conn.cc.cwnd == MSS
    echo = int(sent_at * TS_TICKS_PER_S) % 2**32
    send(conn, t + 0.05, ACK, rseq(1), lseq(1 + 4 * MSS), ts_val=6100, ts_ecr=echo)
    assert conn.stats.spurious_retransmissions == 1
    assert conn.cc.ssthresh == before[1]
    assert conn.cc.cwnd >= before[0]


def test_abort_in_time_wait_sends_no_rst():
    # RFC 9293 3.10.5: in TIME-WAIT, ABORT just deletes the connection.
    from tests.core.conn_helpers import time_wait

    conn = time_wait()
    conn.abort()
    assert recv(conn, T0 + 0.1) == []


def test_an_ack_below_snd_una_does_not_update_the_window():
    # RFC 9293 3.10.7.4: SND.UNA =< SEG.ACK is part of the window-update rule; a reordered
    # old ACK with a newer sequence number must not reopen (or close) the window.
    conn, t = _after_sending(SENT_BYTES)
    una = SENT_BYTES + 1
    send(conn, t + 0.1, ACK, rseq(1), lseq(una), window=REMOTE_WINDOW, payload=b"abcd")
    send(conn, t + 0.2, ACK, rseq(5), lseq(una - 1000), window=0, payload=b"late")
    assert conn.snd_wnd == REMOTE_WINDOW


def test_close_in_syn_sent_keeps_the_queued_data():
    # RFC 9293 3.10.4: data queued before the handshake completes is sent after it, then FIN.
    from tests.core.conn_helpers import FIN, drain

    conn = syn_sent()
    conn.send(b"queued")
    conn.close()
    assert conn.state is State.SYN_SENT
    send(conn, T0 + 0.1, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    segs = recv(conn, T0 + 0.1)
    assert [(s.flags, s.payload) for s in segs if s.payload or s.flags & FIN] == [
        (ACK, b"queued"), (FIN | ACK, b"")]
    assert conn.state is State.FIN_WAIT_1
    assert not [e for e in drain(conn) if type(e).__name__ == "ConnectionClosed"]


@pytest.mark.parametrize("cc", ["reno", "cubic"])
def test_after_an_idle_period_the_window_restarts(cc):
    # RFC 5681 4.1: 10 s without sending (more than an RTO): cwnd restarts from
    # min(IW, cwnd), not the 60 segments it had grown to.
    conn, t = _after_sending(SENT_BYTES, congestion_control=cc)
    conn.cc.cwnd = 60 * MSS
    send(conn, t, ACK, rseq(1), lseq(SENT_BYTES + 1), window=65_000)
    conn.send(bytes(60 * MSS))
    burst = [s for s in recv(conn, t + 10) if s.payload]
    assert len(burst) == 10


def test_newreno_without_sack_sends_limited_transmit_and_inflates_at_entry():
    # RFC 3042: each of the first two duplicate ACKs lets one new segment go; RFC 6582 3.2:
    # recovery starts at ssthresh + 3 segments, and each further duplicate ACK adds one.
    conn, t = _after_sending(SENT_BYTES)
    una = SENT_BYTES + 1
    send(conn, t, ACK, rseq(1), lseq(una), window=65_000)
    conn.cc.cwnd = 10 * MSS
    conn.send(bytes(40 * MSS))
    assert len([s for s in recv(conn, t) if s.payload]) == 10
    new_after = []
    for i in range(8):
        now = t + 0.01 * (i + 1)
        send(conn, now, ACK, rseq(1), lseq(una), window=65_000)
        sent = [s for s in recv(conn, now) if s.payload]
        new_after.append(len([s for s in sent if s.seq != lseq(una)]))
    assert new_after[:2] == [1, 1]  # limited transmit
    # 12 in flight, ssthresh 6: cwnd is 6 + 3 + (n - 3) segments at the n-th duplicate ACK,
    # so new segments go from the 7th on (RFC 5681 3.2 steps 4-5).
    assert new_after[2:] == [0, 0, 0, 0, 1, 1]


def test_data_on_a_syn_ack_is_delivered():
    # RFC 9293 3.10.7.3: text on the SYN-ACK is processed after the handshake completes.
    conn = syn_sent()
    send(conn, T0 + 0.1, SYN | ACK, rseq(0), lseq(1), mss=MSS, payload=b"early")
    assert conn.state is State.ESTABLISHED
    assert conn.read() == b"early"
    assert recv_one(conn, T0 + 0.1).ack == rseq(6)


def test_a_retransmitted_syn_ack_is_answered_with_the_first_data_segment():
    # Through heavy loss: the listener still retransmits its SYN-ACK, so it has neither our
    # ACK nor any data. The answer is the first data segment (it carries the ACK too), not a
    # bare ACK: each SYN-ACK the listener sends is then a try for the data as well.
    conn = established()
    conn.send(b"d" * 500)
    [first] = recv(conn, T0)
    assert (first.seq, len(first.payload)) == (lseq(1), 500)
    send(conn, T0 + 1, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    segs = recv(conn, T0 + 1)
    assert [(s.flags, s.seq, s.ack, len(s.payload)) for s in segs] == [
        (ACK, lseq(1), rseq(1), 500)
    ]
    assert conn.stats.retransmits_synack == 1
    # once the listener acknowledged anything, a duplicate SYN-ACK gets the usual bare ACK
    send(conn, T0 + 1.1, ACK, rseq(1), lseq(501))
    conn.send(b"e" * 10)
    recv(conn, T0 + 1.1)
    send(conn, T0 + 1.2, SYN | ACK, rseq(0), lseq(1), mss=MSS)
    assert [len(s.payload) for s in recv(conn, T0 + 1.2)] == [0]


def test_the_answer_to_a_retransmitted_syn_ack_echoes_its_tsval():
    # The listener takes an RTT sample only from an echo of its latest SYN-ACK (Karn); the
    # answer echoed the first one, and the listener's verdict went out with RFC 6298 5.7's
    # 3 s RTO: 5 of 200,000 simulated transfers through 30% loss timed out waiting for it.
    conn = _established_with_timestamps()
    conn.send(b"d" * 500)
    [first] = recv(conn, T0)
    assert first.ts_ecr == 6000
    send(conn, T0 + 1, SYN | ACK, rseq(0), lseq(1), mss=1000, ts_val=7000, ts_ecr=0)
    [answer] = recv(conn, T0 + 1)
    assert (len(answer.payload), answer.ts_ecr) == (500, 7000)


HANDSHAKE_RTT_S = 0.1


def _established_with_sack():
    """A client with SACK whose handshake took HANDSHAKE_RTT_S (its RTT sample)."""
    conn = syn_sent(sack=True)
    t = T0 + HANDSHAKE_RTT_S
    send(conn, t, SYN | ACK, rseq(0), lseq(1), mss=MSS, sack_permitted=True)
    assert conn.state is State.ESTABLISHED and conn.sack_ok
    recv(conn, t)
    return conn


def test_a_fin_that_arrives_out_of_order_is_sacked():
    # The peer's last data (offsets 1-100) is lost, its FIN (offset 101) arrives: the
    # duplicate ACK reports the FIN in a SACK block, as Linux does (RFC 2018, RFC 9293 3.4).
    conn = _established_with_sack()
    send(conn, T0 + 0.01, FIN | ACK, rseq(101), lseq(1))
    ack = recv_one(conn, T0 + 0.01)
    assert (ack.flags, ack.ack) == (ACK, rseq(1))
    assert ack.sack_blocks == ((rseq(101), rseq(102)),)
    # with data held before it, the FIN extends that range
    send(conn, T0 + 0.02, ACK, rseq(51), lseq(1), payload=bytes(50))
    assert recv_one(conn, T0 + 0.02).sack_blocks == ((rseq(51), rseq(102)),)
    send(conn, T0 + 0.03, ACK, rseq(1), lseq(1), payload=bytes(50))
    ack = recv_one(conn, T0 + 0.03)
    assert (ack.ack, ack.sack_blocks) == (rseq(102), ())
    assert conn.state is State.CLOSE_WAIT


def test_a_sacked_fin_repairs_the_data_lost_before_it_without_waiting_for_the_rto():
    # A receiver's last word (its verdict) and FIN leave together; the verdict is lost, the
    # FIN arrives and is SACKed: RACK (RFC 8985 6.2, 6.3) marks the verdict lost after the
    # reordering window and it is sent again, long before the probe timeout or the RTO.
    conn = _established_with_sack()
    t1 = T0 + 1.0
    conn.send(bytes(100))
    conn.close()
    first = recv(conn, t1)
    assert [(s.flags, s.seq, len(s.payload)) for s in first] == [
        (ACK, lseq(1), 100), (FIN | ACK, lseq(101), 0),
    ]
    probe_at = conn.get_timer()  # the tail loss probe: two RTTs
    # the peer's duplicate ACK with the FIN's SACK block, one RTT later
    t2 = t1 + HANDSHAKE_RTT_S
    send(conn, t2, ACK, rseq(1), lseq(1), sack_blocks=((lseq(101), lseq(102)),))
    t = conn.get_timer()
    assert t < probe_at  # RTT + the reordering window
    conn.handle_timer(t)
    resent = recv(conn, t)
    assert [(s.seq, len(s.payload)) for s in resent] == [(lseq(1), 100)]
    stats = conn.refresh_stats()
    assert stats.retransmits_fast == 1
    assert stats.retransmits_timeout == stats.retransmits_tlp == 0
