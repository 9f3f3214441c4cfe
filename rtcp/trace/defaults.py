"""The ladder's widths that the command line shows, in a module light enough for every `rtcp`
start to import (`rtcp explain --width`, `rtcp send --explain-width`); the drawing itself,
rtcp.trace.ladder, is imported only when something is drawn."""

from __future__ import annotations

DEFAULT_WIDTH = 100
MIN_WIDTH = 72
