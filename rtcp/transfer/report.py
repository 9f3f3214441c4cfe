"""Reports while a transfer runs, iperf3's habits: `rtcp send --interval` lines (and their
list in `--json`), `rtcp send --rate` (the sender's own cap) and `rtcp recv --json` (one JSON
object per finished transfer, JSON Lines).

The interval figures come from the connections' own counters (ConnectionStats via
refresh_stats), sampled by the sender's driver loop on its clock (send_tree's on_progress
hook): no thread. Bytes are file bytes sent and acknowledged by the receiver, so the
intervals add up to what this run carried once it is verified (a resumed file's prefix was
not sent); retransmissions are the segments resent during the interval; cwnd and SRTT are
their values at the interval's end. A tree is one transfer: one line per interval for all its
files, over all its connections (--parallel: retransmissions and cwnd summed, SRTT their
mean; tree.TreeApps.connection_sample). Times count from the first SYN, as the summary's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from rtcp.errors import UsageError
from rtcp.units import format_bytes, format_rate, parse_duration, parse_rate, with_flag

# The shortest --interval: the driver loop samples at least this often while it runs
MIN_INTERVAL_S = 0.1
# How often send_tree calls the progress hook with --interval: the interval ends land within
# this of the nominal second, as iperf3's
SAMPLE_INTERVAL_S = 0.01
# The slowest --rate: a segment at least every few seconds (the receiver's --min-rate, 1 kbps
# by default, cuts off slower senders anyway)
MIN_RATE_BYTES_PER_S = 125  # 1 kbit/s

HEADER = f"{'interval':>17}  {'transfer':>9}  {'rate':>24}  {'retx':>5}  {'cwnd':>9}  srtt"
SEPARATOR = "- " * 40


def parse_interval(value: str) -> float:
    """--interval: a duration with a unit (1s, 500ms), at least MIN_INTERVAL_S."""
    seconds = with_flag("--interval", parse_duration, value)
    if seconds < MIN_INTERVAL_S:
        raise UsageError(f"--interval: {value!r} is shorter than {MIN_INTERVAL_S * 1000:g}ms")
    return seconds


def parse_rate_cap(value: str) -> int:
    """--rate on send: a rate in the proxy's units (10mbit, 1MBps) -> whole bytes per second."""
    rate = with_flag("--rate", parse_rate, value)
    if rate < MIN_RATE_BYTES_PER_S:
        raise UsageError(f"--rate: {value!r} is below 1kbit")
    return round(rate)


@dataclass
class Interval:
    """One reported interval; to_json() is its --json object."""

    start_s: float
    end_s: float
    bytes: int
    retransmissions: int
    cwnd_bytes: int | None = None
    srtt_ms: float | None = None

    @property
    def bytes_per_s(self) -> float:
        span = self.end_s - self.start_s
        return self.bytes / span if span > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "bytes": self.bytes,
            "bytes_per_s": round(self.bytes_per_s, 3),
            "retransmissions": self.retransmissions,
            "cwnd_bytes": self.cwnd_bytes,
            "srtt_ms": self.srtt_ms,
        }

    def line(self, tail: str = "") -> str:
        """The human line: the same units as the summary (SI bytes, bytes/s and Mbit/s)."""
        rate = self.bytes_per_s
        when = f"{self.start_s:.2f}-{self.end_s:.2f} s"
        rate_text = f"{format_rate(rate)} ({rate * 8 / 1e6:.2f} Mbit/s)"
        cwnd = format_bytes(self.cwnd_bytes) if self.cwnd_bytes is not None else ""
        srtt = f"{self.srtt_ms:.3f} ms" if self.srtt_ms is not None else ""
        text = (
            f"{when:>17}  {format_bytes(self.bytes):>9}  {rate_text:>24}  "
            f"{self.retransmissions:>5}  {cwnd:>9}  {srtt}"
        )
        return f"{text.rstrip()}{tail}"


@dataclass
class IntervalReport:
    """`--interval`: called by the driver loop with (app, now) as the progress hook; closes an
    interval each time `interval_s` has passed since the last one, and with finish() the last
    partial interval and the sum. write (None: --json) prints each line as it is made."""

    interval_s: float
    write: Callable[[str], None] | None = None
    intervals: list[Interval] = field(default_factory=list)
    _start: float | None = None  # the clock at time zero (the app's start)
    _last_at: float = 0.0  # seconds since time zero at the last interval's end
    _last_bytes: int = 0
    _last_retx: int = 0
    _finished: bool = False
    _app: object = None  # the tree.TreeApps the hook was last called with
    _due_s: float = 0.0  # seconds since time zero at which the current interval ends

    def __post_init__(self) -> None:
        self._due_s = self.interval_s

    def __call__(self, app, now: float) -> None:
        if self._start is None:
            self._start = app.started
        self._app = app
        elapsed = now - self._start
        if elapsed >= self._due_s:
            self._close(app, elapsed)
            # the next end on the nominal grid (1 s, 2 s, ...): late samples do not drift it
            while self._due_s <= elapsed:
                self._due_s += self.interval_s

    def finish(self) -> None:
        """After the transfer: the last, partial interval (if any time or byte is left) and
        the sum line."""
        app = self._app
        if self._finished or app is None or self._start is None:
            return
        self._finished = True
        end = app.clock()
        if app.succeeded and app.finished_at is not None:
            end = app.finished_at  # as the summary's time: the last verdict ends the transfer
        end_s = max(end - self._start, self._last_at)
        if end_s > self._last_at or self._acked(app) > self._last_bytes:
            self._close(app, end_s)
        if self.write is not None and self.intervals:
            total = Interval(
                0.0,
                self._last_at,
                sum(i.bytes for i in self.intervals),
                sum(i.retransmissions for i in self.intervals),
            )
            self.write(SEPARATOR)
            self.write(total.line("  sum"))

    @staticmethod
    def _acked(app) -> int:
        return app.file_bytes_acked

    def _close(self, app, end_s: float) -> None:
        retx, cwnd, srtt = app.connection_sample()
        acked = self._acked(app)
        interval = Interval(
            start_s=self._last_at,
            end_s=end_s,
            bytes=max(0, acked - self._last_bytes),
            retransmissions=max(0, retx - self._last_retx),
            cwnd_bytes=cwnd,
            srtt_ms=round(srtt * 1000.0, 3) if srtt is not None else None,
        )
        self._last_at, self._last_bytes, self._last_retx = end_s, acked, retx
        if self.write is not None:
            if not self.intervals:
                self.write(HEADER)
            self.write(interval.line())
        self.intervals.append(interval)

    def to_json(self) -> list[dict]:
        return [i.to_json() for i in self.intervals]


def line_writer(progress) -> Callable[[str], None]:
    """Interval lines go to stdout (iperf3's place, with the summary); while a progress bar
    is drawn (stderr), through tqdm.write, so that the bar stays below them."""

    def write(line: str) -> None:
        bar = getattr(progress, "bar", None)
        try:
            if bar is not None:
                bar.write(line, file=sys.stdout)
                sys.stdout.flush()
            else:
                print(line, flush=True)
        except OSError:  # stdout closed (a pipe reader went away): the transfer goes on
            pass

    return write


def chain(*hooks) -> Callable | None:
    """One progress hook that calls each of hooks (the bar, the interval report) in turn."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def hook(app, now: float) -> None:
        for h in present:
            h(app, now)

    return hook


# --- rtcp recv --json ------------------------------------------------------------------


def print_json_line(obj: dict) -> None:
    """One JSON object on one stdout line, flushed at once (JSON Lines: `jq -c`, `tail -f`)."""
    try:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except OSError:  # stdout closed: the receiver keeps serving
        pass


def connection_stats(handle) -> dict:
    """The receiving connection's counters as --json shows them (the sender's `stats`), and
    whether its datagrams were protected (a key or a code)."""
    from rtcp.transfer.sender import stats_dict

    conn = getattr(handle, "conn", None)
    if conn is None:
        return {}
    stats = stats_dict(conn.refresh_stats() if hasattr(conn, "refresh_stats") else conn.stats)
    stats["encrypted"] = getattr(handle, "protection", None) is not None
    return stats


def listening_json(address: str, code: str | None) -> dict:
    """`rtcp recv --json`'s first line: where it listens (and the one-time code)."""
    obj: dict = {"event": "listening", "address": address}
    if code is not None:
        obj["code"] = code
    return obj


def receive_json(result) -> dict:
    """`rtcp recv --json`: one finished transfer (a ReceiveResult) with the sender's --json
    field names where they mean the same from this side."""
    stats = result.stats or {}
    srtt = stats.get("srtt_s")
    size = result.size if result.size is not None else result.bytes_received
    goodput = size / result.seconds if result.verified and result.seconds > 0 else (
        result.bytes_received / result.seconds if result.seconds > 0 else 0.0
    )
    return {
        "event": "transfer",
        "file": result.path,
        "name": result.name,
        "peer": result.peer,
        "bytes": size,
        "bytes_received": result.bytes_received,
        "sha256": result.sha256,
        "verified": result.verified,
        "seconds": result.seconds,
        "goodput_bytes_per_s": goodput,
        "segments_received": stats.get("segments_received", 0),
        "rtt_ms": round(srtt * 1000.0, 3) if srtt is not None else None,
        "exit_code": int(result.exit_code),
        "error": None if result.verified else result.reason,
        "status": result.reason,
        "stats": stats,
        **(
            {"entries": result.entries, "failed": result.failed, "cut": result.cut}
            if result.entries is not None else {}
        ),
    }
