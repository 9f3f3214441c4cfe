"""contrib/wireshark/rtcp.lua on protected datagrams, through tshark: the readable header decodes,
the rest is marked encrypted. Skipped where tshark is missing (`make wireshark-check`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rtcp.core import protection as prot
from rtcp.core import wire
from rtcp.trace.pcap import PcapWriter

TSHARK = shutil.which("tshark")
DISSECTOR = Path(__file__).resolve().parents[2] / "contrib" / "wireshark" / "rtcp.lua"
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

FIELDS = ("rtcpu.version", "rtcpu.protected", "rtcpu.pn", "rtcpu.seq", "rtcpu.ack",
          "rtcpu.len", "rtcpu.flags", "rtcpu.window", "_ws.col.Info")
CLIENT, SERVER = ("127.0.0.1", 40123), ("127.0.0.1", 9000)


@pytest.mark.parametrize("aead", [prot.AEAD_CHACHA20_POLY1305, prot.AEAD_AES_256_GCM])
def test_tshark_shows_the_header_of_protected_datagrams(tmp_path, aead):
    client = prot.ClientProtection(prot.Secret(psk=bytes(32)))
    syn = client.seal_all([wire.build(wire.SYN, 0x11, 0, 1000, 0, 500, wire.opt_mss(1300))])[0]
    cipher = prot.PacketCipher(bytes(range(32)), bytes(32), prot.ProtectionStats(), aead)
    cipher.next_pn = 41
    data = cipher.seal(wire.build(wire.ACK, 0x11, 0x22, 1001, 77, 512,
                                  wire.opt_timestamps(5, 6), b"secret" * 100))
    pcap = tmp_path / "p.pcap"
    with PcapWriter(pcap) as writer:
        writer.write(syn, CLIENT, SERVER, t=1_700_000_000)
        writer.write(data, CLIENT, SERVER, t=1_700_000_000.001)
    args = [TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-T", "fields",
            "-E", "separator=/t"]
    for name in FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "Lua: Error" not in out.stderr, out.stderr
    rows = [dict(zip(FIELDS, line.split("\t"))) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    assert rows[0]["rtcpu.version"] == "1" and rows[0]["rtcpu.protected"] == ""
    row = rows[1]
    assert row["rtcpu.version"] == str(cipher.version) and row["rtcpu.protected"] == "1"
    assert row["rtcpu.pn"] == "41"
    assert (row["rtcpu.seq"], row["rtcpu.ack"], row["rtcpu.window"]) == ("1001", "77", "512")
    assert row["rtcpu.len"] == "600"  # the payload's length: options length is readable
    assert "[encrypted]" in row["_ws.col.Info"]
