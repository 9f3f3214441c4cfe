"""One rtcp run: `rtcp recv`, optionally `rtcp proxy`, then one or more `rtcp send` at once.

Figures of a run:
- goodput: file bytes / wall seconds, from the first sender's start of the transfer (before the
  handshake) to the last verdict. A sender's "seconds" (its --json) covers exactly that; with
  several senders, each one's start is its exit time minus its seconds.
- CPU seconds (user + system) from wait4 at exit: the receiver's and the proxy's minus what they
  had spent when they printed "listening on" (interpreter start-up); the sender's minus the CPU
  of an `rtcp send` of a missing file (start-up: interpreter, imports, option parsing),
  measured once per benchmark.
- peak RSS of each process (whole life, from wait4).
- wire overhead: datagram bytes the endpoints put on the wire (both directions, counted by the
  proxy before any impairment; direct: the sender's bytes_sent + bytes_received) / file bytes.
- retransmissions (sender's --json) and spurious retransmissions: the sender's own count when it
  reports one, else estimated through the proxy as retransmissions minus the datagrams the proxy
  dropped on the way up (each drop costs exactly one more send; what is left was not needed).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rtcp.bench.procs import BenchError, Child, Processes, rtcp_cli

MB = 1e6
FILE_CHUNK_BYTES = 1 << 20


def make_file(path: Path, size: int) -> Path:
    """Random bytes (incompressible, like most files worth sending)."""
    if path.exists() and path.stat().st_size == size:
        return path
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            n = min(left, FILE_CHUNK_BYTES)
            handle.write(os.urandom(n))
            left -= n
    return path


def startup_cpu_s(
    workdir: Path, cli: list[str] | None = None, runs: int = 5, send_args: list[str] | None = None
) -> float:
    """CPU seconds of an `rtcp send` that ends before any work: the file does not exist.

    That is the interpreter, every import and the option parsing: the fixed cost of starting a
    sender, subtracted from each sender's CPU so that CPU per MB is the transfer's own.
    send_args: the row's flags (--psk-file adds loading the cryptography library).
    """
    cli = cli or rtcp_cli()
    missing = workdir / "does-not-exist.bin"
    samples = []
    with Processes() as procs:
        for i in range(runs):
            child = procs.start(
                f"rtcp send (start-up) #{i + 1}",
                [*cli, "send", str(missing), "--to", "127.0.0.1:9", "--json", "--quiet",
                 *(send_args or [])],
            )
            if not child.wait(30.0) or child.cpu_s is None:
                raise BenchError(f"{child.name} did not finish within 30 s")
            if child.returncode == 0:
                raise BenchError(f"{child.name}: sending a missing file succeeded")
            samples.append(child.cpu_s)
    return statistics.median(samples)


def _proxy_drops_up(stats: dict[str, Any]) -> int:
    dropped = stats.get("up", {}).get("dropped", {})
    return int(sum(v for v in dropped.values() if isinstance(v, (int, float))))


def _sum_dropped(stats: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for direction in ("up", "down"):
        for cause, n in stats.get(direction, {}).get("dropped", {}).items():
            total[cause] = total.get(cause, 0) + int(n)
    return total


def _spurious(result: dict[str, Any]) -> int | None:
    for source in (result, result.get("stats") or {}):
        value = source.get("spurious_retransmissions")
        if value is not None:
            return int(value)
    return None


def run_rtcp(
    files: list[Path],
    proxy_args: list[str] | None,
    workdir: Path,
    startup_cpu: float,
    deadline_s: float,
    cli: list[str] | None = None,
    send_args: list[str] | None = None,
    recv_args: list[str] | None = None,
) -> dict[str, Any]:
    """Send every file at once (one `rtcp send` each) through the proxy or direct; one run.
    send_args / recv_args: extra `rtcp send` / `rtcp recv` flags (the traced row adds --trace,
    the encrypted rows --psk-file)."""
    cli = cli or rtcp_cli()
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    out_dir = run_dir / "out"
    stats_path = run_dir / "proxy-stats.json"
    total_bytes = sum(f.stat().st_size for f in files)
    try:
        with Processes() as procs:
            recv = procs.start(
                "rtcp recv",
                [
                    *cli,
                    "recv",
                    "--listen",
                    "127.0.0.1:0",
                    "--out",
                    str(out_dir),
                    "--quiet",
                    "--force",
                    *(recv_args or []),
                ],
            )
            host, port = recv.wait_listening()
            proxy: Child | None = None
            if proxy_args is not None:
                proxy = procs.start(
                    "rtcp proxy",
                    [
                        *cli,
                        "proxy",
                        "--listen",
                        "127.0.0.1:0",
                        "--upstream",
                        f"{host}:{port}",
                        "--stats",
                        str(stats_path),
                        "--seed",
                        "1",
                        *proxy_args,
                    ],
                )
                host, port = proxy.wait_listening()
            senders = [
                procs.start(
                    f"rtcp send #{i + 1}" if len(files) > 1 else "rtcp send",
                    [*cli, "send", str(path), "--to", f"{host}:{port}", "--json", "--quiet",
                     *(send_args or [])],
                )
                for i, path in enumerate(files)
            ]
            end_by = time.monotonic() + deadline_s
            for sender in senders:
                if not sender.wait(max(0.0, end_by - time.monotonic())):
                    raise BenchError(f"{sender.name} did not finish within {deadline_s:.0f} s")
            results = []
            for sender in senders:
                result = sender.last_json_line()
                if sender.returncode != 0 or result is None or not result.get("verified"):
                    why = (result or {}).get("error") or "no verdict"
                    raise BenchError(sender.describe_failure(f"failed: {why}"))
                if not isinstance(result.get("seconds"), (int, float)) or result["seconds"] <= 0:
                    raise BenchError(f"{sender.name}: no transfer time in its --json output")
                results.append(result)
            proxy_stats: dict[str, Any] | None = None
            if proxy is not None:
                proxy.stop()  # SIGTERM: the proxy writes its final stats and exits 0
                if proxy.returncode != 0:
                    raise BenchError(proxy.describe_failure("did not stop cleanly"))
                try:
                    proxy_stats = json.loads(stats_path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise BenchError(f"cannot read the proxy's --stats file: {exc}") from None
            recv.stop()
            if recv.returncode != 0:
                raise BenchError(recv.describe_failure("did not stop cleanly"))
    finally:
        _remove_tree(run_dir)

    starts = [s.exited_at - r["seconds"] for s, r in zip(senders, results)]  # type: ignore[operator]
    ends = [s.exited_at for s in senders]
    if len(senders) == 1:
        wall = float(results[0]["seconds"])
    else:
        wall = max(ends) - min(starts)  # type: ignore[type-var]
    sender_cpu = [max(0.0, (s.cpu_s or 0.0) - startup_cpu) for s in senders]
    retransmissions = sum(int(r.get("retransmissions") or 0) for r in results)
    spurious_values = [_spurious(r) for r in results]
    spurious: int | None
    spurious_source: str | None
    if all(v is not None for v in spurious_values):
        spurious = sum(v for v in spurious_values if v is not None)
        spurious_source = "sender"
    elif proxy_stats is not None:
        spurious = max(0, retransmissions - _proxy_drops_up(proxy_stats))
        spurious_source = "estimate"
    else:
        spurious, spurious_source = None, None
    if proxy_stats is not None:
        wire_bytes = proxy_stats["up"]["bytes_in"] + proxy_stats["down"]["bytes_in"]
    else:
        wire_bytes = sum(
            int((r.get("stats") or {}).get("bytes_sent", 0))
            + int((r.get("stats") or {}).get("bytes_received", 0))
            for r in results
        )
    reached = [(r.get("stats") or {}).get("datagram_bytes") for r in results]
    segs = sum(int((r.get("stats") or {}).get("segments_sent", 0)) for r in results)
    sent = sum(int((r.get("stats") or {}).get("bytes_sent", 0)) for r in results)
    mb = total_bytes / MB
    return {
        "goodput_bytes_per_s": total_bytes / wall if wall > 0 else None,
        "seconds": wall,
        "file_bytes": total_bytes,
        "cpu_s_per_mb": {
            "sender": sum(sender_cpu) / mb,
            "receiver": recv.net_cpu_s() / mb if recv.net_cpu_s() is not None else None,
            "proxy": (proxy.net_cpu_s() or 0.0) / mb if proxy is not None else None,
        },
        "peak_rss_bytes": {
            "sender": max((s.maxrss_bytes or 0) for s in senders) or None,
            "receiver": recv.maxrss_bytes,
            "proxy": proxy.maxrss_bytes if proxy is not None else None,
        },
        "wire_overhead": wire_bytes / total_bytes if wire_bytes and total_bytes else None,
        "retransmissions": retransmissions,
        "spurious_retransmissions": spurious,
        "spurious_source": spurious_source,
        "sender_datagram_bytes_mean": sent / segs if segs else None,
        # the largest datagram the sender's path MTU discovery reached (None: not reported)
        "datagram_bytes": min(int(v) for v in reached) if all(reached) else None,
        "rtt_ms": statistics.median([float(r["rtt_ms"]) for r in results if r.get("rtt_ms")])
        if any(r.get("rtt_ms") for r in results)
        else None,
        "proxy_dropped": _sum_dropped(proxy_stats) if proxy_stats is not None else None,
        "startup_cpu_s": startup_cpu,
        "sender_cpu_s_raw": sum(s.cpu_s or 0.0 for s in senders),  # start-up included
        "sender_process_wall_s": max(
            (s.exited_at or 0.0) - s.started_at
            for s in senders  # start-up included
        ),
    }


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
