"""The transfer matrix: stream sizes around the MSS and up to ~2 MB, through clean and impaired
links (loss, reordering, duplication, corruption, jitter, a rate-limited queue, bursty
Gilbert-Elliott loss, everything at once), with SACK on and off. Every run must deliver exactly
the bytes sent, in order, once, both ways, and end in an orderly close on both sides."""

from __future__ import annotations

import random
import zlib

import pytest

from rtcp.core.config import DEFAULT_MSS_BYTES
from rtcp.core.congestion import CONTROLLERS
from rtcp.proxy.impair import ImpairConfig
from tests.sim.network import SimNetwork

from .checks import HAS_PMTUD, assert_intact, config

MSS = DEFAULT_MSS_BYTES
BIG = 2_000_000
REPLY = b"the receiver's reply: a few bytes the other way"

LINKS = {
    "clean": ImpairConfig(),
    "loss1": ImpairConfig(loss=0.01, delay_s=0.005),
    "loss10": ImpairConfig(loss=0.10, delay_s=0.005),
    "reorder": ImpairConfig(reorder=0.2, delay_s=0.01),
    "reorder-late": ImpairConfig(reorder=0.1, reorder_delay_s=0.02, delay_s=0.005),
    "duplicate": ImpairConfig(duplicate=0.2, delay_s=0.005),
    "corrupt": ImpairConfig(corrupt=0.05, delay_s=0.005),
    "jitter": ImpairConfig(delay_s=0.01, jitter_s=0.008),
    "rate": ImpairConfig(delay_s=0.005, rate_bytes_per_s=5e6, queue_limit_packets=30),
    "gemodel": ImpairConfig(gemodel=(0.01, 0.4, 0.6, 0.001), delay_s=0.005),
    "mixed": ImpairConfig(
        loss=0.03, reorder=0.05, duplicate=0.03, corrupt=0.02, delay_s=0.01, jitter_s=0.003,
        rate_bytes_per_s=10e6, queue_limit_packets=100,
    ),
}
SIZES = {"0": 0, "1": 1, "mss-1": MSS - 1, "mss": MSS, "mss+1": MSS + 1, "2MB": BIG}


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _run(link: str, impair: ImpairConfig, size: int, sack: bool, *, user_timeout_s=30.0,
         pmtud=False, cc="reno") -> SimNetwork:
    seed = zlib.crc32(f"{link}/{size}/{sack}/{pmtud}/{cc}".encode())
    data = _data(size, seed)
    cfg = {"sack": sack, "user_timeout_s": user_timeout_s, "pmtud": pmtud,
           "congestion_control": cc}
    net = SimNetwork(seed=seed, up=impair, down=impair, client_config=config(**cfg),
                     server_config=config(**cfg))
    net.start(data, REPLY)
    net.run(max_time_s=max(600.0, user_timeout_s * 2))  # a hang raises TimeoutError
    assert_intact(net, data, REPLY)
    return net


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "nosack"])
@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("link", list(LINKS))
def test_matrix(link, size, sack):
    net = _run(link, LINKS[link], size, sack)
    client = net.client.conn
    assert client.sack_ok is sack
    if size == BIG:
        assert client.stats.data_bytes_sent == size  # first transmissions: each byte once
        if link == "clean":
            assert client.stats.retransmissions == 0
            assert net.server.conn.stats.duplicate_segments == 0
        if link in ("loss10", "mixed", "gemodel"):
            assert client.stats.retransmissions > 0
        if link == "corrupt":
            assert net.server.conn.stats.checksum_failures > 0
        if link == "duplicate":
            assert net.server.conn.stats.duplicate_segments > 0


LOSS30 = ImpairConfig(loss=0.30, delay_s=0.005)
SIZES_30 = {**{k: v for k, v in SIZES.items() if v < BIG}, "100KB": 100_000}


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "nosack"])
@pytest.mark.parametrize("size", list(SIZES_30.values()), ids=list(SIZES_30))
def test_matrix_30_percent_loss(size, sack):
    # 30% each way: about half of all round trips fail; the user timeout is raised so that
    # long backoffs are survived, and the stream must still arrive intact.
    _run("loss30", LOSS30, size, sack, user_timeout_s=600.0)


@pytest.mark.skipif(not HAS_PMTUD, reason="no path-MTU discovery in this build")
@pytest.mark.parametrize(
    "link", ["clean", "loss10", "mixed", "mtu1400", "mtu1400-lossy", "mtu1280"]
)
def test_matrix_with_path_mtu_discovery(link):
    links = {
        **LINKS,
        "mtu1400": ImpairConfig(mtu_bytes=1400, delay_s=0.005),
        "mtu1400-lossy": ImpairConfig(mtu_bytes=1400, loss=0.02, delay_s=0.005),
        # below the base size (a 1280-byte IPv6 tunnel): black-hole detection falls to 1200
        "mtu1280": ImpairConfig(mtu_bytes=1232, delay_s=0.005),
    }
    net = _run(link, links[link], BIG, True, pmtud=True)
    if link == "mtu1280":
        assert net.client.conn.stats.datagram_bytes <= 1232
        assert net.client.conn.stats.pmtu_black_holes >= 1


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "nosack"])
@pytest.mark.parametrize("link", ["loss10", "reorder", "rate", "gemodel", "mixed"])
@pytest.mark.parametrize("cc", sorted(CONTROLLERS))
def test_matrix_congestion_controllers(cc, link, sack):
    # every registered controller carries the 2 MB stream intact over the harder links
    net = _run(link, LINKS[link], BIG, sack, cc=cc)
    assert type(net.client.conn.cc) is CONTROLLERS[cc]
