"""RACK (RFC 8985 6.2 step 2) takes the send time of a delivered retransmission when the
delivery cannot be the original's, so segments lost behind a tail loss probe are found."""

from __future__ import annotations

from rtcp.core.scoreboard import Scoreboard

MSS = 1000


def _board(n: int) -> Scoreboard:
    sb = Scoreboard(dup_thresh=256)  # DupThresh widened by spurious retransmissions
    sb.min_rtt_s = 0.002
    sb.add_run(0, n, MSS, 1.0)
    return sb


def test_sacked_retransmission_advances_rack_and_marks_the_flight_lost():
    sb = _board(10)
    rec = sb.last()
    sb.on_retransmit(rec, 1.030)  # a tail loss probe
    sb.on_sack([(rec.start, rec.end)], 1.042)  # SACKed one RTT later: the probe arrived
    assert sb.newest_delivered_sent_at == 1.030
    assert sb.detect_losses(reorder_window_s=0.005) == 9
    assert sb.next_lost() is sb.first()


def test_early_sack_of_a_retransmission_is_the_original_and_proves_nothing():
    sb = _board(10)
    rec = sb.last()
    sb.on_retransmit(rec, 1.030)
    sb.on_sack([(rec.start, rec.end)], 1.031)  # sooner than min_RTT: the original's SACK
    assert sb.newest_delivered_sent_at == 0.0
    assert sb.detect_losses(reorder_window_s=0.005) == 0
