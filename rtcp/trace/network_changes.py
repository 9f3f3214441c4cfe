"""The proxy's live changes (`proxy_change` records: the control API, a Lab, a scenario's steps
and the ends of their `for`) as marks for `rtcp explain` and `rtcp plot`, so a reader sees the
network change at the moment it did: the cwnd fall when the loss started, recover when it ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def change_label(rec: dict[str, Any]) -> str:
    """One short line: what changed and who changed it."""
    if rec.get("action") == "start":
        name = rec.get("name") or rec.get("file") or "scenario"
        return f"network: scenario {name!r} starts"
    if "error" in rec:
        what = f"{rec.get('action')} refused ({rec['error']})"
    else:
        what = str(rec.get("summary") or rec.get("action"))
    source = rec.get("source")
    if source == "scenario":
        who = f"scenario step {rec.get('step')}"
        if (rec.get("cycle") or 1) > 1:
            who += f", cycle {rec['cycle']}"
    elif source == "timer":
        who = f"end of change {rec.get('ends')}"
    else:
        who = str(source or "proxy")
    return f"network: {what} ({who})"


def change_marks(
    traces: Sequence[Any], bases: Sequence[float]
) -> list[tuple[float, tuple[float, int, int], str]]:
    """(time on the shared axis, order key, label) of every proxy_change in `traces` (Trace
    objects of rtcp.trace.ladder, with the per-trace time bases of that module)."""
    marks = []
    for i, trace in enumerate(traces):
        for j, rec in enumerate(trace.records):
            if rec.get("event") == "proxy_change":
                t = bases[i] + float(rec.get("t", 0.0))
                marks.append((t, (t, i, j), change_label(rec)))
    return marks
