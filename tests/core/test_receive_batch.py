"""Connection.receive_datagrams: a batch gives exactly what receive_datagram one by one gives.

Its fast path takes a run of in-order data segments straight from their raw headers; anything
else goes through the general path. The property test feeds the same mangled stream (drops,
duplicates, reordering, corruption, foreign datagrams) to two identical receivers, one datagram
at a time and in random batches, and asserts that they end in the same state.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.core import wire

from .conn_helpers import T0, drain, pair, run_pair

OPTIONS = {"timestamps": True, "sack": True, "window_scaling": True,
           "receive_buffer_bytes": 60_000}


def established_pair(**kw):
    a, b = pair(**{**OPTIONS, **kw})
    a.connect(T0)
    t = run_pair(a, b, T0, until=lambda: a.state.value == b.state.value == "ESTABLISHED")
    drain(a)
    drain(b)
    return a, b, t


def stream(n_bytes: int, **kw) -> tuple[list[bytes], float]:
    """What a client sends first after the handshake: n_bytes of data in full segments."""
    a, _b, t = established_pair(**kw)
    a.send(bytes(i % 251 for i in range(n_bytes)))
    return a.datagrams_to_send(t), t


def state(conn) -> dict:
    return {
        "stats": dataclasses.asdict(conn.stats),
        "rcv_nxt": conn.rcv_nxt,
        "data": conn.read(),
        "events": drain(conn),
        "sent": conn.datagrams_to_send(T0 + 50),
        "timer": conn.get_timer(),
    }


def mangle(dgrams: list[bytes], ops) -> list[bytes]:
    out = list(dgrams)
    for op, i, j in ops:
        if not out:
            break
        i %= len(out)
        j %= len(out)
        if op == "drop":
            del out[i]
        elif op == "dup":
            out.insert(j, out[i])
        elif op == "swap":
            out[i], out[j] = out[j], out[i]
        elif op == "corrupt" and out[i]:
            d = bytearray(out[i])
            d[j % len(d)] ^= 0x40
            out[i] = bytes(d)
        elif op == "foreign":  # the same segment for another connection id
            d = bytearray(out[i])
            d[8:12] = (0xDEAD).to_bytes(4, "big")
            out.insert(j, bytes(d))
        elif op == "truncate":
            out[i] = out[i][: j % 40]
    return out


def feed_batched(conn, dgrams, cuts, t) -> None:
    pos = 0
    for cut in [*sorted(cuts), len(dgrams)]:
        batch = dgrams[pos:cut]
        pos = max(pos, cut)
        while batch:
            taken = conn.receive_datagrams(batch, t)
            if taken < len(batch):  # addressed elsewhere: a demultiplexer's business
                conn.receive_datagram(batch[taken], t)
                taken += 1
            batch = batch[taken:]


ops = st.lists(
    st.tuples(st.sampled_from(["drop", "dup", "swap", "corrupt", "foreign", "truncate"]),
              st.integers(0, 200), st.integers(0, 200)),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.lists(st.integers(0, 40), max_size=6), st.booleans(), st.booleans())
def test_a_batch_ends_where_one_by_one_ends(mangling, cuts, timestamps, unread):
    kw = {"timestamps": timestamps}
    dgrams, t = stream(30_000, **kw)
    dgrams = mangle(dgrams, mangling)
    _, one, _ = established_pair(**kw)
    _, batched, _ = established_pair(**kw)
    for d in dgrams:
        one.receive_datagram(d, t)
    feed_batched(batched, dgrams, [c for c in cuts if c <= len(dgrams)], t)
    if unread:  # a second flight onto a buffer that still holds the first
        for c in (one, batched):
            c.receive_datagrams(dgrams[:3], t)
    assert state(batched) == state(one)


def test_the_fast_path_takes_a_clean_run_and_lends_the_payloads():
    dgrams, t = stream(20_000)
    assert len(dgrams) > 5
    _, b, _ = established_pair()
    before = b.stats.segments_received
    assert b.receive_datagrams(dgrams, t) == len(dgrams)
    assert b.stats.segments_received - before == len(dgrams)
    chunks = b.read_chunks()
    assert [c.obj for c in chunks] == dgrams  # views of the datagrams themselves: no copy
    payloads = [wire.decode(d).payload for d in dgrams]
    assert b"".join(chunks) == b"".join(payloads)
    segs = [wire.decode(d) for d in b.datagrams_to_send(t)]
    last = wire.decode(dgrams[-1])
    assert segs and segs[-1].ack == (last.seq + len(last.payload)) % 2**32


def test_read_returns_bytes_when_the_payload_was_lent():
    dgrams, t = stream(500)
    _, b, _ = established_pair()
    assert len(dgrams) == 1
    b.receive_datagrams(dgrams, t)
    data = b.read()
    assert type(data) is bytes and data == bytes(i % 251 for i in range(500))


def test_a_mutable_buffer_is_copied_not_lent():
    dgrams, t = stream(3_000)
    _, b, _ = established_pair()
    buffers = [bytearray(d) for d in dgrams]
    b.receive_datagrams([memoryview(x) for x in buffers], t)
    for x in buffers:
        x[-1] ^= 0xFF  # the driver reuses its receive buffer
    assert b.read() == bytes(i % 251 for i in range(3_000))


def test_it_stops_before_a_datagram_for_another_connection():
    dgrams, t = stream(5_000)
    _, b, _ = established_pair()
    other = bytearray(dgrams[2])
    other[8:12] = (0xBEEF).to_bytes(4, "big")
    batch = [*dgrams[:2], bytes(other), *dgrams[2:]]
    assert b.receive_datagrams(batch, t) == 2
    assert b.receive_datagrams(batch[3:], t) == len(dgrams) - 2
    assert len(b.read()) == sum(len(wire.decode(d).payload) for d in dgrams)
