"""Benchmark rows over a real link: two network namespaces joined by a veth pair.

Loopback (MTU 65,536) lets rtcp send 64 KB datagrams that no real network carries; a veth pair
with an Ethernet MTU (1500) or jumbo frames (9000) is what two hosts on one switch see: every
datagram is at most the link's MTU, and the kernel's per-packet costs are paid as on a NIC
(without the wire). Over it, rtcp and kernel TCP move data in the same run, and the table gives
their ratio: rtcp's cost against the reference it imitates, on the same path.

    sender  veth0 (198.18.0.1/24) ==== veth0 (198.18.0.2/24)  receiver

The namespaces are named `rtcpb-<pid>-<n>-snd|rcv`, created for one run and deleted after it,
also when it fails (which removes the veth pair). Needs root and iproute2 (`ip`): where either
is missing the rows are left out of the benchmark, with the reason (unavailable()).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rtcp.bench.procs import BenchError, Processes, role_cli, rtcp_cli

NS_PREFIX = "rtcpb-"
SENDER_ADDR = "198.18.0.1"  # RFC 2544 benchmarking range, only inside the namespaces
RECEIVER_ADDR = "198.18.0.2"
PORT = 9000
LINK_MTUS = (1500, 9000)
IP_COMMAND_TIMEOUT_S = 30.0
MB = 1e6
_counter = itertools.count(1)


def unavailable() -> str | None:
    """Why the namespace rows cannot run here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True,
                       timeout=IP_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise BenchError(f"ip {' '.join(args)}: {str(detail).strip()}") from None


@contextlib.contextmanager
def veth_path(mtu: int) -> Iterator[tuple[str, str]]:
    """(sender namespace, receiver namespace) joined by a veth pair of the given MTU."""
    names = [f"{NS_PREFIX}{os.getpid()}-{next(_counter)}-{role}" for role in ("snd", "rcv")]
    try:
        for ns in names:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        sender, receiver = names
        _ip("-n", sender, "link", "add", "veth0", "mtu", str(mtu), "type", "veth",
            "peer", "name", "veth0", "netns", receiver)
        for ns, addr in ((sender, SENDER_ADDR), (receiver, RECEIVER_ADDR)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "veth0")
            _ip("-n", ns, "link", "set", "dev", "veth0", "mtu", str(mtu), "up")
        yield sender, receiver
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True,
                           timeout=IP_COMMAND_TIMEOUT_S, check=False)


def _in(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]  # ip execs argv: the child's pid is argv's


def frag_creates(ns: str) -> int:
    """IPv4 + IPv6 fragments created in ns (/proc/net/snmp FragCreates, snmp6 Ip6FragCreates)."""
    def read(path: str) -> str:
        return subprocess.run(_in(ns, ["cat", path]), capture_output=True, text=True,
                              timeout=IP_COMMAND_TIMEOUT_S, check=False).stdout

    count = 0
    rows = [line.split() for line in read("/proc/net/snmp").splitlines() if line.startswith("Ip:")]
    if len(rows) >= 2:
        count += int(dict(zip(rows[0], rows[1], strict=False)).get("FragCreates", 0))
    for line in read("/proc/net/snmp6").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "Ip6FragCreates":
            count += int(parts[1])
    return count


def run_rtcp(path: Path, mtu: int, startup_cpu: float, deadline_s: float) -> dict[str, Any]:
    """`rtcp send` -> `rtcp recv` over the veth pair; one run."""
    cli = rtcp_cli()
    size = path.stat().st_size
    with veth_path(mtu) as (sender_ns, receiver_ns), tempfile.TemporaryDirectory(
        prefix="netns-out-"
    ) as out, Processes() as procs:
        recv = procs.start("rtcp recv", _in(receiver_ns, [
            *cli, "recv", "--listen", f"{RECEIVER_ADDR}:{PORT}", "--out", out, "--quiet",
            "--force", "--insecure",  # compared with kernel TCP, which is plaintext too
        ]))
        recv.wait_listening()
        before = frag_creates(sender_ns)
        send = procs.start("rtcp send", _in(sender_ns, [
            *cli, "send", str(path), "--to", f"{RECEIVER_ADDR}:{PORT}", "--json", "--quiet",
        ]))
        if not send.wait(deadline_s):
            raise BenchError(f"rtcp send did not finish within {deadline_s:.0f} s")
        result = send.last_json_line()
        if send.returncode != 0 or result is None or not result.get("verified"):
            why = (result or {}).get("error") or "no verdict"
            raise BenchError(send.describe_failure(f"failed: {why}"))
        fragments = frag_creates(sender_ns) - before
        recv.stop()
        stats = result.get("stats") or {}
        seconds = float(result["seconds"])
        return {
            "goodput_bytes_per_s": size / seconds if seconds > 0 else None,
            "seconds": seconds,
            "file_bytes": size,
            "cpu_s_per_mb": {
                "sender": max(0.0, (send.cpu_s or 0.0) - startup_cpu) / (size / MB),
                "receiver": (recv.net_cpu_s() or 0.0) / (size / MB),
                "proxy": None,
            },
            "peak_rss_bytes": {"sender": send.maxrss_bytes, "receiver": recv.maxrss_bytes,
                               "proxy": None},
            "wire_overhead": (stats.get("bytes_sent", 0) + stats.get("bytes_received", 0)) / size,
            "retransmissions": int(result.get("retransmissions") or 0),
            "spurious_retransmissions": stats.get("spurious_retransmissions"),
            "spurious_source": "sender",
            "datagram_bytes": stats.get("datagram_bytes"),
            "ip_fragments": fragments,
            "link_mtu": mtu,
        }


def run_tcp(mtu: int, seconds: float) -> dict[str, Any]:
    """Kernel TCP, blaster -> sink (rtcp.bench.ceilings), over the same kind of veth pair."""
    with veth_path(mtu) as (sender_ns, receiver_ns), Processes() as procs:
        sink = procs.start("tcp-sink", _in(receiver_ns, [
            *role_cli("tcp-sink"), "--listen", f"{RECEIVER_ADDR}:{PORT}",
        ]))
        sink.wait_listening()
        blast = procs.start("tcp-blast", _in(sender_ns, [
            *role_cli("tcp-blast"), "--to", f"{RECEIVER_ADDR}:{PORT}", "--seconds", str(seconds),
        ]))
        for child in (blast, sink):
            if not child.wait(seconds + 30.0):
                raise BenchError(f"{child.name} did not finish within {seconds + 30.0:.0f} s")
            if child.returncode != 0:
                raise BenchError(child.describe_failure("failed"))
        s = sink.last_json_line() or {}
        b = blast.last_json_line() or {}
        delivered = s.get("bytes") or 0
        if not delivered:
            raise BenchError("tcp-sink received nothing")
        return {
            "goodput_bytes_per_s": s.get("bytes_per_s"),
            "seconds": s.get("seconds"),
            "cpu_s_per_mb": {
                "sender": (b.get("cpu_s") or 0.0) / (delivered / MB),
                "receiver": (s.get("cpu_s") or 0.0) / (delivered / MB),
                "proxy": None,
            },
            "peak_rss_bytes": {"sender": blast.maxrss_bytes, "receiver": sink.maxrss_bytes,
                               "proxy": None},
            "link_mtu": mtu,
        }


def add_ratios(results: list[dict[str, Any]]) -> None:
    """netns-rtcp-mtuN rows: goodput over netns-tcp-mtuN's, measured in the same run."""
    by_name = {r["name"]: r for r in results}
    for row in results:
        if not row["name"].startswith("netns-rtcp-"):
            continue
        tcp = by_name.get(row["name"].replace("netns-rtcp-", "netns-tcp-", 1))
        mine, ref = row.get("goodput_bytes_per_s"), (tcp or {}).get("goodput_bytes_per_s")
        row["ratio_to_kernel_tcp"] = mine / ref if mine and ref else None


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per link MTU: rtcp against kernel TCP over the same veth."""
    lines = []
    by_name = {r["name"]: r for r in rows}
    for mtu in LINK_MTUS:
        mine = by_name.get(f"netns-rtcp-mtu{mtu}") or {}
        tcp = by_name.get(f"netns-tcp-mtu{mtu}") or {}
        ratio = mine.get("ratio_to_kernel_tcp")
        if ratio is None:
            continue
        lines.append(
            f"veth MTU {mtu}: rtcp {mine['goodput_bytes_per_s'] / MB:.1f} MB/s in"
            f" {mine.get('datagram_bytes')}-byte datagrams = {ratio:.3f} x kernel TCP"
            f" ({tcp['goodput_bytes_per_s'] / MB:.1f} MB/s) on the same link;"
            f" {mine.get('ip_fragments')} IP fragments"
        )
    return lines
