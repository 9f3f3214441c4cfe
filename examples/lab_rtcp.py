"""rtcp itself behind a changing network: `rtcp recv` and `rtcp send` as processes, and
rtcp.proxy.Lab between them driven from Python.

    python examples/lab_rtcp.py

The transfer starts on a clean 20 mbit/s link; once the proxy has seen 200 datagrams the link
loses 20% for 2 s, then goes down for 2 s (a partition), and the transfer still completes with
a verified SHA-256. The changes are printed with the moment each took effect.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rtcp.proxy import Lab

RTCP = str(Path(sys.executable).parent / "rtcp")


def wait_for(condition, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the transfer did not get going")
        time.sleep(0.01)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "data.bin"
        src.write_bytes(os.urandom(10_000_000))  # 4 s at least at 20 mbit/s
        recv = subprocess.Popen(
            [RTCP, "recv", "--listen", "127.0.0.1:0", "--out", str(Path(folder) / "inbox")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = recv.stdout.readline()
            port = int(re.search(r":(\d+)$", line.strip()).group(1))
            with Lab(("127.0.0.1", port), rate="20mbit", mtu="1400", seed=1) as lab:
                send = subprocess.Popen(
                    [RTCP, "send", str(src), "--to", f"127.0.0.1:{lab.address[1]}"]
                )
                wait_for(lambda: lab.stats["up"]["datagrams_in"] >= 200)
                lab.set(loss="20%", duration="2s")
                wait_for(lambda: lab.stats["changes_total"] >= 2)  # the loss ended
                lab.down(duration="2s")
                code = send.wait()
                for change in lab.stats["changes"]:
                    print(f"{change['elapsed_ns'] / 1e9:7.3f} s  {change['summary']}")
            print(f"rtcp send exited with {code} (0: verified by the receiver)")
        finally:
            recv.terminate()
            recv.wait()


if __name__ == "__main__":
    main()
