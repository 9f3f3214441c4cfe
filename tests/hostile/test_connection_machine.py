"""A stateful fuzzer (hypothesis RuleBasedStateMachine) of two Connections joined by a network
that the machine controls: deliver, drop, duplicate, corrupt or reorder their datagrams, inject
well-formed and malformed forged segments, fire timers, call the API. No exception escapes,
and the invariants hold after every step: SND.UNA <= SND.NXT, buffers within their bounds, held
out-of-order ranges within their cap, and only the transitions of the state table.

`make test` runs it at a small setting; `make fuzz MINUTES=N` runs it (and the codec fuzzer)
for N minutes (RTCP_FUZZ_EXAMPLES, set by the Makefile)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rtcp.core import events, wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import TRANSITIONS, Connection, LocalProtocolError, State
from rtcp.core.reassembly import MAX_HELD_RANGES

EXAMPLES = int(os.environ.get("RTCP_FUZZ_EXAMPLES", "60"))
STEPS = int(os.environ.get("RTCP_FUZZ_STEPS", "60"))
BUFFER = 64 * 1024
T0 = 1000.0

STEP = {(old, new) for (old, _event), new in TRANSITIONS.items()}
STEP |= {(s, State.CLOSED) for s in State}  # reset, abort, timeout from any state


def _closure(pairs: set) -> set:
    """The (from, to) pairs reachable through one or more steps, or none."""
    reach = set(pairs) | {(s, s) for s in State}
    while True:
        more = {(a, d) for a, b in reach for c, d in reach if b == c} - reach
        if not more:
            return reach
        reach |= more


# The client records every transition through its event hook (each must be one of the table);
# the server runs without a hook (so that its receive fast path is fuzzed too), and between
# two steps it may take several transitions: their start and end must be joined by the table.
REACHABLE = _closure(STEP)


def _config(seed: int, hook=None) -> ConnectionConfig:
    return ConnectionConfig(
        receive_buffer_bytes=BUFFER, send_buffer_bytes=BUFFER, mss_bytes=500, pmtud=False,
        random_seed=seed, initial_seq=(seed * 2654435761) & 0xFFFFFFFF, event_hook=hook,
    )


class TwoConnections(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = T0
        self.transitions: list[tuple[str, str]] = []
        self.client = Connection(_config(1, self._hook), is_client=True, now=self.now)
        self.server = Connection(_config(2), is_client=False, now=self.now)
        self.wire: dict[str, list[bytes]] = {"c2s": [], "s2c": []}
        self.states = {id(c): c.state for c in (self.client, self.server)}
        self.closed = {id(self.client): 0, id(self.server): 0}
        self.client.connect(self.now)
        self._collect()

    def _hook(self, event: str, fields: dict) -> None:
        if event == "state_change":
            self.transitions.append((fields["old"], fields["new"]))

    def _collect(self) -> None:
        for conn, way in ((self.client, "c2s"), (self.server, "s2c")):
            for d in conn.datagrams_to_send(self.now):
                assert len(d) <= wire.MAX_DATAGRAM_BYTES
                assert wire.decode(d).src_id == conn.local_id  # all we send is well-formed
                self.wire[way].append(d)
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, events.ConnectionClosed):
                    self.closed[id(conn)] += 1
        del self.wire["c2s"][:-200], self.wire["s2c"][:-200]  # a bounded network

    def _to(self, way: str) -> Connection:
        return self.server if way == "c2s" else self.client

    @rule(way=st.sampled_from(["c2s", "s2c"]), index=st.integers(0, 10), keep=st.booleans())
    def deliver(self, way, index, keep):
        """Deliver one queued datagram (any of the first few: reordering); keep = duplicate."""
        queue = self.wire[way]
        if queue:
            i = min(index, len(queue) - 1)
            d = queue[i] if keep else queue.pop(i)
            self._to(way).receive_datagram(d, self.now)
            self._collect()

    @rule(way=st.sampled_from(["c2s", "s2c"]))
    def deliver_all(self, way):
        queue, self.wire[way] = self.wire[way], []
        self._to(way).receive_datagrams(queue, self.now)
        self._collect()

    @rule(way=st.sampled_from(["c2s", "s2c"]), bit=st.integers(0, 8 * 60))
    def corrupt(self, way, bit):
        queue = self.wire[way]
        if queue:
            d = bytearray(queue.pop(0))
            d[(bit // 8) % len(d)] ^= 1 << (bit % 8)
            self._to(way).receive_datagram(bytes(d), self.now)
            self._collect()

    @rule(way=st.sampled_from(["c2s", "s2c"]))
    def drop(self, way):
        if self.wire[way]:
            self.wire[way].pop(0)

    @rule(
        way=st.sampled_from(["c2s", "s2c"]),
        flags=st.sets(
            st.sampled_from([wire.SYN, wire.ACK, wire.FIN, wire.RST, wire.RETRY, wire.PROBE])
        ).map(sum),
        seq_delta=st.integers(-70000, 70000) | st.integers(0, 2**32 - 1),
        ack_delta=st.integers(-70000, 70000),
        payload=st.binary(max_size=600),
        ts=st.none() | st.integers(0, 2**32 - 1),
        sack=st.lists(st.tuples(st.integers(-5000, 70000), st.integers(1, 3000)), max_size=4),
        window=st.integers(0, 0xFFFF),
    )
    def forge(self, way, flags, seq_delta, ack_delta, payload, ts, sack, window):
        """A segment with the right ids and anything else: what a peer that knows the ids
        (or a broken one) can send."""
        sender = self.client if way == "c2s" else self.server
        target = self._to(way)
        seq = (sender.iss + sender.snd_nxt + seq_delta) & 0xFFFFFFFF
        ack = (target.iss + target.snd_nxt + ack_delta) & 0xFFFFFFFF
        blocks = tuple(
            ((target.iss + a) & 0xFFFFFFFF, (target.iss + a + n) & 0xFFFFFFFF) for a, n in sack
        )
        seg = wire.Segment(
            flags, sender.local_id, target.local_id, seq, ack, window, payload,
            sack_blocks=blocks, ts_val=ts, ts_ecr=ts and ts // 2,
        )
        target.receive_datagram(wire.encode(seg), self.now)
        self._collect()

    @rule(way=st.sampled_from(["c2s", "s2c"]), data=st.binary(max_size=80))
    def garbage(self, way, data):
        self._to(way).receive_datagram(data, self.now)
        self._collect()

    @rule(side=st.booleans(), data=st.binary(min_size=1, max_size=3000))
    def send(self, side, data):
        conn = self.client if side else self.server
        try:
            n = conn.send(data)
        except LocalProtocolError:
            return
        assert 0 <= n <= len(data)
        self._collect()

    @rule(side=st.booleans(), n=st.integers(-1, 5000))
    def read(self, side, n):
        (self.client if side else self.server).read(n)
        self._collect()

    @rule(side=st.booleans(), abort=st.booleans())
    def close(self, side, abort):
        conn = self.client if side else self.server
        conn.abort() if abort else conn.close()
        self._collect()

    @rule(dt=st.floats(0.0, 3.0))
    def wait(self, dt):
        self.now += dt
        for conn in (self.client, self.server):
            t = conn.get_timer()
            if t is not None and t <= self.now:
                conn.handle_timer(self.now)
        self._collect()

    @precondition(lambda self: self.client.get_timer() or self.server.get_timer())
    @rule()
    def next_timer(self):
        timers = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None]
        self.now = max(self.now, min(timers))
        self.wait(0.0)

    @invariant()
    def invariants_hold(self):
        for conn in (self.client, self.server):
            assert conn.snd_una <= conn.snd_nxt
            assert 0 <= conn.readable <= BUFFER
            assert conn.send_buffer_space >= 0
            held, ranges = conn.receive_memory()
            assert ranges <= MAX_HELD_RANGES
            assert held <= BUFFER + wire.MAX_DATAGRAM_BYTES
            assert self.closed[id(conn)] <= 1
            old, new = self.states[id(conn)], conn.state
            assert (old, new) in REACHABLE, f"{old} -> {new}"
            self.states[id(conn)] = new
            if conn.state is State.CLOSED:
                assert conn.get_timer() is None
        for old, new in self.transitions:
            assert (State(old), State(new)) in STEP, f"client: {old} -> {new}"
        self.transitions.clear()


TwoConnections.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_two_connections = TwoConnections.TestCase
