"""The cost of packet protection, stated plainly: each encrypted row against its plaintext twin.

Issue 15's target: encrypted goodput at least 0.8 x the plaintext goodput in the same run on
the default path. The rows run interleaved (every row once per round), so a plaintext run and
the encrypted run of the same round saw the same machine; the ratio is the median of those
per-round ratios, which a burst of load in one round moves less than a ratio of two medians.
The --mtu 1400 pair has no target: it shows the cost per datagram, which the default path's
64 KB datagrams hide.
"""

from __future__ import annotations

import statistics
from typing import Any

ENCRYPTED_TARGET_RATIO = 0.8
MB = 1e6

# (what, plaintext row, encrypted row, whether the 0.8 target applies)
PAIRS = (
    ("default path, direct", "rtcp-direct", "rtcp-direct-encrypted", True),
    ("default path, through the proxy", "rtcp-proxy-clean", "rtcp-proxy-clean-encrypted", True),
    (
        "--mtu 1400, through the proxy",
        "rtcp-proxy-clean-mtu1400",
        "rtcp-proxy-clean-encrypted-mtu1400",
        False,
    ),
)


def _per_round(row: dict[str, Any]) -> dict[int, float]:
    rounds = row.get("run_rounds") or list(range(1, len(row.get("runs") or []) + 1))
    return {
        n: run["goodput_bytes_per_s"]
        for n, run in zip(rounds, row.get("runs") or [])
        if run.get("goodput_bytes_per_s")
    }


def _cpu_ms(row: dict[str, Any]) -> dict[str, float | None]:
    cpu = row.get("cpu_s_per_mb") or {}
    return {
        role: (cpu[role] * 1e3 if isinstance(cpu.get(role), (int, float)) else None)
        for role in ("sender", "receiver", "proxy")
    }


def compare(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The encrypted/plaintext pairs present in this run (None: no pair ran)."""
    by_name = {r["name"]: r for r in rows}
    pairs = []
    for what, plain_name, enc_name, has_target in PAIRS:
        plain, enc = by_name.get(plain_name), by_name.get(enc_name)
        if not plain or not enc:
            continue
        plain_runs, enc_runs = _per_round(plain), _per_round(enc)
        run_ratios = [enc_runs[n] / plain_runs[n] for n in sorted(plain_runs) if n in enc_runs]
        ratio = statistics.median(run_ratios) if run_ratios else None
        target = ENCRYPTED_TARGET_RATIO if has_target else None
        pairs.append(
            {
                "path": what,
                "plaintext_row": plain_name,
                "encrypted_row": enc_name,
                "ratio": ratio,
                "run_ratios": run_ratios,
                "goodput_bytes_per_s": {
                    "plaintext": plain.get("goodput_bytes_per_s"),
                    "encrypted": enc.get("goodput_bytes_per_s"),
                },
                "cpu_ms_per_mb": {"plaintext": _cpu_ms(plain), "encrypted": _cpu_ms(enc)},
                "target": target,
                "meets_target": None if target is None or ratio is None else ratio >= target,
            }
        )
    return {"target": ENCRYPTED_TARGET_RATIO, "pairs": pairs} if pairs else None


def _cpu_text(cpu: dict[str, float | None]) -> str:
    parts = [cpu.get("sender"), cpu.get("receiver")]
    if cpu.get("proxy") is not None:
        parts.append(cpu["proxy"])
    return "/".join("-" if v is None else f"{v:.1f}" for v in parts)


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One line per pair, under the table."""
    found = doc.get("encryption")
    if not found:
        return []
    lines = []
    for pair in found["pairs"]:
        if pair["ratio"] is None:
            lines.append(f"encrypted/plaintext, {pair['path']}: no pair of runs completed")
            continue
        good = pair["goodput_bytes_per_s"]
        cpu = pair["cpu_ms_per_mb"]
        roles = "snd/rcv/prx" if cpu["plaintext"].get("proxy") is not None else "snd/rcv"
        n = len(pair["run_ratios"])
        if pair["target"] is None:
            verdict = "no target (the cost per datagram)"
        else:
            verdict = f"{'meets' if pair['meets_target'] else 'BELOW'} the {pair['target']} target"
        lines.append(
            f"encrypted/plaintext, {pair['path']}: {pair['ratio']:.2f}"
            f" (median of {n} per-run ratio{'s' if n != 1 else ''};"
            f" {good['encrypted'] / MB:.0f} / {good['plaintext'] / MB:.0f} MB/s);"
            f" CPU ms/MB {roles} {_cpu_text(cpu['encrypted'])} vs {_cpu_text(cpu['plaintext'])};"
            f" {verdict}"
        )
    return lines
