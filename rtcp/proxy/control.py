"""Live changes to a running proxy: apply a `Change` between two datagrams, undo it after its
`for`, run a scenario's timeline, and remember what was done when (the stats, the trace).

The Controller lives on the proxy loop's thread: the loop calls `run_due(now)` when
`next_deadline_s` has passed and `on_first_datagram(now)` once; other threads (the control API,
the Lab) hand it work through `Proxy.call_soon`. Nothing here touches a socket itself: the loop
holds and releases paused datagrams and forgets client mappings (`Proxy.resume`,
`Proxy.reset_clients`).

Each change applied becomes a record: its sequence number, where it came from (`api`, `lab`,
`scenario`, `timer` for the end of a `for`), what it did in the flags' words, when (integer
nanoseconds since the proxy started, and the trace's `t`), the settings and link state after it,
and each direction's counters at that moment, so a reader can tell which datagrams met which
settings. The records go to the trace as `proxy_change` events and to the stats (`changes`).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

from rtcp.proxy.changes import Change, ChangeError, apply_knobs, describe, summarize
from rtcp.proxy.impair import DIRECTIONS
from rtcp.proxy.scenario import Scenario, Step

MAX_CHANGES_KEPT = 100  # the most recent change records in the stats; changes_total counts all
_NS_PER_S = 1_000_000_000


class Controller:
    """Applies changes to `proxy` (a rtcp.proxy.loop.Proxy); see the module docstring."""

    def __init__(self, proxy: Any, *, writer: Any = None, scenario: Scenario | None = None):
        self.proxy = proxy
        self.writer = writer  # a TraceWriter (--trace) or None
        self.scenario = scenario
        self.next_deadline_s = math.inf
        self.changes: deque[dict[str, Any]] = deque(maxlen=MAX_CHANGES_KEPT)
        self.changes_total = 0
        self.change_errors = 0  # a timer's undo or a step the settings refused at that time
        self.steps_applied = 0
        self.trace_errors = 0  # change records that could not be written to the trace
        self.scenario_origin_s: float | None = None
        self._timers: list[tuple[float, int, str, Any]] = []
        self._timer_seq = 0
        self._events: Iterator[tuple[float, int, Step]] | None = None
        proxy.controller = self
        if scenario is not None and scenario.start == "start":
            self._start_scenario(proxy.started_s)

    # --- what the loop calls ------------------------------------------------------------

    def on_first_datagram(self, now: float) -> None:
        """The first client datagram is here (before it is processed): a scenario that counts
        from it starts now, and its steps at 0 s apply to this datagram already."""
        if self.scenario is not None and self.scenario.start == "first-datagram":
            self._start_scenario(now)
            self.run_due(now)

    def run_due(self, now: float) -> None:
        """Apply every timed change due at `now`: scenario steps and the ends of `for`s."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, kind, payload = heapq.heappop(timers)
            if kind == "step":
                _offset, cycle, step = payload
                self._schedule_next_step()
                context = {"step": step.index, "cycle": cycle, "scheduled_ns": self._ns(due)}
                self._apply_logged(step.change, now, "scenario", context)
                self.steps_applied += 1
            else:
                change, seq = payload
                self._apply_logged(change, now, "timer", {"ends": seq})
        self.next_deadline_s = timers[0][0] if timers else math.inf

    # --- applying a change --------------------------------------------------------------

    def apply(
        self, change: Change, now: float, source: str, context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Apply `change` now and return its record; ChangeError (nothing changed) when the
        resulting settings cannot work (e.g. two loss models at once)."""
        proxy = self.proxy
        impairers = {"up": proxy.up, "down": proxy.down}
        before = {d: describe(impairers[d].config) for d in DIRECTIONS}
        record: dict[str, Any] = {"seq": self.changes_total + 1, "source": source}
        record["action"] = change.action
        undo: Change | None = None
        if change.action in ("set", "replace"):
            replace = change.action == "replace"
            configs = {}
            for direction in DIRECTIONS:  # check both before changing either
                fields = change.knobs.get(direction, {})
                current = impairers[direction].config
                if replace or fields:
                    configs[direction] = apply_knobs(current, fields, replace=replace)
                else:
                    configs[direction] = current
            if change.for_s is not None:  # the end of a `for` puts these values back
                if replace:
                    previous = {d: dataclasses.asdict(impairers[d].config) for d in DIRECTIONS}
                else:
                    previous = {
                        d: {name: getattr(impairers[d].config, name) for name in fields}
                        for d, fields in change.knobs.items()
                    }
                undo = Change(change.action, knobs=previous)
            for direction in DIRECTIONS:
                impairers[direction].reconfigure(configs[direction])
            after = {d: describe(impairers[d].config) for d in DIRECTIONS}
            record["summary"] = summarize(before, after)
        elif change.action == "down":
            for direction in change.directions:
                impairer = impairers[direction]
                if change.mode == "drop":
                    impairer.set_link_down(True)
                    if impairer.paused:  # a pause turned partition: what it held is lost
                        impairer.set_paused(False)
                        proxy.resume(impairer, now)
                else:
                    impairer.set_link_down(False)
                    impairer.set_paused(True)
            record["mode"] = change.mode
            record["directions"] = list(change.directions)
            what = "partition (drop)" if change.mode == "drop" else "pause (hold)"
            record["summary"] = f"link down {_directions(change.directions)}: {what}"
            if change.for_s is not None:
                undo = Change("up", directions=change.directions)
        elif change.action == "up":
            released = 0
            for direction in change.directions:
                impairer = impairers[direction]
                impairer.set_link_down(False)
                if impairer.paused:
                    impairer.set_paused(False)
                    released += proxy.resume(impairer, now)
            record["directions"] = list(change.directions)
            record["released"] = released
            record["summary"] = f"link up {_directions(change.directions)}" + (
                f", {released} held datagrams fed in" if released else ""
            )
        else:  # reset
            forgotten, dropped = proxy.reset_clients()
            record["mappings_forgotten"] = forgotten
            record["dropped"] = dropped
            record["summary"] = f"reset: {forgotten} client mappings forgotten" + (
                f", {dropped} datagrams in flight through them lost" if dropped else ""
            )
        proxy.refresh_paths()
        record["elapsed_ns"] = self._ns(now)
        if change.for_s is not None:
            record["for_s"] = change.for_s
            record["until_ns"] = self._ns(now + change.for_s)
        if context:
            record.update(context)
        record["impairments"] = self.impairments()
        record["link"] = self.link_state()
        record["counters"] = {d: _counters(impairers[d].stats) for d in DIRECTIONS}
        self.changes_total += 1
        self.changes.append(record)
        if undo is not None:
            self._push(now + change.for_s, "undo", (undo, record["seq"]))
        self._trace(record, now)
        return record

    def apply_now(self, change: Change, source: str) -> dict[str, Any]:
        """apply() at the loop's current time; for calls handed over by Proxy.call_soon."""
        return self.apply(change, self.proxy.now(), source)

    def _apply_logged(
        self, change: Change, now: float, source: str, context: dict[str, Any]
    ) -> None:
        """A timed change: refused settings are recorded (stats, trace), never raised."""
        try:
            self.apply(change, now, source, context)
        except ChangeError as exc:
            self.change_errors += 1
            record = {"source": source, "action": change.action, "error": str(exc)}
            record.update(context, elapsed_ns=self._ns(now))
            self.changes.append(record)
            self._trace(record, now)

    # --- state --------------------------------------------------------------------------

    def impairments(self) -> dict[str, dict[str, Any]]:
        proxy = self.proxy
        return {"up": describe(proxy.up.config), "down": describe(proxy.down.config)}

    def link_state(self) -> dict[str, str]:
        """Each direction: "up", "down" (a partition) or "paused"."""
        proxy = self.proxy
        state = {}
        for direction, impairer in (("up", proxy.up), ("down", proxy.down)):
            if impairer.link_down:
                state[direction] = "down"
            elif impairer.paused:
                state[direction] = "paused"
            else:
                state[direction] = "up"
        return state

    def snapshot(self) -> dict[str, Any]:
        """The controller's part of the stats file and of `GET /`."""
        snap: dict[str, Any] = {
            "impairments": self.impairments(),
            "link": self.link_state(),
            "changes_total": self.changes_total,
            "change_errors": self.change_errors,
            "changes": list(self.changes),
        }
        if self.scenario is not None:
            scenario = self.scenario.describe()
            scenario["started"] = self.scenario_origin_s is not None
            if self.scenario_origin_s is not None:
                scenario["origin_ns"] = self._ns(self.scenario_origin_s)
            scenario["steps_applied"] = self.steps_applied
            snap["scenario"] = scenario
        return snap

    # --- timers -------------------------------------------------------------------------

    def _start_scenario(self, origin: float) -> None:
        assert self.scenario is not None
        self.scenario_origin_s = origin
        self._events = self.scenario.events()
        self._trace(
            {"source": "scenario", "action": "start", "elapsed_ns": self._ns(origin),
             **self.scenario.describe()},
            origin,
        )
        self._schedule_next_step()

    def _schedule_next_step(self) -> None:
        if self._events is None or self.scenario_origin_s is None:
            return
        event = next(self._events, None)
        if event is None:
            self._events = None
            return
        offset, _cycle, _step = event
        self._push(self.scenario_origin_s + offset, "step", event)

    def _push(self, due: float, kind: str, payload: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, kind, payload))
        self.next_deadline_s = self._timers[0][0]

    def _ns(self, t: float) -> int:
        return round((t - self.proxy.started_s) * _NS_PER_S)

    def _trace(self, record: dict[str, Any], now: float) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            writer.write("proxy_change", record, t=now - writer.clock_start)
        except (OSError, ValueError):  # a full disk must not stop the proxy: reported at exit
            self.trace_errors += 1


def _directions(directions: tuple[str, ...]) -> str:
    if len(directions) == len(DIRECTIONS):
        return "both directions"
    return f"{directions[0]} only"


def _counters(stats: Any) -> dict[str, Any]:
    return {
        "datagrams_in": stats.datagrams_in,
        "datagrams_out": stats.datagrams_out,
        "held": stats.held,
        "dropped": {
            "loss": stats.dropped_loss,
            "queue": stats.dropped_queue,
            "mtu": stats.dropped_mtu,
            "overflow": stats.dropped_overflow,
            "down": stats.dropped_down,
            "reset": stats.dropped_reset,
        },
    }
