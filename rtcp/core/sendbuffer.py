"""The send buffer: bytes the application queued, kept until the peer acknowledges them.

Why chunks and not one bytearray: a bytearray appended at the back and trimmed at the front
(what a send buffer does) copies itself whole each time it grows, which profiled at a full
millisecond per megabyte on the sender, more than SHA-256. Here the application's immutable
`bytes` are kept by reference (zero copies); anything mutable is copied once, since the caller
may reuse it. A segment is a memoryview slice of one chunk; only a segment that straddles two
chunks is joined.
"""

from __future__ import annotations

from bisect import bisect_right

# Below this many chunks released at the front, the lists are not compacted yet.
_COMPACT_AFTER = 64


class SendBuffer:
    """Stream offsets [base, end) of queued data, in the chunks they were queued as."""

    __slots__ = ("_chunks", "_head", "_starts", "base", "end")

    def __init__(self, base: int = 1):
        self.base = base  # first byte still held (the first unacknowledged one)
        self.end = base  # one past the last byte queued
        self._chunks: list[memoryview] = []
        self._starts: list[int] = []  # stream offset of each chunk's first byte
        self._head = 0  # index of the first live chunk; those before it are released

    def __len__(self) -> int:
        return self.end - self.base

    def rebase(self, base: int) -> None:
        """Move an empty buffer to start at offset base."""
        assert self.end == self.base, "rebase of a non-empty send buffer"
        self.base = self.end = base

    def append(self, data) -> None:
        """Queue data: bytes (or a memoryview of bytes) by reference, anything else copied."""
        if type(data) is bytes:
            view = memoryview(data)
        elif type(data) is memoryview and type(data.obj) is bytes and data.contiguous:
            view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        else:
            view = memoryview(bytes(data))
        n = len(view)
        if not n:
            return
        self._chunks.append(view)
        self._starts.append(self.end)
        self.end += n

    def view(self, start: int, end: int):
        """The bytes of [start, end): a memoryview when they lie in one chunk, else bytes."""
        starts = self._starts
        i = bisect_right(starts, start, self._head) - 1
        chunk = self._chunks[i]
        lo = start - starts[i]
        hi = end - starts[i]
        if hi <= len(chunk):
            return chunk[lo:hi]
        parts = [chunk[lo:]]
        chunks = self._chunks
        while True:
            i += 1
            chunk = chunks[i]
            hi = end - starts[i]
            if hi <= len(chunk):
                parts.append(chunk[:hi])
                return b"".join(parts)
            parts.append(chunk)

    def segments(self, start: int, count: int, size: int) -> list:
        """view() of `count` consecutive segments of `size` bytes from `start`: the batch
        send's loop, with one chunk lookup for the run instead of one per segment."""
        starts, chunks = self._starts, self._chunks
        i = bisect_right(starts, start, self._head) - 1
        chunk = chunks[i]
        base = starts[i]
        limit = base + len(chunk)
        out = []
        append = out.append
        for seg in range(start, start + count * size, size):
            end = seg + size
            if end <= limit:
                append(chunk[seg - base:end - base])
                continue
            append(self.view(seg, end))  # straddles chunks (or starts in the next one)
            i = bisect_right(starts, end - 1, self._head) - 1
            chunk = chunks[i]
            base = starts[i]
            limit = base + len(chunk)
        return out

    def release(self, upto: int) -> int:
        """Forget bytes before offset upto (acknowledged); returns how many were freed."""
        upto = min(upto, self.end)
        freed = upto - self.base
        if freed <= 0:
            return 0
        self.base = upto
        chunks, starts = self._chunks, self._starts
        head = self._head
        last = len(chunks) - 1
        while head <= last and starts[head] + len(chunks[head]) <= upto:
            chunks[head] = None  # type: ignore[call-overload]  # drop the reference now
            head += 1
        if head > _COMPACT_AFTER and head * 2 > len(chunks):
            del chunks[:head], starts[:head]
            head = 0
        self._head = head
        return freed
