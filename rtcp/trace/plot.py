"""The time-sequence graph (Stevens / tcptrace style, as Wireshark's Stream Graphs draw it).

Top: every data segment sent as a vertical tick from its first to its last byte (relative
sequence numbers), retransmissions in red; the cumulative ACK as a step line; the receive-window
edge (ACK + advertised window) above it; SACKed ranges as short green bars. Below: cwnd and bytes
in flight, then SRTT, on the same time axis.

matplotlib is an optional extra (`pip install 'rtcp[plot]'`), imported only here and only when
a plot is drawn; without it the command fails with one line saying how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rtcp.errors import UsageError
from rtcp.trace.writer import normalize_flags, unwrap_near

INSTALL_HINT = "plotting needs matplotlib: pip install 'rtcp[plot]'"
SEQ_AXIS_LABEL = "relative sequence number (bytes)"
TIME_AXIS_LABEL = "time (s)"
CWND_AXIS_LABEL = "bytes"
RTT_AXIS_LABEL = "SRTT (ms)"
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


def _pick_conn(records: Sequence[dict]) -> tuple[Any, str]:
    sent: dict[Any, int] = {}
    received: dict[Any, int] = {}
    for r in records:
        ev = r.get("event")
        if ev == "segment_sent":
            sent[r.get("conn")] = sent.get(r.get("conn"), 0) + (r.get("len") or 0)
        elif ev == "segment_received":
            received[r.get("conn")] = received.get(r.get("conn"), 0) + (r.get("len") or 0)
    if sent and max(sent.values()) > 0:
        best = max(sent, key=lambda c: sent[c])
        if sent[best] >= received.get(best, 0):
            return best, "sender"
    if received:
        return max(received, key=lambda c: received[c]), "receiver"
    if sent:
        return next(iter(sent)), "sender"
    raise UsageError("the trace holds no segments to plot")


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
    """The series of one connection (default: the one that sent the most data)."""
    view = "sender"
    if conn is None:
        conn, view = _pick_conn(records)
    else:
        sent = sum(r.get("len") or 0 for r in records
                   if r.get("conn") == conn and r.get("event") == "segment_sent")
        recv = sum(r.get("len") or 0 for r in records
                   if r.get("conn") == conn and r.get("event") == "segment_received")
        view = "sender" if sent >= recv else "receiver"
    mine = [r for r in records if r.get("conn") == conn]
    role = next((str(r.get("role")) for r in records if r.get("role")), "")
    s = Series(role=role, conn=conn, view=view)
    data_ev, ack_ev = (
        ("segment_sent", "segment_received") if view == "sender"
        else ("segment_received", "segment_sent")
    )
    shift = _window_shift(mine) if view == "sender" else None
    t0 = 0.0
    seq_ref = 0  # running reference for unwrapping relative sequence numbers
    ack_ref = 0
    highest = 1  # snd.nxt (relative), for bytes in flight
    acked = 1
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
            if r.get("retransmit"):
                s.rtx_t.append(t)
                s.rtx_lo.append(lo)
                s.rtx_hi.append(hi)
            else:
                s.sent_t.append(t)
                s.sent_lo.append(lo)
                s.sent_hi.append(hi)
            if view == "sender":
                highest = max(highest, hi)
                s.flight_t.append(t)
                s.flight.append(max(0, highest - acked))
        elif ev == ack_ev and "ACK" in names and r.get("rel_ack") is not None:
            a = unwrap_near(r["rel_ack"], ack_ref)
            ack_ref = max(ack_ref, a)
            if "SYN" in names:
                continue
            s.ack_t.append(t)
            s.ack.append(a)
            if view == "sender":
                acked = max(acked, a)
                s.flight_t.append(t)
                s.flight.append(max(0, highest - acked))
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
        elif ev == "rtt_sample" and r.get("srtt") is not None:
            s.srtt_t.append(t)
            s.srtt_ms.append(float(r["srtt"]) * 1000.0)
    return s


def plot_series(s: Series, marks: Sequence[tuple[float, str]] = ()) -> Any:
    """A matplotlib Figure of the series (not saved). `marks`: (time, label) of the network's
    changes (rtcp.trace.network_changes), drawn as dotted lines across the three graphs."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8.5), layout="constrained")
    gs = fig.add_gridspec(3, 1, height_ratios=(3, 1.2, 1))
    ax_seq = fig.add_subplot(gs[0])
    ax_cwnd = fig.add_subplot(gs[1], sharex=ax_seq)
    ax_rtt = fig.add_subplot(gs[2], sharex=ax_seq)
    what = "sent" if s.view == "sender" else "received"
    conn = f"{s.conn:08x}" if isinstance(s.conn, int) else str(s.conn)
    ax_seq.set_title(f"time-sequence graph: {s.role or 'trace'}, connection {conn} (data {what})")
    if s.sent_t:
        ax_seq.vlines(s.sent_t, s.sent_lo, s.sent_hi, colors="tab:blue", linewidth=1.5,
                      label=f"segments {what}")
        ax_seq.plot(s.sent_t, s.sent_hi, linestyle="none", marker="_", color="tab:blue",
                    markersize=4)
    if s.rtx_t:
        ax_seq.vlines(s.rtx_t, s.rtx_lo, s.rtx_hi, colors="tab:red", linewidth=2.0,
                      label="retransmissions")
        ax_seq.plot(s.rtx_t, s.rtx_hi, linestyle="none", marker="o", markerfacecolor="none",
                    color="tab:red", markersize=6)
    if s.ack_t:
        ax_seq.step(s.ack_t, s.ack, where="post", color="tab:green", linewidth=1.0,
                    label="cumulative ACK")
    top = max(s.sent_hi + s.rtx_hi + s.ack + [1])
    if s.wnd_t:
        clipped = max(s.wnd_edge) > WINDOW_CLIP_FACTOR * top
        ax_seq.step(s.wnd_t, s.wnd_edge, where="post", color="tab:olive", linewidth=1.0,
                    linestyle="--",
                    label="receive window edge" + (" (mostly above)" if clipped else ""))
        if clipped:  # a window far larger than the transfer would flatten everything else
            ax_seq.set_ylim(bottom=-0.02 * top, top=WINDOW_CLIP_FACTOR * top)
    if s.sack_t:
        ax_seq.vlines(s.sack_t, s.sack_lo, s.sack_hi, colors="tab:purple", linewidth=3.0,
                      alpha=0.6, label="SACKed")
    ax_seq.set_ylabel(SEQ_AXIS_LABEL)
    ax_seq.grid(True, alpha=0.3)
    if ax_seq.get_legend_handles_labels()[0]:
        ax_seq.legend(loc="upper left", fontsize="small")

    if s.cwnd_t:
        ax_cwnd.step(s.cwnd_t, s.cwnd, where="post", color="tab:orange", label="cwnd")
    if s.flight_t:
        ax_cwnd.step(s.flight_t, s.flight, where="post", color="tab:gray", linewidth=0.8,
                     label="bytes in flight")
    if not s.cwnd_t and not s.flight_t:
        ax_cwnd.text(0.5, 0.5, "cwnd and bytes in flight are the sender's: plot its trace",
                     transform=ax_cwnd.transAxes, ha="center", va="center", color="gray")
    ax_cwnd.set_ylabel(CWND_AXIS_LABEL)
    ax_cwnd.grid(True, alpha=0.3)
    if ax_cwnd.get_legend_handles_labels()[0]:
        ax_cwnd.legend(loc="upper left", fontsize="small")

    if s.srtt_t:
        ax_rtt.plot(s.srtt_t, s.srtt_ms, color="tab:brown", marker=".", markersize=3,
                    linewidth=0.8, label="SRTT")
    ax_rtt.set_ylabel(RTT_AXIS_LABEL)
    ax_rtt.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_rtt.set_ylim(bottom=0, top=max(s.srtt_ms + [1.0]) * 1.15)
    ax_cwnd.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_rtt.set_xlabel(TIME_AXIS_LABEL)
    ax_rtt.grid(True, alpha=0.3)
    for ax in (ax_seq, ax_cwnd):
        ax.tick_params(labelbottom=False)
    merged: dict[float, list[str]] = {}  # changes at the same moment share one line
    for t, label in marks:
        merged.setdefault(t, []).append(label)
    for t, labels in merged.items():
        label = "; ".join(labels)
        for ax in (ax_seq, ax_cwnd, ax_rtt):
            ax.axvline(t, color="tab:pink", linestyle=":", linewidth=1.2)
        ax_seq.text(t, 0.98, " " + label, transform=ax_seq.get_xaxis_transform(), rotation=90,
                    va="top", ha="right", fontsize="x-small", color="tab:pink")
    return fig


def plot_trace(
    records: Sequence[dict],
    output: str | os.PathLike[str] | None = None,
    *,
    conn: Any = None,
    marks: Sequence[tuple[float, str]] = (),
) -> Any:
    """Draw the graph of one trace's records; save it to output (format from its suffix)
    when given. Returns the Figure. `marks`: see plot_series (times on this trace's axis)."""
    series = extract(records, conn)
    fig = plot_series(series, marks)
    if output is not None:
        fig.savefig(os.fspath(output), dpi=110)
    return fig
