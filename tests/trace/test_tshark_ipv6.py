"""contrib/wireshark/rtcp.lua on IPv6 captures (#12): the `--pcap` of a real transfer over ::1,
and a dual-stack receiver's capture of an IPv4 client (IPv4 packets, as on the wire, though its
socket names the client ::ffff:127.0.0.1), read by tshark.
Skipped where tshark or IPv6 loopback is missing (`make wireshark-check` installs tshark)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import RTCP, Proc, make_file
from tests.trace.test_tshark import HEURISTIC_FIRST

TSHARK = shutil.which("tshark")
DISSECTOR = Path(__file__).resolve().parents[2] / "contrib" / "wireshark" / "rtcp.lua"
FIELDS = ("ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport", "rtcpu.version",
          "rtcpu.flags.syn", "rtcpu.flags.ack", "rtcpu.len", "rtcpu.checksum_good",
          "udp.checksum.status", "_ws.col.Protocol")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(TSHARK is None, reason="tshark is not installed"),
    pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here"),
]


def _tshark(pcap: Path) -> list[dict[str, str]]:
    args = [TSHARK, "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap), "-o",
            "udp.check_checksum:TRUE", *HEURISTIC_FIRST, "-T", "fields", "-E", "separator=/t"]
    for name in FIELDS:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and "Lua: Error" not in out.stderr, out.stderr
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]


def _transfer(tmp_path: Path, listen: str, to: str) -> tuple[Path, Path, Path]:
    """One small transfer with --pcap at both ends: (sender's, receiver's capture, trace)."""
    send_pcap, recv_pcap = tmp_path / "send.pcap", tmp_path / "recv.pcap"
    trace = tmp_path / "send.jsonl"
    recv = Proc(["recv", "--listen", listen, "--out", str(tmp_path / "out"), "--insecure",
                 "--pcap", str(recv_pcap)])
    try:
        port = recv.wait_port(30)
        src = make_file(tmp_path / "f.bin", 200_000)
        done = subprocess.run(
            [RTCP, "send", str(src), "--to", to.format(port=port), "--quiet",
             "--pcap", str(send_pcap), "--trace", str(trace)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        recv.popen.terminate()
        assert recv.wait(30) == 0  # its capture is flushed and closed
    finally:
        recv.stop()
    assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes()
    return send_pcap, recv_pcap, trace


def test_tshark_reads_the_capture_of_an_ipv6_transfer(tmp_path):
    send_pcap, recv_pcap, trace = _transfer(tmp_path, "[::1]:0", "[::1]:{port}")
    sent = sum(1 for line in trace.read_text().splitlines()
               if json.loads(line)["event"] == "segment_sent")
    for pcap in (send_pcap, recv_pcap):
        rows = _tshark(pcap)
        assert rows, pcap
        assert {(r["ipv6.src"], r["ipv6.dst"]) for r in rows} <= {("::1", "::1")}
        odd = [r for r in rows if r["rtcpu.version"] != "1" or r["_ws.col.Protocol"] != "rtcp"]
        assert odd == [], odd
        assert all(r["udp.checksum.status"] == "1" for r in rows)  # 1: "Good"
        assert all(r["rtcpu.checksum_good"] == "1" for r in rows)
        assert (rows[0]["rtcpu.flags.syn"], rows[0]["rtcpu.flags.ack"]) == ("1", "0")
        assert sum(int(r["rtcpu.len"] or 0) for r in rows) >= 200_000
    # the sender's capture holds every segment its trace says it sent
    sender_port = _tshark(send_pcap)[0]["udp.srcport"]
    assert sum(1 for r in _tshark(send_pcap) if r["udp.srcport"] == sender_port) == sent


def test_tshark_reads_a_dual_stack_receivers_capture_of_an_ipv4_client(tmp_path):
    # [::] serves 127.0.0.1 through its IPv6 socket, which names it ::ffff:127.0.0.1; the
    # packets on the wire were IPv4, and so is the capture (it showed them as IPv6)
    _, recv_pcap, _ = _transfer(tmp_path, "[::]:0", "127.0.0.1:{port}")
    rows = _tshark(recv_pcap)
    assert rows
    assert all(r["rtcpu.version"] == "1" and r["rtcpu.checksum_good"] == "1" for r in rows)
    assert all(r["udp.checksum.status"] == "1" for r in rows)
    assert {(r["ip.src"], r["ip.dst"], r["ipv6.src"]) for r in rows} == {
        ("127.0.0.1", "127.0.0.1", "")}
