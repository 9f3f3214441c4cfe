"""A bad network in front of your own UDP server, from Python: rtcp.proxy.Lab.

    python examples/lab_udp_echo.py

Starts a UDP echo server, puts a Lab (the rtcp proxy on a thread) in front of it, and pings it
through the Lab while the network changes: clean, then 50% loss, then a 1 s pause (the
datagrams are held and arrive together when it ends), then a NAT reset (the server sees a new
source port). In a test suite, the `rtcp_proxy` pytest fixture gives the same Lab.
"""

from __future__ import annotations

import socket
import threading

from rtcp.proxy import Lab


def echo_server() -> tuple[socket.socket, list[tuple[str, int]]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    sources: list[tuple[str, int]] = []

    def serve() -> None:
        while True:
            try:
                data, addr = server.recvfrom(2048)
            except OSError:
                return  # closed
            sources.append(addr)
            server.sendto(data, addr)

    threading.Thread(target=serve, daemon=True).start()
    return server, sources


def ping(client: socket.socket, lab: Lab, count: int, tag: str) -> int:
    """Send `count` pings, return how many echoes came back (waiting up to 0.5 s for each
    one; a late echo of an earlier round is not counted)."""
    for i in range(count):
        client.sendto(f"{tag} {i}".encode(), lab.address)
    answered = 0
    client.settimeout(0.5)
    try:
        while answered < count:
            if client.recvfrom(2048)[0].decode().startswith(tag + " "):
                answered += 1
    except TimeoutError:
        pass
    return answered


def echo(client: socket.socket, lab: Lab, payload: str) -> str:
    """Send one datagram and wait (without a limit) for its own echo."""
    client.settimeout(None)
    client.sendto(payload.encode(), lab.address)
    while True:
        data = client.recvfrom(2048)[0].decode()
        if data == payload:
            return data


def main() -> None:
    server, sources = echo_server()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Lab(server.getsockname(), delay="5ms", seed=1) as lab:
        print(f"clean:         {ping(client, lab, 20, 'clean')}/20 answered")
        lab.set(loss="50%")  # each way: a round trip gets through a quarter of the time
        print(f"50% loss:      {ping(client, lab, 20, 'lossy')}/20 answered")
        lab.set(loss=None)
        lab.pause(duration="1s")
        for i in range(3):
            client.sendto(f"held {i}".encode(), lab.address)
        client.settimeout(None)
        held = []
        while len(held) < 3:
            data = client.recvfrom(2048)[0].decode()
            if data.startswith("held "):
                held.append(data)
        print(f"after a pause: {held} (held until the pause ended, in order)")
        before = sources[-1]
        lab.reset()
        echo(client, lab, "after the reset")
        print(f"NAT reset:     the server saw port {before[1]}, now port {sources[-1][1]}")
        stats = lab.stats
        print(f"changes: {[c['summary'] for c in stats['changes']]}")
        print(f"up: {stats['up']['datagrams_in']} in, dropped {stats['up']['dropped']}")
    client.close()
    server.close()


if __name__ == "__main__":
    main()
