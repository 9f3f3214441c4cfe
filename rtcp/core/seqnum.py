"""32-bit serial-number arithmetic (RFC 1982, RFC 9293 section 3.4) and 64-bit offsets.

The connection keeps absolute 64-bit stream offsets internally (offset 0 is the SYN, so
stream byte i has offset i + 1, as in CS144) and converts to 32-bit wire sequence numbers
only at the wire edge with `wrap` / `unwrap`. Offsets never wrap, so everything inside the
connection can use plain integer comparisons; these helpers exist for the wire edge and for
the rare comparisons of raw wire numbers.

Comparisons of two numbers exactly 2^31 apart are undefined in RFC 1982; here such a pair
counts as "b after a" in both directions (seq_diff returns +2^31), which never arises when
windows are below 2^30 bytes.
"""

from __future__ import annotations

SEQ_BITS = 32
SEQ_MOD = 1 << SEQ_BITS
SEQ_MASK = SEQ_MOD - 1
SEQ_HALF = 1 << (SEQ_BITS - 1)

__all__ = [
    "SEQ_MOD",
    "seq_add",
    "seq_diff",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
    "unwrap",
    "wrap",
]


def seq_add(a: int, n: int) -> int:
    """(a + n) mod 2^32: serial addition (RFC 1982 section 3.1); n may be negative."""
    return (a + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance from a to b (b - a) in (-2^31, 2^31]."""
    d = (b - a) & SEQ_MASK
    return d - SEQ_MOD if d > SEQ_HALF else d


# RFC 1982 section 3.2: a < b iff 0 < (b - a) mod 2^32 <= 2^31 (the == 2^31 case is undefined).
def seq_lt(a: int, b: int) -> bool:
    """a is before b in serial order."""
    return 0 < ((b - a) & SEQ_MASK) <= SEQ_HALF


def seq_le(a: int, b: int) -> bool:
    """a is before b or equal to it."""
    return ((b - a) & SEQ_MASK) <= SEQ_HALF


def seq_gt(a: int, b: int) -> bool:
    """a is after b in serial order."""
    return 0 < ((a - b) & SEQ_MASK) <= SEQ_HALF


def seq_ge(a: int, b: int) -> bool:
    """a is after b or equal to it."""
    return ((a - b) & SEQ_MASK) <= SEQ_HALF


def wrap(offset: int, isn: int) -> int:
    """Absolute 64-bit stream offset -> 32-bit wire sequence number: (isn + offset) mod 2^32."""
    return (isn + offset) & SEQ_MASK


def unwrap(seq: int, isn: int, checkpoint: int) -> int:
    """32-bit wire seq -> the absolute offset (>= 0) congruent to seq - isn that is closest to
    checkpoint (normally the next offset expected), as CS144's Wrap32::unwrap.

    At an exact tie (2^31 away) the larger candidate is chosen; a candidate below zero is
    replaced by the one 2^32 above it, since offsets are never negative.
    """
    d = (seq - isn - checkpoint) & SEQ_MASK
    if d > SEQ_HALF:
        d -= SEQ_MOD
    result = checkpoint + d
    if result < 0:
        result += SEQ_MOD
    return result
