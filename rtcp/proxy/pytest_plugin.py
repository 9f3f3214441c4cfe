"""The `rtcp_proxy` pytest fixture: a bad network in front of your UDP server, for one test.

Installed with rtcp (the `pytest11` entry point), so any project's tests can write:

    def test_survives_loss(rtcp_proxy, my_server):
        lab = rtcp_proxy(my_server.address, loss="5%", delay="20ms", seed=1)
        client.sendto(b"ping", lab.address)
        lab.down(duration="3s")
        ...

`rtcp_proxy(upstream, **options)` starts a `rtcp.proxy.Lab` (same options and knobs) and
returns it; every Lab the test started is closed at teardown, also when the test fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def rtcp_proxy() -> Iterator[Callable[..., Any]]:
    """rtcp_proxy(upstream, **options) -> a started rtcp.proxy.Lab, closed at teardown."""
    from rtcp.proxy.lab import Lab

    labs: list[Lab] = []

    def start(upstream: tuple[str, int], **options: Any) -> Lab:
        lab = Lab(upstream, **options)
        lab.start()
        labs.append(lab)
        return lab

    yield start
    errors = []
    for lab in reversed(labs):
        try:
            lab.close()
        except RuntimeError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
