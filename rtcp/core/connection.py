"""One TCP-style connection as a sans-IO state machine (RFC 9293 over UDP datagrams).

The caller owns the socket and the clock: it feeds datagrams with receive_datagram(data, now),
takes datagrams_to_send(now), sleeps until get_timer() and calls handle_timer(now). What happened
comes out of next_event(). Nothing here blocks, sleeps or reads a clock.

Internally every sequence number is a 64-bit absolute offset (the SYN is offset 0, stream byte i
is offset i + 1, the FIN follows the last byte), converted to 32-bit wire numbers only at the
edge (rtcp.core.seqnum), so wraparound is handled in exactly two functions.

Where to find each mechanism:
- state transitions: TRANSITIONS and _set_state
- handshake and option negotiation: connect, _on_listen, _on_syn_sent, _negotiate
- segment acceptability (RFC 9293 3.10.7.4): _acceptable
- ACK processing, window update, dup ACKs, recovery entry/exit: _process_ack
- receiving data, reassembly, delayed ACKs: _process_data
- sending, segmentation, retransmission, pacing by cwnd and peer window: datagrams_to_send
- retransmission timer (RFC 6298), persist timer, delayed ACK, TIME-WAIT, user timeout:
  get_timer and handle_timer
"""

from __future__ import annotations

import random
import secrets
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from rtcp.core import events, wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.congestion import RateSample, make_controller
from rtcp.core.pacing import paced_rate
from rtcp.core.pmtud import PathMtuDiscovery
from rtcp.core.reassembly import Reassembler
from rtcp.core.rtt import RttEstimator
from rtcp.core.scoreboard import DUP_THRESH, Scoreboard
from rtcp.core.sendbuffer import SendBuffer
from rtcp.core.seqnum import unwrap, wrap
from rtcp.core.wire import ACK, FIN, PROBE, RST, SYN

MAX_WINDOW_FIELD = 0xFFFF
TS_MASK = 0xFFFFFFFF
_DST = struct.Struct("!I")  # a datagram's dst_id, for receive_datagrams' demultiplexing
_DST_OFFSET = 8
_FLAGS_OFFSET = 1
# A data segment's header followed by its timestamps option's kind, length and TSval.
_HEADER_TS = struct.Struct(wire.HEADER.format + "BBI")
TS_TICKS_PER_S = 1_000_000  # timestamps count microseconds: loopback RTTs are well under 1 ms
PAWS_IDLE_LIMIT_S = 1000.0  # RFC 7323 5.5, scaled to the microsecond clock's 35-minute half-wrap
MAX_PERSIST_S = 60.0
PACING_BURST_S = 0.002  # a paced sender may catch up this much after an idle moment
# A segment whose pacing time is this close goes now: the driver's sleep (epoll) has 1 ms
# granularity, so waiting for a sub-millisecond deadline would cost a whole millisecond.
PACING_SLACK_S = 0.001
LOSSY_HANDSHAKE_TIMEOUTS = 2  # handshake timeouts after which the initial window is 1 segment
TLP_MAX_PROBES = 2  # probes before the RTO takes over
TLP_MIN_PTO_S = 0.01  # RFC 8985 7.2 suggests 10 ms as the floor of the probe timeout
MAX_DUP_THRESH = 256  # the most reordering (in segments) the SACK loss rule tolerates
RACK_MIN_REORDER_WINDOW_S = 0.001  # RFC 8985 reo_wnd is min_RTT/4; at least this much
# RFC 5961 7: challenge ACKs are rate-limited (Linux: a few per second and socket), so that
# forged segments cannot turn a connection into an ACK reflector.
CHALLENGE_ACKS_PER_S = 10


class State(Enum):
    """RFC 9293 3.3.2 connection states."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


S = State
# Every legal transition, as RFC 9293 figure 5 draws them (plus reset/abort/timeout from anywhere).
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.CLOSED, "connect"): S.SYN_SENT,
    (S.LISTEN, "recv SYN"): S.SYN_RECEIVED,
    (S.LISTEN, "close"): S.CLOSED,
    (S.SYN_SENT, "recv SYN-ACK"): S.ESTABLISHED,
    (S.SYN_SENT, "recv SYN"): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_SENT, "close"): S.CLOSED,
    (S.SYN_RECEIVED, "recv ACK of SYN"): S.ESTABLISHED,  # a close() here waits for this
    (S.ESTABLISHED, "close"): S.FIN_WAIT_1,
    (S.ESTABLISHED, "recv FIN"): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, "recv ACK of FIN"): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, "recv FIN"): S.CLOSING,  # simultaneous close
    (S.FIN_WAIT_2, "recv FIN"): S.TIME_WAIT,
    (S.CLOSE_WAIT, "close"): S.LAST_ACK,
    (S.CLOSING, "recv ACK of FIN"): S.TIME_WAIT,
    (S.LAST_ACK, "recv ACK of FIN"): S.CLOSED,
    (S.TIME_WAIT, "2MSL timeout"): S.CLOSED,
}
_ANY_STATE_EVENTS = ("recv RST", "abort", "user timeout")

# States in which our FIN may be outstanding, and in which the peer may still send data.
_SYNCHRONIZED = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK, S.TIME_WAIT}
)
_PEER_MAY_SEND = frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


class LocalProtocolError(Exception):
    """The caller used the API wrongly (h11's name): a bug in the caller, not the network."""


@dataclass
class ConnectionStats:
    """Counters a user, a progress bar or the benchmark reads."""

    segments_sent: int = 0
    segments_received: int = 0
    bytes_sent: int = 0  # datagram bytes on the wire
    bytes_received: int = 0
    data_bytes_sent: int = 0  # payload bytes, first transmissions only
    data_bytes_received: int = 0  # in-order payload bytes delivered
    retransmissions: int = 0
    retransmits_timeout: int = 0
    retransmits_fast: int = 0  # first retransmission of a recovery episode (3 dup ACKs / SACK)
    retransmits_sack: int = 0  # further repairs inside SACK/NewReno recovery
    retransmits_tlp: int = 0  # tail loss probes that resent the last segment (RFC 8985 7)
    retransmits_synack: int = 0  # first segment resent to answer a retransmitted SYN-ACK
    spurious_retransmissions: int = 0  # ACKs proving a retransmission needless (RFC 3522 Eifel)
    timeouts: int = 0
    fast_recoveries: int = 0
    duplicate_segments: int = 0
    out_of_order_segments: int = 0
    out_of_order_refused: int = 0  # segments dropped: one more held range than MAX_HELD_RANGES
    checksum_failures: int = 0
    malformed_datagrams: int = 0
    foreign_datagrams: int = 0  # well-formed but for another connection id
    challenge_acks_limited: int = 0  # challenge ACKs not sent (RFC 5961 7 rate limit)
    segments_without_timestamps: int = 0  # dropped once timestamps were negotiated
    window_probes: int = 0
    pmtu_probes_sent: int = 0
    pmtu_probes_acked: int = 0
    pmtu_black_holes: int = 0
    datagram_bytes: int = 0  # the current largest datagram (path MTU as discovered)
    srtt_s: float | None = None
    rttvar_s: float | None = None
    min_rtt_s: float | None = None
    rto_s: float = 1.0
    cwnd_bytes: int = 0
    ssthresh_bytes: int = 0
    peer_window_bytes: int = 0
    bytes_in_flight: int = 0


class Connection:
    """A TCP-style connection over datagrams. See the module docstring for the driving loop."""

    def __init__(self, config: ConnectionConfig | None = None, *, is_client: bool, now: float):
        self.config = cfg = config or ConnectionConfig()
        self.is_client = is_client
        self._hook = cfg.event_hook
        self.local_id = cfg.local_id if cfg.local_id is not None else _random_id()
        self.peer_id = 0
        self.state = State.CLOSED if is_client else State.LISTEN
        self._events: deque[events.Event] = deque()
        self.stats = ConnectionStats(rto_s=cfg.initial_rto_s)
        self._closed_reported = False

        # Send side (RFC 9293 3.3.1 SND.*), as absolute offsets.
        self.iss = cfg.initial_seq if cfg.initial_seq is not None else secrets.randbits(32)
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_wnd = 0
        self._snd_wl1 = -1  # offset of the segment that last updated snd_wnd
        self._snd_wl2 = -1  # ack of that segment
        self._max_snd_wnd = 0  # the largest window the peer offered (RFC 5961 5.2 MAX.SND.WND)
        self._challenge_acks_at = 0.0  # start of the second the challenge ACK count is for
        self._challenge_acks = 0
        self._sndbuf = SendBuffer(1)  # queued bytes from the first unacknowledged one on
        self._send_blocked = False
        self._fin_queued = False  # close() called: FIN follows the data
        # Like Linux's TCP_CORK: the application says more data follows, so a segment shorter
        # than the MSS waits for it (the sender's file chunks do not end on segment edges).
        # Cleared by the application when its stream is complete; close() overrides it.
        self.cork = False
        self._fin_offset: int | None = None  # offset the FIN occupies once sent
        self._syn_pending = False  # a SYN or SYN-ACK is to be (re)sent
        self._rst_pending: tuple[int, int, int, int] | None = None  # seq, ack, flags, dst_id
        self._probe_pending = False
        self.scoreboard = Scoreboard()
        self.rtt = RttEstimator(
            initial_rto_s=cfg.initial_rto_s, min_rto_s=cfg.min_rto_s, max_rto_s=cfg.max_rto_s,
            max_backoff_rto_s=cfg.max_backoff_rto_s,
        )
        self.mss = cfg.mss_bytes
        self._base_mss = cfg.mss_bytes
        self.pmtud = PathMtuDiscovery()  # replaced once the handshake has told us the peer's MSS
        self._pmtu_ack_pending: int | None = None
        self._consecutive_rtos = 0
        self._cc_rng = random.Random(cfg.random_seed) if cfg.random_seed is not None else None
        self.cc = make_controller(
            cfg.congestion_control, self.mss, initial_window_segments=cfg.initial_window_segments,
            rng=self._cc_rng,
        )
        self._dupacks = 0
        self._reorder_window_scale = 1  # RACK's reo_wnd in units of min_RTT/4, grown by Eifel
        self._in_recovery = False
        self._recover = 0  # RFC 6582 "recover": snd_nxt when the last recovery or RTO began
        self._dupack_credit = 0  # NewReno without SACK: bytes that dup ACKs say have left
        self._tlp_deadline: float | None = None  # tail loss probe timer (RFC 8985 7)
        self._rack_deadline: float | None = None  # RACK reordering timer (RFC 8985 6.3)
        self._tlp_pending = False  # the probe is due: send it with the next datagrams
        self._tlp_in_flight = 0  # probes sent since data was last delivered
        self._last_send_at = now  # when new data last left (RFC 5681 4.1 idle restart)
        self._pace_next = 0.0  # earliest time the next paced segment may leave
        self._pacing_blocked = False  # data waits for _pace_next (a timer the driver honours)
        self._max_pacing_rate = cfg.max_pacing_rate_bytes_per_s  # the user's cap (pacing.py)

        # Receive side (RCV.*).
        self.irs = 0
        self.rcv_nxt = 0
        self._rcvbuf: deque[bytes] = deque()  # in-order bytes not yet read, as received
        self._rcv_buffered = 0  # their total length
        self._reasm = Reassembler(1)
        self._peer_fin_offset: int | None = None
        self._ack_now = False
        self._unacked_segments = 0
        self._quickacks = cfg.quickack_segments  # segments to ACK at once (quick-ACK mode)
        # RFC 9293 3.8.6.2.2: the right edge of the window last advertised (an offset), which
        # never moves left, and the largest segment the peer sent (Linux's rcv_mss): the edge
        # moves right only in steps of min(that, half the buffer).
        self._rcv_adv_edge = 0
        self._rcv_mss = cfg.mss_bytes
        self._immediate: list[bytes] = []  # duplicate ACKs built while receiving
        self._sack_touched: list[int] = []  # SACK ranges changed since the last ACK (starts)
        self._stream_ended = False

        # Negotiated options.
        self.sack_ok = False
        self.ts_ok = False
        self.ws_ok = False
        self._snd_wscale = 0  # shift the peer applies to windows it sends us
        self._rcv_wscale = _wscale_for(cfg.receive_buffer_bytes) if cfg.window_scaling else 0
        self._ts_recent = 0
        self._ts_recent_at = 0.0
        self._last_ack_sent = 1  # RCV.NXT in the last ACK sent (RFC 7323 4.3 Last.ACK.sent)
        self._ts_now = 0

        # Timers: one absolute deadline each; get_timer() returns the earliest.
        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_backoff = 0
        self._probe_unanswered_since = -1.0  # first window probe sent since the peer was heard
        self._delack_deadline: float | None = None
        self._time_wait_deadline: float | None = None
        self._last_heard = now

    # --- the user's API ----------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Active open: queue a SYN (RFC 9293 3.10.1)."""
        self._set_state("connect")
        self._syn_pending = True
        self.snd_nxt = 1
        self._last_heard = now

    def send(self, data) -> int:
        """Queue bytes for sending; returns how many fit in the send buffer."""
        if self._fin_queued or self.state not in (
            S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSE_WAIT
        ):
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        room = self.send_buffer_space
        if room < len(data):
            self._send_blocked = True
            data = memoryview(data)[:room]
        self._sndbuf.append(data)
        return len(data)

    @property
    def send_buffer_space(self) -> int:
        return max(0, self.config.send_buffer_bytes - len(self._sndbuf))

    @property
    def unsent_bytes(self) -> int:
        return self._sndbuf.end - max(self.snd_nxt, 1)

    @property
    def unacknowledged_bytes(self) -> int:
        """Queued bytes the peer has not acknowledged yet, sent or not."""
        return max(0, self._sndbuf.end - max(self.snd_una, 1))

    def close(self) -> None:
        """Half-close: send FIN after everything already queued; reading stays possible."""
        if self.state is S.SYN_SENT and len(self._sndbuf):
            self._fin_queued = True  # RFC 9293 3.10.4: queued data goes once ESTABLISHED
            return
        if self.state in (S.LISTEN, S.SYN_SENT):
            self._set_state("close")
            self._report_closed("closed", None)
            return
        if self.state is S.SYN_RECEIVED:
            self._fin_queued = True  # RFC 9293 3.10.4: the FIN waits for ESTABLISHED
        elif self.state in (S.ESTABLISHED, S.CLOSE_WAIT) and not self._fin_queued:
            self._fin_queued = True
            self._set_state("close")

    def abort(self) -> None:
        """Send RST and forget the connection (RFC 9293 3.10.5 ABORT; none from TIME-WAIT,
        whose peer has closed already)."""
        if self.state is not S.TIME_WAIT and (
            self.state in _SYNCHRONIZED or self.state is S.SYN_RECEIVED
        ):
            self._rst_pending = (wrap(self.snd_nxt, self.iss), 0, RST, self.peer_id)
        self._enter_closed("aborted", "connection aborted locally")

    def read(self, max_bytes: int = -1) -> bytes:
        """Take in-order received bytes; b"" when none (check StreamEnded for the end)."""
        buf = self._rcvbuf
        if not buf:
            return b""
        if max_bytes < 0 or max_bytes >= self._rcv_buffered:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
            if type(data) is not bytes:
                data = bytes(data)  # a payload lent by receive_datagrams
            buf.clear()
        else:
            # Whole chunks while they fit, then split one: one copy of the bytes, at most.
            parts = []
            want = max_bytes
            while want:
                chunk = buf[0]
                if len(chunk) <= want:
                    parts.append(buf.popleft())
                    want -= len(chunk)
                else:
                    parts.append(chunk[:want])
                    buf[0] = chunk[want:]
                    want = 0
            data = b"".join(parts)
        self._rcv_buffered -= len(data)
        self._maybe_announce_window()
        return data

    def _maybe_announce_window(self) -> None:
        """RFC 9293 3.8.6.2.2 receiver SWS avoidance: reading freed enough room to move the
        right edge by a step (_window_step): announce it now, by the same rule that lets the
        edge move, so that a reader freeing space a few bytes at a time is never left waiting
        on the peer's persist timer."""
        if self.state in _PEER_MAY_SEND and (
            self._receive_window() - max(0, self._rcv_adv_edge - self.rcv_nxt)
            >= self._window_step()
        ):
            self._ack_now = True

    def _window_step(self) -> int:
        """The least the right edge moves by (RFC 9293 3.8.6.2.2: min(Fr x RCV.BUFF,
        Eff.snd.MSS), Fr = 1/2), and at least one window-scale unit."""
        return max(
            min(self.config.receive_buffer_bytes // 2, self._rcv_mss), 1 << self._rcv_wscale
        )

    def _window_field(self) -> int:
        """The window field of a segment about to leave, and the right edge it advertises.

        RFC 9293 3.8.6.2.2 (MUST-39): the edge moves right only when it can move by a step
        (_window_step), to the free space rounded down to whole segments of the peer's size
        (as Linux): a sender then fills it with full segments, never a runt for what a slow
        reader freed. Otherwise it holds, and never moves left (RFC 9293 3.8.6, SHLD-14): the
        held window is rounded up to the scale unit when the buffer has the room, else down
        (a buffer full to within one unit: the buffer is a hard memory limit). Only when the
        application lowers the buffer (a shared memory budget, a refusal) does it follow it."""
        shift = self._rcv_wscale
        free = self._receive_window()
        nxt = self.rcv_nxt
        held = max(0, self._rcv_adv_edge - nxt)
        if self._stream_ended:  # the peer sends no more data: nothing silly to avoid
            field = min(free >> shift, MAX_WINDOW_FIELD)
        elif free - held >= self._window_step():
            mss = self._rcv_mss
            wnd = free - free % mss if free >= mss else free
            field = min(max(wnd, held) >> shift, MAX_WINDOW_FIELD)
        else:
            wnd = min(held, free)
            field = -(-wnd >> shift)
            if field << shift > free:
                field = wnd >> shift
            field = min(field, MAX_WINDOW_FIELD)
        self._rcv_adv_edge = nxt + (field << shift)
        return field

    def read_chunks(self) -> list:
        """Take every in-order received byte as the chunks they arrived in (bytes, or
        memoryviews of bytes lent by receive_datagrams), without joining them: a copy the
        caller may not need."""
        if not self._rcvbuf:
            return []
        chunks = list(self._rcvbuf)
        self._rcvbuf.clear()
        self._rcv_buffered = 0
        self._maybe_announce_window()
        return chunks

    def send_ack_now(self) -> None:
        """Acknowledge what has arrived in the next datagrams_to_send, without the delayed-ACK
        wait: for an application about to block (an fsync), so that the peer does not take
        the silence for a lost tail and retransmit it."""
        if self.state in _SYNCHRONIZED and self._unacked_segments:
            self._ack_now = True

    @property
    def readable(self) -> int:
        return self._rcv_buffered

    def next_event(self) -> events.Event | None:
        return self._events.popleft() if self._events else None

    @property
    def is_closed(self) -> bool:
        """CLOSED: the driver may forget this connection."""
        return self.state is S.CLOSED

    @property
    def last_heard(self) -> float:
        """When the peer was last heard from: its SYN, or a segment past the timestamp check
        (PAWS) that was acceptable or answered with an ACK (a duplicate, a zero-window probe).
        What the user timeout counts from, and what a receiver judges a silent sender by."""
        return self._last_heard

    # --- receiving ---------------------------------------------------------------------

    def receive_datagram(self, data, now: float) -> None:
        """Process one datagram. Never raises for anything the network can send."""
        if (
            self.state is S.ESTABLISHED
            and self._hook is None
            and self._receive_run((data,), 0, now)
        ):
            return  # the next in-order data segment: the fast path took it
        self._receive_general(data, now)

    def _receive_general(self, data, now: float) -> None:
        """Every datagram the fast path does not take: decode it whole, then the RFC 9293
        checks and the state it arrives in."""
        stats = self.stats
        try:
            seg = wire.decode(data, self.config.checksums)
        except wire.ChecksumError:
            stats.checksum_failures += 1
            self._trace("checksum_failure", size=len(data))
            return
        except wire.WireError as exc:
            stats.malformed_datagrams += 1
            self._trace("malformed", size=len(data), error=str(exc))
            return
        if seg.dst_id != self.local_id and not (seg.flags & SYN and seg.dst_id == 0):
            stats.foreign_datagrams += 1
            return
        if (
            self.peer_id
            and seg.src_id != self.peer_id
            and self.state is not S.LISTEN
            and not (seg.flags & SYN and self.state is S.SYN_SENT)
        ):
            stats.foreign_datagrams += 1
            return
        stats.segments_received += 1
        stats.bytes_received += len(data)
        if self._hook is not None:
            self._trace_segment("segment_received", seg, len(data))
        state = self.state
        if seg.flags & PROBE:
            # A path-MTU probe: confirm its size in our next ACK; it carries nothing else.
            if state in _SYNCHRONIZED and not seg.flags & (SYN | FIN | RST):
                self._pmtu_ack_pending = len(data)
                self._ack_now = True
            return
        if state is S.CLOSED:
            # RFC 9293 3.10.7.1: a segment without RST for a closed connection earns a RST, so a
            # peer still retransmitting its FIN after our TIME-WAIT (or data after our abort,
            # RFC 5961's challenge ACK) learns we are gone instead of waiting for its timeout.
            if not seg.flags & RST and self._rst_pending is None:
                if seg.flags & ACK:
                    self._rst_pending = (seg.ack, 0, RST, seg.src_id)
                else:
                    seg_len = len(seg.payload) + (1 if seg.flags & SYN else 0) + (
                        1 if seg.flags & FIN else 0
                    )
                    self._rst_pending = (0, (seg.seq + seg_len) & TS_MASK, RST | ACK, seg.src_id)
            return
        if state is S.LISTEN:
            self._on_listen(seg, now)
        elif state is S.SYN_SENT:
            self._on_syn_sent(seg, now)
        else:
            self._on_synchronized(seg, now)

    def receive_datagrams(self, datagrams, now: float) -> int:
        """Process datagrams that arrived together (one GRO read, one simulator tick), in
        order: the same as receive_datagram on each, with a fast path for a run of in-order
        data segments (the bulk of a transfer) that decodes only what it checks. Stops before
        the first datagram addressed to another connection, for a demultiplexer to hand
        elsewhere, and returns how many it took. A datagram in `bytes` (or a memoryview of
        bytes) lends its payload to read() by reference: no copy."""
        count = len(datagrams)
        lid = self.local_id
        peek_dst = _DST.unpack_from
        i = 0
        while i < count:
            if self.state is S.ESTABLISHED and self._hook is None:
                i = self._receive_run(datagrams, i, now)
                if i >= count:
                    break
            data = datagrams[i]
            if len(data) >= wire.HEADER_BYTES and (
                peek_dst(data, _DST_OFFSET)[0] != lid or not data[_FLAGS_OFFSET]
            ):
                return i  # another connection's, or a path segment (no flags): the driver's
            self._receive_general(data, now)
            i += 1
        return count

    def _receive_run(self, datagrams, i: int, now: float) -> int:
        """The receive fast path: take datagrams from index i while each is the next in-order
        data segment and nothing else (no new ACK, the same window, no SACK, no gap to fill, no
        FIN waiting), checked on the raw header fields without a full decode; does what the
        general path would do for them. Returns the index of the first one it did not take."""
        if (
            self.snd_nxt != self.snd_una
            or self._reasm.buffered_bytes
            or self._peer_fin_offset is not None
            or self.snd_wnd & ((1 << self._snd_wscale) - 1)
        ):
            return i
        count = len(datagrams)
        lid, pid, irs = self.local_id, self.peer_id, self.irs
        window_field = self.snd_wnd >> self._snd_wscale
        expect_ack = (self.iss + self.snd_una) & TS_MASK
        ts_ok = self.ts_ok
        ts_recent = self._ts_recent
        last_ack = self._last_ack_sent
        room = self.config.receive_buffer_bytes - self._rcv_buffered
        offset = start_offset = self.rcv_nxt
        unpack = wire.HEADER.unpack_from
        unpack_ts = _HEADER_TS.unpack_from
        opt_ts = wire.OPT_TIMESTAMPS
        crc32 = zlib.crc32
        checksums = self.config.checksums
        chunks = self._rcvbuf
        min_len = wire.HEADER_BYTES + (10 if ts_ok else 0)
        hdr, cko = wire.HEADER_BYTES, wire.CHECKSUM_OFFSET
        first, wire_bytes, newest = i, 0, offset
        while i < count:
            data = datagrams[i]
            n = len(data)
            if n <= min_len:
                break
            if ts_ok:  # the header and the timestamps option in one unpack
                (version, flags, window, src, dst, seq, ack, optlen, _r, checksum, kind, klen,
                 ts_val) = unpack_ts(data)
                if optlen != 10 or kind != opt_ts or klen != 10:
                    break
                if ((ts_val - ts_recent) & TS_MASK) >= 0x80000000:
                    break  # PAWS: the general path decides
            else:
                version, flags, window, src, dst, seq, ack, optlen, _r, checksum = unpack(data)
                if optlen:
                    break
            if (
                flags != ACK
                or seq != (irs + offset) & TS_MASK
                or dst != lid
                or src != pid
                or ack != expect_ack
                or window != window_field
                or version != wire.VERSION
            ):
                break
            view = data if type(data) is memoryview else memoryview(data)
            if checksums and crc32(view[hdr:], crc32(view[:cko])) != checksum:
                break  # the general path counts it
            plen = n - hdr - optlen
            if plen > room:
                break
            payload = view[hdr + optlen:]
            chunks.append(payload if type(view.obj) is bytes else bytes(payload))
            if ts_ok and offset <= last_ack:
                ts_recent = ts_val
            room -= plen
            newest = offset
            offset += plen
            wire_bytes += n
            i += 1
        taken = i - first
        if not taken:
            return i
        self._delivered(offset - start_offset)
        # The peer's segment size, from the run's first segment (a bulk run's are all full).
        first_payload = len(datagrams[first]) - min_len
        self._rcv_mss = max(self._rcv_mss, first_payload)
        stats = self.stats
        stats.segments_received += taken
        stats.bytes_received += wire_bytes
        if ts_ok:
            self._ts_recent = ts_recent
            self._ts_recent_at = now
        self._last_heard = now
        self._snd_wl1 = newest  # RFC 9293 3.10.7.4: SND.WL1/WL2 follow the newest
        self._snd_wl2 = self.snd_una
        self.rcv_nxt = offset
        self._reasm.next_offset = offset
        self._segments_to_ack(taken, now)
        return i

    def _segments_to_ack(self, count: int, now: float) -> None:
        """`count` in-order data segments arrived. ACK at least every second one (RFC 9293
        3.8.6.3) and, in quick-ACK mode (the connection's first config.quickack_segments, as
        Linux does), every one: a sender in slow start, or one whose window holds a single
        segment after path MTU discovery raised its size, would otherwise wait out the
        delayed-ACK timer. Else arm that timer."""
        self._unacked_segments += count
        if self._unacked_segments >= 2 or self._quickacks > 0:
            self._quickacks = max(0, self._quickacks - count)
            self._ack_now = True
        elif self._delack_deadline is None:
            self._arm_timer("delayed_ack", now, self.config.delayed_ack_s)

    def _on_listen(self, seg: wire.Segment, now: float) -> None:
        """RFC 9293 3.10.7.2: only a SYN opens; a stray ACK earns a RST."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            self._rst_pending = (seg.ack, 0, RST, seg.src_id)
            return
        if not seg.flags & SYN:
            return
        self.peer_id = seg.src_id
        self._accept_syn(seg, now)
        self._set_state("recv SYN")

    def _accept_syn(self, seg: wire.Segment, now: float) -> None:
        self.irs = seg.seq
        self.rcv_nxt = 1
        self._negotiate(seg)
        self._ts_update(seg, now)
        self.snd_wnd = self._max_snd_wnd = seg.window  # never scaled in SYNs (RFC 7323 2.2)
        self._snd_wl1 = 0
        self._syn_pending = True
        self.snd_nxt = max(self.snd_nxt, 1)
        self._last_heard = now

    def _negotiate(self, seg: wire.Segment) -> None:
        cfg = self.config
        self._peer_mss = seg.mss or cfg.mss_bytes
        if seg.mss:
            self.mss = self._base_mss = max(64, min(self.mss, seg.mss))
            self.cc = make_controller(
                cfg.congestion_control, self.mss,
                initial_window_segments=cfg.initial_window_segments, rng=self._cc_rng,
            )
        self._rcv_mss = self.mss  # the peer's segment size, as far as we know it yet
        if cfg.window_scaling and seg.wscale is not None:
            self._snd_wscale = seg.wscale
            self.ws_ok = True
        else:
            self._rcv_wscale = 0
        self.sack_ok = cfg.sack and seg.sack_permitted
        self.ts_ok = cfg.timestamps and seg.ts_val is not None
        if self._hook is not None:
            self._trace(
                "negotiated", mss=self.mss, peer_mss=self._peer_mss, snd_wscale=self._snd_wscale,
                rcv_wscale=self._rcv_wscale, sack=self.sack_ok, timestamps=self.ts_ok,
            )

    def _on_syn_sent(self, seg: wire.Segment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        if flags & wire.RETRY:
            self._on_retry(seg, now)
            return
        if flags & ACK:
            ack = unwrap(seg.ack, self.iss, 1)
            if ack != 1:
                if not flags & RST:
                    self._rst_pending = (seg.ack, 0, RST, seg.src_id)
                return
            if flags & RST:
                self._enter_closed("reset", "connection refused: the peer reset it")
                return
        elif flags & RST:
            return
        if not flags & SYN:
            return
        self.peer_id = seg.src_id
        self._accept_syn(seg, now)
        if flags & ACK:
            self._syn_pending = False
            self.snd_una = 1
            self._on_new_ack_timers(now)
            self._rtt_sample_syn(seg, now)
            # RFC 6298 5.7: the SYN's backoff does not carry into data transfer (as the
            # passive side does on the ACK of its SYN-ACK); a 16 s RTO after three lost SYNs
            # would otherwise let one more data loss run into the user timeout.
            self.rtt.reset_backoff()
            self._after_lossy_handshake()
            self._set_state("recv SYN-ACK")
            if self._fin_queued:
                self._set_state("close")
            self._ack_now = True
            self._start_pmtud(now)
            self._events.append(events.HandshakeComplete())
            if seg.payload or flags & FIN:
                # RFC 9293 3.10.7.3: data (and a FIN) on the SYN-ACK is queued for delivery;
                # its first byte is offset 1, after the SYN.
                self._process_data(seg, 1, now)
        else:
            self._set_state("recv SYN")

    _retry_token: bytes | None = None

    def _on_retry(self, seg: wire.Segment, now: float) -> None:
        """The listener asks us to prove our address (rtcp/core/validation.py): send the SYN
        again at once, echoing its token. Only one RETRY is followed (QUIC's rule), and only
        one that acknowledges our SYN's sequence number (an off-path forger cannot)."""
        token = seg.option(wire.OPT_RETRY_TOKEN)
        if self._retry_token is not None or token is None or unwrap(seg.ack, self.iss, 1) != 1:
            return
        self._retry_token = token
        self._syn_pending = True
        self._trace("retry", token_len=len(token))

    def _rtt_sample_syn(self, seg: wire.Segment, now: float) -> None:
        """The handshake's RTT sample, for both sides. Karn (RFC 6298 3) with timestamps (RFC
        7323 4): after a retransmitted SYN or SYN-ACK the peer may still echo the TSval of the
        first one (a retransmitted SYN is out of window and does not update TS.Recent), which
        would make the whole backoff look like one RTT; only an echo of the latest
        transmission is a sample."""
        sent = self._syn_sent_at
        if self.ts_ok and seg.ts_ecr:
            if sent is None or ((seg.ts_ecr - self._ts(sent)) & TS_MASK) < 0x80000000:
                self._rtt_sample(((self._ts(now) - seg.ts_ecr) & TS_MASK) / TS_TICKS_PER_S)
        elif self.stats.timeouts == 0 and sent is not None:
            self._rtt_sample(now - self._syn_sent_at)

    _syn_sent_at: float | None = None

    def _after_lossy_handshake(self) -> None:
        """Our SYN (or SYN-ACK) timed out: without an RTT sample, data starts with a 3 s RTO
        (RFC 6298 5.7); after two or more timeouts, with a window of one segment (RFC 6928 2,
        RFC 5681 3.1): the path lost what little was sent."""
        timeouts = self.stats.timeouts
        if timeouts:
            self.rtt.after_handshake_timeout()
            self.stats.rto_s = self.rtt.rto_s
        if timeouts >= LOSSY_HANDSHAKE_TIMEOUTS:
            self.cc.cwnd = min(self.cc.cwnd, self.mss)

    def _acceptable(self, seg_off: int, seg_len: int) -> bool:
        """RFC 9293 3.10.7.4: the four cases of segment acceptability."""
        wnd = self._receive_window()
        nxt = self.rcv_nxt
        if seg_len == 0:
            if wnd == 0:
                return seg_off == nxt
            return nxt <= seg_off < nxt + wnd
        if wnd == 0:
            return False
        end = seg_off + seg_len - 1
        return nxt <= seg_off < nxt + wnd or nxt <= end < nxt + wnd

    def _on_synchronized(self, seg: wire.Segment, now: float) -> None:
        flags = seg.flags
        seg_off = unwrap(seg.seq, self.irs, self.rcv_nxt)
        plen = len(seg.payload)
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)

        if self.ts_ok and not flags & RST:
            if seg.ts_val is None:
                # RFC 7323 3.2: once negotiated, a segment without timestamps is dropped.
                self.stats.segments_without_timestamps += 1
                return
            # PAWS (RFC 7323 5): an old timestamp means an old duplicate.
            if (
                ((seg.ts_val - self._ts_recent) & TS_MASK) >= 0x80000000
                and now - self._ts_recent_at < PAWS_IDLE_LIMIT_S
            ):
                self.stats.duplicate_segments += 1
                self._ack_now = True
                return

        if not self._acceptable(seg_off, seg_len):
            if flags & RST:
                return
            if seg_len and seg_off + seg_len <= self.rcv_nxt:
                self.stats.duplicate_segments += 1
                self._trace("duplicate", seq=seg_off - 1, len=plen)
            if flags & FIN and self.state is S.TIME_WAIT and seg_off + seg_len == self.rcv_nxt:
                # RFC 9293 3.10.7.4 eighth check: a retransmitted FIN in TIME-WAIT is ACKed
                # again and restarts the 2 MSL timeout (so it outlasts the peer's retries).
                self._enter_time_wait(now)
            if (
                flags & SYN
                and flags & ACK
                and seg_off == 0
                and self.is_client
                and self.snd_una == 1
                and self.snd_nxt > 1
            ):
                # A retransmitted SYN-ACK while none of our data is acknowledged: the listener
                # is still in SYN-RECEIVED, so it got neither our ACK nor any data (each
                # carries that ACK). Answer with the first data segment rather than a bare
                # ACK: the same one datagram, and it completes the handshake and delivers
                # (through heavy loss the data phase gets a try per SYN-ACK, as the listener
                # retransmits them every second, instead of only at its 3 s RTO).
                self._resend_first_segment = True
                if self.ts_ok and seg.ack == wrap(1, self.iss):
                    # As the listener does for a retransmitted SYN (RFC 7323 4.3 read for the
                    # handshake's duplicates): echo this SYN-ACK's TSval, the latest the
                    # listener sent, so that the answer gives it an RTT sample (Karn) instead
                    # of RFC 6298 5.7's 3 s RTO for its verdict.
                    self._ts_update(seg, now)
            # SYN retransmitted by a peer that missed our SYN-ACK: resend it.
            if flags & SYN and self.state is S.SYN_RECEIVED and seg_off == 0:
                if flags & ACK:  # simultaneous open: the peer's SYN-ACK acknowledges our SYN
                    self._process_ack(seg, seg_off, now)
                else:
                    self._syn_pending = True
                    # RFC 7323 4.3 (2): SEG.SEQ <= Last.ACK.sent and a TSval not older (PAWS
                    # passed): the SYN-ACK then echoes the latest SYN, an RTT sample for the
                    # peer (Karn), which otherwise starts its data with RFC 6298 5.7's 3 s RTO.
                    if self.ts_ok:
                        self._ts_update(seg, now)
            self._ack_now = True  # also answers zero-window probes
            self._last_heard = now
            return

        if flags & RST:
            # RFC 5961 3.2: only an exact match resets; an in-window RST earns a challenge ACK.
            if seg_off == self.rcv_nxt:
                if self.state in (S.CLOSING, S.LAST_ACK):
                    # RFC 9293 3.10.7.4 second check: here a RST just ends the connection (both
                    # FINs were exchanged; typically the peer left TIME-WAIT before our FIN's
                    # retransmission arrived), with no "connection reset" signal to the user.
                    self._enter_closed("closed", None)
                else:
                    self._enter_closed("reset", "the peer reset the connection")
            else:
                self._challenge_ack(now)
            return

        if flags & SYN:
            if self.state is S.SYN_RECEIVED and seg_off == 0:
                self._syn_pending = True
                return
            self._challenge_ack(now)  # RFC 5961 4.2
            return

        if not flags & ACK:
            return
        self._last_heard = now
        if not self._process_ack(seg, seg_off, now):
            return
        # RFC 7323 4.3, after the ACK check (as Linux since 2013): only an acceptable segment
        # may move TS.Recent, or one forged ACK with a TSval far ahead would make PAWS drop
        # every real segment after it; and only one at or below Last.ACK.sent, so a delayed
        # ACK echoes the earliest segment it acknowledges.
        if self.ts_ok and seg_off <= self._last_ack_sent:
            self._ts_update(seg, now)
        if plen or flags & FIN:
            self._process_data(seg, seg_off, now)

    def _process_ack(self, seg: wire.Segment, seg_off: int, now: float) -> bool:
        """RFC 9293 3.10.7.4 fifth check, RFC 5681 / 6675 / 6582 loss recovery."""
        ack = unwrap(seg.ack, self.iss, self.snd_una)
        state = self.state
        if state is S.SYN_RECEIVED:
            if ack != 1 and not 0 < ack <= self.snd_nxt:
                self._rst_pending = (seg.ack, 0, RST, self.peer_id)
                return False
            self._syn_pending = False
            self.snd_una = max(self.snd_una, 1)
            self.snd_wnd = seg.window << self._snd_wscale
            self._max_snd_wnd = max(self._max_snd_wnd, self.snd_wnd)
            self._snd_wl1, self._snd_wl2 = seg_off, ack
            if self.ts_ok and seg.ts_ecr:
                self._rtt_sample_syn(seg, now)
            self.rtt.reset_backoff()
            self._after_lossy_handshake()
            self._set_state("recv ACK of SYN")
            self._start_pmtud(now)
            self._events.append(events.HandshakeComplete())
            if self._fin_queued:
                self._set_state("close")
            self._rto_deadline = None
            state = self.state
        if ack > self.snd_nxt:
            self._ack_now = True  # acks something never sent (RFC 9293): ACK and drop
            return False
        if ack < self.snd_una - self._max_snd_wnd:
            # RFC 5961 5.2: older than any window the peer ever offered: a blind forgery
            # (or a very old duplicate). Drop it, data too, with a challenge ACK.
            self._challenge_ack(now)
            return False

        if seg.pmtu_ack is not None and self.pmtud.on_probe_acked(seg.pmtu_ack, now):
            self._set_mss(self.pmtud.plpmtu - self._data_overhead())
            self.stats.pmtu_probes_acked += 1
            self._initial_window_for_new_mss()
        window = seg.window << self._snd_wscale
        sb = self.scoreboard
        newly_sacked = 0
        fin_sacked = False
        acked_before = self.snd_una
        if self.sack_ok and seg.sack_blocks:
            blocks = []
            for left, right in seg.sack_blocks:
                lo = unwrap(left, self.iss, self.snd_una)
                hi = unwrap(right, self.iss, self.snd_una)
                if self.snd_una < hi <= self.snd_nxt and lo < hi:
                    blocks.append((lo, hi))
            if blocks:
                newly_sacked = sb.on_sack(blocks, now)
                fin = self._fin_offset
                if fin is not None and not self._fin_sacked and any(
                    lo <= fin < hi for lo, hi in blocks
                ):
                    # The peer holds our FIN out of order (RFC 2018, _sack_blocks): it was
                    # delivered, so RACK (RFC 8985 6.2) learns that what left before it is
                    # missing: the last data (an application's last word, e.g. a verdict) is
                    # repaired after the reordering window, not at the RTO.
                    self._fin_sacked = True
                    sb.advance_rack(self._fin_sent_at, fin + 1, self._fin_retransmitted, now)
                    fin_sacked = True

        if ack > self.snd_una:
            self._on_ack_advance(seg, ack, now)
        elif (
            ack == self.snd_una
            and self.snd_nxt > self.snd_una
            and (
                newly_sacked
                if self.sack_ok
                else not seg.payload and not seg.flags & FIN and window == self.snd_wnd
            )
        ):
            # A duplicate ACK: with SACK, one that SACKs something new (RFC 6675 2), so that a
            # network duplicate or the answer to a PMTU probe is not one; else RFC 5681 2's.
            self._dupacks += 1
            if not self.sack_ok:
                if self._in_recovery:
                    self._dupack_credit += self.mss  # RFC 6582 3.2 step 4: cwnd inflation
                elif self._dupacks < DUP_THRESH:
                    # RFC 3042 limited transmit: one new segment for each of the first two
                    self._dupack_credit = self._dupacks * self.mss
        # Loss detection and entry into recovery.
        lost_before = sb.lost_bytes
        if len(sb):
            reorder_window = self._reorder_window()
            if newly_sacked or fin_sacked:
                sb.detect_losses(reorder_window)
                self._rack_deadline = sb.reorder_deadline(reorder_window)
            if not self._in_recovery and self.snd_una >= self._recover:
                if self._dupacks >= DUP_THRESH and not sb.lost_bytes:
                    sb.mark_first_lost()
                if sb.lost_bytes:
                    self._enter_recovery(now)
            if sb._retransmitted:
                sb.detect_lost_retransmissions(reorder_window)
        sample = sb.take_rate_sample()
        if sample is not None:
            self._tlp_in_flight = 0
            self._arm_tlp(now)
            delivered, interval, prior, rtt_s, app_limited = sample
            self.cc.on_rate_sample(
                RateSample(
                    delivered / interval if interval > 0 else 0.0, interval, delivered, prior,
                    sb.delivered, rtt_s,
                    app_limited, max(0, ack - acked_before) + newly_sacked,
                    max(0, sb.lost_bytes - lost_before), sb.pipe,
                ),
                now,
            )

        # RFC 9293 3.10.7.4: update the send window from the newest segment only, and only
        # from one whose ACK is not below SND.UNA (an old duplicate's window is stale).
        if ack >= acked_before and (
            self._snd_wl1 < seg_off or (self._snd_wl1 == seg_off and self._snd_wl2 <= ack)
        ):
            if window != self.snd_wnd:
                self._trace("window_update", window=window)
            self.snd_wnd = window
            self._snd_wl1, self._snd_wl2 = seg_off, ack
            self._max_snd_wnd = max(self._max_snd_wnd, window)
            if window and self._persist_deadline is not None:
                self._persist_deadline = None
                self._persist_backoff = 0

        # Our FIN acknowledged?
        if self._fin_offset is not None and ack > self._fin_offset:
            if state is S.FIN_WAIT_1:
                self._set_state("recv ACK of FIN")
            elif state is S.CLOSING:
                self._set_state("recv ACK of FIN")
                self._enter_time_wait(now)
            elif state is S.LAST_ACK:
                self._set_state("recv ACK of FIN")
                self._report_closed("closed", None)
                return False
        return True

    def _on_ack_advance(self, seg: wire.Segment, ack: int, now: float) -> None:
        sb = self.scoreboard
        acked = ack - self.snd_una
        flight_before = sb.pipe
        newest, retransmitted_at = sb.on_cumulative_ack(ack, now)
        # Free acknowledged bytes from the send buffer.
        if (
            self._sndbuf.release(ack)
            and self._send_blocked
            and self.send_buffer_space >= len(self._sndbuf) // 2
        ):
            self._send_blocked = False
            self._events.append(events.SendSpaceAvailable())
        self.snd_una = ack
        self._dupacks = 0
        if not self._in_recovery:
            self._dupack_credit = 0  # limited transmit's credit ends with the dup ACKs
        self._consecutive_rtos = 0
        # RTT: Karn's rule (RFC 6298 3): no sequence-based sample when the ACK covers
        # retransmitted data (Linux's FLAG_RETRANS_DATA_ACKED). Then the timestamp echo
        # (RFC 7323 4) counts only if it proves the ACK answers the latest retransmission: a
        # stale echo (the peer re-ACKs with an old TS.Recent after our ACK was lost) is not one.
        rtt_s = None
        if newest is not None:
            if retransmitted_at is None:
                rtt_s = now - newest.sent_at
            elif self.ts_ok and seg.ts_ecr:
                if ((seg.ts_ecr - self._ts(retransmitted_at)) & TS_MASK) < 0x80000000:
                    rtt_s = ((self._ts(now) - seg.ts_ecr) & TS_MASK) / TS_TICKS_PER_S
                else:
                    # RFC 3522 (Eifel): the echo predates the retransmission, so the original
                    # arrived and the retransmission was not needed: the path reorders more
                    # than the loss detectors allow. Widen them (as Linux raises its reordering
                    # degree, and RFC 8985 7.2 widens reo_wnd on DSACK), up to a cap.
                    self.stats.spurious_retransmissions += 1
                    self.cc.on_spurious_rto(now)  # RFC 4015: undo a timeout's reduction
                    sb.dup_thresh = min(sb.dup_thresh * 2, MAX_DUP_THRESH)
                    self._reorder_window_scale = min(self._reorder_window_scale + 1, 4)
        if rtt_s is not None and 0 <= rtt_s < 60:
            self._rtt_sample(rtt_s)
        self.rtt.reset_backoff()
        self._on_new_ack_timers(now)

        if self._in_recovery:
            if ack >= self._recover:
                self._in_recovery = False
                self._dupack_credit = 0
                self.cc.on_recovery_exit(now)
                self._trace_cc(now)
            elif not self.sack_ok:
                # RFC 6582 3.2 step 5: a partial ACK; the next hole is lost too, and is
                # retransmitted at once (not when cwnd allows: no more dup ACKs may come).
                # Deflate by what it acked, add back one segment.
                self._dupack_credit = max(0, self._dupack_credit - acked) + self.mss
                if sb.mark_first_lost():
                    self._partial_ack_due = True
            else:
                # RFC 6675 NextSeg rule 3 in its partial-ACK form: the first unacknowledged
                # segment, never retransmitted, with SACKed data above it, is a hole to repair
                # now. Without this a hole with fewer than DupThresh segments SACKed above it
                # (a loss near the tail) waits for the retransmission timer.
                # Only once RACK's reordering window has passed for it (RFC 8985 6.2): on a
                # path that reorders, the next hole is usually late, not lost.
                rec = sb.first()
                if (
                    rec is not None and not rec.sacked and not rec.retransmits
                    and rec.end <= sb.highest_sacked
                    and rec.sent_at + self._reorder_window() < sb.newest_delivered_sent_at
                ):
                    sb.mark_first_lost()
        else:
            self.cc.on_ack(acked, now, rtt_s, flight_before)
            if self._hook is not None:
                self._trace_cc(now)

    def _reorder_window(self) -> float:
        """RACK's reo_wnd (RFC 8985 6.2): min_RTT/4; after spurious retransmissions, quarters
        of SRTT up to SRTT (min_RTT itself is skewed low on a path whose reordered datagrams
        skip a queue, so widening it would not help)."""
        scale = self._reorder_window_scale
        if scale == 1 or self.rtt.srtt_s is None:
            window = (self.rtt.min_rtt_s or 0.0) / 4
        else:
            window = self.rtt.srtt_s * scale / 4
        return max(window, RACK_MIN_REORDER_WINDOW_S)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit and the start of fast recovery (RFC 5681 3.2, RFC 6675 5)."""
        self._in_recovery = True
        self._recover = self.snd_nxt
        self.stats.fast_recoveries += 1
        self._fast_retransmit_due = True
        self.cc.on_congestion_event(now, self.scoreboard.outstanding_bytes)
        if not self.sack_ok:
            self._dupack_credit = DUP_THRESH * self.mss  # RFC 6582 3.2 step 2: ssthresh + 3 MSS
        self._trace_cc(now)

    _fast_retransmit_due = False
    _partial_ack_due = False  # NewReno: retransmit the next hole regardless of cwnd

    def _process_data(self, seg: wire.Segment, seg_off: int, now: float) -> None:
        """Deliver in-order bytes, buffer out-of-order ones, decide how soon to ACK."""
        if self.state not in _PEER_MAY_SEND:
            if seg.flags & FIN:
                self._ack_now = True  # a retransmitted FIN: our ACK was lost
                if self.state is S.TIME_WAIT:
                    self._enter_time_wait(now)
            return
        payload = seg.payload
        if seg.flags & FIN:
            self._peer_fin_offset = seg_off + len(payload)
            if seg_off > self.rcv_nxt:
                self._ack_now = True  # an out-of-order FIN: duplicate ACK at once (RFC 5681 4.2)
        if payload:
            # the peer's segment size grows with its path MTU discovery
            self._rcv_mss = max(self._rcv_mss, len(payload))
            window_end = self.rcv_nxt + self._receive_window()
            result = self._reasm.insert(seg_off, payload, window_end)
            if result.delivered:
                self._deliver(result.delivered)
                self.rcv_nxt = self._reasm.next_offset
            if result.duplicate:
                self.stats.duplicate_segments += 1
                self._ack_now = True
                self._trace("duplicate", seq=seg_off - 1, len=len(payload))
            elif result.out_of_order:
                self.stats.out_of_order_segments += 1
                self._ack_now = True  # RFC 5681 4.2: ACK out-of-order data at once
                if not self.sack_ok:
                    # Without SACK the sender counts duplicate ACKs: one per segment, not per batch.
                    self._immediate.append(self._emit_ack(now))
                else:
                    # One ACK per batch carries only MAX_SACK_BLOCKS ranges (the most recently
                    # touched first, RFC 2018 4): once half that many distinct ranges changed
                    # since the last ACK, send them now, so that each range is reported by at
                    # least two ACKs (ACKs are lost too) and the sender learns of them all.
                    start = self._reasm.sack_ranges(1)[0][0]
                    touched = self._sack_touched
                    if start not in touched:
                        touched.append(start)
                        if len(touched) >= wire.MAX_SACK_BLOCKS // 2:
                            self._immediate.append(self._emit_ack(now))
                self._trace("out_of_order", seq=seg_off - 1, len=len(payload))
            elif result.filled_gap or self._reasm.has_gap():
                self._ack_now = True
            else:
                self._segments_to_ack(1, now)
        if self._peer_fin_offset is not None and self.rcv_nxt == self._peer_fin_offset:
            self.rcv_nxt += 1
            self._ack_now = True
            self._stream_ended = True
            self._events.append(events.StreamEnded())
            state = self.state
            self._set_state("recv FIN")
            if state is S.FIN_WAIT_2:
                self._enter_time_wait(now)

    # --- sending -----------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now: RST, SYN, retransmissions, new data within cwnd and the peer's
        window, FIN, window probes, and the ACK (one per call, however many segments arrived)."""
        out = self._immediate
        self._immediate = []
        if self._rst_pending is not None:
            seq, ack, flags, dst = self._rst_pending
            self._rst_pending = None
            out.append(self._emit(flags, seq, ack, dst, b"", b"", now))
        state = self.state
        if state is S.CLOSED or state is S.LISTEN:
            return out
        if self._syn_pending:
            self._send_syn(out, now)
            return out
        if state is S.SYN_SENT:
            return out
        if state is not S.SYN_RECEIVED:
            self._send_data(out, now)
            self._send_fin(out, now)
            if self.unsent_bytes >= self.mss:  # larger segments would help: probe
                size = self.pmtud.probe_due(now)
                if size is not None:
                    out.append(self._emit_probe(size, now))
            if self._probe_pending:
                self._probe_pending = False
                self.stats.window_probes += 1
                if self._probe_unanswered_since <= self._last_heard:
                    self._probe_unanswered_since = now
                out.append(self._emit_ack(now, seq_off=self.snd_una - 1))
        if self._ack_now or self._unacked_segments >= 2:
            out.append(self._emit_ack(now))
        return out

    def _send_syn(self, out: list[bytes], now: float) -> None:
        self._syn_pending = False
        cfg = self.config
        opts = wire.opt_mss(self._receivable_mss())
        is_synack = self.state is S.SYN_RECEIVED
        if cfg.window_scaling and (not is_synack or self.ws_ok):
            opts += wire.opt_wscale(self._rcv_wscale)
        if cfg.sack and (not is_synack or self.sack_ok):
            opts += wire.opt_sack_permitted()
        if cfg.timestamps and (not is_synack or self.ts_ok):
            opts += wire.opt_timestamps(self._ts(now), self._ts_recent)
        if self._retry_token is not None and not is_synack:
            opts += wire.opt_bytes(wire.OPT_RETRY_TOKEN, self._retry_token)
        flags = SYN | ACK if is_synack else SYN
        ack = wrap(self.rcv_nxt, self.irs) if is_synack else 0
        window = min(self._receive_window(), MAX_WINDOW_FIELD)  # never scaled (RFC 7323 2.2)
        self._rcv_adv_edge = max(self.rcv_nxt, 1) + window
        dgram = wire.build(
            flags, self.local_id, self.peer_id, self.iss, ack, window, opts, b""
        )
        self.stats.segments_sent += 1
        self.stats.bytes_sent += len(dgram)
        if self._hook is not None:
            again = "timeout" if self._syn_sent_at is not None else None
            self._trace_sent(flags, self.iss, ack, 0, window, opts, again, len(dgram))
        out.append(dgram)
        self._syn_sent_at = now
        self._ack_now = False
        self._unacked_segments = 0
        if self._rto_deadline is None:
            self._arm_timer("retransmission", now, self.rtt.rto_s)

    def _send_data(self, out: list[bytes], now: float) -> None:
        sb = self.scoreboard
        cwnd = self.cc.cwnd
        mss = self.mss
        # Pacing (rate-based controllers, or a rate cap): a segment may leave once _pace_next
        # has come.
        rate = paced_rate(self.cc.pacing_rate(self.rtt.srtt_s), self._max_pacing_rate)
        self._pacing_blocked = False
        if rate:
            self._pace_next = max(self._pace_next, now - PACING_BURST_S)
        if self._tlp_pending:
            self._send_tail_loss_probe(out, now)
        if self._resend_first_segment:
            self._resend_first_segment = False
            rec = sb.first()
            if rec is not None and rec.start == self.snd_una and not rec.lost and (
                rec.end - rec.start <= mss
            ):
                self.stats.retransmissions += 1
                self.stats.retransmits_synack += 1
                sb.on_retransmit(rec, now)
                out.append(self._emit_data(rec.start, rec.end, now, "duplicate SYN-ACK"))
        # Retransmissions first (RFC 6675 NextSeg rule 1), the first one regardless of cwnd.
        while True:
            rec = sb.next_lost()
            if rec is None:
                break
            if (
                not (self._fast_retransmit_due or self._partial_ack_due)
                and sb.pipe - self._dupack_credit >= cwnd
            ):
                break
            paced_out = rate and self._pace_next > now + PACING_SLACK_S
            if paced_out and not self._fast_retransmit_due:
                self._pacing_blocked = True
                break
            if rec.end - rec.start > mss:
                sb.split(rec, mss)  # the path MTU shrank (black hole): resend in smaller pieces
                continue
            if self._fast_retransmit_due:
                self._fast_retransmit_due = False
                self.stats.retransmits_fast += 1
                why = "fast"
            elif self._in_recovery:
                self.stats.retransmits_sack += 1
                why = "recovery"
            else:
                self.stats.retransmits_timeout += 1
                why = "timeout"
            self.stats.retransmissions += 1
            sb.on_retransmit(rec, now)
            out.append(self._emit_data(rec.start, rec.end, now, why))
            if rate:
                self._pace_next += (rec.end - rec.start) / rate
            if self._rto_deadline is None:
                self._arm_timer("retransmission", now, self.rtt.rto_s)
        self._fast_retransmit_due = False
        self._partial_ack_due = False
        # New data (NextSeg rule 2), bounded by cwnd and the peer's window (RFC 5681, 9293).
        data_end = self._sndbuf.end
        wnd_end = self.snd_una + self.snd_wnd
        nxt = self.snd_nxt
        if nxt < data_end and not len(sb) and now - self._last_send_at > self.rtt.rto_s:
            self.cc.on_idle_restart(now)  # RFC 5681 4.1
            cwnd = self.cc.cwnd
        nxt_before = nxt
        if self._hook is None and nxt < data_end:
            nxt = self._send_new_data_fast(out, now, nxt, data_end, wnd_end, rate)
        while nxt < data_end:
            room = min(wnd_end - nxt, data_end - nxt, mss)
            if room <= 0:
                break
            if sb.pipe - self._dupack_credit >= cwnd:
                break
            if (
                room < mss
                and room < data_end - nxt
                and (len(sb) or 2 * room < self._max_snd_wnd)
                and not self._probe_pending
            ):
                # Sender SWS avoidance (RFC 9293 3.8.6.2.1): a segment the window cuts short
                # waits for a full one while an ACK is to come, and with nothing in flight
                # unless it is half the largest window the peer offered (Fs = 1/2). The
                # receiver announces room by whole segments; the persist timer is the
                # override timeout that sends it anyway (below).
                break
            if self.config.nagle and room < mss and len(sb):
                break
            if self.cork and room < mss and not self._fin_queued:
                break  # more is coming (TCP_CORK): no runt at the end of what is queued
            if rate:
                if self._pace_next > now + PACING_SLACK_S:
                    self._pacing_blocked = True
                    break
                self._pace_next += room / rate
            end = nxt + room
            self._probe_pending = False  # the persist timer's probe is this segment
            sb.add(nxt, end, now)
            out.append(self._emit_data(nxt, end, now, None))
            self.stats.data_bytes_sent += room
            nxt = end
            self.snd_nxt = nxt
            if self._rto_deadline is None:
                self._arm_timer("retransmission", now, self.rtt.rto_s)
            if self._tlp_deadline is None:
                self._arm_tlp(now)
        if nxt != nxt_before:
            self._last_send_at = now
        if nxt >= data_end and sb.pipe < cwnd:
            # Nothing more to send with room in cwnd: samples until now are app-limited.
            sb.app_limited_until = max(sb.delivered + sb.pipe, 1)
        # The window holds back data (or the FIN) and nothing is in flight: arm the persist
        # timer; the probes' answers bring the window update that lets them go, and when the
        # window has some room, the probe is the segment that fits (the SWS override).
        if nxt < data_end:
            waiting, blocked = True, wnd_end - nxt < min(mss, data_end - nxt)
        else:
            waiting, blocked = self._fin_queued and self._fin_offset is None, wnd_end <= nxt
        if waiting and not len(sb) and blocked:
            if self._persist_deadline is None:
                self._arm_timer("persist", now, self._persist_interval())
        elif self._persist_deadline is not None and not blocked:
            self._persist_deadline = None
            self._persist_backoff = 0

    def _send_new_data_fast(self, out, now, nxt, data_end, wnd_end, rate) -> int:
        """Full-sized new segments, the bulk of a transfer: the same decisions as the general
        loop below (which finishes what this leaves: a short last segment, tracing), with the
        per-batch work done once. Every segment of one call shares ack, window and options, so
        only the sequence number and the payload differ. Returns the new snd_nxt."""
        sb = self.scoreboard
        mss = self.mss
        cwnd = self.cc.cwnd + self._dupack_credit  # the general loop: pipe - credit < cwnd
        if min(wnd_end, data_end) - nxt < mss or sb.pipe >= cwnd:
            return nxt
        # How many full segments data, window and cwnd allow (the loop it replaces checked
        # pipe < cwnd before each one, pipe growing by mss), then pacing, one by one.
        sent = min((data_end - nxt) // mss, (wnd_end - nxt) // mss,
                   int(-(-(cwnd - sb.pipe) // mss)))
        if rate:
            step = mss / rate
            limit = now + PACING_SLACK_S
            pace_next = self._pace_next
            allowed = 0
            while allowed < sent and pace_next <= limit:
                pace_next += step
                allowed += 1
            if allowed < sent:
                self._pacing_blocked = True
                sent = allowed
            self._pace_next = pace_next
        if sent <= 0:
            return nxt
        opts = self._data_options(now)
        optlen = len(opts)
        window = self._acknowledging()
        pack = wire.PREFIX.pack
        cks = wire.CHECKSUM.pack
        crc32 = zlib.crc32
        checksums = self.config.checksums
        join = b"".join
        version = wire.VERSION
        lid = self.local_id
        pid = self.peer_id
        iss = self.iss
        ackw = (self.irs + self.rcv_nxt) & TS_MASK
        opts_crc_len = optlen
        sb.add_run(nxt, sent, mss, now)
        append = out.append
        seq = iss + nxt
        for payload in self._sndbuf.segments(nxt, sent, mss):
            prefix = pack(version, ACK, window, lid, pid, seq & TS_MASK, ackw, opts_crc_len, 0)
            crc = crc32(payload, crc32(opts, crc32(prefix))) if checksums else 0
            append(join((prefix, cks(crc), opts, payload)))
            seq += mss
        nxt += sent * mss
        if sent:
            stats = self.stats
            stats.segments_sent += sent
            stats.bytes_sent += sent * (wire.HEADER_BYTES + optlen + mss)
            stats.data_bytes_sent += sent * mss
            self.snd_nxt = nxt
            if self._rto_deadline is None:
                self._arm_timer("retransmission", now, self.rtt.rto_s)
            if self._tlp_deadline is None:
                self._arm_tlp(now)
        return nxt

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: a probe timeout of 2 SRTT (plus the peer's delayed-ACK time when one
        segment is out) before the RTO, so a lost tail is repaired by SACK recovery instead.

        Unlike RFC 8985 (and like QUIC's PTO, RFC 9002 6.2) the probe also runs during
        recovery: when a retransmission and everything after it are lost, nothing comes back
        to trigger RACK, and with a small window that is common; one probe that is SACKed
        repairs it in two round trips instead of a 200 ms RTO and a collapsed window.

        A PTO beyond the RTO is cut to it (RFC 8985 7.2, as Linux): the probe goes first and
        re-arms the RTO, so a tail loss on a long path is not always a timeout. A FIN alone
        in flight is probed too (resent)."""
        sb = self.scoreboard
        srtt = self.rtt.srtt_s
        in_flight = len(sb) + self._fin_in_flight()
        if not self.sack_ok or self._tlp_in_flight >= TLP_MAX_PROBES or not in_flight:
            self._tlp_deadline = None
            return
        if srtt is None:
            # No RTT sample (a lossy handshake, Karn): the initial RTO, as Linux; the RTO
            # itself is then RFC 6298 5.7's 3 s.
            pto = self.config.initial_rto_s
        else:
            pto = 2 * srtt + (self.config.delayed_ack_s if in_flight == 1 else 0.0)
        pto *= 1 << self._tlp_in_flight  # a second probe waits twice as long
        deadline = now + max(pto, TLP_MIN_PTO_S)
        rto = self._rto_deadline
        if rto is not None and rto < deadline:
            deadline = rto
        self._arm_timer("tail_loss_probe", now, deadline - now)

    def _fin_in_flight(self) -> bool:
        return self._fin_offset is not None and self.snd_una <= self._fin_offset

    def _send_tail_loss_probe(self, out: list[bytes], now: float) -> None:
        """RFC 8985 7.3: send one new segment if there is one, else resend the last one."""
        self._tlp_pending = False
        data_end = self._sndbuf.end
        nxt = self.snd_nxt
        room = min(self.snd_una + self.snd_wnd - nxt, data_end - nxt, self.mss)
        sb = self.scoreboard
        if room > 0:
            sb.add(nxt, nxt + room, now)
            out.append(self._emit_data(nxt, nxt + room, now, None))
            self.stats.data_bytes_sent += room
            self.snd_nxt = nxt + room
            return
        rec = sb.last_unsacked()
        if rec is None and self._fin_in_flight():
            self.stats.retransmissions += 1
            self.stats.retransmits_tlp += 1
            self._fin_resend = True  # _send_fin sends it
            return
        if rec is None or rec.end - rec.start > self.mss:
            return
        self.stats.retransmissions += 1
        self.stats.retransmits_tlp += 1
        sb.on_retransmit(rec, now)
        out.append(self._emit_data(rec.start, rec.end, now, "tail loss probe"))

    def _send_fin(self, out: list[bytes], now: float) -> None:
        if self._fin_resend:
            self._fin_resend = False
            self._fin_retransmitted = True
            self._fin_sent_at = now
            out.append(self._emit_fin(now))
            return
        if not self._fin_queued or self._fin_offset is not None:
            return
        data_end = self._sndbuf.end
        if self.snd_nxt < data_end or self.snd_nxt >= self.snd_una + self.snd_wnd:
            return  # the FIN occupies a sequence number: it waits for the peer's window too
        self._fin_offset = self.snd_nxt
        self._fin_sent_at = now
        self.snd_nxt += 1
        out.append(self._emit_fin(now))
        if self._rto_deadline is None:
            self._arm_timer("retransmission", now, self.rtt.rto_s)
        if self._tlp_deadline is None:
            self._arm_tlp(now)

    _fin_sent_at = 0.0  # the FIN's latest transmission (RACK, when the peer SACKs it)
    _fin_retransmitted = False
    _fin_sacked = False

    def _emit_fin(self, now: float) -> bytes:
        assert self._fin_offset is not None
        return self._emit(
            FIN | ACK, wrap(self._fin_offset, self.iss), wrap(self.rcv_nxt, self.irs),
            self.peer_id, self._data_options(now), b"", now,
        )

    def _emit_data(self, start: int, end: int, now: float, retransmit: str | None) -> bytes:
        return self._emit(
            ACK, wrap(start, self.iss), wrap(self.rcv_nxt, self.irs), self.peer_id,
            self._data_options(now), self._sndbuf.view(start, end), now, retransmit,
        )

    def _emit_ack(self, now: float, seq_off: int | None = None) -> bytes:
        opts = self._data_options(now)
        if self.sack_ok:
            blocks = self._sack_blocks()
            if blocks:
                opts += wire.opt_sack((wrap(lo, self.irs), wrap(hi, self.irs)) for lo, hi in blocks)
        if self._pmtu_ack_pending is not None:
            opts += wire.opt_pmtu_ack(self._pmtu_ack_pending)
            self._pmtu_ack_pending = None
        seq = wrap(self.snd_nxt if seq_off is None else seq_off, self.iss)
        return self._emit(ACK, seq, wrap(self.rcv_nxt, self.irs), self.peer_id, opts, b"", now)

    def _sack_blocks(self) -> list[tuple[int, int]]:
        """The SACK blocks of an ACK (RFC 2018 4): the held out-of-order ranges, and a FIN
        that arrived out of order. The FIN occupies a sequence number (RFC 9293 3.4) and is
        reported like data, as Linux does: its sender then knows that what it sent before the
        FIN is missing (RFC 8985's RACK marks it lost after the reordering window), where a
        duplicate ACK without the block told it nothing and the loss waited for the RTO."""
        ranges = self._reasm.sack_ranges() if self._reasm.has_gap() else []
        fin = self._peer_fin_offset
        if fin is None or fin <= self.rcv_nxt:
            return ranges
        for i, (lo, hi) in enumerate(ranges):
            if hi == fin:
                ranges[i] = (lo, fin + 1)
                return ranges
        return [(fin, fin + 1), *ranges][: wire.MAX_SACK_BLOCKS]

    def _emit_probe(self, size: int, now: float) -> bytes:
        """A padding-only probe of exactly `size` bytes (RFC 8899 4.1)."""
        opts = self._data_options(now)
        padding = bytes(max(0, size - wire.HEADER_BYTES - len(opts)))
        self.pmtud.on_probe_sent(now, self.rtt.rto_s)
        self.stats.pmtu_probes_sent += 1
        return self._emit(
            PROBE | ACK, wrap(self.snd_nxt, self.iss), wrap(self.rcv_nxt, self.irs),
            self.peer_id, opts, padding, now, keep_ack_state=True,
        )

    def _data_options(self, now: float) -> bytes:
        if self.ts_ok:
            cached = self._opts_cache
            if cached[0] == now and cached[1] == self._ts_recent:
                return cached[2]  # a batch of segments sent at one `now` shares its options
            opts = wire.opt_timestamps(self._ts(now), self._ts_recent)
            self._opts_cache = (now, self._ts_recent, opts)
            return opts
        return b""

    _opts_cache: tuple = (None, None, b"")

    def _acknowledging(self) -> int:
        """A segment carrying the current ACK and window is about to leave: it answers every
        pending ACK duty (delayed ACK, segments to ACK, SACK ranges to report). Returns the
        window field it carries."""
        window = self._window_field()
        self._last_ack_sent = self.rcv_nxt
        self._ack_now = False
        self._unacked_segments = 0
        self._delack_deadline = None
        if self._sack_touched:
            self._sack_touched.clear()
        return window

    def _emit(
        self, flags, seq, ack, dst, opts, payload, now, retransmit=None, keep_ack_state=False
    ) -> bytes:
        """Encode one segment; every non-RST segment carries the current ACK and window."""
        window = 0
        if keep_ack_state:  # a probe may be lost more easily: it does not replace an ACK
            window = self._window_field()
        elif not flags & RST:
            window = self._acknowledging()
        dgram = wire.build(flags, self.local_id, dst, seq, ack, window, opts, payload)
        stats = self.stats
        stats.segments_sent += 1
        stats.bytes_sent += len(dgram)
        if self._hook is not None:
            self._trace_sent(flags, seq, ack, len(payload), window, opts, retransmit, len(dgram))
        return dgram

    # --- timers ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline of every timer, or None when nothing is pending."""
        deadline = None
        for t in (
            self._rto_deadline,
            self._persist_deadline,
            self._delack_deadline,
            self._time_wait_deadline,
            self.pmtud.probe_deadline,
            self._tlp_deadline,
            self._rack_deadline,
        ):
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        ut = self._user_timeout_deadline()
        if ut is not None and (deadline is None or ut < deadline):
            deadline = ut
        if self._pacing_blocked and (deadline is None or self._pace_next < deadline):
            deadline = self._pace_next
        return deadline

    def _user_timeout_deadline(self) -> float | None:
        """While we wait on the peer (SYN, data, FIN, probes), its silence is bounded."""
        state = self.state
        if state is S.CLOSED or state is S.LISTEN or state is S.TIME_WAIT:
            return None
        if state in (S.SYN_SENT, S.SYN_RECEIVED, S.FIN_WAIT_2) or self.snd_nxt > self.snd_una:
            return self._last_heard + self.config.user_timeout_s
        if self._persist_deadline is not None and self._probe_unanswered_since > self._last_heard:
            # RFC 1122 4.2.2.17: a zero window is kept open as long as the receiver answers
            # the probes; only an unanswered probe counts toward the user timeout.
            return self._probe_unanswered_since + self.config.user_timeout_s
        return None

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        ut = self._user_timeout_deadline()
        if ut is not None and now >= ut:
            self._trace("timer_fired", timer="user_timeout")
            what = "no answer from the peer" if self.state in (S.SYN_SENT, S.SYN_RECEIVED) else (
                "the peer stopped answering"
            )
            self._set_state("user timeout")
            self._enter_closed(
                "timeout", f"{what} for {self.config.user_timeout_s:g} s", transition=False
            )
            return
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._time_wait_deadline = None
            self._trace("timer_fired", timer="time_wait")
            self._set_state("2MSL timeout")
            return
        if self._rack_deadline is not None and now >= self._rack_deadline:
            self._trace("timer_fired", timer="reorder")
            self._on_reorder_timeout(now)
        # The probe before the RTO: a PTO cut to the RTO (_arm_tlp) fires at the same moment.
        if self._tlp_deadline is not None and now >= self._tlp_deadline:
            self._trace("timer_fired", timer="tail_loss_probe")
            self._tlp_deadline = None
            if self.scoreboard.pipe > 0 or self._fin_in_flight():
                self._tlp_pending = True
                self._tlp_in_flight += 1
                self._arm_timer("retransmission", now, self.rtt.rto_s)  # RFC 8985 7.3: re-arm the RTO
                self._arm_tlp(now)
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._trace("timer_fired", timer="retransmission")
            self._tlp_deadline = None
            self._on_rto(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._trace("timer_fired", timer="persist")
            self._probe_pending = True
            self._persist_backoff += 1
            self._arm_timer("persist", now, self._persist_interval())
        if self.pmtud.probe_deadline is not None and now >= self.pmtud.probe_deadline:
            self._trace("timer_fired", timer="pmtu_probe")
            self.pmtud.on_timer(now)
        if self._delack_deadline is not None and now >= self._delack_deadline:
            self._trace("timer_fired", timer="delayed_ack")
            self._delack_deadline = None
            self._ack_now = True

    def _on_reorder_timeout(self, now: float) -> None:
        """RFC 8985 6.3: segments sent no later than a delivered one, and not delivered
        within its RTT plus the reordering window, are lost: a burst's first segment too,
        which the send-time comparison alone never marks."""
        sb = self.scoreboard
        reorder_window = self._reorder_window()
        self._rack_deadline = None
        if not len(sb):
            return
        if sb.detect_losses(reorder_window, now) and not self._in_recovery and (
            self.snd_una >= self._recover
        ):
            self._enter_recovery(now)
        deadline = sb.reorder_deadline(reorder_window)
        if deadline is not None and deadline > now:
            self._arm_timer("reorder", now, deadline - now)

    def _challenge_ack(self, now: float) -> None:
        """An ACK in answer to a suspicious segment (RFC 5961 3.2, 4.2, 5.2), at most
        CHALLENGE_ACKS_PER_S a second (RFC 5961 7); the rest are counted, not sent."""
        if now - self._challenge_acks_at >= 1.0:
            self._challenge_acks_at = now
            self._challenge_acks = 0
        if self._challenge_acks < CHALLENGE_ACKS_PER_S:
            self._challenge_acks += 1
            self._ack_now = True
        else:
            self.stats.challenge_acks_limited += 1

    def _persist_interval(self) -> float:
        return min(self.rtt.rto_s * (1 << min(self._persist_backoff, 16)), MAX_PERSIST_S)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 5.4-5.6: retransmit the earliest unacknowledged thing, back off."""
        self._rto_deadline = None
        if self.snd_una >= self.snd_nxt:
            return
        self.stats.timeouts += 1
        self.rtt.backoff()
        self.stats.rto_s = self.rtt.rto_s
        if self.snd_una == 0:  # SYN or SYN-ACK lost
            self._syn_pending = True
            # counted like a FIN's retransmission: the handshake's losses show in the stats too
            self.stats.retransmissions += 1
            self.stats.retransmits_timeout += 1
            return
        sb = self.scoreboard
        self._consecutive_rtos += 1
        if self._consecutive_rtos >= 2 and self.config.pmtud:
            # RFC 8899 4.3 black-hole detection: big segments stopped getting through.
            size = self.pmtud.black_hole(now, self.mss + self._data_overhead())
            if size is not None:
                self.stats.pmtu_black_holes += 1
                self._set_mss(size - self._data_overhead())
        self.cc.on_rto(now, sb.outstanding_bytes)  # RFC 5681 3.1 eq. 4, then cwnd = 1 segment
        self._in_recovery = False
        self._dupack_credit = 0
        self._dupacks = 0
        self._recover = self.snd_nxt
        if len(sb):
            sb.mark_all_lost()
        elif self._fin_offset is not None and self.snd_una == self._fin_offset:
            self.stats.retransmissions += 1
            self.stats.retransmits_timeout += 1
            self._fin_resend = True
        self._arm_timer("retransmission", now, self.rtt.rto_s)
        self._trace_cc(now)

    _fin_resend = False
    _resend_first_segment = False  # a duplicate SYN-ACK came: answer it with the first segment

    def _on_new_ack_timers(self, now: float) -> None:
        """RFC 6298 5.2/5.3: stop the timer when all is acked, else restart it."""
        if self.snd_una >= self.snd_nxt:
            self._rto_deadline = None
        else:
            self._arm_timer("retransmission", now, self.rtt.rto_s)

    _TIMER_ATTRS: ClassVar[dict[str, str]] = {
        "retransmission": "_rto_deadline",
        "delayed_ack": "_delack_deadline",
        "persist": "_persist_deadline",
        "time_wait": "_time_wait_deadline",
        "tail_loss_probe": "_tlp_deadline",
        "reorder": "_rack_deadline",
    }

    def _arm_timer(self, timer: str, now: float, after_s: float) -> None:
        """Set one of the deadlines get_timer() reports (and trace it when tracing)."""
        setattr(self, self._TIMER_ATTRS[timer], now + after_s)
        if self._hook is not None:
            self._trace("timer_set", timer=timer, after=after_s)

    def _enter_time_wait(self, now: float) -> None:
        self._arm_timer("time_wait", now, self.config.time_wait_s)
        self._rto_deadline = None
        self._report_closed("closed", None)

    # --- state, helpers ------------------------------------------------------------------

    def _set_state(self, event: str) -> None:
        old = self.state
        new = TRANSITIONS.get((old, event))
        if new is None:
            if event in _ANY_STATE_EVENTS:
                new = S.CLOSED
            else:
                raise LocalProtocolError(f"no transition from {old.value} on {event!r}")
        self.state = new
        if self._hook is not None:
            self._trace("state_change", old=old.value, new=new.value, cause=event)
        if new is S.CLOSED:
            self._clear_timers()

    def _enter_closed(self, reason: str, error: str | None, transition: bool = True) -> None:
        if transition and self.state is not S.CLOSED:
            self._set_state("abort" if reason == "aborted" else "recv RST")
        self._clear_timers()
        self._reasm.release()  # out-of-order bytes can never be delivered now: free them
        self._report_closed(reason, error)

    def _clear_timers(self) -> None:
        self._rto_deadline = self._persist_deadline = self._delack_deadline = None
        self._tlp_deadline = self._rack_deadline = None
        self._time_wait_deadline = None

    def _report_closed(self, reason: str, error: str | None) -> None:
        if not self._closed_reported:
            self._closed_reported = True
            self._events.append(events.ConnectionClosed(reason, error))

    def _receive_window(self) -> int:
        return max(0, self.config.receive_buffer_bytes - self._rcv_buffered)

    def receive_memory(self) -> tuple[int, int]:
        """(bytes the receive side holds or must keep room for: unread bytes plus the extent of
        the out-of-order data, holes included; out-of-order ranges held). An application that
        shares memory between connections lowers config.receive_buffer_bytes, which the
        window follows (rtcp.transfer.limits.ReceiveMemoryBudget)."""
        reasm = self._reasm
        return self._rcv_buffered + reasm.held_extent, reasm.held_ranges

    def _deliver(self, data: bytes) -> None:
        """Queue in-order bytes for read(); DataReceived only when the buffer was empty, so an
        application that reads until b'' hears once per batch, not once per segment."""
        self._rcvbuf.append(data)
        self._delivered(len(data))

    def _delivered(self, nbytes: int) -> None:
        """Account for nbytes just appended to the receive buffer (by _deliver or the fast
        path): DataReceived only when the buffer was empty before them."""
        if self._rcv_buffered == 0:
            self._events.append(events.DataReceived())
        self._rcv_buffered += nbytes
        self.stats.data_bytes_received += nbytes

    def _ts(self, now: float) -> int:
        return int(now * TS_TICKS_PER_S) & TS_MASK

    def _ts_update(self, seg: wire.Segment, now: float) -> None:
        if seg.ts_val is not None:
            self._ts_recent = seg.ts_val
            self._ts_recent_at = now

    def _rtt_sample(self, rtt_s: float) -> None:
        rtt = self.rtt
        rtt.on_sample(rtt_s)
        stats = self.stats
        stats.srtt_s = rtt.srtt_s
        stats.rttvar_s = rtt.rttvar_s
        stats.min_rtt_s = self.scoreboard.min_rtt_s = rtt.min_rtt_s
        stats.rto_s = rtt.rto_s
        if self._hook is not None:
            self._trace(
                "rtt_sample", rtt=rtt_s, srtt=rtt.srtt_s, rttvar=rtt.rttvar_s, rto=rtt.rto_s
            )

    def _data_overhead(self) -> int:
        """Header and options bytes of a data segment."""
        return wire.HEADER_BYTES + (wire.TIMESTAMPS_OPTION_BYTES if self.ts_ok else 0)

    def _receivable_mss(self) -> int:
        """The MSS we announce: the largest payload we accept in one datagram."""
        cfg = self.config
        if not cfg.pmtud:
            return cfg.mss_bytes
        return max(cfg.mss_bytes, cfg.max_datagram_bytes - wire.HEADER_BYTES - 10)

    def _start_pmtud(self, now: float) -> None:
        cfg = self.config
        overhead = self._data_overhead()
        base = self._base_mss + overhead
        ceiling = min(cfg.max_datagram_bytes, self._peer_mss + overhead)
        self.pmtud = PathMtuDiscovery(base, ceiling if cfg.pmtud else base)
        self.pmtud.start(now)
        self.stats.datagram_bytes = base

    def datagram_too_big(self, max_datagram_bytes: int, now: float) -> None:
        """The local stack refused a datagram: nothing above max_datagram_bytes leaves (EMSGSIZE,
        the first hop's MTU fell). Shrink at once (RFC 8899 4.6.2); the segments lost to it are
        retransmitted in the new size like any loss."""
        if self.pmtud.lower_ceiling(max_datagram_bytes, now) or (
            self.mss + self._data_overhead() > max_datagram_bytes
        ):
            self._set_mss(max(64, min(self.mss, max_datagram_bytes - self._data_overhead())))

    def packet_too_big(self, max_datagram_bytes: int, now: float) -> None:
        """An ICMP "too big" report that quotes a datagram of this connection (the caller
        validated it): a hint for path MTU discovery (RFC 8899 4.6), which may shrink at once."""
        if self.pmtud.on_packet_too_big(max_datagram_bytes, now):
            self._set_mss(max(64, min(self.mss, self.pmtud.plpmtu - self._data_overhead())))

    def _initial_window_for_new_mss(self) -> None:
        """Path MTU discovery raised the segment size before anything was lost: give cwnd the
        initial window it would have had with this size from the start (IW10 counts segments,
        RFC 6928 and Linux). On loopback the size goes from 1,362 to 65,469 bytes in the first
        round trip, and a window of 10 small segments would take five more doublings to catch
        up, about 5 ms of every transfer."""
        cc = self.cc
        iw = self.config.initial_window_segments * self.mss
        if (
            cc.cwnd < iw
            and not self.stats.retransmissions
            and not cc.in_recovery
            and cc.phase in ("startup", "slow_start")
        ):
            cc.cwnd = iw

    def _set_mss(self, mss: int) -> None:
        self.mss = mss
        self.cc.mss = mss
        self.stats.datagram_bytes = mss + self._data_overhead()
        self._trace("pmtu", datagram_bytes=self.stats.datagram_bytes, mss=mss)

    _peer_mss = 0

    def refresh_stats(self) -> ConnectionStats:
        """Copy the live congestion and window figures into stats and return it."""
        s = self.stats
        s.cwnd_bytes = self.cc.cwnd
        s.ssthresh_bytes = min(self.cc.ssthresh, 1 << 62)
        s.peer_window_bytes = self.snd_wnd
        s.bytes_in_flight = self.scoreboard.pipe
        s.rto_s = self.rtt.rto_s
        s.out_of_order_refused = self._reasm.ranges_refused
        return s

    # --- tracing (only when an event hook is set) --------------------------------------

    def _trace(self, event: str, **fields) -> None:
        if self._hook is not None:
            fields["conn"] = self.local_id
            self._hook(event, fields)

    def _trace_cc(self, now: float) -> None:
        if self._hook is not None:
            self._trace(
                "congestion", cwnd=self.cc.cwnd, ssthresh=min(self.cc.ssthresh, 1 << 62),
                phase=self.cc.phase, in_flight=self.scoreboard.pipe,
            )

    def _trace_segment(self, event: str, seg: wire.Segment, size: int) -> None:
        self._trace(
            event, flags=seg.flag_names(), seq=seg.seq, ack=seg.ack, len=len(seg.payload),
            window=seg.window, sack=list(seg.sack_blocks), size=size,
            rel_seq=(seg.seq - self.irs) & TS_MASK if self.peer_id else 0,
            rel_ack=(seg.ack - self.iss) & TS_MASK, pmtu_ack=seg.pmtu_ack,
        )

    def _trace_sent(self, flags, seq, ack, length, window, opts, retransmit, size) -> None:
        sent = wire.Segment(flags, 0, 0, seq, ack, window)
        wire.parse_options(sent, opts)
        self._trace(
            "segment_sent", flags=wire.flag_names(flags), seq=seq, ack=ack, len=length,
            window=window, retransmit=retransmit, size=size, sack=list(sent.sack_blocks),
            rel_seq=(seq - self.iss) & TS_MASK, rel_ack=(ack - self.irs) & TS_MASK,
            pmtu_ack=sent.pmtu_ack,
        )


def _random_id() -> int:
    while True:
        value = secrets.randbits(32)
        if value:
            return value


def _wscale_for(buffer_bytes: int) -> int:
    """The smallest shift that lets the whole buffer be advertised (RFC 7323 2.3)."""
    shift = 0
    while (MAX_WINDOW_FIELD << shift) < buffer_bytes and shift < wire.MAX_WSCALE:
        shift += 1
    return shift
