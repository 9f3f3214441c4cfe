"""Rows for trees of many files: `rtcp send DIR` (one connection, format version 2) beside
`tar c DIR | kernel TCP on loopback | tar x`, in the same run.

Figures: goodput (file bytes / seconds) and files per second. rtcp: the sender's --json
seconds (from before the handshake to the last verdict). tar: from the start of `tar c` to the
exit of `tar x` (both processes' start-up included: a small bias in tar's disfavour, stated).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rtcp.bench.procs import BenchError, Processes, rtcp_cli
from rtcp.bench.rtcp_rows import make_file

COPY_CHUNK_BYTES = 256 * 1024
TREES = {  # row suffix: (files, bytes each)
    "2000x4KiB": (2000, 4 * 1024),
    "20x4MiB": (20, 4 * 1024 * 1024),
}


def make_tree(workdir: Path, key: str) -> Path:
    """The tree of a row, made once per benchmark: workdir/tree-KEY/files/fNNNN.bin."""
    count, size = TREES[key]
    root = workdir / f"tree-{key}" / "files"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_file(root / f"f{i:04}.bin", size)
    return root


def _figures(files: int, nbytes: int, seconds: float) -> dict[str, Any]:
    return {
        "goodput_bytes_per_s": nbytes / seconds if seconds > 0 else None,
        "files_per_s": files / seconds if seconds > 0 else None,
        "seconds": seconds,
        "file_bytes": nbytes,
        "files": files,
    }


def run_rtcp_tree(key: str, workdir: Path, deadline_s: float) -> dict[str, Any]:
    tree = make_tree(workdir, key)
    count, size = TREES[key]
    cli = rtcp_cli()
    run_dir = Path(tempfile.mkdtemp(prefix="tree-run-", dir=workdir))
    try:
        with Processes() as procs:
            recv = procs.start(
                "rtcp recv",
                [*cli, "recv", "--listen", "127.0.0.1:0", "--out", str(run_dir), "--quiet"],
            )
            host, port = recv.wait_listening()
            sender = procs.start(
                "rtcp send (tree)",
                [*cli, "send", str(tree), "--to", f"{host}:{port}", "--json", "--quiet"],
            )
            if not sender.wait(deadline_s):
                raise BenchError(f"{sender.name} did not finish within {deadline_s:.0f} s")
            result = sender.last_json_line()
            if sender.returncode != 0 or result is None or not result.get("verified"):
                why = (result or {}).get("error") or "no verdict"
                raise BenchError(sender.describe_failure(f"failed: {why}"))
            recv.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    figures = _figures(count, count * size, float(result["seconds"]))
    figures["retransmissions"] = result.get("retransmissions")
    return figures


def run_tar_tcp(key: str, workdir: Path, deadline_s: float) -> dict[str, Any]:
    """tar c | kernel TCP on loopback | tar x, the reference for the tree rows."""
    tree = make_tree(workdir, key)
    count, size = TREES[key]
    if shutil.which("tar") is None:
        raise BenchError("tar is not installed")
    run_dir = Path(tempfile.mkdtemp(prefix="tar-run-", dir=workdir))
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[str] = []

    def receive() -> None:
        conn, _ = listener.accept()
        with conn, subprocess.Popen(["tar", "x", "-C", str(run_dir)], stdin=subprocess.PIPE) as x:
            while data := conn.recv(COPY_CHUNK_BYTES):
                x.stdin.write(data)
            x.stdin.close()
            if x.wait() != 0:
                errors.append(f"tar x exited {x.returncode}")

    started = time.monotonic()
    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname()) as out, subprocess.Popen(
            ["tar", "c", "-C", str(tree.parent), tree.name], stdout=subprocess.PIPE
        ) as c:
            while data := c.stdout.read(COPY_CHUNK_BYTES):
                out.sendall(data)
            out.shutdown(socket.SHUT_WR)
        thread.join(deadline_s)
        seconds = time.monotonic() - started
        if thread.is_alive():
            raise BenchError(f"tar over TCP did not finish within {deadline_s:.0f} s")
        if errors:
            raise BenchError(errors[0])
        got = sum(1 for p in (run_dir / tree.name).iterdir())
        if got != count:
            raise BenchError(f"tar over TCP delivered {got} of {count} files")
    finally:
        listener.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return _figures(count, count * size, seconds)


def describe(key: str) -> str:
    count, size = TREES[key]
    return f"{count} files of {size // 1024} KiB"



def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per tree measured: files per second and MB/s of rtcp and of tar over kernel
    TCP, and their ratio (the table's goodput column shows MB/s only)."""
    by_name = {r["name"]: r for r in rows}
    lines = []
    for key in TREES:
        measured = []
        for label, name in (("rtcp", f"tree-{key}-rtcp"), ("tar over TCP", f"tree-{key}-tar-tcp")):
            row = by_name.get(name) or {}
            if row.get("files_per_s"):
                measured.append((label, row))
        if not measured:
            continue
        text = ", ".join(
            f"{label} {row['files_per_s']:,.0f} files/s ({row['goodput_bytes_per_s'] / 1e6:.2f}"
            " MB/s)"
            for label, row in measured
        )
        if len(measured) == 2:
            text += f" = {measured[0][1]['files_per_s'] / measured[1][1]['files_per_s']:.2f} x tar"
        lines.append(f"tree of {describe(key)}: {text}")
    return lines
