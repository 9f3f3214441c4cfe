"""The rows of the benchmark, and the loop that runs each of them --repeats times.

Repeats are interleaved (every row once, then every row again...), so a burst of load from
something else on the machine spreads over the rows instead of sinking one of them; each figure
of a row is the median over its completed runs.
"""

from __future__ import annotations

import fnmatch
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtcp.bench import ceilings, encryption, netns, report
from rtcp.bench.defaults import CONCURRENT_SENDERS, RELAY_DATAGRAM_BYTES
from rtcp.bench.procs import BenchError, rtcp_cli
from rtcp.bench.rtcp_rows import make_file, run_rtcp, startup_cpu_s
from rtcp.errors import RtcpError

RELAY_RTCP_ROW = "relay-rtcp"


def rtcp_datagram_bytes() -> int:
    """The largest datagram rtcp sends where the path allows (its path MTU discovery ceiling).

    On loopback rtcp's discovery reaches it, so this is rtcp's own datagram size on the default
    path (the rtcp rows report the size they reached: datagram_bytes).
    """
    try:
        from rtcp.core.config import DEFAULT_MAX_DATAGRAM_BYTES

        return int(DEFAULT_MAX_DATAGRAM_BYTES)
    except (ImportError, AttributeError, ValueError):
        return RELAY_DATAGRAM_BYTES


@dataclass
class Context:
    workdir: Path
    size: int  # file bytes of the rows without loss or reordering
    impaired_size: int  # file bytes of the rows with loss or reordering (10-400x slower)
    ceiling_seconds: float
    startup_cpu_s: float
    files: dict[str, list[Path]] = field(default_factory=dict)
    encrypted_startup_cpu_s: float | None = None  # measured by the first encrypted row

    def encrypted_startup(self, key: str) -> float:
        """The start-up CPU of a sender with --psk-file (it loads the cryptography library)."""
        if self.encrypted_startup_cpu_s is None:
            self.encrypted_startup_cpu_s = startup_cpu_s(
                self.workdir, rtcp_cli(), send_args=["--psk-file", key]
            )
        return self.encrypted_startup_cpu_s

    def deadline_s(self, size: int) -> float:
        return 30.0 + size / 50e3  # 50 kB/s would be a broken row, not a slow one

    def file_set(self, senders: int, size: int) -> list[Path]:
        """`senders` files of size/senders random bytes each, made once per benchmark."""
        key = f"{senders}x{size}"
        if key not in self.files:
            part = max(1, size // senders)
            paths = []
            for i in range(senders):
                name = f"bench-{size}.bin" if senders == 1 else f"part{i + 1}-{part}.bin"
                paths.append(make_file(self.workdir / name, part))
            self.files[key] = paths
        return self.files[key]


@dataclass
class Row:
    name: str
    kind: str  # "ceiling", "proxy" (the proxy alone) or "rtcp"
    description: str
    params: dict[str, Any]
    run: Callable[[Context], dict[str, Any]]


def _udp_row(name: str, via: str, size: int, description: str, kind: str = "ceiling") -> Row:
    return Row(
        name,
        kind,
        description,
        {"path": via, "datagram_bytes": size},
        lambda ctx: ceilings.run_udp(via, size, ctx.ceiling_seconds),
    )


def _tcp_row(name: str, via_relay: bool, description: str) -> Row:
    return Row(
        name,
        "ceiling",
        description,
        {"path": "relay" if via_relay else "direct"},
        lambda ctx: ceilings.run_tcp(via_relay, ctx.ceiling_seconds),
    )


def _rtcp_row(
    name: str,
    description: str,
    proxy: list[str] | None,
    senders: int = 1,
    impaired: bool = False,
    send_args: list[str] | None = None,
    encrypted: bool = False,
) -> Row:
    def run(ctx: Context) -> dict[str, Any]:
        size = ctx.impaired_size if impaired else ctx.size
        files = ctx.file_set(senders, size)
        extra = [a.replace("{workdir}", str(ctx.workdir)) for a in send_args or []]
        recv_extra: list[str] = []
        startup = ctx.startup_cpu_s
        if encrypted:
            key = _bench_key(ctx.workdir)
            extra += ["--psk-file", key]
            recv_extra += ["--psk-file", key]
            startup = ctx.encrypted_startup(key)
        return run_rtcp(
            files, proxy, ctx.workdir, startup, ctx.deadline_s(size), send_args=extra,
            recv_args=recv_extra,
        )

    params = {"proxy_args": proxy, "senders": senders, "size": "impaired" if impaired else "size"}
    if send_args:
        params["send_args"] = send_args
    if encrypted:
        params["encrypted"] = True
    return Row(name, "rtcp", description, params, run)


def _bench_key(workdir) -> str:
    """The key of the encrypted rows (--psk-file), made once per benchmark's work folder."""
    from rtcp.core import protection

    path = workdir / "bench.key"
    if not path.exists():
        protection.write_key_file(path, protection.generate_key())
    return str(path)


# (name, description, proxy flags, impaired: sends --impaired-size); each condition becomes two
# rows: the default path (rtcp's path MTU discovery goes up to 64 KB on loopback), --mtu 1400
PROXY_CONDITIONS: list[tuple[str, str, list[str], bool]] = [
    ("rtcp-proxy-clean", "through rtcp proxy, no impairment", [], False),
    ("rtcp-delay5ms", "proxy: 5 ms delay each way (10 ms RTT)", ["--delay", "5ms"], False),
    (
        "rtcp-delay5ms-loss1pct",
        "proxy: 5 ms delay + 1% loss",
        ["--delay", "5ms", "--loss", "1%"],
        True,
    ),
    (
        "rtcp-delay5ms-loss5pct",
        "proxy: 5 ms delay + 5% loss",
        ["--delay", "5ms", "--loss", "5%"],
        True,
    ),
    (
        "rtcp-reorder10pct",
        "proxy: 10% reordered (sent at once, the rest 5 ms later)",
        ["--delay", "5ms", "--reorder", "10%"],
        True,
    ),
]


def all_rows() -> list[Row]:
    rows = [
        _udp_row(
            "udp-direct-1400",
            "direct",
            RELAY_DATAGRAM_BYTES,
            "Python UDP blaster -> sink, 1400-byte datagrams",
        ),
        _udp_row(
            "relay-1400",
            "relay",
            RELAY_DATAGRAM_BYTES,
            "blaster -> bare Python UDP relay -> sink, 1400 B"
            + (" (= rtcp's datagram)" if rtcp_datagram_bytes() == RELAY_DATAGRAM_BYTES else ""),
        ),
    ]
    own = rtcp_datagram_bytes()
    if own != RELAY_DATAGRAM_BYTES:
        rows.append(
            _udp_row(
                RELAY_RTCP_ROW,
                "relay",
                own,
                f"bare relay at rtcp's datagram size on loopback, {own} B",
            )
        )
    rows += [
        _tcp_row("tcp-direct", False, "kernel TCP over loopback (sendall/recv_into)"),
        _tcp_row("tcp-relay", True, "kernel TCP through a bare Python TCP relay"),
        _udp_row(
            "proxy-forward-1400",
            "proxy",
            RELAY_DATAGRAM_BYTES,
            "blaster -> rtcp proxy (no impairment) -> sink, 1400 B",
            kind="proxy",
        ),
        _rtcp_row("rtcp-direct", "rtcp send -> rtcp recv, no proxy", None),
        # The cost of tracing: the same transfer with the sender writing a full --trace (with
        # tracing off the core never builds an event, so rtcp-direct is the untraced figure).
        _rtcp_row(
            "rtcp-direct-traced",
            "rtcp-direct with `rtcp send --trace` (tracing on)",
            None,
            send_args=["--trace", "{workdir}/send-trace.jsonl"],
        ),
        # Packet protection (--psk-file: X25519, then AES-256-GCM or ChaCha20-Poly1305) beside
        # the plaintext rows: the cost of encryption is the ratio of each to its plaintext twin
        # in the same run (rtcp/bench/encryption.py).
        _rtcp_row("rtcp-direct-encrypted", "rtcp-direct with --psk-file (encrypted)", None,
                  encrypted=True),
        _rtcp_row("rtcp-proxy-clean-encrypted", "rtcp-proxy-clean with --psk-file (encrypted)",
                  [], encrypted=True),
        _rtcp_row("rtcp-proxy-clean-encrypted-mtu1400",
                  "rtcp-proxy-clean-mtu1400 with --psk-file (encrypted)", ["--mtu", "1400"],
                  encrypted=True),
    ]
    conditions = PROXY_CONDITIONS + [
        (
            f"rtcp-{CONCURRENT_SENDERS}senders",
            f"{CONCURRENT_SENDERS} concurrent rtcp send (size/{CONCURRENT_SENDERS} each), proxy",
            [],
            False,
        )
    ]
    for name, description, flags, impaired in conditions:
        senders = CONCURRENT_SENDERS if name.endswith("senders") else 1
        rows.append(_rtcp_row(name, description, flags, senders, impaired))
        rows.append(
            _rtcp_row(
                f"{name}-mtu1400",
                description + ", --mtu 1400",
                [*flags, "--mtu", "1400"],
                senders,
                impaired,
            )
        )
    return rows + tree_rows() + netns_rows()


def tree_rows() -> list[Row]:
    """Trees of many files (rtcp.bench.tree_rows): rtcp over one connection, and tar piped
    through kernel TCP on loopback as the reference, in the same run."""
    from rtcp.bench import tree_rows as trees

    rows = []
    for key in trees.TREES:
        rows.append(Row(
            f"tree-{key}-rtcp", "rtcp", f"rtcp send DIR: {trees.describe(key)}, one connection",
            {"tree": key},
            lambda ctx, key=key: trees.run_rtcp_tree(key, ctx.workdir, ctx.deadline_s(0) + 60),
        ))
        rows.append(Row(
            f"tree-{key}-tar-tcp", "ceiling",
            f"tar c | kernel TCP on loopback | tar x: {trees.describe(key)}",
            {"tree": key},
            lambda ctx, key=key: trees.run_tar_tcp(key, ctx.workdir, ctx.deadline_s(0) + 60),
        ))
    return rows


def netns_rows() -> list[Row]:
    """Over a veth pair between two namespaces (rtcp.bench.netns), for each link MTU: kernel
    TCP, then rtcp, in the same run; left out (with the reason in the log) where the namespaces
    cannot be made (not root, no `ip`)."""
    if netns.unavailable():
        return []
    rows = []
    for mtu in netns.LINK_MTUS:
        rows.append(Row(
            f"netns-tcp-mtu{mtu}", "ceiling",
            f"kernel TCP over a veth pair between two namespaces, MTU {mtu}",
            {"path": "netns", "link_mtu": mtu},
            lambda ctx, mtu=mtu: netns.run_tcp(mtu, ctx.ceiling_seconds),
        ))
        rows.append(Row(
            f"netns-rtcp-mtu{mtu}", "rtcp",
            f"rtcp send -> rtcp recv over the same veth pair, MTU {mtu}",
            {"path": "netns", "link_mtu": mtu, "size": "size"},
            lambda ctx, mtu=mtu: netns.run_rtcp(
                ctx.file_set(1, ctx.size)[0], mtu, ctx.startup_cpu_s, ctx.deadline_s(ctx.size)
            ),
        ))
    return rows


def relay_row_name() -> str:
    """The ceiling of rtcp on the default path: the relay at rtcp's datagram size."""
    own = rtcp_datagram_bytes()
    return RELAY_RTCP_ROW if own != RELAY_DATAGRAM_BYTES else f"relay-{RELAY_DATAGRAM_BYTES}"


def select_rows(rows: list[Row], patterns: str | None) -> list[Row]:
    """Comma-separated names or shell patterns (rtcp-delay*); empty or "all": every row."""
    if not patterns or patterns.strip() == "all":
        return list(rows)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [r for r in rows if any(fnmatch.fnmatchcase(r.name, p) for p in wanted)]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(r.name, p) for r in rows)]
    if unknown:
        raise ValueError(
            f"no row matches {', '.join(unknown)}; rows: {', '.join(r.name for r in rows)}"
        )
    return chosen


def _median_tree(values: list[Any]) -> Any:
    """Median of numbers, key by key through nested dicts; None when no run had a number."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys: list[str] = []
        for v in present:
            keys += [k for k in v if k not in keys]
        return {k: _median_tree([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return statistics.median(present)
    return present[-1]  # strings and lists: the last run's


def run_rows(
    rows: list[Row],
    ctx: Context,
    repeats: int,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rows}
    rounds: dict[str, list[int]] = {r.name: [] for r in rows}  # the round of each run
    errors: dict[str, list[str]] = {r.name: [] for r in rows}
    total = len(rows) * repeats
    done = 0
    for round_no in range(1, repeats + 1):
        for row in rows:
            done += 1
            started = time.monotonic()
            prefix = f"[{done:>3}/{total}] {row.name:<26} run {round_no}/{repeats}"
            try:
                figures = row.run(ctx)
            except BenchError as exc:
                errors[row.name].append(str(exc))
                log(f"{prefix}  FAILED: {exc}")
                continue
            runs[row.name].append(figures)
            rounds[row.name].append(round_no)
            rate = figures.get("goodput_bytes_per_s") or 0.0
            log(f"{prefix}  {rate / 1e6:9.2f} MB/s  ({time.monotonic() - started:.1f} s)")
    results = []
    for row in rows:
        median = _median_tree(runs[row.name]) or {}
        results.append(
            {
                "name": row.name,
                "kind": row.kind,
                "description": row.description,
                "params": row.params,
                "ok": not errors[row.name] and len(runs[row.name]) == repeats,
                "runs_completed": len(runs[row.name]),
                "runs_requested": repeats,
                "errors": errors[row.name],
                **median,
                "runs": runs[row.name],
                "run_rounds": rounds[row.name],
            }
        )
    _add_ratios(results)
    netns.add_ratios(results)
    return results


def _add_ratios(results: list[dict[str, Any]]) -> None:
    """Every row over relay-1400: the issue's targets are all ratios to the bare relay at
    1400-byte datagrams (the default path must beat it by carrying more per datagram). The
    relay at rtcp's own datagram size stays in the table as a ceiling of its own."""
    by_name = {r["name"]: r for r in results}
    relay = by_name.get(f"relay-{RELAY_DATAGRAM_BYTES}")
    for row in results:
        ceiling = relay.get("goodput_bytes_per_s") if relay else None
        value = row.get("goodput_bytes_per_s")
        row["ratio_to_relay"] = value / ceiling if value and ceiling else None
        row["ratio_basis"] = relay["name"] if relay and ceiling else None


def run_benchmark(
    rows: list[Row],
    size_bytes: int,
    impaired_bytes: int,
    repeats: int,
    ceiling_seconds: float,
    quick: bool = False,
    pattern: str = "all",
) -> dict[str, Any]:
    """Run the rows and return the results document (without comparison and history)."""
    started = time.monotonic()
    doc: dict[str, Any] = {
        "schema": report.SCHEMA,
        "timestamp": report.now_iso(),
        "git": report.git_info(Path(__file__).resolve().parent),
        "machine": report.machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="rtcp-bench-") as tmp:
        startup = 0.0
        if any(r.kind == "rtcp" for r in rows):
            try:
                startup = startup_cpu_s(Path(tmp), rtcp_cli())
            except BenchError as exc:
                raise RtcpError(f"cannot run rtcp: {exc}") from None
        ctx = Context(
            workdir=Path(tmp),
            size=size_bytes,
            impaired_size=impaired_bytes,
            ceiling_seconds=ceiling_seconds,
            startup_cpu_s=startup,
        )
        why_not = netns.unavailable()
        if why_not:
            report.eprint(f"rtcp bench: no rows over network namespaces: {why_not}")
        report.eprint(
            f"rtcp bench: {len(rows)} rows x {repeats} runs, files {size_bytes / 1e6:g} MB"
            f" (with loss or reordering {impaired_bytes / 1e6:g} MB), ceilings"
            f" {ceiling_seconds:g} s each"
        )
        results = run_rows(rows, ctx, repeats, log=report.eprint)
        encrypted_startup = ctx.encrypted_startup_cpu_s
    if hasattr(os, "getloadavg"):
        doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["config"] = {
        "quick": quick,
        "size_bytes": size_bytes,
        "impaired_size_bytes": impaired_bytes,
        "repeats": repeats,
        "rows": pattern,
        "ceiling_seconds": ceiling_seconds,
        "concurrent_senders": CONCURRENT_SENDERS,
        "rtcp_datagram_bytes": rtcp_datagram_bytes(),
        "relay_row": relay_row_name(),
        "relay_window_bytes": ceilings.DEFAULT_WINDOW_BYTES,
        "sender_startup_cpu_s": startup,
        "sender_startup_cpu_encrypted_s": encrypted_startup,
    }
    doc["duration_s"] = time.monotonic() - started
    doc["ok"] = all(r["ok"] for r in results)
    doc["rows"] = results
    doc["proxy_forwarding"] = report.proxy_forwarding(results, f"relay-{RELAY_DATAGRAM_BYTES}")
    doc["encryption"] = encryption.compare(results)
    return doc
