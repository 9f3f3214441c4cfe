"""32-bit serial arithmetic and 64-bit offset wrap/unwrap (RFC 1982, RFC 9293 3.4)."""

from hypothesis import given
from hypothesis import strategies as st

from rtcp.core.seqnum import (
    SEQ_MOD,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_le,
    seq_lt,
    unwrap,
    wrap,
)

HALF = 1 << 31
U32 = st.integers(min_value=0, max_value=SEQ_MOD - 1)


def test_seq_add_wraps():
    assert seq_add(0, 1) == 1
    assert seq_add(SEQ_MOD - 1, 1) == 0
    assert seq_add(SEQ_MOD - 10, 25) == 15
    assert seq_add(5, -10) == SEQ_MOD - 5
    assert seq_add(7, SEQ_MOD * 3) == 7


def test_seq_diff_signed_range():
    assert seq_diff(10, 15) == 5
    assert seq_diff(15, 10) == -5
    assert seq_diff(SEQ_MOD - 3, 2) == 5
    assert seq_diff(2, SEQ_MOD - 3) == -5
    assert seq_diff(0, HALF) == HALF  # the top of (-2^31, 2^31]
    assert seq_diff(0, HALF + 1) == -(HALF - 1)
    assert seq_diff(123, 123) == 0


def test_comparisons_across_wrap():
    a, b = SEQ_MOD - 2, 3  # b is 5 after a
    assert seq_lt(a, b) and seq_le(a, b)
    assert not seq_gt(a, b) and not seq_ge(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_le(b, a)
    assert seq_le(a, a) and seq_ge(a, a)
    assert not seq_lt(a, a) and not seq_gt(a, a)


def test_comparisons_near_half():
    assert seq_lt(0, HALF - 1)
    assert seq_gt(0, HALF + 1)  # more than half ahead means behind
    assert seq_lt(SEQ_MOD - 1, HALF - 2)


@given(U32, st.integers(min_value=1, max_value=HALF - 1))
def test_comparisons_consistent_with_diff(a, n):
    b = seq_add(a, n)
    assert seq_diff(a, b) == n
    assert seq_diff(b, a) == -n
    assert seq_lt(a, b) and not seq_lt(b, a)
    assert seq_gt(b, a) and not seq_gt(a, b)
    assert seq_le(a, b) and seq_ge(b, a)


def test_wrap_basic():
    assert wrap(0, 0) == 0
    assert wrap(1, SEQ_MOD - 1) == 0
    assert wrap(3 * SEQ_MOD + 17, 15) == 32
    assert wrap(5, SEQ_MOD - 2) == 3


def test_unwrap_isn_near_top():
    isn = SEQ_MOD - 1
    assert unwrap(isn, isn, 0) == 0  # the SYN
    assert unwrap(0, isn, 0) == 1  # first stream byte, wire seq already wrapped
    assert unwrap(10, isn, 0) == 11
    assert unwrap(isn - 1, isn, 0) == SEQ_MOD - 1  # nearest non-negative candidate


def test_unwrap_checkpoint_several_wraps():
    isn = 0xDEADBEEF
    x = 5 * SEQ_MOD + 12345
    seq = wrap(x, isn)
    assert unwrap(seq, isn, x) == x
    assert unwrap(seq, isn, x + 1000) == x
    assert unwrap(seq, isn, x - 1000) == x
    assert unwrap(seq, isn, x + HALF - 1) == x
    assert unwrap(seq, isn, x + HALF + 1) == x + SEQ_MOD  # the next wrap is closer
    assert unwrap(seq, isn, x - HALF - 1) == x - SEQ_MOD


def test_unwrap_never_negative():
    assert unwrap(wrap(0, 100) - 5, 100, 0) == SEQ_MOD - 5
    assert unwrap(0, 0, 0) == 0


@given(
    x=st.integers(min_value=0, max_value=1 << 62),
    isn=U32,
    d=st.integers(min_value=-(HALF - 1), max_value=HALF - 1),
)
def test_unwrap_inverts_wrap(x, isn, d):
    assert 0 <= wrap(x, isn) < SEQ_MOD
    assert unwrap(wrap(x, isn), isn, max(0, x + d)) == x
