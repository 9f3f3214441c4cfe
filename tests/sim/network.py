"""An in-memory network with a virtual clock: two sans-IO connections, seeded impairments.

The links reuse the proxy's sans-IO impairment unit (rtcp.proxy.impair.Impairer), so the
simulator and `rtcp proxy` make the same decisions for the same seed. Time only moves when
nothing is due: a transfer of megabytes over a lossy 10 ms path takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from dataclasses import dataclass, field

from rtcp.core import events
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection, State
from rtcp.proxy.impair import ImpairConfig, Impairer

START_TIME_S = 1000.0


@dataclass
class Endpoint:
    """A connection and the byte-stream application on top of it."""

    name: str
    conn: Connection
    to_send: bytes = b""
    close_when_sent: bool = True
    close_on_stream_end: bool = True
    read_enabled: bool = True
    read_chunk: int = -1
    # A reader on its own clock: read_chunk bytes every read_every_s (None: at every step, as
    # soon as something arrived). A reader woken only by arriving datagrams that takes a few
    # bytes per wakeup is woken by nothing once receiver SWS avoidance (RFC 9293 3.8.6.2.2)
    # holds the window shut: a real slow consumer reads on its own schedule.
    read_every_s: float | None = None
    next_read_at: float | None = None
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    events: list = field(default_factory=list)
    stream_ended: bool = False
    closed: events.ConnectionClosed | None = None
    close_called: bool = False

    def step(self) -> None:
        conn = self.conn
        while (ev := conn.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, events.StreamEnded):
                self.stream_ended = True
            elif isinstance(ev, events.ConnectionClosed):
                self.closed = ev
        if self.closed is not None and self.closed.reason != "closed":
            return
        if self.read_enabled and conn.readable and self.read_every_s is None:
            self.received += conn.read(self.read_chunk)
        if conn.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.SYN_SENT, State.SYN_RECEIVED):
            if self.sent < len(self.to_send) and not self.close_called:
                self.sent += conn.send(memoryview(self.to_send)[self.sent:])
            if (
                self.sent >= len(self.to_send)
                and not self.close_called
                and (self.close_when_sent or (self.close_on_stream_end and self.stream_ended))
                and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT)
            ):
                conn.close()
                self.close_called = True

    @property
    def done(self) -> bool:
        return self.conn.state in (State.CLOSED, State.TIME_WAIT) or self.closed is not None and (
            self.closed.reason != "closed"
        )

    def deadline(self) -> float | None:
        """The application's own next deadline: the paced reader's next read (see also
        tests/sim/transfer_model.py)."""
        if self.read_every_s is None or self.done:
            return None
        return self.next_read_at

    def on_deadline(self, now: float) -> None:
        """Called once now >= deadline()."""
        if self.read_enabled and self.conn.readable:
            self.received += self.conn.read(self.read_chunk)
        self.next_read_at = now + self.read_every_s


class SimNetwork:
    """Two endpoints joined by two impaired one-way links."""

    def __init__(
        self,
        *,
        seed: int = 0,
        up: ImpairConfig | None = None,
        down: ImpairConfig | None = None,
        client_config: ConnectionConfig | None = None,
        server_config: ConnectionConfig | None = None,
        base_delay_s: float = 0.001,
    ):
        self.now = START_TIME_S
        self.base_delay_s = base_delay_s
        rng = random.Random(seed)
        # Ids and initial sequence numbers come from the seed too: a run is reproducible.
        client_config = _seeded(client_config or ConnectionConfig(), rng)
        server_config = _seeded(server_config or ConnectionConfig(), rng)
        self.client = Endpoint("client", Connection(client_config, is_client=True, now=self.now))
        self.server = Endpoint("server", Connection(server_config, is_client=False, now=self.now))
        self.links = {
            "client": Impairer(up or ImpairConfig(), random.Random(rng.getrandbits(64))),
            "server": Impairer(down or ImpairConfig(), random.Random(rng.getrandbits(64))),
        }
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._counter = 0
        self.drop_filter = None  # optional: callable(sender_name, datagram) -> True to drop
        self.log: list[tuple[float, str, bytes]] = []  # every datagram handed to a link
        self.keep_log = False

    def peer(self, ep: Endpoint) -> Endpoint:
        return self.server if ep is self.client else self.client

    def _transmit(self, ep: Endpoint) -> None:
        for dgram in ep.conn.datagrams_to_send(self.now):
            if self.keep_log:
                self.log.append((self.now, ep.name, dgram))
            if self.drop_filter is not None and self.drop_filter(ep.name, dgram):
                continue
            dest = self.peer(ep).name
            for when, data in self.links[ep.name].process(dgram, self.now):
                self._counter += 1
                heapq.heappush(self._queue, (when + self.base_delay_s, self._counter, dest, data))

    def step(self) -> bool:
        """Advance to the next event and process everything due. False when nothing remains."""
        for ep in (self.client, self.server):
            deadline = ep.deadline()
            if deadline is not None and deadline <= self.now:
                ep.on_deadline(self.now)
        for ep in (self.client, self.server):
            deadline = ep.conn.get_timer()
            if deadline is not None and deadline <= self.now:
                ep.conn.handle_timer(self.now)
        queue = self._queue
        due: dict[str, list[bytes]] = {"client": [], "server": []}
        while queue and queue[0][0] <= self.now:
            _, _, dest, data = heapq.heappop(queue)
            due[dest].append(data)
        for ep in (self.client, self.server):
            self._receive(ep, due[ep.name])
        for ep in (self.client, self.server):
            ep.step()
            self._transmit(ep)
            ep.step()
        nxt = queue[0][0] if queue else None
        for ep in (self.client, self.server):
            for deadline in (ep.conn.get_timer(), ep.deadline()):
                if deadline is not None and (nxt is None or deadline < nxt):
                    nxt = deadline
        if nxt is None:
            return False
        self.now = max(self.now, nxt)
        return True

    def _receive(self, ep: Endpoint, batch: list[bytes]) -> None:
        """Everything due at one moment arrives together, like one GRO read of a real socket."""
        while batch:
            taken = ep.conn.receive_datagrams(batch, self.now)
            if taken < len(batch):  # addressed elsewhere (a SYN's dst_id 0): one by one
                ep.conn.receive_datagram(batch[taken], self.now)
                taken += 1
            batch = batch[taken:]

    def run(self, *, until=None, max_time_s: float = 600.0, max_steps: int = 5_000_000) -> None:
        """Run until `until()` is true, both ends are done, or nothing is left to happen."""
        end = self.now + max_time_s
        for _ in range(max_steps):
            if until is not None and until():
                return
            if until is None and self.client.done and self.server.done:
                return
            if self.now > end:
                raise TimeoutError(f"simulation still running at t={self.now - START_TIME_S:.1f}s")
            if not self.step():
                return
        raise TimeoutError("simulation exceeded its step budget")

    def start(self, data_up: bytes = b"", data_down: bytes = b"") -> None:
        self.client.to_send = data_up
        self.server.to_send = data_down
        self.server.close_when_sent = False  # the server closes after the client's FIN
        for ep in (self.client, self.server):
            if ep.read_every_s is not None:
                ep.next_read_at = self.now + ep.read_every_s
        self.client.conn.connect(self.now)


def _seeded(config: ConnectionConfig, rng: random.Random) -> ConnectionConfig:
    local_id = rng.randrange(1, 1 << 32)
    initial_seq = rng.getrandbits(32)
    return dataclasses.replace(
        config,
        local_id=config.local_id if config.local_id is not None else local_id,
        initial_seq=config.initial_seq if config.initial_seq is not None else initial_seq,
        # BBR's random phase too (from the id: no extra draw, every scenario stays the same)
        random_seed=config.random_seed if config.random_seed is not None else local_id,
    )


def transfer(
    data: bytes,
    *,
    seed: int = 0,
    up: ImpairConfig | None = None,
    down: ImpairConfig | None = None,
    reply: bytes = b"",
    client_config: ConnectionConfig | None = None,
    server_config: ConnectionConfig | None = None,
    max_time_s: float = 600.0,
) -> SimNetwork:
    """Send `data` client -> server (and `reply` back), both close; returns the finished network."""
    net = SimNetwork(
        seed=seed, up=up, down=down, client_config=client_config, server_config=server_config
    )
    net.start(data, reply)
    net.run(max_time_s=max_time_s)
    return net
