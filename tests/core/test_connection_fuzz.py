"""Robustness: from every state, any sequence of well-formed (or broken) segments from the peer,
interleaved with API calls and timers, never raises, and the connection's invariants hold."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtcp.core import events, wire
from rtcp.core.connection import LocalProtocolError

from . import conn_helpers as h
from .conn_helpers import REMOTE, T0, State, lseq, rseq

MAKERS = {
    "listen": h.listen, "syn_sent": h.syn_sent, "syn_received": h.syn_received,
    "established": h.established, "fin_wait_1": h.fin_wait_1, "fin_wait_2": h.fin_wait_2,
    "closing": h.closing, "close_wait": h.close_wait, "last_ack": h.last_ack,
    "time_wait": h.time_wait,
}

FLAGS = st.sets(st.sampled_from([wire.SYN, wire.ACK, wire.FIN, wire.RST, wire.PSH])).map(sum)
NEAR = st.integers(-3000, 12000) | st.integers(-(2**31), 2**31)

segment = st.builds(
    lambda flags, s, a, window, payload, sack, ts, dst, src: wire.Segment(
        flags, src, dst, rseq(s), lseq(a), window, payload,
        sack_blocks=tuple((lseq(x), lseq(x + n)) for x, n in sack),
        ts_val=ts, ts_ecr=ts and ts // 2,
    ),
    FLAGS, NEAR, st.integers(-5, 9000), st.integers(0, 0xFFFF),
    st.binary(max_size=1500),
    st.lists(st.tuples(st.integers(-100, 9000), st.integers(1, 3000)), max_size=4),
    st.none() | st.integers(0, 2**32 - 1),
    st.sampled_from([h.LOCAL, h.LOCAL, h.LOCAL, 0, 12345]),
    st.sampled_from([REMOTE, REMOTE, REMOTE, 999]),
)

action = st.one_of(
    st.tuples(st.just("seg"), segment),
    st.tuples(st.just("garbage"), st.binary(max_size=80)),
    st.tuples(st.just("send"), st.binary(min_size=1, max_size=5000)),
    st.tuples(st.just("read"), st.integers(-1, 3000)),
    st.tuples(st.just("close"), st.none()),
    st.tuples(st.just("abort"), st.none()),
    st.tuples(st.just("wait"), st.floats(0.0, 5.0)),
    st.tuples(st.just("timer"), st.none()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(sorted(MAKERS)),
    opts=st.fixed_dictionaries({
        "sack": st.booleans(), "timestamps": st.booleans(), "window_scaling": st.booleans(),
    }),
    actions=st.lists(action, max_size=30),
)
def test_never_raises_and_invariants_hold(start, opts, actions):
    conn = MAKERS[start](**opts) if any(opts.values()) else MAKERS[start]()
    now = T0 + 0.01
    closed = []
    for kind, arg in actions:
        if kind == "seg":
            conn.receive_datagram(wire.encode(arg), now)
        elif kind == "garbage":
            conn.receive_datagram(arg, now)
        elif kind == "send":
            try:
                n = conn.send(arg)
            except LocalProtocolError:
                pass
            else:
                assert 0 <= n <= len(arg)
        elif kind == "read":
            conn.read(arg)
        elif kind == "close":
            conn.close()
        elif kind == "abort":
            conn.abort()
        elif kind == "wait":
            now += arg
        else:
            deadline = conn.get_timer()
            if deadline is not None:
                now = max(now, deadline)
                conn.handle_timer(now)
        for d in conn.datagrams_to_send(now):
            seg = wire.decode(d)  # everything sent is well-formed
            assert seg.src_id == conn.local_id
            assert len(d) <= wire.MAX_DATAGRAM_BYTES
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, events.ConnectionClosed):
                closed.append(ev)
        # invariants
        assert len(closed) <= 1
        if closed:
            assert closed[0].reason in {"closed", "reset", "timeout", "aborted", "protocol"}
            assert conn.state in (State.CLOSED, State.TIME_WAIT)
        if conn.state is State.CLOSED:
            assert conn.get_timer() is None
        deadline = conn.get_timer()
        assert deadline is None or deadline >= T0
        assert conn.snd_una <= conn.snd_nxt
        assert conn.readable >= 0
        assert conn.send_buffer_space >= 0
