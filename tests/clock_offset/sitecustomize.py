"""Test aid: run the suite as on a machine whose monotonic clock reads what a test run chooses.

`RTCP_TEST_CLOCK_READS_S=300 make test`: tests/conftest.py turns it into one offset (300 s
minus the clock's reading at the start), exported as RTCP_TEST_CLOCK_OFFSET_S, puts this folder
first on the PYTHONPATH of every process the tests start and offsets the test process itself.
Every Python process of the run then shares one clock that read 300 s when the run began
(time.monotonic and time.monotonic_ns; the kernel's timeouts are relative). Float seconds lose
precision as the clock grows (at 300 s, `now + 0.001 - now` is 0.000999999999976): code and
tests that depend on the clock's absolute value fail here instead of on a freshly booted, or
long running, machine.
"""

from __future__ import annotations

import os
import time

OFFSET_ENV = "RTCP_TEST_CLOCK_OFFSET_S"


def apply() -> float:
    """Offset this process' monotonic clock by $RTCP_TEST_CLOCK_OFFSET_S; the offset (0: none)."""
    text = os.environ.get(OFFSET_ENV, "")
    if not text or getattr(time.monotonic, "rtcp_offset_s", None) is not None:
        return float(text or 0)
    offset_s = float(text)
    offset_ns = round(offset_s * 1e9)
    real, real_ns = time.monotonic, time.monotonic_ns

    def monotonic() -> float:
        return real() + offset_s

    def monotonic_ns() -> int:
        return real_ns() + offset_ns

    monotonic.rtcp_offset_s = offset_s  # type: ignore[attr-defined]
    time.monotonic = monotonic
    time.monotonic_ns = monotonic_ns
    return offset_s


apply()
