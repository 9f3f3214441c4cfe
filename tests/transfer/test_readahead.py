"""ReadAhead: the sender's file read and hashed in a helper thread, in order, errors surfaced."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading

import pytest

from rtcp.transfer.readahead import ReadAhead, SourceError


def test_chunks_come_in_order_and_are_hashed_in_the_helper():
    data = os.urandom(100_000)
    h = hashlib.sha256()
    threads = set()

    def update(chunk):
        threads.add(threading.current_thread().name)
        h.update(chunk)

    reader = ReadAhead(io.BytesIO(data), len(data), update, chunk_bytes=7_000, depth=2)
    got = []
    while (chunk := reader.take()) is not None:
        assert type(chunk) is bytes
        got.append(chunk)
    assert b"".join(got) == data
    assert max(map(len, got)) == 7_000
    assert h.digest() == hashlib.sha256(data).digest()
    assert threads == {"rtcp-readahead"}
    assert reader.take() is None  # stays at the end
    reader.close()


def test_it_reads_before_it_is_asked():
    first_read = threading.Event()

    def update(chunk):
        first_read.set()

    reader = ReadAhead(io.BytesIO(b"x" * 10), 10, update, chunk_bytes=4)
    assert first_read.wait(10)  # during the handshake, before any take()
    reader.close()


def test_only_size_bytes_are_read():
    reader = ReadAhead(io.BytesIO(b"abcdefgh"), 5, lambda c: None, chunk_bytes=4)
    assert reader.take() == b"abcd"
    assert reader.take() == b"e"
    assert reader.take() is None
    reader.close()


def test_a_file_that_shrank_is_an_error_after_what_was_read():
    reader = ReadAhead(io.BytesIO(b"abc"), 10, lambda c: None, chunk_bytes=2, name="f.bin")
    assert reader.take() == b"ab"
    assert reader.take() == b"c"
    with pytest.raises(SourceError, match=r"f.bin shrank while being sent \(3 of 10 bytes\)"):
        reader.take()
    assert reader.take() is None
    reader.close()


class _Failing(io.RawIOBase):
    def __init__(self):
        self.calls = 0

    def read(self, n=-1):
        self.calls += 1
        if self.calls > 1:
            raise OSError(errno.EIO, "Input/output error")
        return b"z" * n


def test_a_read_error_is_reported_with_its_reason():
    reader = ReadAhead(_Failing(), 100, lambda c: None, chunk_bytes=10, name="disk.img")
    assert reader.take() == b"z" * 10
    with pytest.raises(SourceError, match="cannot read disk.img: Input/output error"):
        reader.take()
    reader.close()


def test_close_stops_a_helper_that_waits_for_room():
    data = b"q" * 1000
    reader = ReadAhead(io.BytesIO(data), len(data), lambda c: None, chunk_bytes=10, depth=1)
    assert reader.take() == b"q" * 10
    reader.close()  # the helper is blocked on a full queue: close must not hang
    assert not reader._thread.is_alive()
