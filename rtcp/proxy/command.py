"""`rtcp proxy`: parse the flags into two ImpairConfigs, run the loop, report at exit.

Every value option is taken as a string and parsed here with rtcp.units, so a bad value is
one `rtcp: error: --flag: ...` line and exit code 2, never a traceback or a help box.

Every `rtcp` start imports this module to register the command, so it imports at the top only
what the options need; the impairments, the loop and the control API (an HTTP server) are
imported when the proxy runs, the last only with --control.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rtcp.errors import LocalIOError, UsageError
from rtcp.proxy.defaults import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_CLIENTS
from rtcp.units import (
    format_hostport,
    parse_count,
    parse_duration,
    parse_hostport,
    parse_probability,
    parse_rate,
    parse_size,
    with_flag,
)

if TYPE_CHECKING:
    from rtcp.proxy.impair import ImpairConfig
    from rtcp.proxy.loop import Proxy
    from rtcp.proxy.scenario import Scenario

_PANEL_IMPAIR = "Impairments (both directions)"
_PANEL_DIRECTION = "Per direction (up = client->upstream, down = upstream->client)"
_PANEL_RUN = "Running"
_PANEL_LIVE = "Changes while running (docs/proxy.md)"
MAX_GEMODEL_VALUES = 4


def _both(flag: str, metavar: str, help: str) -> Any:
    return typer.Option(
        None, f"--{flag}", metavar=metavar, help=help, rich_help_panel=_PANEL_IMPAIR
    )


def _one(flag: str, direction: str, metavar: str) -> Any:
    return typer.Option(
        None,
        f"--{flag}-{direction}",
        metavar=metavar,
        help=f"--{flag}, {direction} only.",
        rich_help_panel=_PANEL_DIRECTION,
    )


def _parse_gemodel(value: str) -> tuple[float, ...]:
    parts = value.split(",")
    if not 1 <= len(parts) <= MAX_GEMODEL_VALUES or not all(p.strip() for p in parts):
        raise UsageError(f"invalid gemodel {value!r}: expected p,r[,1-h[,1-k]]")
    return tuple(parse_probability(part) for part in parts)


def _parse_queue(value: str) -> dict[str, int | None]:
    """A bare integer counts datagrams; a size with a unit (64KB) counts bytes."""
    text = value.strip()
    if re.fullmatch(r"[0-9]+", text):
        packets = int(text)
        if packets < 1:
            raise UsageError(f"invalid queue {value!r}: must hold at least 1 datagram")
        return {"queue_limit_packets": packets, "queue_limit_bytes": None}
    size = parse_size(text)
    if size < 1:
        raise UsageError(f"invalid queue {value!r}: must hold at least 1 byte")
    return {"queue_limit_packets": None, "queue_limit_bytes": size}


def _parse_distribution(value: str) -> str:
    from rtcp.proxy.impair import DISTRIBUTIONS

    name = value.strip().lower()
    if name not in DISTRIBUTIONS:
        raise UsageError(f"invalid distribution {value!r}: use one of {', '.join(DISTRIBUTIONS)}")
    return name


def _parse_mtu(value: str) -> int:
    from rtcp.core.wire import HEADER_BYTES

    size = parse_size(value)
    if size < HEADER_BYTES:
        raise UsageError(
            f"invalid MTU {value!r}: below rtcp's {HEADER_BYTES}-byte header, "
            "every datagram would be dropped"
        )
    return size


# flag name -> (parser, ImpairConfig field); queue maps to two fields, handled apart.
_KNOBS: dict[str, tuple[Any, str | None]] = {
    "loss": (parse_probability, "loss"),
    "loss-correlation": (parse_probability, "loss_correlation"),
    "gemodel": (_parse_gemodel, "gemodel"),
    "reorder": (parse_probability, "reorder"),
    "reorder-gap": (lambda v: parse_count(v, 1), "reorder_gap"),
    "reorder-delay": (parse_duration, "reorder_delay_s"),
    "duplicate": (parse_probability, "duplicate"),
    "corrupt": (parse_probability, "corrupt"),
    "delay": (parse_duration, "delay_s"),
    "jitter": (parse_duration, "jitter_s"),
    "distribution": (_parse_distribution, "distribution"),
    "rate": (parse_rate, "rate_bytes_per_s"),
    "queue": (_parse_queue, None),
    "mtu": (_parse_mtu, "mtu_bytes"),
}


def build_configs(
    raw: dict[str, tuple[str | None, str | None, str | None]],
) -> dict[str, ImpairConfig]:
    """{flag: (both, up, down)} strings -> {"up": ImpairConfig, "down": ImpairConfig}."""
    from rtcp.proxy.impair import DIRECTIONS, ImpairConfig

    configs: dict[str, ImpairConfig] = {}
    for index, direction in enumerate(DIRECTIONS, start=1):
        kwargs: dict[str, Any] = {}
        for flag, (parse, field_name) in _KNOBS.items():
            both, specific = raw[flag][0], raw[flag][index]
            if specific is not None:
                value, given_as = specific, f"--{flag}-{direction}"
            else:
                value, given_as = both, f"--{flag}"
            if value is None:
                continue
            try:
                parsed = parse(value)
            except UsageError as exc:
                raise UsageError(f"{given_as}: {exc}") from None
            if field_name is None:
                kwargs.update(parsed)
            else:
                kwargs[field_name] = parsed
        if kwargs.get("gemodel") is not None and kwargs.get("loss"):
            raise UsageError(
                f"--loss and --gemodel are two loss models: give one for the {direction} direction"
            )
        if kwargs.get("jitter_s") and not kwargs.get("delay_s"):
            raise UsageError(
                f"--jitter ({direction}) needs --delay: jitter varies the delay around its mean"
            )
        if (
            kwargs.get("reorder")
            and not kwargs.get("delay_s")
            and not kwargs.get("reorder_delay_s")
        ):
            raise UsageError(
                f"--reorder ({direction}) needs --delay (the reordered datagrams skip it) "
                "or --reorder-delay (the reordered datagrams are held back that much longer)"
            )
        try:
            configs[direction] = ImpairConfig(**kwargs)
        except ValueError as exc:
            raise UsageError(f"{direction}: {exc}") from None
    return configs


def proxy_command(
    listen: str = typer.Option(
        ...,
        "--listen",
        metavar="HOST:PORT",
        help="Where clients send (port 0: any free port).",
        rich_help_panel=_PANEL_RUN,
    ),
    upstream: str = typer.Option(
        ...,
        "--upstream",
        metavar="HOST:PORT",
        help="Where datagrams are forwarded.",
        rich_help_panel=_PANEL_RUN,
    ),
    loss: str | None = _both("loss", "P", "Drop datagrams with probability P (5% or 0.05)."),
    loss_up: str | None = _one("loss", "up", "P"),
    loss_down: str | None = _one("loss", "down", "P"),
    loss_correlation: str | None = _both(
        "loss-correlation", "C", "Correlation of consecutive losses (bursts); mean stays P."
    ),
    loss_correlation_up: str | None = _one("loss-correlation", "up", "C"),
    loss_correlation_down: str | None = _one("loss-correlation", "down", "C"),
    gemodel: str | None = _both(
        "gemodel",
        "p,r[,1-h[,1-k]]",
        "Gilbert-Elliott burst loss (netem gemodel): p good->bad, r bad->good, "
        "1-h loss in bad (default 100%), 1-k loss in good (default 0).",
    ),
    gemodel_up: str | None = _one("gemodel", "up", "p,r[,1-h[,1-k]]"),
    gemodel_down: str | None = _one("gemodel", "down", "p,r[,1-h[,1-k]]"),
    reorder: str | None = _both(
        "reorder",
        "P",
        "Send datagrams with probability P at once, ahead of the others delayed by --delay.",
    ),
    reorder_up: str | None = _one("reorder", "up", "P"),
    reorder_down: str | None = _one("reorder", "down", "P"),
    reorder_gap: str | None = _both(
        "reorder-gap", "N", "After a reordered datagram, the next N-1 are never reordered."
    ),
    reorder_gap_up: str | None = _one("reorder-gap", "up", "N"),
    reorder_gap_down: str | None = _one("reorder-gap", "down", "N"),
    reorder_delay: str | None = _both(
        "reorder-delay",
        "D",
        "Instead of sending them at once, hold the reordered datagrams D longer.",
    ),
    reorder_delay_up: str | None = _one("reorder-delay", "up", "D"),
    reorder_delay_down: str | None = _one("reorder-delay", "down", "D"),
    duplicate: str | None = _both("duplicate", "P", "Send a second copy with probability P."),
    duplicate_up: str | None = _one("duplicate", "up", "P"),
    duplicate_down: str | None = _one("duplicate", "down", "P"),
    corrupt: str | None = _both("corrupt", "P", "Flip one random bit with probability P."),
    corrupt_up: str | None = _one("corrupt", "up", "P"),
    corrupt_down: str | None = _one("corrupt", "down", "P"),
    delay: str | None = _both("delay", "D", "Add delay D (20ms, 1.5s, 500us; bare number = ms)."),
    delay_up: str | None = _one("delay", "up", "D"),
    delay_down: str | None = _one("delay", "down", "D"),
    jitter: str | None = _both(
        "jitter", "J", "Vary the delay by J; order is kept unless --reorder is given."
    ),
    jitter_up: str | None = _one("jitter", "up", "J"),
    jitter_down: str | None = _one("jitter", "down", "J"),
    distribution: str | None = _both(
        "distribution",
        "NAME",
        "Jitter distribution: uniform (default), normal, pareto, paretonormal.",
    ),
    distribution_up: str | None = _one("distribution", "up", "NAME"),
    distribution_down: str | None = _one("distribution", "down", "NAME"),
    rate: str | None = _both(
        "rate", "R", "Bottleneck rate: kbit, mbit, gbit (bits/s) or kbps, mbps (bytes/s)."
    ),
    rate_up: str | None = _one("rate", "up", "R"),
    rate_down: str | None = _one("rate", "down", "R"),
    queue: str | None = _both(
        "queue",
        "N|SIZE",
        "Queue before the --rate bottleneck: N datagrams (default 1000) "
        "or bytes (64KB); tail drop.",
    ),
    queue_up: str | None = _one("queue", "up", "N|SIZE"),
    queue_down: str | None = _one("queue", "down", "N|SIZE"),
    mtu: str | None = _both("mtu", "BYTES", "Drop datagrams whose UDP payload exceeds BYTES."),
    mtu_up: str | None = _one("mtu", "up", "BYTES"),
    mtu_down: str | None = _one("mtu", "down", "BYTES"),
    seed: str | None = typer.Option(
        None,
        "--seed",
        metavar="N",
        help="Make every random decision reproducible.",
        rich_help_panel=_PANEL_RUN,
    ),
    stats: str | None = typer.Option(
        None,
        "--stats",
        metavar="FILE",
        help="Write per-direction counters as JSON (each second and at exit).",
        rich_help_panel=_PANEL_RUN,
    ),
    idle_timeout: str = typer.Option(
        f"{DEFAULT_IDLE_TIMEOUT_S:g}s",
        "--idle-timeout",
        metavar="D",
        help="Forget a client silent for D.",
        rich_help_panel=_PANEL_RUN,
    ),
    max_clients: str = typer.Option(
        str(DEFAULT_MAX_CLIENTS),
        "--max-clients",
        metavar="N",
        help="Refuse new clients beyond N.",
        rich_help_panel=_PANEL_RUN,
    ),
    trace: str | None = typer.Option(
        None,
        "--trace",
        metavar="FILE",
        help="Record each datagram's fate (forwarded, lost, delayed, ...) as JSON lines "
        "(for `rtcp explain`).",
        rich_help_panel=_PANEL_RUN,
    ),
    pcap: str | None = typer.Option(
        None,
        "--pcap",
        metavar="FILE",
        help="Record every datagram in and out as a pcap capture (Wireshark, tcpdump).",
        rich_help_panel=_PANEL_RUN,
    ),
    wait_upstream: bool = typer.Option(
        False,
        "--wait-upstream",
        help="Listen (and print 'listening on') only once a socket is bound at --upstream, "
        "when it is an address of this host: a sender that waits for the proxy "
        "(send --wait-ready) then waits for the whole path.",
        rich_help_panel=_PANEL_RUN,
    ),
    control: str | None = typer.Option(
        None,
        "--control",
        metavar="HOST:PORT",
        help="Serve the HTTP/JSON control API there (change impairments, down/up, reset "
        "while running; `rtcp ctl`). Loopback only, unless --control-remote.",
        rich_help_panel=_PANEL_LIVE,
    ),
    control_remote: bool = typer.Option(
        False,
        "--control-remote",
        help="Allow a --control address other than loopback (no authentication: anyone who "
        "reaches it can change the network).",
        rich_help_panel=_PANEL_LIVE,
    ),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        metavar="FILE",
        help="Run a timeline of changes from a TOML file (examples/scenarios/).",
        rich_help_panel=_PANEL_LIVE,
    ),
) -> None:
    """Forward UDP datagrams between clients and an upstream, impaired like netem.

    Every impairment applies to both directions; the -up/-down forms set one direction.
    Stops cleanly (exit 0) on Ctrl-C or SIGTERM and reports what it did.

    Example: rtcp proxy --listen :9000 --upstream :9001 --loss 2% --delay 20ms --jitter 5ms
    """
    given = locals()
    raw = {
        flag: tuple(given[flag.replace("-", "_") + suffix] for suffix in ("", "_up", "_down"))
        for flag in _KNOBS
    }
    configs = build_configs(raw)
    listen_addr = with_flag("--listen", parse_hostport, listen)
    upstream_addr = with_flag("--upstream", parse_hostport, upstream)
    idle_timeout_s = with_flag("--idle-timeout", parse_duration, idle_timeout)
    if idle_timeout_s <= 0:
        raise UsageError(f"--idle-timeout: {idle_timeout!r} must be positive")
    clients_limit = with_flag("--max-clients", parse_count, max_clients, 1)
    control_addr = None
    if control is not None:
        control_addr = with_flag("--control", parse_hostport, control)
        if not control_remote and not is_loopback(control_addr[0]):
            raise UsageError(
                f"--control: {control!r} is not a loopback address; the API has no "
                "authentication: add --control-remote to serve it there anyway"
            )
    timeline = None
    if scenario is not None:
        from rtcp.proxy.scenario import load_scenario

        timeline = load_scenario(scenario)
    if seed is None and timeline is not None and timeline.seed is not None:
        seed_value = timeline.seed
    elif seed is None:
        seed_value = secrets.randbits(32)
    else:
        seed_value = with_flag("--seed", parse_count, seed, 0)
    if wait_upstream and not _wait_for_upstream(upstream_addr):
        return  # stopped (Ctrl-C, SIGTERM) before the upstream came up: nothing to report
    run_proxy(
        listen_addr,
        upstream_addr,
        configs,
        seed=seed_value,
        stats_path=Path(stats) if stats else None,
        idle_timeout_s=idle_timeout_s,
        max_clients=clients_limit,
        trace_path=Path(trace) if trace else None,
        pcap_path=Path(pcap) if pcap else None,
        control=control_addr,
        scenario=timeline,
    )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or a name that resolves only to them (localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(
        ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos
    )


def _wait_for_upstream(upstream: tuple[str, int]) -> bool:
    """--wait-upstream: wait until a socket is bound at the upstream (rtcp.net.ready); False
    when a signal stopped the wait. A remote upstream cannot be checked: no wait."""
    from rtcp.net.driver import resolve
    from rtcp.net.ready import wait_until_bound

    try:
        family, addr = resolve(*upstream)
    except OSError as exc:
        raise UsageError(
            f"--upstream: cannot resolve {upstream[0]}: {exc.strerror or exc}"
        ) from None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        wait_until_bound(family, addr, None)
    except KeyboardInterrupt:
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
    return True


def run_proxy(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    configs: dict[str, ImpairConfig],
    *,
    seed: int,
    stats_path: Path | None,
    idle_timeout_s: float,
    max_clients: int,
    trace_path: Path | None = None,
    pcap_path: Path | None = None,
    control: tuple[str, int] | None = None,
    scenario: Scenario | None = None,
) -> None:
    """Run until SIGINT/SIGTERM; report on stderr and in the stats file. --trace records each
    decision (TracingImpairer: the loop's no-impairment fast path is then off), --pcap each
    datagram in and out of the proxy's sockets."""
    from rtcp.proxy.impair import DIRECTIONS, Impairer, make_rng

    impairers: dict[str, Any] = {d: Impairer(configs[d], make_rng(seed, d)) for d in DIRECTIONS}
    if trace_path is None and pcap_path is None:
        _run(impairers, listen, upstream, seed=seed, stats_path=stats_path,
             idle_timeout_s=idle_timeout_s, max_clients=max_clients, control=control,
             scenario=scenario)
        return

    from rtcp.trace.command import finish_trace, open_pcap, open_trace
    from rtcp.trace.proxy_trace import TracingImpairer

    writer = open_trace(trace_path, "proxy")  # LocalIOError (exit 7) before anything runs
    try:
        pcap = open_pcap(pcap_path)
    except LocalIOError:
        finish_trace(writer)
        raise
    if writer is not None:
        impairers = {d: TracingImpairer(impairers[d], writer, d) for d in DIRECTIONS}
    try:
        _run(impairers, listen, upstream, seed=seed, stats_path=stats_path,
             idle_timeout_s=idle_timeout_s, max_clients=max_clients, writer=writer, pcap=pcap,
             control=control, scenario=scenario)
    finally:
        errors = []
        if pcap is not None:
            try:
                pcap.close()
            except OSError as exc:
                errors.append(f"--pcap: cannot write {pcap_path}: {exc.strerror or exc}")
        try:
            finish_trace(writer)
        except OSError as exc:
            errors.append(f"--trace: cannot write {trace_path}: {exc.strerror or exc}")
        lost = sum(getattr(i, "trace_errors", 0) for i in impairers.values())
        if lost and not errors:
            errors.append(f"--trace: {lost} decisions could not be written to {trace_path}")
        for message in errors:
            print(f"rtcp: warning: {message}", file=sys.stderr, flush=True)


def _run(
    impairers: dict[str, Any],
    listen: tuple[str, int],
    upstream: tuple[str, int],
    *,
    seed: int,
    stats_path: Path | None,
    idle_timeout_s: float,
    max_clients: int,
    writer: Any = None,
    pcap: Any = None,
    control: tuple[str, int] | None = None,
    scenario: Scenario | None = None,
) -> None:
    """The proxy's life: stats file, signals, the control API, the loop, the summary at exit."""
    from rtcp.proxy.control import Controller
    from rtcp.proxy.loop import Proxy
    from rtcp.proxy.report import status_line, summary, write_json_atomic

    live = sys.stderr.isatty()
    stats_failed = False

    def write_stats(snapshot: dict[str, Any]) -> None:
        if stats_path is not None:
            try:
                write_json_atomic(stats_path, snapshot)
            except OSError as exc:
                raise LocalIOError(
                    f"cannot write --stats {stats_path}: {exc.strerror or exc}"
                ) from None

    def report(proxy: Proxy) -> None:
        """Each second: rewrite the stats file, refresh the status line on a terminal."""
        nonlocal stats_failed
        snapshot = {"seed": seed, "final": False, **proxy.snapshot()}
        if not stats_failed:
            try:
                write_stats(snapshot)
            except LocalIOError as exc:
                stats_failed = True  # keep forwarding; the final write tries again
                print(f"rtcp: warning: {exc}", file=sys.stderr)
        try:  # a trace or capture read while the proxy runs lags at most a second
            if writer is not None:
                writer.flush()
            if pcap is not None:
                pcap.flush()
        except OSError:
            pass  # reported at exit, when the files are closed
        if live:
            width = shutil.get_terminal_size().columns
            sys.stderr.write("\r\x1b[K" + status_line(snapshot)[: max(width - 1, 10)])
            sys.stderr.flush()

    proxy = Proxy(
        listen,
        upstream,
        impairers["up"],
        impairers["down"],
        idle_timeout_s=idle_timeout_s,
        max_clients=max_clients,
        periodic=report,
        pcap=pcap,
    )
    controller = Controller(proxy, writer=writer, scenario=scenario)
    previous = {}
    server = None
    try:
        write_stats({"seed": seed, "final": False, **proxy.snapshot()})  # fail early, not at exit
        if control is not None:
            from rtcp.proxy.api import ControlServer

            try:
                server = ControlServer(control, proxy, controller)
            except OSError as exc:
                raise LocalIOError(
                    f"--control: cannot listen on {format_hostport(*control)}: "
                    f"{exc.strerror or exc}"
                ) from None
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: proxy.stop())
        if server is not None:
            print(f"control on {server.url}", flush=True)
        print(f"listening on {format_hostport(*proxy.local_address)}", flush=True)
        proxy.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server is not None:
            server.close()
        proxy.close()
    if controller.trace_errors:
        print(
            f"rtcp: warning: --trace: {controller.trace_errors} change records could not be "
            "written",
            file=sys.stderr,
        )
    snapshot = {"seed": seed, "final": True, **proxy.snapshot()}
    if live:
        sys.stderr.write("\r\x1b[K")
    print(summary(snapshot), file=sys.stderr, flush=True)
    write_stats(snapshot)
