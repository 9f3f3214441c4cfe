"""Key setup is start-up, not transfer time: a keyed send builds its keys (and loads the
cryptography library) before its clock starts, and reading a key loads the library, so that
`seconds` and goodput compare with a plaintext send's (the encrypted rows of `rtcp bench`)."""

from __future__ import annotations

import socket
import subprocess
import sys

from rtcp.core import protection as prot
from rtcp.core.protection import Secret
from rtcp.transfer import tree
from rtcp.transfer.tree import collect_entries, send_tree


def _closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_keyed_send_makes_its_keys_before_its_clock_starts(tmp_path, monkeypatch):
    order: list[str] = []
    real_protection = tree.ClientProtection
    real_app_init = tree.TreeSendApp.__init__

    def protection(*args, **kwargs):
        order.append("keys")
        return real_protection(*args, **kwargs)

    def app_init(self, *args, **kwargs):
        order.append("clock")
        real_app_init(self, *args, **kwargs)

    monkeypatch.setattr(tree, "ClientProtection", protection)
    monkeypatch.setattr(tree.TreeSendApp, "__init__", app_init)
    for i in range(2):
        (tmp_path / f"f{i}").write_bytes(b"x" * 1000)
    entries = collect_entries([str(tmp_path / "f0"), str(tmp_path / "f1")])
    result = send_tree(
        entries, "127.0.0.1", _closed_udp_port(), timeout_s=5.0,
        secret=Secret(psk=bytes(32)), parallel=2,
    )
    assert result.exit_code != 0  # nothing listens there: refused at once
    assert order == ["keys", "keys", "clock", "clock"]


def test_reading_a_key_loads_the_cryptography_library(tmp_path):
    key = tmp_path / "k.key"
    prot.write_key_file(key, prot.generate_key())
    probe = (
        "import sys\n"
        "from rtcp.core import protection as p\n"
        "from rtcp.transfer import keys\n"
        "assert not p._AEAD_CLASSES\n"
        "keys.load_secret(sys.argv[1], None)\n"
        "print(sorted(p._AEAD_CLASSES))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(key)], capture_output=True, text=True, timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["['AESGCM',", "'ChaCha20Poly1305']"]
