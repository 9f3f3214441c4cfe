"""LISTEN (RFC 9293 3.10.7.2): only a SYN opens; an ACK earns a RST; everything else is dropped.
Also the passive side of option negotiation (the SYN-ACK answers only what the SYN offered)."""

from __future__ import annotations

from rtcp.core import events, wire
from rtcp.core.connection import TS_TICKS_PER_S

from .conn_helpers import (
    ACK,
    FIN,
    LOCAL,
    LOCAL_ISS,
    MSS,
    REMOTE,
    RST,
    SYN,
    T0,
    State,
    drain,
    listen,
    lseq,
    out,
    recv,
    recv_nothing,
    recv_one,
    rseq,
    send,
)


def test_starts_in_listen_with_no_timer():
    conn = listen()
    assert conn.state is State.LISTEN
    assert conn.get_timer() is None
    recv_nothing(conn, T0)
    assert conn.local_id == LOCAL and conn.peer_id == 0


def test_syn_opens_and_syn_ack_answers():
    conn = listen()
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS)
    assert conn.state is State.SYN_RECEIVED
    assert conn.peer_id == REMOTE
    assert recv(conn, T0) == [out(SYN | ACK, lseq(0), rseq(1), mss=MSS)]
    assert conn.get_timer() == T0 + 1.0  # initial RTO guards the SYN-ACK (RFC 6298 2.1)
    assert drain(conn) == []  # HandshakeComplete only once the SYN-ACK is acknowledged


def test_syn_ack_window_is_unscaled_and_capped():
    # RFC 7323 2.2: the window of a SYN or SYN-ACK is never scaled.
    conn = listen(receive_buffer_bytes=1 << 20, window_scaling=True)
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS, wscale=2)
    assert recv_one(conn, T0) == out(SYN | ACK, lseq(0), rseq(1), window=0xFFFF, mss=MSS,
                                     wscale=5)


def test_ack_earns_reset():
    # RFC 9293 3.10.7.2: "If the ACK bit is on ... <SEQ=SEG.ACK><CTL=RST>".
    conn = listen()
    send(conn, T0, ACK, rseq(7), 123456)
    assert recv(conn, T0) == [out(RST, 123456, 0, window=0)]
    assert conn.state is State.LISTEN
    assert conn.peer_id == 0


def test_syn_ack_earns_reset():
    conn = listen()
    send(conn, T0, SYN | ACK, rseq(0), 777)
    assert recv(conn, T0) == [out(RST, 777, 0, window=0)]
    assert conn.state is State.LISTEN


def test_rst_is_ignored():
    conn = listen()
    send(conn, T0, RST, rseq(0))
    send(conn, T0, RST | ACK, rseq(0), 5)
    recv_nothing(conn, T0)
    assert conn.state is State.LISTEN


def test_other_segments_are_dropped():
    conn = listen()
    send(conn, T0, FIN, rseq(1))
    send(conn, T0, 0, rseq(1), payload=b"data without ACK")
    recv_nothing(conn, T0)
    assert conn.state is State.LISTEN
    assert drain(conn) == []


def test_syn_data_is_not_acknowledged():
    # RFC 9293 allows queueing data in a SYN; rtcp drops it, so it must not acknowledge it.
    conn = listen()
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS, payload=b"early")
    assert recv_one(conn, T0) == out(SYN | ACK, lseq(0), rseq(1), mss=MSS)
    assert conn.readable == 0


def test_segment_for_another_connection_is_foreign():
    conn = listen()
    send(conn, T0, SYN, rseq(0), dst=0x12345)  # a SYN must carry dst_id 0 (or ours)
    send(conn, T0, ACK, rseq(0), 5, dst=0x12345)
    recv_nothing(conn, T0)
    assert conn.state is State.LISTEN
    assert conn.stats.foreign_datagrams == 2


def test_corrupt_and_malformed_syn_are_counted_and_dropped():
    conn = listen()
    good = wire.encode(wire.Segment(SYN, REMOTE, 0, rseq(0), 0, 1000, mss=MSS))
    bad = bytearray(good)
    bad[13] ^= 0x40
    conn.receive_datagram(bytes(bad), T0)
    conn.receive_datagram(good[:20], T0)
    conn.receive_datagram(b"", T0)
    recv_nothing(conn, T0)
    assert conn.state is State.LISTEN
    assert conn.stats.checksum_failures == 1
    assert conn.stats.malformed_datagrams == 2
    conn.receive_datagram(good, T0)
    assert conn.state is State.SYN_RECEIVED


def test_close_goes_to_closed():
    conn = listen()
    conn.close()
    assert conn.state is State.CLOSED
    assert drain(conn) == [events.ConnectionClosed("closed")]
    recv_nothing(conn, T0)
    assert conn.get_timer() is None


def test_abort_sends_nothing():
    # RFC 9293 3.10.5: ABORT in LISTEN just deletes the TCB.
    conn = listen()
    conn.abort()
    assert conn.state is State.CLOSED
    recv_nothing(conn, T0)
    assert [e.reason for e in drain(conn)] == ["aborted"]


# --- negotiation, passive side --------------------------------------------------------------


def test_syn_ack_offers_only_what_the_syn_offered():
    everything = {"sack": True, "timestamps": True, "window_scaling": True,
                      "receive_buffer_bytes": 1 << 20}
    conn = listen(**everything)
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS)  # a SYN with no options but MSS
    assert recv_one(conn, T0) == out(SYN | ACK, lseq(0), rseq(1), window=0xFFFF, mss=MSS)
    assert not (conn.sack_ok or conn.ts_ok or conn.ws_ok)

    conn = listen(**everything)
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS, wscale=7, sack_permitted=True,
         ts_val=42, ts_ecr=0)
    ts_now = int(T0 * TS_TICKS_PER_S) & 0xFFFFFFFF
    assert recv_one(conn, T0) == out(
        SYN | ACK, lseq(0), rseq(1), window=0xFFFF, mss=MSS, wscale=5, sack_permitted=True,
        ts_val=ts_now, ts_ecr=42,
    )
    assert conn.sack_ok and conn.ts_ok and conn.ws_ok


def test_offers_are_declined_when_disabled_locally():
    conn = listen()  # sack, timestamps and window scaling off
    send(conn, T0, SYN, rseq(0), dst=0, mss=MSS, wscale=7, sack_permitted=True,
         ts_val=42, ts_ecr=0)
    assert recv_one(conn, T0) == out(SYN | ACK, lseq(0), rseq(1), mss=MSS)
    assert not (conn.sack_ok or conn.ts_ok or conn.ws_ok)
    # our windows are unscaled, and the peer's are too, since it did not get our shift
    send(conn, T0, ACK, rseq(1), lseq(1), window=1000)
    assert conn.state is State.ESTABLISHED
    assert conn.refresh_stats().peer_window_bytes == 1000


def test_mss_is_the_minimum_of_both():
    conn = listen()
    send(conn, T0, SYN, rseq(0), dst=0, mss=300)
    recv_one(conn, T0)
    assert conn.mss == 300
    conn = listen()
    send(conn, T0, SYN, rseq(0), dst=0, mss=9000)
    recv_one(conn, T0)
    assert conn.mss == MSS


def test_iss_is_random_without_a_fixed_one():
    isns = set()
    for _ in range(8):
        conn = listen(initial_seq=None, local_id=None)
        send(conn, T0, SYN, rseq(0), dst=0, mss=MSS)
        syn_ack = recv_one(conn, T0)
        isns.add(syn_ack.seq)
        assert syn_ack.src_id != 0 and syn_ack.src_id == conn.local_id
    assert len(isns) > 1
    assert LOCAL_ISS not in isns or len(isns) > 2
