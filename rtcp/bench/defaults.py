"""The benchmark's fixed choices, in a module light enough for every `rtcp` start to import.

(`rtcp bench` is registered with the other commands, so whatever its command module imports at
the top is paid by every `rtcp send`; the machinery is imported only when the benchmark runs.)
"""

from __future__ import annotations

from pathlib import Path

# With 5 repeats, a little over two minutes on a 2-core machine: single runs of a row spread by
# about +-10% on a shared machine (the impaired 1400-byte rows more), and a median of 3 moved
# enough between full runs to flip a ratio near its target. Impaired rows send the same size
# as the clean ones, so the ratio of a lossy row to its loss-free twin compares like with like.
DEFAULT_SIZE = "32MB"
DEFAULT_IMPAIRED_SIZE = "32MB"
DEFAULT_REPEATS = 5
DEFAULT_CEILING_SECONDS = "1.5s"
QUICK_SIZE = "1MB"
QUICK_IMPAIRED_SIZE = "256KB"
QUICK_CEILING_SECONDS = "0.3s"
DEFAULT_OUTPUT = Path("bench/results.json")
QUICK_OUTPUT = Path("bench/results-quick.json")

RELAY_DATAGRAM_BYTES = 1400
CONCURRENT_SENDERS = 4
QUICK_ROWS = ("relay-1400", "rtcp-direct", "rtcp-proxy-clean")
