"""A process with a Driver keeps freed buffers for reuse (rtcp/net/heap.py): allocating and
freeing the 256 KiB chunks and 64 KB datagrams of a transfer again costs no page faults.
Counted in a fresh interpreter each (minor page faults from getrusage: a count, not a time)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PAGES_PER_ROUND = 16 * 262144 // 4096  # 16 buffers of 256 KiB: one 4 MiB send buffer
_SCRIPT = """
import resource, sys
if sys.argv[1] == "driver":
    from rtcp.net.driver import Driver
    driver = Driver(("127.0.0.1", 0))  # alive, as in rtcp send/recv
def faults(rounds):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buffers = [bytearray(262144) for _ in range(16)]
        del buffers
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(2)
print(faults(50) / 50)
"""


def _faults_per_round(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, env=env,
        timeout=60, check=True,
    ).stdout
    return float(out.split()[-1])


@pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)
def test_a_driver_process_reuses_freed_buffers_without_page_faults():
    baseline = _faults_per_round("bare")
    if baseline < _PAGES_PER_ROUND / 2:
        pytest.skip(f"this malloc keeps freed memory anyway ({baseline:.0f} faults per round)")
    assert _faults_per_round("driver") < _PAGES_PER_ROUND / 20
