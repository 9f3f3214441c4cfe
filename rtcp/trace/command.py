"""`rtcp explain` and `rtcp plot`, and the helpers send/recv/proxy use for --trace, --pcap and
--explain."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rtcp.errors import LocalIOError, UsageError
from rtcp.trace.ladder import DEFAULT_WIDTH, MIN_WIDTH, Trace, render_ladder
from rtcp.trace.pcap import PcapWriter
from rtcp.trace.writer import TraceWriter, read_trace


def _load(path: Path) -> Trace:
    try:
        records = read_trace(path)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not an rtcp trace: {exc}") from None
    if not records:
        raise UsageError(f"{path} is empty: not an rtcp trace")
    return Trace(records, name=path.name)


def explain_command(
    traces: Annotated[
        list[Path],
        typer.Argument(
            metavar="TRACE", show_default=False,
            help="Trace files (--trace) of the sender, the receiver and the proxy.",
        ),
    ],
    width: int = typer.Option(
        DEFAULT_WIDTH, "--width", metavar="COLUMNS", help=f"Width of the drawing (>= {MIN_WIDTH})."
    ),
    full: bool = typer.Option(
        False, "--full", help="Draw every segment (long transfers are condensed by default)."
    ),
) -> None:
    """Draw a transfer as a TCP ladder diagram from its traces.

    Example: rtcp explain send.jsonl recv.jsonl proxy.jsonl

    Give any of the traces of one transfer: with the proxy's, a lost datagram stops at an X in
    the middle; with the receiver's, out-of-order and duplicate arrivals are marked. Long
    transfers are condensed: the handshake, the first segments, every loss and its repair and
    the close are drawn in full, each stretch between them is one summary line.
    """
    if width < MIN_WIDTH:
        raise UsageError(f"--width: {width} is too narrow (at least {MIN_WIDTH})")
    loaded = [_load(Path(p)) for p in traces]
    if not any(
        r.get("event") in ("segment_sent", "segment_received", "proxy_decision")
        for t in loaded for r in t.records
    ):
        raise UsageError("the traces hold no segments: nothing to draw")
    sys.stdout.write(render_ladder(loaded, width=width, full=full))
    sys.stdout.flush()


def plot_command(
    trace: Annotated[
        Path,
        typer.Argument(
            metavar="TRACE", show_default=False,
            help="A trace file (--trace) of the sender or the receiver.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="FILE.png", show_default=False,
            help="Where to write the graph (.png, .svg or .pdf).",
        ),
    ],
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

    Example: rtcp plot send.jsonl -o transfer.png --network proxy.jsonl

    Needs matplotlib: pip install 'rtcp\\[plot]'.
    """
    from rtcp.trace.plot import plot_trace, require_matplotlib

    require_matplotlib()  # the install hint before anything else
    loaded = _load(Path(trace))
    if loaded.is_proxy and not any(
        r.get("event", "").startswith("segment_") for r in loaded.records
    ):
        raise UsageError(f"{trace} is a proxy trace: plot the sender's or the receiver's")
    marks: list[tuple[float, str]] = []
    if network is not None:
        from rtcp.trace.ladder import _time_bases
        from rtcp.trace.network_changes import change_marks

        proxy = _load(Path(network))
        bases = _time_bases([loaded, proxy])  # the proxy's times on this trace's axis
        marks = [(t - bases[0], label) for t, _, label in change_marks([proxy], bases[1:])]
    try:
        plot_trace(loaded.records, output, marks=marks)
    except OSError as exc:
        raise LocalIOError(f"cannot write {output}: {exc.strerror or exc}") from None
    except ValueError as exc:  # matplotlib: unknown output format
        raise UsageError(f"-o {output}: {exc}") from None
    print(f"wrote {output}", file=sys.stderr)


# --- helpers for send, recv and proxy ------------------------------------------------------


def open_trace(path: str | os.PathLike[str] | None, role: str, *, explain: bool = False,
               clock_start: float | None = None) -> TraceWriter | None:
    """The writer for --trace FILE (and/or --explain, which needs a trace: a temporary file
    when no --trace was given), or None when neither is asked for."""
    if path is None and not explain:
        return None
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
    try:
        return PcapWriter(path)
    except OSError as exc:
        raise LocalIOError(f"--pcap: cannot write {path}: {exc.strerror or exc}") from None
