"""The trace writer: one JSON object per line, written by the connection's event hook.

The core is sans-IO: it calls `ConnectionConfig.event_hook(event_name, fields)` (with `conn`, the
local connection id, among the fields) and knows nothing of time or files. This writer adds the
time (seconds since `clock_start`, from the `clock` it was given: time.monotonic in a process,
the virtual clock in the simulator), the role of the process, and the few derived fields a reader
wants beside the raw ones (relative sequence numbers where the core gives none, relative SACK
blocks, the cause of a SYN or FIN retransmission). Every line is buffered; close() flushes.

    writer = TraceWriter("send.jsonl", role="send")
    config = ConnectionConfig(event_hook=writer.hook())
    ...
    writer.close()

docs/trace-format.md lists every event and its fields.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import IO, Any

from rtcp.trace.files import OwnedFile

TRACE_FORMAT_VERSION = 1
BUFFER_BYTES = 1 << 20
MASK32 = 0xFFFFFFFF
_HALF = 1 << 31


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


_dumps = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def unwrap_near(value32: int, reference: int) -> int:
    """The 64-bit number congruent to value32 (mod 2**32) nearest to reference."""
    base = reference - (reference & MASK32) + value32
    if base - reference > _HALF:
        base -= 1 << 32
    elif reference - base > _HALF:
        base += 1 << 32
    return base


class _ConnState:
    """What the writer learns about one connection to derive relative numbers."""

    __slots__ = ("irs", "iss", "max_end", "rto_fired")

    def __init__(self) -> None:
        self.iss: int | None = None  # our initial sequence number (wire value)
        self.irs: int | None = None  # the peer's
        self.max_end = 0  # highest relative sequence end sent (unwrapped)
        self.rto_fired = False


def normalize_flags(flags: Any) -> str:
    """The core names a SYN-ACK "SYN-ACK" in one place and "SYN|ACK" elsewhere: one spelling."""
    if not isinstance(flags, str):
        return str(flags)
    if flags == "SYN-ACK":
        return "SYN|ACK"
    return flags


class TraceWriter(OwnedFile):
    """Writes trace records (JSON lines) for one process; see the module docstring."""

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | IO[str],
        role: str,
        clock_start: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if isinstance(path_or_file, (str, os.PathLike)):
            self.path: Path | None = Path(path_or_file)
            self._file: IO[str] = open(  # noqa: SIM115 - closed by close()
                self.path, "w", encoding="utf-8", buffering=BUFFER_BYTES
            )
            self._owns_file = True
        else:
            self.path = None
            self._file = path_or_file
            self._owns_file = False
        self.role = role
        self.clock = clock
        # With clock_start given the clock is not read here (a simulator may not exist yet):
        # the writer is taken to be made at clock_start.
        if clock_start is None:
            clock_start = clock()
        self.clock_start = clock_start
        self.records = 0
        self._conns: dict[Any, _ConnState] = {}
        self._next_datagram_id = 0
        self._closed = False
        self._write_line(
            {
                "t": 0.0,
                "role": role,
                "event": "trace_start",
                "format": TRACE_FORMAT_VERSION,
                "clock_start": self.clock_start,
                "unix_time": round(time.time(), 6),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
        )

    # --- the hook ----------------------------------------------------------------------

    def hook(self, conn: Any = None) -> Callable[[str, dict], None]:
        """A callable for ConnectionConfig.event_hook. `conn`: an optional name for the
        connection (e.g. the peer address), added to each of its records as `peer`; the core
        itself puts the numeric local connection id in `conn`."""
        emit = self._emit
        if conn is None:
            def hook(event: str, fields: dict) -> None:
                emit(event, fields, None, None)
        else:
            peer = str(conn)

            def hook(event: str, fields: dict) -> None:
                emit(event, fields, None, peer)
        return hook

    def write(self, event: str, fields: dict | None = None, *, t: float | None = None) -> None:
        """Record an event that does not come from a connection (the proxy, the application).
        `t`: seconds since clock_start (default: now by the writer's clock)."""
        self._emit(event, dict(fields or {}), t, None)

    def next_datagram_id(self) -> int:
        """Datagram ids for the proxy's decisions: 1, 2, 3 ... per writer."""
        self._next_datagram_id += 1
        return self._next_datagram_id

    def _emit(self, event: str, fields: dict, t: float | None, peer: str | None) -> None:
        if self._closed:
            return
        if t is None:
            t = self.clock() - self.clock_start
        rec: dict[str, Any] = {"t": round(t, 6), "role": self.role}
        if "conn" in fields:
            rec["conn"] = fields.pop("conn")
        rec["event"] = event
        if peer is not None:
            rec["peer"] = peer
        rec.update(fields)
        if event == "segment_sent" or event == "segment_received":
            self._enrich_segment(rec, event == "segment_sent")
        elif event == "timer_fired" and rec.get("timer") == "retransmission":
            self._state(rec.get("conn")).rto_fired = True
        self._write_line(rec)

    def _state(self, conn: Any) -> _ConnState:
        st = self._conns.get(conn)
        if st is None:
            st = self._conns[conn] = _ConnState()
        return st

    def _enrich_segment(self, rec: dict, sent: bool) -> None:
        st = self._state(rec.get("conn"))
        flags = rec["flags"] = normalize_flags(rec.get("flags", ""))
        names = flags.split("|")
        syn = "SYN" in names
        has_ack = "ACK" in names
        seq = rec.get("seq", 0)
        length = rec.get("len", 0) or 0
        if sent:
            if "rel_seq" not in rec:
                if syn:
                    rec["rel_seq"] = 0
                    rec["rel_ack"] = 1 if has_ack else 0
                elif st.iss is not None:
                    rec["rel_seq"] = (seq - st.iss) & MASK32
                    if st.irs is not None:
                        rec["rel_ack"] = (rec.get("ack", 0) - st.irs) & MASK32
            elif not syn:
                st.iss = (seq - rec["rel_seq"]) & MASK32
            if syn and has_ack and st.irs is None and rec.get("ack") is not None:
                st.irs = (rec["ack"] - 1) & MASK32
            rel = rec.get("rel_seq")
            fin = "FIN" in names
            if rel is not None and (length or syn or fin) and "PROBE" not in names:
                start = unwrap_near(rel, st.max_end)
                end = start + length + syn + fin
                if end <= st.max_end and not rec.get("retransmit"):
                    # The core names the cause of data retransmissions; a SYN or FIN is only
                    # ever resent by the retransmission timer.
                    rec["retransmit"] = "timeout"
                    rec["retransmit_inferred"] = True
                st.max_end = max(st.max_end, end)
            rec.setdefault("retransmit", None)
            sack = rec.get("sack")
            if sack and st.irs is not None:  # our SACK blocks are in the peer's numbers
                irs = st.irs
                rec["rel_sack"] = [[(lo - irs) & MASK32, (hi - irs) & MASK32] for lo, hi in sack]
        else:
            if syn:
                if st.irs is None:
                    st.irs = seq
                if not has_ack:
                    rec["rel_ack"] = 0
            elif "rel_seq" in rec and st.irs is None and rec.get("rel_seq"):
                st.irs = (seq - rec["rel_seq"]) & MASK32
            if has_ack and st.iss is None and syn and rec.get("ack") is not None:
                st.iss = (rec["ack"] - 1) & MASK32
            sack = rec.get("sack")
            if sack and st.iss is not None:
                iss = st.iss
                rec["rel_sack"] = [[(lo - iss) & MASK32, (hi - iss) & MASK32] for lo, hi in sack]

    def _write_line(self, rec: dict) -> None:
        self._file.write(_dumps(rec))
        self._file.write("\n")
        self.records += 1

    # --- lifetime ----------------------------------------------------------------------



def read_trace(path_or_file: str | os.PathLike[str] | IO[str]) -> list[dict]:
    """Every record of a trace file, in order. Blank lines and a torn last line (a process
    killed mid-write) are skipped; any other bad line raises ValueError naming its number."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, encoding="utf-8") as f:
            return _parse_lines(f, str(path_or_file))
    return _parse_lines(path_or_file, getattr(path_or_file, "name", "<trace>"))


def _parse_lines(f: IO[str] | io.StringIO, name: str) -> list[dict]:
    records: list[dict] = []
    lines = f.read().split("\n")
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1].strip()):
                break  # torn last line
            raise ValueError(f"{name}:{number}: not a trace line ({exc.msg})") from None
        if not isinstance(rec, dict) or "event" not in rec:
            raise ValueError(f"{name}:{number}: not a trace record (no 'event')")
        records.append(rec)
    return records
