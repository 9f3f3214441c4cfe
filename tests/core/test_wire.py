"""The segment codec (rtcp/core/wire.py): round trips, options, corruption, truncation, fuzzing,
peek_ids, and the README's "Wire format" section checked against the codec's own diagram."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcp.core import wire
from rtcp.core.wire import (
    ACK,
    CHECKSUM_OFFSET,
    FIN,
    HEADER_BYTES,
    PSH,
    RST,
    SYN,
    ChecksumError,
    Segment,
    WireError,
    decode,
    encode,
    peek_ids,
)

README = Path(__file__).resolve().parents[2] / "README.md"

U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 2**16 - 1)


def seg(**kw) -> Segment:
    base = {"flags": ACK, "src_id": 0x11223344, "dst_id": 0x55667788, "seq": 1000, "ack": 2000, "window": 512}
    base.update(kw)
    return Segment(**base)


def with_options(opts: bytes, payload: bytes = b"", **kw) -> bytes:
    """A datagram with hand-written option bytes and a correct checksum."""
    s = seg(**kw)
    return wire.build(s.flags, s.src_id, s.dst_id, s.seq, s.ack, s.window, opts, payload)


# --- round trips ---------------------------------------------------------------------------


class TestRoundTrip:
    def test_header_is_28_bytes(self):
        assert HEADER_BYTES == 28
        assert CHECKSUM_OFFSET == 24
        assert len(encode(seg())) == 28

    def test_every_header_field(self):
        s = seg(flags=SYN | ACK | FIN | RST | PSH, src_id=1, dst_id=2**32 - 1, seq=2**32 - 1,
                ack=0, window=0xFFFF, payload=b"hello")
        assert decode(encode(s)) == s

    def test_header_layout_is_big_endian(self):
        d = encode(seg(flags=SYN, src_id=0x01020304, dst_id=0x05060708, seq=0x090A0B0C,
                       ack=0x0D0E0F10, window=0x1112))
        assert d[0] == wire.VERSION
        assert d[1] == SYN
        assert d[2:4] == b"\x11\x12"
        assert d[4:8] == bytes([1, 2, 3, 4])
        assert d[8:12] == bytes([5, 6, 7, 8])
        assert d[12:16] == bytes([9, 10, 11, 12])
        assert d[16:20] == bytes([13, 14, 15, 16])
        assert d[20:22] == b"\x00\x00"  # no options
        assert d[22:24] == b"\x00\x00"  # reserved
        assert struct.unpack("!I", d[24:28])[0] == zlib.crc32(d[:24] + d[28:])

    @pytest.mark.parametrize("mss", [0, 1, 536, 1362, 65535])
    def test_mss(self, mss):
        d = encode(seg(flags=SYN, mss=mss))
        assert d[28:32] == bytes([wire.OPT_MSS, 4]) + mss.to_bytes(2, "big")
        assert decode(d).mss == mss

    @pytest.mark.parametrize("shift", range(15))
    def test_window_scale(self, shift):
        d = encode(seg(flags=SYN, wscale=shift))
        assert d[28:31] == bytes([wire.OPT_WSCALE, 3, shift])
        assert decode(d).wscale == shift

    def test_window_scale_above_14_is_clamped(self):
        # RFC 7323 2.3: a shift above 14 is treated as 14.
        assert decode(with_options(wire.opt_wscale(15))).wscale == 14
        assert decode(with_options(wire.opt_wscale(255))).wscale == 14

    def test_sack_permitted(self):
        d = encode(seg(flags=SYN, sack_permitted=True))
        assert d[28:30] == bytes([wire.OPT_SACK_PERMITTED, 2])
        assert decode(d).sack_permitted is True
        assert decode(encode(seg())).sack_permitted is False

    @pytest.mark.parametrize("n", [1, 2, 3, 4])
    def test_sack_blocks(self, n):
        blocks = tuple((i * 1000, i * 1000 + 500) for i in range(1, n + 1))
        d = encode(seg(sack_blocks=blocks))
        assert len(d) == 28 + 2 + 8 * n
        assert decode(d).sack_blocks == blocks

    def test_sack_blocks_across_wrap(self):
        blocks = ((2**32 - 100, 50), (2**32 - 1, 0))
        assert decode(encode(seg(sack_blocks=blocks))).sack_blocks == blocks

    def test_more_than_max_sack_blocks_are_cut_to_the_max(self):
        n = wire.MAX_SACK_BLOCKS
        assert n == 16
        blocks = tuple((i, i + 1) for i in range(0, 2 * (n + 3), 2))
        assert decode(encode(seg(sack_blocks=blocks))).sack_blocks == blocks[:n]
        # a received option with more blocks than that: the first n are kept, nothing fails
        raw = bytes([wire.OPT_SACK, 2 + 8 * (n + 1)]) + b"".join(
            struct.pack("!II", i, i + 1) for i in range(n + 1)
        )
        assert decode(with_options(raw)).sack_blocks == tuple((i, i + 1) for i in range(n))

    def test_empty_sack_emits_nothing(self):
        assert wire.opt_sack([]) == b""

    def test_timestamps(self):
        d = encode(seg(ts_val=0xDEADBEEF, ts_ecr=0x01020304))
        assert d[28:38] == bytes([wire.OPT_TIMESTAMPS, 10]) + bytes.fromhex("DEADBEEF01020304")
        got = decode(d)
        assert (got.ts_val, got.ts_ecr) == (0xDEADBEEF, 0x01020304)

    def test_all_options_together(self):
        s = seg(flags=SYN | ACK, mss=1362, wscale=7, sack_permitted=True, ts_val=5, ts_ecr=6,
                sack_blocks=((10, 20), (30, 40), (50, 60), (70, 80)), payload=b"x" * 100)
        d = encode(s)
        assert struct.unpack_from("!H", d, 20)[0] == 4 + 3 + 2 + 10 + 34
        assert decode(d) == s

    def test_decode_accepts_bytearray_and_memoryview(self):
        s = seg(payload=b"abc", ts_val=1, ts_ecr=2, sack_blocks=((1, 2),))
        d = encode(s)
        assert decode(bytearray(d)) == s
        assert decode(memoryview(d)) == s
        assert isinstance(decode(memoryview(d)).payload, bytes)

    def test_build_equals_encode(self):
        opts = wire.opt_mss(1000) + wire.opt_timestamps(7, 8)
        assert wire.build(SYN, 1, 2, 3, 4, 5, opts, b"p") == encode(
            Segment(SYN, 1, 2, 3, 4, 5, b"p", mss=1000, ts_val=7, ts_ecr=8)
        )

    def test_flag_names(self):
        assert wire.flag_names(SYN | ACK) == "SYN|ACK"
        assert wire.flag_names(0) == "-"
        assert seg(flags=FIN | ACK).flag_names() == "FIN|ACK"

    @settings(max_examples=200, deadline=None)
    @given(
        flags=st.integers(0, 255), src=U32, dst=U32, seq=U32, ack=U32, window=U16,
        payload=st.binary(max_size=300),
        mss=st.none() | U16, wscale=st.none() | st.integers(0, 14), sack_ok=st.booleans(),
        blocks=st.lists(st.tuples(U32, U32), max_size=4).map(tuple),
        ts=st.none() | st.tuples(U32, U32),
    )
    def test_round_trip_property(self, flags, src, dst, seq, ack, window, payload, mss, wscale,
                                 sack_ok, blocks, ts):
        s = Segment(flags, src, dst, seq, ack, window, payload, mss=mss, wscale=wscale,
                    sack_permitted=sack_ok, sack_blocks=blocks,
                    ts_val=ts[0] if ts else None, ts_ecr=ts[1] if ts else None)
        assert decode(encode(s)) == s


# --- option parsing ------------------------------------------------------------------------


class TestOptions:
    def test_unknown_kinds_are_skipped(self):
        opts = bytes([99, 6, 1, 2, 3, 4]) + wire.opt_mss(900) + bytes([200, 2]) + wire.opt_wscale(3)
        got = decode(with_options(opts, b"data"))
        assert (got.mss, got.wscale, got.payload) == (900, 3, b"data")

    def test_known_kind_with_wrong_length_is_skipped(self):
        # an MSS of length 5 is not an MSS this codec knows: skipped by its length, not fatal
        opts = bytes([wire.OPT_MSS, 5, 1, 2, 3]) + wire.opt_sack_permitted()
        got = decode(with_options(opts))
        assert got.mss is None and got.sack_permitted

    def test_nop_padding(self):
        opts = bytes([wire.OPT_NOP] * 3) + wire.opt_mss(1200) + bytes([wire.OPT_NOP])
        opts += wire.opt_timestamps(1, 2)
        got = decode(with_options(opts))
        assert (got.mss, got.ts_val, got.ts_ecr) == (1200, 1, 2)

    def test_end_stops_parsing(self):
        # everything after END is ignored, even bytes that would not parse
        opts = wire.opt_mss(1000) + bytes([wire.OPT_END]) + bytes([wire.OPT_WSCALE, 3, 5, 77, 200])
        got = decode(with_options(opts, b"pay"))
        assert got.mss == 1000 and got.wscale is None
        assert got.payload == b"pay"  # options length, not END, says where the payload starts

    def test_only_end(self):
        got = decode(with_options(bytes([wire.OPT_END, 0, 0, 0])))
        assert got.mss is None and got.sack_blocks == ()

    @pytest.mark.parametrize(
        "opts",
        [
            bytes([wire.OPT_MSS]),  # kind without length byte
            bytes([wire.OPT_MSS, 4, 0]),  # runs past the options area
            bytes([wire.OPT_MSS, 1, 0, 0]),  # length below 2
            bytes([wire.OPT_MSS, 0, 0, 0]),  # length 0 would loop forever
            bytes([99, 9, 0, 0]),  # unknown kind running past the end
            bytes([wire.OPT_SACK, 2]),  # SACK with no block
            bytes([wire.OPT_SACK, 7, 0, 0, 0, 0, 0]),  # SACK not a multiple of 8
        ],
    )
    def test_malformed_options(self, opts):
        with pytest.raises(WireError):
            decode(with_options(opts, b"payload after"))

    def test_options_length_past_end(self):
        d = bytearray(encode(seg(payload=b"abcd")))
        struct.pack_into("!H", d, 20, 5)  # claims 5 option bytes; only 4 bytes follow
        _fix_crc(d)
        with pytest.raises(WireError):
            decode(bytes(d))

    def test_options_length_covering_payload(self):
        # opt_len equal to the whole rest: the "payload" is parsed as options, no payload left
        d = bytearray(with_options(b"", payload=wire.opt_mss(777)))
        struct.pack_into("!H", d, 20, 4)
        _fix_crc(d)
        got = decode(bytes(d))
        assert got.mss == 777 and got.payload == b""


def _fix_crc(d: bytearray) -> None:
    crc = zlib.crc32(d[28:], zlib.crc32(d[:24]))
    struct.pack_into("!I", d, 24, crc)


# --- corruption, truncation, version ---------------------------------------------------------


SAMPLE = encode(
    seg(flags=SYN | ACK, mss=1362, wscale=7, sack_permitted=True, ts_val=1, ts_ecr=2,
        sack_blocks=((5, 9),), payload=bytes(range(40)))
)


class TestCorruption:
    def test_every_single_bit_flip_is_a_checksum_error(self):
        # Every bit of the datagram is covered by the CRC-32 (the CRC field itself by
        # comparison), and CRC-32 detects every single-bit error. The check must come before
        # any field is trusted, so a flipped version or options-length bit is counted as a
        # checksum failure too, not as malformed.
        for bit in range(len(SAMPLE) * 8):
            d = bytearray(SAMPLE)
            d[bit >> 3] ^= 1 << (bit & 7)
            with pytest.raises(ChecksumError):
                decode(bytes(d))

    def test_checksum_error_is_a_wire_error(self):
        assert issubclass(ChecksumError, WireError)
        assert issubclass(WireError, ValueError)

    @settings(max_examples=100, deadline=None)
    @given(st.data())
    def test_two_bit_flips_detected(self, data):
        n = len(SAMPLE) * 8
        a = data.draw(st.integers(0, n - 1))
        b = data.draw(st.integers(0, n - 1).filter(lambda x: x != a))
        d = bytearray(SAMPLE)
        for bit in (a, b):
            d[bit >> 3] ^= 1 << (bit & 7)
        with pytest.raises(WireError):
            decode(bytes(d))

    def test_truncation(self):
        for n in range(len(SAMPLE)):
            with pytest.raises(WireError):
                decode(SAMPLE[:n])

    def test_extension_detected(self):
        with pytest.raises(ChecksumError):
            decode(SAMPLE + b"\x00")

    def test_too_long(self):
        with pytest.raises(WireError):
            decode(with_options(b"", payload=bytes(wire.MAX_DATAGRAM_BYTES)))

    def test_max_length_ok(self):
        big = with_options(b"", payload=bytes(wire.MAX_DATAGRAM_BYTES - HEADER_BYTES))
        assert len(decode(big).payload) == wire.MAX_DATAGRAM_BYTES - HEADER_BYTES

    @pytest.mark.parametrize("version", [0, 2, 255])
    def test_bad_version(self, version):
        d = bytearray(SAMPLE)
        d[0] = version
        _fix_crc(d)  # a well-formed datagram of another version: still rejected
        with pytest.raises(WireError) as info:
            decode(bytes(d))
        assert not isinstance(info.value, ChecksumError)

    def test_reserved_is_ignored(self):
        d = bytearray(SAMPLE)
        d[22:24] = b"\xab\xcd"
        _fix_crc(d)
        assert decode(bytes(d)) == decode(SAMPLE)


# --- fuzzing: decode returns a Segment or raises WireError, nothing else ------------------------


def _decode_total(data) -> None:
    try:
        got = decode(data)
    except WireError:
        return
    assert isinstance(got, Segment)
    assert len(got.sack_blocks) <= wire.MAX_SACK_BLOCKS
    assert got.wscale is None or 0 <= got.wscale <= wire.MAX_WSCALE


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, data):
        _decode_total(data)

    @settings(max_examples=300, deadline=None)
    @given(
        head=st.binary(min_size=24, max_size=24),
        opt_len=st.integers(0, 80),
        rest=st.binary(max_size=120),
        version_ok=st.booleans(),
    )
    def test_arbitrary_bytes_with_valid_crc(self, head, opt_len, rest, version_ok):
        # With a valid checksum the decoder reaches the option parser: arbitrary option bytes
        # (and option lengths past the datagram) must still end in a Segment or a WireError.
        d = bytearray(head + b"\0\0\0\0" + rest)
        if version_ok:
            d[0] = wire.VERSION
        struct.pack_into("!H", d, 20, opt_len)
        _fix_crc(d)
        _decode_total(bytes(d))
        _decode_total(memoryview(bytes(d)))

    @settings(max_examples=300, deadline=None)
    @given(opts=st.binary(max_size=60), payload=st.binary(max_size=20))
    def test_arbitrary_options(self, opts, payload):
        _decode_total(with_options(opts, payload))

    @settings(max_examples=200, deadline=None)
    @given(
        opts=st.lists(
            st.sampled_from([
                wire.opt_mss(1000), wire.opt_wscale(5), wire.opt_sack_permitted(),
                wire.opt_timestamps(3, 4), wire.opt_sack([(1, 2), (3, 4)]), bytes([1]),
                bytes([77, 3, 0]),
            ]),
            max_size=8,
        )
    )
    def test_valid_option_sequences_parse(self, opts):
        got = decode(with_options(b"".join(opts), b"zz"))
        assert got.payload == b"zz"
        if wire.opt_mss(1000) in opts:
            assert got.mss == 1000


# --- peek_ids ------------------------------------------------------------------------------


class TestPeekIds:
    def test_peek(self):
        d = encode(seg(flags=SYN, src_id=0xAABBCCDD, dst_id=0, payload=b"x"))
        assert peek_ids(d) == (SYN, 0xAABBCCDD, 0)
        assert peek_ids(memoryview(d)) == (SYN, 0xAABBCCDD, 0)

    def test_peek_does_not_check_checksum(self):
        d = bytearray(encode(seg(flags=ACK, src_id=7, dst_id=9)))
        d[-1] ^= 0xFF
        assert peek_ids(bytes(d)) == (ACK, 7, 9)

    def test_too_short(self):
        d = encode(seg())
        assert peek_ids(d[:27]) is None
        assert peek_ids(b"") is None
        assert peek_ids(d[:28]) is not None

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=60))
    def test_peek_total(self, data):
        got = peek_ids(data)
        if len(data) < HEADER_BYTES:
            assert got is None
        else:
            assert got == (data[1], *struct.unpack_from("!II", data, 4))


# --- README agrees with the codec ----------------------------------------------------------


def _diagram_fields() -> list[tuple[str, int, int]]:
    """(name, byte offset, size) of each header field, parsed from wire.py's docstring."""
    lines = wire.__doc__.splitlines()
    fields = []
    for line in lines:
        m = re.match(r"^(\s*)\|(.*)\|\s+(\d+)\s*$", line)
        if not m:
            continue
        row = int(m.group(3))
        if row >= HEADER_BYTES:
            continue  # the options/payload row
        origin = len(m.group(1))  # column of the row's first "|"
        for cell in re.finditer(r"[^|]+", line[origin + 1: line.rindex("|")]):
            start = cell.start() // 16  # 16 columns per byte in the bit ruler
            size = (cell.end() + 1) // 16 - start
            name = cell.group().strip().split(" (")[0]
            fields.append((name, row + start, size))
    return fields


def test_diagram_agrees_with_struct():
    fields = _diagram_fields()
    names = [f[0] for f in fields]
    assert names == [
        "version", "flags", "receive window", "source connection id",
        "destination connection id", "sequence number", "acknowledgement number",
        "options length", "reserved", "CRC-32",
    ]
    sizes = [struct.calcsize("!" + c) for c in wire.HEADER.format.lstrip("!")]
    assert [f[2] for f in fields] == sizes
    offsets = [f[1] for f in fields]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert {n: o for n, o, _ in fields}["CRC-32"] == CHECKSUM_OFFSET
    assert sum(sizes) == HEADER_BYTES


def test_readme_wire_format_matches_codec():
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    m = re.search(r"^## Wire format\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    if m is None:
        pytest.skip("README.md has no '## Wire format' section yet")
    section = m.group(1)
    assert str(HEADER_BYTES) in section
    assert "HEADER_BYTES" in section
    # the byte diagram, verbatim from the wire.py docstring
    diagram = [ln.rstrip() for ln in wire.__doc__.splitlines() if ln.strip().startswith(("+", "|"))]
    readme_lines = [ln.rstrip() for ln in section.splitlines()]
    for ln in diagram:
        assert ln in readme_lines, f"diagram line missing from README: {ln!r}"
    # each field with its offset, in the field table
    rows = {}
    for ln in section.splitlines():
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows[cells[2].lower()] = (int(cells[0]), cells[1])
    for name, offset, size in _diagram_fields():
        assert name.lower() in rows, f"README field table has no row for {name!r}"
        assert rows[name.lower()][0] == offset, f"README offset of {name!r}"
        assert rows[name.lower()][1] == str(size), f"README size of {name!r}"


@pytest.mark.skipif(not hasattr(wire, "opt_pmtu_ack"), reason="no path-MTU probe option")
def test_pmtu_ack_option_round_trip():
    s = seg(pmtu_ack=1400, ts_val=1, ts_ecr=2)
    assert decode(encode(s)) == s
    assert decode(with_options(wire.opt_pmtu_ack(65507))).pmtu_ack == 65507
    assert decode(encode(seg(flags=wire.PROBE | ACK, payload=bytes(100)))).flags == (
        wire.PROBE | ACK
    )
