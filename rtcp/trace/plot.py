"""The time-sequence graph (Stevens / tcptrace style, as Wireshark's Stream Graphs draw it).

Top: every data segment sent as a vertical tick from its first to its last byte (relative
sequence numbers), retransmissions in red; the cumulative ACK as a step line; the receive-window
edge (ACK + advertised window) above it; SACKed ranges as short green bars. Below: cwnd and the
bytes in flight as the sender counted them (the `in_flight` of its congestion events, RFC 6675
"pipe": what cwnd limits, traced after ACKs, so drawn as points), then SRTT, on the same time axis. Vertical lines mark what explains the curves: recovery
entered, a retransmission timeout, a path MTU raise.

Time 0 is the connection's first segment (as in `rtcp explain`), the axis ends with its last;
sequence numbers and windows in kB, times in ms. The title names the scenario: the data size,
the congestion controller, and the impairments when the proxy's trace is given too.

matplotlib is an optional extra (`pip install 'rtcp[plot]'`), imported only here and only when
a plot is drawn; without it the command fails with one line saying how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rtcp.errors import UsageError
from rtcp.trace.ladder import conn_hex, default_connection
from rtcp.trace.writer import normalize_flags, unwrap_near

INSTALL_HINT = "plotting needs matplotlib: pip install 'rtcp[plot]'"
SEQ_AXIS_LABEL = "relative sequence number (kB)"
TIME_AXIS_LABEL = "time since the first segment (ms)"
CWND_AXIS_LABEL = "kB"
RTT_AXIS_LABEL = "SRTT (ms)"
BYTES_PER_KB = 1000
MS_PER_S = 1000.0
DEFAULT_FORMAT = "png"  # -o without a suffix
_BBR_PHASES = {"startup", "drain", "probe_bw", "probe_rtt"}
MAX_WSCALE = 14
WINDOW_CLIP_FACTOR = 1.5  # the window edge may reach this far above the data, else clip


def require_matplotlib() -> Any:
    """Import matplotlib (headless backend) or raise UsageError with the install hint."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    matplotlib.use("Agg", force=False)
    return matplotlib


@dataclass
class Series:
    """What the graph shows, extracted from one connection's records (times in seconds)."""

    role: str = ""
    conn: Any = None
    view: str = "sender"  # sender: the data this end sent; receiver: the data it received
    sent_t: list[float] = field(default_factory=list)
    sent_lo: list[int] = field(default_factory=list)
    sent_hi: list[int] = field(default_factory=list)
    rtx_t: list[float] = field(default_factory=list)
    rtx_lo: list[int] = field(default_factory=list)
    rtx_hi: list[int] = field(default_factory=list)
    ack_t: list[float] = field(default_factory=list)
    ack: list[int] = field(default_factory=list)
    wnd_t: list[float] = field(default_factory=list)
    wnd_edge: list[int] = field(default_factory=list)
    sack_t: list[float] = field(default_factory=list)
    sack_lo: list[int] = field(default_factory=list)
    sack_hi: list[int] = field(default_factory=list)
    cwnd_t: list[float] = field(default_factory=list)
    cwnd: list[int] = field(default_factory=list)
    flight_t: list[float] = field(default_factory=list)
    flight: list[int] = field(default_factory=list)
    srtt_t: list[float] = field(default_factory=list)
    srtt_ms: list[float] = field(default_factory=list)
    recovery_t: list[float] = field(default_factory=list)  # recovery entered
    rto_t: list[float] = field(default_factory=list)  # retransmission timer expired
    pmtu_t: list[float] = field(default_factory=list)  # the segment size raised
    pmtu_bytes: list[int] = field(default_factory=list)
    t0: float = 0.0  # the trace's time of the connection's first segment: the axis's 0
    end_t: float = 0.0  # the connection's last segment (seconds after its first)
    data_bytes: int = 0  # the data sent (or received) in this direction
    controller: str = ""  # the congestion controller, when the trace tells
    impairments: str = ""  # what the proxy did, when its trace is given


def _view_of(records: Sequence[dict], conn: Any) -> str:
    """sender when this end sent at least as much data on `conn` as it received."""
    sent = received = 0
    for r in records:
        if r.get("conn") != conn:
            continue
        if r.get("event") == "segment_sent":
            sent += r.get("len") or 0
        elif r.get("event") == "segment_received":
            received += r.get("len") or 0
    return "sender" if sent >= received else "receiver"


def _window_shift(records: Sequence[dict]) -> int | None:
    """The peer's window scale, from a window_update (bytes) after the raw window field of the
    segment that caused it."""
    last_raw = None
    for r in records:
        ev = r.get("event")
        if ev == "segment_received":
            last_raw = r.get("window")
        elif ev == "window_update" and last_raw:
            value = r.get("window") or 0
            for k in range(MAX_WSCALE + 1):
                if last_raw << k == value:
                    return k
    return None


def extract(records: Sequence[dict], conn: Any = None) -> Series:
    """The series of one connection: `conn`, by default the one `rtcp explain` draws (the
    first that carried segments). Times in seconds since its first segment."""
    if conn is None:
        conn = default_connection(records)
        if conn is None:
            raise UsageError("the trace holds no segments to plot")
    mine = [r for r in records if r.get("conn") == conn]
    if not any(str(r.get("event", "")).startswith("segment_") for r in mine):
        known = list(dict.fromkeys(r["conn"] for r in records if "conn" in r))
        shown = ", ".join(conn_hex(c) for c in known) or "none"
        raise UsageError(f"--conn: no connection {conn_hex(conn)} in the trace (it holds {shown})")
    view = _view_of(records, conn)
    role = next((str(r.get("role")) for r in records if r.get("role")), "")
    s = Series(role=role, conn=conn, view=view)
    s.controller = next(
        (str(r["congestion_control"]) for r in records
         if r.get("event") == "config" and r.get("congestion_control")), ""
    )
    data_ev, ack_ev = (
        ("segment_sent", "segment_received") if view == "sender"
        else ("segment_received", "segment_sent")
    )
    shift = _window_shift(mine) if view == "sender" else None
    segment_times = [float(r.get("t", 0.0)) for r in mine
                     if str(r.get("event", "")).startswith("segment_")]
    t0 = s.t0 = segment_times[0]
    s.end_t = segment_times[-1] - t0
    seq_ref = 0  # running reference for unwrapping relative sequence numbers
    ack_ref = 0
    phases: set[str] = set()
    phase = ""
    mss = 0
    for r in mine:
        ev = r.get("event")
        t = float(r.get("t", 0.0)) - t0
        names = normalize_flags(r.get("flags", "")).split("|")
        if ev == data_ev and (r.get("len") or 0) > 0 and "PROBE" not in names:
            if r.get("rel_seq") is None:
                continue
            lo = unwrap_near(r["rel_seq"], seq_ref)
            hi = lo + r["len"]
            seq_ref = max(seq_ref, lo)
            s.data_bytes = max(s.data_bytes, hi - 1)
            if r.get("retransmit"):
                s.rtx_t.append(t)
                s.rtx_lo.append(lo)
                s.rtx_hi.append(hi)
            else:
                s.sent_t.append(t)
                s.sent_lo.append(lo)
                s.sent_hi.append(hi)
        elif ev == ack_ev and "ACK" in names and r.get("rel_ack") is not None:
            a = unwrap_near(r["rel_ack"], ack_ref)
            ack_ref = max(ack_ref, a)
            if "SYN" in names:
                continue
            s.ack_t.append(t)
            s.ack.append(a)
            if view == "sender":
                if shift is not None and r.get("window") is not None:
                    s.wnd_t.append(t)
                    s.wnd_edge.append(a + (r["window"] << shift))
                for lo32, hi32 in r.get("rel_sack") or []:
                    lo = unwrap_near(lo32, a)
                    s.sack_t.append(t)
                    s.sack_lo.append(lo)
                    s.sack_hi.append(lo + ((hi32 - lo32) & 0xFFFFFFFF))
        elif ev == "congestion" and view == "sender":
            s.cwnd_t.append(t)
            s.cwnd.append(int(r.get("cwnd") or 0))
            if r.get("in_flight") is not None:  # RFC 6675 pipe, as the sender counted it
                s.flight_t.append(t)
                s.flight.append(int(r["in_flight"]))
            new_phase = str(r.get("phase") or "")
            if new_phase == "recovery" and phase != "recovery":
                s.recovery_t.append(t)
            phase = new_phase
            phases.add(new_phase)
        elif ev == "timer_fired" and r.get("timer") == "retransmission":
            s.rto_t.append(t)
        elif ev == "pmtu" and view == "sender":
            new_mss = int(r.get("mss") or 0)
            if mss and new_mss > mss:
                s.pmtu_t.append(t)
                s.pmtu_bytes.append(int(r.get("datagram_bytes") or 0))
            mss = new_mss or mss
        elif ev == "negotiated" and r.get("mss"):
            mss = int(r["mss"])
        elif ev == "rtt_sample" and r.get("srtt") is not None:
            s.srtt_t.append(t)
            s.srtt_ms.append(float(r["srtt"]) * 1000.0)
    if not s.controller and phases & _BBR_PHASES:
        s.controller = "bbr"
    return s


def describe_impairments(records: Sequence[dict]) -> str:
    """The proxy's impairments from its trace's proxy_config records ("" when none)."""
    per_dir: dict[str, str] = {}
    for r in records:
        if r.get("event") != "proxy_config":
            continue
        parts = []
        if r.get("loss"):
            parts.append(f"loss {_percent(r['loss'])}")
        if r.get("gemodel"):
            parts.append("Gilbert-Elliott loss")
        if r.get("delay_s"):
            jitter = f" ± {_ms(r['jitter_s'])}" if r.get("jitter_s") else ""
            parts.append(f"delay {_ms(r['delay_s'])}{jitter}")
        for knob in ("reorder", "duplicate", "corrupt"):
            if r.get(knob):
                parts.append(f"{knob} {_percent(r[knob])}")
        if r.get("rate_bytes_per_s"):
            parts.append(f"rate {r['rate_bytes_per_s'] * 8 / 1e6:g} Mbit/s")
        if r.get("mtu_bytes"):
            parts.append(f"MTU {r['mtu_bytes']} B")
        per_dir[str(r.get("dir"))] = ", ".join(parts)
    up, down = per_dir.get("up", ""), per_dir.get("down", "")
    if up == down:
        return up
    return "; ".join(f"{d}: {v or 'none'}" for d, v in (("up", up), ("down", down)))


def _percent(p: float) -> str:
    return f"{p * 100:g}%"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


def _size(n: int) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def title_of(s: Series) -> str:
    """The scenario: who, which connection, how much data, the controller, the impairments."""
    what = "sent" if s.view == "sender" else "received"
    text = f"{s.role or 'trace'}, connection {conn_hex(s.conn)}: {_size(s.data_bytes)} {what}"
    if s.controller:
        text += ", " + {"bbr": "BBR", "cubic": "CUBIC", "reno": "Reno"}.get(
            s.controller, s.controller
        )
    if s.impairments:
        text += f"\nthrough {s.impairments}"
    return text


def plot_series(s: Series, marks: Sequence[tuple[float, str]] = ()) -> Any:
    """A matplotlib Figure of the series (not saved): times in ms, bytes in kB. `marks`:
    (time on the trace's axis, label) of the network's changes (rtcp.trace.network_changes),
    drawn as dotted lines across the three graphs."""
    require_matplotlib()
    from matplotlib.figure import Figure

    def ms(values: Sequence[float]) -> list[float]:
        return [v * MS_PER_S for v in values]

    def kb(values: Sequence[int]) -> list[float]:
        return [v / BYTES_PER_KB for v in values]

    fig = Figure(figsize=(11, 8.5), layout="constrained")
    gs = fig.add_gridspec(3, 1, height_ratios=(3, 1.2, 1))
    ax_seq = fig.add_subplot(gs[0])
    ax_cwnd = fig.add_subplot(gs[1], sharex=ax_seq)
    ax_rtt = fig.add_subplot(gs[2], sharex=ax_seq)
    what = "sent" if s.view == "sender" else "received"
    ax_seq.set_title(title_of(s))
    if s.sent_t:
        ax_seq.vlines(ms(s.sent_t), kb(s.sent_lo), kb(s.sent_hi), colors="tab:blue",
                      linewidth=1.5, label=f"segments {what}")
        ax_seq.plot(ms(s.sent_t), kb(s.sent_hi), linestyle="none", marker="_", color="tab:blue",
                    markersize=4)
    if s.rtx_t:
        ax_seq.vlines(ms(s.rtx_t), kb(s.rtx_lo), kb(s.rtx_hi), colors="tab:red", linewidth=2.0,
                      label="retransmissions")
        ax_seq.plot(ms(s.rtx_t), kb(s.rtx_hi), linestyle="none", marker="o",
                    markerfacecolor="none", color="tab:red", markersize=6)
    if s.ack_t:
        ax_seq.step(ms(s.ack_t), kb(s.ack), where="post", color="tab:green", linewidth=1.0,
                    label="cumulative ACK")
    top = max(s.sent_hi + s.rtx_hi + s.ack + [1]) / BYTES_PER_KB
    if s.wnd_t:
        clipped = max(s.wnd_edge) / BYTES_PER_KB > WINDOW_CLIP_FACTOR * top
        ax_seq.step(ms(s.wnd_t), kb(s.wnd_edge), where="post", color="tab:olive", linewidth=1.0,
                    linestyle="--",
                    label="receive window edge" + (" (mostly above)" if clipped else ""))
        if clipped:  # a window far larger than the transfer would flatten everything else
            ax_seq.set_ylim(bottom=-0.02 * top, top=WINDOW_CLIP_FACTOR * top)
    if s.sack_t:
        ax_seq.vlines(ms(s.sack_t), kb(s.sack_lo), kb(s.sack_hi), colors="tab:purple",
                      linewidth=3.0, alpha=0.6, label="SACKed")
    ax_seq.set_ylabel(SEQ_AXIS_LABEL)
    ax_seq.grid(True, alpha=0.3)

    if s.cwnd_t:
        ax_cwnd.step(ms(s.cwnd_t), kb(s.cwnd), where="post", color="tab:orange", label="cwnd")
    if s.flight_t:  # sampled where the sender traced it (after ACKs): points, not a line
        ax_cwnd.plot(ms(s.flight_t), kb(s.flight), linestyle="none", marker=".", markersize=4,
                     color="tab:gray", label="bytes in flight after an ACK (pipe)")
    if not s.cwnd_t and not s.flight_t:
        ax_cwnd.text(0.5, 0.5, "cwnd and bytes in flight are the sender's: plot its trace",
                     transform=ax_cwnd.transAxes, ha="center", va="center", color="gray")
    ax_cwnd.set_ylabel(CWND_AXIS_LABEL)
    ax_cwnd.grid(True, alpha=0.3)

    if s.srtt_t:
        ax_rtt.plot(ms(s.srtt_t), s.srtt_ms, color="tab:brown", marker=".", markersize=3,
                    linewidth=0.8, label="SRTT")
    ax_rtt.set_ylabel(RTT_AXIS_LABEL)
    ax_rtt.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_rtt.set_ylim(bottom=0, top=max(s.srtt_ms + [1.0]) * 1.15)
    ax_cwnd.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_rtt.set_xlabel(TIME_AXIS_LABEL)
    ax_rtt.grid(True, alpha=0.3)
    for ax in (ax_seq, ax_cwnd):
        ax.tick_params(labelbottom=False)

    # the events that explain the curves, across all three panels
    events = (
        (s.recovery_t, "tab:red", ":", "recovery entered"),
        (s.rto_t, "black", "--", "retransmission timeout"),
        (s.pmtu_t, "tab:cyan", "-.", "path MTU raised"),
    )
    for times, color, style, label in events:
        for i, t in enumerate(times):
            for ax in (ax_seq, ax_cwnd, ax_rtt):
                ax.axvline(t * MS_PER_S, color=color, linestyle=style, linewidth=1.0,
                           alpha=0.8, label=label if ax is ax_seq and i == 0 else None)
    for t, size in zip(s.pmtu_t, s.pmtu_bytes, strict=True):
        ax_seq.annotate(f"{size} B", (t * MS_PER_S, top), fontsize="x-small", color="tab:cyan",
                        ha="left", va="top")
    merged: dict[float, list[str]] = {}  # changes at the same moment share one line
    for t, label in marks:
        merged.setdefault((t - s.t0) * MS_PER_S, []).append(label)
    for t, labels in merged.items():
        label = "; ".join(labels)
        for ax in (ax_seq, ax_cwnd, ax_rtt):
            ax.axvline(t, color="tab:pink", linestyle=":", linewidth=1.2)
        ax_seq.text(t, 0.98, " " + label, transform=ax_seq.get_xaxis_transform(), rotation=90,
                    va="top", ha="right", fontsize="x-small", color="tab:pink")
    for ax in (ax_seq, ax_cwnd):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
    # the connection's lifetime, from its first segment to its last
    ax_rtt.set_xlim(0.0, max(s.end_t * MS_PER_S, 1.0))
    return fig


def output_path(output: str | os.PathLike[str]) -> tuple[str, str]:
    """(the path written, its format): a name without a suffix gets .png, as matplotlib
    would add it, so that the path reported is the one written."""
    path = os.fspath(output)
    base = os.path.basename(path)
    suffix = os.path.splitext(base)[1].lstrip(".").lower()
    if not suffix:
        return path + "." + DEFAULT_FORMAT, DEFAULT_FORMAT
    return path, suffix


def plot_trace(
    records: Sequence[dict],
    output: str | os.PathLike[str] | None = None,
    *,
    conn: Any = None,
    proxy_records: Sequence[dict] = (),
    marks: Sequence[tuple[float, str]] = (),
) -> Any:
    """Draw the graph of one trace's records (the proxy's records add the impairments to the
    title); save it to output (format from its suffix, png without one) when given. Returns the
    Figure. `marks`: see plot_series."""
    series = extract(records, conn)
    series.impairments = describe_impairments(proxy_records)
    fig = plot_series(series, marks)
    if output is not None:
        path, fmt = output_path(output)
        fig.savefig(path, dpi=110, format=fmt)
    return fig
