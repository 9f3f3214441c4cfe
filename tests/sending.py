"""A lone file's sending application for tests that drive a Driver themselves: the file
written to a folder of its own, then rtcp.transfer.tree.TreeSendApp (what `rtcp send FILE`
runs) over it."""

from __future__ import annotations

from pathlib import Path

from rtcp.transfer.tree import TreeSendApp, collect_entries


def lone_sender(folder: Path, name: str, data: bytes, **options) -> TreeSendApp:
    """The app sending `data` as `name`; options: TreeSendApp's (peer_text, timeout_s, clock)."""
    source = Path(folder) / "sending" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    options.setdefault("peer_text", "receiver")
    return TreeSendApp(collect_entries([str(source)]), **options)
