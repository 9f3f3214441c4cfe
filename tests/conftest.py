"""Suite-wide: RTCP_TEST_CLOCK_READS_S=N runs every test, and every process a test starts, as on
a machine whose monotonic clock read N s when the run began (tests/clock_offset/sitecustomize.py;
`make test-clocks` runs the suite at 300 s and at 40,000 s)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_CLOCK_OFFSET_DIR = Path(__file__).resolve().parent / "clock_offset"

if os.environ.get("RTCP_TEST_CLOCK_READS_S") and not os.environ.get("RTCP_TEST_CLOCK_OFFSET_S"):
    reads_s = float(os.environ["RTCP_TEST_CLOCK_READS_S"])
    os.environ["RTCP_TEST_CLOCK_OFFSET_S"] = repr(reads_s - time.monotonic())
if os.environ.get("RTCP_TEST_CLOCK_OFFSET_S"):
    from tests.clock_offset.sitecustomize import apply

    apply()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_CLOCK_OFFSET_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
