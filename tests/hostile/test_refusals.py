"""A connection a limit refuses learns which limit: a BUSY verdict naming it (exit 8), not a
bare reset; and the receiver says so on its stderr."""

from __future__ import annotations

from tests.e2e.conftest import make_file, send, wait_for
from tests.hostile.attacker import Attacker


def test_a_refusal_names_the_limit(receiver, tmp_path):
    proc, port, _out = receiver("--max-connections", "1")
    holder = Attacker(port)  # holds the one slot (handshaken, silent)
    try:
        r = send(make_file(tmp_path / "x.bin", 10_000), port, timeout=60)
    finally:
        holder.close()
    assert r.returncode == 8, r.stderr
    assert "limit 'concurrent connections' (1) reached" in r.stderr
    said = "limit 'concurrent connections' reached (--max-connections)"
    wait_for(lambda: said in proc.stderr, 30, "the receiver's line")


def test_largest_file_is_refused_at_the_header(receiver, tmp_path):
    _proc, port, out = receiver("--max-size", "1000")
    r = send(make_file(tmp_path / "big.bin", 5000), port, timeout=60)
    assert r.returncode == 8, r.stderr
    assert "largest file" in r.stderr
    assert not (out / "big.bin").exists()
    assert send(make_file(tmp_path / "ok.bin", 1000), port, timeout=60).returncode == 0
