"""The ladder diagram: a transfer drawn as TCP textbooks draw it, from real traces.

Two vertical lines, the connection's two ends; one arrow per segment with its flags and relative
numbers; state names beside each line as they change; a datagram the proxy dropped stops at an X
in the middle; a retransmission says why it was sent; an out-of-order arrival says so at its end.

Input: the traces of one transfer (any of the sender's, the receiver's and the proxy's; the more,
the more is known). Segments are matched across traces by their header fields (flags, seq, ack,
length, window) in order of occurrence, so a loss seen by the proxy lands on the sender's arrow.
Long transfers are condensed: the handshake, the first segments, every loss and its repair, and
the close are drawn in full, and each stretch between them becomes one summary line.

What is drawn happened: an arrow stands at its send time, and each end's own events (its sends,
state changes, timers, and the state changes arrivals caused) keep the order its trace has them
in. Time 0 is the connection's first segment, as in `rtcp plot`. An end without a trace is
known only by what arrived (or by the proxy): the footer says what cannot be known.
"""

from __future__ import annotations

import bisect
import os
import textwrap
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rtcp.trace.defaults import DEFAULT_WIDTH, MIN_WIDTH
from rtcp.trace.writer import MASK32, normalize_flags, read_trace, unwrap_near

CONDENSE_ABOVE_ROWS = 80  # a ladder with at most this many rows is always drawn in full
FIRST_DATA_SEGMENTS = 6  # drawn in full after the handshake
CONTEXT_BEFORE = 1
CONTEXT_AFTER = 2
MIN_SUMMARY_RUN = 3  # shorter stretches are drawn rather than summarised
MAX_LISTED_CONNS = 8  # connections named in the footer when the traces hold several

_TIMER_NOTES = {
    "retransmission": "RTO expired",
    "persist": "persist timer",
    "tail_loss_probe": "TLP timer",
    "user_timeout": "user timeout",
}


# --- loading -------------------------------------------------------------------------------


@dataclass
class Trace:
    """One trace file: its role, its records, and how to put its times on a shared axis."""

    records: list[dict]
    name: str = ""
    role: str = ""
    header: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.records and self.records[0].get("event") == "trace_start":
            self.header = self.records[0]
        if not self.role:
            self.role = str(
                self.header.get("role")
                or next((r.get("role") for r in self.records if r.get("role")), "")
                or self.name
                or "trace"
            )

    @property
    def is_proxy(self) -> bool:
        return any(r.get("event") == "proxy_decision" for r in self.records)


def same_trace(a: Trace, b: Trace) -> bool:
    """Two files of one trace (a copy, or the same file given twice): the same process' header
    (pid, host, clock start, role), or, without headers, the same records."""
    if a.header and b.header:
        keys = ("pid", "host", "clock_start", "unix_time", "role")
        return all(a.header.get(k) == b.header.get(k) for k in keys)
    return a.records == b.records


def load_trace(path: str | os.PathLike[str]) -> Trace:
    return Trace(read_trace(path), name=Path(path).name)


def _as_trace(item: Any, index: int) -> Trace:
    if isinstance(item, Trace):
        return item
    if isinstance(item, (str, os.PathLike)):
        return load_trace(item)
    return Trace(list(item), name=f"trace{index + 1}")


def _time_bases(traces: Sequence[Trace]) -> list[float]:
    """Per trace, the offset that puts its `t` on one axis. Processes on one host share the
    monotonic clock (clock_start); otherwise the wall clock at the start is the best guess."""
    hosts = {t.header.get("host") for t in traces}
    starts = [t.header.get("clock_start") for t in traces]
    if len(hosts) <= 1 and all(s is not None for s in starts):
        return [float(s) for s in starts]  # type: ignore[arg-type]
    walls = [t.header.get("unix_time") for t in traces]
    if all(w is not None for w in walls):
        return [float(w) for w in walls]  # type: ignore[arg-type]
    return [0.0 for _ in traces]


# --- the model -----------------------------------------------------------------------------


@dataclass
class Arrival:
    rec: dict
    t: float
    order: tuple
    notes: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    checksum_failure: bool = False
    fills: bool = False  # data below the highest byte received so far


@dataclass
class Tx:
    """One transmission of a segment from `side` (0 = left, 1 = right)."""

    side: int
    t: float
    order: tuple
    flags: str
    seq: int
    ack: int
    length: int
    window: int
    rel_seq: int | None
    rel_ack: int | None
    sack: list = field(default_factory=list)  # relative (left, right) blocks
    pmtu_ack: int | None = None  # the probe size a PMTU-ACK option confirms
    retransmit: str | None = None
    decision: dict | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    capacity: int = 1  # intact copies that may arrive
    fate: str = "delivered"  # delivered | lost | corrupted | unseen
    dup_ack: int = 0
    seen: str = "traced"  # how it is known: traced (its sender's trace) | proxy | arrivals

    @property
    def names(self) -> list[str]:
        return self.flags.split("|")

    @property
    def is_data(self) -> bool:
        return self.length > 0 and "PROBE" not in self.names

    @property
    def key(self) -> tuple:
        if "SYN" in self.names:  # the core traces a sent SYN's seq as 0: match without it
            return (self.flags, None, self.ack, self.length, self.window, self.pmtu_ack)
        return (self.flags, self.seq, self.ack, self.length, self.window, self.pmtu_ack)


def _key_of(rec: dict) -> tuple:
    flags = normalize_flags(rec.get("flags", ""))
    pmtu_ack = rec.get("pmtu_ack")
    if "SYN" in flags.split("|"):
        return (flags, None, rec.get("ack"), rec.get("len", 0), rec.get("window"), pmtu_ack)
    return (flags, rec.get("seq"), rec.get("ack"), rec.get("len", 0), rec.get("window"), pmtu_ack)


@dataclass
class ConnView:
    """The records of one connection in one endpoint trace."""

    trace: Trace
    tindex: int
    conn: Any
    records: list[tuple[int, dict]]  # (index in the trace, record)
    base: float

    def __post_init__(self) -> None:
        self.iss: int | None = None
        self.irs: int | None = None
        self.is_client = False
        first_sent = next((r for _, r in self.records if r["event"] == "segment_sent"), None)
        if first_sent is not None:
            names = normalize_flags(first_sent.get("flags", "")).split("|")
            self.is_client = "SYN" in names and "ACK" not in names
        for _, r in self.records:
            ev = r["event"]
            names = normalize_flags(r.get("flags", "")).split("|")
            if ev == "segment_sent" and self.iss is None and "SYN" not in names:
                if r.get("rel_seq") is not None:
                    self.iss = (r["seq"] - r["rel_seq"]) & MASK32
            elif ev == "segment_received" and "SYN" in names:
                if self.irs is None:
                    self.irs = r.get("seq")
                if "ACK" in names and self.iss is None and r.get("ack") is not None:
                    self.iss = (r["ack"] - 1) & MASK32
        self.first_t = self.abs(self.records[0][1]) if self.records else 0.0

    def abs(self, rec: dict) -> float:
        return self.base + float(rec.get("t", 0.0))


def _conn_views(trace: Trace, tindex: int, base: float) -> list[ConnView]:
    by_conn: dict[Any, list[tuple[int, dict]]] = {}
    for i, rec in enumerate(trace.records):
        if "conn" in rec and rec.get("event") != "proxy_decision":
            by_conn.setdefault(rec["conn"], []).append((i, rec))
    views = [ConnView(trace, tindex, conn, recs, base) for conn, recs in by_conn.items()]
    first = default_connection(trace.records)
    with_segments = [
        v for v in views if any(r["event"].startswith("segment_") for _, r in v.records)
    ]
    with_segments.sort(key=lambda v: v.conn != first)  # the default one first, else in order
    return with_segments or views


def _pick_pair(
    views: list[ConnView], conn: Any = None
) -> tuple[ConnView | None, ConnView | None, list[Any]]:
    """The connection to draw, as (left end, right end, the other connections' ids): `conn`
    (either end's id), by default the first connection of the first trace given (see
    default_connection); the active opener on the left; its other end found by the ISNs both
    sides saw (None when untraced)."""
    if not views:
        return None, None, []
    if conn is None:
        primary = views[0]
    else:
        primary = next((v for v in views if v.conn == conn), None)
        if primary is None:
            raise UnknownConnection(conn, [v.conn for v in views])
    partner = None
    others = [v for v in views if v is not primary]
    for v in others:
        if (primary.iss is not None and v.irs == primary.iss) or (
            primary.irs is not None and v.iss == primary.irs
        ):
            partner = v
            break
    if partner is None:
        foreign = [v for v in others if v.trace is not primary.trace]
        if len(foreign) == 1:
            partner = foreign[0]
    rest = list(dict.fromkeys(v.conn for v in others if v is not partner))
    if partner is None:
        return (primary, None, rest) if primary.is_client else (None, primary, rest)
    if partner.is_client and not primary.is_client:
        return partner, primary, rest
    return primary, partner, rest


class UnknownConnection(ValueError):
    """--conn names no connection of the traces."""

    def __init__(self, conn: Any, known: list[Any]):
        self.conn = conn
        self.known = list(dict.fromkeys(known))
        shown = ", ".join(conn_hex(c) for c in self.known[:MAX_LISTED_CONNS])
        more = "" if len(self.known) <= MAX_LISTED_CONNS else ", ..."
        super().__init__(
            f"no connection {conn_hex(conn)} in the traces (they hold {shown or 'none'}{more})"
        )


def default_connection(records: Sequence[dict]) -> Any:
    """The connection `rtcp explain` and `rtcp plot` draw without --conn: the first one in the
    trace that carried segments (None when there is none)."""
    return next(
        (r["conn"] for r in records
         if "conn" in r and str(r.get("event", "")).startswith("segment_")),
        None,
    )


def parse_conn_id(text: str) -> int:
    """A connection id as the ladder and the plot print it: hexadecimal, 0x optional."""
    value = text.strip().lower().removeprefix("0x")
    if not value or len(value) > 8 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{text!r} is not a connection id (8 hex digits, as explain shows it)")
    return int(value, 16)


def _digest(view: ConnView, side: int) -> tuple[list[Tx], list[Arrival], list[tuple]]:
    """Segments sent, arrivals (with what happened on arrival) and the loose rows (state
    changes and timers not caused by an arrival) of one connection."""
    sends: list[Tx] = []
    arrivals: list[Arrival] = []
    loose: list[tuple] = []  # (t, order, side, kind, text)
    current: Arrival | None = None
    max_end = 0
    rcv_end = 0  # highest relative end of the data received
    last_data: Arrival | None = None
    for i, rec in view.records:
        ev = rec["event"]
        t = view.abs(rec)
        order = (t, view.tindex, i)
        if ev == "segment_received":
            _note_gap_filled(last_data)
            current = last_data = Arrival(rec, t, order)
            arrivals.append(current)
            length = rec.get("len", 0) or 0
            rel = rec.get("rel_seq")
            if length and rel is not None and "PROBE" not in str(rec.get("flags")):
                start = unwrap_near(rel, rcv_end)
                current.fills = start < rcv_end
                rcv_end = max(rcv_end, start + length)
        elif ev == "checksum_failure":
            arrivals.append(Arrival(rec, t, order, checksum_failure=True))
            current = None
        elif ev in ("out_of_order", "duplicate"):
            if current is not None:
                current.notes.append("out of order: buffered" if ev == "out_of_order" else
                                     "duplicate: discarded")
        elif ev == "state_change":
            if current is not None and str(rec.get("cause", "recv")).startswith("recv"):
                current.states.append(str(rec.get("new")))
            else:
                loose.append((t, order, side, "state", str(rec.get("new"))))
        elif ev == "segment_sent":
            tx = _tx_from(rec, side, t, order)
            if not tx.sack and rec.get("sack") and view.irs is not None:
                # traces written before sent segments carried rel_sack: the blocks are in
                # the peer's numbers
                tx.sack = [((lo - view.irs) & MASK32, (hi - view.irs) & MASK32)
                           for lo, hi in rec["sack"]]
            names = tx.names
            if (
                tx.rel_seq is not None
                and (tx.length or "SYN" in names or "FIN" in names)
                and "PROBE" not in names
            ):
                start = unwrap_near(tx.rel_seq, max_end)
                end = start + tx.length + ("SYN" in names) + ("FIN" in names)
                if end <= max_end and not tx.retransmit:
                    tx.retransmit = "timeout"
                max_end = max(max_end, end)
            sends.append(tx)
        elif ev == "timer_fired":
            note = _TIMER_NOTES.get(str(rec.get("timer")))
            if note:
                loose.append((t, order, side, "note", note))
        elif ev == "malformed":
            loose.append((t, order, side, "note", "malformed datagram dropped"))
    _note_gap_filled(last_data)
    return sends, arrivals, loose


def _note_gap_filled(arrival: Arrival | None) -> None:
    """Data below the highest byte received that is neither a duplicate nor out of order
    filled a hole: the cumulative ACK jumps."""
    if arrival is not None and arrival.fills and not arrival.notes:
        arrival.notes.append("fills the gap")


def _tx_from(rec: dict, side: int, t: float, order: tuple) -> Tx:
    flags = normalize_flags(rec.get("flags", ""))
    return Tx(
        side=side, t=t, order=order, flags=flags, seq=rec.get("seq", 0), ack=rec.get("ack", 0),
        length=rec.get("len", 0) or 0, window=rec.get("window", 0) or 0,
        rel_seq=rec.get("rel_seq"), rel_ack=rec.get("rel_ack"),
        sack=[tuple(b) for b in rec.get("rel_sack") or []],
        pmtu_ack=rec.get("pmtu_ack"),
        retransmit=rec.get("retransmit"),
    )


# --- building the ladder ---------------------------------------------------------------------


@dataclass
class Row:
    t: float
    order: tuple
    kind: str  # tx | state | note | summary
    side: int = 0
    text: str = ""
    tx: Tx | None = None
    important: bool = False


@dataclass
class Ladder:
    rows: list[Row]
    names: tuple[str, str]
    t0: float
    footer: list[str]


def build_ladder(traces: Sequence[Any], conn: Any = None) -> Ladder:
    """The ladder of one connection of the traces: `conn` (either end's id; default: see
    default_connection). UnknownConnection when no trace holds it."""
    items = [_as_trace(t, i) for i, t in enumerate(traces)]
    bases = _time_bases(items)
    proxies = [(i, t) for i, t in enumerate(items) if t.is_proxy]
    endpoints = [(i, t) for i, t in enumerate(items) if not t.is_proxy]
    views: list[ConnView] = []
    for i, t in endpoints:
        views.extend(_conn_views(t, i, bases[i]))
    left, right, nconns = _pick_pair(views, conn)
    decisions: list[tuple[float, tuple, dict]] = []
    for i, t in proxies:
        for j, rec in enumerate(t.records):
            if rec.get("event") == "proxy_decision":
                decisions.append((bases[i] + float(rec.get("t", 0.0)), (0.0, i, j), rec))
    ids: list[Any] = [left.conn if left else None, right.conn if right else None]
    if not views and conn is not None:
        proxied = {d.get(k) for _, _, d in decisions for k in ("src", "dst")}
        if conn not in proxied:
            raise UnknownConnection(conn, sorted(c for c in proxied if c is not None))
        ids[0] = conn
    _complete_ids(ids, decisions)

    per_side: list[tuple[list[Tx], list[Arrival], list[tuple]]] = []
    for side, view in enumerate((left, right)):
        per_side.append(_digest(view, side) if view is not None else ([], [], []))
    traced = (left is not None, right is not None)

    txs: list[Tx] = []
    loose: list[tuple] = list(per_side[0][2]) + list(per_side[1][2])
    for s in (0, 1):
        o = 1 - s
        dec = [
            (t, order, d) for t, order, d in decisions
            if (ids[s] is not None and d.get("src") == ids[s])
            or (ids[o] is not None and d.get("dst") == ids[o] and d.get("src") != ids[o])
        ]
        view = (left, right)[o]
        o_end = max((view.abs(r) for _, r in view.records), default=0.0) if view else 0.0
        txs.extend(
            _direction(s, per_side[s][0], traced[s], dec, per_side[o][1], traced[o], loose, o_end)
        )

    _keep_own_order(txs, loose)
    rows = [Row(tx.t, tx.order, "tx", tx.side, tx=tx) for tx in txs]
    rows += [Row(t, order, kind, side, text=text) for t, order, side, kind, text in loose]
    from rtcp.trace.network_changes import change_marks  # the proxy's live changes

    rows += [Row(t, order, "note", 0, text=label) for t, order, label in change_marks(items, bases)]
    rows.sort(key=lambda r: r.order)
    # time 0 is the connection's first segment, as in `rtcp plot`
    t0 = min((tx.t for tx in txs), default=rows[0].t if rows else 0.0)
    names = _names(left, right, items)
    _label_dup_acks(rows)
    losses_known = (bool(decisions) or traced[1], bool(decisions) or traced[0])
    footer = _footer(txs, decisions, names, nconns, left, right, losses_known, ids)
    initial = _initial_states(left, right)
    if initial is not None:
        rows.insert(0, Row(t0, (t0, -1, -1), "initial", text="\0".join(initial)))
    return Ladder(rows, names, t0, footer)


def _keep_own_order(txs: list[Tx], loose: list[tuple]) -> None:
    """Each end's events keep their own order. An arrow is drawn at its send time; a state
    change its arrival caused is drawn on that arrow only when the receiving end did nothing
    between the send and the arrival, else on a row of its own at the arrival time (without
    this, a FIN that crossed this end's own FIN drew ESTABLISHED -> CLOSING -> FIN-WAIT-1)."""
    own: list[list[tuple]] = [[], []]  # per side, the orders of its own events
    for tx in txs:
        if tx.seen == "traced":
            own[tx.side].append(tx.order)
    for _, order, side, _, _ in loose:
        own[side].append(order)
    for orders in own:
        orders.sort()
    for tx in txs:
        o = 1 - tx.side
        for a in tx.arrivals:
            if not a.states:
                continue
            i = bisect.bisect_right(own[o], tx.order)
            if i < len(own[o]) and own[o][i] < a.order:
                for state in a.states:
                    loose.append((a.t, a.order, o, "state", state))
                a.states = []


def _complete_ids(ids: list[Any], decisions: list[tuple[float, tuple, dict]]) -> None:
    """Learn the connection id of an untraced end from the proxy's decoded headers."""
    known = [i for i in ids if i is not None]
    for _, _, d in decisions:
        src, dst = d.get("src"), d.get("dst")
        if not known:
            # proxy-only: the first SYN's sender is the left end
            if "SYN" in str(d.get("flags", "")).split("|") and "ACK" not in str(d.get("flags")):
                ids[0] = src
                known = [src]
            continue
        if ids[0] is None and ids[1] is not None:
            if src == ids[1] and dst:
                ids[0] = dst
            elif dst == ids[1] and src != ids[1]:
                ids[0] = src
        elif ids[1] is None and ids[0] is not None:
            if src == ids[0] and dst:
                ids[1] = dst
            elif dst == ids[0] and src != ids[0]:
                ids[1] = src
        if ids[0] is not None and ids[1] is not None:
            return


def _direction(
    s: int,
    sends: list[Tx],
    s_traced: bool,
    decisions: list[tuple[float, tuple, dict]],
    arrivals: list[Arrival],
    o_traced: bool,
    loose: list[tuple],
    o_end: float = float("inf"),
) -> list[Tx]:
    """The transmissions from side s, with the proxy's decision and the arrivals at the
    other side attached."""
    o = 1 - s
    if not s_traced:
        if decisions:
            sends = []
            for t, order, d in decisions:
                tx = Tx(
                    side=s, t=t, order=(t,) + order[1:], flags=normalize_flags(d.get("flags", "")),
                    seq=d.get("seq", 0), ack=d.get("ack", 0), length=d.get("len", 0) or 0,
                    window=d.get("window", 0) or 0, rel_seq=d.get("rel_seq"),
                    rel_ack=d.get("rel_ack"), pmtu_ack=d.get("pmtu_ack"),
                )
                _apply_decision(tx, d)
                tx.seen = "proxy"
                sends.append(tx)
            _mark_inferred_retransmits(sends)
            decisions = []
        elif arrivals:
            sends = []
            for a in arrivals:
                if a.checksum_failure:
                    loose.append((a.t, a.order, o, "note", "bad checksum, dropped"))
                    continue
                tx = _tx_from(a.rec, s, a.t, a.order)
                tx.seen = "arrivals"
                tx.arrivals.append(a)
                sends.append(tx)
            _mark_inferred_retransmits(sends)
            return sends
    # the proxy's decisions onto the sender's segments, by header fields, in order
    queues: dict[tuple, deque[Tx]] = defaultdict(deque)
    for tx in sends:
        queues[tx.key].append(tx)
    for _, _, d in decisions:
        q = queues.get(_key_of(d))
        if q:
            _apply_decision(q.popleft(), d)
    if not o_traced:
        return sends
    # arrivals onto segments
    by_key: dict[tuple, list[Tx]] = defaultdict(list)
    for tx in sends:
        by_key[tx.key].append(tx)
    corrupted = deque(tx for tx in sends if tx.fate == "corrupted" or (
        tx.decision is not None and tx.decision.get("corrupted")
    ))
    for a in arrivals:
        if a.checksum_failure:
            if corrupted:
                tx = corrupted.popleft()
                tx.arrivals.append(a)
            else:
                loose.append((a.t, a.order, o, "note", "bad checksum, dropped"))
            continue
        candidates = by_key.get(_key_of(a.rec))
        if not candidates:
            tx = _tx_from(a.rec, s, a.t, a.order)  # sent before the sender's trace began
            tx.seen = "arrivals"
            tx.arrivals.append(a)
            sends.append(tx)
            continue
        _match_arrival(a, candidates)
    for tx in sends:
        if tx.fate == "delivered" and not tx.arrivals:
            tx.fate = "unseen" if tx.t <= o_end else "untraced"
        _sack_from_arrivals(tx)
    return sends


def _sack_from_arrivals(tx: Tx) -> None:
    """The core does not trace the SACK blocks it sends; the receiving end saw them."""
    if not tx.sack:
        for a in tx.arrivals:
            if a.rec.get("rel_sack"):
                tx.sack = [tuple(b) for b in a.rec["rel_sack"]]
                break


def _match_arrival(a: Arrival, candidates: list[Tx]) -> None:
    """Which transmission of identical segments (a retransmission repeats the header) this
    arrival is: the latest one sent before it arrived that may still arrive. Without the
    proxy's word that is right for a lost original (its retransmission arrives) and for a
    spurious retransmission (the original arrives first)."""
    open_ = [tx for tx in candidates if tx.capacity > 0 and tx.fate != "lost"]
    before = [tx for tx in open_ if tx.t <= a.t + 1e-9]
    if before:
        tx = before[-1]
    elif open_:
        tx = open_[0]  # clocks that disagree: take the oldest
    else:
        sent = [tx for tx in candidates if tx.t <= a.t + 1e-9 and tx.fate != "lost"]
        (sent[-1] if sent else candidates[-1]).arrivals.append(a)  # an extra copy
        return
    tx.capacity -= 1
    tx.arrivals.append(a)


def _apply_decision(tx: Tx, d: dict) -> None:
    tx.decision = d
    copies = int(d.get("copies", 1) or 0)
    corrupted = len(d.get("corrupted_copies") or [])
    tx.capacity = max(0, copies - corrupted)
    if d.get("decision") == "lost" or copies == 0:
        tx.fate = "lost"
    elif copies and tx.capacity == 0:
        tx.fate = "corrupted"


def _mark_inferred_retransmits(sends: list[Tx]) -> None:
    max_end = 0
    for tx in sends:
        if tx.rel_seq is None or "PROBE" in tx.names:
            continue
        syn, fin = "SYN" in tx.names, "FIN" in tx.names
        if not (tx.length or syn or fin):
            continue
        start = unwrap_near(tx.rel_seq, max_end)
        end = start + tx.length + syn + fin
        if end <= max_end and not tx.retransmit:
            tx.retransmit = "unknown"
        max_end = max(max_end, end)


def _label_dup_acks(rows: list[Row]) -> None:
    last: dict[int, tuple[int | None, int, int]] = {}  # side -> (ack, window, dup count)
    for row in rows:
        tx = row.tx
        if tx is None:
            continue
        if tx.flags != "ACK" or tx.length:
            if "ACK" in tx.names:
                last[tx.side] = (tx.ack, tx.window, 0)
            continue
        prev = last.get(tx.side)
        if prev is not None and prev[0] == tx.ack and (prev[1] == tx.window or tx.sack):
            tx.dup_ack = prev[2] + 1
        last[tx.side] = (tx.ack, tx.window, tx.dup_ack)


def _names(left: ConnView | None, right: ConnView | None, items: list[Trace]) -> tuple[str, str]:
    def name(view: ConnView | None, default: str) -> str:
        if view is None:
            return default
        return f"{view.trace.role} (conn {conn_hex(view.conn)})"

    return name(left, "client (no trace)"), name(right, "server (no trace)")


def conn_hex(conn: Any) -> str:
    """A connection id as the ladder, the plot and --conn spell it."""
    return f"{conn:08x}" if isinstance(conn, int) else str(conn)


def _initial_states(left: ConnView | None, right: ConnView | None) -> tuple[str, str] | None:
    out = []
    for view in (left, right):
        first = None
        if view is not None:
            first = next((r for _, r in view.records if r["event"] == "state_change"), None)
        out.append(str(first.get("old")) if first else "")
    return (out[0], out[1]) if any(out) else None


def _footer(txs, decisions, names, nconns, left, right, losses_known, ids) -> list[str]:
    """One line per end, saying what the traces show and what they cannot: segments of an
    untraced end are known only from where they arrived (or from the proxy), so its
    retransmissions are inferred and its losses unknown."""
    lines = []
    for side in (0, 1):
        mine = [tx for tx in txs if tx.side == side]
        if not mine:
            continue
        data = sum(tx.length for tx in mine if tx.is_data and not tx.retransmit)
        causes: dict[str, int] = defaultdict(int)
        for tx in mine:
            if tx.retransmit:
                causes[_cause_word(tx.retransmit)] += 1
        rtx = sum(causes.values())
        lost = sum(1 for tx in mine if tx.fate in ("lost", "unseen"))
        corrupted = sum(1 for tx in mine if tx.fate == "corrupted")
        name = names[side].split(" (")[0]
        seen = "traced" if all(tx.seen == "traced" for tx in mine) else (
            "proxy" if any(tx.seen == "proxy" for tx in mine) else "arrivals"
        )
        if seen == "arrivals":  # what arrived, once: a retransmission that filled a hole counts
            data = sum(
                tx.length for tx in mine
                if tx.is_data and not any("duplicate" in n for a in tx.arrivals for n in a.notes)
            )
        head = f"{len(mine):,} segments, {_human(data)} of data"
        if seen == "arrivals":
            where = names[1 - side].split(" (")[0]
            lines.append(
                f"{name} (no trace; what arrived at {where}): {head}, {rtx} arrived again or"
                " late (retransmitted or reordered); what was lost on the way is not known"
            )
            continue
        detail = ""
        if rtx and seen == "traced":
            detail = " (" + ", ".join(f"{n} {c}" for c, n in sorted(causes.items())) + ")"
        extra = ""
        if lost:
            extra += f", {lost} lost"
        if corrupted:
            extra += f", {corrupted} corrupted"
        if not losses_known[side]:
            extra += "; losses not known (no trace of the other end or the proxy)"
        label = name if seen == "traced" else f"{name} (no trace; as the proxy saw them)"
        lines.append(f"{label}: {head}, {rtx} retransmitted{detail}{extra}")
    if decisions:
        counts: dict[str, int] = defaultdict(int)
        for _, _, d in decisions:
            counts[str(d.get("decision"))] += 1
        lines.append(
            f"proxy: {len(decisions):,} datagrams: "
            + ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
        )
    if nconns:
        shown = ", ".join(conn_hex(c) for c in nconns[:MAX_LISTED_CONNS])
        more = f" and {len(nconns) - MAX_LISTED_CONNS} more" if len(nconns) > MAX_LISTED_CONNS else ""
        lines.append(
            f"(the traces hold other connections: {shown}{more}; draw one with --conn ID)"
        )
    return lines


def _cause_word(cause: str) -> str:
    return {
        "fast": "fast retransmit", "recovery": "SACK recovery", "timeout": "timeout",
        "unknown": "cause unknown", "tail loss probe": "tail loss probe",
    }.get(
        cause, cause
    )


# --- labels --------------------------------------------------------------------------------


def segment_label(tx: Tx, last_ack: dict[int, int | None]) -> str:
    names = tx.names
    rs = tx.rel_seq if tx.rel_seq is not None else tx.seq
    ra = tx.rel_ack if tx.rel_ack is not None else tx.ack
    has_ack = "ACK" in names
    if "PROBE" in names:
        return f"PMTU probe size={tx.length}"
    if "RST" in names:
        return f"RST seq={rs}" + (f" ack={ra}" if has_ack else "")
    if "SYN" in names:
        return f"SYN-ACK seq={rs} ack={ra}" if has_ack else f"SYN seq={rs}"
    parts = []
    fin = "FIN" in names
    if tx.length:
        parts.append("data+FIN" if fin else "data")
        parts.append(f"seq={rs} len={tx.length}")
        if has_ack and last_ack.get(tx.side) is not None and last_ack[tx.side] != ra:
            parts.append(f"ack={ra}")
    elif fin:
        parts.append(f"FIN seq={rs}")
        if has_ack:
            parts.append(f"ack={ra}")
    else:
        parts.append(f"ACK ack={ra}")
        if tx.sack:
            parts.append("SACK=" + ",".join(f"{lo}-{hi}" for lo, hi in tx.sack))
    if tx.pmtu_ack is not None:
        parts.append(f"PMTU-ACK={tx.pmtu_ack}")  # RFC 8899: the probe of this size arrived
    if tx.window == 0 and has_ack:
        parts.append("win=0")
    if tx.dup_ack:
        parts.append(f"(dup {tx.dup_ack})")
    return " ".join(parts)


def _retransmit_note(tx: Tx, dup_before: int) -> str:
    cause = tx.retransmit
    if cause == "timeout":
        return "retransmission: timeout (RTO)"
    if cause == "fast":
        if dup_before >= 3:
            return "fast retransmit after three duplicate ACKs"
        return "fast retransmit (SACK shows the loss)"
    if cause == "recovery":
        return "retransmission during SACK recovery"
    if cause == "unknown":
        return "retransmission"
    if cause == "tail loss probe":
        return "tail loss probe (RFC 8985)"
    return f"retransmission ({cause})"


def _human(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# --- condensing ----------------------------------------------------------------------------


def _mark_important(rows: list[Row]) -> None:
    data_seen = 0
    handshake = True
    first_fin = None
    repairs: list[tuple[int, int]] = []  # (side of the retransmitter, relative end)
    prev_ooo = False
    for i, row in enumerate(rows):
        tx = row.tx
        if tx is None:
            row.important = row.kind != "summary"
            continue
        names = tx.names
        if handshake:
            row.important = True
            if tx.is_data:
                data_seen += 1
                if data_seen >= FIRST_DATA_SEGMENTS:
                    handshake = False
        if tx.fate != "delivered" or tx.retransmit or "RST" in names or "SYN" in names:
            row.important = True
        ooo = any(a.notes for a in tx.arrivals) or len(tx.arrivals) > 1
        if ooo and not prev_ooo:
            row.important = True
        prev_ooo = ooo
        if tx.decision is not None and tx.decision.get("decision") in ("duplicated", "corrupted"):
            row.important = True
        if tx.dup_ack == 3:
            row.important = True
        if "FIN" in names:
            row.important = True
            if first_fin is None:
                first_fin = i
        if tx.retransmit and tx.rel_seq is not None:
            repairs.append((tx.side, tx.rel_seq + tx.length))
        if "ACK" in names and tx.rel_ack is not None and repairs:
            pending = [r for r in repairs if r[0] != tx.side and tx.rel_ack >= r[1]]
            if pending:
                row.important = True
                repairs = [r for r in repairs if r not in pending]
    if first_fin is not None:
        for row in rows[first_fin:]:
            tx = row.tx
            if tx is None or not tx.is_data:
                row.important = True


def condense(rows: list[Row]) -> list[Row]:
    _mark_important(rows)
    n = len(rows)
    keep = [False] * n
    for i, row in enumerate(rows):
        if row.important:
            for j in range(max(0, i - CONTEXT_BEFORE), min(n, i + CONTEXT_AFTER + 1)):
                keep[j] = True
    out: list[Row] = []
    i = 0
    while i < n:
        if keep[i]:
            out.append(rows[i])
            i += 1
            continue
        j = i
        while j < n and not keep[j]:
            j += 1
        run = rows[i:j]
        if len(run) < MIN_SUMMARY_RUN:
            out.extend(run)
        else:
            out.append(_summary(run))
        i = j
    return out


def _summary(run: list[Row]) -> Row:
    txs = [r.tx for r in run if r.tx is not None]
    size = sum(tx.length for tx in txs if tx.is_data)
    rtx = sum(1 for tx in txs if tx.retransmit)
    lost = sum(1 for tx in txs if tx.fate in ("lost", "unseen", "corrupted"))
    text = f"... {len(txs):,} segments, {_human(size)}, {rtx:,} retransmitted"
    if lost:
        text += f", {lost:,} lost"
    text += " ..."
    return Row(run[0].t, run[0].order, "summary", text=text)


# --- drawing -------------------------------------------------------------------------------


def _fit(line: str, c: _Canvas) -> str:
    """No line wider than asked: a note too long for the right column is cut short."""
    if len(line) <= c.width:
        return line
    return line[: c.width - 1] + "…"


class _Canvas:
    def __init__(self, width: int):
        self.width = max(MIN_WIDTH, width)
        self.time_w = 9
        self.left_w = 14
        self.right_w = max(22, self.width // 5)  # room for notes like "out of order: buffered"
        self.arrow_w = self.width - self.time_w - self.left_w - 2 - 1 - self.right_w
        self.lines: list[str] = []

    def row(self, t: float | None, left: str, middle: str, right: str, bars: str = "||") -> None:
        time_text = f"{t:8.3f} " if t is not None else " " * self.time_w
        left_text = left[: self.left_w - 1].rjust(self.left_w - 1) + " "
        mid = middle.ljust(self.arrow_w)
        line = time_text + left_text + bars[0] + mid
        if len(mid) <= self.arrow_w:
            line += bars[1] + (" " + right if right else "")
        else:
            line += (" " + right if right else "")
        self.lines.append(line.rstrip())

    def arrow(self, direction: int, label: str, stop: str) -> str:
        """direction 0: left to right. stop: "" (arrives), "lost" (X in the middle),
        "corrupt" (X at the receiving line)."""
        w = self.arrow_w
        text = f" {label} "
        if stop == "lost":
            reach = min(max(w // 2, len(text) + 6), w - 1)
            if direction == 1:
                body = "X" + "-" * max(1, reach - len(text) - 3) + text + "--"
                return body.rjust(w)
            body = "--" + text
            return (body + "-" * max(1, reach - len(body) - 1) + "X").ljust(w)
        head = "X" if stop == "corrupt" else ""
        if direction == 0:
            body = "--" + text
            body += "-" * max(1, w - len(body) - 1 - len(head)) + ">" + head
            return body
        body = head + "<" + "-" * max(1, w - len(text) - 3 - len(head)) + text + "--"
        return body

    def header(self, left: str, right: str) -> str:
        """Each end's name centred over its line, the time column's title on the far left."""
        left_bar = self.time_w + self.left_w
        right_bar = left_bar + 1 + self.arrow_w
        line = "    time"
        start = max(len(line) + 2, left_bar - len(left) // 2)
        line = line.ljust(start) + left
        start = max(len(line) + 2, right_bar - len(right) // 2)
        return (line.ljust(start) + right).rstrip()

    def centered(self, text: str) -> str:
        pad = max(1, (self.arrow_w - len(text)) // 2)
        return " " * pad + text


def notes_mid_lost(tx: Tx) -> str:
    if tx.fate == "unseen":
        return "lost: never arrived"
    cause = (tx.decision or {}).get("cause")
    why = {"mtu": " (MTU)", "queue": " (queue full)"}.get(str(cause), "")
    return f"lost by the proxy{why}"


def _put_inline(middle: str, note: str, direction: int) -> str | None:
    """The note beside the X of a lost arrow, when it fits."""
    w = len(middle)
    if direction == 0:
        x = middle.rindex("X")
        tail = "  " + note
        if len(tail) > w - x - 2:
            return None
        return middle[: x + 1] + tail.ljust(w - x - 1)
    x = middle.index("X")
    head = note + "  "
    if len(head) > x - 1:
        return None
    return head.rjust(x) + middle[x:]


def render(ladder: Ladder, *, width: int = DEFAULT_WIDTH, full: bool = False) -> str:
    rows = ladder.rows
    if not full and len(rows) > CONDENSE_ABOVE_ROWS:
        rows = condense(rows)
    c = _Canvas(width)
    c.lines.append(c.header(*ladder.names))
    t0 = ladder.t0
    last_ack: dict[int, int | None] = {0: None, 1: None}
    last_acked: dict[int, int | None] = {0: None, 1: None}
    dup_seen: dict[int, int] = {0: 0, 1: 0}  # duplicate ACKs in each side's current run
    for row in rows:
        t = row.t - t0
        if -0.0005 < t < 0:  # the connect just before the first segment: not "-0.000"
            t = 0.0
        if row.kind == "initial":
            left, right = row.text.split("\0")
            c.row(None, left, "", right)
            continue
        if row.kind == "summary":
            c.row(None, "", c.centered(row.text), "", bars="::")
            continue
        if row.kind in ("state", "note"):
            if row.side == 0 and len(row.text) >= c.left_w:
                c.row(t, "", " " + row.text, "")
            elif row.side == 0:
                c.row(t, row.text, "", "")
            else:
                c.row(t, "", "", row.text)
            continue
        tx = row.tx
        assert tx is not None
        label = segment_label(tx, last_ack)
        pmtu_note = ""
        if tx.pmtu_ack is not None and len(label) > c.arrow_w - 6:  # too long for the arrow
            label = segment_label(replace(tx, pmtu_ack=None), last_ack)
            pmtu_note = f"PMTU-ACK: the {tx.pmtu_ack}-byte probe arrived"
        if "ACK" in tx.names and tx.rel_ack is not None:
            last_ack[tx.side] = tx.rel_ack
        if tx.dup_ack:
            dup_seen[tx.side] = max(dup_seen[tx.side], tx.dup_ack)
        elif "ACK" in tx.names and tx.rel_ack != last_acked.get(tx.side):
            dup_seen[tx.side] = 0
        if "ACK" in tx.names:
            last_acked[tx.side] = tx.rel_ack
        stop = ""
        if tx.fate in ("lost", "unseen"):
            stop = "lost"
        elif tx.fate == "corrupted":
            stop = "corrupt"
        middle = c.arrow(tx.side, label, stop)
        if stop == "lost" and notes_mid_lost(tx):
            short = notes_mid_lost(tx)
            inline = _put_inline(middle, short, tx.side)
            if inline is not None:
                middle = inline
                tx_lost_inline = True
            else:
                tx_lost_inline = False
        else:
            tx_lost_inline = False
        notes_mid: list[str] = [pmtu_note] if pmtu_note else []
        if tx.retransmit and tx.seen == "arrivals":  # its sender's trace would say which
            notes_mid.append("late or again: retransmitted or reordered")
        elif tx.retransmit:
            notes_mid.append(_retransmit_note(tx, dup_seen[1 - tx.side]))
        d = tx.decision
        if tx.fate in ("lost", "unseen"):
            if not tx_lost_inline:
                notes_mid.append(notes_mid_lost(tx))
        elif tx.fate == "untraced":
            notes_mid.append("(sent after the other end's trace ended)")
        elif d is not None:
            if d.get("corrupted"):
                notes_mid.append("corrupted by the proxy (one bit flipped)")
            if d.get("duplicated"):
                notes_mid.append("duplicated by the proxy")
            if d.get("reordered"):
                notes_mid.append("reordered by the proxy")
        arrival_notes: list[str] = []
        for a in tx.arrivals:
            if a.checksum_failure:
                arrival_notes.append("bad checksum, dropped")
            arrival_notes.extend(a.notes)
            arrival_notes.extend(a.states)
        arrival_notes = list(dict.fromkeys(arrival_notes))
        first_note = arrival_notes[0] if arrival_notes else ""
        if tx.side == 0:
            c.row(t, "", middle, first_note)
            rest = arrival_notes[1:]
        elif len(first_note) < c.left_w:
            c.row(t, first_note, middle, "")
            rest = arrival_notes[1:]
        else:
            c.row(t, "", middle, "")
            rest = arrival_notes
        for note in notes_mid:
            c.row(None, "", "    " + note if tx.side == 0 else c.centered(note), "")
        for note in rest:
            if tx.side == 0:
                c.row(None, "", "", note)
            elif len(note) < c.left_w:
                c.row(None, note, "", "")
            else:
                c.row(None, "", " " + note, "")
    if ladder.footer:
        c.lines.append("")
        for line in ladder.footer:  # wrapped, so no line is wider than asked
            c.lines.extend(textwrap.wrap(line, c.width, subsequent_indent="  ") or [""])
    c.lines = [_fit(line, c) for line in c.lines]
    return "\n".join(c.lines) + "\n"


def render_ladder(
    traces: Iterable[Any], *, width: int = DEFAULT_WIDTH, full: bool = False, conn: Any = None
) -> str:
    """The ladder of the transfer in `traces` (paths, Trace objects or lists of records:
    any of the sender's, the receiver's and the proxy's); `conn`: see build_ladder."""
    return render(build_ladder(list(traces), conn), width=width, full=full)
