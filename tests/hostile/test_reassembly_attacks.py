"""Out-of-order floods against a real receiver: tiny segments each opening a new range (CPU),
and many clients holding their whole window out of order (memory)."""

from __future__ import annotations

import json

import psutil

from tests.e2e.conftest import make_file, send, wait_for
from tests.hostile.attacker import Attacker, hold_windows_out_of_order

FLOOD_SEGMENTS = 48_500
# Receiver CPU seconds the flood may cost. It cost 60 s before the fix (sorting every held
# range per segment); at constant work per segment it is about one second even on a loaded
# machine: the bound is generous and still fails the old code by far.
FLOOD_CPU_BOUND_S = 10.0


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def test_one_byte_out_of_order_flood(receiver, spawn, tmp_path):
    proc, port, out = receiver()
    src = make_file(tmp_path / "beside.bin", 20_000_000)
    attacker = Attacker(port)
    try:
        before = _cpu(proc.pid)
        beside = spawn(["send", str(src), "--to", f"127.0.0.1:{port}", "--json"])
        for first in range(0, FLOOD_SEGMENTS, 500):
            # offsets 3, 5, 7, ...: every segment a new one-byte island after a hole
            attacker.send_raw(
                attacker.segment(3 + 2 * i, b"x") for i in range(first, first + 500)
            )
            attacker.drain()
        assert beside.wait(120) == 0, beside.stderr
        assert json.loads(beside.stdout)["verified"] is True
        attacker.reset()
        wait_for(lambda: any("failed" in line for line in proc.lines), 30, "the attacker dropped")
        assert _cpu(proc.pid) - before < FLOOD_CPU_BOUND_S
    finally:
        attacker.close()
    assert (out / "beside.bin").read_bytes() == src.read_bytes()
    # and the receiver still serves a new client
    small = make_file(tmp_path / "after.bin", 100_000, seed=2)
    assert send(small, port).returncode == 0


MIB = 1024 * 1024
HOLDERS = 16


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def test_clients_holding_their_windows_stay_inside_max_memory(receiver, tmp_path):
    """16 clients each hold all the window they are offered out of order (the first byte never
    comes): with --max-memory 16MiB they hold 16 MiB together, not 16 x 4 MiB, and the
    receiver's memory comes back when they reset."""
    proc, port, _out = receiver("--max-memory", "16MiB")
    baseline = _rss(proc.pid)
    attackers = []
    try:
        attackers = [Attacker(port) for _ in range(HOLDERS)]
        held = hold_windows_out_of_order(attackers, deadline_s=60)
        assert sum(held) <= 16 * MIB
        assert min(held) > 0
        peak = _rss(proc.pid)
        assert peak - baseline < 48 * MIB  # 16 MiB held, plus the allocator's slack
        for a in attackers:
            a.reset()
        wait_for(
            lambda: sum("failed" in line for line in proc.lines) == HOLDERS, 30, "the resets"
        )
        wait_for(lambda: _rss(proc.pid) - baseline < 12 * MIB, 30, "memory returned")
    finally:
        for a in attackers:
            a.close()
