"""Changes to a running proxy, as values: what the control API, `rtcp ctl`, a scenario step and
the Lab API all build, and what the loop applies between two datagrams (toxiproxy's model).

A `Change` says what to do (`set` some impairment knobs, `replace` all of them, take the link
`down` or bring it `up`, `reset` the client mappings), for which directions, and optionally for
how long (`for_s`: the loop undoes it by itself after that). Knobs use the flags' vocabulary
and units: the names of `rtcp proxy`'s impairment flags without the dashes (`loss`, `delay-down`,
`rate-up`, ...), values as the flags take them ("30%", "20ms", "1mbit"), parsed by the flags'
own parsers (rtcp.units through rtcp.proxy.command's table), so "30%" means the same
everywhere. Every bad input is a `ChangeError` whose message names the field.

`describe` is the inverse: an ImpairConfig as the knobs that differ from no impairment, in the
same vocabulary (what `GET /` and the trace show).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcp.errors import UsageError
from rtcp.proxy.impair import DEFAULT_QUEUE_LIMIT_PACKETS, DIRECTIONS, ImpairConfig
from rtcp.units import parse_duration

ACTIONS = ("set", "replace", "down", "up", "reset")
DOWN_MODES = ("drop", "hold")  # a partition (datagrams dropped) or a pause (held, then sent)
DIRECTION_CHOICES = ("both", *DIRECTIONS)
_DEFAULTS = ImpairConfig()


class ChangeError(ValueError):
    """Bad input for a change (unknown field, bad unit, impossible combination): the
    control API answers it with 400 and this message, a scenario file is refused at start."""


@dataclass(frozen=True)
class Change:
    """One change to the proxy; see the module docstring."""

    action: str
    knobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # dir -> config fields
    directions: tuple[str, ...] = DIRECTIONS  # down / up: which directions
    mode: str = "drop"  # down: "drop" (partition) or "hold" (pause)
    for_s: float | None = None  # undo after this long (set, replace, down)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ChangeError(f"unknown action {self.action!r}: one of {', '.join(ACTIONS)}")
        if self.mode not in DOWN_MODES:
            raise ChangeError(f"mode: {self.mode!r} is not one of {', '.join(DOWN_MODES)}")
        if self.for_s is not None and self.action in ("up", "reset"):
            raise ChangeError(f"'for' makes no sense with {self.action}")


def _knob_table() -> dict[str, tuple[Any, str | None]]:
    # The flags' own table (flag -> parser, ImpairConfig field); imported here, not at the top,
    # because rtcp.proxy.command imports the control modules for its --control flag.
    from rtcp.proxy.command import _KNOBS

    return _KNOBS


def knob_names() -> list[str]:
    """Every knob name a change may use: each flag, and its -up and -down forms."""
    names = []
    for flag in _knob_table():
        names += [flag, f"{flag}-up", f"{flag}-down"]
    return names


def _split_key(key: str) -> tuple[str, tuple[str, ...]]:
    for direction in DIRECTIONS:
        if key.endswith(f"-{direction}"):
            return key[: -len(direction) - 1], (direction,)
    return key, DIRECTIONS


def _default_fields(flag: str, field_name: str | None) -> dict[str, Any]:
    if field_name is None:  # queue: two fields
        return {"queue_limit_packets": DEFAULT_QUEUE_LIMIT_PACKETS, "queue_limit_bytes": None}
    return {field_name: getattr(_DEFAULTS, field_name)}


def _unknown(key: str, allowed: list[str]) -> ChangeError:
    hint = ""
    dashed = key.replace("_", "-").lstrip("-")
    if dashed != key and dashed in allowed:
        hint = f" (did you mean {dashed!r}?)"
    return ChangeError(f"unknown field {key!r}{hint}")


def parse_knobs(fields: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"loss": "30%", "delay-down": "5ms", "rate": None} -> {"up": {...}, "down": {...}}
    of ImpairConfig fields. None (JSON null) puts a knob back to its default (off). As with the
    flags, a -up/-down knob overrides the plain one for its direction, whatever the order."""
    table = _knob_table()
    allowed = knob_names()
    out: dict[str, dict[str, Any]] = {d: {} for d in DIRECTIONS}
    # plain knobs first, so that the direction-specific ones override them
    for key in sorted(fields, key=lambda k: len(_split_key(k)[1]), reverse=True):
        value = fields[key]
        flag, directions = _split_key(key)
        if not isinstance(key, str) or flag not in table:
            raise _unknown(str(key), allowed)
        parse, field_name = table[flag]
        if value is None:
            parsed = _default_fields(flag, field_name)
        else:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ChangeError(
                    f"{key}: expected a value as the --{flag} flag takes it (a string such as "
                    f"'30%', '20ms', '1mbit', or a number), got {json_type(value)}"
                )
            try:
                result = parse(str(value))
            except UsageError as exc:
                raise ChangeError(f"{key}: {exc}") from None
            parsed = result if field_name is None else {field_name: result}
        for direction in directions:
            out[direction].update(parsed)
    return {d: f for d, f in out.items() if f}


def json_type(value: Any) -> str:
    """The JSON (or TOML) name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def parse_timing(value: Any, key: str = "for", *, allow_zero: bool = False) -> float:
    """A change's time or duration in seconds: "3s", "1500ms", "1m". The unit is required:
    a bare number would be milliseconds as the flags read it, never what "for 3" means."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ChangeError(
            f"{key}: expected a duration with its unit such as '3s' or '500ms', "
            f"got {json_type(value)}"
        )
    if not value.strip() or value.strip()[-1].isdigit() or value.strip()[-1] == ".":
        raise ChangeError(f"{key}: {value!r} needs a unit (e.g. '3s' or '500ms')")
    try:
        seconds = parse_duration(value)
    except UsageError as exc:
        raise ChangeError(f"{key}: {exc}") from None
    if seconds == 0 and not allow_zero:
        raise ChangeError(f"{key}: {value!r} must be longer than 0")
    return seconds


def parse_direction(value: Any) -> tuple[str, ...]:
    if value not in DIRECTION_CHOICES:
        raise ChangeError(
            f"direction: expected one of {', '.join(DIRECTION_CHOICES)}, got {value!r}"
        )
    return DIRECTIONS if value == "both" else (value,)


def parse_mode(value: Any) -> str:
    if value not in DOWN_MODES:
        raise ChangeError(
            f"mode: expected 'drop' (a partition) or 'hold' (a pause), got {value!r}"
        )
    return str(value)


_REQUEST_FIELDS = {
    "set": ("for",),
    "replace": ("for",),
    "down": ("mode", "direction", "for"),
    "up": ("direction",),
    "reset": (),
}


def flatten_directions(fields: Mapping[str, Any]) -> dict[str, Any]:
    """{"up": {"loss": "1%"}, "delay": "5ms"} -> {"loss-up": "1%", "delay": "5ms"}: the
    per-direction objects of the API are the flags' -up/-down names."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        if key in DIRECTIONS:
            if not isinstance(value, Mapping):
                raise ChangeError(f"{key}: expected an object of knobs, got {json_type(value)}")
            for knob, knob_value in value.items():
                if not isinstance(knob, str) or knob.endswith(("-up", "-down")):
                    raise ChangeError(f"{key}.{knob}: name the knob without a direction")
                flat[f"{knob}-{key}"] = knob_value
        else:
            flat[key] = value
    return flat


def change_from_request(action: str, body: Mapping[str, Any]) -> Change:
    """The change a control request asks for: `set` and `replace` take knobs (and `for`),
    `down` takes mode, direction and for, `up` a direction, `reset` nothing."""
    extra = _REQUEST_FIELDS[action]
    if action in ("set", "replace"):
        fields = flatten_directions({k: v for k, v in body.items() if k not in extra})
        knobs = parse_knobs(fields)
        if action == "set" and not knobs:
            raise ChangeError("set needs at least one knob (e.g. {\"loss\": \"30%\"})")
        for_s = parse_timing(body["for"]) if "for" in body else None
        return Change(action, knobs=knobs, for_s=for_s)
    for key in body:
        if key not in extra:
            takes = ", ".join(extra) if extra else "no fields"
            raise ChangeError(f"unknown field {key!r}: {action} takes {takes}")
    return Change(
        action,
        directions=parse_direction(body.get("direction", "both")),
        mode=parse_mode(body.get("mode", "drop")),
        for_s=parse_timing(body["for"]) if "for" in body else None,
    )


def apply_knobs(config: ImpairConfig, fields: Mapping[str, Any], *, replace: bool) -> ImpairConfig:
    """The config after a change's knobs for one direction: merged into `config` (set) or
    into no impairment at all (replace). Refuses, as the flags do, what cannot work."""
    base = _DEFAULTS if replace else config
    merged = {f.name: getattr(base, f.name) for f in dataclasses.fields(ImpairConfig)}
    merged.update(fields)
    if merged["gemodel"] is not None and merged["loss"]:
        raise ChangeError(
            "loss and gemodel are two loss models: set the other one to null in the same change"
        )
    if merged["reorder"] and not merged["delay_s"] and not merged["reorder_delay_s"]:
        raise ChangeError(
            "reorder needs a delay (the reordered datagrams skip it) or a reorder-delay "
            "(the reordered datagrams are held back that much longer)"
        )
    try:
        return ImpairConfig(**merged)
    except ValueError as exc:
        raise ChangeError(str(exc)) from None


# --- describing settings in the flags' vocabulary -----------------------------------------


def format_probability(p: float) -> str:
    return f"{p * 100:.6g}%"


def format_duration(seconds: float) -> str:
    """20ms, 1.5s, 500us: the largest unit that keeps the number at 1 or more."""
    if seconds == 0:
        return "0ms"
    if seconds >= 1:
        return f"{seconds:.6g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.6g}ms"
    return f"{seconds * 1e6:.6g}us"


def format_rate(bytes_per_s: float) -> str:
    """In bits per second as tc writes them: 1mbit, 2.5gbit, 800bit."""
    bits = bytes_per_s * 8
    for factor, unit in ((1e12, "tbit"), (1e9, "gbit"), (1e6, "mbit"), (1e3, "kbit")):
        if bits >= factor:
            return f"{bits / factor:.6g}{unit}"
    return f"{bits:.6g}bit"


def describe(config: ImpairConfig) -> dict[str, Any]:
    """The knobs of `config` that are not off, by flag name, as the flags would take them."""
    out: dict[str, Any] = {}
    if config.loss:
        out["loss"] = format_probability(config.loss)
    if config.loss_correlation:
        out["loss-correlation"] = format_probability(config.loss_correlation)
    if config.gemodel is not None:
        out["gemodel"] = ",".join(format_probability(v) for v in config.gemodel)
    for name in ("reorder", "duplicate", "corrupt"):
        value = getattr(config, name)
        if value:
            out[name] = format_probability(value)
    if config.reorder_gap != _DEFAULTS.reorder_gap:
        out["reorder-gap"] = config.reorder_gap
    if config.reorder_delay_s:
        out["reorder-delay"] = format_duration(config.reorder_delay_s)
    if config.delay_s:
        out["delay"] = format_duration(config.delay_s)
    if config.jitter_s:
        out["jitter"] = format_duration(config.jitter_s)
    if config.distribution != _DEFAULTS.distribution:
        out["distribution"] = config.distribution
    if config.rate_bytes_per_s:
        out["rate"] = format_rate(config.rate_bytes_per_s)
    if config.queue_limit_bytes is not None:
        out["queue"] = f"{config.queue_limit_bytes}B"
    elif config.queue_limit_packets != DEFAULT_QUEUE_LIMIT_PACKETS:
        out["queue"] = config.queue_limit_packets
    if config.mtu_bytes is not None:
        out["mtu"] = config.mtu_bytes
    return out


def summarize(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> str:
    """What a set/replace changed, from two describe() pairs: "loss 30%", "delay-down 5ms",
    "loss off". Knobs that changed the same way in both directions are named once."""
    parts: list[str] = []
    per_dir: dict[str, dict[str, Any]] = {}
    for direction in DIRECTIONS:
        old, new = before[direction], after[direction]
        per_dir[direction] = {
            k: new.get(k, "off") for k in list(old) + [k for k in new if k not in old]
            if old.get(k) != new.get(k)
        }
    up, down = per_dir["up"], per_dir["down"]
    for key, value in up.items():
        if key in down and down[key] == value:
            parts.append(f"{key} {value}")
        else:
            parts.append(f"{key}-up {value}")
    for key, value in down.items():
        if not (key in up and up[key] == value):
            parts.append(f"{key}-down {value}")
    return ", ".join(parts) if parts else "no change"
