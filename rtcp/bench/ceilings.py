"""The ceilings: what bare Python and the kernel move over loopback on this machine, right now.

Each piece runs as its own interpreter (`python -m rtcp.bench.ceilings ROLE ...`), like rtcp's
own sender, proxy and receiver, so the comparison is process for process on the same cores:

udp-sink    counts the datagrams it receives and reports, every --ack-every datagrams, how many
            it got to the blaster (a 8-byte datagram, straight back, not through the relay)
udp-relay   the bare relay: one socket, `recv_into` then `sendto` to the upstream, nothing else
udp-blast   sends datagrams of --size bytes as fast as it can for --seconds, keeping at most
            --window bytes unreported by the sink (the flow control every real sender has:
            without it, the blaster only measures how fast the kernel drops); when no report
            comes for STALL_S, what is outstanding is written off as lost and it carries on
tcp-sink    accepts one connection and `recv_into`s until EOF
tcp-relay   accepts one connection, connects upstream, `recv_into` then `sendall`, until EOF
tcp-blast   connects and `sendall`s for --seconds, then shuts down and waits for EOF

Every piece prints "listening on HOST:PORT" when it has a socket to be reached at, then, at the
end (EOF, or SIGTERM for the UDP ones), one JSON line with its counts, the wall seconds and the
CPU seconds of its data phase (from the first datagram or byte to the last).

The run_* functions at the bottom start the pieces for one measurement and return its figures.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import sys
import time
from typing import Any

from rtcp.bench.procs import BenchError, Child, Processes, role_cli, rtcp_cli
from rtcp.net import udp

MAX_ACK_EVERY = 32  # the sink reports its count every this many datagrams (or fewer)
STALL_S = 0.02  # no report for this long with a full window: the outstanding ones are lost
DEFAULT_WINDOW_BYTES = 2 * 1024 * 1024  # unreported by the sink: half the socket buffers
TCP_CHUNK_BYTES = 256 * 1024
MB = 1e6



# --------------------------------------------------------------------------------------------
# the pieces (child processes)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)




def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def _listening(sock: socket.socket) -> None:
    host, port = sock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)


def _report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def ack_every(datagram_bytes: int, window_bytes: int) -> int:
    """Report often enough that a report always comes well before the window is full."""
    return max(1, min(MAX_ACK_EVERY, window_bytes // datagram_bytes // 8))


def udp_sink(listen: str, every: int) -> None:
    _stop_on_sigterm()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.tune_buffers(sock)
    sock.bind(_hostport(listen))
    _listening(sock)
    buf = bytearray(65536)
    recv_into = sock.recv_into
    sendto = sock.sendto
    clock = time.perf_counter
    cpu = time.process_time
    datagrams = 0
    nbytes = 0
    t_first = t_last = cpu_first = cpu_last = 0.0
    dg_last = bytes_last = first_bytes = 0
    try:
        n = recv_into(buf)
        t_first = t_last = clock()
        cpu_first = cpu_last = cpu()
        ack_to = ("127.0.0.1", int.from_bytes(buf[0:2], "big"))
        datagrams, nbytes, first_bytes = 1, n, n
        dg_last, bytes_last = datagrams, nbytes
        while True:
            n = recv_into(buf)
            datagrams += 1
            nbytes += n
            if not datagrams % every:
                sendto(datagrams.to_bytes(8, "big"), ack_to)
                t_last = clock()
                cpu_last = cpu()
                dg_last, bytes_last = datagrams, nbytes
    except (SystemExit, KeyboardInterrupt):
        pass
    seconds = t_last - t_first
    # the rate over the datagrams after the first, between the first and the last report
    _report(
        role="udp-sink",
        datagrams=datagrams,
        bytes=nbytes,
        seconds=seconds,
        datagrams_per_s=(dg_last - 1) / seconds if seconds > 0 else 0.0,
        bytes_per_s=(bytes_last - first_bytes) / seconds if seconds > 0 else 0.0,
        cpu_s=cpu_last - cpu_first,
        maxrss_bytes=_maxrss_bytes(),
    )


def udp_relay(listen: str, upstream: str) -> None:
    _stop_on_sigterm()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.tune_buffers(sock)
    sock.bind(_hostport(listen))
    _listening(sock)
    up = _hostport(upstream)
    buf = bytearray(65536)
    view = memoryview(buf)
    recv_into = sock.recv_into
    sendto = sock.sendto
    forwarded = 0
    cpu_first = 0.0
    try:
        n = recv_into(buf)
        cpu_first = time.process_time()
        sendto(view[:n], up)
        forwarded = 1
        while True:
            n = recv_into(buf)
            sendto(view[:n], up)
            forwarded += 1
    except (SystemExit, KeyboardInterrupt):
        pass
    _report(
        role="udp-relay",
        datagrams=forwarded,
        cpu_s=time.process_time() - cpu_first if forwarded else 0.0,
        maxrss_bytes=_maxrss_bytes(),
    )


def udp_blast(to: str, size: int, seconds: float, window_bytes: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.tune_buffers(sock)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    payload = bytearray(size)
    payload[0:2] = port.to_bytes(2, "big")
    target = _hostport(to)
    sendto = sock.sendto
    recv_into = sock.recv_into
    ack = bytearray(64)
    dontwait = socket.MSG_DONTWAIT
    clock = time.perf_counter
    sent = reported = written_off = stalls = 0
    window = max(1, window_bytes // size)
    cpu0 = time.process_time()
    t0 = clock()
    deadline = t0 + seconds

    def drain() -> int:
        got = reported
        try:
            while True:
                recv_into(ack, 64, dontwait)
                got = max(got, int.from_bytes(ack[0:8], "big"))
        except BlockingIOError:
            pass
        return got

    while True:
        if sent - reported - written_off < window:
            sendto(payload, target)
            sent += 1
            if sent % 16:
                continue
            reported = drain()
        else:
            ready, _, _ = select.select([sock], [], [], STALL_S)
            if ready:
                reported = drain()
            else:
                written_off = sent - reported
                stalls += 1
        if clock() >= deadline:
            break
    elapsed = clock() - t0
    _report(
        role="udp-blast",
        datagrams=sent,
        bytes=sent * size,
        seconds=elapsed,
        stalls=stalls,
        cpu_s=time.process_time() - cpu0,
        maxrss_bytes=_maxrss_bytes(),
    )


def tcp_sink(listen: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(_hostport(listen))
    server.listen(1)
    _listening(server)
    conn, _ = server.accept()
    server.close()
    buf = bytearray(1024 * 1024)
    recv_into = conn.recv_into
    clock = time.perf_counter
    n = recv_into(buf)
    t_first = t_last = clock()
    cpu0 = time.process_time()
    first = n
    total = n
    while n:
        n = recv_into(buf)
        if n:
            total += n
            t_last = clock()
    cpu_s = time.process_time() - cpu0
    conn.close()
    seconds = t_last - t_first
    _report(
        role="tcp-sink",
        bytes=total,
        seconds=seconds,
        bytes_per_s=(total - first) / seconds if seconds > 0 else 0.0,
        cpu_s=cpu_s,
        maxrss_bytes=_maxrss_bytes(),
    )


def tcp_relay(listen: str, upstream: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(_hostport(listen))
    server.listen(1)
    _listening(server)
    conn, _ = server.accept()
    server.close()
    up = socket.create_connection(_hostport(upstream))
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    recv_into = conn.recv_into
    sendall = up.sendall
    cpu0 = time.process_time()
    total = 0
    n = recv_into(buf)
    while n:
        sendall(view[:n])
        total += n
        n = recv_into(buf)
    cpu_s = time.process_time() - cpu0
    up.shutdown(socket.SHUT_WR)
    while up.recv_into(buf):
        pass
    up.close()
    conn.close()
    _report(role="tcp-relay", bytes=total, cpu_s=cpu_s, maxrss_bytes=_maxrss_bytes())


def tcp_blast(to: str, seconds: float) -> None:
    sock = socket.create_connection(_hostport(to))
    chunk = bytes(TCP_CHUNK_BYTES)
    sendall = sock.sendall
    clock = time.perf_counter
    cpu0 = time.process_time()
    t0 = clock()
    deadline = t0 + seconds
    total = 0
    while clock() < deadline:
        sendall(chunk)
        total += TCP_CHUNK_BYTES
    cpu_s = time.process_time() - cpu0
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):
        pass
    sock.close()
    _report(
        role="tcp-blast",
        bytes=total,
        seconds=clock() - t0,
        cpu_s=cpu_s,
        maxrss_bytes=_maxrss_bytes(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rtcp.bench.ceilings")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("udp-sink")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--ack-every", type=int, default=MAX_ACK_EVERY)
    p = sub.add_parser("udp-relay")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p = sub.add_parser("udp-blast")
    p.add_argument("--to", required=True)
    p.add_argument("--size", type=int, default=1400)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW_BYTES)
    p = sub.add_parser("tcp-sink")
    p.add_argument("--listen", default="127.0.0.1:0")
    p = sub.add_parser("tcp-relay")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p = sub.add_parser("tcp-blast")
    p.add_argument("--to", required=True)
    p.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.role == "udp-sink":
        udp_sink(args.listen, args.ack_every)
    elif args.role == "udp-relay":
        udp_relay(args.listen, args.upstream)
    elif args.role == "udp-blast":
        udp_blast(args.to, args.size, args.seconds, args.window)
    elif args.role == "tcp-sink":
        tcp_sink(args.listen)
    elif args.role == "tcp-relay":
        tcp_relay(args.listen, args.upstream)
    elif args.role == "tcp-blast":
        tcp_blast(args.to, args.seconds)


# --------------------------------------------------------------------------------------------
# the measurements (run in the bench process)


def _result(child: Child, role: str) -> dict[str, Any]:
    data = child.last_json_line()
    if data is None or data.get("role") != role:
        raise BenchError(child.describe_failure("reported nothing"))
    return data


def _per_mb(cpu_s: float | None, nbytes: float) -> float | None:
    if cpu_s is None or nbytes <= 0:
        return None
    return cpu_s / (nbytes / MB)


def run_udp(
    via: str, datagram_bytes: int, seconds: float, window_bytes: int = DEFAULT_WINDOW_BYTES
) -> dict:
    """Blaster -> [bare relay | rtcp proxy | nothing] -> sink; the rate is what the sink got."""
    with Processes() as procs:
        sink = procs.start(
            "udp-sink",
            [
                *role_cli("udp-sink"),
                "--listen",
                "127.0.0.1:0",
                "--ack-every",
                str(ack_every(datagram_bytes, window_bytes)),
            ],
        )
        host, port = sink.wait_listening()
        middle: Child | None = None
        if via == "relay":
            middle = procs.start(
                "udp-relay",
                [*role_cli("udp-relay"), "--listen", "127.0.0.1:0", "--upstream", f"{host}:{port}"],
            )
        elif via == "proxy":
            middle = procs.start(
                "rtcp proxy",
                [
                    *rtcp_cli(),
                    "proxy",
                    "--listen",
                    "127.0.0.1:0",
                    "--upstream",
                    f"{host}:{port}",
                    "--seed",
                    "1",
                ],
            )
        elif via != "direct":
            raise ValueError(f"unknown path {via!r}")
        if middle is not None:
            host, port = middle.wait_listening()
        blast = procs.start(
            "udp-blast",
            [
                *role_cli("udp-blast"),
                "--to",
                f"{host}:{port}",
                "--size",
                str(datagram_bytes),
                "--seconds",
                str(seconds),
                "--window",
                str(window_bytes),
            ],
        )
        if not blast.wait(seconds + 30.0):
            raise BenchError(f"udp-blast did not finish within {seconds + 30.0:.0f} s")
        if blast.returncode != 0:
            raise BenchError(blast.describe_failure("failed"))
        time.sleep(0.1)  # what is still queued reaches the sink
        if middle is not None:
            middle.stop()
        sink.stop()
        b = _result(blast, "udp-blast")
        s = _result(sink, "udp-sink")
        if s["datagrams"] < 2:
            raise BenchError("the udp sink received (almost) nothing")
        delivered = s["bytes"]
        if middle is None:
            relay_cpu = None
            relay_rss = None
        elif via == "relay":
            m = _result(middle, "udp-relay")
            relay_cpu = m["cpu_s"]
            relay_rss = middle.maxrss_bytes
        else:
            relay_cpu = middle.net_cpu_s()
            relay_rss = middle.maxrss_bytes
        if middle is not None and middle.returncode not in (0, -signal.SIGTERM):
            raise BenchError(middle.describe_failure("failed"))
        return {
            "goodput_bytes_per_s": s["bytes_per_s"],
            "datagrams_per_s": s["datagrams_per_s"],
            "datagram_bytes": datagram_bytes,
            "seconds": s["seconds"],
            "delivered_fraction": s["datagrams"] / b["datagrams"] if b["datagrams"] else None,
            "sender_stalls": b["stalls"],
            "cpu_s_per_mb": {
                "sender": _per_mb(b["cpu_s"], delivered),
                "receiver": _per_mb(s["cpu_s"], delivered),
                "proxy": _per_mb(relay_cpu, delivered),
            },
            "peak_rss_bytes": {
                "sender": blast.maxrss_bytes,
                "receiver": sink.maxrss_bytes,
                "proxy": relay_rss,
            },
        }


def run_tcp(via_relay: bool, seconds: float) -> dict:
    """Kernel TCP over loopback, sender -> [bare Python TCP relay] -> sink."""
    with Processes() as procs:
        sink = procs.start("tcp-sink", [*role_cli("tcp-sink"), "--listen", "127.0.0.1:0"])
        host, port = sink.wait_listening()
        relay: Child | None = None
        if via_relay:
            relay = procs.start(
                "tcp-relay",
                [*role_cli("tcp-relay"), "--listen", "127.0.0.1:0", "--upstream", f"{host}:{port}"],
            )
            host, port = relay.wait_listening()
        blast = procs.start(
            "tcp-blast",
            [*role_cli("tcp-blast"), "--to", f"{host}:{port}", "--seconds", str(seconds)],
        )
        for child in (blast, relay, sink):
            if child is None:
                continue
            if not child.wait(seconds + 30.0):
                raise BenchError(f"{child.name} did not finish within {seconds + 30.0:.0f} s")
            if child.returncode != 0:
                raise BenchError(child.describe_failure("failed"))
        b = _result(blast, "tcp-blast")
        s = _result(sink, "tcp-sink")
        r = _result(relay, "tcp-relay") if relay is not None else None
        delivered = s["bytes"]
        return {
            "goodput_bytes_per_s": s["bytes_per_s"],
            "seconds": s["seconds"],
            "cpu_s_per_mb": {
                "sender": _per_mb(b["cpu_s"], delivered),
                "receiver": _per_mb(s["cpu_s"], delivered),
                "proxy": _per_mb(r["cpu_s"], delivered) if r is not None else None,
            },
            "peak_rss_bytes": {
                "sender": blast.maxrss_bytes,
                "receiver": sink.maxrss_bytes,
                "proxy": relay.maxrss_bytes if relay is not None else None,
            },
        }


if __name__ == "__main__":
    main()
