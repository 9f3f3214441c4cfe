"""Every transition in TRANSITIONS, observed through the event hook; RST honoured (RFC 5961
exact match) or challenged in every state; RST sent by abort() and by a closed connection."""

from __future__ import annotations

import pytest

from rtcp.core import events
from rtcp.core.connection import _ANY_STATE_EVENTS, TRANSITIONS

from . import conn_helpers as h
from .conn_helpers import (
    ACK,
    FIN,
    MSS,
    RST,
    SYN,
    T0,
    State,
    closed_events,
    drain,
    lseq,
    out,
    recv,
    recv_nothing,
    rseq,
    send,
)

S = State


def _ack_closing(conn):
    send(conn, T0 + 0.1, ACK, rseq(2), lseq(2))


def _ack_last_ack(conn):
    send(conn, T0 + 0.1, ACK, rseq(2), lseq(2))


def _simultaneous_open(kw):
    conn = h.syn_sent(**kw)
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS)
    return conn


def _expire_time_wait(conn):
    conn.handle_timer(conn.get_timer())


def _ack_of_syn(conn):
    send(conn, T0, ACK, rseq(1), lseq(1))


# (state, event) -> a scenario that performs exactly that transition last
SCENARIOS = {
    (S.CLOSED, "connect"): lambda kw: h.syn_sent(**kw),
    (S.LISTEN, "recv SYN"): lambda kw: h.syn_received(**kw),
    (S.LISTEN, "close"): lambda kw: h.listen(**kw).close(),
    (S.SYN_SENT, "recv SYN-ACK"): lambda kw: h.established(**kw),
    (S.SYN_SENT, "recv SYN"): _simultaneous_open,
    (S.SYN_SENT, "close"): lambda kw: h.syn_sent(**kw).close(),
    (S.SYN_RECEIVED, "recv ACK of SYN"): lambda kw: _ack_of_syn(h.syn_received(**kw)),
    (S.ESTABLISHED, "close"): lambda kw: h.fin_wait_1(**kw),
    (S.ESTABLISHED, "recv FIN"): lambda kw: h.close_wait(**kw),
    (S.FIN_WAIT_1, "recv ACK of FIN"): lambda kw: h.fin_wait_2(**kw),
    (S.FIN_WAIT_1, "recv FIN"): lambda kw: h.closing(**kw),
    (S.FIN_WAIT_2, "recv FIN"): lambda kw: h.time_wait(**kw),
    (S.CLOSE_WAIT, "close"): lambda kw: h.last_ack(**kw),
    (S.CLOSING, "recv ACK of FIN"): lambda kw: _ack_closing(h.closing(**kw)),
    (S.LAST_ACK, "recv ACK of FIN"): lambda kw: _ack_last_ack(h.last_ack(**kw)),
    (S.TIME_WAIT, "2MSL timeout"): lambda kw: _expire_time_wait(h.time_wait(**kw)),
}


def test_scenarios_cover_every_transition():
    assert set(SCENARIOS) == set(TRANSITIONS)


@pytest.mark.parametrize("key", list(TRANSITIONS), ids=lambda k: f"{k[0].value}:{k[1]}")
def test_transition(key):
    seen = []

    def hook(event, fields):
        if event == "state_change":
            seen.append((fields["old"], fields["cause"], fields["new"]))

    SCENARIOS[key]({"event_hook": hook})
    state, cause = key
    assert seen[-1] == (state.value, cause, TRANSITIONS[key].value)


# --- RST received in every state ---------------------------------------------------------------

# Each state with the offset the remote's RST must carry to match RCV.NXT exactly.
SYNCHRONIZED = {
    S.SYN_RECEIVED: (h.syn_received, 1),
    S.ESTABLISHED: (h.established, 1),
    S.FIN_WAIT_1: (h.fin_wait_1, 1),
    S.FIN_WAIT_2: (h.fin_wait_2, 1),
    S.CLOSE_WAIT: (h.close_wait, 2),
    S.CLOSING: (h.closing, 2),
    S.LAST_ACK: (h.last_ack, 2),
    S.TIME_WAIT: (h.time_wait, 2),
}
# RFC 9293 3.10.7.4 second check: in CLOSING, LAST-ACK and TIME-WAIT a RST just closes (both
# FINs were exchanged), elsewhere the user is told the connection was reset.
EXPECTED_REASON = {S.CLOSING: ["closed"], S.LAST_ACK: ["closed"], S.TIME_WAIT: []}


@pytest.mark.parametrize("state", list(SYNCHRONIZED), ids=lambda s: s.value)
def test_exact_rst_closes(state):
    make, nxt = SYNCHRONIZED[state]
    conn = make()
    assert conn.state is state
    already = [e.reason for e in closed_events(conn)]
    send(conn, T0 + 0.5, RST, rseq(nxt))
    assert conn.state is S.CLOSED
    assert [e.reason for e in closed_events(conn)] == EXPECTED_REASON.get(state, ["reset"])
    assert len(already + EXPECTED_REASON.get(state, ["reset"])) == 1  # reported exactly once
    recv_nothing(conn, T0 + 0.5)
    assert conn.get_timer() is None


@pytest.mark.parametrize("state", list(SYNCHRONIZED), ids=lambda s: s.value)
def test_in_window_rst_gets_challenge_ack(state):
    # RFC 5961 3.2: in the window but not exactly RCV.NXT -> challenge ACK, state unchanged.
    make, nxt = SYNCHRONIZED[state]
    conn = make()
    drain(conn)
    send(conn, T0 + 0.5, RST | ACK, rseq(nxt + 100), lseq(1))
    assert conn.state is state
    segs = recv(conn, T0 + 0.5)
    assert segs and segs[-1].flags == ACK and segs[-1].ack == rseq(nxt)
    assert drain(conn) == []


@pytest.mark.parametrize("state", list(SYNCHRONIZED), ids=lambda s: s.value)
def test_out_of_window_rst_is_ignored(state):
    make, nxt = SYNCHRONIZED[state]
    conn = make()
    drain(conn)
    send(conn, T0 + 0.5, RST, rseq(nxt + 1_000_000))
    send(conn, T0 + 0.5, RST, rseq(nxt - 1))
    assert conn.state is state
    recv_nothing(conn, T0 + 0.5)


def test_rst_in_syn_sent_needs_an_acceptable_ack():
    conn = h.syn_sent()
    send(conn, T0, RST | ACK, 0, lseq(2))
    assert conn.state is S.SYN_SENT
    send(conn, T0, RST | ACK, 0, lseq(1))
    assert conn.state is S.CLOSED
    assert [e.reason for e in closed_events(conn)] == ["reset"]


# --- RST sent ----------------------------------------------------------------------------------

# (state maker, SND.NXT offset at the time of abort)
ABORTABLE = {
    S.SYN_RECEIVED: (h.syn_received, 1),
    S.ESTABLISHED: (h.established, 1),
    S.FIN_WAIT_1: (h.fin_wait_1, 2),
    S.FIN_WAIT_2: (h.fin_wait_2, 2),
    S.CLOSE_WAIT: (h.close_wait, 1),
    S.CLOSING: (h.closing, 2),
    S.LAST_ACK: (h.last_ack, 2),
}


@pytest.mark.parametrize("state", list(ABORTABLE), ids=lambda s: s.value)
def test_abort_sends_rst_at_snd_nxt(state):
    # RFC 9293 3.10.5: ABORT in a synchronized state sends <SEQ=SND.NXT><CTL=RST>.
    make, nxt = ABORTABLE[state]
    conn = make()
    drain(conn)
    conn.abort()
    assert conn.state is S.CLOSED
    assert recv(conn, T0) == [out(RST, lseq(nxt), 0, window=0)]
    assert [e.reason for e in closed_events(conn)] == ["aborted"]
    recv_nothing(conn, T0)


def test_closed_connection_answers_with_rst():
    # RFC 9293 3.10.7.1: in CLOSED, a segment without RST earns <SEQ=SEG.ACK><CTL=RST>, or
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> when it has no ACK.
    conn = h.time_wait()
    conn.handle_timer(conn.get_timer())
    assert conn.state is S.CLOSED
    send(conn, T0 + 5, FIN | ACK, rseq(1), lseq(2))  # the peer retransmits its FIN
    assert recv(conn, T0 + 5) == [out(RST, lseq(2), 0, window=0)]
    send(conn, T0 + 5, 0, rseq(1), payload=b"xyz")
    assert recv(conn, T0 + 5) == [out(RST | ACK, 0, rseq(4), window=0)]
    send(conn, T0 + 5, RST, rseq(1))  # never a RST for a RST
    recv_nothing(conn, T0 + 5)
    send(conn, T0 + 5, ACK, rseq(1), lseq(2), src=0x4242)  # nor for strangers
    recv_nothing(conn, T0 + 5)


def test_last_ack_peer_gone_after_time_wait():
    # A lost final ACK, and the peer's TIME-WAIT ended before our FIN retransmission: its RST
    # ends our LAST-ACK as an orderly close, long before the user timeout.
    a, b = h.pair(time_wait_s=0.5)
    a.connect(T0)
    t = h.run_pair(a, b, T0, until=lambda: b.state is S.ESTABLISHED)
    a.close()
    t = h.run_pair(a, b, t, until=lambda: b.state is S.CLOSE_WAIT)
    b.close()

    def drop(name, seg):  # every ACK a sends in TIME-WAIT is lost
        return name == "a" and a.state is S.TIME_WAIT

    t_end = h.run_pair(a, b, t, drop=drop, until=lambda: b.is_closed)
    assert t_end - t < 5.0
    assert [e.reason for e in closed_events(b)] == ["closed"]
    assert [e.reason for e in closed_events(a)] == ["closed"]


def test_abort_with_data_lost_in_flight_resets_the_peer():
    # The abort's RST carries SND.NXT, beyond the peer's RCV.NXT when data was lost: the peer
    # answers with a challenge ACK (RFC 5961), and our RST for that closes it.
    a, b = h.pair()
    a.connect(T0)
    t = h.run_pair(a, b, T0, until=lambda: b.state is S.ESTABLISHED)
    a.send(b"x" * 3000)
    lost = []

    def drop_first_data(name, seg):
        if name == "a" and seg.payload and not lost:
            lost.append(seg)
            return True
        return False

    h.exchange(a, b, t, drop_first_data)
    a.abort()
    t = h.run_pair(a, b, t + 0.001, until=lambda: b.is_closed, limit_s=5.0)
    assert [e.reason for e in closed_events(b)] == ["reset"]


def test_any_state_events_exist():
    assert set(_ANY_STATE_EVENTS) == {"recv RST", "abort", "user timeout"}


def test_segments_after_abort_get_rst_not_silence():
    conn = h.established()
    conn.abort()
    recv(conn, T0)
    send(conn, T0 + 0.1, ACK, rseq(1), lseq(1), payload=b"late data")
    assert recv(conn, T0 + 0.1) == [out(RST, lseq(1), 0, window=0)]
    assert conn.readable == 0
    assert drain(conn) == [events.ConnectionClosed("aborted", "connection aborted locally")]
