"""Reassembler: CS144-style cases (holes, overlaps, duplicates, window) and RFC 2018 SACK."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.core.reassembly import InsertResult, Reassembler

BIG = 1 << 40  # a window that never trims
STREAM = bytes(range(256)) * 4


def held(r: Reassembler) -> list[tuple[int, int]]:
    return sorted(r.sack_ranges(max_blocks=1000))


# -- holes ------------------------------------------------------------------------------------


class TestHoles:
    def test_in_order(self):
        r = Reassembler()
        assert r.insert(0, b"abc", BIG) == InsertResult(b"abc", False, False, False)
        assert r.insert(3, b"def", BIG).delivered == b"def"
        assert r.next_offset == 6
        assert not r.has_gap()
        assert r.buffered_bytes == 0

    def test_start_offset(self):
        r = Reassembler(next_offset=1)  # offset 0 is the SYN
        assert r.insert(1, b"x", BIG).delivered == b"x"
        assert r.next_offset == 2

    def test_single_hole(self):
        r = Reassembler()
        res = r.insert(1, b"b", BIG)
        assert res == InsertResult(b"", False, True, False)
        assert r.has_gap() and r.buffered_bytes == 1
        res = r.insert(0, b"a", BIG)
        assert res == InsertResult(b"ab", False, False, True)
        assert r.next_offset == 2 and r.buffered_bytes == 0 and not r.has_gap()

    def test_many_holes_reverse_order(self):
        r = Reassembler()
        for i in range(9, 0, -1):
            assert r.insert(i * 2, STREAM[i * 2 : i * 2 + 2], BIG).delivered == b""
        assert held(r) == [(2, 20)]  # abutting pieces merged into one range
        assert r.buffered_bytes == 18
        res = r.insert(0, STREAM[:2], BIG)
        assert res.delivered == STREAM[:20] and res.filled_gap
        assert r.buffered_bytes == 0

    def test_chunks_with_gaps_then_fill(self):
        r = Reassembler()
        r.insert(2, b"cd", BIG)
        r.insert(6, b"gh", BIG)
        r.insert(10, b"kl", BIG)
        assert held(r) == [(2, 4), (6, 8), (10, 12)]
        assert r.insert(0, b"ab", BIG).delivered == b"abcd"
        assert r.insert(4, b"ef", BIG).delivered == b"efgh"
        assert r.insert(8, b"ij", BIG).delivered == b"ijkl"
        assert r.next_offset == 12 and not r.has_gap()

    def test_partial_fill_keeps_gap(self):
        r = Reassembler()
        r.insert(5, b"fgh", BIG)
        res = r.insert(0, b"ab", BIG)
        assert res == InsertResult(b"ab", False, False, False)
        assert r.has_gap() and r.buffered_bytes == 3

    def test_memoryview_and_bytearray_input(self):
        r = Reassembler()
        buf = bytearray(b"xxhelloxx")
        r.insert(5, memoryview(buf)[4:7], BIG)  # b"llo" held at [5, 8)
        buf[:] = b"ZZZZZZZZZ"  # the caller reuses its buffer: held data must be a copy
        res = r.insert(0, bytearray(b"01234"), BIG)
        assert res.delivered == b"01234llo"
        assert isinstance(res.delivered, bytes)


# -- overlaps ---------------------------------------------------------------------------------


class TestOverlapping:
    def test_overlap_with_delivered(self):
        r = Reassembler()
        r.insert(0, b"abcd", BIG)
        res = r.insert(2, b"cdef", BIG)
        assert res.delivered == b"ef" and not res.duplicate
        assert r.next_offset == 6

    def test_new_contained_in_held(self):
        r = Reassembler()
        r.insert(2, STREAM[2:10], BIG)
        res = r.insert(4, STREAM[4:6], BIG)
        assert res.duplicate and not res.out_of_order
        assert held(r) == [(2, 10)] and r.buffered_bytes == 8

    def test_held_contained_in_new(self):
        r = Reassembler()
        r.insert(4, STREAM[4:6], BIG)
        res = r.insert(2, STREAM[2:10], BIG)
        assert res.out_of_order and not res.duplicate
        assert held(r) == [(2, 10)] and r.buffered_bytes == 8
        assert r.insert(0, STREAM[:2], BIG).delivered == STREAM[:10]

    def test_straddles_start_of_held(self):
        r = Reassembler()
        r.insert(5, STREAM[5:10], BIG)
        r.insert(3, STREAM[3:7], BIG)
        assert held(r) == [(3, 10)] and r.buffered_bytes == 7

    def test_straddles_end_of_held(self):
        r = Reassembler()
        r.insert(5, STREAM[5:10], BIG)
        r.insert(8, STREAM[8:14], BIG)
        assert held(r) == [(5, 14)] and r.buffered_bytes == 9
        assert r.insert(0, STREAM[:5], BIG).delivered == STREAM[:14]

    def test_spans_several_held_ranges(self):
        r = Reassembler()
        for s in (3, 7, 11, 15):
            r.insert(s, STREAM[s : s + 2], BIG)
        assert r.buffered_bytes == 8
        res = r.insert(4, STREAM[4:16], BIG)
        assert res.out_of_order and not res.duplicate
        assert held(r) == [(3, 17)] and r.buffered_bytes == 14
        assert r.insert(0, STREAM[:3], BIG).delivered == STREAM[:17]

    def test_in_order_overlapping_held_ranges(self):
        r = Reassembler()
        r.insert(3, STREAM[3:5], BIG)
        r.insert(8, STREAM[8:12], BIG)
        r.insert(20, STREAM[20:22], BIG)
        res = r.insert(0, STREAM[:10], BIG)  # swallows the first, overlaps the second
        assert res.delivered == STREAM[:12] and res.filled_gap and not res.duplicate
        assert held(r) == [(20, 22)] and r.buffered_bytes == 2

    def test_in_order_covering_held_exactly(self):
        r = Reassembler()
        r.insert(3, STREAM[3:5], BIG)
        res = r.insert(0, STREAM[:5], BIG)
        assert res.delivered == STREAM[:5] and res.filled_gap
        assert r.buffered_bytes == 0 and not r.has_gap()

    def test_abutting_ranges_merge(self):
        r = Reassembler()
        r.insert(2, STREAM[2:4], BIG)
        r.insert(6, STREAM[6:8], BIG)
        r.insert(4, STREAM[4:6], BIG)
        assert held(r) == [(2, 8)]


# -- duplicates -------------------------------------------------------------------------------


class TestDuplicates:
    def test_duplicate_of_delivered(self):
        r = Reassembler()
        r.insert(0, b"abcd", BIG)
        assert r.insert(0, b"abcd", BIG) == InsertResult(b"", True, False, False)
        assert r.insert(1, b"bc", BIG).duplicate

    def test_duplicate_of_held(self):
        r = Reassembler()
        r.insert(4, b"efgh", BIG)
        res = r.insert(4, b"efgh", BIG)
        assert res == InsertResult(b"", True, False, False)
        assert r.buffered_bytes == 4

    def test_duplicate_spanning_delivered_and_held(self):
        r = Reassembler()
        r.insert(0, STREAM[:4], BIG)
        r.insert(6, STREAM[6:10], BIG)
        assert not r.insert(2, STREAM[2:8], BIG).duplicate  # 4..6 is new
        r2 = Reassembler()
        r2.insert(0, STREAM[:4], BIG)
        r2.insert(4, STREAM[4:5], BIG)
        assert r2.insert(0, STREAM[:5], BIG).duplicate

    def test_empty_insert_is_a_no_op(self):
        r = Reassembler()
        assert r.insert(0, b"", BIG) == InsertResult(b"", False, False, False)
        assert r.next_offset == 0

    def test_repeated_delivery_is_exactly_once(self):
        r = Reassembler()
        out = bytearray()
        for _ in range(3):
            for s in range(0, 40, 8):
                out += r.insert(s, STREAM[s : s + 8], BIG).delivered
        assert bytes(out) == STREAM[:40]


# -- window -----------------------------------------------------------------------------------


class TestWindow:
    def test_trim_at_window_end(self):
        r = Reassembler()
        res = r.insert(0, b"abcdef", 4)
        assert res.delivered == b"abcd" and not res.duplicate
        assert r.next_offset == 4

    def test_beyond_window_dropped(self):
        r = Reassembler()
        res = r.insert(10, b"xyz", 8)
        assert res == InsertResult(b"", False, False, False)
        assert not r.has_gap() and r.buffered_bytes == 0

    def test_out_of_order_trimmed(self):
        r = Reassembler()
        r.insert(5, STREAM[5:20], 10)
        assert held(r) == [(5, 10)] and r.buffered_bytes == 5

    def test_zero_window(self):
        r = Reassembler(next_offset=7)
        res = r.insert(7, b"a", 7)  # a zero-window probe
        assert res == InsertResult(b"", False, False, False)
        assert r.next_offset == 7

    def test_duplicate_part_with_part_beyond_window_is_not_duplicate(self):
        r = Reassembler()
        r.insert(0, b"abcd", 4)
        res = r.insert(2, b"cdef", 4)
        assert res == InsertResult(b"", False, False, False)

    def test_trim_both_ends(self):
        r = Reassembler()
        r.insert(0, STREAM[:4], BIG)
        res = r.insert(2, STREAM[2:12], 8)
        assert res.delivered == STREAM[4:8] and r.next_offset == 8

    def test_window_then_later_retransmission(self):
        r = Reassembler()
        r.insert(0, STREAM[:10], 5)
        assert r.insert(0, STREAM[:10], 10).delivered == STREAM[5:10]


# -- SACK (RFC 2018 section 4) ---------------------------------------------------------------


class TestSack:
    def test_no_blocks_without_gap(self):
        r = Reassembler()
        r.insert(0, b"abc", BIG)
        assert r.sack_ranges() == []

    def test_most_recent_first(self):
        r = Reassembler()
        r.insert(10, b"x" * 5, BIG)
        r.insert(30, b"x" * 5, BIG)
        r.insert(20, b"x" * 5, BIG)
        assert r.sack_ranges() == [(20, 25), (30, 35), (10, 15)]
        r.insert(15, b"x" * 2, BIG)  # extends the oldest block: it becomes the first
        assert r.sack_ranges() == [(10, 17), (20, 25), (30, 35)]

    def test_duplicate_in_held_block_moves_it_first(self):
        r = Reassembler()
        r.insert(10, b"x" * 5, BIG)
        r.insert(30, b"x" * 5, BIG)
        r.insert(11, b"x", BIG)
        assert r.sack_ranges()[0] == (10, 15)

    def test_max_blocks(self):
        r = Reassembler()
        for s in range(10, 200, 10):
            r.insert(s, b"y" * 3, BIG)
        blocks = r.sack_ranges()  # 19 ranges: the 16 most recently changed
        assert blocks == [(s, s + 3) for s in range(190, 30, -10)]
        assert r.sack_ranges(max_blocks=4) == [(190, 193), (180, 183), (170, 173), (160, 163)]
        assert r.sack_ranges(max_blocks=2) == [(190, 193), (180, 183)]
        assert r.sack_ranges(max_blocks=0) == []

    def test_merged_block_reported_whole(self):
        r = Reassembler()
        r.insert(10, b"x" * 5, BIG)
        r.insert(20, b"x" * 5, BIG)
        r.insert(15, b"x" * 5, BIG)
        assert r.sack_ranges() == [(10, 25)]

    def test_delivered_blocks_disappear(self):
        r = Reassembler()
        r.insert(5, STREAM[5:8], BIG)
        r.insert(12, STREAM[12:14], BIG)
        r.insert(0, STREAM[:5], BIG)
        assert r.sack_ranges() == [(12, 14)]


# -- properties -------------------------------------------------------------------------------


@st.composite
def chunked_stream(draw):
    data = draw(st.binary(min_size=0, max_size=300))
    n = len(data)
    chunks = []
    # Cover the stream with random chunks, then add random overlapping extras and duplicates.
    pos = 0
    while pos < n:
        size = draw(st.integers(min_value=1, max_value=40))
        chunks.append((pos, min(pos + size, n)))
        pos += size
    extras = draw(
        st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(1, 60)), max_size=15)
    )
    for s, size in extras:
        if n:
            chunks.append((s, min(s + size, n)))
    chunks = draw(st.permutations(chunks))
    return data, chunks


@settings(max_examples=300, deadline=None)
@given(chunked_stream(), st.integers(min_value=0, max_value=3))
def test_any_order_delivers_stream_exactly_once(case, base):
    data, chunks = case
    r = Reassembler(next_offset=base)
    out = []
    for s, e in chunks:
        before = (r.next_offset, r.buffered_bytes)
        res = r.insert(base + s, data[s:e], BIG)
        out.append(res.delivered)
        assert r.buffered_bytes == sum(b - a for a, b in r.sack_ranges(1000))
        # The flags agree with what changed.
        assert res.duplicate == ((r.next_offset, r.buffered_bytes) == before)
        assert res.out_of_order == (r.buffered_bytes > before[1] and not res.delivered)
        if res.filled_gap:
            assert res.delivered and before[1] > r.buffered_bytes
    assert b"".join(out) == data
    assert r.next_offset == base + len(data)
    assert r.buffered_bytes == 0 and not r.has_gap()


@settings(max_examples=100, deadline=None)
@given(chunked_stream(), st.integers(min_value=1, max_value=64))
def test_sliding_window_delivers_prefix(case, window):
    """With a window that slides with delivery, retrying until done delivers the stream."""
    data, chunks = case
    r = Reassembler()
    out = bytearray()
    for _ in range(len(data) + 1):
        for s, e in chunks:
            out += r.insert(s, data[s:e], r.next_offset + window).delivered
            assert r.buffered_bytes <= window
        if r.next_offset == len(data):
            break
    assert bytes(out) == data


def test_random_large_stream_fast():
    rnd = random.Random(7)
    data = rnd.randbytes(2_000_000)
    mss = 1400
    segs = [(s, data[s : s + mss]) for s in range(0, len(data), mss)]
    # Lose every 50th segment, deliver the rest (some reordered), then the retransmissions.
    lost = segs[::50]
    rest = [x for i, x in enumerate(segs) if i % 50]
    for i in range(0, len(rest) - 1, 7):
        rest[i], rest[i + 1] = rest[i + 1], rest[i]
    r = Reassembler()
    out = []
    for s, d in rest + lost:
        out.append(r.insert(s, d, BIG).delivered)
    assert b"".join(out) == data


def test_reverse_order_many_segments():
    n = 1000
    data = random.Random(1).randbytes(n * 100)
    r = Reassembler()
    for s in range((n - 1) * 100, 0, -100):
        r.insert(s, data[s : s + 100], BIG)
    assert r.sack_ranges() == [(100, n * 100)]
    assert r.insert(0, data[:100], BIG).delivered == data


# -- hostile peers (issue 14) -----------------------------------------------------------------


class TestHostile:
    def test_one_byte_islands_cost_constant_work_each(self):
        """48,500 one-byte segments, each a new island: the work per segment stays constant
        (it was a sort of every held range per segment, twice: O(n^2 log n))."""
        r = Reassembler(max_ranges=1 << 20)
        n = 48_500
        for i in range(n):
            r.insert(2 * i + 1, b"x", BIG)
            assert r.sack_ranges(1) == [(2 * i + 1, 2 * i + 2)]  # the newest first, O(1)
        assert r.held_ranges == n
        assert r.work_units <= 2 * n

    def test_held_ranges_are_capped_and_the_new_island_dropped(self):
        r = Reassembler(max_ranges=4)
        for i in range(6):
            r.insert(2 * i + 1, b"x", BIG)
        assert r.held_ranges == 4 and r.ranges_refused == 2
        assert held(r) == [(1, 2), (3, 4), (5, 6), (7, 8)]  # what was SACKed stays held
        # bytes that join a held range are still taken at the cap
        assert r.insert(2, b"y", BIG).out_of_order
        assert held(r) == [(1, 4), (5, 6), (7, 8)]
        assert r.insert(0, b"z", BIG).delivered == b"zxyx"

    def test_sack_order_is_most_recently_touched_first(self):
        r = Reassembler()
        r.insert(10, b"a", BIG)
        r.insert(20, b"b", BIG)
        r.insert(30, b"c", BIG)
        r.insert(11, b"a", BIG)  # touches the oldest range: it becomes the first block
        assert r.sack_ranges(2) == [(10, 12), (30, 31)]
        r.insert(19, b"b", BIG)  # extends a range at its front: a new start, first again
        assert r.sack_ranges(3) == [(19, 21), (10, 12), (30, 31)]
