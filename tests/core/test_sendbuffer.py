"""SendBuffer: views and releases match one flat bytes object, and bytes are kept, not copied."""

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.core.sendbuffer import SendBuffer


def test_bytes_are_kept_by_reference_and_mutable_data_is_copied():
    buf = SendBuffer(1)
    data = b"x" * 100
    buf.append(data)
    mutable = bytearray(b"y" * 50)
    buf.append(mutable)
    mutable[:] = b"z" * 50  # the caller reuses its buffer
    view = buf.view(1, 101)
    assert isinstance(view, memoryview) and view.obj is data
    assert bytes(buf.view(101, 151)) == b"y" * 50
    assert (buf.base, buf.end, len(buf)) == (1, 151, 150)


def test_a_view_across_chunks_is_joined():
    buf = SendBuffer(10)
    for part in (b"abc", b"defg", b"h"):
        buf.append(part)
    assert buf.view(11, 18) == b"bcdefgh"
    assert bytes(buf.view(13, 17)) == b"defg"


def test_release_frees_whole_chunks_and_keeps_a_partly_acked_one():
    buf = SendBuffer(1)
    buf.append(b"a" * 10)
    buf.append(b"b" * 10)
    assert buf.release(5) == 4
    assert bytes(buf.view(5, 11)) == b"a" * 6
    assert buf.release(15) == 10
    assert bytes(buf.view(15, 21)) == b"b" * 6
    assert buf.release(15) == 0
    assert buf.release(100) == 6  # never past the end
    assert len(buf) == 0
    buf.rebase(21)
    buf.append(memoryview(b"cc"))
    assert bytes(buf.view(21, 23)) == b"cc"


pieces = st.lists(
    st.tuples(st.binary(min_size=0, max_size=40), st.sampled_from(["bytes", "bytearray", "view"])),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(pieces, st.data())
def test_matches_a_flat_buffer(parts, data):
    base = data.draw(st.integers(0, 2**40))
    buf = SendBuffer(base)
    flat = b""
    for raw, kind in parts:
        buf.append(bytearray(raw) if kind == "bytearray" else memoryview(raw) if kind == "view"
                   else raw)
        flat += raw
    released = base
    for _ in range(data.draw(st.integers(0, 20))):
        if len(flat) == released - base:
            break
        start = data.draw(st.integers(released, base + len(flat) - 1))
        end = data.draw(st.integers(start + 1, base + len(flat)))
        assert bytes(buf.view(start, end)) == flat[start - base:end - base]
        upto = data.draw(st.integers(released, start))
        buf.release(upto)
        released = upto
        assert len(buf) == base + len(flat) - released


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=30), st.data())
def test_segments_are_consecutive_views(parts, data):
    buf = SendBuffer(7)
    for p in parts:
        buf.append(p)
    flat = b"".join(parts)
    size = data.draw(st.integers(1, 40))
    start = data.draw(st.integers(7, 7 + len(flat) - 1))
    count = data.draw(st.integers(0, (7 + len(flat) - start) // size))
    segs = buf.segments(start, count, size)
    assert [bytes(s) for s in segs] == [
        flat[start - 7 + k * size:start - 7 + (k + 1) * size] for k in range(count)
    ]
