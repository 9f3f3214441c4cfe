"""The receive-memory budget: the windows of all connections add up to at most --max-memory,
whatever each one holds; what ends is shared out again."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtcp.core.config import ConnectionConfig
from rtcp.transfer.limits import MIB, MIN_GRANT_BYTES, ReceiveMemoryBudget


@dataclass
class FakeConn:
    held: int = 0
    ranges: int = 0
    config: ConnectionConfig = field(default_factory=lambda: ConnectionConfig())

    def receive_memory(self):
        return self.held, self.ranges


def limits(conns):
    return [c.config.receive_buffer_bytes for c in conns]


def test_a_lone_connection_keeps_its_buffer():
    budget = ReceiveMemoryBudget(256 * MIB)
    c = FakeConn()
    budget.add(c)
    assert limits([c]) == [4 * MIB]


def test_limits_never_exceed_the_total_and_never_drop_held_data():
    budget = ReceiveMemoryBudget(16 * MIB)
    conns = []
    for _ in range(8):
        c = FakeConn()
        budget.add(c)
        conns.append(c)
        c.held = c.config.receive_buffer_bytes  # each fills its whole window at once
        budget.regrant()
        assert sum(limits(conns)) <= 16 * MIB
        assert all(lim_ >= x.held for lim_, x in zip(limits(conns), conns, strict=True))
    assert sum(c.held for c in conns) <= 16 * MIB
    assert not budget.fits_another() or 16 * MIB - budget.used_bytes >= MIN_GRANT_BYTES


def test_memory_is_returned_when_a_connection_ends():
    budget = ReceiveMemoryBudget(8 * MIB)
    hog, other = FakeConn(), FakeConn()
    budget.add(hog)
    hog.held = 4 * MIB
    budget.add(other)
    other.held = 4 * MIB
    budget.regrant()
    assert not budget.fits_another()  # full: the next connection is refused
    budget.remove(hog)
    assert budget.fits_another()
    other.held = 0
    budget.regrant()
    assert limits([other]) == [4 * MIB]


def test_range_bookkeeping_counts():
    budget = ReceiveMemoryBudget(1 * MIB)
    c = FakeConn(held=2048, ranges=2048)
    budget.add(c)
    assert budget.used_bytes == 2048 + 2048 * ReceiveMemoryBudget.RANGE_OVERHEAD_BYTES
