"""`rtcp send` and `rtcp recv`: thin typer commands over rtcp.transfer.sender / receiver.

Every value option is taken as a string and parsed with rtcp.units, so a bad value is one
`rtcp: error: --flag: ...` line and exit code 2. Failures raise the RtcpError subclasses;
rtcp.cli.main turns them into one line on stderr and the documented exit code.

Every `rtcp` start imports this module to register the two commands, so it imports at the top
only what their options need; the transfer machinery (the core, the UDP loop, the sender and
the receiver, packet protection) is imported by the command that runs.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rtcp.errors import (
    ExitCode,
    FileExistsRefused,
    HashMismatch,
    KeyRejected,
    LocalIOError,
    PeerReset,
    PeerTimeout,
    RtcpError,
    TransferRefused,
    UsageError,
)
from rtcp.transfer import keys, report
from rtcp.transfer import limits as _limits
from rtcp.units import (
    format_bytes,
    format_hostport,
    format_rate,
    parse_count,
    parse_duration,
    parse_hostport,
    parse_rate,
    parse_size,
    with_flag,
)

if TYPE_CHECKING:
    from rtcp.core.config import ConnectionConfig

_PANEL_TUNING = "Protocol tuning"
MAX_PARALLEL = 16  # `rtcp send --parallel`: connections of one send (the receiver's own
# limit per source, 32 by default, refuses more anyway)
_PANEL_TRACE = "Watching TCP work"
_PANEL_LIMITS = "Limits (what peers may make the receiver spend)"
_ERRORS_BY_CODE: dict[ExitCode, type[RtcpError]] = {
    ExitCode.TIMEOUT: PeerTimeout,
    ExitCode.RESET: PeerReset,
    ExitCode.HASH_MISMATCH: HashMismatch,
    ExitCode.FILE_EXISTS: FileExistsRefused,
    ExitCode.LOCAL_IO: LocalIOError,
    ExitCode.REFUSED: TransferRefused,
}


def _positive_seconds(flag: str, value: str) -> float:
    seconds = with_flag(flag, parse_duration, value)
    if seconds <= 0:
        raise UsageError(f"{flag}: {value!r} must be positive")
    return seconds


def build_config(
    *,
    mss: str | None = None,
    window: str | None = None,
    min_rto: str | None = None,
    max_rto: str | None = None,
    cc: str | None = None,
    timeout_s: float | None = None,
) -> ConnectionConfig:
    """A ConnectionConfig from the command-line strings (None keeps the default)."""
    from rtcp.core.config import ConnectionConfig
    from rtcp.core.congestion import CONTROLLERS
    from rtcp.core.wire import HEADER_BYTES, MAX_DATAGRAM_BYTES, TIMESTAMPS_OPTION_BYTES

    config = ConnectionConfig()
    values: dict[str, Any] = {}
    if mss is not None:
        limit = MAX_DATAGRAM_BYTES - HEADER_BYTES - TIMESTAMPS_OPTION_BYTES - 40  # SACK room
        values["mss_bytes"] = with_flag("--mss", parse_count, mss, 64, limit)
        if hasattr(config, "pmtud"):
            values["pmtud"] = False  # a fixed segment size: no path MTU discovery
    if window is not None:
        size = with_flag("--window", parse_size, window)
        floor = values.get("mss_bytes", config.mss_bytes)
        if size < floor:
            raise UsageError(f"--window: {window!r} is smaller than one segment ({floor} bytes)")
        if size > 1 << 30:
            raise UsageError(f"--window: {window!r} is larger than 1 GiB")
        values["send_buffer_bytes"] = size
        values["receive_buffer_bytes"] = size
    if min_rto is not None:
        values["min_rto_s"] = with_flag("--min-rto", parse_duration, min_rto)
        if values["min_rto_s"] <= 0:
            raise UsageError(f"--min-rto: {min_rto!r} must be positive")
    if max_rto is not None:
        values["max_rto_s"] = with_flag("--max-rto", parse_duration, max_rto)
    lo = values.get("min_rto_s", config.min_rto_s)
    hi = values.get("max_rto_s", config.max_rto_s)
    if hi < lo:
        raise UsageError(f"--max-rto ({hi:g} s) is below --min-rto ({lo:g} s)")
    if values.get("min_rto_s", 0) > config.initial_rto_s or hi < config.initial_rto_s:
        values["initial_rto_s"] = min(max(config.initial_rto_s, lo), hi)
    if cc is not None:
        name = cc.strip().lower()
        if name not in CONTROLLERS:
            raise UsageError(
                f"--cc: unknown congestion control {cc!r} (use {', '.join(sorted(CONTROLLERS))})"
            )
        values["congestion_control"] = name
    if timeout_s is not None:
        values["user_timeout_s"] = timeout_s
    return replace(config, **values)


# --- send ----------------------------------------------------------------------------


def summary_text(result) -> str:
    """The human summary printed on stdout after a send (it is the command's result). Sizes
    and rates in SI units, as the progress bar and the receiver's log line."""
    lines = [f"sent {result.name} to {result.peer}"]
    lines.append(f"  size         {format_bytes(result.bytes)} ({result.bytes} bytes)")
    lines.extend(_resumed_lines(result))
    lines.append(f"  time         {result.seconds:.3f} s")
    rate = result.goodput_bytes_per_s
    lines.append(f"  goodput      {format_rate(rate)} ({rate * 8 / 1e6:.2f} Mbit/s)")
    share = (
        f" ({100.0 * result.retransmissions / result.segments_sent:.2f}%)"
        if result.segments_sent
        else ""
    )
    lines.append(
        f"  segments     {result.segments_sent} sent, {result.retransmissions} retransmitted{share}"
    )
    rtt = f"{result.rtt_ms:.3f} ms (smoothed)" if result.rtt_ms is not None else "n/a"
    lines.append(f"  RTT          {rtt}")
    lines.append(f"  SHA-256      {result.sha256 or 'n/a'}")
    verified = "yes, the receiver's SHA-256 matches" if result.verified else "NO"
    lines.append(f"  verified     {verified}")
    return "\n".join(lines)


class _Progress:
    """The tqdm bar on stderr: bytes acknowledged by the receiver, rate, ETA, retransmissions.

    Created at the first report, so that a transfer failing before it starts draws nothing.
    """

    def __init__(self, name: str, total: int):
        self.name = name if len(name) <= 24 else name[:21] + "..."
        self.total = total
        self.bar = None
        self._retx = -1

    def __call__(self, app, now: float) -> None:
        if self.bar is None:
            if not app.established:
                return
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                desc=self.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,  # SI, as the summary and the receiver's log
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                mininterval=0.1,
            )
        _advance(self.bar, app)
        retx = app.retransmissions
        if retx != self._retx:
            self._retx = retx
            self.bar.set_postfix_str(f"retx={retx}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _advance(bar, app) -> None:
    """Move a tqdm bar to the bytes the receiver holds. What a resume found there already
    moves it too, but not its rate and ETA (those count what this run sends)."""
    held = app.resumed_bytes - bar.initial
    if held > 0:  # bytes that did not cross the network now: as if the bar had started there
        bar.initial += held
        bar.n += held
        bar.last_print_n += held
    done = app.file_bytes_done
    if done > bar.n:
        bar.update(done - bar.n)


def _trace_option() -> Any:
    return typer.Option(
        None,
        "--trace",
        metavar="FILE",
        help="Record every segment, state change, timer and RTT sample as JSON lines "
        "(for `rtcp explain` and `rtcp plot`).",
        rich_help_panel=_PANEL_TRACE,
    )


def _pcap_option() -> Any:
    return typer.Option(
        None,
        "--pcap",
        metavar="FILE",
        help="Record every datagram sent and received as a pcap capture (Wireshark, tcpdump).",
        rich_help_panel=_PANEL_TRACE,
    )


def _explain_width(value: str) -> int:
    from rtcp.trace.defaults import MIN_WIDTH

    return with_flag("--explain-width", parse_count, value, MIN_WIDTH)


class _Recording:
    """--trace, --pcap and --explain of one process: opened before the work, finished after.

    With neither flag nothing is opened and no event hook is installed, so the core does no
    trace work at all. Unwritable paths fail at once (LocalIOError, exit 7); a write that fails
    later (disk full) never stops the transfer: it is reported as a warning at the end."""

    def __init__(self, trace: str | None, pcap: str | None, role: str, *, explain: bool = False):
        from rtcp.trace.command import open_pcap, open_trace

        self.explain = explain
        self.trace_path = trace
        self.pcap_path = pcap
        self.errors: list[str] = []
        self.pcap = None
        self.writer = open_trace(trace, role, explain=explain)
        try:
            self.pcap = open_pcap(pcap)
        except BaseException:
            self.finish()
            raise

    def configure(self, config: ConnectionConfig) -> ConnectionConfig:
        """config with the trace writer as its event hook (config itself when not tracing)."""
        if self.writer is None:
            return config
        # what a reader cannot infer from the segments (rtcp plot's title)
        self.writer.write("config", {"congestion_control": config.congestion_control})
        write = self.writer.hook()
        errors = self.errors

        def hook(event: str, fields: dict) -> None:
            try:
                write(event, fields)
            except OSError as exc:
                if not errors:
                    errors.append(f"--trace: cannot write {self.trace_path}: {exc.strerror or exc}")

        return replace(config, event_hook=hook)

    def flush(self) -> None:
        try:
            if self.writer is not None:
                self.writer.flush()
            if self.pcap is not None:
                self.pcap.flush()
        except OSError as exc:
            self.errors.append(f"cannot write the trace or the capture: {exc.strerror or exc}")

    def finish(self, *, width: int | None = None) -> str | None:
        """Close both files; with --explain, the ladder (None when nothing was traced)."""
        from rtcp.trace.command import finish_trace

        writer, self.writer = self.writer, None
        pcap, self.pcap = self.pcap, None
        ladder = None
        if pcap is not None:
            try:
                pcap.close()
            except OSError as exc:
                self.errors.append(f"--pcap: cannot write {self.pcap_path}: {exc.strerror or exc}")
        if writer is not None:
            traced = writer.records > 1  # more than its trace_start line
            kwargs = {"width": width} if width is not None else {}
            try:
                ladder = finish_trace(writer, explain=self.explain, **kwargs)
            except OSError as exc:
                what = self.trace_path or "the trace"
                self.errors.append(f"--trace: cannot write {what}: {exc.strerror or exc}")
            except ValueError as exc:  # a torn trace (disk full mid-line): no ladder
                self.errors.append(f"--explain: cannot read the trace back: {exc}")
            if not traced:
                ladder = None
        for message in dict.fromkeys(self.errors):
            print(f"rtcp: warning: {message}", file=sys.stderr, flush=True)
        self.errors.clear()
        return ladder


def _print_ladder(ladder: str | None, json_output: bool) -> None:
    """--explain: the ladder on stdout, or on stderr when stdout carries the JSON."""
    if not ladder:
        return
    stream = sys.stderr if json_output else sys.stdout
    try:
        stream.write(ladder if ladder.endswith("\n") else ladder + "\n")
        stream.flush()
    except OSError:  # a closed pipe must not change the transfer's exit code
        pass


def send_command(
    files: list[str] = typer.Argument(  # noqa: B008 - typer reads its defaults
        ...,
        metavar="FILE...",
        help="Files and folders to send (a folder with everything under it, its own name at the "
        "top); - reads stdin (with --name).",
        show_default=False,
    ),
    to: str = typer.Option(
        ..., "--to", metavar="HOST:PORT", help="Where `rtcp recv` listens.", show_default=False
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print one JSON object with the results on stdout."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar and no summary (errors still print)."
    ),
    timeout: str = typer.Option(
        "30s",
        "--timeout",
        metavar="DURATION",
        help="Give up after this long without progress (30s, 500ms, 2min).",
    ),
    interval: str | None = typer.Option(
        None,
        "--interval",
        "-i",
        metavar="DURATION",
        help="A line per interval on stdout, as iperf3 (1s): bytes, rate, retransmissions, "
        "cwnd, SRTT, then the sum; for a tree, lines for the whole (--parallel: retransmissions and "
        "cwnd summed over the connections, SRTT their mean); with --json, the list "
        "'intervals' instead. Printed with "
        "--quiet too.",
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        metavar="RATE",
        help="Send no faster than this (10mbit, 2MBps), as rsync --bwlimit or iperf3 -b: "
        "the connection paces its segments at this rate at most.",
    ),
    wait_ready: bool = typer.Option(
        False,
        "--wait-ready",
        help="Wait (up to --timeout) for the receiver to be up instead of failing with "
        "'connection refused': for an address of this host, until a socket is bound there, "
        "before the first SYN.",
    ),
    mss: str | None = typer.Option(
        None,
        "--mss",
        metavar="N",
        help="Fixed segment payload in bytes (default: 1362, raised by path MTU discovery).",
        rich_help_panel=_PANEL_TUNING,
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        metavar="SIZE",
        help="Send buffer: the most unacknowledged data in flight (4MiB, 256KB).",
        rich_help_panel=_PANEL_TUNING,
    ),
    min_rto: str | None = typer.Option(
        None,
        "--min-rto",
        metavar="D",
        help="Floor of the retransmission timeout (200ms).",
        rich_help_panel=_PANEL_TUNING,
    ),
    max_rto: str | None = typer.Option(
        None,
        "--max-rto",
        metavar="D",
        help="Ceiling of the retransmission timeout (60s).",
        rich_help_panel=_PANEL_TUNING,
    ),
    cc: str | None = typer.Option(
        None,
        "--cc",
        metavar="NAME",
        help="Congestion control: bbr (default: rate-based, tolerates random loss), cubic or reno.",
        rich_help_panel=_PANEL_TUNING,
    ),
    trace: str | None = _trace_option(),
    pcap: str | None = _pcap_option(),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="At the end, draw this transfer as a TCP ladder diagram "
        "(on stdout; on stderr with --json).",
        rich_help_panel=_PANEL_TRACE,
    ),
    explain_width: str = typer.Option(
        "100",
        "--explain-width",
        metavar="COLUMNS",
        help="Width of the --explain drawing (at least 72).",
        rich_help_panel=_PANEL_TRACE,
    ),
    psk_file: str | None = keys.psk_file_option(),
    code: str | None = typer.Option(
        None,
        "--code",
        metavar="CODE",
        help="The one-time code that `rtcp recv --code` printed (7-guitar-oxygen-banjo).",
        rich_help_panel=keys.PANEL_KEYS,
        show_default=False,
    ),
    keylog: str | None = keys.keylog_option(),
    name: str | None = typer.Option(
        None, "--name", metavar="NAME", help="The name on the receiver of what - reads (stdin)."
    ),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Follow symlinks inside folders (default: skip them)."
    ),
    no_resume: bool = typer.Option(
        False,
        "--no-resume",
        help="Send every file from its first byte, even where the receiver holds a partial.",
    ),
    parallel: str = typer.Option(
        "1",
        "--parallel",
        metavar="N",
        help="Files over N connections at once (1..16), for big trees on long paths.",
    ),
) -> None:
    """Send files and folders to an `rtcp recv`; succeed only once the receiver verified
    the SHA-256 of every file.

    Example: rtcp send report.pdf --to 192.0.2.7:9000

    Example: rtcp send photos/ notes.txt --to 192.0.2.7:9000    (one connection)

    Example: tar c src | rtcp send - --name src.tar --to 192.0.2.7:9000

    A progress bar on stderr (when it is a terminal), then the summary on stdout; --json: one
    JSON object on stdout instead of the summary. Durations need a unit (15s, 500ms).
    --explain draws the transfer as a ladder diagram before the summary (stdout; stderr with
    --json); --trace FILE and --pcap FILE record it for `rtcp explain`, `rtcp plot`, Wireshark.

    Exit codes:
      0    verified: the receiver's SHA-256 of the stored file matches
      1    internal error (a bug: please report it)
      2    bad flags or arguments
      3    no answer: connection refused (nothing listens there), or no answer or no
           progress within --timeout
      4    reset: the receiver reset or aborted the connection
      5    SHA-256 mismatch at the receiver
      6    the file exists on the receiver (it needs --force)
      7    local file or socket error (missing file, permission)
      8    refused by the receiver (bad name, no space, I/O error there, protocol error),
           or the peer answers but is not rtcp
      9    the keys do not match (another --psk-file or --code, or a key on one side only)
      130  interrupted (Ctrl-C)
    """
    from rtcp.transfer.sender import SendResult
    from rtcp.transfer.tree import TreeResult, collect_entries, lone_result, send_tree

    timeout_s = _positive_seconds("--timeout", timeout)
    host, port = with_flag("--to", parse_hostport, to)
    if port == 0:
        raise UsageError(f"--to: {to!r} needs a port")
    if name is not None and "-" not in files:
        raise UsageError("--name names what - reads from stdin: give - as a FILE")
    if files.count("-") > 1:
        raise UsageError("- (stdin) can be given once")
    connections = with_flag("--parallel", parse_count, parallel, 1, MAX_PARALLEL)
    config = build_config(
        mss=mss, window=window, min_rto=min_rto, max_rto=max_rto, cc=cc, timeout_s=timeout_s
    )
    if rate is not None:
        config = replace(config, max_pacing_rate_bytes_per_s=report.parse_rate_cap(rate))
    every_s = report.parse_interval(interval) if interval is not None else None
    width = _explain_width(explain_width)
    secret = keys.load_secret(psk_file, code)
    keylog_write = keys.keylog_writer(keylog)
    entries = collect_entries(files, follow_symlinks=follow_symlinks, stdin_name=name)
    # one FILE that is a file: the summary and --json of one file (the same stream as a tree's)
    lone = files != ["-"] and len(files) == 1 and len(entries) == 1 and entries[0].kind == "file"
    show_bar = not quiet and sys.stderr.isatty()
    progress: Any = None
    if show_bar:
        progress = _Progress(entries[0].rel, entries[0].size) if lone else _TreeProgress(entries)
    intervals = (
        report.IntervalReport(every_s, None if json_output else report.line_writer(progress))
        if every_s is not None
        else None
    )
    recording = _Recording(trace, pcap, "send", explain=explain)  # LocalIOError: exit 7
    config = recording.configure(config)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # abort (RST), then exit 130
    ladder: str | None = None
    try:
        try:
            tree = send_tree(
                entries, host, port, config=config, timeout_s=timeout_s,
                on_progress=report.chain(progress, intervals),
                progress_interval_s=report.SAMPLE_INTERVAL_S if intervals else 0.1,
                pcap=recording.pcap, wait_ready=wait_ready, secret=secret, keylog=keylog_write,
                stdin=sys.stdin.buffer if "-" in files else None, resume=not no_resume,
                parallel=connections,
            )
        except KeyboardInterrupt:
            # typer would turn it into a silent exit 130: say what happened (send_tree reset
            # the connections, so the receiver keeps or drops its partials at once)
            raise RtcpError("interrupted: the transfer was aborted", ExitCode.INTERRUPTED) from None
        finally:
            if intervals is not None:
                intervals.finish()  # the last partial interval and the sum, above the bar
            if progress is not None:
                progress.close()
            ladder = recording.finish(width=width)
    except RtcpError as exc:
        if json_output:
            if lone:
                failed: Any = SendResult(
                    file=files[0], name=entries[0].rel, peer=to, bytes=entries[0].size or 0
                )
            else:
                failed = TreeResult(peer=to, entries=len(entries), files=0, bytes=0)
            failed.exit_code, failed.error = int(exc.exit_code), str(exc)
            _print_json(_with_intervals(failed.to_json(), intervals))
        _print_ladder(ladder, json_output)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    result: Any = lone_result(files[0], tree) if lone else tree
    if json_output:
        _print_json(_with_intervals(result.to_json(), intervals))
    _print_ladder(ladder, json_output)
    if not quiet and not json_output and (result.verified or not lone):
        print(summary_text(result) if lone else tree_summary_text(result), flush=True)
    if not result.verified:
        raise RtcpError(result.error or "the transfer failed", ExitCode(result.exit_code))


def _with_intervals(obj: dict, intervals) -> dict:
    """--json with --interval: the intervals as a list in the object."""
    if intervals is not None:
        obj["intervals"] = intervals.to_json()
    return obj


def tree_summary_text(result) -> str:
    """The human summary of a send of many entries: totals, then every failure."""
    files_ok = sum(1 for r in result.results if r.verified and r.kind == "file")
    dirs = sum(1 for r in result.results if r.kind == "dir")
    what = f"{_count(result.files, 'file')} and {_count(dirs, 'folder')} to {result.peer}"
    lines = [f"sent {what}" if result.verified else f"tried to send {what}"]
    lines.append(f"  size         {format_bytes(result.bytes)} ({result.bytes} bytes)")
    lines.extend(_resumed_lines(result))
    lines.append(f"  time         {result.seconds:.3f} s")
    rate = result.goodput_bytes_per_s
    lines.append(f"  goodput      {format_rate(rate)} ({rate * 8 / 1e6:.2f} Mbit/s)")
    lines.append(
        f"  segments     {result.segments_sent} sent, {result.retransmissions} retransmitted"
    )
    lines.append(f"  verified     {files_ok} of {result.files} files")
    failures = [r for r in result.results if not r.verified]
    if failures:
        lines.append(f"  failed       {len(failures)}:")
        for r in failures:
            lines.append(f"    {r.path}: {r.error or r.verdict}")
    return "\n".join(lines)


def _resumed_lines(result) -> list[str]:
    """The summary's line for bytes the receiver held already (resumed partials)."""
    if not result.resumed_bytes:
        return []
    held, sent = result.resumed_bytes, result.bytes - result.resumed_bytes
    return [f"  resumed      {format_bytes(held)} on the receiver already, {format_bytes(sent)} sent"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _TreeProgress:
    """One tqdm bar for the whole tree: bytes acknowledged, rate, ETA; files done/total."""

    def __init__(self, entries):
        self.files = sum(1 for e in entries if e.kind == "file")
        self.total = sum(e.size or 0 for e in entries) or None
        self.bar = None

    def __call__(self, app, now: float) -> None:
        if self.bar is None:
            if not app.established:
                return
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total, unit="B", unit_scale=True, unit_divisor=1000,
                file=sys.stderr, dynamic_ncols=True, leave=True, mininterval=0.1,
            )
        _advance(self.bar, app)
        files_done = sum(1 for r in app.results if r.verified and r.kind == "file")
        self.bar.set_description_str(f"{files_done}/{self.files} files", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


# --- recv ----------------------------------------------------------------------------


def _receiver_limits(
    *,
    max_connections: str,
    max_per_source: str,
    max_memory: str,
    max_size: str | None,
    header_deadline: str,
    min_rate: str,
):
    """The named limits of `rtcp recv` from its flags (README: Security and limits)."""
    limits = _limits.ReceiverLimits(
        max_connections=with_flag("--max-connections", parse_count, max_connections, 1),
        max_per_source=with_flag("--max-per-source", parse_count, max_per_source, 1),
        max_memory_bytes=with_flag("--max-memory", parse_size, max_memory),
        max_size_bytes=(
            None if max_size is None else with_flag("--max-size", parse_size, max_size)
        ),
        header_deadline_s=_positive_seconds("--header-deadline", header_deadline),
        min_rate_bytes_per_s=int(with_flag("--min-rate", parse_rate, min_rate)),
    )
    if limits.max_memory_bytes < _limits.MIN_GRANT_BYTES:
        raise UsageError(
            f"--max-memory: {max_memory!r} is less than one connection's smallest window "
            f"({_limits.MIN_GRANT_BYTES} bytes)"
        )
    return limits


class _RefusalLog:
    """One stderr line when a limit refuses or cuts off a peer, at most one per limit every
    REFUSAL_LOG_INTERVAL_S (a flood must not flood the log): it names the limit and its flag."""

    REFUSAL_LOG_INTERVAL_S = 5.0

    def __init__(self, limits) -> None:
        self.limits = limits
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, limit: str, peer: str, action: str) -> None:
        now = time.monotonic()
        last = self._last.get(limit)
        if last is not None and now - last < self.REFUSAL_LOG_INTERVAL_S:
            self._quiet[limit] = self._quiet.get(limit, 0) + 1
            return
        self._last[limit] = now
        more = self._quiet.pop(limit, 0)
        also = f" (and {more} more since the last report)" if more else ""
        print(
            f"rtcp: {action} {peer}: limit '{limit}' reached{_LIMIT_FLAGS.get(limit, '')}{also}",
            file=sys.stderr,
            flush=True,
        )


_LIMIT_FLAGS = {
    _limits.CONNECTIONS: " (--max-connections)",
    _limits.PER_SOURCE: " (--max-per-source)",
    _limits.MEMORY: " (--max-memory)",
    _limits.HEADER_DEADLINE: " (--header-deadline)",
    _limits.MIN_RATE: " (--min-rate)",
    _limits.MAX_SIZE: " (--max-size)",
}


def recv_command(
    listen: str = typer.Option(
        ...,
        "--listen",
        metavar="HOST:PORT",
        help="Where to listen (port 0: any free port).",
        show_default=False,
    ),
    out: str = typer.Option(
        ...,
        "--out",
        metavar="DIR",
        help="Folder for the received files (created if missing).",
        show_default=False,
    ),
    once: bool = typer.Option(
        False, "--once", help="Exit after the first transfer, with its exit code."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite files that exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per transfer."),
    json_output: bool = typer.Option(
        False,
        "--json",
        help="JSON Lines on stdout: first {\"event\": \"listening\", ...}, then one object "
        "per finished transfer (the fields of `rtcp send --json`), each flushed at once.",
    ),
    timeout: str = typer.Option(
        "30s",
        "--timeout",
        metavar="DURATION",
        help="Drop a transfer whose sender is silent this long.",
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        metavar="SIZE",
        help="Receive buffer: the window offered to senders.",
        rich_help_panel=_PANEL_TUNING,
    ),
    max_connections: str = typer.Option(
        str(_limits.DEFAULT_MAX_CONNECTIONS),
        "--max-connections",
        metavar="N",
        help="Transfers served at once; more are refused.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    max_per_source: str = typer.Option(
        str(_limits.DEFAULT_MAX_PER_SOURCE),
        "--max-per-source",
        metavar="N",
        help="Transfers served at once from one IP address.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    max_memory: str = typer.Option(
        "256MiB",
        "--max-memory",
        metavar="SIZE",
        help="Receive memory of all transfers together: the windows offered share it.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    max_size: str | None = typer.Option(
        None,
        "--max-size",
        metavar="SIZE",
        help="Largest file accepted (default: any that fits on the disk).",
        rich_help_panel=_PANEL_LIMITS,
    ),
    header_deadline: str = typer.Option(
        f"{_limits.DEFAULT_HEADER_DEADLINE_S:g}s",
        "--header-deadline",
        metavar="SECONDS",
        help="Cut off a transfer whose header is not complete this long after its handshake.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    min_rate: str = typer.Option(
        "1kbps",
        "--min-rate",
        metavar="RATE",
        help=f"Cut off a transfer that moves less than this over "
        f"{_limits.MIN_RATE_INTERVAL_S:g} s (kbps = 1000 bytes/s).",
        rich_help_panel=_PANEL_LIMITS,
    ),
    trace: str | None = _trace_option(),
    pcap: str | None = _pcap_option(),
    psk_file: str | None = keys.psk_file_option(),
    code: bool = typer.Option(
        False,
        "--code",
        help="Print a fresh one-time code; accept only senders that give it (SPAKE2).",
        rich_help_panel=keys.PANEL_KEYS,
    ),
    code_uses: str | None = typer.Option(
        None,
        "--code-uses",
        metavar="N",
        help="Transfers one --code allows (default 1); then the receiver exits.",
        rich_help_panel=keys.PANEL_KEYS,
        show_default=False,
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        help="Listen beyond loopback without a key: anyone may store files, unencrypted.",
        rich_help_panel=keys.PANEL_KEYS,
    ),
    keylog: str | None = keys.keylog_option(),
    partial_max_age: str = typer.Option(
        "24h",
        "--partial-max-age",
        metavar="DURATION",
        help="Remove the partials of interrupted transfers (kept for a resume) older than this.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    partial_max_bytes: str = typer.Option(
        "16GiB",
        "--partial-max-bytes",
        metavar="SIZE",
        help="Bytes all partials may hold together; beyond, the oldest are removed.",
        rich_help_panel=_PANEL_LIMITS,
    ),
    no_times: bool = typer.Option(
        False,
        "--no-times",
        help="Leave files and folders the time they arrived (default: the sender's mtime, as "
        "rsync -a).",
    ),
) -> None:
    """Receive files from `rtcp send` into DIR, each verified by SHA-256 before it appears.

    Example: rtcp recv --listen 0.0.0.0:9000 --out ./inbox --psk-file team.key

    An address other than loopback needs --psk-file, --code or --insecure.

    Prints "listening on HOST:PORT" first, then one line per finished transfer; --json:
    JSON Lines instead (every stdout line one object: where it listens, then each transfer).

    Serves concurrent transfers until Ctrl-C or SIGTERM, then aborts the open ones (exit 0).

    A file gets its final name only after its SHA-256 matched; existing files need --force.
    Files and folders of a tree get the sender's modification time (--no-times: not).

    --trace FILE and --pcap FILE record every transfer served (each one flushed as it ends).

    Exit codes (with --once, the first transfer's outcome):
      0    verified and stored (or a clean shutdown)
      2    bad flags or arguments
      3    timeout: the sender went silent
      4    reset: the sender aborted
      5    SHA-256 mismatch (nothing stored)
      6    the file exists (refused)
      7    local I/O error (cannot create the folder or the file, disk full)
      8    refused: bad name or protocol error
      9    --code: the code was retired after attempts with a wrong code
    """
    from rtcp.net.driver import Driver, resolve
    from rtcp.transfer.receiver import FileServer
    from rtcp.transfer.storage import OutputDir

    timeout_s = _positive_seconds("--timeout", timeout)
    host, port = with_flag("--listen", parse_hostport, listen)
    config = build_config(window=window, timeout_s=timeout_s)
    limits = _receiver_limits(
        max_connections=max_connections,
        max_per_source=max_per_source,
        max_memory=max_memory,
        max_size=max_size,
        header_deadline=header_deadline,
        min_rate=min_rate,
    )
    if code_uses is not None and not code:
        raise UsageError("--code-uses needs --code")
    uses = 1 if code_uses is None else with_flag("--code-uses", parse_count, code_uses, 1)
    secret = keys.load_secret(psk_file, keys.new_code() if code else None)
    keylog_write = keys.keylog_writer(keylog)
    partial_max_age_s = _positive_seconds("--partial-max-age", partial_max_age)
    partial_max_bytes_n = with_flag("--partial-max-bytes", parse_size, partial_max_bytes)
    output = OutputDir(Path(out), force=force, keep_times=not no_times)
    output.remove_old_partials(partial_max_age_s, time.time(), partial_max_bytes_n)
    removed = output.cleanup_leftovers()
    if removed and not quiet:
        print(
            f"rtcp: removed {len(removed)} temporary file(s) left by an earlier receiver",
            file=sys.stderr,
        )
    recording = _Recording(trace, pcap, "recv")  # LocalIOError: exit 7
    config = recording.configure(config)
    stop = {"signal": None}
    first: list = []
    try:
        try:
            family, addr = resolve(host, port, passive=True)
            keys.check_protected_mode(listen, addr, secret is not None, insecure)
            driver = Driver(addr, family=family)
        except OSError as exc:
            raise LocalIOError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        if recording.pcap is not None:
            from rtcp.trace.pcap import TapSocket

            driver.sock = TapSocket(driver.sock, recording.pcap)  # the selector keys on the fd

        refused_log = keys.RefusedLog(driver.clock, quiet)

        def on_result(result) -> None:
            if refused_log.told(result):
                return  # a wrong code: the "refused a handshake" line said it
            if json_output:
                report.print_json_line(report.receive_json(result))
            elif not quiet:
                try:
                    print(result.log_line(), flush=True)
                except OSError:  # stdout closed (a pipe reader went away): keep serving
                    pass
            if not first and result.final:  # a connection, not one file of a tree
                first.append(result)
            recording.flush()  # each finished transfer can be read while we keep serving

        def on_signal(signum, _frame) -> None:
            stop["signal"] = signum

        previous = {}
        acceptor = None
        with driver:
            if secret is not None:
                from rtcp.core.protection import Acceptor

                acceptor = Acceptor(secret, code_uses=uses, keylog=keylog_write)
                driver.require_key(acceptor, refused_log)
            server = FileServer(
                driver,
                output,
                config=config,
                on_result=on_result,
                idle_timeout_s=timeout_s,
                limits=limits,
                on_refusal=None if quiet else _RefusalLog(limits),
                partial_max_age_s=partial_max_age_s,
                partial_max_bytes=partial_max_bytes_n,
            )

            def finished() -> bool:
                if stop["signal"] is not None or (once and bool(first)):
                    return True
                return acceptor is not None and acceptor.code_retired and server.active == 0

            try:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    previous[signum] = signal.signal(signum, on_signal)
                driver.install_signal_wakeup()
                local = driver.local_address
                address = format_hostport(local[0], local[1])
                shown_code = secret.code if secret is not None else None
                if json_output:
                    report.print_json_line(report.listening_json(address, shown_code))
                else:
                    print(f"listening on {address}", flush=True)
                    if shown_code is not None:
                        print(f"code: {shown_code}", flush=True)
                driver.run(finished)
                refused_log.flush()
                server.shutdown()
                counts = server.limit_report()
                if counts and not quiet:
                    print(f"rtcp: limits and defences: {counts}", file=sys.stderr, flush=True)
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
    finally:
        recording.finish()
    if acceptor is not None and not quiet:
        line = keys.protection_summary(acceptor.stats)
        if line:
            print(line, file=sys.stderr, flush=True)
    if acceptor is not None and acceptor.code_retired and not acceptor.code_used_up:
        from rtcp.core.protection import MAX_UNCONFIRMED_CODE_ATTEMPTS

        raise KeyRejected(
            f"the code was retired after {MAX_UNCONFIRMED_CODE_ATTEMPTS} attempts that did "
            "not prove it: run `rtcp recv --code` again for a new code"
        )
    if once and first and stop["signal"] is None:
        result = first[0]
        if result.exit_code != ExitCode.OK:
            error_class = _ERRORS_BY_CODE.get(result.exit_code, RtcpError)
            raise error_class(
                f"{result.name or 'transfer'} from {result.peer}: {result.reason}",
                result.exit_code,
            )
