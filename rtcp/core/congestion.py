"""Congestion controllers behind one small interface, and a registry of them by name.

The connection owns loss detection and recovery bookkeeping (RFC 6675 pipe, recovery point)
and tells the controller what happened; the controller owns cwnd and ssthresh (bytes):

- `on_ack`: new data cumulatively acknowledged outside recovery (grows cwnd);
- `on_congestion_event`: loss found by duplicate ACKs / SACK, entering recovery;
- `on_recovery_exit`: everything outstanding at the loss was acknowledged;
- `on_rto`: the retransmission timer expired;
- `on_spurious_rto`: the last timeout turned out spurious (undo it);
- `pacing_rate`: bytes/s to pace at, or None. Window-based controllers (Reno, Cubic) return
  None; a rate-based one (BBR-like) would return its pacing rate and may use cwnd only as a cap.

Slow start, recovery and timeout handling are shared; a subclass supplies the congestion
avoidance growth and the multiplicative decrease.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTROLLERS",
    "CongestionController",
    "Cubic",
    "RateSample",
    "Reno",
    "make_controller",
    "register",
]


@dataclass(slots=True)
class RateSample:
    """One delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation), made by the
    connection on every ACK that delivers data (cumulatively or by SACK), inside recovery too."""

    delivery_rate: float  # bytes/s delivered over the sample's interval
    interval_s: float  # max(send interval, ack interval) of the sample
    delivered: int  # bytes delivered during the interval
    prior_delivered: int  # connection's delivered count when the sampled segment was sent
    total_delivered: int  # connection's delivered count now (round trips are counted with it)
    rtt_s: float | None  # RTT of the most recently sent segment delivered by this ACK
    is_app_limited: bool  # the sender had nothing to send at some point in the interval
    newly_delivered: int  # bytes acked or SACKed by this ACK
    newly_lost: int  # bytes marked lost by this ACK
    bytes_in_flight: int  # pipe after processing this ACK

INFINITE_SSTHRESH_BYTES = 1 << 62  # RFC 5681 3.1: initial ssthresh "arbitrarily high"
DEFAULT_INITIAL_WINDOW_SEGMENTS = 10  # RFC 6928: IW10
# RFC 3465 appropriate byte counting in slow start, without its L = 2*SMSS cap per ACK (as
# Linux, whose slow start adds every packet acked): rtcp's receiver ACKs once per batch of
# datagrams it reads, a stretch ACK by design, and with the cap slow start grew by two
# segments per round trip instead of doubling.
ABC_LIMIT_SEGMENTS: int | None = None
MIN_SSTHRESH_SEGMENTS = 2  # RFC 5681 3.1 eq. (4): ssthresh >= 2*SMSS
LOSS_WINDOW_SEGMENTS = 1  # RFC 5681 3.1: cwnd after a timeout (LW = 1 SMSS)

PHASE_SLOW_START = "slow_start"
PHASE_CONGESTION_AVOIDANCE = "congestion_avoidance"
PHASE_RECOVERY = "recovery"


class CongestionController:
    """Shared machinery: slow start with ABC, one reduction per recovery, RTO and its undo."""

    name = "base"
    __slots__ = (
        "_ca_acked_bytes",
        "_initial_window_segments",
        "_rto_pending",
        "_undo",
        "cwnd",
        "in_recovery",
        "mss",
        "ssthresh",
    )

    def __init__(
        self, mss: int, *, initial_window_segments: int = DEFAULT_INITIAL_WINDOW_SEGMENTS
    ) -> None:
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss}")
        if initial_window_segments < 1:
            raise ValueError("initial_window_segments must be at least 1")
        self.mss = mss
        self._initial_window_segments = initial_window_segments
        self.cwnd = initial_window_segments * mss  # bytes
        self.ssthresh = INFINITE_SSTHRESH_BYTES  # bytes
        self.in_recovery = False
        self._ca_acked_bytes = 0  # RFC 3465 byte counter in congestion avoidance
        self._rto_pending = False  # a timeout happened and no new data was acked since
        self._undo: tuple | None = None  # state before the first of those timeouts

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh} phase={self.phase}>"
        )

    @property
    def phase(self) -> str:
        """One of PHASE_SLOW_START, PHASE_CONGESTION_AVOIDANCE, PHASE_RECOVERY."""
        if self.in_recovery:
            return PHASE_RECOVERY
        # RFC 5681 3.1: slow start while cwnd < ssthresh
        return PHASE_SLOW_START if self.cwnd < self.ssthresh else PHASE_CONGESTION_AVOIDANCE

    def pacing_rate(self, srtt_s: float | None) -> float | None:
        """Bytes/s to pace at; None means send as the window allows (no pacing)."""
        return None

    def on_rate_sample(self, sample: RateSample, now: float) -> None:
        """A delivery-rate sample; window-based controllers ignore it, rate-based ones live on it."""

    # -- events -------------------------------------------------------------------------------

    def on_ack(
        self, acked_bytes: int, now: float, rtt_s: float | None, bytes_in_flight: int
    ) -> None:
        """New data cumulatively acknowledged: grow cwnd (ignored during recovery).

        cwnd only grows while the sender is using it (RFC 7661 / RFC 5681 3.1 note): at least
        half of cwnd must have been in flight (bytes_in_flight + acked_bytes), so an
        application- or receiver-limited sender does not inflate cwnd without bound.
        """
        if acked_bytes <= 0:
            return
        self._rto_pending = False
        if self.in_recovery:
            return  # RFC 6675: cwnd stays at ssthresh until recovery ends
        if 2 * (bytes_in_flight + acked_bytes) < self.cwnd:
            return  # not cwnd-limited
        if self.cwnd < self.ssthresh:
            # RFC 5681 3.1 eq. (2) with RFC 3465 appropriate byte counting (no L: above)
            grow = acked_bytes
            if ABC_LIMIT_SEGMENTS is not None:
                grow = min(ABC_LIMIT_SEGMENTS * self.mss, grow)
            room = self.ssthresh - self.cwnd
            if grow <= room:
                self.cwnd += grow
                return
            # Crossing ssthresh: the rest of this ACK counts toward congestion avoidance.
            self.cwnd = self.ssthresh
            acked_bytes -= room
        self._congestion_avoidance(acked_bytes, now, rtt_s)

    def on_congestion_event(self, now: float, bytes_in_flight: int) -> None:
        """Loss detected by duplicate ACKs / SACK: reduce once and enter recovery.

        Further losses before `on_recovery_exit` belong to the same episode and are ignored
        (RFC 6582 section 3.2, RFC 6675 section 5).
        """
        if self.in_recovery:
            return
        self.in_recovery = True
        self._ca_acked_bytes = 0
        self._undo = None
        self.ssthresh = self._decrease(now, bytes_in_flight, rto=False)
        self.cwnd = self.ssthresh  # RFC 6675 section 5 step 4.2 / RFC 5681 3.2

    def on_recovery_exit(self, now: float) -> None:
        """Recovery ended (everything outstanding at the loss was acked): cwnd = ssthresh."""
        if not self.in_recovery:
            return
        self.in_recovery = False
        self.cwnd = self.ssthresh  # RFC 6582 section 3.2 step 3, option (2)
        self._ca_acked_bytes = 0

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """The retransmission timer expired: cwnd = 1 SMSS, leave recovery (RFC 5681 3.1)."""
        if not self._rto_pending:
            # RFC 5681 3.1 eq. (4) only for the first timeout of this data: a retransmission
            # lost again would otherwise collapse ssthresh to its floor.
            self._undo = self._save()
            self.ssthresh = self._decrease(now, bytes_in_flight, rto=True)
            self._rto_pending = True
        self.cwnd = LOSS_WINDOW_SEGMENTS * self.mss
        self.in_recovery = False
        self._ca_acked_bytes = 0

    def on_idle_restart(self, now: float) -> None:
        """Nothing was sent for more than an RTO: the ACK clock is gone, so cwnd starts again
        from the restart window, min(IW, cwnd) (RFC 5681 4.1), instead of a line-rate burst."""
        self.cwnd = min(self.cwnd, self._initial_window_segments * self.mss)

    def on_spurious_rto(self, now: float) -> None:
        """The last timeout was spurious (RFC 4015 Eifel response): restore cwnd and ssthresh
        from before it. Call it when the ACK proving the original arrived is processed (before
        or after its on_ack); no effect without a timeout since the last congestion event."""
        if self._undo is None:
            return
        self._restore(self._undo)
        self._undo = None
        self._rto_pending = False
        self.in_recovery = False
        self._ca_acked_bytes = 0

    # -- subclass hooks -----------------------------------------------------------------------

    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt_s: float | None) -> None:
        raise NotImplementedError

    def _decrease(self, now: float, bytes_in_flight: int, *, rto: bool) -> int:
        """The new ssthresh after a congestion event or timeout (bytes)."""
        raise NotImplementedError

    def _save(self) -> tuple:
        return (self.cwnd, self.ssthresh)

    def _restore(self, saved: tuple) -> None:
        self.cwnd, self.ssthresh = saved[0], saved[1]


class Reno(CongestionController):
    """RFC 5681 Reno (with RFC 6675-style recovery driven by the connection)."""

    name = "reno"
    __slots__ = ()

    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt_s: float | None) -> None:
        # RFC 5681 3.1 / RFC 3465 2.1: byte counting, +1 SMSS once a full cwnd is acked.
        self._ca_acked_bytes += acked_bytes
        if self._ca_acked_bytes >= self.cwnd:
            self._ca_acked_bytes -= self.cwnd
            self.cwnd += self.mss

    def _decrease(self, now: float, bytes_in_flight: int, *, rto: bool) -> int:
        # RFC 5681 3.1 eq. (4): ssthresh = max(FlightSize / 2, 2*SMSS)
        return max(bytes_in_flight // 2, MIN_SSTHRESH_SEGMENTS * self.mss)


# RFC 9438 section 4 constants
CUBIC_C = 0.4  # segments / s^3
CUBIC_BETA = 0.7  # multiplicative decrease factor
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # Reno-friendly additive increase


class Cubic(CongestionController):
    """RFC 9438 CUBIC: window growth is a cubic function of time since the last reduction.

    Window quantities inside the cubic formulas are in segments (floats), as in the RFC; the
    public cwnd stays in bytes, with the fraction below one byte carried in `_cwnd_frac`.
    """

    name = "cubic"
    __slots__ = (
        "_after_rto",
        "_cwnd_frac",
        "_cwnd_prior",
        "_k_s",
        "_rtt_s",
        "_t_epoch",
        "_w_est",
        "_w_max",
        "fast_convergence",
    )

    def __init__(
        self,
        mss: int,
        *,
        initial_window_segments: int = DEFAULT_INITIAL_WINDOW_SEGMENTS,
        fast_convergence: bool = True,
    ) -> None:
        super().__init__(mss, initial_window_segments=initial_window_segments)
        self.fast_convergence = fast_convergence
        self._w_max = 0.0  # segments: cwnd just before the last reduction (RFC 9438 4.1)
        self._cwnd_prior = 0.0  # segments: cwnd when ssthresh was last set (4.3 alpha switch)
        self._t_epoch: float | None = None  # start of the current congestion avoidance stage
        self._k_s = 0.0  # seconds to climb back to W_max (4.2 eq. 2)
        self._w_est = 0.0  # segments: Reno-friendly estimate (4.3)
        self._cwnd_frac = 0.0  # bytes below 1 carried between ACKs
        self._rtt_s = 0.0  # latest RTT seen, for the W_cubic(t + RTT) target
        self._after_rto = False  # first CA stage after a timeout: K = 0 (4.8)

    def w_cubic(self, t_s: float) -> float:
        """RFC 9438 4.2 eq. (1): W_cubic(t) = C*(t - K)^3 + W_max, in segments."""
        d = t_s - self._k_s
        return CUBIC_C * d * d * d + self._w_max

    def _start_epoch(self, now: float, cwnd_seg: float) -> None:
        self._t_epoch = now
        self._w_est = cwnd_seg  # 4.3: W_est = cwnd_epoch
        if self._after_rto or self._w_max <= cwnd_seg:
            # 4.8 after a timeout (or with no larger W_max to return to): W_max = cwnd_epoch,
            # K = 0, so growth is convex from the start.
            self._w_max = cwnd_seg
            self._k_s = 0.0
            self._after_rto = False
        else:
            # 4.2 eq. (2): K = cubic_root((W_max - cwnd_epoch) / C)
            self._k_s = ((self._w_max - cwnd_seg) / CUBIC_C) ** (1 / 3)

    def _congestion_avoidance(self, acked_bytes: int, now: float, rtt_s: float | None) -> None:
        mss = self.mss
        if rtt_s is not None and rtt_s > 0:
            self._rtt_s = rtt_s
        cwnd_seg = (self.cwnd + self._cwnd_frac) / mss
        if self._t_epoch is None:
            self._start_epoch(now, cwnd_seg)
        t = now - self._t_epoch
        acked_seg = acked_bytes / mss

        # 4.3 Reno-friendly region: W_est grows like Reno with alpha_cubic per cwnd acked,
        # and like standard Reno (alpha 1) once it passes the window before the reduction.
        alpha = 1.0 if self._w_est >= self._cwnd_prior else CUBIC_ALPHA
        self._w_est += alpha * acked_seg / cwnd_seg
        if self.w_cubic(t) < self._w_est:
            new_seg = self._w_est
        else:
            # 4.2: aim for W_cubic one RTT ahead, bounded to [cwnd, 1.5*cwnd].
            target = self.w_cubic(t + self._rtt_s)
            if target < cwnd_seg:
                target = cwnd_seg
            elif target > 1.5 * cwnd_seg:
                target = 1.5 * cwnd_seg
            new_seg = cwnd_seg + (target - cwnd_seg) * acked_seg / cwnd_seg
        new_seg = max(new_seg, cwnd_seg)  # congestion avoidance never shrinks cwnd
        total = new_seg * mss
        self.cwnd = int(total)
        self._cwnd_frac = total - self.cwnd

    def _decrease(self, now: float, bytes_in_flight: int, *, rto: bool) -> int:
        cwnd_seg = (self.cwnd + self._cwnd_frac) / self.mss
        self._cwnd_prior = cwnd_seg
        if rto:
            self._after_rto = True  # 4.8: W_max and K are set when CA begins
        elif self.fast_convergence and cwnd_seg < self._w_max:
            # 4.7 fast convergence: a flow losing at a lower W_max releases bandwidth.
            self._w_max = cwnd_seg * (1 + CUBIC_BETA) / 2
        else:
            self._w_max = cwnd_seg
        self._t_epoch = None
        self._cwnd_frac = 0.0
        # 4.6: ssthresh = flight_size * beta_cubic (floored at 2 SMSS, as Reno)
        return max(int(bytes_in_flight * CUBIC_BETA), MIN_SSTHRESH_SEGMENTS * self.mss)

    def on_recovery_exit(self, now: float) -> None:
        if self.in_recovery:
            self._t_epoch = None  # 4.2: t counts from the start of congestion avoidance
            self._cwnd_frac = 0.0
        super().on_recovery_exit(now)

    def _save(self) -> tuple:
        return (self.cwnd, self.ssthresh, self._w_max, self._cwnd_prior, self._after_rto)

    def _restore(self, saved: tuple) -> None:
        self.cwnd, self.ssthresh, self._w_max, self._cwnd_prior, self._after_rto = saved
        self._t_epoch = None
        self._cwnd_frac = 0.0


CONTROLLERS: dict[str, type[CongestionController]] = {
    Reno.name: Reno,
    Cubic.name: Cubic,
}


def register(cls: type[CongestionController]) -> type[CongestionController]:
    """Class decorator: make `cls` available to make_controller under `cls.name`."""
    CONTROLLERS[cls.name.lower()] = cls
    return cls


def make_controller(name: str, mss: int, *, rng=None, **kw) -> CongestionController:
    """Build the controller registered under `name` (case-insensitive). rng (a random.Random)
    goes to a controller that makes random choices (its class sets uses_rng)."""
    cls = CONTROLLERS.get(name.lower())
    if cls is None:
        known = ", ".join(sorted(CONTROLLERS))
        raise ValueError(f"unknown congestion controller {name!r}; choose one of: {known}")
    if getattr(cls, "uses_rng", False):
        kw["rng"] = rng
    return cls(mss, **kw)


# Controllers in their own modules register themselves on import (after everything above
# exists, so they can import from this module without a cycle).
from rtcp.core import bbr as _bbr  # noqa: F401
