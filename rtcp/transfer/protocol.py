"""The file protocol carried on the reliable byte stream: sans-IO, no sockets, no clock.

One connection carries one file. The client (sender) writes, in order::

    offset  size  field
    0       4     magic b"RTCP"
    4       1     format version (1)
    5       2     name length N, unsigned big-endian (1..255)
    7       N     file name, UTF-8, a base name only (see validate_name)
    7+N     8     file size S in bytes, unsigned big-endian
    15+N    S     the file's bytes
    15+N+S  32    SHA-256 of those S bytes (the trailer)

The server (receiver) answers on the reverse direction with one verdict::

    0       1     status (Status)
    1       2     message length M, unsigned big-endian
    3       M     human-readable message, UTF-8 (may be empty)

The receiver may send its verdict early, right after the header (a refusal: the file
exists, the name is bad, the file cannot be created), so the sender stops at once;
otherwise it sends it after the trailer, once the file is verified and in place.

Both parsers take arbitrary chunks (byte by byte works) and report problems as values,
never as exceptions: a peer cannot make them raise.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"RTCP"
VERSION = 1
MAX_NAME_BYTES = 255
DIGEST_BYTES = 32
MAX_SIZE = 2**64 - 1
MAX_MESSAGE_BYTES = 1024  # a verdict message longer than this is truncated when encoding
TEMP_PREFIX = ".rtcp-tmp-"  # names the receiver uses for its temporaries: reserved

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_VERDICT_HEAD = struct.Struct("!BH")


class Status(IntEnum):
    """A verdict's status code, as carried on the wire."""

    OK = 0
    HASH_MISMATCH = 1  # the SHA-256 of what arrived is not the sender's
    FILE_EXISTS = 2  # the final name exists and the receiver was not started with --force
    BAD_NAME = 3  # the name is not an acceptable base name
    IO_ERROR = 4  # the receiver could not create or write the file (disk full, permission)
    PROTOCOL_ERROR = 5  # the stream is not a valid transfer (bad magic, truncated, ...)
    UNSUPPORTED_VERSION = 6  # the header's format version is unknown to the receiver
    TOO_LARGE = 7  # not enough space for the announced size
    BUSY = 8  # a limit of the receiver refuses this connection (the message names it)


STATUS_TEXT = {
    Status.OK: "verified",
    Status.HASH_MISMATCH: "SHA-256 mismatch",
    Status.FILE_EXISTS: "file exists",
    Status.BAD_NAME: "bad file name",
    Status.IO_ERROR: "I/O error",
    Status.PROTOCOL_ERROR: "protocol error",
    Status.UNSUPPORTED_VERSION: "unsupported format version",
    Status.TOO_LARGE: "file too large",
    Status.BUSY: "receiver busy",
}


def status_text(status: int) -> str:
    try:
        return STATUS_TEXT[Status(status)]
    except ValueError:
        return f"status {status}"


# --- names ---------------------------------------------------------------------------


class BadName(ValueError):
    """A file name that must not be used as a base name in the output directory."""


def validate_name(raw: bytes | str) -> str:
    """Return the name as text if it is a safe base name, else raise BadName with the reason.

    Refused: empty, longer than 255 UTF-8 bytes, not UTF-8, containing "/", "\\" or NUL or
    another control character, "." and "..", and the receiver's reserved temporary prefix.
    Such a name can never designate anything but a plain entry of the output directory.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise BadName("name is not valid UTF-8") from None
    raw = bytes(raw)
    if not raw:
        raise BadName("name is empty")
    if len(raw) > MAX_NAME_BYTES:
        raise BadName(f"name is {len(raw)} bytes long, more than {MAX_NAME_BYTES}")
    try:
        name = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadName("name is not valid UTF-8") from None
    if "\x00" in name:
        raise BadName("name contains a NUL byte")
    if "/" in name or "\\" in name:
        raise BadName("name contains a path separator")
    if any(unicodedata.category(c) == "Cc" for c in name):  # C0, DEL and C1 controls
        raise BadName("name contains a control character")
    if name in (".", ".."):
        raise BadName(f"name {name!r} is not a file name")
    if name.startswith(TEMP_PREFIX):
        raise BadName(f"names starting with {TEMP_PREFIX!r} are reserved")
    return name


# --- messages ------------------------------------------------------------------------


def encode_header(name: str, size: int) -> bytes:
    raw = validate_name(name).encode("utf-8")
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size {size} out of range")
    return b"".join((MAGIC, bytes((VERSION,)), _U16.pack(len(raw)), raw, _U64.pack(size)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The receiver's answer. status is a Status, or a plain int for a code we do not know."""

    status: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def describe(self) -> str:
        text = status_text(self.status)
        return f"{text}: {self.message}" if self.message and self.message != text else text

    def encode(self) -> bytes:
        raw = self.message.encode("utf-8", errors="replace")
        if len(raw) > MAX_MESSAGE_BYTES:
            raw = raw[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
        return _VERDICT_HEAD.pack(int(self.status), len(raw)) + raw


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderReceived:
    name: str
    size: int
    version: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """File bytes, in order. data may be a view on the chunk given to feed(): use it at once."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class TrailerReceived:
    digest: bytes  # the sender's SHA-256 of the file


@dataclass(frozen=True, slots=True)
class VerdictReceived:
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """The peer's stream is not valid. status is what a receiver answers with."""

    status: Status
    message: str


Event = HeaderReceived | DataReceived | TrailerReceived | VerdictReceived | ProtocolFailure


# --- receiver side -------------------------------------------------------------------

_ST_MAGIC, _ST_VERSION, _ST_NAMELEN, _ST_NAME, _ST_SIZE, _ST_DATA, _ST_TRAILER = range(7)
_ST_DONE, _ST_FAILED = 7, 8


class FileReceiver:
    """Incremental parser of the sender's stream: feed() chunks, get events back.

    Events come in this order: HeaderReceived, DataReceived..., TrailerReceived; or a
    ProtocolFailure at any point, after which the parser ignores everything.
    """

    def __init__(self) -> None:
        self._state = _ST_MAGIC
        self._need = len(MAGIC)
        self._acc = bytearray()
        self._name = ""
        self._size = 0
        self._remaining = 0
        self.bytes_consumed = 0
        self.header: HeaderReceived | None = None
        self.digest: bytes | None = None
        self.failure: ProtocolFailure | None = None

    @property
    def done(self) -> bool:
        """The trailer was received."""
        return self._state == _ST_DONE

    @property
    def failed(self) -> bool:
        return self._state == _ST_FAILED

    @property
    def data_remaining(self) -> int:
        return self._remaining

    def _fail(self, status: Status, message: str, out: list) -> list:
        self._state = _ST_FAILED
        self.failure = ProtocolFailure(status, message)
        out.append(self.failure)
        return out

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Event]:
        out: list[Event] = []
        if self._state >= _ST_DONE:
            if self._state == _ST_DONE and len(chunk):
                return self._fail(
                    Status.PROTOCOL_ERROR, f"{len(chunk)} unexpected bytes after the trailer", out
                )
            return out
        view = memoryview(chunk).cast("B") if not isinstance(chunk, bytes) else memoryview(chunk)
        pos, end = 0, len(view)
        while pos < end:
            state = self._state
            if state == _ST_DATA:
                take = min(self._remaining, end - pos)
                out.append(DataReceived(view[pos : pos + take]))
                pos += take
                self.bytes_consumed += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state, self._need = _ST_TRAILER, DIGEST_BYTES
                continue
            if state >= _ST_DONE:
                extra = end - pos
                return self._fail(
                    Status.PROTOCOL_ERROR, f"{extra} unexpected bytes after the trailer", out
                )
            take = min(self._need - len(self._acc), end - pos)
            self._acc += view[pos : pos + take]
            pos += take
            self.bytes_consumed += take
            if state == _ST_MAGIC and not MAGIC.startswith(self._acc):
                return self._fail(Status.PROTOCOL_ERROR, "bad magic: not an rtcp transfer", out)
            if len(self._acc) < self._need:
                continue
            field = bytes(self._acc)
            self._acc.clear()
            if state == _ST_MAGIC:
                self._state, self._need = _ST_VERSION, 1
            elif state == _ST_VERSION:
                if field[0] != VERSION:
                    return self._fail(
                        Status.UNSUPPORTED_VERSION,
                        f"format version {field[0]} (this receiver speaks {VERSION})",
                        out,
                    )
                self._state, self._need = _ST_NAMELEN, 2
            elif state == _ST_NAMELEN:
                length = _U16.unpack(field)[0]
                if length == 0:
                    return self._fail(Status.BAD_NAME, "name is empty", out)
                if length > MAX_NAME_BYTES:
                    return self._fail(
                        Status.BAD_NAME,
                        f"name is {length} bytes long, more than {MAX_NAME_BYTES}",
                        out,
                    )
                self._state, self._need = _ST_NAME, length
            elif state == _ST_NAME:
                try:
                    self._name = validate_name(field)
                except BadName as exc:
                    return self._fail(Status.BAD_NAME, str(exc), out)
                self._state, self._need = _ST_SIZE, 8
            elif state == _ST_SIZE:
                self._size = self._remaining = _U64.unpack(field)[0]
                self.header = HeaderReceived(self._name, self._size, VERSION)
                out.append(self.header)
                if self._size:
                    self._state, self._need = _ST_DATA, 0
                else:
                    self._state, self._need = _ST_TRAILER, DIGEST_BYTES
            elif state == _ST_TRAILER:
                self.digest = field
                self._state = _ST_DONE
                out.append(TrailerReceived(field))
        return out

    def end_of_stream(self) -> list[Event]:
        """The sender closed its direction (FIN): fine after the trailer, a failure before."""
        if self._state >= _ST_DONE:
            return []
        if self._state == _ST_DATA:
            what = f"after {self._size - self._remaining} of {self._size} file bytes"
        elif self._state == _ST_TRAILER:
            what = "in the SHA-256 trailer"
        elif self.bytes_consumed == 0:
            what = "before any header"
        else:
            what = "in the header"
        return self._fail(Status.PROTOCOL_ERROR, f"stream truncated {what}", [])


# --- sender side ---------------------------------------------------------------------


class FileSender:
    """The sender's half: header bytes, SHA-256 over the data as it streams, the trailer,
    and the parser of the receiver's verdict.

    Use: header(); update(chunk) for every chunk before giving it to the stream;
    trailer() once size bytes went through; receive(reverse-stream bytes) -> events.
    """

    def __init__(self, name: str, size: int):
        self.name = validate_name(name)  # raises BadName
        if not 0 <= size <= MAX_SIZE:
            raise ValueError(f"size {size} out of range")
        self.size = size
        self.bytes_hashed = 0
        self._hash = hashlib.sha256()
        self._digest: bytes | None = None
        self._acc = bytearray()
        self._msg_len: int | None = None
        self.verdict: Verdict | None = None
        self.failure: ProtocolFailure | None = None

    def header(self) -> bytes:
        return encode_header(self.name, self.size)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        n = len(chunk)
        if self.bytes_hashed + n > self.size:
            raise ValueError(f"more than the announced {self.size} bytes")
        self._hash.update(chunk)
        self.bytes_hashed += n

    def trailer(self) -> bytes:
        if self.bytes_hashed != self.size:
            raise ValueError(f"trailer after {self.bytes_hashed} of {self.size} bytes")
        if self._digest is None:
            self._digest = self._hash.digest()
        return self._digest

    @property
    def digest(self) -> bytes | None:
        return self._digest

    @property
    def hexdigest(self) -> str | None:
        return self._digest.hex() if self._digest is not None else None

    def receive(self, chunk: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes of the reverse stream; yields one VerdictReceived, or a ProtocolFailure."""
        out: list[Event] = []
        if self.failure is not None or not len(chunk):
            return out
        if self.verdict is not None:
            self.failure = ProtocolFailure(Status.PROTOCOL_ERROR, "bytes after the verdict")
            out.append(self.failure)
            return out
        self._acc += chunk
        if self._msg_len is None and len(self._acc) >= _VERDICT_HEAD.size:
            self._msg_len = _VERDICT_HEAD.unpack_from(self._acc)[1]
            if self._msg_len > MAX_MESSAGE_BYTES:  # a verdict is short: bound what we wait for
                self.failure = ProtocolFailure(
                    Status.PROTOCOL_ERROR,
                    f"a verdict message of {self._msg_len} bytes (at most {MAX_MESSAGE_BYTES})",
                )
                out.append(self.failure)
                return out
        if self._msg_len is not None:
            total = _VERDICT_HEAD.size + self._msg_len
            if len(self._acc) >= total:
                status = self._acc[0]
                msg = bytes(self._acc[_VERDICT_HEAD.size : total]).decode("utf-8", "replace")
                try:
                    status = Status(status)
                except ValueError:
                    pass
                self.verdict = Verdict(status, msg)
                out.append(VerdictReceived(self.verdict))
                if len(self._acc) > total:
                    self.failure = ProtocolFailure(Status.PROTOCOL_ERROR, "bytes after the verdict")
                    out.append(self.failure)
                self._acc = bytearray()
        return out

    def end_of_stream(self) -> list[Event]:
        """The receiver closed its direction: a failure unless a whole verdict came first."""
        if self.verdict is not None or self.failure is not None:
            return []
        if self._acc:
            msg = "the receiver's verdict was truncated"
        else:
            msg = "the receiver closed the connection without a verdict"
        self.failure = ProtocolFailure(Status.PROTOCOL_ERROR, msg)
        return [self.failure]
