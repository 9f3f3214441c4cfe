"""The impairment proxy: `rtcp proxy`, and `Lab` (rtcp.proxy.lab) to run one from Python."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy: importing rtcp.proxy.impair (the simulator does) must not pull the socket loop in.
    if name == "Lab":
        from rtcp.proxy.lab import Lab

        return Lab
    raise AttributeError(f"module 'rtcp.proxy' has no attribute {name!r}")


__all__ = ["Lab"]
