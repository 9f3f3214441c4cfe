"""Every tunable of a connection, in one place, with its unit in its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# A 1400-byte datagram crosses any sane path (Ethernet 1500 minus IP/UDP headers and tunnels).
DEFAULT_MAX_DATAGRAM_BYTES = 1400
# Payload per segment so that header (28) + timestamps option (10) + payload fit the datagram.
DEFAULT_MSS_BYTES = DEFAULT_MAX_DATAGRAM_BYTES - 28 - 10
# The ceiling that path MTU discovery probes up to: the largest UDP payload over IPv4, which
# loopback (MTU 65536) carries.
DEFAULT_MAX_DATAGRAM_BYTES = 65507
DEFAULT_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
DEFAULT_SEND_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass
class ConnectionConfig:
    mss_bytes: int = DEFAULT_MSS_BYTES  # payload per segment until path MTU discovery raises it
    pmtud: bool = True  # probe for larger datagrams (RFC 8899); off = mss_bytes stays
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES  # largest datagram we probe or accept
    receive_buffer_bytes: int = DEFAULT_RECEIVE_BUFFER_BYTES  # bounds the advertised window
    send_buffer_bytes: int = DEFAULT_SEND_BUFFER_BYTES  # bounds unacknowledged + unsent bytes
    initial_rto_s: float = 1.0  # RFC 6298 2.1
    min_rto_s: float = 0.2  # Linux's floor; RFC 6298 says 1 s, too slow for loopback
    max_rto_s: float = 60.0  # RFC 6298 2.5
    # Backoff raises the RTO to at most this (or to the RTO before backoff when that is
    # larger); None = to max_rto_s, as RFC 6298 5.5. A deliberate deviation (README, mechanism
    # map): the connection gives up after user_timeout_s of silence (30 s for `rtcp send`),
    # and a backoff doubling to 60 s would leave 5 tries in that time (4 in 15 s: a path that
    # loses 30% each way then failed one handshake in fifty). After a timeout cwnd is one
    # segment, so a try a second is one datagram a second.
    max_backoff_rto_s: float | None = 1.0
    user_timeout_s: float = 30.0  # abort when the peer is silent this long while we wait on it
    time_wait_s: float = 1.0  # 2*MSL; short because rtcp's ids make old duplicates harmless
    delayed_ack_s: float = 0.04  # RFC 9293 3.8.6.3 allows up to 0.5 s; Linux uses 40 ms
    quickack_segments: int = 16  # the first data segments are ACKed at once (Linux's 16)
    congestion_control: str = "bbr"  # loss-tolerant default; "reno" and "cubic" are the AIMD ones
    # The sender's own rate cap (`rtcp send --rate`): segments are paced at no more than this,
    # whatever the controller (rtcp.core.pacing); None = no cap
    max_pacing_rate_bytes_per_s: int | None = None
    initial_window_segments: int = 10  # RFC 6928
    sack: bool = True  # offer SACK-permitted (RFC 2018)
    timestamps: bool = True  # offer timestamps (RFC 7323)
    window_scaling: bool = True  # offer window scale (RFC 7323)
    nagle: bool = False  # RFC 896; off, like TCP_NODELAY, because the file app writes in bulk
    initial_seq: int | None = None  # fixed ISN for tests (the wrap test); None = random (secrets)
    local_id: int | None = None  # fixed connection id for tests; None = random (secrets)
    random_seed: int | None = None  # seeds the controller's random choices (BBR's first
    # ProbeBW phase) so that a simulation is reproducible from its seed; None = from the OS
    event_hook: Callable[[str, dict], None] | None = None  # tracing; None costs nothing
    # CRC-32 on every datagram; off when a layer below authenticates each datagram (packet
    # protection's AEAD tag replaces it): bulk data then goes out with 0 in the field, and
    # what arrives is not checked again
    checksums: bool = True
