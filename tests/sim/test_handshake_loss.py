"""The QUIC interop runner's handshake-loss case for rtcp (issue 13): fifty handshakes, each
followed by a 1 KiB transfer, through 30% loss each way and 15 ms of delay, with the default
settings of `rtcp send` and `rtcp recv`; all fifty must succeed, every time. Simulated (the
applications' timing rules in tests/sim/transfer_model.py), over many seeded batches: one in
fifty failed before the retransmission schedule was looked at as a whole (README, "Handshake
and close through heavy loss")."""

from __future__ import annotations

import pytest

from tests.sim.transfer_model import run_transfer

HANDSHAKES = 50
BATCHES = 20


@pytest.mark.parametrize("batch", range(BATCHES))
def test_fifty_handshakes_through_30_percent_loss_all_succeed(batch):
    failed = []
    for i in range(HANDSHAKES):
        seed = batch * HANDSHAKES + i
        net = run_transfer(seed, loss=0.3, delay_s=0.015, file_bytes=1024)
        if net.client.outcome != "ok":
            failed.append((seed, net.client.outcome))
        else:
            assert bytes(net.server.received) == net.client.stream
    assert failed == []
