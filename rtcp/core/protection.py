"""Packet protection: authenticated encryption of datagrams with a shared key or a code, sans-IO.

A layer between the UDP driver and the Connection: the driver hands every datagram it sends
through seal_all() and every datagram it receives through open(); the Connection builds and
parses plaintext segments exactly as without protection and never sees a cipher.

Handshake (Noise NNpsk0 / WireGuard style: an ephemeral X25519 exchange mixed with the shared
secret, so that a key stolen later does not decrypt an old capture), in SYN and SYN-ACK options:

    SYN      KEY_SHARE(e_c) [PAKE(msg_c)] AEAD(offer)   KEY_PROOF(HMAC(k_syn, SYN))  (PSK only)
    SYN-ACK  KEY_SHARE(e_s) [PAKE(msg_s)] AEAD(choice)  KEY_PROOF(HMAC(k_synack, SYN-ACK || e_c))

    secret   = the PSK (--psk-file), or the SPAKE2 key of the code (--code)
    k_syn    = HKDF-SHA-256(secret, "syn proof" || e_c)
    k_synack || k_c2s || k_s2c = HKDF-SHA-256(secret || X25519(e_c, e_s), "handshake" || e_c
                                              || e_s || msg_c || msg_s || offer || choice)

The AEAD: the sender offers AES-256-GCM first when its CPU has fast AES (fast_aes()), and the
receiver chooses it when it has fast AES too; else ChaCha20-Poly1305. Both are in the
derivation, so a rewritten offer or choice fails the handshake.

With a PSK the SYN proves the key before the receiver keeps anything for the peer; a SYN whose
share was seen before (a replayed capture) is refused as well. With a code, SPAKE2 needs the
round trip, so the receiver answers each new attempt (one online guess) and allows only
MAX_UNCONFIRMED_CODE_ATTEMPTS attempts that never proved the code.

Every later datagram is protected (version 2: ChaCha20-Poly1305, 3: AES-256-GCM):

    bytes 0..23   the header as in plaintext (ports-like ids, flags, seq, ack, window: readable)
    bytes 24..27  the packet number (where plaintext carries its CRC-32)
    28..          AEAD(key, nonce = 0^32 || pn as 64 bits,
                       options || payload, AAD = bytes 0..27) || 16-byte tag

The tag replaces the CRC-32. The nonce is the packet number, which grows by one per datagram
sent under a key and is never the TCP sequence number: a retransmission that re-packetizes the
same bytes gets a new number, so no nonce is ever used twice (RFC 8439 4, RFC 9001 5.3).
A datagram whose tag fails, or whose packet number was seen (or is older than the replay
window), is dropped and counted; it never reaches the Connection.
"""

from __future__ import annotations

import functools
import hmac
import os
import secrets
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rtcp.core import wire
from rtcp.core.codewords import CODE_WORDS

PROTECTED_VERSION = 2  # a datagram sealed with ChaCha20-Poly1305
PROTECTED_AES_VERSION = 3  # the same, sealed with AES-256-GCM
PROTECTED_VERSIONS = (PROTECTED_VERSION, PROTECTED_AES_VERSION)
PLAINTEXT_VERSION = wire.VERSION
TAG_BYTES = 16
KEY_BYTES = 32
SHARE_BYTES = 32
PROOF_BYTES = 16
PAKE_MESSAGE_BYTES = 33
MAX_PACKET_NUMBER = 2**32 - 1  # the 32-bit field: the connection stops sealing after this many
REPLAY_WINDOW_PACKETS = 4096  # a packet number this far below the highest one is dropped
REPLAY_CACHE_SHARES = 16384  # client key shares remembered to refuse replayed SYNs (~0.5 MB)
MAX_UNCONFIRMED_CODE_ATTEMPTS = 3  # handshakes with a code that never proved it: then retired
CODE_WORDS_PER_CODE = 3
IN_PLACE_MIN_BYTES = 4096  # datagrams this large are sealed and opened in place (one buffer)

_LABEL = b"rtcp-v1 X25519 HKDF-SHA256 ChaCha20-Poly1305"
_PN = struct.Struct("!I")
_NONCE = struct.Struct("!IQ")
_RUN = struct.Struct("!BB6xI12xI")  # version, flags, dst_id, packet number: what open_run reads
_SEQ = struct.Struct("!I")
_FLAGS_OFFSET = 1
_SEQ_OFFSET = 12
_ACK_OFFSET = 16

# The AEADs (OPT_AEAD ids): the class (in cryptography.hazmat.primitives.ciphers.aead), and
# the version byte of the datagrams it seals.
AEAD_CHACHA20_POLY1305 = 0
AEAD_AES_256_GCM = 1
AEADS = {
    AEAD_CHACHA20_POLY1305: ("ChaCha20Poly1305", PROTECTED_VERSION),
    AEAD_AES_256_GCM: ("AESGCM", PROTECTED_AES_VERSION),
}
AEAD_BY_VERSION = {version: name for name, version in AEADS.values()}

# cryptography's primitives, bound by load_cryptography() when a key is first used: a
# plaintext transfer (every `rtcp send` and `rtcp recv` without a key; ClientProtection
# without a secret) never loads the library, about a tenth of their start-up's CPU time.
InvalidTag: Any = None
hashes: Any = None
X25519PrivateKey: Any = None
X25519PublicKey: Any = None
HKDF: Any = None
_AEAD_CLASSES: dict[str, Any] = {}  # AEADS' class names -> the classes


def load_cryptography() -> None:
    """Bind cryptography's primitives (once): the commands call it when they read a key, so
    that no transfer's clock runs while the library loads (about 30 ms of CPU)."""
    global InvalidTag, hashes, X25519PrivateKey, X25519PublicKey, HKDF
    if _AEAD_CLASSES:
        return
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers import aead
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    _AEAD_CLASSES.update({name: getattr(aead, name) for name, _ in AEADS.values()})
    # OpenSSL sets up its random generator and fetches X25519 on the first key made: about
    # 10 ms. Paid here, at start-up, rather than by the receiver's first SYN-ACK (it was the
    # most of the encrypted rows' lag behind plaintext in `rtcp bench` at 32 MB).
    X25519PrivateKey.generate()


_PLAIN_VERSION_BYTE = bytes((PLAINTEXT_VERSION,))
_NO_CRC = bytes(4)
_HEADER_BYTES = wire.HEADER_BYTES
_CHECKSUM_OFFSET = wire.CHECKSUM_OFFSET
_WINDOW_MASK = (1 << REPLAY_WINDOW_PACKETS) - 1

# Reasons carried by a KEY_REJECTED option (one byte), and the failures they give the sender.
REJECT_BAD_KEY = 0  # the proof did not match: another key or code
REJECT_KEY_REQUIRED = 1  # the receiver wants a key and the sender offered none
REJECT_CODE_RETIRED = 2  # the code was used up or retired after failed attempts

FAIL_REJECTED = "rejected"
FAIL_PEER_PLAINTEXT = "peer-plaintext"
FAIL_KEY_REQUIRED = "key-required"
FAILURE_MESSAGES = {
    FAIL_REJECTED: "the receiver did not accept our key (wrong --psk-file or --code)",
    FAIL_PEER_PLAINTEXT: (
        "the receiver uses no key (it runs without --psk-file or --code): "
        "not sending in the clear"
    ),
    FAIL_KEY_REQUIRED: "the receiver requires a key (use --psk-file or --code)",
}


class KeyFileError(ValueError):
    """A key file that cannot be used (missing, unreadable, not a key)."""


@dataclass(frozen=True)
class Secret:
    """What sender and receiver share: a 32-byte key (psk) or a short code phrase."""

    psk: bytes | None = None
    code: str | None = None

    def __post_init__(self):
        if (self.psk is None) == (self.code is None):
            raise ValueError("a Secret is a key or a code, exactly one of them")
        if self.psk is not None and len(self.psk) != KEY_BYTES:
            raise ValueError(f"a key has {KEY_BYTES} bytes")


@dataclass
class ProtectionStats:
    """Counters of one connection, or of a listener and every connection it accepted."""

    auth_failures: int = 0  # datagrams or handshakes that failed authentication: dropped
    replayed: int = 0  # protected datagrams with a packet number seen before: dropped
    replayed_handshakes: int = 0  # SYNs carrying a key share seen before: refused
    handshakes: int = 0  # handshakes that proved the key (the peer's first protected datagram)


# --- keys and codes --------------------------------------------------------------------------


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_file_text(key: bytes) -> str:
    return f"rtcp-psk-v1 {key.hex()}\n"


def write_key_file(path: str | os.PathLike, key: bytes) -> None:
    """Write a key file readable by its owner only (0600), refusing to replace a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_file_text(key))


def parse_key_text(text: str) -> bytes:
    parts = text.split()
    if len(parts) != 2 or parts[0] != "rtcp-psk-v1":
        raise KeyFileError("not an rtcp key file (make one with `rtcp keygen FILE`)")
    try:
        key = bytes.fromhex(parts[1])
    except ValueError:
        raise KeyFileError("the key is not hexadecimal") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"the key has {len(key)} bytes, not {KEY_BYTES}")
    return key


def read_key_file(path: str | os.PathLike) -> bytes:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(4096)
    except OSError as exc:
        raise KeyFileError(exc.strerror or str(exc)) from None
    return parse_key_text(text)


def generate_code() -> str:
    """A fresh one-time code such as 7-guitar-oxygen-banjo (a number, three words)."""
    words = [secrets.choice(CODE_WORDS) for _ in range(CODE_WORDS_PER_CODE)]
    return "-".join([str(secrets.randbelow(1000))] + words)


def normalize_code(code: str) -> str:
    """The code as both sides feed it to SPAKE2: trimmed, lower case; ValueError if malformed."""
    text = code.strip().lower()
    parts = text.split("-")
    if len(parts) != 1 + CODE_WORDS_PER_CODE or not parts[0].isdigit():
        raise ValueError("a code looks like 7-guitar-oxygen-banjo (a number and three words)")
    unknown = [w for w in parts[1:] if w not in CODE_WORDS]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a code word (check the spelling)")
    return text


# --- which AEAD ---------------------------------------------------------------------------


@functools.cache
def fast_aes() -> bool:
    """Whether this CPU has AES and carry-less multiply instructions (x86 AES-NI + PCLMULQDQ,
    ARMv8 AES + PMULL): with them AES-256-GCM costs 0.29 ms/MB at 64 KB against
    ChaCha20-Poly1305's 0.5 (1368 bytes: 0.99 against 1.43); without them AES runs several
    times slower than ChaCha20. Read from /proc/cpuinfo (Linux); elsewhere False."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpuinfo_has_fast_aes(f.read(1 << 20))
    except OSError:
        return False


def cpuinfo_has_fast_aes(text: str) -> bool:
    """fast_aes() from the text of /proc/cpuinfo (its first CPU's flags or Features line)."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            words = set(value.split())
            return "aes" in words and bool(words & {"pclmulqdq", "pmull"})
    return False


def aead_offer(fast: bool) -> bytes:
    """The SYN's OPT_AEAD: the ids the sender takes, the one it prefers first."""
    if fast:
        return bytes((AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305))
    return bytes((AEAD_CHACHA20_POLY1305, AEAD_AES_256_GCM))


def choose_aead(offer: bytes, fast: bool) -> int:
    """The receiver's choice: AES-256-GCM when both ends have fast AES (the sender put it
    first, the receiver has it too), else ChaCha20-Poly1305, which is fast everywhere."""
    if fast and offer[:1] == bytes((AEAD_AES_256_GCM,)):
        return AEAD_AES_256_GCM
    if AEAD_CHACHA20_POLY1305 in offer or not offer:
        return AEAD_CHACHA20_POLY1305
    return next((a for a in offer if a in AEADS), AEAD_CHACHA20_POLY1305)


# --- derivations ----------------------------------------------------------------------------


def _hkdf(ikm: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    load_cryptography()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_LABEL, info=info).derive(ikm)


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")[:PROOF_BYTES]


def _syn_proof_key(psk: bytes, share: bytes) -> bytes:
    return _hkdf(psk, b"syn proof" + share)


def _handshake_keys(secret: bytes, dh: bytes, transcript: bytes) -> tuple[bytes, bytes, bytes]:
    """(k_synack, k_c2s, k_s2c)."""
    out = _hkdf(secret + dh, b"handshake" + transcript, 3 * KEY_BYTES)
    return out[:KEY_BYTES], out[KEY_BYTES : 2 * KEY_BYTES], out[2 * KEY_BYTES :]


def _proof_message(data, proof_offset: int, extra: bytes = b"") -> bytes:
    """What a KEY_PROOF covers: the datagram without its CRC-32 and without the proof option
    (the last option), then `extra`."""
    return b"".join((
        bytes(data[: wire.CHECKSUM_OFFSET]),
        bytes(data[wire.HEADER_BYTES : proof_offset]),
        bytes(data[proof_offset + 2 + PROOF_BYTES :]),
        extra,
    ))


def _add_proof(data: bytes, options: bytes, key: bytes, extra: bytes = b"") -> bytes:
    """data with `options` then a KEY_PROOF over the result appended to its options."""
    placeholder = wire.opt_generic(wire.OPT_KEY_PROOF, bytes(PROOF_BYTES))
    out = bytearray(wire.append_options(data, options + placeholder))
    offset = wire.options_span(out)[1] - len(placeholder)
    out[offset + 2 : offset + 2 + PROOF_BYTES] = _mac(key, _proof_message(out, offset, extra))
    return wire.with_checksum(out)


def _check_proof(data, key: bytes, extra: bytes = b"") -> bool:
    found = wire.find_option(data, wire.OPT_KEY_PROOF)
    if found is None or len(found[1]) != PROOF_BYTES:
        return False
    offset, proof = found
    if offset + 2 + PROOF_BYTES != wire.options_span(data)[1]:
        return False  # the proof must be the last option: nothing after it goes unproven
    return hmac.compare_digest(proof, _mac(key, _proof_message(data, offset, extra)))


def _option(data, kind: int, size: int) -> bytes | None:
    found = wire.find_option(data, kind)
    if found is None or len(found[1]) != size:
        return None
    return found[1]


def _is_plain_segment(data) -> bool:
    return len(data) >= wire.HEADER_BYTES and data[0] == PLAINTEXT_VERSION


def _crc_ok(data) -> bool:
    view = memoryview(data)
    crc = zlib.crc32(view[wire.HEADER_BYTES :], zlib.crc32(view[: wire.CHECKSUM_OFFSET]))
    return crc == _PN.unpack_from(data, wire.CHECKSUM_OFFSET)[0]


def reject_reply(syn, reason: int) -> bytes | None:
    """The RST that answers a SYN whose key the receiver did not accept (RFC 9293 3.10.7.1's
    reply to a SYN, plus a KEY_REJECTED option): smaller than the SYN, sent once per SYN,
    and it holds no state."""
    if not _is_plain_segment(syn):
        return None
    _flags, src_id, dst_id = wire.peek_ids(syn)
    ack = (_SEQ.unpack_from(syn, _SEQ_OFFSET)[0] + 1) & 0xFFFFFFFF
    option = wire.opt_generic(wire.OPT_KEY_REJECTED, bytes((reason,)))
    return wire.build(wire.RST | wire.ACK, dst_id, src_id, 0, ack, 0, option)


# --- the datagram cipher ----------------------------------------------------------------------


class PacketCipher:
    """Seals and opens protected datagrams once the handshake has given both keys.

    Datagrams go through in batches (one loop per batch, its lookups done once: behind
    --mtu 1400 a batch holds dozens). A large datagram is sealed and opened in place: the AEAD
    writes behind the header in one new buffer (encrypt_into / decrypt_into), where joining
    the header to the AEAD's own output would allocate and copy 64 KB once more; below
    IN_PLACE_MIN_BYTES the bytearray and its views cost more than that copy."""

    def __init__(
        self, send_key: bytes, recv_key: bytes, stats: ProtectionStats,
        aead: int = AEAD_CHACHA20_POLY1305,
    ):
        load_cryptography()
        name, self.version = AEADS[aead]
        cls = _AEAD_CLASSES[name]
        self.aead = aead
        self._seal = cls(send_key)
        self._open = cls(recv_key)
        self._version_byte = bytes((self.version,))
        self.send_key, self.recv_key = send_key, recv_key
        self.stats = stats
        self.next_pn = 0
        self._top = -1  # highest packet number opened
        self._seen = 0  # bit i: packet number top - i was opened

    def seal(self, data) -> bytes | bytearray | None:
        """The protected form of a plaintext datagram; None once packet numbers ran out."""
        out: list = []
        self.seal_into((data,), out)
        return out[0] if out else None

    def seal_into(self, datagrams, out: list) -> None:
        """seal() of every datagram, appended to out (those beyond the last packet number
        are not: the connection then stops sending)."""
        pn = self.next_pn
        encrypt, encrypt_into = self._seal.encrypt, self._seal.encrypt_into
        join, pack_pn, pack_nonce = b"".join, _PN.pack, _NONCE.pack
        version, tag, hb, co = self._version_byte, TAG_BYTES, _HEADER_BYTES, _CHECKSUM_OFFSET
        append = out.append
        for data in datagrams:
            if pn > MAX_PACKET_NUMBER:
                break
            view = memoryview(data)
            header = join((version, view[1:co], pack_pn(pn)))
            size = len(view)
            if size < IN_PLACE_MIN_BYTES:
                append(header + encrypt(pack_nonce(0, pn), view[hb:], header))
            else:
                sealed = bytearray(size + tag)
                sealed[:hb] = header
                encrypt_into(pack_nonce(0, pn), view[hb:], header, memoryview(sealed)[hb:])
                append(sealed)
            pn += 1
        self.next_pn = pn

    def open(self, data) -> bytes | bytearray | None:
        """The plaintext datagram, or None. Its CRC-32 field holds 0: the tag authenticated
        it, and a Connection behind this layer runs with config.checksums off."""
        size = len(data)
        if size < _HEADER_BYTES + TAG_BYTES or data[0] != self.version:
            self.stats.auth_failures += 1
            return None
        pn = _PN.unpack_from(data, _CHECKSUM_OFFSET)[0]
        top = self._top
        if pn <= top and (top - pn >= REPLAY_WINDOW_PACKETS or (self._seen >> (top - pn)) & 1):
            self.stats.replayed += 1
            return None
        try:
            plain = self._decrypt(memoryview(data), size, pn)
        except InvalidTag:
            self.stats.auth_failures += 1
            return None
        self._top, self._seen = _window_after(top, self._seen, pn)
        return plain

    def _decrypt(self, view: memoryview, size: int, pn: int) -> bytes | bytearray:
        """The plaintext datagram of an authentic one; InvalidTag otherwise (the plaintext
        decrypt_into may have written into a new buffer goes with it)."""
        hb, co = _HEADER_BYTES, _CHECKSUM_OFFSET
        if size < IN_PLACE_MIN_BYTES:
            body = self._open.decrypt(_NONCE.pack(0, pn), view[hb:], view[:hb])
            return b"".join((_PLAIN_VERSION_BYTE, view[1:co], _NO_CRC, body))
        plain = bytearray(size - TAG_BYTES)  # its CRC-32 field stays 0
        plain[0] = PLAINTEXT_VERSION
        plain[1:co] = view[1:co]
        self._open.decrypt_into(_NONCE.pack(0, pn), view[hb:], view[:hb], memoryview(plain)[hb:])
        return plain

    def open_run(self, batch, dst_id: int, out: list) -> int:
        """open() of the datagrams at the start of a batch (a GRO read) that are addressed to
        dst_id, the plaintexts appended to out; returns how many it consumed. Stops before a
        datagram of another connection, a path segment (flags 0) or a runt, which the caller
        routes one by one. The same checks as open(), in one loop."""
        unpack_from, decrypt = _RUN.unpack_from, self._decrypt
        stats = self.stats
        top, seen = self._top, self._seen
        min_bytes = _HEADER_BYTES + TAG_BYTES
        expected = self.version
        append = out.append
        used = 0
        for data in batch:
            size = len(data)
            if size < _HEADER_BYTES:
                break
            version, flags, dst, pn = unpack_from(data)
            if dst != dst_id or not flags:
                break
            used += 1
            if size < min_bytes or version != expected:
                stats.auth_failures += 1
                continue
            if pn <= top and (top - pn >= REPLAY_WINDOW_PACKETS or (seen >> (top - pn)) & 1):
                stats.replayed += 1
                continue
            try:
                append(decrypt(memoryview(data), size, pn))
            except InvalidTag:
                stats.auth_failures += 1
                continue
            top, seen = _window_after(top, seen, pn)
        self._top, self._seen = top, seen
        return used


def _window_after(top: int, seen: int, pn: int) -> tuple[int, int]:
    """The replay window (highest packet number opened, bit i: top - i was opened) once pn
    was opened."""
    if pn > top:
        seen = (seen << (pn - top)) | 1
        if seen.bit_length() > 2 * REPLAY_WINDOW_PACKETS:  # trim now and then, not always
            seen &= _WINDOW_MASK
        return pn, seen
    return top, seen | 1 << (top - pn)


def adjust_config(config):
    """The Connection's config with room for the tag in every datagram (MSS, probe ceiling),
    and no CRC-32 of its own: the tag authenticates every protected datagram."""
    return replace(
        config,
        checksums=False,
        mss_bytes=config.mss_bytes - TAG_BYTES,
        max_datagram_bytes=config.max_datagram_bytes - TAG_BYTES,
    )


# --- the sender (client) side --------------------------------------------------------------


class ClientProtection:
    """The client's layer. With secret None it protects nothing and only watches the handshake
    for a receiver that requires a key, so that this is told apart from a timeout."""

    def __init__(
        self, secret: Secret | None, keylog: Callable[[str], None] | None = None, *,
        fast: bool | None = None,
    ):
        self.secret = secret
        self.keylog = keylog  # called with a --keylog line once the traffic keys exist
        # the AEADs offered in the SYN; fast: this CPU has fast AES (None: ask fast_aes())
        self.aead_offer = b""
        if secret is not None:
            self.aead_offer = aead_offer(fast_aes() if fast is None else fast)
        # what sealing adds to each datagram (the tag): the driver's MTU signals subtract it
        self.overhead_bytes = TAG_BYTES if secret is not None else 0
        self.stats = ProtectionStats()
        self.failure: str | None = None
        self.cipher: PacketCipher | None = None
        self._pending: list[bytes] = []  # our own notices to the peer (a KEY_REJECTED RST)
        self._syn_seq: int | None = None
        self._peer_answered = False
        self.wire_bytes_sent = 0  # datagram bytes as sealed (the Connection counts plaintext)
        self.wire_bytes_received = 0
        if secret is not None:
            load_cryptography()
        self._private = X25519PrivateKey.generate() if secret is not None else None
        self.share = b"" if secret is None else self._private.public_key().public_bytes_raw()
        self._pake = None
        self._pake_message = b""
        if secret is not None and secret.code is not None:
            from spake2 import SPAKE2_A

            self._pake = SPAKE2_A(
                normalize_code(secret.code).encode(), idA=b"rtcp sender", idB=b"rtcp receiver"
            )
            self._pake_message = self._pake.start()

    @property
    def transparent(self) -> bool:
        """Nothing left to do: the driver may stop calling this layer."""
        return self.secret is None and self._peer_answered

    def adjust_config(self, config):
        return config if self.secret is None else adjust_config(config)

    def seal_all(self, datagrams: list) -> list:
        out = self._pending
        self._pending = []
        if self.secret is None:
            if not self._peer_answered:
                for data in datagrams:
                    if _is_plain_segment(data) and data[_FLAGS_OFFSET] & wire.SYN:
                        self._syn_seq = _SEQ.unpack_from(data, _SEQ_OFFSET)[0]
            return out + datagrams if out else datagrams
        if self.cipher is not None:
            self.cipher.seal_into(datagrams, out)
        else:
            for data in datagrams:
                if _is_plain_segment(data) and data[_FLAGS_OFFSET] & wire.SYN:
                    out.append(self._seal_syn(data))
                # before the keys, nothing else leaves in the clear
        self.wire_bytes_sent += sum(map(len, out))
        return out

    def _seal_syn(self, data) -> bytes:
        self._syn_seq = _SEQ.unpack_from(data, _SEQ_OFFSET)[0]
        options = wire.opt_generic(wire.OPT_KEY_SHARE, self.share)
        if self._pake is not None:
            options += wire.opt_generic(wire.OPT_PAKE, self._pake_message)
        options += wire.opt_generic(wire.OPT_AEAD, self.aead_offer)
        if self._pake is not None:
            key = _hkdf(self._pake_message, b"syn proof" + self.share)  # integrity, no secret
        else:
            key = _syn_proof_key(self.secret.psk, self.share)
        return _add_proof(data, options, key)

    def open_run(self, batch, dst_id: int, out: list) -> int | None:
        """PacketCipher.open_run once the keys exist; None before (open() one by one)."""
        if self.cipher is None:
            return None
        used = self.cipher.open_run(batch, dst_id, out)
        self.wire_bytes_received += sum(map(len, batch[:used]))
        return used

    def open(self, data) -> bytes | None:
        self.wire_bytes_received += len(data)
        if self.cipher is not None:
            return self.cipher.open(data)
        if self.secret is None:
            # plaintext: everything goes to the Connection (it checks the CRC-32), except the
            # RST that says the receiver requires a key
            if _is_plain_segment(data) and _crc_ok(data):
                flags = data[_FLAGS_OFFSET]
                if flags & wire.RST:
                    return self._on_rst(data)
                if flags & wire.SYN and flags & wire.ACK:
                    self._peer_answered = True
            return data
        if not _is_plain_segment(data) or not _crc_ok(data):
            self.stats.auth_failures += 1
            return None
        flags = data[_FLAGS_OFFSET]
        if flags & wire.RST:
            return self._on_rst(data)
        if flags & wire.SYN and flags & wire.ACK:
            return self._on_syn_ack(data)
        if flags == wire.RETRY:
            # a listener under pressure asks for its address token (rtcp/core/validation.py):
            # the core sends the SYN again with it, and that SYN carries our share and proof
            return data
        self.stats.auth_failures += 1
        return None

    def _on_rst(self, data) -> bytes | None:
        reason = _option(data, wire.OPT_KEY_REJECTED, 1)
        if reason is None:
            return data  # a plain RST answering the SYN: "connection refused", as in plaintext
        ack = _SEQ.unpack_from(data, _ACK_OFFSET)[0]
        if self._syn_seq is None or ack != (self._syn_seq + 1) & 0xFFFFFFFF:
            self.stats.auth_failures += 1
            return None
        if self.secret is not None:
            self.failure = FAIL_REJECTED
        elif reason[0] == REJECT_KEY_REQUIRED:
            self.failure = FAIL_KEY_REQUIRED
        else:
            return data
        return None

    def _on_syn_ack(self, data) -> bytes | None:
        share = _option(data, wire.OPT_KEY_SHARE, SHARE_BYTES)
        if share is None:
            self.failure = FAIL_PEER_PLAINTEXT
            self._pending.append(_abort_handshake(data))
            return None
        secret = self.secret.psk
        transcript = self.share + share
        if self._pake is not None:
            message = _option(data, wire.OPT_PAKE, PAKE_MESSAGE_BYTES)
            if message is None:
                self.stats.auth_failures += 1
                return None
            try:
                secret = _pake_finish(self._pake, message)
            except ValueError:
                self.stats.auth_failures += 1
                return None
            transcript += self._pake_message + message
        choice = _option(data, wire.OPT_AEAD, 1)
        if choice is None or choice[0] not in self.aead_offer:
            self.stats.auth_failures += 1
            return None
        transcript += self.aead_offer + choice
        try:
            dh = self._private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:
            self.stats.auth_failures += 1
            return None
        k_synack, k_c2s, k_s2c = _handshake_keys(secret, dh, transcript)
        if not _check_proof(data, k_synack, self.share):
            self.stats.auth_failures += 1
            if self._pake is not None:
                # with a code, a SYN-ACK that does not prove it is the receiver's answer to a
                # wrong code: say so to the receiver (it counts the failed attempt) and stop
                self.failure = FAIL_REJECTED
                self._pending.append(_abort_handshake(data, REJECT_BAD_KEY))
            return None
        self.cipher = PacketCipher(k_c2s, k_s2c, self.stats, choice[0])
        self.stats.handshakes += 1
        if self.keylog is not None:
            self.keylog(self.keylog_line())
        return data

    def keylog_line(self) -> str | None:
        return None if self.cipher is None else _keylog_line(self.share, self.cipher, True)


def _pake_finish(pake, message: bytes) -> bytes:
    try:
        return pake.finish(message)
    except Exception as exc:  # noqa: BLE001 - spake2 raises its own classes for bad elements
        raise ValueError(f"bad SPAKE2 message: {exc}") from None


def _abort_handshake(syn_ack, reason: int | None = None) -> bytes:
    """The client's RST for a SYN-ACK it will not continue (RFC 9293: <SEQ=SEG.ACK><CTL=RST>),
    so that the receiver frees its half-open connection at once."""
    _flags, src_id, dst_id = wire.peek_ids(syn_ack)
    seq = _SEQ.unpack_from(syn_ack, _ACK_OFFSET)[0]
    option = b"" if reason is None else wire.opt_generic(wire.OPT_KEY_REJECTED, bytes((reason,)))
    return wire.build(wire.RST, dst_id, src_id, seq, 0, 0, option)


def _keylog_line(client_share: bytes, cipher: PacketCipher, is_client: bool) -> str:
    c2s, s2c = (
        (cipher.send_key, cipher.recv_key) if is_client else (cipher.recv_key, cipher.send_key)
    )
    return f"RTCP_TRAFFIC {client_share.hex()} {c2s.hex()} {s2c.hex()}\n"


# --- the receiver (server) side ------------------------------------------------------------


class ServerProtection:
    """The receiver's layer of one connection, made by Acceptor for a SYN it accepted."""

    def __init__(self, acceptor: Acceptor, syn, client_share: bytes, secret: bytes,
                 transcript_extra: bytes, pake_message: bytes, offer: bytes, aead: int):
        self.acceptor = acceptor
        self.stats = acceptor.stats
        self.failure: str | None = None
        self.transparent = False
        self.overhead_bytes = TAG_BYTES
        self.client_share = client_share
        self._syn_seq = _SEQ.unpack_from(syn, _SEQ_OFFSET)[0]
        self._pake_message = pake_message
        load_cryptography()
        private = X25519PrivateKey.generate()
        self.share = private.public_key().public_bytes_raw()
        dh = private.exchange(X25519PublicKey.from_public_bytes(client_share))
        self._aead_option = wire.opt_generic(wire.OPT_AEAD, bytes((aead,)))
        transcript = client_share + self.share + transcript_extra + offer + bytes((aead,))
        self._k_synack, k_c2s, k_s2c = _handshake_keys(secret, dh, transcript)
        self.cipher = PacketCipher(k_s2c, k_c2s, self.stats, aead)
        self.confirmed = False  # the client sent a datagram only the key's owner can seal

    def adjust_config(self, config):
        return adjust_config(config)

    def seal_all(self, datagrams: list) -> list:
        out = []
        if self.confirmed:  # the handshake is over: every datagram is sealed, in one loop
            self.cipher.seal_into(datagrams, out)
            return out
        for data in datagrams:
            if _is_plain_segment(data) and data[_FLAGS_OFFSET] & wire.SYN:
                options = wire.opt_generic(wire.OPT_KEY_SHARE, self.share)
                if self._pake_message:
                    options += wire.opt_generic(wire.OPT_PAKE, self._pake_message)
                options += self._aead_option
                out.append(_add_proof(data, options, self._k_synack, self.client_share))
            else:
                sealed = self.cipher.seal(data)
                if sealed is not None:
                    out.append(sealed)
        return out

    def open_run(self, batch, dst_id: int, out: list) -> int | None:
        """PacketCipher.open_run once the client proved the key; None before (open() one by
        one: the handshake's datagrams)."""
        return self.cipher.open_run(batch, dst_id, out) if self.confirmed else None

    def open(self, data) -> bytes | None:
        if len(data) >= wire.HEADER_BYTES and data[0] in PROTECTED_VERSIONS:
            opened = self.cipher.open(data)
            if opened is not None and not self.confirmed:
                self.confirmed = True
                self.acceptor.confirmed(self)
            return opened
        if not self.confirmed and _is_plain_segment(data) and _crc_ok(data):
            flags = data[_FLAGS_OFFSET]
            if flags & wire.SYN and not flags & wire.ACK:
                # our SYN-ACK was lost: the client's SYN again, with the same share and proof
                if _option(data, wire.OPT_KEY_SHARE, SHARE_BYTES) == self.client_share and (
                    self.acceptor.syn_proven(data, self.client_share)
                ):
                    return data
            elif (
                flags & wire.RST
                and _option(data, wire.OPT_KEY_REJECTED, 1) is not None
                and _SEQ.unpack_from(data, _SEQ_OFFSET)[0] == (self._syn_seq + 1) & 0xFFFFFFFF
            ):
                self.failure = FAIL_REJECTED  # the sender's code did not match ours
                self.stats.auth_failures += 1
                return None
        self.stats.auth_failures += 1
        return None

    def keylog_line(self) -> str | None:
        return _keylog_line(self.client_share, self.cipher, False)


class Acceptor:
    """The listener's side of the handshake: which SYNs get a connection.

    A SYN must carry a key share and (with a PSK) a proof of the key; its share must not have
    been seen before. With a code, each new attempt costs one of a bounded number of
    unconfirmed attempts (one online guess each), and the code is used up after `code_uses`
    handshakes that proved it."""

    def __init__(
        self, secret: Secret, *, code_uses: int = 1, keylog: Callable[[str], None] | None = None,
        fast: bool | None = None,
    ):
        load_cryptography()
        self.secret = secret
        self.keylog = keylog
        self.fast = fast_aes() if fast is None else fast  # this CPU has fast AES
        self.stats = ProtectionStats()
        self.code = None if secret.code is None else normalize_code(secret.code)
        self.code_uses = code_uses
        self.attempts = 0  # handshakes answered
        self.confirmed_count = 0  # of them, the peer proved the key
        self._shares: OrderedDict[bytes, None] = OrderedDict()

    @property
    def code_retired(self) -> bool:
        """With a code: no further attempt is accepted (used up, or too many failures)."""
        if self.code is None:
            return False
        return (
            self.confirmed_count >= self.code_uses
            or self.attempts - self.confirmed_count >= MAX_UNCONFIRMED_CODE_ATTEMPTS
        )

    @property
    def code_used_up(self) -> bool:
        return self.code is not None and self.confirmed_count >= self.code_uses

    def syn_proven(self, syn, share: bytes) -> bool:
        if self.secret.psk is not None:
            key = _syn_proof_key(self.secret.psk, share)
        else:
            message = _option(syn, wire.OPT_PAKE, PAKE_MESSAGE_BYTES) or b""
            key = _hkdf(message, b"syn proof" + share)
        return _check_proof(syn, key)

    def accept(self, syn) -> tuple[ServerProtection | None, bytes | None, str]:
        """(protection, None, "") for a SYN to accept; (None, reply or None, why) otherwise.
        The reply is a RST with KEY_REJECTED, for the sender to tell a wrong key from a
        timeout."""
        if not _is_plain_segment(syn) or not _crc_ok(syn):
            return self._refuse(None, "a malformed handshake")
        share = _option(syn, wire.OPT_KEY_SHARE, SHARE_BYTES)
        if share is None:
            return self._refuse(
                reject_reply(syn, REJECT_KEY_REQUIRED), "a sender without a key"
            )
        if not self.syn_proven(syn, share):
            return self._refuse(reject_reply(syn, REJECT_BAD_KEY), "a sender with another key")
        if share in self._shares:
            self.stats.replayed_handshakes += 1
            return self._refuse(None, "a replayed handshake")
        pake_message = b""
        transcript_extra = b""
        secret = self.secret.psk
        if self.code is not None:
            if self.code_retired:
                return self._refuse(
                    reject_reply(syn, REJECT_CODE_RETIRED), "a sender after the code was retired"
                )
            message = _option(syn, wire.OPT_PAKE, PAKE_MESSAGE_BYTES)
            if message is None:
                return self._refuse(
                    reject_reply(syn, REJECT_KEY_REQUIRED), "a sender without a code"
                )
            from spake2 import SPAKE2_B

            pake = SPAKE2_B(self.code.encode(), idA=b"rtcp sender", idB=b"rtcp receiver")
            pake_message = pake.start()
            try:
                secret = _pake_finish(pake, message)
            except ValueError:
                return self._refuse(None, "a malformed code exchange")
            transcript_extra = message + pake_message
        try:
            found = wire.find_option(syn, wire.OPT_AEAD)
            offer = bytes(found[1]) if found is not None else b""
            protection = ServerProtection(
                self, syn, share, secret, transcript_extra, pake_message, offer,
                choose_aead(offer, self.fast),
            )
        except ValueError:  # a share that is not a usable X25519 point
            return self._refuse(None, "a malformed key share")
        self._shares[share] = None
        if len(self._shares) > REPLAY_CACHE_SHARES:
            self._shares.popitem(last=False)
        self.attempts += 1
        if self.keylog is not None:
            self.keylog(protection.keylog_line())
        return protection, None, ""

    def _refuse(self, reply: bytes | None, why: str):
        self.stats.auth_failures += 1
        return None, reply, why

    def confirmed(self, protection: ServerProtection) -> None:
        self.confirmed_count += 1
        self.stats.handshakes += 1


# --- keylog and decryption of captures ---------------------------------------------------


def parse_keylog(text: str) -> dict[bytes, tuple[bytes, bytes]]:
    """{client share: (client-to-server key, server-to-client key)} from --keylog lines."""
    keys = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "RTCP_TRAFFIC":
            try:
                keys[bytes.fromhex(parts[1])] = (bytes.fromhex(parts[2]), bytes.fromhex(parts[3]))
            except ValueError:
                continue
    return keys


class CaptureDecryptor:
    """Turns the datagrams of a capture (both directions, in order) back into plaintext ones,
    with the keys of a --keylog file. Tracks connections by (src_id, dst_id) as seen in SYNs."""

    def __init__(self, keys: dict[bytes, tuple[bytes, bytes]]):
        load_cryptography()
        self._keys = keys
        self._by_ids: dict[tuple[int, int], bytes] = {}  # the key of each direction
        self._pending: dict[int, tuple[bytes, bytes]] = {}  # client id -> keys, until SYN-ACK
        self.decrypted = 0
        self.undecryptable = 0

    def datagram(self, data: bytes) -> bytes:
        if len(data) < wire.HEADER_BYTES:
            return data
        flags, src_id, dst_id = wire.peek_ids(data)
        if data[0] == PLAINTEXT_VERSION and flags & wire.SYN:
            share = _option(data, wire.OPT_KEY_SHARE, SHARE_BYTES)
            if not flags & wire.ACK and share in self._keys:
                self._pending[src_id] = self._keys[share]
            elif flags & wire.ACK and dst_id in self._pending:
                c2s, s2c = self._pending.pop(dst_id)
                self._by_ids[(dst_id, src_id)] = c2s
                self._by_ids[(src_id, dst_id)] = s2c
            return data
        if data[0] not in PROTECTED_VERSIONS:
            return data
        key = self._by_ids.get((src_id, dst_id))
        if key is None:
            self.undecryptable += 1
            return data
        aead = _AEAD_CLASSES[AEAD_BY_VERSION[data[0]]](key)  # the version byte names the AEAD
        pn = _PN.unpack_from(data, wire.CHECKSUM_OFFSET)[0]
        header = bytes(data[: wire.HEADER_BYTES])
        try:
            body = aead.decrypt(_NONCE.pack(0, pn), data[wire.HEADER_BYTES :], header)
        except InvalidTag:
            self.undecryptable += 1
            return data
        self.decrypted += 1
        prefix = bytearray(header[: wire.CHECKSUM_OFFSET])
        prefix[0] = PLAINTEXT_VERSION
        return wire.with_checksum(bytes(prefix) + bytes(4) + body)
