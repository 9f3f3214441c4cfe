"""A malicious `rtcp recv` for tests/hostile: python -m tests.hostile.evil_receiver MODE.
It speaks format version 2 (rtcp.transfer.records), as `rtcp send` does.

MODE lying:   reads the whole file, then answers its entry OK with a SHA-256 of zeros.
MODE dripping: never reads (its window falls to zero), and sends one byte of a verdict that
               announces a long message every DRIP_INTERVAL_S, for ever.

Prints "listening on 127.0.0.1:PORT" like `rtcp recv`, then serves until killed.
"""

from __future__ import annotations

import sys

from rtcp.core import events as ev
from rtcp.core.config import ConnectionConfig
from rtcp.net.driver import App, Driver
from rtcp.transfer import protocol as proto
from rtcp.transfer import records as rec

DRIP_INTERVAL_S = 0.3
DRIPPING_WINDOW_BYTES = 64 * 1024


class Lying(App):
    def __init__(self) -> None:
        self.parser = rec.TreeReceiver()
        self.start = len(rec.stream_start())  # the magic and the version: not the parser's
        self.answered = False

    def event_received(self, event, now: float) -> None:
        if isinstance(event, ev.DataReceived | ev.StreamEnded):
            for chunk in self.handle.conn.read_chunks():
                skip, self.start = (
                    min(self.start, len(chunk)),
                    self.start - min(self.start, len(chunk)),
                )
                for item in self.parser.feed(memoryview(chunk)[skip:]):
                    if isinstance(item, rec.FileEnded) and not self.answered:
                        self.answered = True
                        lie = proto.Verdict(proto.Status.OK, "0" * 64)
                        self.handle.conn.send(rec.encode_verdict(item.index, lie))
                        self.handle.conn.close()


class Dripping(App):
    def __init__(self) -> None:
        # a verdict that announces 1000 bytes of message: within the protocol's bound
        self.verdict = rec.encode_verdict(0, proto.Verdict(proto.Status.OK, "x" * 1000))
        self.sent = 0
        self.next_drip: float | None = None

    def event_received(self, event, now: float) -> None:
        if isinstance(event, ev.HandshakeComplete):
            self.next_drip = now + DRIP_INTERVAL_S

    def deadline(self) -> float | None:
        return self.next_drip

    def on_deadline(self, now: float) -> None:
        if self.sent < len(self.verdict) and not self.handle.conn.is_closed:
            self.handle.conn.send(self.verdict[self.sent : self.sent + 1])
            self.sent += 1
        self.next_drip = now + DRIP_INTERVAL_S


def main(mode: str) -> None:
    factory = {"lying": Lying, "dripping": Dripping}[mode]
    config = ConnectionConfig()
    if mode == "dripping":
        config = ConnectionConfig(receive_buffer_bytes=DRIPPING_WINDOW_BYTES)
    with Driver(("127.0.0.1", 0)) as driver:
        driver.listen(config, lambda peer: factory())
        print(f"listening on 127.0.0.1:{driver.local_address[1]}", flush=True)
        driver.run(lambda: False)


if __name__ == "__main__":
    main(sys.argv[1])
