"""Forwarding cost of `rtcp proxy` against a bare recvfrom/sendto relay (not a pytest test).

    .venv/bin/python tests/proxy/bench_forwarding.py [COUNT] [SIZE] [-- proxy flags...]

A sender blasts COUNT datagrams of SIZE bytes through the relay to a sink. The score is
datagrams delivered per CPU-second of the relay process, which stays meaningful on a small
machine where sender, relay and sink share cores (wall-clock rates there mostly measure the
scheduler). On Linux the relay is pinned to CPU 1 and the rest to CPU 0 when there are two.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

import psutil

ROUNDS = 5
SOCKET_BUFFER_BYTES = 4 << 20
QUIET_S = 1.0

BARE_RELAY = r"""
import socket, sys
listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
listen.bind(("127.0.0.1", 0))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
target = ("127.0.0.1", int(sys.argv[1]))
print("listening on 127.0.0.1:%d" % listen.getsockname()[1], flush=True)
while True:
    data, _ = listen.recvfrom(65535)
    out.sendto(data, target)
"""

SENDER = r"""
import socket, sys
port, count, size = map(int, sys.argv[1:4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
data, target = b"x" * size, ("127.0.0.1", port)
for _ in range(count):
    sock.sendto(data, target)
"""


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if sys.platform == "linux" and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def one_run(kind: str, count: int, size: int, proxy_flags: list[str]) -> float:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(QUIET_S)
    sink_port = sink.getsockname()[1]
    if kind == "bare":
        argv = [sys.executable, "-c", BARE_RELAY, str(sink_port)]
    else:
        argv = [
            sys.executable,
            "-c",
            "from rtcp.cli import main; main()",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            f"127.0.0.1:{sink_port}",
            *proxy_flags,
        ]
    relay = subprocess.Popen(
        pinned(1, argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert relay.stdout is not None
        port = int(relay.stdout.readline().rsplit(":", 1)[1])
        cpu = psutil.Process(relay.pid)
        cpu_before = sum(cpu.cpu_times()[:2])
        sender = subprocess.Popen(
            pinned(0, [sys.executable, "-c", SENDER, str(port), str(count), str(size)])
        )
        got, first, last = 0, 0.0, 0.0
        try:
            while True:
                sink.recv(65535)
                last = time.monotonic()
                first = first or last
                got += 1
        except TimeoutError:
            pass
        sender.wait()
        cpu_s = sum(cpu.cpu_times()[:2]) - cpu_before
    finally:
        relay.terminate()
        relay.wait()
        sink.close()
    score = got / cpu_s if cpu_s else 0.0
    wall = (got - 1) / (last - first) if got > 1 and last > first else 0.0
    print(
        f"{kind:5s} delivered {got}/{count}, {wall:,.0f}/s wall, "
        f"{cpu_s:.2f} s relay CPU -> {score:,.0f} datagrams per CPU-second"
    )
    return score


def main() -> None:
    args = sys.argv[1:]
    proxy_flags = args[args.index("--") + 1 :] if "--" in args else []
    numbers = args[: args.index("--")] if "--" in args else args
    count = int(numbers[0]) if numbers else 300_000
    size = int(numbers[1]) if len(numbers) > 1 else 100
    if sys.platform == "linux" and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    scores: dict[str, list[float]] = {"bare": [], "proxy": []}
    for _ in range(ROUNDS):
        for kind, runs in scores.items():
            runs.append(one_run(kind, count, size, proxy_flags))
    bare, proxy = (statistics.median(scores[k]) for k in ("bare", "proxy"))
    print(f"median: bare {bare:,.0f}, proxy {proxy:,.0f} per CPU-second; ratio {proxy / bare:.2f}")


if __name__ == "__main__":
    main()
