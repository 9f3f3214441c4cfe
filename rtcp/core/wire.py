"""The wire format: one fixed header, TLV options, a CRC-32 over everything.

Every rtcp datagram is exactly one segment:

     0               1               2               3
     0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
    +---------------+---------------+-------------------------------+
    |    version    |     flags     |        receive window         |  0
    +---------------+---------------+-------------------------------+
    |                  source connection id                         |  4
    +---------------------------------------------------------------+
    |               destination connection id                       |  8
    +---------------------------------------------------------------+
    |                     sequence number                           | 12
    +---------------------------------------------------------------+
    |                  acknowledgement number                       | 16
    +-------------------------------+-------------------------------+
    |        options length         |           reserved            | 20
    +-------------------------------+-------------------------------+
    |                 CRC-32 (header, options, payload)             | 24
    +---------------------------------------------------------------+
    |  options (TLV: kind, length, value) ...  |  payload ...        | 28
    +---------------------------------------------------------------+

The checksum is zlib's CRC-32 computed over bytes 0..23 then 28..end (the checksum
field itself is left out), so it is computed in C over memoryviews without a copy.
A segment that fails it is dropped and counted, never acknowledged.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 1

# Flag bits, TCP's values where TCP has them.
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
PROBE = 0x20  # a path-MTU probe: the payload is padding, it occupies no sequence space
# A listener under a SYN flood answers a SYN statelessly with RETRY and a token (QUIC's Retry,
# RFC 9000 8.1.2): seq 0, ack = the SYN's seq + 1, dst_id = the SYN's src_id, the token in an
# OPT_RETRY_TOKEN option. The client sends its SYN again with the token (rtcp/core/validation.py).
RETRY = 0x40

_FLAG_NAMES = (
    (SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (PSH, "PSH"), (ACK, "ACK"), (PROBE, "PROBE"),
    (RETRY, "RETRY"),
)

HEADER = struct.Struct("!BBHIIIIHHI")
HEADER_BYTES = HEADER.size  # 28
PREFIX = _PREFIX = struct.Struct("!BBHIIIIHH")  # everything before the checksum
CHECKSUM_OFFSET = _PREFIX.size  # 24
CHECKSUM = _CHECKSUM = struct.Struct("!I")
_IDS = struct.Struct("!xBxxII")  # flags, src_id, dst_id

# Option kinds (TCP's numbers where TCP has them).
OPT_END = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8
OPT_PMTU_ACK = 30  # rtcp's own: "your probe of N bytes arrived" (RFC 8899 probe confirmation)
# rtcp's own options carried as opaque bytes (Segment.extra_options, opt_bytes): any kind that
# has no field of its own. Their values are at most MAX_OPTION_VALUE_BYTES long.
OPT_RETRY_TOKEN = 31  # a listener's address-validation token (RETRY, and the SYN that echoes it)
OPT_PATH_CHALLENGE = 32  # 8 random bytes: "answer from the address you are at" (RFC 9000 8.2)
OPT_PATH_RESPONSE = 33  # the 8 bytes of a challenge, echoed
MAX_OPTION_VALUE_BYTES = 253
# Handshake options of packet protection (rtcp/core/protection.py), in the SYN and SYN-ACK.
OPT_KEY_SHARE = 40  # an ephemeral X25519 public key (32 bytes)
OPT_PAKE = 41  # a SPAKE2 message (--code)
OPT_KEY_PROOF = 42  # HMAC proving the key; always the last option of its segment
OPT_KEY_REJECTED = 43  # in a RST answering a SYN: the receiver did not accept the key
OPT_AEAD = 44  # protection's AEAD: the SYN's offer (ids, preferred first), the SYN-ACK's choice

# SACK blocks per segment. TCP fits 4 in its 40 bytes of options; rtcp's options have no such
# limit (the option's length byte allows 31), and with ACKs lost as well as data, 4 blocks
# dropped so much SACK information that ~30% of retransmissions at 5% loss were needless.
MAX_SACK_BLOCKS = 16
MAX_WSCALE = 14  # RFC 7323 2.3
MAX_DATAGRAM_BYTES = 65507  # largest UDP payload over IPv4

_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
_OPT_MSS = struct.Struct("!BBH")
_OPT_WSCALE = struct.Struct("!BBB")
_OPT_TS = struct.Struct("!BBII")


class WireError(ValueError):
    """The one exception decoding raises: the bytes are not a valid rtcp segment."""


class ChecksumError(WireError):
    """The CRC-32 does not match: the datagram was corrupted on the way."""


@dataclass(slots=True)
class Segment:
    """A decoded segment. Sequence numbers here are the 32-bit wire values."""

    flags: int
    src_id: int
    dst_id: int
    seq: int
    ack: int
    window: int
    payload: bytes = b""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    ts_val: int | None = None
    ts_ecr: int | None = None
    pmtu_ack: int | None = None
    extra_options: tuple[tuple[int, bytes], ...] = ()  # (kind, value) of kinds without a field

    def flag_names(self) -> str:
        return flag_names(self.flags)

    def option(self, kind: int) -> bytes | None:
        """The value of the first extra option of this kind, or None."""
        for k, value in self.extra_options:
            if k == kind:
                return value
        return None


def flag_names(flags: int) -> str:
    return "|".join(name for bit, name in _FLAG_NAMES if flags & bit) or "-"


# --- options -------------------------------------------------------------------------


def opt_mss(mss: int) -> bytes:
    return _OPT_MSS.pack(OPT_MSS, 4, mss)


def opt_wscale(shift: int) -> bytes:
    return _OPT_WSCALE.pack(OPT_WSCALE, 3, shift)


def opt_sack_permitted() -> bytes:
    return bytes((OPT_SACK_PERMITTED, 2))


def opt_sack(blocks) -> bytes:
    """SACK blocks as (left, right) 32-bit wire sequence numbers, right exclusive (RFC 2018)."""
    blocks = list(blocks)[:MAX_SACK_BLOCKS]
    if not blocks:
        return b""
    out = bytearray((OPT_SACK, 2 + 8 * len(blocks)))
    for left, right in blocks:
        out += _U32X2.pack(left, right)
    return bytes(out)


def opt_timestamps(ts_val: int, ts_ecr: int) -> bytes:
    return _OPT_TS.pack(OPT_TIMESTAMPS, 10, ts_val, ts_ecr)


def opt_pmtu_ack(size: int) -> bytes:
    return _OPT_MSS.pack(OPT_PMTU_ACK, 4, size)


def opt_bytes(kind: int, value: bytes) -> bytes:
    """A generic TLV option (kind, length, value): tokens, challenges, key shares."""
    if len(value) > MAX_OPTION_VALUE_BYTES:
        raise ValueError(f"option {kind}: {len(value)} bytes, at most {MAX_OPTION_VALUE_BYTES}")
    return bytes((kind, 2 + len(value))) + bytes(value)


TIMESTAMPS_OPTION_BYTES = 10


def _parse_options(seg: Segment, data, start: int, end: int) -> None:
    """Fill seg's option fields from the TLV bytes data[start:end]. Unknown kinds are skipped."""
    i = start
    while i < end:
        kind = data[i]
        if kind == OPT_END:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise WireError("option header truncated")
        length = data[i + 1]
        if length < 2 or i + length > end:
            raise WireError(f"option {kind} has bad length {length}")
        if kind == OPT_MSS and length == 4:
            seg.mss = _U16.unpack_from(data, i + 2)[0]
        elif kind == OPT_WSCALE and length == 3:
            seg.wscale = min(data[i + 2], MAX_WSCALE)
        elif kind == OPT_SACK_PERMITTED and length == 2:
            seg.sack_permitted = True
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise WireError(f"SACK option has bad length {length}")
            seg.sack_blocks = tuple(
                _U32X2.unpack_from(data, j) for j in range(i + 2, i + length, 8)
            )[:MAX_SACK_BLOCKS]
        elif kind == OPT_TIMESTAMPS and length == 10:
            seg.ts_val, seg.ts_ecr = _U32X2.unpack_from(data, i + 2)
        elif kind == OPT_PMTU_ACK and length == 4:
            seg.pmtu_ack = _U16.unpack_from(data, i + 2)[0]
        elif kind > OPT_PMTU_ACK:
            seg.extra_options += ((kind, bytes(data[i + 2 : i + length])),)
        i += length


def parse_options(seg: Segment, options: bytes) -> None:
    """Fill seg's option fields from encoded options (tracing what was sent)."""
    _parse_options(seg, options, 0, len(options))


def options_span(data) -> tuple[int, int]:
    """(start, end) of the options area of an encoded datagram (its header read unchecked)."""
    return HEADER_BYTES, HEADER_BYTES + _U16.unpack_from(data, 20)[0]


def find_option(data, kind: int) -> tuple[int, bytes] | None:
    """(offset of the option, its value) for the first option of `kind` in an encoded datagram,
    or None. Generic TLV walk for options the core does not interpret (handshake extensions)."""
    if len(data) < HEADER_BYTES:
        return None
    i, end = options_span(data)
    end = min(end, len(data))
    while i < end:
        k = data[i]
        if k == OPT_END:
            return None
        if k == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = data[i + 1]
        if length < 2 or i + length > end:
            return None
        if k == kind:
            return i, bytes(data[i + 2 : i + length])
        i += length
    return None


def opt_generic(kind: int, value: bytes) -> bytes:
    """One TLV option; the value holds at most 253 bytes (the length byte counts the header)."""
    if len(value) > 253:
        raise ValueError(f"option {kind}: {len(value)} bytes do not fit one option")
    return bytes((kind, 2 + len(value))) + value


def append_options(data, options: bytes) -> bytes:
    """The datagram with `options` added after its own (before the payload), the options length
    and the CRC-32 updated."""
    start, end = options_span(data)
    head = bytearray(data[:CHECKSUM_OFFSET])
    struct.pack_into("!H", head, 20, end - start + len(options))
    rest = (bytes(data[start:end]), options, bytes(data[end:]))
    crc = zlib.crc32(b"".join(rest), zlib.crc32(head))
    return b"".join((bytes(head), _CHECKSUM.pack(crc), *rest))


def with_checksum(data) -> bytes:
    """The datagram with its CRC-32 recomputed (after a layer rewrote some of its bytes)."""
    view = memoryview(data)
    crc = zlib.crc32(view[HEADER_BYTES:], zlib.crc32(view[:CHECKSUM_OFFSET]))
    return b"".join((bytes(view[:CHECKSUM_OFFSET]), _CHECKSUM.pack(crc), view[HEADER_BYTES:]))


# --- segments ------------------------------------------------------------------------


def build(
    flags: int,
    src_id: int,
    dst_id: int,
    seq: int,
    ack: int,
    window: int,
    options: bytes = b"",
    payload=b"",
) -> bytes:
    """Encode one datagram from its fields; the fast path that the connection uses."""
    prefix = _PREFIX.pack(VERSION, flags, window, src_id, dst_id, seq, ack, len(options), 0)
    crc = zlib.crc32(payload, zlib.crc32(options, zlib.crc32(prefix)))
    return b"".join((prefix, _CHECKSUM.pack(crc), options, payload))


def encode(seg: Segment) -> bytes:
    """Encode a Segment (tests, tools); options in a canonical order."""
    opts = b""
    if seg.mss is not None:
        opts += opt_mss(seg.mss)
    if seg.wscale is not None:
        opts += opt_wscale(seg.wscale)
    if seg.sack_permitted:
        opts += opt_sack_permitted()
    if seg.ts_val is not None:
        opts += opt_timestamps(seg.ts_val, seg.ts_ecr or 0)
    if seg.sack_blocks:
        opts += opt_sack(seg.sack_blocks)
    if seg.pmtu_ack is not None:
        opts += opt_pmtu_ack(seg.pmtu_ack)
    for kind, value in seg.extra_options:
        opts += opt_bytes(kind, value)
    return build(seg.flags, seg.src_id, seg.dst_id, seg.seq, seg.ack, seg.window, opts, seg.payload)


def decode(data, verify_checksum: bool = True) -> Segment:
    """Decode one datagram (bytes, bytearray or memoryview). Raises only WireError.
    verify_checksum=False: a layer below already authenticated it (packet protection)."""
    n = len(data)
    if n < HEADER_BYTES:
        raise WireError(f"datagram of {n} bytes is shorter than the {HEADER_BYTES}-byte header")
    if n > MAX_DATAGRAM_BYTES:
        raise WireError(f"datagram of {n} bytes is longer than any UDP payload")
    version, flags, window, src_id, dst_id, seq, ack, opt_len, _reserved, checksum = (
        HEADER.unpack_from(data)
    )
    # The CRC first: it covers every field, so a flipped version or options-length bit is
    # reported (and counted) as corruption, not as a malformed datagram.
    view = memoryview(data)
    if verify_checksum and checksum != zlib.crc32(
        view[HEADER_BYTES:], zlib.crc32(view[:CHECKSUM_OFFSET])
    ):
        raise ChecksumError("checksum mismatch")
    if version != VERSION:
        raise WireError(f"unknown version {version}")
    body = HEADER_BYTES + opt_len
    if body > n:
        raise WireError("options run past the end of the datagram")
    seg = Segment(flags, src_id, dst_id, seq, ack, window, bytes(view[body:]))
    if opt_len == 10 and data[HEADER_BYTES] == OPT_TIMESTAMPS and data[HEADER_BYTES + 1] == 10:
        seg.ts_val, seg.ts_ecr = _U32X2.unpack_from(data, HEADER_BYTES + 2)  # the common case
    elif opt_len:
        _parse_options(seg, view, HEADER_BYTES, body)
    return seg


def peek_ids(data) -> tuple[int, int, int] | None:
    """(flags, src_id, dst_id) without a full decode, for demultiplexing; None if too short."""
    if len(data) < HEADER_BYTES:
        return None
    return _IDS.unpack_from(data)
