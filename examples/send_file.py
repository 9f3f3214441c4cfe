"""Send one file to `rtcp recv` with the library API: a core Connection, the UDP driver,
and the file protocol's FileSender -- no CLI involved.

    .venv/bin/rtcp recv --listen 127.0.0.1:9000 --out /tmp/inbox &
    .venv/bin/python examples/send_file.py some.file 127.0.0.1 9000

From the repository's root after `make venv` (or `make test`), which installs rtcp into .venv;
anywhere rtcp is installed (`pip install -e .`), `rtcp` and `python3` do the same.
This is a deliberately small client: it writes format version 1 (one file, no resume; the
receiver still reads it, docs/transfer.md), where rtcp.transfer.tree.TreeSendApp, what
`rtcp send` runs, writes version 2 and adds resume, the progress, the no-progress timeout and
the exact error mapping.
"""

from __future__ import annotations

import os
import sys

from rtcp.core import events
from rtcp.core.config import ConnectionConfig
from rtcp.net.driver import App, Driver
from rtcp.transfer.protocol import FileSender, VerdictReceived


class SendOneFile(App):
    """Header, file bytes, SHA-256 trailer; then wait for the receiver's verdict."""

    def __init__(self, path: str):
        self.file = open(path, "rb")  # noqa: SIM115 - closed when done
        self.proto = FileSender(os.path.basename(path), os.fstat(self.file.fileno()).st_size)
        self.pending = self.proto.header()  # bytes not yet accepted by conn.send()
        self.left = self.proto.size
        self.trailer_sent = False
        self.verdict = None
        self.done = False

    def event_received(self, event, now):
        conn = self.handle.conn  # an rtcp.core.connection.Connection
        if isinstance(event, events.DataReceived):
            for item in self.proto.receive(conn.read()):
                if isinstance(item, VerdictReceived):
                    self.verdict = item.verdict
                    conn.close()  # FIN: we have nothing more to say
        elif isinstance(event, events.ConnectionClosed):
            self.done = True
            self.file.close()

    def poll(self, now):
        """Called by the driver every iteration: keep the send buffer full."""
        conn = self.handle.conn
        if conn.state.name not in ("ESTABLISHED", "CLOSE_WAIT") or self.trailer_sent:
            return
        while conn.send_buffer_space > 0:
            if not self.pending:
                if self.left:
                    self.pending = self.file.read(min(self.left, 256 * 1024))
                    self.proto.update(self.pending)  # SHA-256 while streaming
                    self.left -= len(self.pending)
                elif not self.trailer_sent:
                    self.pending = self.proto.trailer()
                    self.trailer_sent = True
                else:
                    return
            accepted = conn.send(self.pending)  # returns how much fit in the send buffer
            self.pending = self.pending[accepted:]


USAGE = "usage: send_file.py FILE HOST PORT"


def main() -> int:
    if len(sys.argv) != 4 or not sys.argv[3].isdigit() or not 0 < int(sys.argv[3]) < 65536:
        print(USAGE, file=sys.stderr)
        return 2
    path, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if not os.path.isfile(path):
        print(f"send_file.py: error: {path}: no such file", file=sys.stderr)
        return 2
    app = SendOneFile(path)
    with Driver(("0.0.0.0", 0)) as driver:  # one non-blocking UDP socket, selectors inside
        driver.connect((host, port), ConnectionConfig(user_timeout_s=10.0), app)
        driver.run(until=lambda: app.done)
    if app.verdict is not None and app.verdict.ok:
        print(f"{path}: verified by the receiver, sha256 {app.proto.hexdigest}")
        return 0
    why = app.verdict.describe() if app.verdict else "no verdict (connection lost)"
    print(f"{path}: failed: {why}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
