"""Traced transfers in the simulator: the sender's, the receiver's and the proxy's traces of
one transfer, with losses scripted exactly where a test wants them."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtcp.core import wire
from rtcp.core.config import ConnectionConfig
from rtcp.proxy.impair import ImpairConfig, Impairer
from rtcp.trace.proxy_trace import TracingImpairer
from rtcp.trace.writer import TraceWriter
from tests.sim.network import START_TIME_S, SimNetwork

MSS = 1000


class ScriptedImpairer(Impairer):
    """An Impairer that also drops chosen data transmissions: the n-th datagram carrying
    payload (1-based, retransmissions counted too), as its own loss model would (`loss`)."""

    def __init__(self, drop_data: tuple[int, ...] = (), config: ImpairConfig | None = None,
                 seed: int = 1):
        super().__init__(config or ImpairConfig(), random.Random(seed))
        self.drop_data = set(drop_data)
        self.data_seen = 0

    def process(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        if len(data) > wire.HEADER_BYTES + 12 and not data[1] & (wire.SYN | wire.PROBE):
            seg = wire.decode(data)
            if seg.payload:
                self.data_seen += 1
                if self.data_seen in self.drop_data:
                    self.stats.datagrams_in += 1
                    self.stats.bytes_in += len(data)
                    self.stats.dropped_loss += 1
                    return []
        return super().process(data, now)


@dataclass
class TracedTransfer:
    net: SimNetwork
    send: Path
    recv: Path
    proxy: Path

    @property
    def paths(self) -> list[Path]:
        return [self.send, self.recv, self.proxy]


def traced_transfer(
    tmp_path: Path,
    size: int,
    *,
    drop_data: tuple[int, ...] = (),
    up: ImpairConfig | None = None,
    down: ImpairConfig | None = None,
    sack: bool = True,
    seed: int = 0,
    drop_filter: Callable[[str, bytes], bool] | None = None,
    delay_s: float = 0.005,
) -> TracedTransfer:
    """Send `size` bytes client -> server through traced impairers; every trace closed."""
    holder: dict[str, SimNetwork] = {}

    def clock() -> float:
        return holder["net"].now

    paths = {role: tmp_path / f"{role}.jsonl" for role in ("send", "recv", "proxy")}
    writers = {
        role: TraceWriter(path, role, START_TIME_S, clock=clock) for role, path in paths.items()
    }
    # Reno: these scripted ladders count exact segments, and BBR's pacing would split batches
    common = {"pmtud": False, "mss_bytes": MSS, "sack": sack, "congestion_control": "reno"}
    net = SimNetwork(
        seed=seed,
        client_config=ConnectionConfig(event_hook=writers["send"].hook(), **common),
        server_config=ConnectionConfig(event_hook=writers["recv"].hook(), **common),
        base_delay_s=delay_s,
    )
    holder["net"] = net
    net.links["client"] = TracingImpairer(
        ScriptedImpairer(drop_data, up, seed=seed + 1), writers["proxy"], "up"
    )
    net.links["server"] = TracingImpairer(
        ScriptedImpairer((), down, seed=seed + 2), writers["proxy"], "down"
    )
    net.drop_filter = drop_filter
    data = random.Random(seed).randbytes(size)
    net.start(data)
    net.run(max_time_s=120)
    for w in writers.values():
        w.close()
    assert bytes(net.server.received) == data, "the simulated transfer did not complete"
    return TracedTransfer(net, paths["send"], paths["recv"], paths["proxy"])
