"""`make soak` (outside `make test`): SEQUENTIAL transfers one after the other, then
CONCURRENT at once, all through an impaired `rtcp proxy`, while a SYN flood runs against the
receiver; then the receiver's open fds, threads and RSS must return to their baseline and no
temporary may be left. python -m tests.hostile.soak [SEQUENTIAL [CONCURRENT]]"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.e2e.conftest import RTCP, Proc, make_file
from tests.hostile.test_floods import flood

SEQUENTIAL = 1000
CONCURRENT = 50
SETTLE_DEADLINE_S = 60.0
FLOOD_SYNS_PER_S = 2000  # a flood the receiver outpaces: at any rate, past the receiver's
# capacity the kernel drops real datagrams with the flood's (no defence in user space helps)
RSS_SLACK_BYTES = 32 * 1024 * 1024


def _usage(pid: int) -> tuple[int, int, int]:
    p = psutil.Process(pid)
    return p.num_fds(), p.num_threads(), p.memory_info().rss


def _send(path: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [RTCP, "send", str(path), "--to", f"127.0.0.1:{port}", "--quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def main(sequential: int, concurrent: int) -> int:
    with tempfile.TemporaryDirectory(prefix="rtcp-soak-") as tmp:
        tmp_path = Path(tmp)
        out = tmp_path / "out"
        # every sender is 127.0.0.1: the per-source limit (32 by default) must admit the
        # CONCURRENT transfers at once (the soak checks resources, not that limit)
        recv = Proc(["recv", "--listen", "127.0.0.1:0", "--out", str(out), "--force",
                     "--max-per-source", str(2 * CONCURRENT)])
        proxy = None
        stop = threading.Event()
        try:
            port = recv.wait_port()
            proxy = Proc([
                "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
                "--loss", "2%", "--delay", "2ms", "--reorder", "2%", "--duplicate", "1%",
            ])
            pport = proxy.wait_port()
            src = make_file(tmp_path / "soak.bin", 300_000)
            warm = _send(src, pport)
            assert warm.wait(120) == 0, warm.stderr.read()
            base_fds, base_threads, base_rss = _usage(recv.pid)
            sent: list[int] = []
            flooder = threading.Thread(
                target=flood, args=(port, 10**9, stop, sent, FLOOD_SYNS_PER_S), daemon=True
            )
            flooder.start()
            failures = 0
            for i in range(sequential):
                p = _send(src, pport)
                if p.wait(300) != 0:
                    failures += 1
                    print(f"sequential {i}: {p.stderr.read().strip()}", file=sys.stderr)
            # one name each: the receiver refuses a second sender of a name being received
            # ("file exists: ... is being received from another sender"), rightly
            copies = []
            for i in range(concurrent):
                copy = tmp_path / f"soak-{i}.bin"
                copy.write_bytes(src.read_bytes())
                copies.append(copy)
            procs = [_send(copy, pport) for copy in copies]
            for i, p in enumerate(procs):
                if p.wait(600) != 0:
                    failures += 1
                    print(f"concurrent {i}: {p.stderr.read().strip()}", file=sys.stderr)
            stop.set()
            flooder.join(30)
            deadline = time.monotonic() + SETTLE_DEADLINE_S
            while True:
                fds, threads, rss = _usage(recv.pid)
                temps = [n for n in os.listdir(out) if n.startswith(".rtcp-tmp-")]
                settled = (
                    fds <= base_fds and threads <= base_threads
                    and rss <= base_rss + RSS_SLACK_BYTES and not temps
                )
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            print(
                f"soak: {sequential} sequential + {concurrent} concurrent transfers, "
                f"{failures} failed, {sent[0] if sent else 0} flood SYNs; receiver fds "
                f"{base_fds}->{fds}, threads {base_threads}->{threads}, RSS "
                f"{base_rss >> 20}->{rss >> 20} MiB, temporaries left {len(temps)}"
            )
            return 0 if failures == 0 and settled else 1
        finally:
            stop.set()
            for proc in (proxy, recv):
                if proc is not None:
                    proc.stop()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    sys.exit(main(*(args + [SEQUENTIAL, CONCURRENT][len(args):])))
