"""Properties over random impairment schedules, seeds, sizes and options (hypothesis):

- whatever the link does, the stream arrives intact, or the connection fails with one of the
  documented ConnectionClosed reasons; never a wrong, missing-then-present or doubled byte, and
  never a hang (SimNetwork.run raises TimeoutError, which fails the test);
- on moderately impaired links with a generous user timeout it always arrives intact.

RTCP_SIM_EXAMPLES_SCALE=N multiplies the number of examples (a soak run; 1 by default).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtcp.proxy.impair import ImpairConfig
from tests.sim.network import SimNetwork

from .checks import HAS_PMTUD, assert_intact, assert_prefix_or_intact, config

SCALE = max(1, int(os.environ.get("RTCP_SIM_EXAMPLES_SCALE", "1")))
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "derandomize": False}


@st.composite
def impairments(draw, max_loss=0.3, max_dup=0.2, max_corrupt=0.1):
    delay = draw(st.sampled_from([0.0, 0.001, 0.005, 0.02]))
    reorder = draw(st.sampled_from([0.0, 0.0, 0.05, 0.2]))
    reorder_delay = 0.0
    if reorder and not delay:
        reorder_delay = draw(st.sampled_from([0.005, 0.03]))
    rate = draw(st.sampled_from([0.0, 0.0, 2e6, 20e6]))
    use_ge = draw(st.booleans()) and max_loss >= 0.1
    return ImpairConfig(
        loss=0.0 if use_ge else draw(st.floats(0.0, max_loss)),
        gemodel=(draw(st.floats(0.0, 0.05)), draw(st.floats(0.3, 1.0)), 0.5, 0.0)
        if use_ge else None,
        duplicate=draw(st.floats(0.0, max_dup)),
        corrupt=draw(st.floats(0.0, max_corrupt)),
        reorder=reorder,
        reorder_delay_s=reorder_delay,
        delay_s=delay,
        jitter_s=draw(st.sampled_from([0.0, 0.0, 0.002, 0.01])) if delay else 0.0,
        rate_bytes_per_s=rate,
        queue_limit_packets=draw(st.sampled_from([20, 200])) if rate else 1000,
    )


@st.composite
def options(draw):
    opts = {
        "sack": draw(st.booleans()),
        "timestamps": draw(st.booleans()),
        "window_scaling": draw(st.booleans()),
        "initial_seq": draw(st.none() | st.integers(0, 2**32 - 1)),
    }
    if HAS_PMTUD:
        opts["pmtud"] = draw(st.booleans())
    return opts


def _run(up, down, seed, size, reply_size, opts, user_timeout_s):
    rng = random.Random(seed)
    data, reply = rng.randbytes(size), rng.randbytes(reply_size)
    net = SimNetwork(
        seed=seed, up=up, down=down,
        client_config=config(user_timeout_s=user_timeout_s, **opts),
        server_config=config(user_timeout_s=user_timeout_s, **opts),
    )
    net.start(data, reply)
    net.run(max_time_s=max(600.0, 4 * user_timeout_s))  # a hang raises TimeoutError
    return net, data, reply


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(
    up=impairments(), down=impairments(), seed=st.integers(0, 2**32),
    size=st.integers(0, 120_000), reply_size=st.integers(0, 3000), opts=options(),
)
def test_intact_or_documented_failure(up, down, seed, size, reply_size, opts):
    net, data, reply = _run(up, down, seed, size, reply_size, opts, user_timeout_s=20.0)
    assert_prefix_or_intact(net, data, reply)


@settings(max_examples=40 * SCALE, **SETTINGS)
@given(
    up=impairments(max_loss=0.1, max_dup=0.1, max_corrupt=0.05),
    down=impairments(max_loss=0.1, max_dup=0.1, max_corrupt=0.05),
    seed=st.integers(0, 2**32), size=st.integers(0, 150_000),
    reply_size=st.integers(0, 3000), opts=options(),
)
def test_moderate_links_always_deliver(up, down, seed, size, reply_size, opts):
    net, data, reply = _run(up, down, seed, size, reply_size, opts, user_timeout_s=300.0)
    assert_intact(net, data, reply)


@settings(max_examples=25 * SCALE, **SETTINGS)
@given(
    seed=st.integers(0, 2**32), size=st.integers(1, 40_000),
    loss=st.floats(0.0, 0.2), opts=options(),
    buf=st.integers(1, 20_000), chunk=st.sampled_from([-1, 1, 100, 5000]),
)
def test_small_buffers_and_slow_readers(seed, size, loss, opts, buf, chunk):
    # tiny receive windows, zero windows and probes, under loss: still intact
    size = min(size, 100 * buf + 2000)  # a 1-byte window moves one byte per round trip
    if chunk > 0:
        size = min(size, 2000 * chunk)  # at most 2,000 reads of the paced reader below
    rng = random.Random(seed)
    data, reply = rng.randbytes(size), rng.randbytes(rng.randrange(0, 500))
    impair = ImpairConfig(loss=loss, delay_s=0.003)
    net = SimNetwork(
        seed=seed, up=impair, down=impair,
        client_config=config(user_timeout_s=300.0, **opts),
        server_config=config(user_timeout_s=300.0, receive_buffer_bytes=buf, **opts),
    )
    net.server.read_chunk = chunk
    if chunk > 0:
        net.server.read_every_s = 0.001  # a slow consumer on its own clock (network.py)
    net.start(data, reply)
    net.run(max_time_s=3000)
    assert_intact(net, data, reply)
