"""`rtcp explain` and `rtcp plot`, and the helpers send/recv/proxy use for --trace, --pcap and
--explain.

Every `rtcp` start imports this module to register the two commands: the ladder, the trace
and pcap writers are imported by the functions that use them, when asked for."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rtcp.errors import LocalIOError, UsageError
from rtcp.trace.defaults import DEFAULT_WIDTH, MIN_WIDTH
from rtcp.units import parse_count, with_flag

if TYPE_CHECKING:
    from rtcp.trace.ladder import Trace
    from rtcp.trace.pcap import PcapWriter
    from rtcp.trace.writer import TraceWriter


def _load(path: Path) -> Trace:
    from rtcp.trace.ladder import Trace
    from rtcp.trace.writer import read_trace

    try:
        records = read_trace(path)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not an rtcp trace: {exc}") from None
    if not records:
        raise UsageError(f"{path} is empty: not an rtcp trace")
    return Trace(records, name=path.name)


CONN_HELP = (
    "The connection to draw: its id as the ladder's header or the plot's title shows it"
    " (hex; either end's id). Default: the first connection in the (first) trace that"
    " carried segments; explain and plot pick the same one."
)


def _conn_option(text: str | None) -> int | None:
    if text is None:
        return None
    from rtcp.trace.ladder import parse_conn_id

    try:
        return parse_conn_id(text)
    except ValueError as exc:
        raise UsageError(f"--conn: {exc}") from None


def _refuse_repeats(paths: list[Path], loaded: list[Trace]) -> None:
    """The same trace given twice would draw every segment twice, interleaved: refuse it."""
    from rtcp.trace.ladder import same_trace

    for j in range(len(loaded)):
        for i in range(j):
            if same_trace(loaded[i], loaded[j]):
                raise UsageError(
                    f"{paths[j]} is the same trace as {paths[i]}: give each trace once"
                )


def explain_command(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE", show_default=False,
            help="Trace files (--trace) of the sender, the receiver and the proxy.",
        ),
    ],
    width_text: str = typer.Option(
        str(DEFAULT_WIDTH), "--width", metavar="COLUMNS",
        help=f"Width of the drawing (>= {MIN_WIDTH}).",
    ),
    full: bool = typer.Option(
        False, "--full", help="Draw every segment (long transfers are condensed by default)."
    ),
    conn: str | None = typer.Option(None, "--conn", metavar="ID", help=CONN_HELP),
) -> None:
    """Draw a transfer as a TCP ladder diagram from its traces.

    Example: rtcp explain send.jsonl recv.jsonl proxy.jsonl

    Give any of the traces of one transfer: with the proxy's, a lost datagram stops at an X in
    the middle; with the receiver's, out-of-order and duplicate arrivals are marked. Long
    transfers are condensed: the handshake, the first segments, every loss and its repair and
    the close are drawn in full, each stretch between them is one summary line.
    """
    from rtcp.trace.ladder import UnknownConnection, render_ladder

    width = with_flag("--width", parse_count, width_text, MIN_WIDTH)
    conn_id = _conn_option(conn)
    paths = [Path(p) for p in traces]
    loaded = [_load(p) for p in paths]
    _refuse_repeats(paths, loaded)
    if not any(
        r.get("event") in ("segment_sent", "segment_received", "proxy_decision")
        for t in loaded for r in t.records
    ):
        raise UsageError("the traces hold no segments: nothing to draw")
    try:
        text = render_ladder(loaded, width=width, full=full, conn=conn_id)
    except UnknownConnection as exc:
        raise UsageError(f"--conn: {exc}") from None
    sys.stdout.write(text)
    sys.stdout.flush()


def plot_command(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE", show_default=False,
            help="The trace (--trace) of the sender or the receiver; optionally the proxy's"
            " too, whose impairments the title then names.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="FILE.png", show_default=False,
            help="Where to write the graph (.png, .svg or .pdf; no suffix: .png is added).",
        ),
    ],
    conn: str | None = typer.Option(None, "--conn", metavar="ID", help=CONN_HELP),
    network: Annotated[
        Path | None,
        typer.Option(
            "--network", metavar="PROXY.jsonl", show_default=False,
            help="The proxy's trace: mark its live changes (scenario steps, control API) "
            "on the time axis.",
        ),
    ] = None,
) -> None:
    """Draw the time-sequence graph (tcptrace style) of a transfer, with cwnd, bytes in flight
    and SRTT below it.

    Example: rtcp plot send.jsonl proxy.jsonl -o transfer.png

    Time 0 is the connection's first segment, as in `rtcp explain`. A proxy's trace (given
    after the endpoint's, or with --network) names the impairments in the title and marks its
    live changes (scenario steps, control API) on the time axis.

    Needs matplotlib: pip install 'rtcp\\[plot]'.
    """
    from rtcp.trace.plot import output_path, plot_trace, require_matplotlib

    require_matplotlib()  # the install hint before anything else
    conn_id = _conn_option(conn)
    paths = [Path(p) for p in traces]
    if network is not None:
        paths.append(network)
    loaded = [_load(p) for p in paths]
    _refuse_repeats(paths, loaded)
    endpoints = [
        (p, t) for p, t in zip(paths, loaded, strict=True)
        if not t.is_proxy or any(r.get("event", "").startswith("segment_") for r in t.records)
    ]
    if not endpoints:
        raise UsageError(f"{paths[0]} is a proxy trace: plot the sender's or the receiver's")
    if len(endpoints) > 1:
        raise UsageError(
            f"{endpoints[0][0]} and {endpoints[1][0]}: one endpoint's trace per plot"
            " (the sender's or the receiver's; the proxy's may be added)"
        )
    endpoint = endpoints[0][1]
    proxies = [t for t in loaded if t.is_proxy and t is not endpoint]
    proxy_records = [r for t in proxies for r in t.records]
    marks: list[tuple[float, str]] = []
    if proxies:
        from rtcp.trace.ladder import _time_bases
        from rtcp.trace.network_changes import change_marks

        bases = _time_bases([endpoint, *proxies])  # the proxies' times on this trace's axis
        marks = [(t - bases[0], label) for t, _, label in change_marks(proxies, bases[1:])]
    written, _ = output_path(output)
    try:
        plot_trace(
            endpoint.records, output, conn=conn_id, proxy_records=proxy_records, marks=marks
        )
    except OSError as exc:
        raise LocalIOError(f"cannot write {written}: {exc.strerror or exc}") from None
    except ValueError as exc:  # matplotlib: unknown output format
        raise UsageError(f"-o {output}: {exc}") from None
    print(f"wrote {written}", file=sys.stderr)


# --- helpers for send, recv and proxy ------------------------------------------------------


def open_trace(path: str | os.PathLike[str] | None, role: str, *, explain: bool = False,
               clock_start: float | None = None) -> TraceWriter | None:
    """The writer for --trace FILE (and/or --explain, which needs a trace: a temporary file
    when no --trace was given), or None when neither is asked for."""
    if path is None and not explain:
        return None
    from rtcp.trace.writer import TraceWriter

    try:
        if path is None:
            fd, tmp = tempfile.mkstemp(prefix="rtcp-trace-", suffix=".jsonl")
            os.close(fd)
            writer = TraceWriter(tmp, role, clock_start)
            writer.temporary = True  # type: ignore[attr-defined]
            return writer
        return TraceWriter(path, role, clock_start)
    except OSError as exc:
        raise LocalIOError(f"--trace: cannot write {path}: {exc.strerror or exc}") from None


def finish_trace(writer: TraceWriter | None, *, explain: bool = False,
                 width: int = DEFAULT_WIDTH, full: bool = False) -> str | None:
    """Close the writer; with explain, return the ladder of its trace. A temporary trace
    (--explain without --trace) is deleted."""
    if writer is None:
        return None
    writer.close()
    try:
        if not explain or writer.path is None:
            return None
        from rtcp.trace.ladder import Trace, render_ladder
        from rtcp.trace.writer import read_trace

        return render_ladder([Trace(read_trace(writer.path), name=writer.path.name)],
                             width=width, full=full)
    finally:
        if getattr(writer, "temporary", False) and writer.path is not None:
            try:
                writer.path.unlink()
            except OSError:
                pass


def open_pcap(path: str | os.PathLike[str] | None) -> PcapWriter | None:
    """The writer for --pcap FILE, or None."""
    if path is None:
        return None
    from rtcp.trace.pcap import PcapWriter

    try:
        return PcapWriter(path)
    except OSError as exc:
        raise LocalIOError(f"--pcap: cannot write {path}: {exc.strerror or exc}") from None
