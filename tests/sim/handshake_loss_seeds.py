"""The handshake-loss case over many seeds, outside `make test` (README, "Handshake and close
through heavy loss"): one `run_transfer` per seed, the failures listed with their outcome.

    .venv/bin/python -m tests.sim.handshake_loss_seeds 0 240000 --workers 2

About 1.5 ms of CPU per seed.
"""

from __future__ import annotations

import argparse
import multiprocessing

from tests.sim.transfer_model import run_transfer


def _one(seed: int) -> tuple[int, str | None]:
    net = run_transfer(seed, loss=0.3, delay_s=0.015, file_bytes=1024)
    if net.client.outcome != "ok":
        return seed, net.client.outcome
    if bytes(net.server.received) != net.client.stream:
        return seed, "delivered bytes differ"
    return seed, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int)
    parser.add_argument("end", type=int)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    failed = 0
    with multiprocessing.Pool(args.workers) as pool:
        for seed, outcome in pool.imap_unordered(_one, range(args.first, args.end), 50):
            if outcome is not None:
                failed += 1
                print(f"seed {seed}: {outcome}", flush=True)
    print(f"{failed} of {args.end - args.first} failed")


if __name__ == "__main__":
    main()
