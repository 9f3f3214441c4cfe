"""What the benchmark tells: the terminal table, results.json with its history, the PNG chart.

results.json holds the newest run in full (rows with every run's raw figures), a `comparison`
with the run before it, and a `history` list: one short summary per run (timestamp, git commit,
size, each row's goodput, ratio and CPU), oldest first. A run is compared with the newest
history entry of the same file size, so a --quick run never becomes the baseline of a full one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from rtcp.bench import encryption, netns, tree_rows

SCHEMA = "rtcp-bench/1"
REGRESSION_THRESHOLD = 0.10  # a row that loses more than 10% of its ratio to the relay is flagged
PROXY_TARGET_RATIO = 0.8  # the proxy must forward at least 0.8x the bare relay
HISTORY_LIMIT = 200
MB = 1e6


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """The commit being measured and whether the tree had changes (read-only git calls)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _cpu_total(row: dict[str, Any]) -> float | None:
    cpu = row.get("cpu_s_per_mb") or {}
    values = [v for v in cpu.values() if isinstance(v, (int, float))]
    return sum(values) if values else None


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The short form of one run that goes into `history`."""
    return {
        "timestamp": doc.get("timestamp"),
        "git_commit": (doc.get("git") or {}).get("commit"),
        "git_dirty": (doc.get("git") or {}).get("dirty"),
        "size_bytes": (doc.get("config") or {}).get("size_bytes"),
        "impaired_size_bytes": (doc.get("config") or {}).get("impaired_size_bytes"),
        "repeats": (doc.get("config") or {}).get("repeats"),
        "proxy_forwarding_ratio": (doc.get("proxy_forwarding") or {}).get("ratio_to_relay"),
        "encrypted_to_plaintext": {
            p["path"]: p["ratio"] for p in (doc.get("encryption") or {}).get("pairs", [])
        },
        "rows": {
            row["name"]: {
                "goodput_bytes_per_s": row.get("goodput_bytes_per_s"),
                "ratio_to_relay": row.get("ratio_to_relay"),
                "cpu_s_per_mb_total": _cpu_total(row),
                "ok": row.get("ok"),
            }
            for row in doc.get("rows", [])
        },
    }


def load_previous(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The previous results.json, or None (and why not, when it exists but is unreadable)."""
    if not path.exists():
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"cannot read the previous {path}: {exc}; starting a new history"
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        return None, f"{path} is not a benchmark result; starting a new history"
    return doc, None


def previous_history(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    if previous is None:
        return []
    history = previous.get("history")
    if isinstance(history, list) and history:
        return [h for h in history if isinstance(h, dict)]
    return [summary(previous)]  # a file written before there was a history


def compare(doc: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Each row against the newest earlier run of the same sizes; > 10% slower is flagged.

    Only rtcp's rows and the proxy's are flagged, and on their ratio to the relay measured in
    the same run (goodput where a run has no relay): on a shared machine the ceilings move by
    several percent between runs, and only a ratio taken side by side says what rtcp did. The
    ceilings' own goodput change is shown and never flagged; it is the yardstick.
    """
    key = (doc["config"]["size_bytes"], doc["config"].get("impaired_size_bytes"))
    baseline = next(
        (
            h
            for h in reversed(history)
            if (h.get("size_bytes"), h.get("impaired_size_bytes")) == key
        ),
        None,
    )
    if baseline is None:
        return None
    rows: dict[str, Any] = {}
    regressions = []
    for row in doc["rows"]:
        old = (baseline.get("rows") or {}).get(row["name"])
        if not old:
            continue
        entry: dict[str, Any] = {}
        for key, new_value, old_value in (
            ("goodput_change", row.get("goodput_bytes_per_s"), old.get("goodput_bytes_per_s")),
            ("ratio_change", row.get("ratio_to_relay"), old.get("ratio_to_relay")),
            ("cpu_change", _cpu_total(row), old.get("cpu_s_per_mb_total")),
        ):
            entry[key] = new_value / old_value - 1.0 if new_value and old_value else None
        change = entry["goodput_change"]
        if row.get("kind") != "ceiling" and entry["ratio_change"] is not None:
            change = entry["ratio_change"]
        entry["change"] = change
        # a ceiling that moved tells how the machine changed, not rtcp: never flagged
        entry["regression"] = (
            row.get("kind") != "ceiling" and change is not None and change < -REGRESSION_THRESHOLD
        )
        if entry["regression"]:
            regressions.append(row["name"])
        rows[row["name"]] = entry
    return {
        "baseline": {
            "timestamp": baseline.get("timestamp"),
            "git_commit": baseline.get("git_commit"),
            "git_dirty": baseline.get("git_dirty"),
        },
        "threshold": REGRESSION_THRESHOLD,
        "rows": rows,
        "regressions": regressions,
    }


def proxy_forwarding(rows: list[dict[str, Any]], relay_name: str) -> dict[str, Any] | None:
    by_name = {r["name"]: r for r in rows}
    proxy = by_name.get("proxy-forward-1400")
    relay = by_name.get(relay_name)
    if not proxy or not relay:
        return None
    p = proxy.get("datagrams_per_s")
    r = relay.get("datagrams_per_s")
    ratio = p / r if p and r else None
    return {
        "proxy_datagrams_per_s": p,
        "relay_datagrams_per_s": r,
        "ratio_to_relay": ratio,
        "target": PROXY_TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= PROXY_TARGET_RATIO,
    }


def finish_document(doc: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Add the comparison and the history (the previous runs plus this one) to a new run."""
    history = previous_history(previous)
    doc["comparison"] = compare(doc, history)
    doc["history"] = (history + [summary(doc)])[-HISTORY_LIMIT:]
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the table


def _num(value: Any, fmt: str, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def _triple(values: dict[str, Any] | None, scale: float, fmt: str, width: int) -> str:
    values = values or {}
    parts = []
    for role in ("sender", "receiver", "proxy"):
        v = values.get(role)
        parts.append(_num(v * scale if v is not None else None, fmt, width))
    return " ".join(parts)


def _change(entry: dict[str, Any] | None) -> str:
    change = (entry or {}).get("change", (entry or {}).get("goodput_change"))
    if change is None:
        return ""
    text = f"{change * 100:+.1f}%"
    return text + (" REGRESSION" if entry.get("regression") else "")


def format_table(doc: dict[str, Any]) -> str:
    cfg = doc["config"]
    git = doc.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (
        " (uncommitted changes)" if git.get("dirty") else ""
    )
    machine = doc.get("machine") or {}
    runs = "1 run" if cfg["repeats"] == 1 else f"median of {cfg['repeats']} runs"
    load = machine.get("loadavg_start")
    load_text = f", load {load[0]:.1f}" if load else ""
    lines = [
        (
            f"rtcp bench  {doc['timestamp']}  commit {commit}  {machine.get('cpus')} CPUs"
            f"{load_text}  files {cfg['size_bytes'] / MB:g} MB, lossy/reordered"
            f" {cfg['impaired_size_bytes'] / MB:g} MB  {runs} per row  ({doc['duration_s']:.0f} s)"
        ),
        (
            "MB = 10^6 bytes.  goodput: file bytes / s from the handshake to the verdict"
            " (ceilings: bytes/s at the sink)."
        ),
        (
            "x relay: goodput / relay-1400, every row (blank when relay-1400 did not run)."
            "  dgram: largest datagram, bytes."
        ),
        (
            "CPU: ms per MB (user+sys, start-up excluded).  RSS: peak, MB.  wire: datagram bytes"
            " on the wire / file bytes.  retx, spur: retransmissions, spurious ones."
        ),
        "",
    ]
    comparison = doc.get("comparison") or {}
    changes = comparison.get("rows") or {}
    header = (
        f"{'row':<30}{'goodput':>9}{'x relay':>8}{'dgram':>7}  {'CPU ms/MB snd rcv prx':>22}  "
        f"{'RSS MB snd rcv prx':>18}  {'wire':>6}{'retx':>7}{'spur':>7}  vs prev"
    )
    lines.append(header)
    lines.append(f"{'':<30}{'MB/s':>9}")
    kind = None
    for row in doc["rows"]:
        if kind is not None and row["kind"] != kind and row["kind"] == "rtcp":
            lines.append("")
        kind = row["kind"]
        name = row["name"]
        if not row.get("ok"):
            name += f" *{row.get('runs_completed', 0)}/{row.get('runs_requested')}"
        if row.get("goodput_bytes_per_s") is None:
            lines.append(f"{name:<30}{'FAILED':>9}")
            continue
        spur = row.get("spurious_retransmissions")
        spur_text = "-" if spur is None else f"{spur:.0f}"
        if spur is not None and row.get("spurious_source") == "estimate":
            spur_text = "~" + spur_text
        rss = {k: (v / MB if v else None) for k, v in (row.get("peak_rss_bytes") or {}).items()}
        lines.append(
            f"{name:<30}"
            f"{_num(row['goodput_bytes_per_s'] / MB, '.2f', 9)}"
            f"{_num(row.get('ratio_to_relay'), '.3f', 8)}"
            f"{_num(row.get('datagram_bytes'), '.0f', 7)}  "
            f"{_triple(row.get('cpu_s_per_mb'), 1e3, '.1f', 7)}  "
            f"{_triple(rss, 1.0, '.0f', 5)} "
            f"{_num(row.get('wire_overhead'), '.3f', 7)}"
            f"{_num(row.get('retransmissions'), '.0f', 7)}"
            f"{spur_text:>7}  {_change(changes.get(row['name']))}"
        )
    lines.append("")
    fwd = doc.get("proxy_forwarding")
    if fwd and fwd.get("ratio_to_relay") is not None:
        verdict = "meets" if fwd["meets_target"] else "BELOW"
        lines.append(
            f"proxy alone: {fwd['proxy_datagrams_per_s']:,.0f} datagrams/s = "
            f"{fwd['ratio_to_relay']:.2f} x the bare relay ({fwd['relay_datagrams_per_s']:,.0f}/s);"
            f" {verdict} the {fwd['target']} target"
        )
    lines += encryption.summary_lines(doc)
    lines += netns.summary_lines(doc["rows"])
    lines += tree_rows.summary_lines(doc["rows"])
    if cfg.get("sender_startup_cpu_s"):
        lines.append(
            f"sender start-up (interpreter, imports, option parsing) costs"
            f" {cfg['sender_startup_cpu_s']:.3f} s CPU per `rtcp send`"
            + (
                f" ({cfg['sender_startup_cpu_encrypted_s']:.3f} s with --psk-file)"
                if cfg.get("sender_startup_cpu_encrypted_s")
                else ""
            )
            + ", not counted above."
        )
    if any(r.get("spurious_source") == "estimate" for r in doc["rows"]):
        lines.append(
            "spur ~N: estimated (the sender does not count them yet): retransmissions minus the"
            " datagrams the proxy dropped upstream."
        )
    if comparison:
        moved = [
            changes[r["name"]]["goodput_change"]
            for r in doc["rows"]
            if r["kind"] == "ceiling" and (changes.get(r["name"]) or {}).get("goodput_change")
        ]
        if moved:
            lines.append(
                f"the ceilings moved by {min(moved) * 100:+.0f}% to {max(moved) * 100:+.0f}% since"
                " the previous run: the machine's own variation (never flagged)"
            )
        base = comparison["baseline"]
        lines.append(
            "vs prev: change of x relay (rtcp rows; goodput for the ceilings) against"
            f" {base.get('timestamp')} "
            f"(commit {(base.get('git_commit') or 'unknown')[:10]}); "
            + (
                f"REGRESSIONS (> {comparison['threshold']:.0%} slower): "
                + ", ".join(comparison["regressions"])
                if comparison["regressions"]
                else f"no row is more than {comparison['threshold']:.0%} slower"
            )
        )
    else:
        lines.append("vs prev: no earlier run with these sizes to compare with")
    for row in doc["rows"]:
        for error in row.get("errors") or []:
            lines.append(f"* {row['name']}: {error}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the chart


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(path: Path, doc: dict[str, Any]) -> bool:
    """A horizontal bar chart of goodput (log scale); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in doc["rows"] if r.get("goodput_bytes_per_s")]
    if not rows:
        return False
    colors = {"ceiling": "#9e9e9e", "proxy": "#f0a030", "rtcp": "#2f6db5"}
    names = [r["name"] for r in rows][::-1]
    values = [r["goodput_bytes_per_s"] / MB for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.4))
    ax.barh(names, values, color=[colors.get(r["kind"], "#555555") for r in rows][::-1])
    ax.set_xscale("log")
    ax.set_xlabel("MB/s (10^6 bytes/s), log scale")
    styles = (("relay-1400", "--"), (doc["config"]["relay_row"], ":"))
    for name, style in dict(styles).items():
        relay = next((r for r in rows if r["name"] == name), None)
        if relay:
            ax.axvline(
                relay["goodput_bytes_per_s"] / MB,
                color="#c03030",
                linestyle=style,
                linewidth=1,
                label=name,
            )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    for y, value in enumerate(values):
        text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
        ax.text(value, y, f" {text}", va="center", fontsize=7)
    commit = ((doc.get("git") or {}).get("commit") or "unknown")[:10]
    ax.set_title(
        f"rtcp bench {doc['timestamp']} ({commit}), files {doc['config']['size_bytes'] / MB:g} MB"
        f" / {doc['config']['impaired_size_bytes'] / MB:g} MB",
        fontsize=9,
    )
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def eprint(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
