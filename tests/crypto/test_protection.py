"""Packet protection (rtcp.core.protection) in the deterministic simulator and on its own:
transfers with a key and with a code, the failures (wrong key, key on one side only, replayed
handshake, replayed / bit-flipped / forged segments), codec round trips and nonce uniqueness."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtcp.core import protection as prot
from rtcp.core import wire
from rtcp.core.connection import State
from rtcp.core.protection import Secret
from rtcp.proxy.impair import ImpairConfig
from tests.crypto.protected_sim import ProtectedSim

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PSK = Secret(psk=KEY)
MARKER = b"THE-PLAINTEXT-MARKER"
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "max_examples": 25}


def _data(size: int, seed: int = 1) -> bytes:
    body = random.Random(seed).randbytes(size)
    return MARKER + body + MARKER


def _run(client_secret, server_secret, data=b"", *, seed=0, code_uses=1, **kw) -> ProtectedSim:
    net = ProtectedSim(client_secret, server_secret, seed=seed, code_uses=code_uses, **kw)
    net.start(data)
    net.run(max_time_s=120)
    return net


def _versions(net, name):
    return [d[0] for who, d in net.wire_log if who == name]


@pytest.mark.parametrize(
    ("fast", "version"),
    [
        ((False, False), prot.PROTECTED_VERSION),
        ((True, False), prot.PROTECTED_VERSION),
        ((False, True), prot.PROTECTED_VERSION),
        ((True, True), prot.PROTECTED_AES_VERSION),  # AES-256-GCM only when both have fast AES
    ],
)
def test_transfer_with_a_key_is_intact_and_unreadable_on_the_wire(fast, version):
    data = _data(300_000)
    net = _run(PSK, PSK, data, fast=fast)
    assert bytes(net.server.received) == data
    assert net.client.closed.reason == "closed"
    # the SYN and SYN-ACK are the only plaintext-format datagrams; the payload never shows
    for name in ("client", "server"):
        versions = _versions(net, name)
        assert versions[0] == prot.PLAINTEXT_VERSION
        assert set(versions[1:]) == {version}
    assert not any(MARKER in d for _, d in net.wire_log)
    assert net.layers["client"].stats.handshakes == 1
    assert net.acceptor.stats.handshakes == 1
    assert net.acceptor.stats.auth_failures == 0


@pytest.mark.parametrize("fast", [(False, False), (True, True)])
def test_transfer_with_a_code(fast):
    code = prot.generate_code()
    data = _data(100_000)
    net = _run(Secret(code=code), Secret(code=code), data, fast=fast)
    assert bytes(net.server.received) == data
    assert not any(MARKER in d for _, d in net.wire_log)
    assert net.acceptor.code_used_up and net.acceptor.code_retired


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transfer_with_a_key_at_five_percent_loss_both_ways(seed):
    data = _data(400_000, seed)
    lossy = ImpairConfig(loss=0.05, delay_s=0.005)
    net = _run(PSK, PSK, data, seed=seed, up=lossy, down=lossy)
    assert bytes(net.server.received) == data
    assert net.client.conn.stats.retransmissions > 0


def _packet_numbers(net, name):
    return [
        int.from_bytes(d[24:28], "big")
        for who, d in net.wire_log
        if who == name and d[0] in prot.PROTECTED_VERSIONS
    ]


@settings(**SETTINGS)
@given(
    seed=st.integers(0, 2**16),
    loss=st.floats(0.0, 0.2),
    duplicate=st.floats(0.0, 0.1),
    size=st.integers(1, 200_000),
    aes=st.booleans(),
)
def test_no_nonce_is_used_twice_even_across_retransmissions(seed, loss, duplicate, size, aes):
    link = ImpairConfig(loss=loss, duplicate=duplicate, delay_s=0.002)
    net = _run(PSK, PSK, _data(size, seed), seed=seed, up=link, down=link, fast=(aes, aes))
    for name in ("client", "server"):
        numbers = _packet_numbers(net, name)
        assert len(numbers) == len(set(numbers))  # one packet number = one nonce, each once
        assert numbers == sorted(numbers)  # and they only grow


def _established_pair():
    """A finished handshake: (client layer, server layer) and a sealer for fresh datagrams."""
    net = _run(PSK, PSK, b"")
    return net.layers["client"], net.layers["server"]


segments = st.builds(
    wire.Segment,
    flags=st.integers(0, 0x3F),
    src_id=st.integers(0, 2**32 - 1),
    dst_id=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    window=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=3000),
    sack_blocks=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=4
    ).map(tuple),
    ts_val=st.none() | st.integers(0, 2**32 - 1),
    ts_ecr=st.none() | st.integers(0, 2**32 - 1),
)


def _cipher_pair():
    stats = prot.ProtectionStats()
    a = prot.PacketCipher(KEY, OTHER_KEY, stats)
    b = prot.PacketCipher(OTHER_KEY, KEY, stats)
    return a, b, stats


@settings(**SETTINGS)
@given(seg=segments, flip=st.integers(0, 10**6))
def test_seal_open_round_trip_and_any_flipped_bit_is_dropped(seg, flip):
    if seg.ts_val is not None and seg.ts_ecr is None:
        seg.ts_ecr = 0
    a, b, stats = _cipher_pair()
    plain = wire.encode(seg)
    sealed = a.seal(plain)
    assert len(sealed) == len(plain) + prot.TAG_BYTES
    assert sealed[1:24] == plain[1:24]  # the header stays readable
    opened = b.open(sealed)
    # the same segment; the CRC-32 field holds 0 (the tag authenticated it)
    assert opened == plain[:24] + bytes(4) + plain[28:]
    assert wire.decode(opened, verify_checksum=False) == wire.decode(plain)
    # the same datagram again: a replay
    assert b.open(sealed) is None and stats.replayed == 1
    bad = bytearray(a.seal(plain))
    bit = flip % (8 * len(bad))
    bad[bit // 8] ^= 1 << (bit % 8)
    assert b.open(bytes(bad)) is None
    assert stats.auth_failures + stats.replayed == 2


@settings(**SETTINGS)
@given(
    size=st.sampled_from([prot.IN_PLACE_MIN_BYTES - 29, prot.IN_PLACE_MIN_BYTES, 65507 - 16]),
    flip=st.integers(0, 10**6),
)
def test_large_datagrams_sealed_in_place_round_trip_and_any_flipped_bit_is_dropped(size, flip):
    """Large datagrams take the in-place path (encrypt_into / decrypt_into): the same wire
    form and the same checks as the small ones."""
    a, b, stats = _cipher_pair()
    plain = wire.build(wire.ACK, 7, 9, 1000, 2000, 512, b"", random.Random(size).randbytes(
        size - wire.HEADER_BYTES))
    sealed = a.seal(plain)
    assert len(sealed) == len(plain) + prot.TAG_BYTES and sealed[1:24] == plain[1:24]
    twin = ChaCha20Poly1305(KEY)  # the wire format, computed independently
    header = b"\x02" + plain[1:24] + (0).to_bytes(4, "big")
    assert bytes(sealed) == header + twin.encrypt(bytes(12), plain[28:], header)
    assert b.open(sealed) == plain[:24] + bytes(4) + plain[28:]
    bad = bytearray(a.seal(plain))
    bit = flip % (8 * len(bad))
    bad[bit // 8] ^= 1 << (bit % 8)
    assert b.open(bytes(bad)) is None
    assert stats.auth_failures == 1


@settings(**SETTINGS)
@given(
    kinds=st.lists(
        st.sampled_from(["ok", "ok", "ok", "big", "replay", "flip", "short", "plain", "other",
                         "path", "runt"]),
        max_size=24,
    )
)
def test_a_batch_opens_like_its_datagrams_one_by_one(kinds):
    """open_run (the GRO batch path) takes the run addressed to one connection, with the
    same verdicts and counters as open() on each; it stops before another connection's
    datagram, a path segment or a runt, which the driver routes one by one."""
    stats = prot.ProtectionStats()
    a = prot.PacketCipher(KEY, OTHER_KEY, stats)
    batch = []
    for i, kind in enumerate(kinds):
        dst = 8 if kind == "other" else 9
        flags = 0 if kind == "path" else wire.ACK
        payload = bytes(5000) if kind == "big" else bytes([i]) * 100
        sealed = bytes(a.seal(wire.build(flags, 7, dst, i, 0, 100, b"", payload)))
        if kind == "replay" and batch:
            sealed = batch[0]
        elif kind == "flip":
            sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
        elif kind == "short":
            sealed = sealed[: wire.HEADER_BYTES + 3]
        elif kind == "plain":
            sealed = wire.build(wire.ACK, 7, dst, i, 0, 100, b"", payload)
        elif kind == "runt":
            sealed = sealed[:10]
        batch.append(sealed)
    run_stats, one_stats = prot.ProtectionStats(), prot.ProtectionStats()
    run_cipher = prot.PacketCipher(OTHER_KEY, KEY, run_stats)
    one_cipher = prot.PacketCipher(OTHER_KEY, KEY, one_stats)
    views = [memoryview(d) for d in batch]  # as a GRO read hands them over
    opened = []
    used = run_cipher.open_run(views, 9, opened)
    ends = [i for i, k in enumerate(kinds) if k in ("other", "path", "runt")]
    assert used == (ends[0] if ends else len(kinds))
    expected = [p for p in map(one_cipher.open, batch[:used]) if p is not None]
    assert [bytes(p) for p in opened] == [bytes(p) for p in expected]
    assert run_stats == one_stats
    assert (run_cipher._top, run_cipher._seen) == (one_cipher._top, one_cipher._seen)


def test_replay_window_accepts_reordering_and_refuses_what_is_too_old():
    a, b, stats = _cipher_pair()
    sealed = [a.seal(wire.build(wire.ACK, 1, 2, i, 0, 100)) for i in range(prot.REPLAY_WINDOW_PACKETS + 10)]
    assert b.open(sealed[5]) is not None
    assert b.open(sealed[3]) is not None  # late but inside the window
    assert b.open(sealed[-1]) is not None
    assert b.open(sealed[4]) is None  # now older than the window
    assert b.open(sealed[-2]) is not None
    assert b.open(sealed[-2]) is None
    assert stats.replayed == 2 and stats.auth_failures == 0


def test_wrong_key_is_refused_before_any_state_and_the_sender_is_told():
    net = _run(PSK, Secret(psk=OTHER_KEY), b"x" * 1000)
    assert net.layers["client"].failure == prot.FAIL_REJECTED
    assert net.layers["server"] is None  # no connection state was created for it
    assert net.server.conn.state is State.LISTEN
    assert net.refusals and set(net.refusals) == {"a sender with another key"}
    assert net.acceptor.stats.auth_failures >= 1
    assert net.client.closed is not None and not net.server.received


def test_key_on_the_sender_only_is_a_mismatch_not_a_timeout():
    net = _run(PSK, None, b"x" * 1000)
    assert net.layers["client"].failure == prot.FAIL_PEER_PLAINTEXT
    assert net.client.closed is not None
    assert not net.server.received
    # the plaintext receiver's half-open connection was reset by the sender at once
    assert net.server.closed is not None and net.server.closed.reason == "reset"


def test_key_on_the_receiver_only_is_a_mismatch_not_a_timeout():
    net = _run(None, PSK, b"x" * 1000)
    assert net.layers["client"].failure == prot.FAIL_KEY_REQUIRED
    assert net.layers["server"] is None
    assert net.refusals and set(net.refusals) == {"a sender without a key"}
    assert not net.server.received


def test_a_replayed_handshake_is_refused():
    net = _run(PSK, PSK, b"hello")
    syn = next(d for who, d in net.wire_log if who == "client")
    assert syn[1] & wire.SYN
    layer, reply, why = net.acceptor.accept(syn)
    assert layer is None and reply is None and why == "a replayed handshake"
    assert net.acceptor.stats.replayed_handshakes == 1


def test_a_syn_with_a_flipped_bit_or_a_stripped_proof_is_refused():
    client = prot.ClientProtection(PSK)
    syn = client.seal_all([wire.build(wire.SYN, 7, 0, 1000, 0, 100, wire.opt_mss(1300))])[0]
    acceptor = prot.Acceptor(PSK)
    for i in range(1, len(syn)):
        if wire.CHECKSUM_OFFSET <= i < wire.HEADER_BYTES:
            continue  # the CRC-32 itself, recomputed below
        bad = bytearray(syn)
        bad[i] ^= 0x10
        bad = wire.with_checksum(bad)  # a valid CRC: only the proof can tell
        assert acceptor.accept(bad)[0] is None, i
    assert acceptor.accept(syn)[0] is not None


class _Attack:
    """A finished keyed transfer's network, held open for an attacker's datagrams."""

    def __init__(self):
        self.net = ProtectedSim(PSK, PSK, seed=5)
        self.net.server.close_when_sent = False
        self.net.client.close_when_sent = False
        self.net.client.to_send = b"a" * 50_000
        self.net.client.conn.connect(self.net.now)
        self.net.run(until=lambda: len(self.net.server.received) == 50_000, max_time_s=60)
        assert self.net.server.conn.state is State.ESTABLISHED

    def settle(self):
        end = self.net.now + 1.0
        self.net.run(until=lambda: self.net.now >= end, max_time_s=5)


def test_forged_rst_and_fin_with_the_right_ids_change_nothing():
    attack = _Attack()
    net = attack.net
    c, s = net.client.conn, net.server.conn
    for flags in (wire.RST, wire.RST | wire.ACK, wire.FIN | wire.ACK):
        for seq in (c.iss + c.snd_nxt, c.iss + c.snd_una):
            forged = wire.build(flags, c.local_id, s.local_id, seq & 0xFFFFFFFF,
                                (s.iss + s.snd_nxt) & 0xFFFFFFFF, 1000)
            net.inject("server", forged)
            forged = wire.build(flags, s.local_id, c.local_id, (s.iss + s.snd_nxt) & 0xFFFFFFFF,
                                seq & 0xFFFFFFFF, 1000)
            net.inject("client", forged)
    attack.settle()
    assert s.state is State.ESTABLISHED and c.state is State.ESTABLISHED
    assert net.server.closed is None and net.client.closed is None
    assert not net.server.stream_ended
    assert net.acceptor.stats.auth_failures >= 6
    assert net.layers["client"].stats.auth_failures >= 6


def test_replayed_and_bit_flipped_data_segments_are_dropped():
    attack = _Attack()
    net = attack.net
    data_segments = [d for who, d in net.wire_log if who == "client" and len(d) > 500]
    before = bytes(net.server.received)
    for n, d in enumerate(data_segments[-5:]):
        net.inject("server", d)  # replayed
        fresh = bytearray(d)
        fresh[24:28] = (10_000 + n).to_bytes(4, "big")  # a packet number not seen yet
        flipped = bytearray(fresh)
        flipped[-20] ^= 0x01  # in the payload
        net.inject("server", bytes(flipped))
        flipped = bytearray(fresh)
        flipped[14] ^= 0x01  # in the readable header (seq)
        net.inject("server", bytes(flipped))
    attack.settle()
    assert bytes(net.server.received) == before
    stats = net.acceptor.stats
    assert stats.replayed >= 5 and stats.auth_failures >= 10
    assert net.server.conn.state is State.ESTABLISHED


def test_wrong_code_is_refused_and_counts_as_one_attempt():
    code = prot.generate_code()
    other = code.split("-")
    other[1] = next(w for w in prot.CODE_WORDS if w != other[1])
    net = _run(Secret(code="-".join(other)), Secret(code=code), b"x" * 1000)
    assert net.layers["client"].failure == prot.FAIL_REJECTED
    assert not net.server.received
    assert net.acceptor.attempts == 1 and net.acceptor.confirmed_count == 0
    assert net.layers["server"].failure == prot.FAIL_REJECTED  # the sender told it


def test_a_code_is_retired_after_its_failed_attempts_and_after_its_uses():
    code = prot.generate_code()
    acceptor = prot.Acceptor(Secret(code=code), code_uses=2)
    wrong = prot.ClientProtection(Secret(code="1-" + "-".join(prot.CODE_WORDS[:3])))
    for _ in range(prot.MAX_UNCONFIRMED_CODE_ATTEMPTS):
        client = prot.ClientProtection(Secret(code="1-" + "-".join(prot.CODE_WORDS[:3])))
        syn = client.seal_all([wire.build(wire.SYN, 9, 0, 1, 0, 100)])[0]
        assert acceptor.accept(syn)[0] is not None
    assert acceptor.code_retired and not acceptor.code_used_up
    right = prot.ClientProtection(Secret(code=code))
    syn = right.seal_all([wire.build(wire.SYN, 9, 0, 1, 0, 100)])[0]
    layer, reply, why = acceptor.accept(syn)
    assert layer is None and "retired" in why
    assert wire.find_option(reply, wire.OPT_KEY_REJECTED)[1] == bytes((prot.REJECT_CODE_RETIRED,))
    assert wrong.failure is None


def test_codes_and_key_files(tmp_path):
    code = prot.generate_code()
    assert prot.normalize_code(code.upper()) == code
    number, *words = code.split("-")
    assert 0 <= int(number) < 1000 and len(words) == 3
    assert len(set(prot.CODE_WORDS)) == 256
    with pytest.raises(ValueError):
        prot.normalize_code("7-guitar-oxygen")
    with pytest.raises(ValueError):
        prot.normalize_code("7-guitar-oxygen-xylophonez")
    path = tmp_path / "k"
    key = prot.generate_key()
    prot.write_key_file(path, key)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert prot.read_key_file(path) == key
    with pytest.raises(FileExistsError):
        prot.write_key_file(path, key)
    (tmp_path / "bad").write_text("hello\n")
    with pytest.raises(prot.KeyFileError):
        prot.read_key_file(tmp_path / "bad")


def test_generic_options_round_trip():
    base = wire.build(wire.SYN, 1, 0, 5, 0, 100, wire.opt_mss(1000), b"")
    extra = wire.opt_generic(200, b"token-bytes") + wire.opt_generic(201, b"")
    out = wire.append_options(base, extra)
    seg = wire.decode(out)  # CRC valid, unknown kinds skipped
    assert seg.mss == 1000
    assert wire.find_option(out, 200) == (wire.HEADER_BYTES + 4, b"token-bytes")
    assert wire.find_option(out, 201)[1] == b""
    assert wire.find_option(out, 202) is None


@pytest.mark.parametrize("aes", [False, True])
def test_keylog_lets_a_capture_be_decrypted(aes):
    net = _run(PSK, PSK, _data(50_000), fast=(aes, aes))
    keys = prot.parse_keylog(net.layers["client"].keylog_line())
    assert keys == prot.parse_keylog(net.layers["server"].keylog_line())
    decryptor = prot.CaptureDecryptor(keys)
    plain = [decryptor.datagram(d) for _, d in net.wire_log]
    assert decryptor.undecryptable == 0
    assert all(d[0] == prot.PLAINTEXT_VERSION for d in plain)
    for d in plain:
        wire.decode(d)  # valid CRC-32 again
    assert any(MARKER in d for d in plain)


def _handshake(client_fast: bool, server_fast: bool, secret=PSK):
    """A client layer, the server layer the Acceptor made, and the sealed SYN-ACK."""
    client = prot.ClientProtection(secret, fast=client_fast)
    syn = client.seal_all([wire.build(wire.SYN, 7, 0, 1000, 0, 100)])[0]
    server, _reply, why = prot.Acceptor(secret, fast=server_fast).accept(syn)
    assert server is not None, why
    synack = server.seal_all([wire.build(wire.SYN | wire.ACK, 9, 7, 5000, 1001, 100)])[0]
    return client, server, synack


@pytest.mark.parametrize(
    ("client_fast", "server_fast", "aead"),
    [
        (True, True, prot.AEAD_AES_256_GCM),
        (True, False, prot.AEAD_CHACHA20_POLY1305),
        (False, True, prot.AEAD_CHACHA20_POLY1305),
        (False, False, prot.AEAD_CHACHA20_POLY1305),
    ],
)
def test_the_aead_is_negotiated_in_the_handshake(client_fast, server_fast, aead):
    client, server, synack = _handshake(client_fast, server_fast)
    assert client.open(synack) is not None
    assert client.cipher.aead == server.cipher.aead == aead
    sealed = client.seal_all([wire.build(wire.ACK, 7, 9, 1001, 5001, 100, b"", b"data")])[0]
    assert sealed[0] == prot.AEADS[aead][1]  # the version byte names the AEAD
    assert server.open(sealed) is not None and server.confirmed


@pytest.mark.parametrize("secret", [PSK, Secret(code="7-guitar-oxygen-banjo")])
def test_a_rewritten_aead_choice_fails_the_handshake(secret):
    """The offer and the choice are bound into the key derivation: an on-path attacker who
    rewrites the SYN-ACK's choice (or the SYN's offer, whose proof with a code is only an
    integrity check) gets a failed handshake, never two ends with different AEADs."""
    client, _server, synack = _handshake(True, True, secret)
    offset, _value = wire.find_option(synack, wire.OPT_AEAD)
    forged = bytearray(synack)
    forged[offset + 2] = prot.AEAD_CHACHA20_POLY1305
    assert client.open(wire.with_checksum(forged)) is None
    assert client.cipher is None and client.stats.auth_failures == 1
    # and a SYN-ACK choosing an AEAD the client did not offer is refused too
    forged[offset + 2] = 7
    assert client.open(wire.with_checksum(forged)) is None and client.cipher is None


def test_fast_aes_is_read_from_the_cpu_flags():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 ssse3 {} avx2\n"
    assert prot.cpuinfo_has_fast_aes(x86.format("pclmulqdq aes"))
    assert not prot.cpuinfo_has_fast_aes(x86.format("pclmulqdq"))  # no AES-NI
    assert not prot.cpuinfo_has_fast_aes(x86.format("aes"))  # no carry-less multiply (GHASH)
    assert prot.cpuinfo_has_fast_aes("Features\t: fp asimd evtstrm aes pmull sha1 sha2\n")
    assert not prot.cpuinfo_has_fast_aes("Features\t: fp asimd evtstrm\n")
    assert not prot.cpuinfo_has_fast_aes("")


def _mutations(datagram: bytes):
    return st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda i, x: datagram[:i] + bytes((x,)) + datagram[i + 1 :],
            st.integers(0, len(datagram) - 1),
            st.integers(0, 255),
        ),
        st.integers(0, len(datagram)).map(lambda n: datagram[:n]),
    )


_SYN = prot.ClientProtection(PSK).seal_all([wire.build(wire.SYN, 7, 0, 1, 0, 100)])[0]


@settings(**{**SETTINGS, "max_examples": 200})
@given(data=_mutations(_SYN), code=st.booleans())
def test_nothing_from_the_network_raises(data, code):
    secret = Secret(code="7-guitar-oxygen-banjo") if code else PSK
    acceptor = prot.Acceptor(secret)
    layer, _reply, _why = acceptor.accept(data)
    if layer is not None:
        layer.open(data)
        layer.open(data[:40])
    for client_secret in (secret, None):
        client = prot.ClientProtection(client_secret)
        client.seal_all([wire.build(wire.SYN, 7, 0, 1, 0, 100)])
        client.open(data)
        client.open(memoryview(data))
    decryptor = prot.CaptureDecryptor({})
    decryptor.datagram(data)


def test_code_uses_allows_that_many_transfers():
    code = prot.generate_code()
    acceptor = prot.Acceptor(Secret(code=code), code_uses=2)
    for _ in range(2):
        client = prot.ClientProtection(Secret(code=code))
        syn = client.seal_all([wire.build(wire.SYN, 9, 0, 1, 0, 100)])[0]
        server, _, _ = acceptor.accept(syn)
        synack = server.seal_all([wire.build(wire.SYN | wire.ACK, 5, 9, 1, 2, 100)])[0]
        assert client.open(synack) is not None
        ack = client.seal_all([wire.build(wire.ACK, 9, 5, 2, 2, 100)])[0]
        assert server.open(ack) is not None
    assert acceptor.code_used_up and acceptor.code_retired


def test_a_keyed_sender_follows_a_retry_and_its_token_syn_proves_the_key():
    """A listener under SYN pressure answers with a stateless RETRY (rtcp/core/validation.py):
    the keyed client's layer passes it to its core, and the SYN sent again carries both the
    token and the key share with its proof, which the Acceptor accepts."""
    from rtcp.core.config import ConnectionConfig
    from rtcp.core.connection import Connection
    from rtcp.core.validation import RetryTokens

    secret = Secret(psk=os.urandom(prot.KEY_BYTES))
    peer = ("192.0.2.1", 4000)
    layer = prot.ClientProtection(secret)
    client = Connection(layer.adjust_config(ConnectionConfig()), is_client=True, now=0.0)
    client.connect(0.0)
    (syn,) = layer.seal_all(client.datagrams_to_send(0.0))
    tokens = RetryTokens()
    retry = tokens.retry_for(wire.decode(syn), peer, 0.0)
    opened = layer.open(retry)
    assert opened is not None and layer.stats.auth_failures == 0
    client.receive_datagram(opened, 0.01)
    (again,) = layer.seal_all(client.datagrams_to_send(0.01))
    seg = wire.decode(again)
    assert tokens.valid(seg.option(wire.OPT_RETRY_TOKEN), peer, seg.src_id, 0.01)
    server_layer, _reply, why = prot.Acceptor(secret).accept(again)
    assert server_layer is not None, why
    server = Connection(server_layer.adjust_config(ConnectionConfig()), is_client=False, now=0.01)
    server.receive_datagram(again, 0.01)
    for synack in server_layer.seal_all(server.datagrams_to_send(0.01)):
        plain = layer.open(synack)
        assert plain is not None
        client.receive_datagram(plain, 0.02)
    assert client.state == State.ESTABLISHED
