"""The RFC 6298 retransmission-timeout estimator: SRTT, RTTVAR, RTO and exponential backoff.

Samples must follow Karn's rule (RFC 6298 section 3): the connection never feeds a sample
taken from a retransmitted segment unless timestamps disambiguate it. The estimator does not
reset the backoff on a sample; the connection calls `reset_backoff` when new data is
acknowledged (RFC 6298 section 5.7 and the note after it).
"""

from __future__ import annotations

import math

__all__ = ["RttEstimator"]

ALPHA = 1 / 8  # RFC 6298 section 2.3: SRTT gain
BETA = 1 / 4  # RFC 6298 section 2.3: RTTVAR gain
K = 4  # RFC 6298 section 2.2: variance multiplier
MAX_BACKOFF_SHIFT = 62  # beyond this any RTO is at the cap; avoids huge integers
SYN_TIMEOUT_RTO_S = 3.0  # RFC 6298 5.7: the RTO for data after a SYN timeout without a sample


class RttEstimator:
    """Smoothed RTT and the current RTO, all in seconds."""

    __slots__ = (
        "backoff_count",
        "clock_granularity_s",
        "initial_rto_s",
        "latest_rtt_s",
        "max_backoff_rto_s",
        "max_rto_s",
        "min_rto_s",
        "min_rtt_s",
        "rto_s",
        "rttvar_s",
        "srtt_s",
    )

    def __init__(
        self,
        *,
        initial_rto_s: float = 1.0,
        min_rto_s: float = 0.2,
        max_rto_s: float = 60.0,
        max_backoff_rto_s: float | None = None,
        clock_granularity_s: float = 0.001,
    ) -> None:
        if not 0 < min_rto_s <= max_rto_s:
            raise ValueError("need 0 < min_rto_s <= max_rto_s")
        # RFC 6298 section 2.1: RTO = 1 s before any sample (tunable here).
        self.initial_rto_s = initial_rto_s
        # RFC 6298 2.4 asks for a 1 s floor; like Linux we default lower (0.2 s), tunable.
        self.min_rto_s = min_rto_s
        self.max_rto_s = max_rto_s  # RFC 6298 2.5: an upper bound of at least 60 s
        # How far backoff may raise the RTO (None: to max_rto_s, as RFC 6298 5.5): never above
        # this, or above the RTO before backoff when that is larger (see the config).
        self.max_backoff_rto_s = max_backoff_rto_s
        self.clock_granularity_s = clock_granularity_s  # G in RFC 6298 section 2
        self.srtt_s: float | None = None
        self.rttvar_s: float | None = None
        self.latest_rtt_s: float | None = None
        self.min_rtt_s: float | None = None
        self.backoff_count = 0
        self.rto_s = 0.0
        self._update_rto()

    def _base_rto_s(self) -> float:
        """RTO before backoff, clamped to [min_rto_s, max_rto_s]."""
        if self.srtt_s is None:
            rto = self.initial_rto_s
        else:
            # RFC 6298 section 2.2/2.3: RTO = SRTT + max(G, K*RTTVAR)
            rto = self.srtt_s + max(self.clock_granularity_s, K * self.rttvar_s)
        if rto < self.min_rto_s:  # RFC 6298 section 2.4
            return self.min_rto_s
        if rto > self.max_rto_s:  # RFC 6298 section 2.5
            return self.max_rto_s
        return rto

    def _update_rto(self) -> None:
        rto = self._base_rto_s()
        if self.backoff_count:
            # RFC 6298 section 5.5: back off the timer, bounded by the maximum (2.5).
            limit = self.max_rto_s
            if self.max_backoff_rto_s is not None:
                limit = min(limit, max(rto, self.max_backoff_rto_s))
            rto = min(rto * (1 << min(self.backoff_count, MAX_BACKOFF_SHIFT)), limit)
        self.rto_s = rto

    def on_sample(self, rtt_s: float) -> None:
        """Fold in one RTT measurement (seconds). Negative or non-finite samples are ignored."""
        if not (rtt_s >= 0.0 and math.isfinite(rtt_s)):
            return
        self.latest_rtt_s = rtt_s
        if self.min_rtt_s is None or rtt_s < self.min_rtt_s:
            self.min_rtt_s = rtt_s
        if self.srtt_s is None:
            # RFC 6298 section 2.2: first measurement R
            self.srtt_s = rtt_s
            self.rttvar_s = rtt_s / 2
        else:
            # RFC 6298 section 2.3: RTTVAR uses the SRTT from before this update
            self.rttvar_s = (1 - BETA) * self.rttvar_s + BETA * abs(self.srtt_s - rtt_s)
            self.srtt_s = (1 - ALPHA) * self.srtt_s + ALPHA * rtt_s
        self._update_rto()

    def backoff(self) -> None:
        """The retransmission timer expired: double the RTO (RFC 6298 section 5.5)."""
        self.backoff_count += 1
        self._update_rto()

    def after_handshake_timeout(self) -> None:
        """The handshake lost a SYN or SYN-ACK and gave no RTT sample: data starts with an
        RTO of at least SYN_TIMEOUT_RTO_S, not initial_rto_s (RFC 6298 5.7)."""
        if self.srtt_s is None and self.initial_rto_s < SYN_TIMEOUT_RTO_S:
            self.initial_rto_s = SYN_TIMEOUT_RTO_S
            self._update_rto()

    def reset_backoff(self) -> None:
        """New data was acknowledged: drop the backoff (RFC 6298 section 5.7, Karn)."""
        if self.backoff_count:
            self.backoff_count = 0
            self._update_rto()
