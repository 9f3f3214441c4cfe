"""The handshake-loss case over many seeds, outside `make test` (README, "Handshake and close
through heavy loss"): one `run_transfer` per seed, the failures listed with their outcome, and
how long the sender waited without progress at most (the tail of that distribution is what a
default --timeout cuts: a transfer fails when its longest wait reaches the timeout).

    .venv/bin/python -m tests.sim.handshake_loss_seeds 0 240000 --workers 2
    .venv/bin/python -m tests.sim.handshake_loss_seeds 0 240000 --timeout 60s

About 1.5 ms of CPU per seed.
"""

from __future__ import annotations

import argparse
import multiprocessing
from functools import partial

from rtcp.units import parse_duration
from tests.sim.transfer_model import DEFAULT_TIMEOUT_S, run_transfer

WAIT_STEPS_S = (3, 6, 9, 12, 15, 18, 21, 24, 27, 30)


def _one(seed: int, timeout_s: float) -> tuple[int, str | None, float]:
    net = run_transfer(seed, loss=0.3, delay_s=0.015, file_bytes=1024, timeout_s=timeout_s)
    wait = net.client.longest_wait_s
    if net.client.outcome != "ok":
        return seed, net.client.outcome, wait
    if bytes(net.server.received) != net.client.stream:
        return seed, "delivered bytes differ", wait
    return seed, None, wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int)
    parser.add_argument("end", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--timeout", type=parse_duration, default=DEFAULT_TIMEOUT_S,
        help=f"the sender's --timeout, as rtcp send takes it (default {DEFAULT_TIMEOUT_S:g}s)",
    )
    args = parser.parse_args()
    failed = 0
    waits = [0] * len(WAIT_STEPS_S)
    one = partial(_one, timeout_s=args.timeout)
    with multiprocessing.Pool(args.workers) as pool:
        for seed, outcome, wait in pool.imap_unordered(one, range(args.first, args.end), 50):
            if outcome is not None:
                failed += 1
                print(f"seed {seed}: {outcome}", flush=True)
            for i, step in enumerate(WAIT_STEPS_S):
                if wait >= step:
                    waits[i] += 1
    print(f"{failed} of {args.end - args.first} failed")
    print("longest wait without progress: " + ", ".join(
        f">= {step} s: {count}" for step, count in zip(WAIT_STEPS_S, waits, strict=True) if count
    ))


if __name__ == "__main__":
    main()
