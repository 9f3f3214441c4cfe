"""Out-of-order receive buffer: segments in any order -> in-order bytes, plus SACK blocks.

Like CS144's Reassembler, with the held (out-of-order) data kept as a few merged ranges:
`_starts` is the sorted list of range starts (bisect: O(log n) to find, a memmove of at most
MAX_HELD_RANGES pointers to insert) and `_ranges` maps a start to its `_Range` (end, list of
byte pieces) in recency order (a dict keeps insertion order; a touched range is moved to its
end), so the most recently touched ranges that SACK reports first (RFC 2018 4) are read off
its end without sorting. A range keeps its bytes as a list of pieces rather than one buffer,
so merging ranges only moves piece references and bytes are copied once on the way in and once
(by `b"".join`) on the way out; no Python loop ever runs per byte, only per piece.

A hostile peer can send many tiny segments out of order, each one a new range: the number of
held ranges is capped (MAX_HELD_RANGES), and a segment that would open one more is dropped
(not acknowledged: the sender sends it again). Linux prunes its out-of-order queue from the
highest sequence instead (tcp_prune_ofo_queue), which reneges on SACKed data; refusing the new
island never takes back what was SACKed. `work_units` counts the ranges each insert visits,
so that tests can bound the work a peer causes per segment it sends.

All offsets are absolute 64-bit stream offsets (see seqnum.py).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import islice

from rtcp.core.wire import MAX_SACK_BLOCKS

__all__ = ["InsertResult", "Reassembler"]

# What one segment carries (TCP fits 4 in its 40 option bytes, RFC 2018 3; rtcp's options
# are not so limited: see wire.MAX_SACK_BLOCKS).
DEFAULT_MAX_SACK_BLOCKS = MAX_SACK_BLOCKS
# Out-of-order ranges one connection may hold. A 4 MiB window of 1400-byte segments is ~3000
# segments, so at most ~1500 islands even if every other segment were lost; beyond this a new
# island is dropped (named limit "held out-of-order ranges", counter ranges_refused).
MAX_HELD_RANGES = 2048


@dataclass(slots=True)
class InsertResult:
    """What one insert did, so the connection can decide how to ACK (RFC 5681 section 4.2)."""

    delivered: bytes  # in-order bytes now contiguous from the old next_offset (b"" if none)
    duplicate: bool  # every byte given was already received or buffered (nothing new)
    out_of_order: bool  # (some) new bytes were buffered beyond a hole
    filled_gap: bool  # this insert delivered bytes that had been buffered out of order


_EMPTY = InsertResult(b"", False, False, False)


class _Range:
    """One held out-of-order range [start, end); start is its key in Reassembler._ranges."""

    __slots__ = ("end", "pieces")

    def __init__(self, end: int, pieces: list) -> None:
        self.end = end
        self.pieces = pieces  # bytes-like pieces, in order, total length end - start


def _drop_front(pieces: list, skip: int) -> list:
    """The pieces with their first `skip` bytes removed (per piece, never per byte)."""
    i = 0
    while skip:
        n = len(pieces[i])
        if skip < n:
            rest = pieces[i + 1 :]
            rest.insert(0, memoryview(pieces[i])[skip:])
            return rest
        skip -= n
        i += 1
    return pieces[i:] if i else pieces


class Reassembler:
    """Accepts stream bytes at absolute offsets, delivers them in order exactly once."""

    __slots__ = (
        "_ranges", "_starts", "buffered_bytes", "max_ranges", "next_offset", "ranges_refused",
        "work_units",
    )

    def __init__(self, next_offset: int = 0, max_ranges: int = MAX_HELD_RANGES) -> None:
        self.next_offset = next_offset  # absolute offset of the next in-order byte expected
        self.buffered_bytes = 0  # bytes held out of order (not yet delivered)
        self.max_ranges = max_ranges
        self.ranges_refused = 0  # segments dropped because they would open one range too many
        self.work_units = 0  # inserts + held ranges visited by them (the cost a peer causes)
        self._starts: list[int] = []  # sorted starts of held ranges (disjoint, non-adjacent)
        self._ranges: dict[int, _Range] = {}  # start -> range, least recently touched first

    @property
    def held_ranges(self) -> int:
        return len(self._starts)

    @property
    def held_extent(self) -> int:
        """Bytes from next_offset to the end of the furthest held range (holes included): the
        memory the held data and the holes before it can take once filled."""
        if not self._starts:
            return 0
        return self._ranges[self._starts[-1]].end - self.next_offset

    def has_gap(self) -> bool:
        """Whether any out-of-order bytes are held (there is a hole before them)."""
        return bool(self._starts)

    def release(self) -> None:
        """Drop every held range (the connection is closed: they can never be delivered)."""
        self._starts.clear()
        self._ranges.clear()
        self.buffered_bytes = 0

    def insert(
        self, offset: int, data: bytes | bytearray | memoryview, window_end: int
    ) -> InsertResult:
        """Add `data` found at absolute `offset`; keep only bytes in [next_offset, window_end).

        Bytes before next_offset were already delivered and bytes at/after window_end lie
        beyond the advertised window (RFC 9293 section 3.10.7.4: trim to the window); both are
        dropped. Overlaps with held data keep the copy already held.
        """
        n = len(data)
        if not n:
            return _EMPTY
        self.work_units += 1
        end = offset + n
        nxt = self.next_offset
        lo = max(nxt, offset)
        hi = min(window_end, end)
        # "Duplicate" needs every byte given to be old: none may have been cut by the window.
        all_in_window = end <= max(nxt, window_end)
        if lo >= hi:
            return InsertResult(b"", all_in_window, False, False)
        if lo == nxt:
            return self._insert_in_order(offset, data, lo, hi, all_in_window)
        return self._insert_out_of_order(offset, data, lo, hi, all_in_window)

    def _insert_in_order(self, offset, data, lo, hi, all_in_window) -> InsertResult:
        """New bytes start at next_offset: deliver them and every held range they reach."""
        starts = self._starts
        if not starts or starts[0] > hi:  # fast path: nothing held that this reaches
            if lo == offset and hi - offset == len(data) and type(data) is bytes:
                delivered = data
            else:
                delivered = bytes(memoryview(data)[lo - offset : hi - offset])
            self.next_offset = hi
            return InsertResult(delivered, False, False, False)

        ranges = self._ranges
        pieces = [memoryview(data)[lo - offset : hi - offset]]
        cur = hi  # end of what is being delivered so far
        new = hi - lo  # bytes not held before (overlaps with held ranges subtracted)
        k = 0
        count = len(starts)
        while k < count and starts[k] <= cur:
            s = starts[k]
            r = ranges.pop(s)
            if s < hi:
                new -= min(hi, r.end) - s
            if r.end > cur:
                pieces.extend(_drop_front(r.pieces, cur - s))
                cur = r.end
            self.buffered_bytes -= r.end - s
            k += 1
        del starts[:k]
        self.work_units += k
        self.next_offset = cur
        # filled_gap: held ranges were consumed (RFC 5681 4.2: ACK such a segment at once).
        return InsertResult(b"".join(pieces), new == 0 and all_in_window, False, True)

    def _insert_out_of_order(self, offset, data, lo, hi, all_in_window) -> InsertResult:
        """New bytes start beyond a hole: merge them into the held ranges."""
        starts = self._starts
        ranges = self._ranges
        mv = memoryview(data)

        # First held range touching [lo, hi): the one before lo if it reaches lo, else the next.
        i = bisect_right(starts, lo) - 1
        first = i if i >= 0 and ranges[starts[i]].end >= lo else i + 1
        j = first
        count = len(starts)
        while j < count and starts[j] <= hi:
            j += 1
        # Held ranges starts[first:j] overlap or abut [lo, hi) and merge into one.
        self.work_units += j - first

        if first == j:  # touches nothing: a new range
            if count >= self.max_ranges:
                self.ranges_refused += 1
                return _EMPTY
            starts.insert(first, lo)
            ranges[lo] = _Range(hi, [bytes(mv[lo - offset : hi - offset])])
            self.buffered_bytes += hi - lo
            return InsertResult(b"", False, True, False)

        s0 = starts[first]
        if s0 <= lo:  # extend the range that already covers lo, in place
            target = ranges.pop(s0)
            ranges[s0] = target  # now the most recently touched (RFC 2018 section 4)
            cur = target.end
            k = first + 1
        else:  # the new bytes begin the merged range
            target = _Range(lo, [])
            cur = lo
            k = first
        pieces = target.pieces
        new = 0
        while k < j:
            s = starts[k]
            r = ranges.pop(s)
            if s > cur:  # the hole before this held range, filled from the new bytes
                pieces.append(bytes(mv[cur - offset : s - offset]))
                new += s - cur
            pieces.extend(r.pieces)
            cur = r.end
            k += 1
        if hi > cur:
            pieces.append(bytes(mv[cur - offset : hi - offset]))
            new += hi - cur
            cur = hi
        target.end = cur
        if s0 <= lo:
            del starts[first + 1 : j]
        else:
            starts[first:j] = [lo]
            ranges[lo] = target
        self.buffered_bytes += new
        return InsertResult(b"", new == 0 and all_in_window, new > 0, False)

    def sack_ranges(self, max_blocks: int = DEFAULT_MAX_SACK_BLOCKS) -> list[tuple[int, int]]:
        """Held ranges as absolute [start, end) pairs, most recently touched first.

        RFC 2018 section 4: the first block holds the segment that triggered this ACK, then
        the other most recently reported blocks.
        """
        if max_blocks <= 0 or not self._starts:
            return []
        ranges = self._ranges
        return [(s, ranges[s].end) for s in islice(reversed(ranges), max_blocks)]
