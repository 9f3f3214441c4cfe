"""Impairment decisions for one direction of a link, netem-style, with no sockets and no clock.

`Impairer.process(data, now)` says what becomes of one datagram: dropped (`[]`), forwarded at
some release time (`[(t, data)]`), or duplicated (two pairs). The caller owns the clock and the
sockets, so the same code drives the real proxy (`rtcp.proxy.loop`) and the deterministic
simulator (tests/sim) with a virtual clock. Every random choice comes from the `random.Random`
passed in, in a fixed order, so a seed reproduces every decision for the same datagrams.

The pipeline for one datagram, in order:
  1. MTU: longer than `mtu_bytes` -> dropped ("mtu").
  2. Loss: independent, correlated (a two-state Markov chain that keeps the mean at `loss`), or
     Gilbert-Elliott (`gemodel`) -> dropped ("loss").
  3. Duplicate: a second, intact copy follows the original through the rest of the pipeline.
  4. Corrupt: one random bit of the original copy is flipped (as netem does).
  5. Rate: a bottleneck link; each copy waits in a tail-drop FIFO (`queue_limit_*`) and then
     takes size/rate to serialize; the release is when its last byte is out ("queue" drops).
  6. Delay: `delay_s` plus jitter drawn from `distribution`, never below zero. Datagrams are
     released in arrival order (jitter never reorders), except those picked by `reorder`:
     netem-style they skip the delay (sent at once, overtaking the delayed ones), or with
     `reorder_delay_s` they are held back that much longer (the later ones overtake them).

The settings may change between two datagrams (`reconfigure`, the proxy's control API and
scenarios): the generator, the loss chain, the reorder counter and the rate queue's backlog carry
over, so the same seed and the same timeline of changes give the same decisions. A link that is
down (`link_down`, a partition) drops every datagram before step 1 ("down"); a link that is
`paused` decides nothing: the socket loop holds its datagrams and feeds them in when it resumes.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
DEFAULT_QUEUE_LIMIT_PACKETS = 1000  # netem's default `limit`
QUEUE_HARD_LIMIT_PACKETS = 100_000  # with a byte limit only: empty datagrams must not pile up
DIRECTIONS = ("up", "down")

# Pareto with shape 3 (netem's table), standardized to mean 0 and standard deviation 1.
_PARETO_SHAPE = 3.0
_PARETO_SCALE = 2.0 / math.sqrt(3.0)  # x_m with std = x_m * sqrt(3) / 2 = 1
_PARETO_MEAN = _PARETO_SCALE * _PARETO_SHAPE / (_PARETO_SHAPE - 1.0)
_PARETO_MIN_TAIL_PROBABILITY = 1.0 / 65536  # netem's table resolution bounds the tail (~40 sd)
_NORMAL = NormalDist()


@dataclass(frozen=True)
class ImpairConfig:
    """Every knob for one direction. Probabilities are fractions in [0, 1]; zero means off."""

    loss: float = 0.0
    loss_correlation: float = 0.0  # correlation between consecutive loss decisions
    # netem gemodel (p, r, 1-h, 1-k): p = good->bad, r = bad->good, 1-h = loss in bad state,
    # 1-k = loss in good state. 1 to 4 values; missing ones default as in netem (r = 1-p,
    # 1-h = 1, 1-k = 0). Replaces `loss` when set.
    gemodel: tuple[float, ...] | None = None
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_gap: int = 1  # netem gap: after a reorder, gap-1 datagrams are always delayed
    reorder_delay_s: float = 0.0  # > 0: reordered datagrams are held back this much extra
    delay_s: float = 0.0
    jitter_s: float = 0.0
    distribution: str = "uniform"
    rate_bytes_per_s: float = 0.0  # 0 = unlimited (no queue, no serialization time)
    queue_limit_packets: int | None = DEFAULT_QUEUE_LIMIT_PACKETS
    queue_limit_bytes: int | None = None
    mtu_bytes: int | None = None  # largest UDP payload forwarded

    def __post_init__(self) -> None:
        for name in ("loss", "loss_correlation", "duplicate", "corrupt", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
        if self.gemodel is not None:
            values = tuple(float(v) for v in self.gemodel)
            if not 1 <= len(values) <= 4:
                raise ValueError(f"gemodel takes 1 to 4 values (p, r, 1-h, 1-k), got {values}")
            if not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"gemodel values must be fractions in [0, 1], got {values}")
            defaults = (0.0, 1.0 - values[0], 1.0, 0.0)
            object.__setattr__(self, "gemodel", values + defaults[len(values) :])
        for name in ("delay_s", "jitter_s", "reorder_delay_s", "rate_bytes_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        if self.reorder_gap < 1:
            raise ValueError(f"reorder_gap must be >= 1, got {self.reorder_gap}")
        if self.reorder > 0 and self.delay_s <= 0 and self.reorder_delay_s <= 0:
            raise ValueError("reorder needs delay_s > 0 (or reorder_delay_s > 0) to reorder")
        for name in ("queue_limit_packets", "queue_limit_bytes", "mtu_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value!r}")
        if (
            self.rate_bytes_per_s
            and self.queue_limit_packets is None
            and not self.queue_limit_bytes
        ):
            raise ValueError("a rate needs a bounded queue: set queue_limit_packets or _bytes")

    @property
    def is_passthrough(self) -> bool:
        """True when nothing is impaired: every datagram leaves unchanged, at once."""
        return (
            self.loss == 0.0
            and self.gemodel is None
            and self.duplicate == 0.0
            and self.corrupt == 0.0
            and self.reorder == 0.0
            and self.delay_s == 0.0
            and self.jitter_s == 0.0
            and self.rate_bytes_per_s == 0.0
            and self.mtu_bytes is None
        )


@dataclass
class DirectionStats:
    """Counters for one direction. `datagrams_out` counts what actually left (or, sans-IO, what
    `process` returned); a caller that fails to send moves it to a failure count via `unsend`."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_mtu: int = 0
    dropped_overflow: int = 0  # the socket loop's hold limit (delay line full)
    dropped_down: int = 0  # the link was down (a partition: the control API or a scenario)
    dropped_reset: int = 0  # held for a client mapping that a reset forgot (a NAT reboot)
    held: int = 0  # held by a pause, fed to the pipeline when the link came back up
    unsent_at_exit: int = 0  # still held for release when the proxy stopped
    send_errors: int = 0  # OSError on send: counted, never fatal
    refused: int = 0  # ICMP port unreachable reported by the next receive
    reordered: int = 0
    duplicated: int = 0
    corrupted: int = 0
    queue_peak_packets: int = 0
    queue_peak_bytes: int = 0
    # Integer nanoseconds: `release - now` of two large float clock readings carries a rounding
    # error (0.000999999999976 for 1 ms at a clock of 1000 s); rounded to the nanosecond it is
    # the delay that was decided, and a comparison with the configured delay means what it says.
    added_delay_sum_ns: int = 0
    added_delay_max_ns: int = 0

    @property
    def emitted(self) -> int:
        """Datagrams the impairer released, whatever happened to them afterwards."""
        return (
            self.datagrams_out
            + self.dropped_overflow
            + self.dropped_reset
            + self.unsent_at_exit
            + self.send_errors
        )

    def unsend(self, size: int, cause: str) -> None:
        """Move one released datagram from "out" to a failure count ("send_errors",
        "dropped_overflow", "dropped_reset" or "unsent_at_exit")."""
        self.datagrams_out -= 1
        self.bytes_out -= size
        setattr(self, cause, getattr(self, cause) + 1)

    def to_dict(self) -> dict[str, object]:
        emitted = self.emitted
        return {
            "datagrams_in": self.datagrams_in,
            "bytes_in": self.bytes_in,
            "datagrams_out": self.datagrams_out,
            "bytes_out": self.bytes_out,
            "dropped": {
                "loss": self.dropped_loss,
                "queue": self.dropped_queue,
                "mtu": self.dropped_mtu,
                "overflow": self.dropped_overflow,
                "down": self.dropped_down,
                "reset": self.dropped_reset,
            },
            "held": self.held,
            "reordered": self.reordered,
            "duplicated": self.duplicated,
            "corrupted": self.corrupted,
            "send_errors": self.send_errors,
            "refused": self.refused,
            "unsent_at_exit": self.unsent_at_exit,
            "queue_peak_packets": self.queue_peak_packets,
            "queue_peak_bytes": self.queue_peak_bytes,
            "added_delay_mean_s": self.added_delay_sum_ns / emitted / 1e9 if emitted else 0.0,
            "added_delay_max_s": self.added_delay_max_ns / 1e9,
        }


def make_rng(seed: int, direction: str) -> random.Random:
    """One generator per direction, so up and down decisions never shift each other."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return random.Random(f"rtcp-proxy:{seed}:{direction}")


def flip_bit(data: bytes, rng: random.Random) -> bytes:
    """A copy of `data` with one random bit flipped (netem's corruption)."""
    bit = rng.randrange(len(data) * 8)
    corrupted = bytearray(data)
    corrupted[bit >> 3] ^= 1 << (bit & 7)
    return bytes(corrupted)


class Impairer:
    """Decides the fate of each datagram of one direction; see the module docstring."""

    def __init__(self, config: ImpairConfig, rng: random.Random):
        self.config = config
        self.rng = rng
        self.stats = DirectionStats()
        self.passthrough = config.is_passthrough
        self.link_down = False  # a partition: every datagram is dropped ("down")
        self.paused = False  # a pause: the socket loop holds the datagrams (never process())
        self._lost_last = False  # correlated-loss chain state
        self._ge_bad = False  # Gilbert-Elliott state: start in the good state, as netem
        self._reorder_counter = 0  # netem's counter: datagrams since the last reordered one
        self._last_release = -math.inf  # keeps non-reordered datagrams in order
        self._link_free_at = -math.inf  # when the bottleneck finishes its current backlog
        self._queue: deque[tuple[float, int]] = deque()  # (departure, size) in the rate queue
        self._queue_bytes = 0
        self._offset = _OFFSET_SAMPLERS[config.distribution]

    def reconfigure(self, config: ImpairConfig) -> None:
        """New settings from the next datagram on. Nothing already decided changes: datagrams
        held for release keep their times, the rate queue keeps its backlog (the new rate
        serves what arrives from now on), and no later datagram is released before an earlier
        one that is still held (a shorter delay never reorders). The generator continues."""
        self.config = config
        self._offset = _OFFSET_SAMPLERS[config.distribution]
        self._update_passthrough()

    def set_link_down(self, down: bool) -> None:
        """A partition (True) drops every datagram from now on; False restores the link."""
        self.link_down = down
        self._update_passthrough()

    def set_paused(self, paused: bool) -> None:
        """A pause (True): the caller holds the datagrams instead of calling process()."""
        self.paused = paused
        self._update_passthrough()

    def _update_passthrough(self) -> None:
        self.passthrough = self.config.is_passthrough and not self.link_down and not self.paused

    def process(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """The (release_time, datagram) pairs to emit for `data` arriving at `now`."""
        stats = self.stats
        size = len(data)
        if self.passthrough:
            stats.datagrams_in += 1
            stats.bytes_in += size
            stats.datagrams_out += 1
            stats.bytes_out += size
            return [(now, data)]
        stats.datagrams_in += 1
        stats.bytes_in += size
        if self.link_down:
            stats.dropped_down += 1
            return []
        config = self.config
        rng = self.rng
        if config.mtu_bytes is not None and size > config.mtu_bytes:
            stats.dropped_mtu += 1
            return []
        if self._lose():
            stats.dropped_loss += 1
            return []
        copies = [data]
        if config.duplicate and rng.random() < config.duplicate:
            copies.append(data)
            stats.duplicated += 1
        if config.corrupt and size and rng.random() < config.corrupt:
            copies[0] = flip_bit(data, rng)
            stats.corrupted += 1
        released: list[tuple[float, bytes]] = []
        for copy in copies:
            departure = now
            if config.rate_bytes_per_s:
                departure = self._enqueue(size, now)
                if departure is None:
                    stats.dropped_queue += 1
                    continue
            release = self._release_time(departure)
            released.append((release, copy))
            stats.datagrams_out += 1
            stats.bytes_out += size
            added_ns = round((release - now) * 1e9)
            stats.added_delay_sum_ns += added_ns
            stats.added_delay_max_ns = max(stats.added_delay_max_ns, added_ns)
        return released

    def _lose(self) -> bool:
        config = self.config
        if config.gemodel is not None:
            p, r, loss_bad, loss_good = config.gemodel
            # netem order: the datagram meets the current state, then the state may change.
            lost = self.rng.random() < (loss_bad if self._ge_bad else loss_good)
            if self._ge_bad:
                if self.rng.random() < r:
                    self._ge_bad = False
            elif self.rng.random() < p:
                self._ge_bad = True
            return lost
        p = config.loss
        if not p:
            return False
        c = config.loss_correlation
        if c:
            # Markov chain with stationary loss rate p and lag-1 correlation c (unlike netem's
            # correlated generator, which drifts the mean away from p).
            p = p + c * (1.0 - p) if self._lost_last else p * (1.0 - c)
        lost = self.rng.random() < p
        self._lost_last = lost
        return lost

    def _enqueue(self, size: int, now: float) -> float | None:
        """Tail-drop FIFO in front of the bottleneck: the departure time, or None if full."""
        config = self.config
        queue = self._queue
        while queue and queue[0][0] <= now:
            self._queue_bytes -= queue.popleft()[1]
        limit_packets = config.queue_limit_packets or QUEUE_HARD_LIMIT_PACKETS
        if len(queue) >= limit_packets:
            return None
        limit_bytes = config.queue_limit_bytes
        if limit_bytes is not None and self._queue_bytes + size > limit_bytes:
            return None
        start = max(self._link_free_at, now)
        departure = start + size / config.rate_bytes_per_s
        self._link_free_at = departure
        queue.append((departure, size))
        self._queue_bytes += size
        stats = self.stats
        stats.queue_peak_packets = max(stats.queue_peak_packets, len(queue))
        stats.queue_peak_bytes = max(stats.queue_peak_bytes, self._queue_bytes)
        return departure

    def _release_time(self, departure: float) -> float:
        config = self.config
        if config.reorder and self._pick_for_reorder():
            self.stats.reordered += 1
            if config.reorder_delay_s:
                return departure + self._sample_delay() + config.reorder_delay_s
            return departure  # netem: sent at once, ahead of the delayed ones
        release = departure + self._sample_delay()
        release = max(
            release, self._last_release
        )  # never before the previous one: jitter keeps order
        self._last_release = release
        return release

    def _pick_for_reorder(self) -> bool:
        if self._reorder_counter < self.config.reorder_gap - 1:
            self._reorder_counter += 1
            return False
        if self.rng.random() < self.config.reorder:
            self._reorder_counter = 0
            return True
        self._reorder_counter += 1
        return False

    def _sample_delay(self) -> float:
        config = self.config
        if not config.jitter_s:
            return config.delay_s
        delay = config.delay_s + config.jitter_s * self._offset(self.rng)
        return max(0.0, delay)


def _uniform_offset(rng: random.Random) -> float:
    return rng.uniform(-1.0, 1.0)  # netem without a table: delay +- jitter


def _normal_offset(rng: random.Random) -> float:
    return rng.gauss(0.0, 1.0)


def _pareto_quantile(u: float) -> float:
    """Standardized Pareto (shape 3, mean 0, sd 1) at quantile u: a long tail of late ones."""
    tail = max(1.0 - u, _PARETO_MIN_TAIL_PROBABILITY)
    return _PARETO_SCALE / tail ** (1.0 / _PARETO_SHAPE) - _PARETO_MEAN


def _pareto_offset(rng: random.Random) -> float:
    return _pareto_quantile(rng.random())


def _paretonormal_offset(rng: random.Random) -> float:
    # netem's paretonormal table: 1/4 normal + 3/4 pareto, combined quantile by quantile.
    u = min(max(rng.random(), _PARETO_MIN_TAIL_PROBABILITY), 1.0 - _PARETO_MIN_TAIL_PROBABILITY)
    return 0.25 * _NORMAL.inv_cdf(u) + 0.75 * _pareto_quantile(u)


_OFFSET_SAMPLERS = {
    "uniform": _uniform_offset,
    "normal": _normal_offset,
    "pareto": _pareto_offset,
    "paretonormal": _paretonormal_offset,
}
