"""End to end with real processes: `rtcp keygen`, send/recv with --psk-file and --code, through
the impairing proxy, and the mismatches (wrong key, key on one side only, wrong code) that end in
one clear line and exit code 9 while the receiver keeps serving."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess

from rtcp.errors import ExitCode
from tests.e2e.conftest import RTCP, make_file, needs_proxy, send, wait_for

REJECTED = "rtcp: error: the receiver did not accept our key (wrong --psk-file or --code)"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _keygen(path) -> None:
    res = subprocess.run([RTCP, "keygen", str(path)], check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert os.stat(path).st_mode & 0o777 == 0o600


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_keygen_refuses_to_replace_a_key(tmp_path):
    key = tmp_path / "k"
    _keygen(key)
    before = key.read_bytes()
    res = subprocess.run([RTCP, "keygen", str(key)], check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == ExitCode.USAGE
    assert _error_lines(res.stderr) == [
        f"rtcp: error: {key} exists: keygen never replaces a key (remove it first)"
    ]
    assert key.read_bytes() == before


def test_transfer_with_a_key_file_and_the_environment_variable(receiver, tmp_path):
    key = tmp_path / "team.key"
    _keygen(key)
    recv, port, out = receiver("--psk-file", key)
    src = make_file(tmp_path / "secret.bin", 3_000_000, seed=3)
    capture = tmp_path / "send.pcap"
    res = send(src, port, "--psk-file", key, "--pcap", capture)
    assert res.returncode == 0, res.stderr
    assert _sha(out / "secret.bin") == _sha(src)
    data, wire_bytes = src.read_bytes(), capture.read_bytes()
    # no piece of the file crosses the wire in the clear
    assert not any(data[i : i + 32] in wire_bytes for i in range(0, len(data), 100_003))
    env = dict(os.environ, RTCP_PSK_FILE=str(key))
    res = subprocess.run(
        [RTCP, "send", str(src), "--to", f"127.0.0.1:{port}", "--quiet"],
        check=False, capture_output=True, text=True, timeout=60, env=env,
    )
    # the file exists now: refused by the application, which needs the key to say so
    assert res.returncode == ExitCode.FILE_EXISTS, res.stderr
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0


def test_wrong_key_is_one_line_exit_9_and_the_receiver_keeps_serving(receiver, tmp_path):
    key, other = tmp_path / "a.key", tmp_path / "b.key"
    _keygen(key)
    _keygen(other)
    recv, port, out = receiver("--psk-file", key)
    src = make_file(tmp_path / "f.bin", 200_000)
    res = send(src, port, "--psk-file", other)
    assert res.returncode == ExitCode.KEY_REJECTED, res.stderr
    assert _error_lines(res.stderr) == [REJECTED]
    assert not (out / "f.bin").exists()
    # the right key still works afterwards
    res = send(src, port, "--psk-file", key)
    assert res.returncode == 0, res.stderr
    assert _sha(out / "f.bin") == _sha(src)
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0
    refused = [line for line in recv.stderr.splitlines() if "refused a handshake" in line]
    assert len(refused) == 1 and refused[0].endswith("a sender with another key"), recv.stderr


def test_key_on_one_side_only_is_not_a_timeout(receiver, tmp_path):
    key = tmp_path / "k"
    _keygen(key)
    src = make_file(tmp_path / "f.bin", 50_000)
    _keyed, kport, kout = receiver("--psk-file", key, out=tmp_path / "keyed")
    res = send(src, kport, "--timeout", "30s")
    assert res.returncode == ExitCode.KEY_REJECTED, res.stderr
    assert _error_lines(res.stderr) == [
        "rtcp: error: the receiver requires a key (use --psk-file or --code)"
    ]
    _plain, pport, pout = receiver(out=tmp_path / "plain")
    res = send(src, pport, "--psk-file", key, "--timeout", "30s")
    assert res.returncode == ExitCode.KEY_REJECTED, res.stderr
    assert _error_lines(res.stderr) == [
        (
            "rtcp: error: the receiver uses no key (it runs without --psk-file or --code): "
            "not sending in the clear"
        )
    ]
    assert not (kout / "f.bin").exists() and not (pout / "f.bin").exists()


def test_transfer_with_a_code_then_the_code_is_used_up(spawn, tmp_path):
    recv = spawn(["recv", "--listen", "127.0.0.1:0", "--out", tmp_path / "out", "--code"])
    port = recv.wait_port()
    code = recv.wait_line(r"^code: (\S+)$").group(1)
    assert re.fullmatch(r"\d{1,3}(-[a-z]+){3}", code)
    src = make_file(tmp_path / "f.bin", 500_000)
    res = send(src, port, "--code", code)
    assert res.returncode == 0, res.stderr
    assert _sha(tmp_path / "out" / "f.bin") == _sha(src)
    assert recv.wait(20) == 0  # one use: the receiver exits once the transfer is done


def test_wrong_code_is_one_line_exit_9(spawn, tmp_path):
    recv = spawn(["recv", "--listen", "127.0.0.1:0", "--out", tmp_path / "out", "--code"])
    port = recv.wait_port()
    code = recv.wait_line(r"^code: (\S+)$").group(1)
    number, *words = code.split("-")
    wrong = "-".join([str((int(number) + 1) % 1000), *words])
    src = make_file(tmp_path / "f.bin", 10_000)
    res = send(src, port, "--code", wrong)
    assert res.returncode == ExitCode.KEY_REJECTED, res.stderr
    assert _error_lines(res.stderr) == [REJECTED]
    res = send(src, port, "--code", code)  # the right code still works after one wrong guess
    assert res.returncode == 0, res.stderr
    assert recv.wait(20) == 0
    # one line for the wrong code (stderr), one for the transfer (stdout), nothing else
    lines = [line for line in recv.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, recv.stderr
    assert lines[0].endswith("a sender whose code did not match")
    assert lines[1].startswith("rtcp: packet protection: 1 handshakes proved the key; dropped 1")
    assert [line for line in recv.lines[2:] if line.strip()] == [
        line for line in recv.lines if line.startswith("received 'f.bin'")
    ]


def test_receiver_beyond_loopback_needs_a_key(tmp_path):
    res = subprocess.run(
        [RTCP, "recv", "--listen", "0.0.0.0:0", "--out", str(tmp_path / "o"), "--once"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == ExitCode.USAGE
    assert _error_lines(res.stderr) == [
        (
            "rtcp: error: --listen 0.0.0.0:0 is reachable from other machines: give --psk-file "
            "FILE or --code (or --insecure to accept anyone's files, unencrypted)"
        )
    ]


@needs_proxy
def test_keyed_transfer_through_the_proxy_at_five_percent_loss(receiver, proxy, tmp_path):
    key = tmp_path / "k"
    _keygen(key)
    _recv, port, out = receiver("--psk-file", key)
    _proxy, pport = proxy(port, "--loss", "5%", "--delay", "2ms", "--mtu", "1400")
    src = make_file(tmp_path / "lossy.bin", 2_000_000, seed=9)
    res = send(src, pport, "--psk-file", key, "--json", timeout=90)
    assert res.returncode == 0, res.stderr
    assert _sha(out / "lossy.bin") == _sha(src)


def test_keylog_and_decrypt_give_back_a_plaintext_capture(receiver, tmp_path):
    from rtcp.core import wire
    from rtcp.trace.pcap import read_pcap

    key = tmp_path / "k"
    _keygen(key)
    recv_keys = tmp_path / "recv-keys.log"
    recv, port, _out = receiver("--psk-file", key, "--keylog", recv_keys)
    src = make_file(tmp_path / "f.bin", 300_000, seed=4)
    capture, keys = tmp_path / "send.pcap", tmp_path / "keys.log"
    res = send(src, port, "--psk-file", key, "--pcap", capture, "--keylog", keys)
    assert res.returncode == 0, res.stderr
    assert os.stat(keys).st_mode & 0o777 == 0o600
    assert keys.read_text() == recv_keys.read_text()  # both ends logged the same keys
    plain = tmp_path / "plain.pcap"
    res = subprocess.run(
        [RTCP, "decrypt", str(capture), "--keylog", str(keys), "-o", str(plain)],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(" without their keys") and " 0 without" in res.stdout
    payloads = [p.payload for p in read_pcap(plain)]
    assert payloads and all(p[0] == wire.VERSION for p in payloads)
    for p in payloads:
        wire.decode(p)  # a valid plaintext segment, CRC-32 included
    data = src.read_bytes()
    assert data[1000:1064] in b"".join(payloads)
    # without the keys: nothing decrypted, everything copied
    other = tmp_path / "other.log"
    other.write_text("RTCP_TRAFFIC " + "00" * 32 + " " + "11" * 32 + " " + "22" * 32 + "\n")
    res = subprocess.run(
        [RTCP, "decrypt", str(capture), "--keylog", str(other), "-o", str(tmp_path / "x.pcap")],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0 and " 0 decrypted" in res.stdout, res.stderr
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0


def test_a_replayed_captured_handshake_stores_nothing(receiver, tmp_path):
    import socket

    from rtcp.core import wire
    from rtcp.trace.pcap import read_pcap

    key = tmp_path / "k"
    _keygen(key)
    recv, port, out = receiver("--psk-file", key)
    src = make_file(tmp_path / "f.bin", 100_000)
    capture = tmp_path / "send.pcap"
    res = send(src, port, "--psk-file", key, "--pcap", capture)
    assert res.returncode == 0, res.stderr
    (out / "f.bin").unlink()
    sent = [p.payload for p in read_pcap(capture) if p.dst[1] == port]
    syn = next(d for d in sent if d[1] & wire.SYN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        for d in [syn, *sent[1:20]]:  # the handshake, then its data, from another address
            attacker.sendto(d, ("127.0.0.1", port))
    wait_for(lambda: "a replayed handshake" in recv.stderr, 20, "the receiver's refusal line")
    recv.signal(signal.SIGTERM)
    assert recv.wait(10) == 0
    assert not (out / "f.bin").exists() and not [p for p in out.iterdir()]
