"""contrib/wireshark/rtcp.lua through tshark: every header field and option decodes.

Skipped where tshark is missing; `make wireshark-check` installs it and runs these."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rtcp.core import wire
from rtcp.trace.pcap import PcapWriter

DISSECTOR = Path(__file__).resolve().parents[2] / "contrib" / "wireshark" / "rtcp.lua"
TSHARK = shutil.which("tshark")

pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

CLIENT, SERVER = ("127.0.0.1", 40123), ("127.0.0.1", 9000)
C_ID, S_ID = 0x1A2B3C4D, 0x5E6F7081
C_ISN, S_ISN = 4_294_967_000, 1_000_000  # the client's sequence numbers wrap

FIELDS = (
    "frame.number", "udp.srcport", "rtcpu.version", "rtcpu.flags", "rtcpu.flags.syn",
    "rtcpu.flags.ack", "rtcpu.flags.fin", "rtcpu.flags.probe", "rtcpu.window", "rtcpu.src_id",
    "rtcpu.dst_id", "rtcpu.seq", "rtcpu.ack", "rtcpu.seq_rel", "rtcpu.ack_rel", "rtcpu.opt_len",
    "rtcpu.checksum_good", "rtcpu.len", "rtcpu.opt.mss", "rtcpu.opt.wscale",
    "rtcpu.opt.sack_perm", "rtcpu.opt.ts_val", "rtcpu.opt.ts_ecr", "rtcpu.opt.sack.left",
    "rtcpu.opt.sack.right", "rtcpu.opt.sack.left_rel", "rtcpu.opt.sack.right_rel",
    "rtcpu.opt.pmtu_ack",
)


def w(n: int) -> int:
    return n & 0xFFFFFFFF


def _segments() -> list[tuple[bytes, tuple, tuple]]:
    """A handshake, data, a SACK, a path-MTU probe and its confirmation, a corrupted copy."""
    syn = wire.encode(wire.Segment(wire.SYN, C_ID, 0, C_ISN, 0, 65535, mss=1400, wscale=7,
                                   sack_permitted=True, ts_val=111, ts_ecr=0))
    synack = wire.encode(wire.Segment(wire.SYN | wire.ACK, S_ID, C_ID, S_ISN, w(C_ISN + 1), 65535,
                                      mss=1360, wscale=6, sack_permitted=True, ts_val=222,
                                      ts_ecr=111))
    data1 = wire.build(wire.ACK, C_ID, S_ID, w(C_ISN + 1), S_ISN + 1, 512, b"", b"a" * 1000)
    data2 = wire.build(wire.ACK, C_ID, S_ID, w(C_ISN + 1001), S_ISN + 1, 512, b"", b"b" * 1000)
    sack = wire.build(wire.ACK, S_ID, C_ID, S_ISN + 1, w(C_ISN + 1), 500, wire.opt_sack(
        [(w(C_ISN + 1001), w(C_ISN + 2001))]))
    probe = wire.build(wire.PROBE | wire.ACK, C_ID, S_ID, w(C_ISN + 2001), S_ISN + 1, 512,
                       b"", bytes(1400))
    pmtu = wire.build(wire.ACK, S_ID, C_ID, S_ISN + 1, w(C_ISN + 2001), 500,
                      wire.opt_pmtu_ack(1428))
    bad = bytearray(data2)
    bad[200] ^= 0x10
    fin = wire.build(wire.FIN | wire.ACK, C_ID, S_ID, w(C_ISN + 2001), S_ISN + 1, 512)
    up, down = (CLIENT, SERVER), (SERVER, CLIENT)
    return [(syn, *up), (synack, *down), (data1, *up), (sack, *down), (data2, *up),
            (probe, *up), (pmtu, *down), (bytes(bad), *up), (fin, *up)]


# Wireshark gives a UDP port that a dissector registered for (31 of Linux's ephemeral ports:
# 41170 MANOLITO, 37008 TZSP, ...) to that dissector before any heuristic: a real capture
# whose random port is one of them reads as that protocol. The captures of real transfers are
# read with the heuristic first, as the README tells (docs/trace-format.md).
HEURISTIC_FIRST = ("-o", "udp.try_heuristic_first:TRUE")


def _tshark(pcap: Path, *extra: str) -> list[dict[str, str]]:
    args = [TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), *HEURISTIC_FIRST,
            "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,",
            *extra]
    for name in FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "Lua: Error" not in out.stderr, out.stderr
    rows = []
    for line in out.stdout.splitlines():
        rows.append(dict(zip(FIELDS, line.split("\t"))))
    return rows


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> list[dict[str, str]]:
    pcap = tmp_path_factory.mktemp("tshark") / "rtcp.pcap"
    with PcapWriter(pcap) as writer:
        for i, (data, src, dst) in enumerate(_segments()):
            writer.write(data, src, dst, t=1_700_000_000 + i * 0.001)
    return _tshark(pcap)


def test_tshark_decodes_the_header(decoded):
    assert len(decoded) == 9
    syn, synack, data1 = decoded[0], decoded[1], decoded[2]
    assert all(row["rtcpu.version"] == "1" for row in decoded)
    assert (syn["rtcpu.flags.syn"], syn["rtcpu.flags.ack"]) == ("1", "0")
    assert (synack["rtcpu.flags.syn"], synack["rtcpu.flags.ack"]) == ("1", "1")
    assert syn["rtcpu.flags"] == "0x02" and synack["rtcpu.flags"] == "0x12"
    assert syn["rtcpu.src_id"] == f"0x{C_ID:08x}" and syn["rtcpu.dst_id"] == "0x00000000"
    assert synack["rtcpu.dst_id"] == f"0x{C_ID:08x}"
    assert syn["rtcpu.seq"] == str(C_ISN) and synack["rtcpu.seq"] == str(S_ISN)
    assert synack["rtcpu.ack"] == str(C_ISN + 1)
    assert data1["rtcpu.seq"] == str(C_ISN + 1) and data1["rtcpu.window"] == "512"
    assert data1["rtcpu.len"] == "1000" and data1["rtcpu.opt_len"] == "0"
    assert syn["udp.srcport"] == str(CLIENT[1])


def test_tshark_relative_numbers_across_the_wrap(decoded):
    rel = [(r["rtcpu.seq_rel"], r["rtcpu.ack_rel"]) for r in decoded]
    assert rel[0] == ("0", "")
    assert rel[1] == ("0", "1")
    assert rel[2] == ("1", "1")
    assert rel[4] == ("1001", "1")  # seq 4294968001 wrapped to 705 on the wire
    assert decoded[4]["rtcpu.seq"] == str((C_ISN + 1001) & 0xFFFFFFFF)
    assert rel[8] == ("2001", "1")


def test_tshark_decodes_the_options(decoded):
    syn, synack, _, sack, _, probe, pmtu = decoded[:7]
    assert syn["rtcpu.opt.mss"] == "1400" and syn["rtcpu.opt.wscale"] == "7"
    assert syn["rtcpu.opt.sack_perm"] == "1"
    assert (syn["rtcpu.opt.ts_val"], syn["rtcpu.opt.ts_ecr"]) == ("111", "0")
    assert synack["rtcpu.opt.mss"] == "1360" and synack["rtcpu.opt.ts_ecr"] == "111"
    assert sack["rtcpu.opt.sack.left"] == str((C_ISN + 1001) & 0xFFFFFFFF)
    assert sack["rtcpu.opt.sack.right"] == str((C_ISN + 2001) & 0xFFFFFFFF)
    assert (sack["rtcpu.opt.sack.left_rel"], sack["rtcpu.opt.sack.right_rel"]) == ("1001", "2001")
    assert probe["rtcpu.flags.probe"] == "1" and probe["rtcpu.len"] == "1400"
    assert pmtu["rtcpu.opt.pmtu_ack"] == "1428"


def test_tshark_checksum_validity(decoded):
    good = [r["rtcpu.checksum_good"] for r in decoded]
    assert good == ["1"] * 7 + ["0", "1"]
    assert decoded[8]["rtcpu.flags.fin"] == "1"


def test_tshark_info_column_and_decode_as(tmp_path):
    pcap = tmp_path / "rtcp.pcap"
    with PcapWriter(pcap) as writer:
        for data, src, dst in _segments()[:3]:
            writer.write(data, src, dst, t=1.0)
    base = [TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap)]
    out = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    lines = out.stdout.splitlines()
    assert "rtcp" in lines[0] and "[SYN] Seq=0 Win=65535 Len=0 MSS=1400 WS=128 SACK_PERM" in lines[0]
    assert "[SYN, ACK] Seq=0 Ack=1" in lines[1]
    assert "[ACK] Seq=1 Ack=1 Win=512 Len=1000" in lines[2]
    # heuristic off: plain UDP, unless "Decode As" names the port
    off = subprocess.run(base + ["-o", "rtcpu.heuristic:FALSE"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert "rtcp" not in off.stdout
    forced = subprocess.run(base + ["-o", "rtcpu.heuristic:FALSE", "-d", "udp.port==9000,rtcpu"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert forced.stdout.count("rtcp") == 3


PROXY_LISTEN, PROXY_UPSTREAM = ("127.0.0.1", 9100), ("127.0.0.1", 40999)


def test_tshark_retransmissions_per_leg_of_a_proxy_capture(tmp_path):
    """A capture at `rtcp proxy` holds each datagram twice: client -> proxy, then proxy ->
    server. The two legs are two conversations: only the true retransmission is flagged, on
    each leg it crosses (keyed by connection id alone, every forwarded copy was: 20 of 47
    frames where 4 were true)."""
    up_in, up_out = (CLIENT, PROXY_LISTEN), (PROXY_UPSTREAM, SERVER)
    data = [wire.build(wire.ACK, C_ID, S_ID, w(C_ISN + 1 + 1000 * i), S_ISN + 1, 512, b"",
                       bytes([65 + i]) * 1000) for i in range(3)]
    syn, synack = _segments()[0][0], _segments()[1][0]
    frames = [
        (syn, *up_in), (syn, *up_out), (synack, SERVER, PROXY_UPSTREAM),
        (synack, PROXY_LISTEN, CLIENT),
        (data[0], *up_in), (data[0], *up_out),
        (data[1], *up_in),  # lost at the proxy: never on the second leg
        (data[2], *up_in), (data[2], *up_out),
        (data[1], *up_in), (data[1], *up_out),  # its retransmission, on both legs
    ]
    pcap = tmp_path / "proxy.pcap"
    with PcapWriter(pcap) as writer:
        for i, (datagram, src, dst) in enumerate(frames):
            writer.write(datagram, src, dst, t=1_700_000_000 + i * 0.001)
    flagged = _tshark(pcap, "-Y", "rtcpu.analysis.retransmission")
    # the one retransmission, once on each leg (each leg is a conversation, as in Wireshark's
    # TCP analysis); the forwarded copies of first transmissions are not flagged
    assert [row["frame.number"] for row in flagged] == ["10", "11"]


def test_tshark_counts_the_true_retransmissions_of_a_real_proxy_capture(tmp_path):
    """rtcp send through `rtcp proxy --pcap` with loss (and an MTU, so that segments stay
    Ethernet-sized): on the client's leg the dissector flags
    exactly the retransmissions the sender's trace records."""
    import json

    from tests.e2e.conftest import RTCP, Proc, make_file

    procs = []
    try:
        recv = Proc(["recv", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "in")])
        procs.append(recv)
        proxy = Proc(["proxy", "--listen", "127.0.0.1:0", "--upstream",
                      f"127.0.0.1:{recv.wait_port(30)}", "--loss-up", "5%", "--seed", "4", "--mtu", "1472",
                      "--pcap", str(tmp_path / "proxy.pcap")])
        procs.append(proxy)
        port = proxy.wait_port(30)
        done = subprocess.run(
            [RTCP, "send", str(make_file(tmp_path / "f.bin", 300_000)), "--to",
             f"127.0.0.1:{port}", "--quiet", "--cc", "reno", "--trace", str(tmp_path / "s.jsonl")],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        proxy.popen.terminate()
        assert proxy.wait(30) == 0  # its capture is complete
    finally:
        for proc in procs:
            proc.stop()
    records = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    retransmitted = sum(1 for r in records if r["event"] == "segment_sent" and r.get("retransmit")
                        and "PROBE" not in r["flags"])
    assert retransmitted > 0  # 5% loss on some 250 datagrams
    flagged = _tshark(tmp_path / "proxy.pcap", "-Y", "rtcpu.analysis.retransmission")
    client_leg = _tshark(tmp_path / "proxy.pcap", "-Y",
                         f"rtcpu.analysis.retransmission && udp.dstport == {port}")
    assert len(client_leg) == retransmitted
    # the server's leg carries each forwarded retransmission once more, nothing else
    assert len(flagged) <= 2 * retransmitted


def test_tshark_names_retry_and_the_path_validation_options(tmp_path):
    """A RETRY answering a SYN (flag 0x40: the heuristic took it for something else and the
    datagram showed as plain UDP), the SYN that echoes its token (option 31), and a path
    challenge (32) with its response (33)."""
    token, challenge = bytes(range(1, 21)), bytes.fromhex("0123456789abcdef")
    syn = _segments()[0][0]
    retry = wire.build(wire.RETRY, 0, C_ID, 0, w(C_ISN + 1), 0,
                       wire.opt_bytes(wire.OPT_RETRY_TOKEN, token))
    syn_token = wire.build(wire.SYN, C_ID, 0, C_ISN, 0, 65535,
                           wire.opt_mss(1400) + wire.opt_bytes(wire.OPT_RETRY_TOKEN, token))
    ask = wire.build(0, S_ID, C_ID, 0, 0, 0, wire.opt_bytes(wire.OPT_PATH_CHALLENGE, challenge))
    answer = wire.build(0, C_ID, S_ID, 0, 0, 0, wire.opt_bytes(wire.OPT_PATH_RESPONSE, challenge))
    frames = [(syn, CLIENT, SERVER), (retry, SERVER, CLIENT), (syn_token, CLIENT, SERVER),
              (ask, SERVER, CLIENT), (answer, CLIENT, SERVER)]
    pcap = tmp_path / "retry.pcap"
    with PcapWriter(pcap) as writer:
        for i, (datagram, src, dst) in enumerate(frames):
            writer.write(datagram, src, dst, t=1_700_000_000 + i * 0.001)
    fields = ("rtcpu.flags", "rtcpu.flags.retry", "rtcpu.opt.kind", "rtcpu.opt.retry_token",
              "rtcpu.opt.path_challenge", "rtcpu.opt.path_response", "rtcpu.checksum_good",
              "_ws.col.Info")
    args = [TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-T", "fields",
            "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in fields:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "Lua: Error" not in out.stderr, out.stderr
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]
    assert len(rows) == 5 and all(r["rtcpu.checksum_good"] == "1" for r in rows)
    _, retry_row, again, ask_row, answer_row = rows
    assert retry_row["rtcpu.flags"] == "0x40" and retry_row["rtcpu.flags.retry"] == "1"
    assert "[RETRY]" in retry_row["_ws.col.Info"] and "TOKEN" in retry_row["_ws.col.Info"]
    assert retry_row["rtcpu.opt.kind"] == "31"
    assert retry_row["rtcpu.opt.retry_token"] == token.hex()
    assert again["rtcpu.flags.retry"] == "0" and again["rtcpu.opt.retry_token"] == token.hex()
    assert again["rtcpu.opt.kind"] == "2,31"
    assert ask_row["rtcpu.opt.kind"] == "32" and ask_row["rtcpu.opt.path_challenge"] == challenge.hex()
    assert f"PATH_CHALLENGE={challenge.hex()}" in ask_row["_ws.col.Info"]
    assert answer_row["rtcpu.opt.kind"] == "33"
    assert answer_row["rtcpu.opt.path_response"] == challenge.hex()
    assert f"PATH_RESPONSE={challenge.hex()}" in answer_row["_ws.col.Info"]
    # the names, as the packet details show them
    detail = subprocess.run([TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-V"],
                            capture_output=True, text=True, timeout=120, check=False).stdout
    for name in ("Retry token", "Path challenge", "Path response",
                 "RETRY (address validation token)"):
        assert name in detail


def test_tshark_finds_rtcp_on_ports_wireshark_gives_to_other_protocols(tmp_path):
    """41170 and 37008 are ephemeral ports that Wireshark registers for MANOLITO and TZSP:
    with the heuristic first (HEURISTIC_FIRST), a transfer between them still reads as rtcp."""
    pcap = tmp_path / "ports.pcap"
    here, there = ("127.0.0.1", 41170), ("127.0.0.1", 37008)
    with PcapWriter(pcap) as writer:
        for i, (data, src, _dst) in enumerate(_segments()):
            up = src == CLIENT
            writer.write(data, here if up else there, there if up else here, t=1.0 + i / 1000)
    rows = _tshark(pcap)
    assert len(rows) == len(_segments())
    assert all(r["rtcpu.version"] == "1" for r in rows), rows
