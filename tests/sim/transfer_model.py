"""The file transfer's timing rules over the simulator: `rtcp send` and `rtcp recv` reduced
to what decides whether a short transfer through a lossy path succeeds.

The model keeps the applications' deadlines and their order of events, as
rtcp/transfer/sender.py and receiver.py have them: the sender connects, queues header, file
and trailer once the handshake completes, gives up after `timeout_s` without progress
(handshake, bytes acknowledged, bytes of the verdict), and on the verdict closes and waits at
most CLOSE_GRACE_S for the FIN exchange; the receiver answers its verdict once the whole
stream arrived, closes, and resets the connection when the close has not completed
RECEIVER_CLOSE_GRACE_S later (or after its idle timeout). Bytes only are modelled, not the
file protocol's fields: what arrives is checked by length and content.
"""

from __future__ import annotations

import dataclasses

from rtcp.core import events
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection, State
from rtcp.proxy.impair import ImpairConfig
from rtcp.transfer.receiver import CLOSE_GRACE_S as RECEIVER_CLOSE_GRACE_S
from rtcp.transfer.receiver import DEFAULT_IDLE_TIMEOUT_S
from rtcp.transfer.sender import CLOSE_GRACE_S, DEFAULT_TIMEOUT_S, make_config
from tests.sim.network import SimNetwork

HEADER_BYTES = 15 + len("file.bin")  # magic, version, name length, name, size
TRAILER_BYTES = 32
VERDICT_BYTES = 3 + 64  # status, length, the hex digest


class SenderModel:
    """`rtcp send`'s SendApp, as far as timing goes."""

    def __init__(self, conn: Connection, stream: bytes, verdict_len: int, timeout_s: float):
        self.name = "client"
        self.conn = conn
        self.stream = stream
        self.verdict_len = verdict_len
        self.timeout_s = timeout_s
        self.clock = lambda: 0.0
        self.last_progress = 0.0
        self.longest_wait_s = 0.0  # the longest time without progress, until the verdict
        self.established = False
        self.queued = 0
        self.acked = 0
        self.received = bytearray()
        self.closing_since: float | None = None
        self.outcome: str | None = None  # "ok", or why it failed
        self.events: list = []

    @property
    def now(self) -> float:
        return self.clock()

    def start(self, now: float) -> None:
        self.last_progress = now
        self.conn.connect(now)

    def _progress(self) -> None:
        now = self.now
        self.longest_wait_s = max(self.longest_wait_s, now - self.last_progress)
        self.last_progress = now

    def step(self) -> None:
        conn = self.conn
        while (ev := conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, events.HandshakeComplete):
                self.established = True
                self._progress()
            elif isinstance(ev, events.DataReceived):
                self._progress()
            elif isinstance(ev, events.ConnectionClosed):
                if self.outcome is None:
                    self.outcome = f"closed before the verdict: {ev.reason} ({ev.error})"
                elif self.closing_since is not None:
                    self.closing_since = None
        if conn.readable:
            self.received += conn.read()
            if len(self.received) >= self.verdict_len and self.outcome is None:
                self.outcome = "ok"
                conn.close()
                self.closing_since = self.now
        acked = max(0, conn.snd_una - 1)
        if acked > self.acked:
            self.acked = acked
            self._progress()  # the send buffer's space grew
        if self.established and self.queued < len(self.stream) and self.outcome is None:
            self.queued += conn.send(memoryview(self.stream)[self.queued:])

    def deadline(self) -> float | None:
        if self.closing_since is not None:
            return self.closing_since + min(CLOSE_GRACE_S, self.timeout_s)
        if self.outcome is not None:
            return None
        return self.last_progress + self.timeout_s

    def on_deadline(self, now: float) -> None:
        if self.closing_since is not None:
            self.closing_since = None
            return
        if self.outcome is None:
            self.longest_wait_s = max(self.longest_wait_s, now - self.last_progress)
            what = "no progress" if self.established else "no answer"
            self.outcome = f"{what} within {self.timeout_s:g} s"
            self.conn.abort()

    @property
    def done(self) -> bool:
        return self.outcome is not None and self.closing_since is None


class ReceiverModel:
    """`rtcp recv`'s per-transfer app, as far as timing goes."""

    def __init__(self, conn: Connection, stream_len: int, verdict: bytes, idle_timeout_s: float):
        self.name = "server"
        self.conn = conn
        self.stream_len = stream_len
        self.verdict = verdict
        self.idle_timeout_s = idle_timeout_s
        self.clock = lambda: 0.0
        self.last_activity: float | None = None  # the app exists once a SYN arrived
        self.received = bytearray()
        self.verdict_at: float | None = None
        self.finished = False
        self.events: list = []

    @property
    def now(self) -> float:
        return self.clock()

    def step(self) -> None:
        conn = self.conn
        if self.last_activity is None and conn.state is not State.LISTEN:
            self.last_activity = self.now
        while (ev := conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, events.DataReceived | events.StreamEnded):
                self.last_activity = self.now
            elif isinstance(ev, events.ConnectionClosed):
                self.finished = True
        if conn.readable:
            self.received += conn.read()
            if len(self.received) >= self.stream_len and self.verdict_at is None:
                conn.send_ack_now()
                conn.send(self.verdict)
                conn.close()
                self.verdict_at = self.now

    def deadline(self) -> float | None:
        if self.finished or self.last_activity is None:
            return None
        if self.verdict_at is not None:
            return self.verdict_at + RECEIVER_CLOSE_GRACE_S
        return self.last_activity + self.idle_timeout_s

    def on_deadline(self, now: float) -> None:
        conn = self.conn
        if self.verdict_at is not None and conn.unacknowledged_bytes and not conn.is_closed:
            self.verdict_at = now  # the verdict is still on its way: the grace starts again
            return
        if not self.finished:
            self.finished = True
            if not self.conn.is_closed:
                self.conn.abort()

    @property
    def done(self) -> bool:
        return self.finished or self.conn.state in (State.CLOSED, State.TIME_WAIT)


def run_transfer(
    seed: int,
    *,
    loss: float = 0.3,
    delay_s: float = 0.015,
    file_bytes: int = 1024,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    client_config: ConnectionConfig | None = None,
    server_config: ConnectionConfig | None = None,
    keep_log: bool = False,
) -> SimNetwork:
    """One `rtcp send` of file_bytes through `loss` each way and `delay_s` of one-way delay,
    with the commands' default settings; returns the finished network (client.outcome)."""
    link = ImpairConfig(loss=loss, delay_s=delay_s)
    client_cfg = make_config(client_config, timeout_s=timeout_s)
    server_cfg = dataclasses.replace(
        server_config or ConnectionConfig(), user_timeout_s=DEFAULT_IDLE_TIMEOUT_S
    )
    net = SimNetwork(seed=seed, up=link, down=link, client_config=client_cfg,
                          server_config=server_cfg, base_delay_s=0.0)
    stream = bytes(range(256)) * (-(-(HEADER_BYTES + file_bytes + TRAILER_BYTES) // 256))
    stream = stream[:HEADER_BYTES + file_bytes + TRAILER_BYTES]
    verdict = b"v" * VERDICT_BYTES
    net.client = SenderModel(net.client.conn, stream, len(verdict), timeout_s)
    net.server = ReceiverModel(net.server.conn, len(stream), verdict, DEFAULT_IDLE_TIMEOUT_S)
    for ep in (net.client, net.server):
        ep.clock = lambda: net.now
    net.keep_log = keep_log
    net.client.start(net.now)
    net.run(max_time_s=600)
    return net
