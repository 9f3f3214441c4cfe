"""The proxy's decisions in the trace, without touching the proxy: a wrapper around an Impairer.

`TracingImpairer(impairer, writer, "up")` has the Impairer's `process(data, now)` signature and
returns exactly what the wrapped one returns; on the way it records one `proxy_decision` event
per datagram: its id, direction, size, the decoded rtcp header (so a reader can match the drop to
the sender's segment), and what became of it: lost (and why: loss, mtu, queue), duplicated,
corrupted (which copy), reordered (picked by the reorder knob, or released before an earlier
datagram still held), and the delay of each copy.

The cause comes from the Impairer's own counters (their change across the call); what cannot be
read there is found by comparing the input with the output.

Wiring (rtcp proxy --trace FILE):

    writer = TraceWriter(path, role="proxy")
    up = TracingImpairer(Impairer(cfg_up, make_rng(seed, "up")), writer, "up")
    down = TracingImpairer(Impairer(cfg_down, make_rng(seed, "down")), writer, "down")
    Proxy(listen, upstream, up, down, ...)      # passthrough is False: every datagram is seen
"""

from __future__ import annotations

import bisect
import dataclasses
import struct
from typing import Any

from rtcp.core import wire
from rtcp.trace.writer import MASK32, TraceWriter

_RAW_HEADER = struct.Struct("!BBHIIIIHHI")
MAX_TRACKED_CONNECTIONS = 10_000


def header_fields(data: bytes) -> dict[str, Any]:
    """The rtcp header of a datagram as trace fields; `checksum_ok` says whether it verified.
    Never raises: a datagram too short for a header gives {"parse": "<error>"}."""
    try:
        seg = wire.decode(data)
    except wire.ChecksumError:
        return _raw_header(data, checksum_ok=False)
    except wire.WireError as exc:
        if len(data) >= wire.HEADER_BYTES:
            fields = _raw_header(data, checksum_ok=None)
            fields["parse"] = str(exc)
            return fields
        return {"parse": str(exc)}
    fields: dict[str, Any] = {
        "flags": seg.flag_names(),
        "src": seg.src_id,
        "dst": seg.dst_id,
        "seq": seg.seq,
        "ack": seg.ack,
        "len": len(seg.payload),
        "window": seg.window,
        "checksum_ok": True,
    }
    if seg.sack_blocks:
        fields["sack"] = [list(b) for b in seg.sack_blocks]
    if seg.pmtu_ack is not None:
        fields["pmtu_ack"] = seg.pmtu_ack
    return fields


def _raw_header(data: bytes, checksum_ok: bool | None) -> dict[str, Any]:
    _ver, flags, window, src, dst, seq, ack, opt_len, _res, _crc = _RAW_HEADER.unpack_from(data)
    return {
        "flags": wire.flag_names(flags),
        "src": src,
        "dst": dst,
        "seq": seq,
        "ack": ack,
        "len": max(0, len(data) - wire.HEADER_BYTES - opt_len),
        "window": window,
        "checksum_ok": checksum_ok,
    }


class TracingImpairer:
    """An Impairer that also records each decision; every other attribute (stats, config, rng)
    is the wrapped Impairer's."""

    passthrough = False  # the proxy loop's fast path would bypass process(): never take it
    trace_errors = 0  # decisions that could not be written

    def __init__(self, impairer: Any, writer: TraceWriter, direction: str):
        self.inner = impairer
        self.writer = writer
        self.direction = direction
        self._held: list[float] = []  # sorted release times of copies not yet released
        # connection id -> its ISN, learnt from SYNs; shared by both directions of one writer
        self._isn: dict[int, int] = writer.__dict__.setdefault("_proxy_isn", {})
        config = getattr(impairer, "config", None)
        if dataclasses.is_dataclass(config):  # what the direction does, for plot titles
            writer.write("proxy_config", {"dir": direction, **dataclasses.asdict(config)}, t=0.0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def process(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        inner = self.inner
        st = inner.stats
        before = (st.dropped_mtu, st.dropped_loss, st.dropped_queue, st.reordered, st.dropped_down)
        out = inner.process(data, now)
        after = (st.dropped_mtu, st.dropped_loss, st.dropped_queue, st.reordered, st.dropped_down)
        try:
            self._record(data, now, out, before, after)
        except (OSError, ValueError):  # a full disk must not stop the forwarding: count it
            self.trace_errors += 1
        return out

    def _record(self, data, now, out, before, after) -> None:
        writer = self.writer
        fields: dict[str, Any] = {
            "id": writer.next_datagram_id(),
            "dir": self.direction,
            "size": len(data),
        }
        fields.update(header_fields(data))
        self._relative(fields)
        held = self._held
        if held and held[0] <= now:
            del held[: bisect.bisect_right(held, now)]
        if not out:
            fields["decision"] = "lost"
            if after[0] > before[0]:
                fields["cause"] = "mtu"
            elif after[2] > before[2]:
                fields["cause"] = "queue"
            elif after[4] > before[4]:
                fields["cause"] = "down"  # the link was down (rtcp.proxy.control)
            else:
                fields["cause"] = "loss"
            fields["copies"] = 0
        else:
            corrupted = [i for i, (_, copy) in enumerate(out) if copy != data]
            delays = [round(release - now, 6) for release, _ in out]
            overtakes = 0
            for release, _ in out:
                n = len(held) - bisect.bisect_right(held, release)
                overtakes = max(overtakes, n)
                if release > now:
                    bisect.insort(held, release)
            if corrupted:
                decision = "corrupted"
            elif len(out) > 1:
                decision = "duplicated"
            elif after[3] > before[3] or overtakes:
                decision = "reordered"
            elif delays[0] > 0:
                decision = "delayed"
            else:
                decision = "forwarded"
            fields["decision"] = decision
            fields["copies"] = len(out)
            fields["delay"] = delays[0]
            if len(out) > 1:
                fields["delays"] = delays
            fields["duplicated"] = len(out) > 1
            fields["corrupted"] = bool(corrupted)
            if corrupted:
                fields["corrupted_copies"] = corrupted
            fields["reordered"] = after[3] > before[3] or overtakes > 0
            if overtakes:
                fields["overtakes"] = overtakes
        writer.write("proxy_decision", fields, t=now - writer.clock_start)

    def _relative(self, fields: dict[str, Any]) -> None:
        """Relative seq/ack as Wireshark shows them, once the proxy has seen both SYNs."""
        src = fields.get("src")
        if src is None or "seq" not in fields:
            return
        isn = self._isn
        if "SYN" in fields.get("flags", "").split("|"):
            if len(isn) >= MAX_TRACKED_CONNECTIONS:
                isn.clear()
            isn[src] = fields["seq"]
        if src in isn:
            fields["rel_seq"] = (fields["seq"] - isn[src]) & MASK32
        dst = fields.get("dst")
        if dst in isn and "ACK" in fields.get("flags", "").split("|"):
            fields["rel_ack"] = (fields["ack"] - isn[dst]) & MASK32
