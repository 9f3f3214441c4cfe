"""The proxy's defaults that its command line shows, in a module light enough for every `rtcp`
start to import (`rtcp proxy` is registered with the other commands, so whatever its command
module imports at the top is paid by every `rtcp send`; the loop is imported when it runs)."""

from __future__ import annotations

DEFAULT_MAX_CLIENTS = 1024
DEFAULT_IDLE_TIMEOUT_S = 60.0
