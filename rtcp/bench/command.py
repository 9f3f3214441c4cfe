"""`rtcp bench`: run every row --repeats times, print the table, write results.json (+ PNG)."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from rtcp.bench.defaults import (
    CONCURRENT_SENDERS,
    DEFAULT_CEILING_SECONDS,
    DEFAULT_IMPAIRED_SIZE,
    DEFAULT_OUTPUT,
    DEFAULT_REPEATS,
    DEFAULT_SIZE,
    QUICK_CEILING_SECONDS,
    QUICK_IMPAIRED_SIZE,
    QUICK_OUTPUT,
    QUICK_ROWS,
    QUICK_SIZE,
)
from rtcp.errors import ExitCode, RtcpError, UsageError
from rtcp.units import parse_count, parse_duration, parse_size, with_flag


def bench_command(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="A few seconds: 1 MB, 1 run, rows " + ", ".join(QUICK_ROWS) + ".",
    ),
    size: str | None = typer.Option(
        None,
        "--size",
        metavar="SIZE",
        help="File size of the rtcp rows without loss or reordering (the"
        f" {CONCURRENT_SENDERS} senders share it). (default {DEFAULT_SIZE};"
        f" --quick {QUICK_SIZE})",
    ),
    impaired_size: str | None = typer.Option(
        None,
        "--impaired-size",
        metavar="SIZE",
        help="File size of the rtcp rows with loss or reordering."
        f" (default {DEFAULT_IMPAIRED_SIZE}; --quick {QUICK_IMPAIRED_SIZE})",
    ),
    repeats: str | None = typer.Option(
        None,
        "--repeats",
        metavar="N",
        help=f"Runs per row; the table shows the median. (default {DEFAULT_REPEATS}; --quick 1)",
    ),
    rows: str | None = typer.Option(
        None,
        "--rows",
        metavar="NAMES",
        help="Comma-separated row names or patterns (rtcp-delay*,relay-1400). (default all)",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE",
        help=f"Results JSON (the PNG goes next to it). (default {DEFAULT_OUTPUT};"
        f" --quick {QUICK_OUTPUT})",
    ),
    ceiling_seconds: str | None = typer.Option(
        None,
        "--ceiling-seconds",
        metavar="D",
        help=f"How long each ceiling blasts. (default {DEFAULT_CEILING_SECONDS};"
        f" --quick {QUICK_CEILING_SECONDS})",
    ),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="Exit 1 when a row is > 10% slower than last time."
    ),
    list_rows: bool = typer.Option(False, "--list-rows", help="List the rows and exit."),
) -> None:
    """Measure rtcp against bare-Python and kernel-TCP ceilings; table, JSON, PNG.

    Example: rtcp bench --quick;  rtcp bench --rows 'relay-*,rtcp-delay5ms*' --repeats 5

    Each row runs --repeats times, interleaved; the table shows the medians.

    Rows > 10% slower than the output file's last run of the same sizes are flagged.

    The output file keeps the history of every run.

    Exit 1 when a row failed (with --fail-on-regression: or regressed).
    """
    from rtcp.bench import report, runner  # the machinery: only when the benchmark runs

    catalogue = runner.all_rows()
    if list_rows:
        for row in catalogue:
            typer.echo(f"{row.name:<30} {row.kind:<8} {row.description}")
        return
    size_bytes = _parse_size("--size", size or (QUICK_SIZE if quick else DEFAULT_SIZE))
    impaired_bytes = _parse_size(
        "--impaired-size",
        impaired_size or (QUICK_IMPAIRED_SIZE if quick else DEFAULT_IMPAIRED_SIZE),
    )
    n = (
        with_flag("--repeats", parse_count, repeats, 1)
        if repeats is not None
        else (1 if quick else DEFAULT_REPEATS)
    )
    seconds = _parse_seconds(
        ceiling_seconds or (QUICK_CEILING_SECONDS if quick else DEFAULT_CEILING_SECONDS)
    )
    pattern = rows if rows is not None else (",".join(QUICK_ROWS) if quick else "all")
    try:
        chosen = runner.select_rows(catalogue, pattern)
    except ValueError as exc:
        raise UsageError(f"--rows: {exc}") from None
    out_path = Path(output) if output else (QUICK_OUTPUT if quick else DEFAULT_OUTPUT)
    _interrupt_on_sigterm()  # so that every child is stopped on the way out
    doc = runner.run_benchmark(
        chosen, size_bytes, impaired_bytes, n, seconds, quick=quick, pattern=pattern
    )
    previous, warning = report.load_previous(out_path)
    if warning:
        report.eprint(f"rtcp bench: warning: {warning}")
    report.finish_document(doc, previous)
    try:
        report.write_json(out_path, doc)
    except OSError as exc:
        raise RtcpError(f"cannot write {out_path}: {exc}", ExitCode.LOCAL_IO) from None
    typer.echo(report.format_table(doc))
    typer.echo(f"\nwrote {out_path}")
    png = out_path.with_suffix(".png")
    if report.matplotlib_available():
        if report.write_png(png, doc):
            typer.echo(f"wrote {png}")
    else:
        typer.echo("(no PNG: matplotlib is not installed; pip install 'rtcp[plot]')")
    if not doc["ok"]:
        raise typer.Exit(int(ExitCode.FAILURE))
    if fail_on_regression and (doc.get("comparison") or {}).get("regressions"):
        raise typer.Exit(int(ExitCode.FAILURE))


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: the children are stopped, exit 130."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _parse_size(flag: str, text: str) -> int:
    value = with_flag(flag, parse_size, text)
    if value < CONCURRENT_SENDERS:
        raise UsageError(f"{flag}: must be at least {CONCURRENT_SENDERS} bytes")
    return value


def _parse_seconds(text: str) -> float:
    """A duration where a bare number is seconds (1.5, 1.5s, 300ms)."""
    try:
        value = float(text) if text.strip().replace(".", "", 1).isdigit() else parse_duration(text)
    except (RtcpError, ValueError) as exc:
        raise UsageError(f"--ceiling-seconds: {exc}") from None
    if value <= 0:
        raise UsageError("--ceiling-seconds: must be positive")
    return value
