"""Format version 2 (many files on one stream), sans-IO: the parsers paired with the encoders,
the path rules one by one, and the receiver's storage of relative paths (symlinks in --out)."""

from __future__ import annotations

import hashlib
import os

import pytest

from rtcp.transfer import protocol as proto
from rtcp.transfer import records as rec
from rtcp.transfer.storage import OutputDir, Refusal


def file_record(path: str, data: bytes, *, mtime_ns: int = 7) -> bytes:
    return rec.encode_file(path, len(data), mtime_ns) + data + hashlib.sha256(data).digest()


def parse(stream: bytes, step: int | None = None) -> list:
    parser = rec.TreeReceiver()
    events = []
    if step is None:
        events += parser.feed(stream)
    else:
        for i in range(0, len(stream), step):
            events += parser.feed(stream[i : i + step])
    events += parser.end_of_stream()
    return events


def joined(events) -> list:
    """DataReceived pieces joined per file, as (kind, ...) tuples."""
    out: list = []
    for e in events:
        if isinstance(e, proto.DataReceived):
            if out and isinstance(out[-1], tuple):
                out[-1] = ("data", out[-1][1] + bytes(e.data))
            else:
                out.append(("data", bytes(e.data)))
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("step", [None, 1, 7, 1000])
def test_many_files_and_folders_roundtrip_in_any_chunking(step):
    a, b = os.urandom(5000), b""
    stream = (
        rec.stream_start()[5:]  # the parser starts after the magic and the version
        + rec.encode_dir("top", 1)
        + file_record("top/a.bin", a)
        + rec.encode_dir("top/empty", 2)
        + file_record("top/empty.txt", b)
        + rec.END
    )
    events = joined(parse(stream, step))
    assert events == [
        rec.DirReceived(0, "top", 1),
        rec.FileStarted(1, "top/a.bin", 5000, 7, False),
        ("data", a),
        rec.FileEnded(1, 5000, hashlib.sha256(a).digest()),
        rec.DirReceived(2, "top/empty", 2),
        rec.FileStarted(3, "top/empty.txt", 0, 7, False),
        rec.FileEnded(3, 0, hashlib.sha256(b).digest()),
        rec.StreamFinished(),
    ]


def test_unknown_size_body_carries_its_size_in_the_trailer():
    data = os.urandom(3000)
    digest = hashlib.sha256(data).digest()
    stream = (
        rec.encode_file("piped.bin", None, 0)
        + rec.encode_chunk_length(1000) + data[:1000]
        + rec.encode_chunk_length(2000) + data[1000:]
        + rec.encode_sized_trailer(3000, digest)
        + rec.END
    )
    events = joined(parse(stream, 13))
    assert events[0] == rec.FileStarted(0, "piped.bin", None, 0, False)
    assert events[1] == ("data", data)
    assert events[2] == rec.FileEnded(0, 3000, digest)


def test_a_chunk_larger_than_the_limit_is_a_protocol_error():
    stream = rec.encode_file("p", None, 0) + rec.encode_chunk_length(rec.MAX_CHUNK_BYTES + 1)
    (*_, failure) = parse(stream)
    assert isinstance(failure, proto.ProtocolFailure) and "chunk" in failure.message


def test_ask_offer_holds_the_stream_until_accept_or_skip():
    data = b"x" * 10
    parser = rec.TreeReceiver()
    ask = rec.encode_file("big.bin", len(data), 0, ask_offer=True)
    events = parser.feed(ask + rec.encode_start(0) + data + hashlib.sha256(data).digest())
    assert events == [rec.FileStarted(0, "big.bin", 10, 0, True)] and parser.waiting
    events = joined(parser.accept())
    assert events[0] == rec.BodyStarted(0, 0) and events[1] == ("data", data)
    # skip: the refused file's record is followed at once by the next record
    parser = rec.TreeReceiver()
    assert len(parser.feed(ask + rec.encode_dir("d", 0) + rec.END)) == 1
    assert parser.skip() == [rec.DirReceived(1, "d", 0), rec.StreamFinished()]


def test_truncated_stream_and_bytes_after_end_fail():
    (failure,) = parse(rec.encode_dir("d", 0))[1:]
    assert isinstance(failure, proto.ProtocolFailure) and "END" in failure.message
    events = parse(rec.END + b"x")
    assert isinstance(events[-1], proto.ProtocolFailure)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"/etc/passwd", "absolute"),
        (b"a/../../x", "'..' segment"),
        (b"..", "'..' segment"),
        (b"./x", "'.' segment"),
        (b"a//b", "empty segment"),
        (b"a/", "empty segment"),
        (b"a\x00b", "NUL"),
        (b"a\nb", "control character"),
        (b"a\x7fb", "control character"),
        (b"a\\..\\b", "backslash"),
        (b"\xff\xfe", "UTF-8"),
        (b"/".join([b"d"] * (rec.MAX_PATH_DEPTH + 1)), "segments"),
        (b"x" * 256, "longer than 255"),
        (b"a/.rtcp-tmp-1-ab-x.part", "reserved"),
    ],
)
def test_every_path_rule_refuses_that_file_and_the_tree_goes_on(raw, reason):
    import struct

    body = b"bad"
    bad = (
        bytes((rec.REC_FILE,)) + struct.pack("!H", len(raw)) + raw
        + struct.pack("!QqB", len(body), 0, 0) + body + hashlib.sha256(body).digest()
    )
    stream = file_record("ok1", b"1") + bad + file_record("ok2", b"2") + rec.END
    events = [e for e in parse(stream) if not isinstance(e, proto.DataReceived)]
    started = [e for e in events if isinstance(e, rec.FileStarted)]
    assert [s.bad_path is None for s in started] == [True, False, True]
    assert reason in started[1].bad_path
    assert isinstance(events[-1], rec.StreamFinished)
    with pytest.raises(proto.BadName):
        rec.validate_path(raw)


def test_a_path_longer_than_the_limit_ends_the_stream():
    import struct

    stream = bytes((rec.REC_FILE,)) + struct.pack("!H", rec.MAX_PATH_BYTES + 1)
    (failure,) = parse(stream)
    assert failure.status == proto.Status.BAD_NAME


def test_reply_parser_reads_verdicts_offers_and_a_connection_verdict():
    replies = (
        rec.encode_verdict(0, proto.Verdict(proto.Status.OK, "ab"))
        + rec.encode_offer(1, 0, bytes(32))
        + rec.encode_verdict(1, proto.Verdict(proto.Status.FILE_EXISTS, "x exists"))
    )
    parser = rec.ReplyParser()
    events = []
    for i in range(len(replies)):
        events += parser.feed(replies[i : i + 1])
    assert events == [
        rec.VerdictFor(0, proto.Verdict(proto.Status.OK, "ab")),
        rec.OfferFor(1, 0, bytes(32)),
        rec.VerdictFor(1, proto.Verdict(proto.Status.FILE_EXISTS, "x exists")),
    ]
    busy = proto.Verdict(proto.Status.BUSY, "limit").encode()  # what RefusingApp sends
    (event,) = rec.ReplyParser().feed(busy)
    assert event == rec.ConnectionVerdict(proto.Verdict(proto.Status.BUSY, "limit"))


# --- storage of relative paths ---------------------------------------------------------


def store(out: OutputDir, rel: str, data: bytes):
    incoming = out.open_relative(rel, len(data))
    incoming.write(data)
    return incoming.finish(hashlib.sha256(data).digest(), len(data))


def test_relative_paths_create_their_folders_and_only_verified_files_appear(tmp_path):
    out = OutputDir(tmp_path / "out")
    commit = store(out, "a/b/c.txt", b"hello")
    assert commit.verdict.ok
    assert (tmp_path / "out/a/b/c.txt").read_bytes() == b"hello"
    incoming = out.open_relative("a/b/d.txt", 3)
    incoming.write(b"abc")
    assert not incoming.finish(b"\x00" * 32, 3).verdict.ok
    assert sorted(os.listdir(tmp_path / "out/a/b")) == ["c.txt"]
    assert [n for n in os.listdir(tmp_path / "out") if n.startswith(".rtcp")] == []
    with pytest.raises(Refusal) as info:
        out.open_relative("a/b/c.txt", 1)
    assert info.value.status == proto.Status.FILE_EXISTS


def test_a_symlink_in_out_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "link").symlink_to(outside)
    (out_dir / "file_link").symlink_to(outside / "target")
    out = OutputDir(out_dir)
    for rel in ("link/x.txt", "link/deeper/x.txt"):
        with pytest.raises(Refusal) as info:
            out.open_relative(rel, 1)
        assert info.value.status == proto.Status.BAD_NAME and "symlink" in info.value.message
    with pytest.raises(Refusal):
        out.make_dir("link/sub")
    with pytest.raises(Refusal) as info:  # an existing symlink as the final name: it exists
        out.open_relative("file_link", 1)
    assert info.value.status == proto.Status.FILE_EXISTS
    forced = OutputDir(out_dir, force=True)
    assert store(forced, "file_link", b"new").verdict.ok  # replaces the link, not its target
    assert os.listdir(outside) == []
    assert (out_dir / "file_link").read_bytes() == b"new" and not (out_dir / "file_link").is_symlink()


def test_arbitrary_bytes_never_make_the_parsers_raise():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.integers(1, 50))
    def check(data: bytes, step: int) -> None:
        parser = rec.TreeReceiver()
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
            if parser.waiting:
                parser.accept() if data[:1] < b"\x80" else parser.skip()
        parser.end_of_stream()
        replies = rec.ReplyParser()
        for i in range(0, len(data), step):
            replies.feed(data[i : i + step])

    check()
