"""The C heap of a process that moves data: freed buffers stay with the process for the next
ones, instead of going back to the kernel after each datagram.

glibc's malloc gives the free top of its heap back to the kernel once it exceeds 128 KiB (its
trim threshold), and serves blocks above its mmap threshold (128 KiB at first) with a fresh
mmap each. A transfer allocates and frees 64 KB datagrams (the core's plaintext, the sealed
copy, the GRO read's copy) and 256 KiB read chunks all the time, so with those defaults the
same memory went back and forth: every page faulted in and zeroed again, some 300 minor faults
per MB in the encrypted sender, about 1 ms of CPU per MB (docs/performance.md). A trim
threshold of 16 MiB and an mmap threshold of 1 MiB keep that memory in the heap; the peak RSS
does not change (what is retained is what the transfer just used), only the faults go.

glibc only (the tunables are mallopt's; musl and macOS manage their heaps otherwise): elsewhere
this does nothing. `GLIBC_TUNABLES=glibc.malloc.trim_threshold=...` in the environment still
wins: a tunable set there is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 16 << 20  # free memory at the heap's top kept for reuse
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks below this come from the heap, not their own mmap

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True if they were set."""
    global _done
    if _done:
        return False
    _done = True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError, AttributeError):
        return False  # not glibc
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user tuned malloc: theirs
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
