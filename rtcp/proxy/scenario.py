"""`rtcp proxy --scenario FILE`: a timeline of changes read from TOML (the standard library's
tomllib), sans-IO: it only says which change is due at which offset; the controller
(rtcp.proxy.control) applies each one between two datagrams and records when it did.

    name = "3 s partition"
    start = "first-datagram"   # offsets count from the first datagram (or "start": the proxy's)
    repeat = 1                 # how many times the timeline runs ("forever": until stopped)
    every = "10s"              # the period of a repeated timeline
    seed = 7                   # the proxy's seed when --seed is not given

    [[step]]
    at = "2s"
    loss = "30%"               # knobs as the flags name them: set for this step
    for = "3s"                 # and put back 3 s later

    [[step]]
    at = "6s"
    down = "drop"              # or "hold": a partition, or a pause; up = true, reset = true

Each step has one action: impairment knobs (merged into the current settings, or with
`clear = true` replacing them all), `down = "drop" | "hold"` (with `direction`), `up = true`,
or `reset = true`. Durations need their unit ("2s", "1500ms"): a bare number would be
milliseconds, as the flags read it, which is never what a timeline means.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtcp.errors import LocalIOError, UsageError
from rtcp.proxy.changes import (
    Change,
    ChangeError,
    json_type,
    parse_direction,
    parse_knobs,
    parse_mode,
    parse_timing,
)

STARTS = ("first-datagram", "start")
MAX_STEPS = 10_000  # steps in one file: a timeline, not a packet schedule
MAX_FILE_BYTES = 1 << 20
_TOP_KEYS = ("name", "description", "start", "repeat", "every", "seed", "step")
_STEP_ACTION_KEYS = ("down", "up", "reset", "clear")
_STEP_KEYS = ("at", "for", "direction", *_STEP_ACTION_KEYS)


class ScenarioError(UsageError):
    """A scenario file that cannot be run: one line naming the file and the step; exit 2."""


@dataclass(frozen=True)
class Step:
    """One step: its change at `at_s` after the timeline's origin; `index` counts from 1."""

    index: int
    at_s: float
    change: Change

    @property
    def end_s(self) -> float:
        return self.at_s + (self.change.for_s or 0.0)


@dataclass(frozen=True)
class Scenario:
    steps: tuple[Step, ...]
    name: str = ""
    path: str = ""
    start: str = "first-datagram"
    repeat: int | None = 1  # None: forever
    every_s: float | None = None
    seed: int | None = None
    description: str = ""

    def events(self) -> Iterator[tuple[float, int, Step]]:
        """(offset from the origin, cycle from 1, step) in time order; endless when the
        timeline repeats forever."""
        cycle = 0
        while self.repeat is None or cycle < self.repeat:
            base = cycle * (self.every_s or 0.0)
            for step in self.steps:
                yield base + step.at_s, cycle + 1, step
            cycle += 1

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "name": self.name,
            "start": self.start,
            "steps": len(self.steps),
            "repeat": "forever" if self.repeat is None else self.repeat,
            "every_s": self.every_s,
        }


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; ScenarioError (exit 2) or LocalIOError (exit 7)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LocalIOError(f"--scenario: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"scenario {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: not valid TOML: {exc}") from None
    try:
        return parse_scenario(data, str(path))
    except ChangeError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None


def parse_scenario(data: Mapping[str, Any], path: str = "") -> Scenario:
    """A Scenario from the TOML document's tables; ChangeError names what is wrong."""
    for key in data:
        if key not in _TOP_KEYS:
            raise ChangeError(f"unknown key {key!r} (a scenario has {', '.join(_TOP_KEYS)})")
    name = _string(data, "name")
    description = _string(data, "description")
    start = data.get("start", "first-datagram")
    if start not in STARTS:
        raise ChangeError(f"start: expected 'first-datagram' or 'start', got {start!r}")
    repeat = _repeat(data.get("repeat", 1))
    every_s = parse_timing(data["every"], "every") if "every" in data else None
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ChangeError(f"seed: expected an integer >= 0, got {seed!r}")
    tables = data.get("step")
    if not isinstance(tables, list) or not tables:
        raise ChangeError("no steps: add at least one [[step]] with an 'at'")
    if len(tables) > MAX_STEPS:
        raise ChangeError(f"{len(tables)} steps: at most {MAX_STEPS}")
    steps = tuple(_step(table, index) for index, table in enumerate(tables, 1))
    for earlier, later in itertools.pairwise(steps):
        if later.at_s < earlier.at_s:
            raise ChangeError(
                f"step {later.index}: at {later.at_s:g} s comes before step {earlier.index} "
                f"(at {earlier.at_s:g} s): list the steps in time order"
            )
    if repeat != 1:
        if every_s is None:
            raise ChangeError("a repeated timeline needs 'every' (its period, e.g. '10s')")
        last = max(steps, key=lambda s: s.end_s)
        if steps[-1].at_s > every_s or last.end_s > every_s:
            raise ChangeError(
                f"every = {every_s:g} s is shorter than one run of the timeline "
                f"(its last step ends at {max(steps[-1].at_s, last.end_s):g} s)"
            )
    return Scenario(steps, name, path, start, repeat, every_s, seed, description)


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ChangeError(f"{key}: expected a string, got {json_type(value)}")
    return value


def _repeat(value: Any) -> int | None:
    if value == "forever":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ChangeError(f"repeat: expected an integer >= 1 or 'forever', got {value!r}")
    return value


def _step(table: Any, index: int) -> Step:
    try:
        if not isinstance(table, Mapping):
            raise ChangeError(f"expected a table, got {json_type(table)}")
        if "at" not in table:
            raise ChangeError("no 'at': when does it happen? (e.g. at = \"2s\")")
        at_s = parse_timing(table["at"], "at", allow_zero=True)
        for_s = parse_timing(table["for"], "for") if "for" in table else None
        knobs = {k: v for k, v in table.items() if k not in _STEP_KEYS}
        actions = [k for k in _STEP_ACTION_KEYS if k in table and k != "clear"]
        if knobs or "clear" in table:
            actions.insert(0, "knobs")
        if len(actions) != 1:
            raise ChangeError(
                "one action per step: impairment knobs (with clear = true to replace all), "
                "down, up or reset" + (f"; this one has {', '.join(actions)}" if actions else "")
            )
        action = actions[0]
        if "direction" in table and action not in ("down", "up"):
            raise ChangeError("direction goes with down or up (knobs take -up/-down names)")
        if action == "knobs":
            clear = table.get("clear", False)
            if not isinstance(clear, bool):
                raise ChangeError(f"clear: expected true or false, got {clear!r}")
            change = Change(
                "replace" if clear else "set", knobs=parse_knobs(knobs), for_s=for_s
            )
        elif action == "down":
            change = Change(
                "down",
                directions=parse_direction(table.get("direction", "both")),
                mode=parse_mode(table["down"]),
                for_s=for_s,
            )
        else:
            if table[action] is not True:
                raise ChangeError(f"{action}: write {action} = true")
            change = Change(
                action,
                directions=parse_direction(table.get("direction", "both")),
                for_s=for_s,
            )
    except ChangeError as exc:
        raise ChangeError(f"step {index}: {exc}") from None
    if not math.isfinite(at_s):
        raise ChangeError(f"step {index}: at must be finite")
    return Step(index, at_s, change)
