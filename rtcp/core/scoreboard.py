"""The sender's scoreboard: every data segment in flight, what the peer SACKed, what is lost.

RFC 6675 section 3 keeps per-segment state (SACKed, lost, retransmitted) to decide what to
retransmit and how much is in the network (`pipe`). Segment boundaries never change after the
first transmission, so a retransmission is the same byte range as the original.

The scoreboard also keeps the delivery-rate estimator's per-segment stamps
(draft-cheng-iccrg-delivery-rate-estimation): each transmission records how much had been
delivered when it left, so each ACK yields the rate at which the network delivered data.

Loss marking follows RFC 6675 IsLost(): a segment is lost when DupThresh segments above it have
been SACKed. Because SACKs only ever accumulate above a segment, "lost" is monotone, and one scan
pointer that only moves forward makes detection amortised O(1) per segment, not O(window) per ACK.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

DUP_THRESH = 3  # RFC 5681 / RFC 6675 DupThresh
_COMPACT_MIN_RECORDS = 1024


class SentSegment:
    """One data segment that was sent and is not yet cumulatively acknowledged."""

    __slots__ = ("acked", "end", "lost", "retransmits", "sacked", "sent_at", "stamp", "start")

    def __init__(self, start: int, end: int, sent_at: float, stamp: tuple | None = None):
        self.start = start  # absolute offset of the first byte
        self.end = end  # absolute offset one past the last byte
        self.sent_at = sent_at  # time of the latest (re)transmission
        self.retransmits = 0
        self.sacked = False
        self.lost = False  # declared lost and not yet retransmitted
        self.acked = False  # removed by a cumulative ACK
        # Delivery-rate stamps of the latest transmission (Scoreboard._stamp): (delivered,
        # delivered_time, first_sent_time, app_limited), one tuple shared by a batch.
        self.stamp = stamp if stamp is not None else (0, sent_at, sent_at, False)


def _start(rec: SentSegment) -> int:
    return rec.start


class Scoreboard:
    """Ordered records of the segments in flight, with SACK, loss and pipe bookkeeping."""

    def __init__(self, dup_thresh: int = DUP_THRESH):
        self.dup_thresh = dup_thresh
        self._recs: list[SentSegment] = []
        self._head = 0  # index of the oldest record still outstanding
        self._scan = 0  # first index not yet classified by the loss scan
        self._sacked_below_scan = 0  # SACKed records in [head, scan)
        self._lost_queue: deque[SentSegment] = deque()
        self.outstanding_bytes = 0
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.sacked_count = 0
        self.highest_sacked = 0  # absolute offset one past the highest SACKed byte
        # Delivery-rate estimation state (C.delivered, C.delivered_time, C.first_sent_time).
        self.delivered = 0
        self.delivered_time = 0.0
        self.first_sent_time = 0.0
        self.app_limited_until = 0  # non-zero: app-limited until `delivered` passes it
        self._rs_prior_delivered = -1  # the sample being built by the current ACK
        self._rs_prior_time = 0.0
        self._rs_send_elapsed = 0.0
        self._rs_ack_elapsed = 0.0
        self._rs_rtt: float | None = None
        self._rs_app_limited = False
        # Lost-retransmission detection (RACK's idea, RFC 8985 6.2): the send time of the most
        # recently sent segment known delivered, and retransmissions in the order they left.
        self.newest_delivered_sent_at = 0.0
        self.rack_end = 0  # end offset of that segment (RACK.end_seq)
        self.rack_rtt_s = 0.0  # its RTT (RACK.rtt)
        self.min_rtt_s = float("inf")  # the connection's min RTT: RFC 8985 6.2 step 2's test
        self._retransmitted: deque[tuple[SentSegment, float]] = deque()

    def __len__(self) -> int:
        return len(self._recs) - self._head

    @property
    def pipe(self) -> int:
        """RFC 6675 'pipe': bytes believed to be in the network."""
        return self.outstanding_bytes - self.sacked_bytes - self.lost_bytes

    def first(self) -> SentSegment | None:
        return self._recs[self._head] if self._head < len(self._recs) else None

    def last(self) -> SentSegment | None:
        return self._recs[-1] if self._head < len(self._recs) else None

    def last_unsacked(self) -> SentSegment | None:
        """The highest record the peer has not SACKed: what a tail loss probe resends when the
        last one arrived (its loss would otherwise wait for the RTO)."""
        recs = self._recs
        for i in range(len(recs) - 1, self._head - 1, -1):
            if not recs[i].sacked:
                return recs[i]
        return None

    def add(self, start: int, end: int, now: float) -> SentSegment:
        rec = SentSegment(start, end, now, self._stamp(now))
        self._recs.append(rec)
        self.outstanding_bytes += end - start
        return rec

    def add_run(self, start: int, count: int, size: int, now: float) -> None:
        """add() for `count` segments of `size` bytes from `start`, sent at one moment: they
        share one stamp, as they would one by one (nothing is delivered in between)."""
        stamp = self._stamp(now)
        append = self._recs.append
        for seg_start in range(start, start + count * size, size):
            append(SentSegment(seg_start, seg_start + size, now, stamp))
        self.outstanding_bytes += count * size

    def _stamp(self, now: float) -> tuple:
        if self.pipe <= 0:  # nothing in flight: the sample interval starts now
            self.first_sent_time = self.delivered_time = now
        return (self.delivered, self.delivered_time, self.first_sent_time,
                self.app_limited_until != 0)

    def _deliver(self, rec: SentSegment, size: int, now: float, in_order: bool = True) -> None:
        """`rec` reached the receiver (cumulative ACK or SACK): update the rate sample."""
        self.delivered += size
        self.delivered_time = now
        self.advance_rack(rec.sent_at, rec.end, bool(rec.retransmits), now)
        if self.app_limited_until and self.delivered > self.app_limited_until:
            self.app_limited_until = 0
        delivered, delivered_time, first_sent_time, app_limited = rec.stamp
        if delivered >= self._rs_prior_delivered:  # the most recently sent one wins
            self._rs_prior_delivered = delivered
            self._rs_prior_time = delivered_time
            self._rs_app_limited = app_limited
            self._rs_send_elapsed = rec.sent_at - first_sent_time
            self._rs_ack_elapsed = now - delivered_time
            # RTT only from in-order deliveries: a segment SACKed out of order may have
            # overtaken the others (a reordering path), and its short RTT would drag a
            # rate-based controller's RTprop, and so its window, far below the real one.
            self._rs_rtt = None if rec.retransmits or not in_order else now - rec.sent_at
            self.first_sent_time = rec.sent_at

    def advance_rack(self, sent_at: float, end: int, retransmitted: bool, now: float) -> None:
        """RFC 8985 6.2 step 2: a segment sent at `sent_at`, ending at offset `end`, was
        delivered: a data record here, or the FIN (no record: it carries no bytes).

        A retransmitted segment's delivery may be the original's, so its (re)transmission time
        proves nothing about what was sent before it, unless it was delivered at least min_RTT
        after the retransmission (then the retransmission arrived). Without this, SACKs of
        retransmissions (tail loss probes) never advance RACK, and segments lost behind them
        wait for DupThresh SACKs or the RTO."""
        if sent_at >= self.newest_delivered_sent_at and (
            not retransmitted or now - sent_at >= self.min_rtt_s
        ) and (sent_at > self.newest_delivered_sent_at or end > self.rack_end):
            # RACK.segment (RFC 8985 6.2): the latest sent, ties broken by sequence
            self.newest_delivered_sent_at = sent_at
            self.rack_end = end
            self.rack_rtt_s = now - sent_at

    def take_rate_sample(self) -> tuple[int, float, int, float | None, bool] | None:
        """(delivered bytes, interval s, prior delivered, rtt s, app-limited) of the ACK just
        processed, or None when it delivered nothing. An interval of 0 means no rate."""
        prior = self._rs_prior_delivered
        if prior < 0:
            return None
        self._rs_prior_delivered = -1
        interval = max(self._rs_send_elapsed, self._rs_ack_elapsed, 0.0)
        return self.delivered - prior, interval, prior, self._rs_rtt, self._rs_app_limited

    def on_cumulative_ack(self, ack: int, now: float) -> tuple[SentSegment | None, float | None]:
        """Remove everything below `ack`. Returns, for RTT sampling, the newest fully acked
        record and the latest send time of any retransmitted record acked (None if none)."""
        recs = self._recs
        head = self._head
        newest = None
        retransmitted_at = None
        count = len(recs)
        plain = None  # the newest of a run of plain records (sent once, not SACKed, not lost)
        plain_bytes = 0
        while head < count:
            rec = recs[head]
            if rec.end <= ack and not (rec.sacked or rec.lost or rec.retransmits):
                # The common case, folded: one _deliver for the run gives the same result,
                # since each record of it is sent later than the one before (so it wins).
                plain = rec
                plain_bytes += rec.end - rec.start
                rec.acked = True
                head += 1
                continue
            if plain is not None:
                newest = plain
                self.outstanding_bytes -= plain_bytes
                self._deliver(plain, plain_bytes, now)
                plain = None
                plain_bytes = 0
            if rec.end <= ack:
                if not rec.sacked:
                    self._deliver(rec, rec.end - rec.start, now)
                self._forget(rec, head)
                rec.acked = True
                newest = rec
                if rec.retransmits and (retransmitted_at is None or rec.sent_at > retransmitted_at):
                    retransmitted_at = rec.sent_at
                head += 1
            else:
                if rec.start < ack:  # partly acked: the peer trimmed it at its window edge
                    delta = ack - rec.start
                    if not rec.sacked:
                        self.delivered += delta
                    self.outstanding_bytes -= delta
                    if rec.sacked:
                        self.sacked_bytes -= delta
                    if rec.lost:
                        self.lost_bytes -= delta
                    rec.start = ack
                break
        if plain is not None:
            newest = plain
            self.outstanding_bytes -= plain_bytes
            self._deliver(plain, plain_bytes, now)
        self._head = head
        if self._scan < head:
            self._scan = head
            self._sacked_below_scan = 0
        if head >= _COMPACT_MIN_RECORDS and head * 2 >= len(recs):
            del recs[:head]
            self._scan -= head
            self._head = 0
        return newest, retransmitted_at

    def _forget(self, rec: SentSegment, index: int) -> None:
        size = rec.end - rec.start
        self.outstanding_bytes -= size
        if rec.sacked:
            self.sacked_bytes -= size
            self.sacked_count -= 1
            if index < self._scan:
                self._sacked_below_scan -= 1
        if rec.lost:
            self.lost_bytes -= size

    def on_sack(self, blocks, now: float) -> int:
        """Mark records inside the SACK blocks (absolute [left, right) pairs). Returns new bytes."""
        recs = self._recs
        newly = 0
        for left, right in blocks:
            i = bisect_left(recs, left, lo=self._head, key=_start)
            while i < len(recs):
                rec = recs[i]
                if rec.end > right:
                    break
                if not rec.sacked:
                    size = rec.end - rec.start
                    rec.sacked = True
                    self.sacked_bytes += size
                    self.sacked_count += 1
                    newly += size
                    self._deliver(rec, size, now, in_order=False)
                    if rec.lost:
                        rec.lost = False
                        self.lost_bytes -= size
                    if i < self._scan:
                        self._sacked_below_scan += 1
                    self.highest_sacked = max(self.highest_sacked, rec.end)
                i += 1
        return newly

    def detect_losses(self, reorder_window_s: float = float("inf"), now: float | None = None) -> int:
        """Mark lost every record that RFC 6675 IsLost() condemns (DupThresh SACKed records
        above it) or RACK does (RFC 8985 6.2: a segment sent more than reorder_window_s after
        it was delivered, so with a small window three SACKs are not needed). With `now`
        (the reordering timer, RFC 8985 6.3): also a segment sent before RACK.segment, at
        the same moment too, once RACK.rtt + reorder_window_s have passed since it left."""
        recs = self._recs
        i = self._scan
        below = self._sacked_below_scan
        marked = 0
        rack_limit = self.newest_delivered_sent_at - reorder_window_s
        timer_limit = None if now is None else now - self.rack_rtt_s - reorder_window_s
        while i < len(recs):
            rec = recs[i]
            if rec.sacked:
                below += 1
            elif self.sacked_count - below >= self.dup_thresh or (
                not rec.retransmits and (rec.sent_at < rack_limit or (
                    timer_limit is not None and rec.end <= self.rack_end
                    and rec.sent_at <= timer_limit
                ))
            ):
                self._mark_lost(rec)
                marked += 1
            else:
                break
            i += 1
        self._scan = i
        self._sacked_below_scan = below
        return marked

    def reorder_deadline(self, reorder_window_s: float) -> float | None:
        """RFC 8985 6.3: when the first segment not yet SACKed or lost was sent before
        RACK.segment (at the same moment included: a burst) but too recently to be lost,
        the time the reordering timer must fire to mark it; else None. Call after
        detect_losses, which leaves the scan at that segment."""
        if self._scan >= len(self._recs):
            return None
        rec = self._recs[self._scan]
        if rec.sacked or rec.lost or rec.retransmits or rec.end > self.rack_end:
            return None
        return rec.sent_at + self.rack_rtt_s + reorder_window_s

    def mark_first_lost(self) -> bool:
        """The first unSACKed record is lost (DupThresh duplicate ACKs, RFC 5681 3.2 / 6675 5)."""
        for i in range(self._head, len(self._recs)):
            rec = self._recs[i]
            if not rec.sacked:
                if rec.lost:
                    return False
                self._mark_lost(rec)
                return True
        return False

    def mark_all_lost(self) -> None:
        """After a retransmission timeout every record is presumed lost (RFC 6675 5.1), the
        SACKed ones too: a receiver may have reneged on them, and RFC 2018 8 has the sender
        forget SACK information at a timeout (else such a receiver stalls the connection)."""
        self._lost_queue.clear()
        for i in range(self._head, len(self._recs)):
            rec = self._recs[i]
            if rec.sacked:
                rec.sacked = False
                self.sacked_bytes -= rec.end - rec.start
                self.sacked_count -= 1
            self._mark_lost(rec)
        self.highest_sacked = 0
        self._scan = len(self._recs)
        self._sacked_below_scan = self.sacked_count

    def _mark_lost(self, rec: SentSegment) -> None:
        if not rec.lost:
            rec.lost = True
            self.lost_bytes += rec.end - rec.start
        self._lost_queue.append(rec)

    def next_lost(self) -> SentSegment | None:
        """The lowest record still waiting for retransmission (RFC 6675 NextSeg rule 1)."""
        queue = self._lost_queue
        while queue:
            rec = queue[0]
            if rec.lost and not rec.acked and not rec.sacked:
                return rec
            queue.popleft()
        return None

    def split(self, rec: SentSegment, size: int) -> None:
        """Replace `rec` by pieces of at most `size` bytes: the segment size shrank (a path-MTU
        black hole) and the same bytes must be resent in smaller segments."""
        i = bisect_left(self._recs, rec.start, lo=self._head, key=_start)
        if i >= len(self._recs) or self._recs[i] is not rec:
            return
        pieces = []
        for start in range(rec.start, rec.end, size):
            piece = SentSegment(start, min(start + size, rec.end), rec.sent_at, rec.stamp)
            piece.retransmits = rec.retransmits
            piece.lost = rec.lost
            piece.sacked = rec.sacked
            pieces.append(piece)
        self._recs[i:i + 1] = pieces
        if i < self._scan:
            self._scan += len(pieces) - 1
            if rec.sacked:
                self._sacked_below_scan += len(pieces) - 1
        if rec.sacked:
            self.sacked_count += len(pieces) - 1
        rec.acked = True  # stale references (the lost queue) skip it
        if self._lost_queue and self._lost_queue[0] is rec:
            self._lost_queue.popleft()
        if rec.lost:
            self._lost_queue.extendleft(reversed(pieces))

    def on_retransmit(self, rec: SentSegment, now: float) -> None:
        if rec.lost:
            rec.lost = False
            self.lost_bytes -= rec.end - rec.start
        if self._lost_queue and self._lost_queue[0] is rec:
            self._lost_queue.popleft()
        rec.retransmits += 1
        rec.sent_at = now
        rec.stamp = self._stamp(now)
        self._retransmitted.append((rec, now))

    def detect_lost_retransmissions(self, reorder_window_s: float) -> int:
        """A retransmission is lost when a segment sent more than reorder_window_s after it has
        been delivered (RFC 8985's rule, applied to retransmissions, which IsLost never
        re-examines): without this only the retransmission timer would find it."""
        queue = self._retransmitted
        newest = self.newest_delivered_sent_at
        marked = 0
        while queue:
            rec, sent_at = queue[0]
            if rec.acked or rec.sacked or rec.lost or rec.sent_at != sent_at:
                queue.popleft()
                continue
            if sent_at + reorder_window_s >= newest:
                break
            queue.popleft()
            rec.lost = True
            self.lost_bytes += rec.end - rec.start
            self._lost_queue.appendleft(rec)
            marked += 1
        return marked
