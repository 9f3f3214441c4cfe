"""The wiring send/recv use, on real loopback sockets: a TraceWriter as the event hook, a
TapSocket under the driver for --pcap; then the ladder of the two real traces, the pcap read
back, and the capture's segments matching the traced ones."""

from __future__ import annotations

import os
import socket
import time

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.net.driver import Driver
from rtcp.trace.ladder import render_ladder
from rtcp.trace.pcap import PcapWriter, TapSocket, read_pcap
from rtcp.trace.writer import TraceWriter, read_trace
from rtcp.transfer.receiver import FileServer
from rtcp.transfer.storage import OutputDir
from tests.sending import lone_sender


def _bound(address=("127.0.0.1", 0)) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    return sock


def test_traced_and_captured_loopback_transfer(tmp_path):
    data = os.urandom(300_000)
    send_trace, recv_trace = tmp_path / "send.jsonl", tmp_path / "recv.jsonl"
    send_pcap, recv_pcap = tmp_path / "send.pcap", tmp_path / "recv.pcap"
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    recv_writer = TraceWriter(recv_trace, "recv")
    recv_cap = PcapWriter(recv_pcap)
    server = Driver(("127.0.0.1", 0))
    server.sock = TapSocket(server.sock, recv_cap)  # after the fact: the selector keys on the fd
    results = []
    FileServer(server, OutputDir(inbox), on_result=results.append,
               config=ConnectionConfig(user_timeout_s=10.0, event_hook=recv_writer.hook()))

    send_writer = TraceWriter(send_trace, "send")
    send_cap = PcapWriter(send_pcap)
    client = Driver(sock=TapSocket(_bound(), send_cap))
    app = lone_sender(tmp_path, "f.bin", data, peer_text="srv", timeout_s=10.0,
                      clock=client.clock)
    client.connect(server.local_address, ConnectionConfig(
        user_timeout_s=10.0, event_hook=send_writer.hook()), app)
    end = time.monotonic() + 20
    try:
        while not (app.done and results):
            assert time.monotonic() < end, "timed out"
            client.run_once(0.002)
            server.run_once(0.002)
        for _ in range(20):  # the last ACKs
            client.run_once(0.001)
            server.run_once(0.001)
    finally:
        client.close()
        server.close()
        for w in (send_writer, recv_writer, send_cap, recv_cap):
            w.close()
    assert app.succeeded and (inbox / "f.bin").read_bytes() == data

    # the ladder of the two real processes' traces (one monotonic clock)
    text = render_ladder([send_trace, recv_trace], full=True)
    assert "SYN seq=0" in text and "SYN-ACK seq=0 ack=1" in text
    assert "lost" not in text.split("\n\n")[0]
    assert "FIN" in text

    # every datagram the sender traced is in its capture, in order, with the real ports
    sent = [r for r in read_trace(send_trace) if r["event"] == "segment_sent"]
    packets = read_pcap(send_pcap)
    out = [p for p in packets if p.dst[1] != p.src[1] and wire.decode(p.payload).src_id
           == sent[0]["conn"]]
    assert len(out) == len(sent)
    for rec, pkt in zip(sent, out):
        seg = wire.decode(pkt.payload)
        assert (seg.flag_names(), len(seg.payload)) == (rec["flags"], rec["len"])
        if "SYN" not in rec["flags"]:
            assert (seg.seq, seg.ack) == (rec["seq"], rec["ack"])
    assert all(p.ip_checksum_ok and p.udp_checksum_ok for p in packets)
    assert all(p.src[0] == "127.0.0.1" and p.dst[0] == "127.0.0.1" for p in packets)
    # the receiver's capture holds what the sender's holds, the other way round
    got = read_pcap(recv_pcap)
    assert {p.payload for p in got} == {p.payload for p in packets}


def test_through_the_real_proxy_with_its_decisions_traced(tmp_path):
    """The README's picture: a small file through a lossy proxy, all three traces."""
    import threading

    from rtcp.proxy.impair import ImpairConfig, Impairer, make_rng
    from rtcp.proxy.loop import Proxy
    from rtcp.trace.proxy_trace import TracingImpairer

    from .simtrace import ScriptedImpairer

    data = os.urandom(20_000)
    paths = {r: tmp_path / f"{r}.jsonl" for r in ("send", "recv", "proxy")}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    writers = {r: TraceWriter(p, r) for r, p in paths.items()}
    server = Driver(("127.0.0.1", 0))
    results = []
    FileServer(server, OutputDir(inbox), on_result=results.append,
               config=ConnectionConfig(user_timeout_s=10.0, event_hook=writers["recv"].hook()))
    up = TracingImpairer(ScriptedImpairer((3,)), writers["proxy"], "up")
    down = TracingImpairer(Impairer(ImpairConfig(), make_rng(1, "down")), writers["proxy"], "down")
    proxy = Proxy(("127.0.0.1", 0), server.local_address[:2], up, down)
    thread = threading.Thread(target=proxy.run, daemon=True)
    thread.start()
    client = Driver(("127.0.0.1", 0))
    app = lone_sender(tmp_path, "f.bin", data, peer_text="proxy", timeout_s=10.0,
                      clock=client.clock)
    client.connect(proxy.local_address, ConnectionConfig(
        user_timeout_s=10.0, pmtud=False, event_hook=writers["send"].hook()), app)
    end = time.monotonic() + 20
    try:
        while not (app.done and results):
            assert time.monotonic() < end, "timed out"
            client.run_once(0.002)
            server.run_once(0.002)
        for _ in range(20):
            client.run_once(0.001)
            server.run_once(0.001)
    finally:
        proxy.stop()
        thread.join(5)
        client.close()
        server.close()
        for w in writers.values():
            w.close()
    assert app.succeeded and (inbox / "f.bin").read_bytes() == data
    assert up.stats.dropped_loss == 1
    text = render_ladder(paths.values(), width=100)
    assert "SYN seq=0" in text and "SYN-ACK seq=0 ack=1" in text
    assert "data seq=2725 len=1362" in text
    assert "lost by the proxy" in text
    assert "fast retransmit" in text or "retransmission: timeout" in text
    assert "FIN" in text
    decisions = [r for r in read_trace(paths["proxy"]) if r["event"] == "proxy_decision"]
    assert [d["id"] for d in decisions] == list(range(1, len(decisions) + 1))
    assert sum(d["decision"] == "lost" for d in decisions) == 1
