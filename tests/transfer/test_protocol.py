"""The file protocol on the stream, sans-IO: FileSender and FileReceiver paired directly."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.transfer import protocol as proto
from rtcp.transfer.protocol import (
    BadName,
    DataReceived,
    FileReceiver,
    FileSender,
    HeaderReceived,
    ProtocolFailure,
    Status,
    TrailerReceived,
    Verdict,
    VerdictReceived,
    validate_name,
)


def stream_for(name: str, data: bytes) -> bytes:
    fs = FileSender(name, len(data))
    fs.update(data)
    return fs.header() + data + fs.trailer()


def feed_in_chunks(receiver: FileReceiver, stream: bytes, sizes) -> list:
    events, pos, i = [], 0, 0
    while pos < len(stream):
        n = max(1, sizes[i % len(sizes)]) if sizes else len(stream)
        chunk = stream[pos : pos + n]
        for ev in receiver.feed(chunk):
            # DataReceived may be a view on the chunk: copy, as an app writes it at once
            events.append(DataReceived(bytes(ev.data)) if isinstance(ev, DataReceived) else ev)
        pos += n
        i += 1
    return events


def collect(events) -> tuple[HeaderReceived | None, bytes, bytes | None, list]:
    header, data, digest, failures = None, bytearray(), None, []
    for ev in events:
        if isinstance(ev, HeaderReceived):
            assert header is None
            header = ev
        elif isinstance(ev, DataReceived):
            data += ev.data
        elif isinstance(ev, TrailerReceived):
            digest = ev.digest
        elif isinstance(ev, ProtocolFailure):
            failures.append(ev)
    return header, bytes(data), digest, failures


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 1361, 1362, 1363, 65536, 100_003])
def test_round_trip_byte_by_byte(size):
    data = os.urandom(size)
    stream = stream_for("f.bin", data)
    r = FileReceiver()
    header, got, digest, failures = collect(feed_in_chunks(r, stream, [1]))
    assert not failures
    assert header == HeaderReceived("f.bin", size, proto.VERSION)
    assert got == data
    assert digest == hashlib.sha256(data).digest()
    assert r.done and not r.failed
    assert r.end_of_stream() == []


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20),
    name=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
        min_size=1,
        max_size=40,
    ).filter(lambda s: s not in (".", "..") and not s.startswith(".rtcp-tmp-")),
)
def test_round_trip_any_chunking(data, sizes, name):
    if len(name.encode()) > 255:
        return
    stream = stream_for(name, data)
    header, got, digest, failures = collect(feed_in_chunks(FileReceiver(), stream, sizes))
    assert not failures
    assert header.name == name and header.size == len(data)
    assert got == data
    assert digest == hashlib.sha256(data).digest()


def test_header_layout():
    header = proto.encode_header("a b", 5)
    assert header == b"RTCP" + bytes([1]) + struct.pack("!H", 3) + b"a b" + struct.pack("!Q", 5)


def test_data_events_are_bounded_by_the_chunks():
    data = os.urandom(10_000)
    stream = stream_for("x", data)
    r = FileReceiver()
    events = r.feed(stream)  # one chunk: header, one data event, trailer
    kinds = [type(e) for e in events]
    assert kinds == [HeaderReceived, DataReceived, TrailerReceived]
    assert bytes(events[1].data) == data


# --- names ---------------------------------------------------------------------------

GOOD_NAMES = [
    "a",
    "report.pdf",
    "with space.txt",
    "héllo wörld ñ.txt",
    "日本語.bin",
    ".hidden",
    "...",
    "a..b",
    "x" * 255,
    "é" * 127,  # 254 bytes
]

BAD_NAMES = [
    (b"", "empty"),
    (b"/etc/passwd", "separator"),
    (b"a/b", "separator"),
    (b"../x", "separator"),
    (b"a\\b", "separator"),
    (b"..\\..\\x", "separator"),
    (b"\\x", "separator"),
    (b"a\x00b", "NUL"),
    (b".", "not a file name"),
    (b"..", "not a file name"),
    (b"x" * 256, "more than 255"),
    ("é".encode() * 128, "more than 255"),
    (b"\xff\xfe", "UTF-8"),
    (b"a\xc3", "UTF-8"),
    (b"\xed\xa0\x80", "UTF-8"),  # a UTF-16 surrogate encoded in UTF-8
    (b"line\nbreak", "control"),
    (b"tab\there", "control"),
    (b"\x1b[31mred", "control"),
    (b"del\x7f", "control"),
    ("c1\u0085".encode(), "control"),
    (b".rtcp-tmp-1-ab-x.part", "reserved"),
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names(name):
    assert validate_name(name) == name
    assert validate_name(name.encode()) == name


@pytest.mark.parametrize("raw,why", BAD_NAMES)
def test_bad_names(raw, why):
    with pytest.raises(BadName, match=why):
        validate_name(raw)


@pytest.mark.parametrize("raw,why", BAD_NAMES)
def test_receiver_refuses_bad_names(raw, why):
    """A hand-made header with a bad name: one BAD_NAME failure, never an exception."""
    if len(raw) > 0xFFFF:
        pytest.skip("does not fit the length field")
    stream = b"RTCP\x01" + struct.pack("!H", len(raw)) + raw + struct.pack("!Q", 3) + b"abc"
    for sizes in ([1], [len(stream)]):
        r = FileReceiver()
        _header, data, _digest, failures = collect(feed_in_chunks(r, stream, sizes))
        assert [f.status for f in failures] == [Status.BAD_NAME]
        assert why.split()[0].lower() in failures[0].message.lower() or why == "separator"
        assert data == b"" and r.header is None and r.failed
        assert r.feed(b"more") == []  # ignored after a failure
        assert r.end_of_stream() == []


def test_sender_refuses_bad_name():
    with pytest.raises(BadName):
        FileSender("a/b", 1)


# --- protocol errors -----------------------------------------------------------------


def test_bad_magic_fails_at_the_first_wrong_byte():
    r = FileReceiver()
    assert r.feed(b"RT") == []
    (failure,) = r.feed(b"X")
    assert failure.status == Status.PROTOCOL_ERROR and "magic" in failure.message


def test_http_request_is_not_a_transfer():
    (failure,) = FileReceiver().feed(b"GET / HTTP/1.1\r\n\r\n")
    assert failure.status == Status.PROTOCOL_ERROR


def test_unsupported_version():
    (failure,) = FileReceiver().feed(b"RTCP\x02rest")
    assert failure.status == Status.UNSUPPORTED_VERSION and "2" in failure.message


def test_name_length_over_255_refused_before_reading_it():
    (failure,) = FileReceiver().feed(b"RTCP\x01" + struct.pack("!H", 4000))
    assert failure.status == Status.BAD_NAME


def test_bytes_after_the_trailer():
    stream = stream_for("x", b"abc")
    r = FileReceiver()
    events = r.feed(stream + b"!")
    assert isinstance(events[-2], TrailerReceived)
    assert isinstance(events[-1], ProtocolFailure) and "after the trailer" in events[-1].message
    r2 = FileReceiver()
    r2.feed(stream)
    (failure,) = r2.feed(b"!")
    assert failure.status == Status.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "cut,where",
    [
        (0, "before any header"),
        (3, "header"),
        (9, "header"),
        (30, "file bytes"),
        (-1, "trailer"),
        (-32, "trailer"),
    ],
)
def test_truncated_stream(cut, where):
    data = os.urandom(100)
    stream = stream_for("name.bin", data)
    prefix = stream[:cut]
    r = FileReceiver()
    r.feed(prefix)
    (failure,) = r.end_of_stream()
    assert failure.status == Status.PROTOCOL_ERROR
    assert "truncated" in failure.message and where in failure.message
    assert not r.done


def test_truncated_data_reports_progress():
    stream = stream_for("n", b"x" * 100)
    r = FileReceiver()
    r.feed(stream[: len(stream) - 32 - 40])
    (failure,) = r.end_of_stream()
    assert "60 of 100" in failure.message


def test_huge_announced_size_is_just_a_number():
    """The parser never allocates from the announced size (storage checks the space)."""
    stream = proto.encode_header("big", 2**64 - 1)
    r = FileReceiver()
    (header,) = r.feed(stream)
    assert header.size == 2**64 - 1
    assert r.feed(b"abc")[0].data == b"abc"


# --- sender side ---------------------------------------------------------------------


def test_sender_hash_and_limits():
    fs = FileSender("n", 5)
    with pytest.raises(ValueError):
        fs.trailer()
    fs.update(b"ab")
    fs.update(memoryview(b"cde"))
    with pytest.raises(ValueError):
        fs.update(b"f")
    assert fs.trailer() == hashlib.sha256(b"abcde").digest()
    assert fs.hexdigest == hashlib.sha256(b"abcde").hexdigest()


@pytest.mark.parametrize("status", list(Status))
def test_verdict_round_trip_byte_by_byte(status):
    verdict = Verdict(status, "message: é")
    encoded = verdict.encode()
    fs = FileSender("n", 0)
    events = []
    for i in range(len(encoded)):
        events += fs.receive(encoded[i : i + 1])
    assert events == [VerdictReceived(verdict)]
    assert fs.verdict == verdict and fs.verdict.ok == (status == Status.OK)
    assert fs.end_of_stream() == []


def test_verdict_layout():
    assert Verdict(Status.FILE_EXISTS, "ab").encode() == b"\x02\x00\x02ab"
    assert Verdict(Status.OK).encode() == b"\x00\x00\x00"


def test_verdict_long_message_is_truncated_on_a_character_boundary():
    encoded = Verdict(Status.IO_ERROR, "é" * 2000).encode()
    length = struct.unpack("!H", encoded[1:3])[0]
    assert length <= proto.MAX_MESSAGE_BYTES
    encoded[3:].decode("utf-8")  # still valid UTF-8


def test_unknown_verdict_status_is_kept_as_a_number():
    fs = FileSender("n", 0)
    (ev,) = fs.receive(b"\x63\x00\x01z")
    assert ev.verdict.status == 99 and not ev.verdict.ok
    assert "status 99" in ev.verdict.describe()


def test_verdict_missing_or_truncated():
    fs = FileSender("n", 0)
    (failure,) = fs.end_of_stream()
    assert "without a verdict" in failure.message
    fs2 = FileSender("n", 0)
    fs2.receive(b"\x00\x00")
    (failure,) = fs2.end_of_stream()
    assert "truncated" in failure.message


def test_bytes_after_the_verdict():
    fs = FileSender("n", 0)
    events = fs.receive(Verdict(Status.OK).encode() + b"junk")
    assert isinstance(events[0], VerdictReceived)
    assert isinstance(events[1], ProtocolFailure)


def test_early_refusal_pairing():
    """The receiver refuses right after the header; the sender sees it before the data."""
    data = os.urandom(50_000)
    fs = FileSender("exists.txt", len(data))
    r = FileReceiver()
    (header,) = r.feed(fs.header())
    assert header.name == "exists.txt"
    refusal = Verdict(Status.FILE_EXISTS, "exists.txt exists on the receiver")
    (ev,) = fs.receive(refusal.encode())
    assert ev.verdict.status == Status.FILE_EXISTS
    assert fs.bytes_hashed == 0  # nothing of the file was needed


def test_status_texts_cover_every_status():
    for status in Status:
        assert proto.status_text(status) != f"status {int(status)}"
