"""The simulator's network with packet protection between each Connection and its links, as
the driver places it: the client's layer from the start, the receiver's from the Acceptor's
answer to the first SYN."""

from __future__ import annotations

import heapq

from rtcp.core.config import ConnectionConfig
from rtcp.core.protection import Acceptor, ClientProtection, Secret, adjust_config
from tests.sim.network import SimNetwork


class ProtectedSim(SimNetwork):
    def __init__(
        self,
        client_secret: Secret | None,
        server_secret: Secret | None,
        *,
        code_uses: int = 1,
        fast: tuple[bool, bool] = (False, False),
        client_config: ConnectionConfig | None = None,
        server_config: ConnectionConfig | None = None,
        **kwargs,
    ):
        client_config = client_config or ConnectionConfig()
        server_config = server_config or ConnectionConfig()
        if client_secret is not None:
            client_config = adjust_config(client_config)
        if server_secret is not None:
            server_config = adjust_config(server_config)
        super().__init__(client_config=client_config, server_config=server_config, **kwargs)
        # fast: whether (client, server) have fast AES (fixed here, not this machine's CPU):
        # AES-256-GCM only when both do, else ChaCha20-Poly1305
        self.layers = {"client": ClientProtection(client_secret, fast=fast[0]), "server": None}
        self.acceptor = (
            Acceptor(server_secret, code_uses=code_uses, fast=fast[1]) if server_secret else None
        )
        self.refusals: list[str] = []
        self.wire_log: list[tuple[str, bytes]] = []  # every datagram as it left, sealed

    def _transmit(self, ep) -> None:
        datagrams = ep.conn.datagrams_to_send(self.now)
        layer = self.layers[ep.name]
        if layer is not None:
            datagrams = layer.seal_all(datagrams)
        self._to_link(ep.name, datagrams)

    def _to_link(self, name: str, datagrams) -> None:
        dest = "server" if name == "client" else "client"
        for dgram in datagrams:
            self.wire_log.append((name, dgram))
            if self.drop_filter is not None and self.drop_filter(name, dgram):
                continue
            for when, data in self.links[name].process(dgram, self.now):
                self._counter += 1
                heapq.heappush(self._queue, (when + self.base_delay_s, self._counter, dest, data))

    def inject(self, dest: str, data: bytes) -> None:
        """A datagram from an attacker, delivered to `dest` at the next step."""
        self._counter += 1
        heapq.heappush(self._queue, (self.now, self._counter, dest, data))

    def _open(self, name: str, data):
        layer = self.layers[name]
        if layer is None and name == "server" and self.acceptor is not None:
            layer, reply, why = self.acceptor.accept(data)
            if layer is None:
                self.refusals.append(why)
                if reply is not None:
                    self._to_link("server", [reply])
                return None
            self.layers["server"] = layer
        if layer is None:
            return data
        opened = layer.open(data)
        ep = self.client if name == "client" else self.server
        if layer.failure is not None and not ep.conn.is_closed:
            ep.conn.abort()
        return opened

    def _receive(self, ep, batch) -> None:
        for data in batch:
            opened = self._open(ep.name, data)
            if opened is not None:
                ep.conn.receive_datagram(opened, self.now)
