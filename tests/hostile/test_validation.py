"""rtcp/core/validation.py and the client's side of RETRY, sans-IO."""

from __future__ import annotations

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import Connection
from rtcp.core.validation import (
    AMPLIFICATION_FACTOR,
    CHALLENGE_ATTEMPTS,
    AmplificationLimit,
    PathValidator,
    RetryTokens,
)

A = ("192.0.2.1", 4000)
B = ("192.0.2.1", 4001)


def test_tokens_bind_address_id_and_time():
    tokens = RetryTokens(b"k" * 32)
    t = tokens.issue(A, 7, now=100.0)
    assert tokens.valid(t, A, 7, now=105.0)
    assert tokens.valid(t, A, 7, now=115.0)  # the next slot still accepts it
    assert not tokens.valid(t, A, 7, now=125.0)  # expired
    assert not tokens.valid(t, B, 7, now=100.0)  # another port
    assert not tokens.valid(t, A, 8, now=100.0)  # another connection id
    assert not RetryTokens(b"x" * 32).valid(t, A, 7, now=100.0)  # another listener's key
    assert not tokens.valid(t[:-1], A, 7, now=100.0)


def test_amplification_limit():
    lim = AmplificationLimit()
    lim.on_received(50)
    sent = lim.allow([b"x" * 60, b"x" * 60, b"x" * 60])
    assert sum(map(len, sent)) <= AMPLIFICATION_FACTOR * 50 and lim.withheld == 1
    assert AmplificationLimit(validated=True).allow([b"x" * 999]) == [b"x" * 999]


def _client() -> tuple[Connection, wire.Segment]:
    conn = Connection(ConnectionConfig(), is_client=True, now=0.0)
    conn.connect(0.0)
    (syn,) = [wire.decode(d) for d in conn.datagrams_to_send(0.0)]
    return conn, syn


def test_client_answers_one_retry_with_the_token():
    conn, syn = _client()
    retry = RetryTokens().retry_for(syn, A, 0.0)
    token = wire.decode(retry).option(wire.OPT_RETRY_TOKEN)
    conn.receive_datagram(retry, 0.1)
    (again,) = [wire.decode(d) for d in conn.datagrams_to_send(0.1)]
    assert again.flags == wire.SYN and again.seq == syn.seq
    assert again.option(wire.OPT_RETRY_TOKEN) == token
    # a second RETRY is not followed (QUIC's rule: no loop)
    conn.receive_datagram(RetryTokens().retry_for(syn, A, 0.2), 0.2)
    assert conn.datagrams_to_send(0.2) == []


def test_client_ignores_a_retry_that_does_not_ack_its_syn():
    conn, syn = _client()
    forged = wire.build(
        wire.RETRY, 0, syn.src_id, 0, syn.seq + 2, 0, wire.opt_bytes(wire.OPT_RETRY_TOKEN, b"t")
    )
    conn.receive_datagram(forged, 0.1)
    assert conn.datagrams_to_send(0.1) == []


def test_path_validator_moves_only_on_the_right_answer():
    pv = PathValidator(A)
    pv.on_datagram_from(B, 100, now=1.0)
    challenge = pv.challenge_due(1.0)
    assert challenge is not None and pv.challenge_due(1.0) is None
    assert not pv.on_response(b"wrong!!!", B) and pv.address == A
    assert not pv.on_response(challenge, ("198.51.100.9", 1)) and pv.address == A
    assert pv.on_response(challenge, B) and pv.address == B and pv.migrations == 1


def test_path_validator_gives_up():
    pv = PathValidator(A)
    pv.on_datagram_from(B, 100, now=0.0)
    sent = 0
    t = 0.0
    while pv.challenge_due(t) is not None or pv.candidate is not None:
        sent += 1
        t += 1.0
        if t > 100:
            break
    assert pv.challenges_sent == CHALLENGE_ATTEMPTS and pv.candidate is None
