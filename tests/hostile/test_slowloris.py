"""Slowloris: connections that drip their header (or their data) hold no slot for long, and
get no thread and no temporary file before their header is complete."""

from __future__ import annotations

import psutil

from rtcp.transfer import protocol as proto
from tests.e2e.conftest import make_file, send, wait_for
from tests.hostile.attacker import Attacker, drip

SLOW = 4


def _temporaries(out):
    return [p for p in out.iterdir() if p.name.startswith(proto.TEMP_PREFIX)] if out.exists() else []


def test_header_dripped_is_cut_off_and_frees_the_slots(receiver, tmp_path):
    proc, port, out = receiver("--max-connections", str(SLOW), "--header-deadline", "2s")
    threads = psutil.Process(proc.pid).num_threads()
    attackers = [Attacker(port) for _ in range(SLOW)]
    seen = {"tmp": 0, "threads": 0}

    def cut_off() -> bool:
        seen["tmp"] = max(seen["tmp"], len(_temporaries(out)))
        seen["threads"] = max(seen["threads"], psutil.Process(proc.pid).num_threads())
        return sum("header deadline" in line for line in proc.lines) == SLOW

    try:
        header = proto.encode_header("slow.bin", 1_000_000)
        drip(attackers, header[:-1], 0.3, cut_off, deadline_s=60)
    finally:
        for a in attackers:
            a.close()
    assert seen == {"tmp": 0, "threads": threads}  # nothing spent before the header
    assert "limit 'header deadline' reached (--header-deadline)" in proc.stderr
    small = make_file(tmp_path / "real.bin", 100_000)
    assert send(small, port).returncode == 0


def test_data_dripped_below_the_minimum_rate_is_cut_off(receiver, tmp_path):
    proc, port, out = receiver("--min-rate", "10kbps")
    attacker = Attacker(port)
    try:
        attacker.handle.conn.send(proto.encode_header("drip.bin", 1_000_000))
        drip([attacker], b"", 0.5, lambda: _temporaries(out), deadline_s=30)  # header sent
        drip(
            [attacker], bytes(1000), 0.5,
            lambda: any("minimum rate" in line for line in proc.lines), deadline_s=60,
        )
    finally:
        attacker.close()
    assert "limit 'minimum rate' reached (--min-rate)" in proc.stderr
    wait_for(lambda: not _temporaries(out), 30, "the temporary removed")
