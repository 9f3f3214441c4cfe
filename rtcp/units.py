"""Parsing of the values users type on the command line: percentages, durations, rates, sizes,
counts, HOST:PORT.

Shared by every command, so the units mean the same thing everywhere. Every parser raises
`rtcp.errors.UsageError` with a message that quotes the bad value; callers may prefix it with
the flag name.

A bare number means different things to different tools (netem reads `delay 10` as 10 us and
`loss 1` as 1%; other tools read seconds and fractions), so rtcp never guesses: a duration needs
a unit (10ms, 1.5s), a probability a percent sign (1%), a rate a unit (10mbit, 1MBps). Only
zero may stand alone. Sizes are the exception: a bare size counts bytes, as everywhere.
Sizes and rates print in SI units (kB, MB: powers of 1000) everywhere rtcp prints them.
"""

from __future__ import annotations

import math
import re

from rtcp.errors import UsageError

_NUMBER_WITH_UNIT = re.compile(
    r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ%]*)\s*$"
)

# Duration units -> seconds. A bare number (other than 0) is refused: see the module docstring.
_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

# Rate units (tc/netem) -> bytes per second. "bit" units count bits, "bps" units count bytes;
# SI prefixes are powers of 1000, IEC prefixes (kibit, mibps, ...) powers of 1024. A bare
# number is refused (tc reads bits per second, many readers would assume bytes).
_RATE_UNITS_BYTES_PER_S: dict[str, float] = {"bit": 1 / 8, "bps": 1.0}
for _prefix, _factor in (("k", 1e3), ("m", 1e6), ("g", 1e9), ("t", 1e12)):
    _RATE_UNITS_BYTES_PER_S[f"{_prefix}bit"] = _factor / 8
    _RATE_UNITS_BYTES_PER_S[f"{_prefix}bps"] = _factor
for _prefix, _factor in (("ki", 2**10), ("mi", 2**20), ("gi", 2**30), ("ti", 2**40)):
    _RATE_UNITS_BYTES_PER_S[f"{_prefix}bit"] = _factor / 8
    _RATE_UNITS_BYTES_PER_S[f"{_prefix}bps"] = float(_factor)

# Size units -> bytes: KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024. A bare number
# is bytes. Units are case-insensitive ("kb" == "KB"): a size never counts bits.
_SIZE_UNITS_BYTES: dict[str, int] = {"": 1, "b": 1}
for _prefix, _power in (("k", 1), ("m", 2), ("g", 3), ("t", 4)):
    _SIZE_UNITS_BYTES[f"{_prefix}b"] = 1000**_power
    _SIZE_UNITS_BYTES[f"{_prefix}ib"] = 1024**_power

MAX_PORT = 65535


def _split(value: str, what: str) -> tuple[float, str]:
    if not isinstance(value, str):
        value = str(value)
    match = _NUMBER_WITH_UNIT.match(value)
    if match is None:
        raise UsageError(f"invalid {what} {value!r}: expected a number with an optional unit")
    number = float(match.group(1))
    if not math.isfinite(number):
        raise UsageError(f"invalid {what} {value!r}: not a finite number")
    return number, match.group(2)


def parse_probability(value: str) -> float:
    """Probability: "5%" -> 0.05; a bare number other than 0 is refused ("1" could mean 1% as in
    netem or 100%); anything outside 0%..100% is an error, not silently clamped."""
    number, unit = _split(value, "probability")
    if unit == "%":
        number /= 100.0
    elif unit:
        raise UsageError(f"invalid probability {value!r}: use a percentage (5%)")
    elif number != 0:
        raise UsageError(
            f"invalid probability {value!r}: write it as a percentage "
            f"({number:g}% or {100 * number:g}%?)"
        )
    if not 0.0 <= number <= 1.0:
        raise UsageError(f"invalid probability {value!r}: must be between 0% and 100%")
    return number


def parse_duration(value: str) -> float:
    """Duration: "20ms", "1.5s", "500us" -> seconds. A unit is required (bare 0 aside). Never
    negative."""
    number, unit = _split(value, "duration")
    if number < 0:
        raise UsageError(f"invalid duration {value!r}: must not be negative")
    if not unit:
        if number == 0:
            return 0.0
        raise UsageError(
            f"invalid duration {value!r}: give a unit ({number:g}ms or {number:g}s? "
            "use us, ms, s, min)"
        )
    factor = _DURATION_UNITS_S.get(unit.lower())
    if factor is None:
        raise UsageError(f"invalid duration {value!r}: unknown unit {unit!r} (use us, ms, s, min)")
    return number * factor


def parse_rate(value: str) -> float:
    """Rate in tc units -> bytes per second: "10mbit" = 1.25e6, "1mbps" = 1e6. A unit is
    required: bits (bit, kbit, mbit, gbit) or bytes (bps, kbps, mbps, gbps) per second."""
    number, unit = _split(value, "rate")
    if number <= 0:
        raise UsageError(f"invalid rate {value!r}: must be positive")
    if not unit:
        raise UsageError(
            f"invalid rate {value!r}: give a unit ({number:g}mbit for bits/s, "
            f"{number:g}mbps for bytes/s)"
        )
    factor = _RATE_UNITS_BYTES_PER_S.get(unit.lower())
    if factor is None:
        raise UsageError(
            f"invalid rate {value!r}: unknown unit {unit!r} "
            "(use bit, kbit, mbit, gbit for bits/s or bps, kbps, mbps, gbps for bytes/s)"
        )
    return number * factor


def parse_size(value: str) -> int:
    """Size: "64KB" = 64000, "1MiB" = 1048576, "1500" = 1500 bytes (rounded to a whole byte)."""
    number, unit = _split(value, "size")
    factor = _SIZE_UNITS_BYTES.get(unit.lower())
    if factor is None:
        raise UsageError(
            f"invalid size {value!r}: unknown unit {unit!r} (use B, KB, MB, GB, KiB, MiB, GiB)"
        )
    if number < 0:
        raise UsageError(f"invalid size {value!r}: must not be negative")
    return round(number * factor)


def parse_count(value: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number within [minimum, maximum]: "4" = 4 (no unit, no fraction)."""
    if not re.fullmatch(r"\s*[-+]?[0-9]+\s*", str(value)):
        raise UsageError(f"invalid integer {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        raise UsageError(f"{str(value).strip()!r} must be {bound}")
    return number


def with_flag(flag: str, parse, value: str, *args):
    """parse(value, *args), its UsageError prefixed with the flag's name ("--seed: ...")."""
    try:
        return parse(value, *args)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Address: "HOST:PORT", "[v6addr]:PORT", ":PORT" or "PORT" -> (host, port); 0 = any port."""
    text = value.strip() if isinstance(value, str) else str(value)
    host: str
    port_text: str
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise UsageError(f"invalid address {value!r}: expected [IPv6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" not in text:
        host, port_text = "", text
    else:
        raise UsageError(f"invalid address {value!r}: write an IPv6 address as [ADDR]:PORT")
    if not host:
        host = default_host
    if any(c.isspace() for c in host):
        raise UsageError(f"invalid address {value!r}: bad host {host!r}")
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise UsageError(f"invalid address {value!r}: expected HOST:PORT with a numeric port")
    port = int(port_text)
    if port > MAX_PORT:
        raise UsageError(f"invalid address {value!r}: port must be 0..{MAX_PORT}")
    return host, port


def format_hostport(host: str, port: int) -> str:
    """The inverse of parse_hostport: brackets around IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_bytes(n: float) -> str:
    """A size for people, in SI units (1 kB = 1000 B), as everywhere rtcp prints sizes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def format_rate(bytes_per_s: float) -> str:
    """A rate for people: SI bytes per second (format_bytes + "/s")."""
    return f"{format_bytes(bytes_per_s)}/s"
