"""The helpers send/recv/proxy use for --trace, --pcap and --explain."""

from __future__ import annotations

import pytest

from rtcp.core.config import ConnectionConfig
from rtcp.errors import LocalIOError
from rtcp.trace.command import finish_trace, open_pcap, open_trace
from tests.sim.network import SimNetwork


def _run(writer) -> None:
    net = SimNetwork(client_config=ConnectionConfig(event_hook=writer.hook(), pmtud=False))
    net.start(b"hello" * 1000)
    net.run()


def test_explain_without_trace_uses_a_temporary_file_and_removes_it():
    writer = open_trace(None, "send", explain=True)
    assert writer is not None and writer.path is not None and writer.path.exists()
    _run(writer)
    text = finish_trace(writer, explain=True, width=90)
    assert text is not None and "SYN seq=0" in text and "FIN" in text
    assert not writer.path.exists()


def test_trace_file_is_kept_and_explain_is_optional(tmp_path):
    path = tmp_path / "send.jsonl"
    writer = open_trace(path, "send")
    _run(writer)
    assert finish_trace(writer) is None
    assert path.read_text().count("\n") > 10
    writer = open_trace(path, "send", explain=True)
    _run(writer)
    assert "SYN-ACK seq=0 ack=1" in finish_trace(writer, explain=True)
    assert path.exists()


def test_nothing_asked_nothing_opened():
    assert open_trace(None, "send") is None
    assert finish_trace(None, explain=True) is None
    assert open_pcap(None) is None


def test_unwritable_paths_are_local_io_errors(tmp_path):
    with pytest.raises(LocalIOError, match="--trace"):
        open_trace(tmp_path / "missing" / "t.jsonl", "send")
    with pytest.raises(LocalIOError, match="--pcap"):
        open_pcap(tmp_path / "missing" / "t.pcap")
