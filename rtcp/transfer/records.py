"""Format version 2 of the file protocol: many files and folders on one stream, sans-IO.

The sender writes the magic and the version, then a sequence of records, each opened by a
type byte (docs/transfer.md has the tables)::

    "RTCP" 0x02
    FILE  0x01  u16 path length, path, u64 size (UNKNOWN_SIZE: stdin), i64 mtime (ns), u8 flags
                then, unless the file asks for an offer: the body
    DIR   0x02  u16 path length, path, i64 mtime (ns)          (a folder, empty or not)
    END   0x03                                                 (nothing follows)

A body of a known size is its `size` bytes then their SHA-256 (32 bytes). A body of unknown
size (stdin) is chunks (u32 length, bytes; 1..MAX_CHUNK_BYTES), a zero length, then the size
(u64) and the SHA-256. A FILE with FLAG_ASK_OFFER waits for the receiver's answer: after an
OFFER the sender writes START (u64 offset: the OFFER's offset or 0) and the body from there
(its SHA-256 still covers the whole file); after a VERDICT (an early refusal) nothing, and the
next record follows.

The receiver answers on the reverse stream with records whose type byte is >= 0x80::

    VERDICT 0x81  u32 entry index, u8 status, u16 message length, message
    OFFER   0x82  u32 entry index, u64 offset, SHA-256 of the first `offset` bytes (32)

Entries (FILE and DIR records) are numbered from 0 in the order sent; each gets exactly one
VERDICT. A byte below 0x80 where a record starts is a version 1 verdict (status, u16 length,
message) about the whole connection (a limit refused it, the version is unknown, the stream is
broken): the receiver sends nothing after it.

Both parsers take arbitrary chunks and report problems as values, never as exceptions.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass

from rtcp.transfer.protocol import (
    DIGEST_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NAME_BYTES,
    TEMP_PREFIX,
    BadName,
    DataReceived,
    ProtocolFailure,
    Status,
    Verdict,
)

VERSION = 2
REC_FILE, REC_DIR, REC_END = 0x01, 0x02, 0x03
REPLY_VERDICT, REPLY_OFFER = 0x81, 0x82
FLAG_ASK_OFFER = 0x01
KNOWN_FLAGS = FLAG_ASK_OFFER
UNKNOWN_SIZE = 2**64 - 1  # the size field of a file whose size the trailer carries (stdin)
MAX_SIZE = 2**64 - 2
MAX_CHUNK_BYTES = 1 << 20  # a chunk of an unknown-size body
MAX_PATH_BYTES = 4096  # a relative path, UTF-8 (Linux's PATH_MAX)
MAX_PATH_DEPTH = 64  # segments of a relative path
MAX_ENTRIES = 2**32 - 1

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_I64 = struct.Struct("!q")
_FILE_TAIL = struct.Struct("!QqB")  # size, mtime, flags
_VERDICT = struct.Struct("!BIBH")
_OFFER = struct.Struct("!BIQ")


# --- paths ---------------------------------------------------------------------------


def validate_path(raw: bytes | str) -> str:
    """Return a relative path as text if every rule holds, else raise BadName with the reason.

    The rules (README "Security and limits"): UTF-8; "/" separates segments; not absolute; at
    most MAX_PATH_BYTES bytes and MAX_PATH_DEPTH segments; no empty segment, no "." or ".."
    segment; no NUL, control character or backslash; no segment longer than 255 bytes or
    starting with the receiver's temporary prefix. Such a path stays under the output folder
    by its text alone; the receiver also refuses to pass through a symlink (storage.py)."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise BadName("path is not valid UTF-8") from None
    raw = bytes(raw)
    if not raw:
        raise BadName("path is empty")
    if len(raw) > MAX_PATH_BYTES:
        raise BadName(f"path is {len(raw)} bytes long, more than {MAX_PATH_BYTES}")
    try:
        path = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadName("path is not valid UTF-8") from None
    if "\x00" in path:
        raise BadName("path contains a NUL byte")
    if any(unicodedata.category(c) == "Cc" for c in path):
        raise BadName("path contains a control character")
    if "\\" in path:
        raise BadName("path contains a backslash")
    if path.startswith("/"):
        raise BadName("path is absolute")
    segments = path.split("/")
    if len(segments) > MAX_PATH_DEPTH:
        raise BadName(f"path has {len(segments)} segments, more than {MAX_PATH_DEPTH}")
    for segment in segments:
        if segment == "":
            raise BadName("path has an empty segment")
        if segment in (".", ".."):
            raise BadName(f"path has a {segment!r} segment")
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise BadName(f"a segment of the path is longer than {MAX_NAME_BYTES} bytes")
        if segment.startswith(TEMP_PREFIX):
            raise BadName(f"names starting with {TEMP_PREFIX!r} are reserved")
    return path


def printable(raw: bytes) -> str:
    """A path as a message can show it, whatever its bytes."""
    return repr(raw.decode("utf-8", errors="replace"))[1:-1][:200]


# --- encoding ------------------------------------------------------------------------


def stream_start() -> bytes:
    from rtcp.transfer.protocol import MAGIC

    return MAGIC + bytes((VERSION,))


def encode_file(path: str, size: int | None, mtime_ns: int, *, ask_offer: bool = False) -> bytes:
    raw = validate_path(path).encode("utf-8")
    wire_size = UNKNOWN_SIZE if size is None else size
    if size is not None and not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size {size} out of range")
    if size is None and ask_offer:
        raise ValueError("a file of unknown size cannot resume")
    flags = FLAG_ASK_OFFER if ask_offer else 0
    return b"".join(
        (bytes((REC_FILE,)), _U16.pack(len(raw)), raw, _FILE_TAIL.pack(wire_size, mtime_ns, flags))
    )


def encode_dir(path: str, mtime_ns: int) -> bytes:
    raw = validate_path(path).encode("utf-8")
    return b"".join((bytes((REC_DIR,)), _U16.pack(len(raw)), raw, _I64.pack(mtime_ns)))


END = bytes((REC_END,))


def encode_start(offset: int) -> bytes:
    return _U64.pack(offset)


def encode_chunk_length(n: int) -> bytes:
    return _U32.pack(n)


def encode_sized_trailer(size: int, digest: bytes) -> bytes:
    """The end of an unknown-size body: the zero chunk length, the size, the SHA-256."""
    return _U32.pack(0) + _U64.pack(size) + digest


def encode_verdict(index: int, verdict: Verdict) -> bytes:
    raw = verdict.message.encode("utf-8", errors="replace")
    if len(raw) > MAX_MESSAGE_BYTES:
        raw = raw[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
    return _VERDICT.pack(REPLY_VERDICT, index, int(verdict.status), len(raw)) + raw


def encode_offer(index: int, offset: int, prefix_digest: bytes) -> bytes:
    return _OFFER.pack(REPLY_OFFER, index, offset) + prefix_digest


# --- receiver side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileStarted:
    """A FILE record. bad_path is the reason when the path breaks a rule (path is then a
    printable rendering); size is None when unknown. ask_offer: call accept() or skip()."""

    index: int
    path: str
    size: int | None
    mtime_ns: int
    ask_offer: bool
    bad_path: str | None = None


@dataclass(frozen=True, slots=True)
class BodyStarted:
    """The sender's START after an OFFER: the body begins at offset."""

    index: int
    offset: int


@dataclass(frozen=True, slots=True)
class DirReceived:
    index: int
    path: str
    mtime_ns: int
    bad_path: str | None = None


@dataclass(frozen=True, slots=True)
class FileEnded:
    index: int
    size: int  # the whole file's size (the trailer's, for an unknown-size body)
    digest: bytes


@dataclass(frozen=True, slots=True)
class StreamFinished:
    """The END record."""


# states
(
    _TYPE, _PATHLEN, _PATH, _FILE_TAIL_ST, _DIR_TAIL_ST, _AWAIT, _START, _DATA, _DIGEST,
    _CHUNKLEN, _CHUNK, _SIZED_TAIL, _DONE, _FAILED,
) = range(14)


class TreeReceiver:
    """Incremental parser of a version 2 stream after the magic and version byte.

    After a FileStarted with ask_offer, the parser holds what follows until the application
    calls accept() (it sent an OFFER: a START comes next) or skip() (it refused the file:
    the next record comes next); both return the events of the bytes held meanwhile."""

    def __init__(self) -> None:
        self._state = _TYPE
        self._need = 1
        self._acc = bytearray()
        self._held = bytearray()
        self._kind = 0
        self._path_raw = b""
        self._remaining = 0
        self._size: int | None = None
        self._chunk_left = 0
        self.index = -1  # of the current entry
        self.entries = 0
        self.failure: ProtocolFailure | None = None

    @property
    def finished(self) -> bool:
        return self._state == _DONE

    @property
    def waiting(self) -> bool:
        """A FILE asked for an offer: accept() or skip()."""
        return self._state == _AWAIT

    def _fail(self, message: str, out: list, status: Status = Status.PROTOCOL_ERROR) -> list:
        self._state = _FAILED
        self.failure = ProtocolFailure(status, message)
        out.append(self.failure)
        return out

    def accept(self) -> list:
        if self._state != _AWAIT:
            raise RuntimeError("accept() without a file waiting")
        self._state, self._need = _START, 8
        return self._release()

    def skip(self) -> list:
        if self._state != _AWAIT:
            raise RuntimeError("skip() without a file waiting")
        self._state, self._need = _TYPE, 1
        return self._release()

    def _release(self) -> list:
        held, self._held = bytes(self._held), bytearray()
        return self.feed(held) if held else []

    def _body(self) -> None:
        if self._size is None:
            self._state, self._need = _CHUNKLEN, 4
        elif self._remaining:
            self._state, self._need = _DATA, 0
        else:
            self._state, self._need = _DIGEST, DIGEST_BYTES

    def feed(self, chunk) -> list:
        out: list = []
        state = self._state
        if state == _FAILED or not len(chunk):
            return out
        if state in (_AWAIT, _DONE):
            if state == _DONE:
                return self._fail(f"{len(chunk)} unexpected bytes after the END record", out)
            if len(self._held) + len(chunk) > MAX_CHUNK_BYTES:
                return self._fail("data before the answer to a request for an offer", out)
            self._held += chunk
            return out
        view = memoryview(chunk).cast("B") if not isinstance(chunk, bytes) else memoryview(chunk)
        pos, end = 0, len(view)
        while pos < end:
            state = self._state
            if state in (_DATA, _CHUNK):
                left = self._remaining if state == _DATA else self._chunk_left
                take = min(left, end - pos)
                out.append(DataReceived(view[pos : pos + take]))
                pos += take
                if state == _DATA:
                    self._remaining -= take
                    if not self._remaining:
                        self._state, self._need = _DIGEST, DIGEST_BYTES
                else:
                    self._chunk_left -= take
                    if not self._chunk_left:
                        self._state, self._need = _CHUNKLEN, 4
                continue
            if state == _AWAIT:
                self._held += view[pos:end]
                return out
            if state == _DONE:
                return self._fail(f"{end - pos} unexpected bytes after the END record", out)
            take = min(self._need - len(self._acc), end - pos)
            self._acc += view[pos : pos + take]
            pos += take
            if len(self._acc) < self._need:
                continue
            field = bytes(self._acc)
            self._acc.clear()
            self._step(field, out)
            if self._state == _FAILED:
                return out
        return out

    def _step(self, field: bytes, out: list) -> None:
        state = self._state
        if state == _TYPE:
            kind = field[0]
            if kind == REC_END:
                self._state = _DONE
                out.append(StreamFinished())
            elif kind in (REC_FILE, REC_DIR):
                if self.entries >= MAX_ENTRIES:
                    self._fail(f"more than {MAX_ENTRIES} entries", out)
                    return
                self._kind = kind
                self._state, self._need = _PATHLEN, 2
            else:
                self._fail(f"unknown record type {kind}", out)
        elif state == _PATHLEN:
            length = _U16.unpack(field)[0]
            if length == 0 or length > MAX_PATH_BYTES:
                # the length is the framing: a path we will not read cannot be skipped safely
                self._fail(f"a path of {length} bytes (1..{MAX_PATH_BYTES})", out, Status.BAD_NAME)
                return
            self._state, self._need = _PATH, length
        elif state == _PATH:
            self._path_raw = field
            if self._kind == REC_FILE:
                self._state, self._need = _FILE_TAIL_ST, _FILE_TAIL.size
            else:
                self._state, self._need = _DIR_TAIL_ST, 8
        elif state in (_FILE_TAIL_ST, _DIR_TAIL_ST):
            self.entries += 1
            self.index += 1
            try:
                path, bad = validate_path(self._path_raw), None
            except BadName as exc:
                path, bad = printable(self._path_raw), str(exc)
            if state == _DIR_TAIL_ST:
                out.append(DirReceived(self.index, path, _I64.unpack(field)[0], bad))
                self._state, self._need = _TYPE, 1
                return
            size, mtime_ns, flags = _FILE_TAIL.unpack(field)
            if flags & ~KNOWN_FLAGS:
                self._fail(f"unknown file flags {flags:#x}", out)
                return
            ask = bool(flags & FLAG_ASK_OFFER)
            self._size = None if size == UNKNOWN_SIZE else size
            if self._size is None and ask:
                self._fail("a file of unknown size asked for an offer", out)
                return
            self._remaining = self._size or 0
            out.append(FileStarted(self.index, path, self._size, mtime_ns, ask, bad))
            if ask:
                self._state = _AWAIT
            else:
                self._body()
        elif state == _START:
            offset = _U64.unpack(field)[0]
            if offset > (self._size or 0):
                self._fail(f"START at {offset}, beyond the size {self._size}", out)
                return
            self._remaining = self._size - offset
            out.append(BodyStarted(self.index, offset))
            self._body()
        elif state == _DIGEST:
            out.append(FileEnded(self.index, self._size, field))
            self._state, self._need = _TYPE, 1
        elif state == _CHUNKLEN:
            n = _U32.unpack(field)[0]
            if n == 0:
                self._state, self._need = _SIZED_TAIL, 8 + DIGEST_BYTES
            elif n > MAX_CHUNK_BYTES:
                self._fail(f"a chunk of {n} bytes (at most {MAX_CHUNK_BYTES})", out)
            else:
                self._state, self._chunk_left = _CHUNK, n
        elif state == _SIZED_TAIL:
            size = _U64.unpack(field[:8])[0]
            out.append(FileEnded(self.index, size, field[8:]))
            self._state, self._need = _TYPE, 1

    def end_of_stream(self) -> list:
        """The sender closed its direction: fine after END, a failure before."""
        if self._state in (_DONE, _FAILED):
            return []
        return self._fail("stream truncated before the END record", [])


# --- sender side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerdictFor:
    index: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class OfferFor:
    index: int
    offset: int
    prefix_digest: bytes


@dataclass(frozen=True, slots=True)
class ConnectionVerdict:
    """A version 1 verdict on the reverse stream: about the whole connection."""

    verdict: Verdict


class ReplyParser:
    """The sender's parser of the receiver's replies."""

    def __init__(self) -> None:
        self._acc = bytearray()
        self.failure: ProtocolFailure | None = None
        self.closed_by_verdict = False

    def feed(self, chunk) -> list:
        out: list = []
        if self.failure is not None or not len(chunk):
            return out
        if self.closed_by_verdict:
            return self._fail("bytes after the receiver's connection verdict", out)
        self._acc += chunk
        while self._acc:
            kind = self._acc[0]
            if kind == REPLY_VERDICT:
                if len(self._acc) < _VERDICT.size:
                    break
                _, index, status, length = _VERDICT.unpack_from(self._acc)
                if length > MAX_MESSAGE_BYTES:
                    return self._fail(f"a verdict message of {length} bytes", out)
                total = _VERDICT.size + length
                if len(self._acc) < total:
                    break
                msg = bytes(self._acc[_VERDICT.size : total]).decode("utf-8", "replace")
                out.append(VerdictFor(index, Verdict(_status(status), msg)))
                del self._acc[:total]
            elif kind == REPLY_OFFER:
                total = _OFFER.size + DIGEST_BYTES
                if len(self._acc) < total:
                    break
                _, index, offset = _OFFER.unpack_from(self._acc)
                out.append(OfferFor(index, offset, bytes(self._acc[_OFFER.size : total])))
                del self._acc[:total]
            elif kind < 0x80:
                if len(self._acc) < 3:
                    break
                length = _U16.unpack_from(self._acc, 1)[0]
                if length > MAX_MESSAGE_BYTES:
                    return self._fail(f"a verdict message of {length} bytes", out)
                if len(self._acc) < 3 + length:
                    break
                msg = bytes(self._acc[3 : 3 + length]).decode("utf-8", "replace")
                out.append(ConnectionVerdict(Verdict(_status(kind), msg)))
                self.closed_by_verdict = True
                if len(self._acc) > 3 + length:
                    return self._fail("bytes after the receiver's connection verdict", out)
                self._acc.clear()
            else:
                return self._fail(f"unknown reply type {kind:#x}", out)
        return out

    def _fail(self, message: str, out: list) -> list:
        self.failure = ProtocolFailure(Status.PROTOCOL_ERROR, message)
        out.append(self.failure)
        return out

    @property
    def pending(self) -> bool:
        return bool(self._acc)


def _status(value: int) -> int:
    try:
        return Status(value)
    except ValueError:
        return value
