"""`rtcp proxy` as a process: the listening line, real traffic, signals, --stats, bad flags."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rtcp.errors import ExitCode, UsageError
from rtcp.proxy.command import build_configs
from rtcp.units import format_hostport, parse_hostport

from .conftest import WAIT_LIMIT_S, EchoServer, client_socket, free_udp_port, wait_until

RTCP = [sys.executable, "-c", "from rtcp.cli import main; main()"]


class ProxyProcess:
    def __init__(self, proc: subprocess.Popen[str], address: tuple[str, int]):
        self.proc = proc
        self.address = address

    def finish(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(signum)
        _, stderr = self.proc.communicate(timeout=WAIT_LIMIT_S)
        return self.proc.returncode, stderr


@contextmanager
def proxy_process(*args: str) -> Iterator[ProxyProcess]:
    proc = subprocess.Popen(
        [*RTCP, "proxy", "--listen", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT_LIMIT_S)
        assert ready, "no 'listening on' line"
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (line, proc.stderr and proc.stderr.read())
        host, port = parse_hostport(line.removeprefix("listening on ").strip())
        assert port != 0
        yield ProxyProcess(proc, (host, port))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(WAIT_LIMIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run_rtcp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RTCP, *args], capture_output=True, text=True, timeout=WAIT_LIMIT_S, check=False
    )


def test_forwards_and_reports_stats_after_sigterm(echo: EchoServer, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    upstream = format_hostport(*echo.address)
    with proxy_process(
        "--upstream", upstream, "--delay-up", "5ms", "--seed", "7", "--stats", str(stats_file)
    ) as proxy:
        sock = client_socket()
        try:
            for i in range(50):
                sock.sendto(b"ping %d" % i, proxy.address)
                assert sock.recv(100) == b"ping %d" % i
        finally:
            sock.close()
        code, stderr = proxy.finish(signal.SIGTERM)
    assert code == ExitCode.OK
    stats = json.loads(stats_file.read_text())
    assert stats["final"] is True
    assert stats["seed"] == 7
    for direction in ("up", "down"):
        d = stats[direction]
        assert d["datagrams_in"] == d["datagrams_out"] == 50
        assert d["bytes_in"] == d["bytes_out"]
        assert set(d["dropped"]) >= {"loss", "queue", "mtu"}
        for key in (
            "reordered",
            "duplicated",
            "corrupted",
            "added_delay_mean_s",
            "added_delay_max_s",
        ):
            assert key in d
    assert stats["up"]["added_delay_mean_s"] == pytest.approx(0.005)
    assert stats["down"]["added_delay_max_s"] == 0.0
    assert "up" in stderr and "down" in stderr  # the final summary
    assert "Traceback" not in stderr


def test_sigint_is_a_clean_exit(echo: EchoServer) -> None:
    with proxy_process("--upstream", format_hostport(*echo.address)) as proxy:
        code, stderr = proxy.finish(signal.SIGINT)
    assert code == ExitCode.OK
    assert "Traceback" not in stderr


def test_stats_file_is_valid_json_while_running(echo: EchoServer, tmp_path: Path) -> None:
    stats_file = tmp_path / "live.json"
    with proxy_process(
        "--upstream", format_hostport(*echo.address), "--stats", str(stats_file)
    ) as proxy:
        sock = client_socket()
        try:
            sock.sendto(b"one", proxy.address)
            assert sock.recv(10) == b"one"
        finally:
            sock.close()

        def rewritten() -> bool:
            stats = json.loads(stats_file.read_text())  # the rename makes every read whole
            return stats["final"] is False and stats["up"]["datagrams_in"] == 1

        assert wait_until(rewritten)
        proxy.finish()


def test_several_senders_share_one_proxy(echo: EchoServer) -> None:
    with proxy_process("--upstream", format_hostport(*echo.address)) as proxy:
        sockets = [client_socket() for _ in range(4)]
        try:
            for n, sock in enumerate(sockets):
                sock.sendto(b"client %d" % n, proxy.address)
            for n, sock in enumerate(sockets):
                assert sock.recv(100) == b"client %d" % n
        finally:
            for sock in sockets:
                sock.close()
        assert len(set(echo.sources)) == 4
        assert proxy.finish()[0] == ExitCode.OK


def test_same_seed_same_losses(echo: EchoServer, tmp_path: Path) -> None:
    echo.echo = False
    stats_file = tmp_path / "stats.json"

    def lost_pattern() -> list[bytes]:
        echo.payloads.clear()
        with proxy_process(
            "--upstream",
            format_hostport(*echo.address),
            "--loss",
            "30%",
            "--seed",
            "42",
            "--stats",
            str(stats_file),
        ) as proxy:
            sock = client_socket()
            try:
                for i in range(100):
                    sock.sendto(b"%d" % i, proxy.address)
            finally:
                sock.close()
            # Loopback delivery is synchronous: all 100 wait in the proxy's buffer, and the
            # proxy drains every ready datagram before it stops.
            assert proxy.finish()[0] == ExitCode.OK
        up = json.loads(stats_file.read_text())["up"]
        assert up["datagrams_in"] == 100
        assert wait_until(lambda: len(echo.payloads) == up["datagrams_out"])
        return list(echo.payloads)

    first = lost_pattern()
    assert 50 < len(first) < 90
    assert lost_pattern() == first


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--loss", "150%"),
        ("--loss-up", "abc"),
        ("--delay", "5 parsecs"),
        ("--rate", "fast"),
        ("--queue", "-3"),
        ("--gemodel", "1%,2%,3%,4%,5%"),
        ("--distribution", "cauchy"),
        ("--seed", "x"),
        ("--mtu", "0"),
        ("--mtu", "27"),
        ("--loss", "1"),
        ("--delay", "10"),
        ("--rate", "-5mbit"),
        ("--rate", "800"),
        ("--idle-timeout", "60"),
        ("--upstream", "nowhere"),
    ],
)
def test_bad_value_is_one_line_and_exit_2(flag: str, value: str) -> None:
    args = ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", flag, value]
    result = run_rtcp(*args)
    assert result.returncode == ExitCode.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rtcp: error: ")
    assert flag in lines[0]
    assert result.stdout == ""


def test_unknown_flag_exits_2_without_traceback() -> None:
    result = run_rtcp("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--bogus")
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr
    missing = run_rtcp("proxy", "--listen", "127.0.0.1:0")
    assert missing.returncode == ExitCode.USAGE
    assert "Traceback" not in missing.stderr


def test_listen_port_in_use_is_a_local_error(echo: EchoServer) -> None:
    result = run_rtcp(
        "proxy", "--listen", format_hostport(*echo.address), "--upstream", "127.0.0.1:9"
    )
    assert result.returncode == ExitCode.LOCAL_IO
    assert result.stderr.strip().count("\n") == 0
    assert "cannot listen" in result.stderr


def test_help_lists_the_flags() -> None:
    result = run_rtcp("proxy", "--help")
    assert result.returncode == 0
    for flag in (
        "--loss-up",
        "--gemodel",
        "--reorder-gap",
        "--distribution",
        "--queue",
        "--mtu",
        "--seed",
        "--stats",
        "--idle-timeout",
    ):
        assert flag in result.stdout


# --- flag parsing, in-process ------------------------------------------------------------


def raw(**flags: tuple[str | None, str | None, str | None]) -> dict[str, tuple[str | None, ...]]:
    from rtcp.proxy.command import _KNOBS

    table: dict[str, tuple[str | None, ...]] = {flag: (None, None, None) for flag in _KNOBS}
    for name, values in flags.items():
        table[name.replace("_", "-")] = values
    return table


def test_per_direction_values_override_both() -> None:
    configs = build_configs(raw(loss=("5%", None, "20%"), delay=(None, "20ms", None)))
    assert configs["up"].loss == pytest.approx(0.05)
    assert configs["down"].loss == pytest.approx(0.2)
    assert configs["up"].delay_s == pytest.approx(0.020)
    assert configs["down"].delay_s == 0.0


def test_queue_counts_datagrams_or_bytes() -> None:
    configs = build_configs(raw(rate=("1mbit", None, None), queue=("50", "64KB", None)))
    assert configs["up"].queue_limit_bytes == 64_000
    assert configs["up"].queue_limit_packets is None
    assert configs["down"].queue_limit_packets == 50
    assert configs["down"].rate_bytes_per_s == pytest.approx(125_000)


def test_gemodel_flag() -> None:
    configs = build_configs(raw(gemodel=("1%,25%", None, None)))
    assert configs["up"].gemodel == pytest.approx((0.01, 0.25, 1.0, 0.0))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"loss": ("5%", None, None), "gemodel": (None, "1%,10%", None)}, "two loss models"),
        ({"reorder": ("10%", None, None)}, "needs --delay"),
        ({"jitter": ("2ms", None, None)}, "--jitter .up. needs --delay"),
        ({"jitter": ("2ms", None, None), "delay": (None, "5ms", None)}, "--jitter .down."),
        ({"reorder_gap": ("0", None, None)}, "--reorder-gap"),
        ({"loss_down": None, "delay": (None, None, "-1ms")}, "--delay-down"),
    ],
)
def test_bad_combinations(flags: dict[str, tuple[str | None, ...] | None], message: str) -> None:
    table = raw(**{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=message):
        build_configs(table)  # type: ignore[arg-type]


def test_free_port_helper_gives_a_closed_port() -> None:
    assert 0 < free_udp_port() < 65536
