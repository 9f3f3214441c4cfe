"""Shared assertions for the simulator tests: exactly the bytes sent arrived, once, in order,
and both ends closed in an orderly way."""

from __future__ import annotations

import dataclasses

from rtcp.core import events
from rtcp.core.config import ConnectionConfig
from rtcp.core.connection import State

DOCUMENTED_REASONS = {"closed", "reset", "timeout", "aborted", "protocol"}
HAS_PMTUD = "pmtud" in {f.name for f in dataclasses.fields(ConnectionConfig)}


def config(*, pmtud: bool = False, **kw) -> ConnectionConfig:
    """A ConnectionConfig; path-MTU probing off unless asked (so segments stay MSS-sized)."""
    if HAS_PMTUD:
        kw["pmtud"] = pmtud
    return ConnectionConfig(**kw)


def closed_events(ep) -> list[events.ConnectionClosed]:
    return [e for e in ep.events if isinstance(e, events.ConnectionClosed)]


def _read_rest(net) -> None:
    """The run stops once both ends are done; a slow reader (read_chunk) may not have taken
    everything yet. Bytes delivered to the connection stay readable after the close."""
    for ep in (net.client, net.server):
        if ep.read_enabled:
            ep.received += ep.conn.read()


def assert_intact(net, data: bytes, reply: bytes) -> None:
    """Every byte arrived exactly once, in order, both ways; both ends closed orderly."""
    _read_rest(net)
    server, client = net.server, net.client
    assert len(server.received) == len(data), (len(server.received), len(data))
    assert bytes(server.received) == data
    assert bytes(client.received) == reply
    assert server.conn.stats.data_bytes_received == len(data)  # delivered once, not twice
    assert client.conn.stats.data_bytes_received == len(reply)
    for ep in (client, server):
        assert closed_events(ep) == [events.ConnectionClosed("closed")], (ep.name, ep.closed)
        assert ep.conn.state in (State.CLOSED, State.TIME_WAIT), (ep.name, ep.conn.state)
        assert sum(isinstance(e, events.StreamEnded) for e in ep.events) == 1, ep.name
        assert ep.conn.read() == b""


def assert_prefix_or_intact(net, data: bytes, reply: bytes) -> None:
    """Either everything arrived (orderly close), or the connection failed with a documented
    reason; in both cases no wrong byte was ever delivered and nothing twice."""
    server, client = net.server, net.client
    got, back = bytes(server.received), bytes(client.received)
    assert data.startswith(got), "wrong bytes delivered to the server"
    assert reply.startswith(back), "wrong bytes delivered to the client"
    assert server.conn.stats.data_bytes_received == len(got)
    assert client.conn.stats.data_bytes_received == len(back)
    for ep in (client, server):
        closed = closed_events(ep)
        assert len(closed) <= 1, (ep.name, closed)
        for c in closed:
            assert c.reason in DOCUMENTED_REASONS, c
            assert (c.error is None) == (c.reason == "closed"), c
    failed = [c for ep in (client, server) for c in closed_events(ep) if c.reason != "closed"]
    if not failed:
        assert_intact(net, data, reply)
