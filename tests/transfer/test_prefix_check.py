"""Resume: the sender hashes its own prefix beside the event loop (a ReadAhead helper), so a
prefix of many GB neither freezes the loop nor runs past --timeout. Driven by hand: the
offer arrives, the file's reads block until the test lets them go."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from types import SimpleNamespace

from rtcp.transfer import records as rec
from rtcp.transfer.tree import TreeSendApp, collect_entries

SIZE = 2 * 1024 * 1024
OFFSET = 1024 * 1024


class GatedFile:
    """A file whose reads wait until `gate` is set (a slow disk, without a clock)."""

    def __init__(self, f, gate: threading.Event):
        self.f, self.gate = f, gate
        self.name = f.name

    def read(self, n: int) -> bytes:
        assert self.gate.wait(30), "the test never opened the gate"
        return self.f.read(n)

    def seek(self, pos: int) -> int:
        return self.f.seek(pos)

    def close(self) -> None:
        self.f.close()


def _app_at_offer(tmp_path, warnings: list[str]):
    data = os.urandom(SIZE)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    app = TreeSendApp(collect_entries([str(src)]), peer_text="r", warn=warnings.append)
    app.handle = SimpleNamespace(driver=None)
    gate = threading.Event()
    app._file = GatedFile(open(src, "rb", buffering=0), gate)  # noqa: SIM115 - app.close()
    app.results[0].bytes = SIZE
    app.sent, app.waiting = [0], 0
    return app, data, gate


def _finish(app, now: float) -> None:
    deadline = time.monotonic() + 30
    while not app._prefix_step(now):
        assert time.monotonic() < deadline, "the prefix check did not end"
        time.sleep(0.001)


def test_the_prefix_is_hashed_beside_the_loop_and_its_progress_counts(tmp_path):
    warnings: list[str] = []
    app, data, gate = _app_at_offer(tmp_path, warnings)
    try:
        digest = hashlib.sha256(data[:OFFSET]).digest()
        app._offer(rec.OfferFor(0, OFFSET, digest), now=1.0)
        # the offer returned while the file cannot be read yet: nothing waits in the loop
        assert app._prefix is not None and not app._prefix_step(2.0)
        assert app.last_progress == 1.0 and [bytes(p) for p in app._out] == [rec.stream_start()]
        gate.set()
        _finish(app, now=50.0)
        assert app.last_progress == 50.0  # the chunks hashed counted as progress
        assert app.results[0].resumed_from == OFFSET and app.resumed_bytes == OFFSET
        assert bytes(app._out[-1]) == rec.encode_start(OFFSET) and warnings == []
    finally:
        app.close()


def test_a_prefix_that_differs_starts_over_saying_so(tmp_path):
    warnings: list[str] = []
    app, _data, gate = _app_at_offer(tmp_path, warnings)
    try:
        gate.set()
        app._offer(rec.OfferFor(0, OFFSET, bytes(32)), now=1.0)
        _finish(app, now=2.0)
        assert app.results[0].resumed_from == 0 and app.resumed_bytes == 0
        assert bytes(app._out[-1]) == rec.encode_start(0)
        assert warnings == ["big.bin: changed since the partial on the receiver: starting over"]
    finally:
        app.close()
