"""What the proxy tells its user: the stats JSON file, the live status line, the final summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, then rename: a reader never sees half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _count(n: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(int(n))


def _direction_brief(name: str, d: dict[str, Any]) -> str:
    dropped = d["dropped"]
    parts = [f"{name} {_count(d['datagrams_in'])} in {_count(d['datagrams_out'])} out"]
    causes = [f"{cause} {_count(n)}" for cause, n in dropped.items() if n]
    if causes:
        parts.append("drop " + " ".join(causes))
    for key in ("reordered", "duplicated", "corrupted", "send_errors"):
        if d[key]:
            parts.append(f"{key.replace('_', ' ')} {_count(d[key])}")
    if d["added_delay_max_s"]:
        parts.append(f"delay {d['added_delay_mean_s'] * 1e3:.1f}ms")
    return ", ".join(parts)


def status_line(snapshot: dict[str, Any]) -> str:
    """One short line for a terminal, rewritten in place."""
    return (
        f"{snapshot['elapsed_s']:.0f}s {snapshot['clients_active']} clients | "
        f"{_direction_brief('up', snapshot['up'])} | {_direction_brief('down', snapshot['down'])}"
    )


def summary(snapshot: dict[str, Any]) -> str:
    """The multi-line report printed at exit."""
    header = (
        f"rtcp proxy: {snapshot['listen']} -> {snapshot['upstream']}, "
        f"{snapshot['elapsed_s']:.1f} s, seed {snapshot.get('seed')}, "
        f"{snapshot['clients_total']} clients ({snapshot['clients_rejected']} rejected)"
    )
    lines = [header]
    for name in ("up", "down"):
        d = snapshot[name]
        dropped = ", ".join(f"{cause} {n}" for cause, n in d["dropped"].items())
        lines.append(
            f"  {name + ':':<5} in {d['datagrams_in']} ({d['bytes_in']} B), "
            f"out {d['datagrams_out']} ({d['bytes_out']} B); dropped: {dropped}"
        )
        lines.append(
            f"        reordered {d['reordered']}, duplicated {d['duplicated']}, "
            f"corrupted {d['corrupted']}, send errors {d['send_errors']}; added delay "
            f"mean {d['added_delay_mean_s'] * 1e3:.3f} ms, max {d['added_delay_max_s'] * 1e3:.3f} ms"
        )
    changes = snapshot.get("changes_total", 0)
    errors = snapshot.get("change_errors", 0)
    scenario = snapshot.get("scenario")
    if changes or errors or scenario:
        line = f"  changes: {changes} applied"
        if errors:
            line += f", {errors} refused"
        if scenario:
            name = scenario["name"] or scenario["file"]
            line += f"; scenario {name!r}: {scenario['steps_applied']} steps applied"
        lines.append(line)
    return "\n".join(lines)
