"""rtcp.units: every accepted spelling, and a clear UsageError naming the bad value otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcp.errors import ExitCode, UsageError
from rtcp.units import (
    format_hostport,
    parse_count,
    parse_duration,
    parse_hostport,
    parse_probability,
    parse_rate,
    parse_size,
    with_flag,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5%", 0.05),
        ("0", 0.0),
        ("0%", 0.0),
        ("100%", 1.0),
        (" 2.5 % ", 0.025),
        ("0.1%", 0.001),
        (".5%", 0.005),
    ],
)
def test_probability(text: str, expected: float) -> None:
    assert parse_probability(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text", ["150%", "-1%", "1.5", "abc", "", "5 percent", "5%%", "nan", "1e999", "1", "0.05"]
)
def test_probability_errors_name_the_value(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_probability(text)
    assert repr(text) in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.020),
        ("1.5s", 1.5),
        ("500us", 0.0005),
        ("500µs", 0.0005),
        ("0", 0.0),
        ("2sec", 2.0),
        ("10msec", 0.010),
        ("1m", 60.0),
        ("20 MS", 0.020),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-5ms", "5 parsecs", "ms", "", "1.2.3s", "5%", "20", "-3"])
def test_duration_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("10mbit", 1.25e6),
        ("10Mbit", 1.25e6),
        ("1gbit", 1.25e8),
        ("800kbit", 1e5),
        ("8bit", 1.0),
        ("1mbps", 1e6),
        ("2kbps", 2000.0),
        ("3bps", 3.0),
        ("1gbps", 1e9),
        ("1mibit", 2**20 / 8),
        ("1.5mbit", 187500.0),
    ],
)
def test_rate(text: str, bytes_per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["0mbit", "-1mbit", "10 furlongs", "fast", "10mb", "800", "-5"])
def test_rate_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64KB", 64000),
        ("64kb", 64000),
        ("1MiB", 1048576),
        ("1500", 1500),
        ("1500B", 1500),
        ("1.5KiB", 1536),
        ("2MB", 2_000_000),
        ("0", 0),
    ],
)
def test_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "64 elephants", "KB", "1.5.1"])
def test_size_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost:0", ("localhost", 0)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_hostport_default_host() -> None:
    assert parse_hostport(":53", default_host="0.0.0.0") == ("0.0.0.0", 53)


@pytest.mark.parametrize(
    "text", ["host:", "host:abc", "host:70000", "::1:90", "[::1]90", "[::1", "a b:1", "", "h:-1"]
)
def test_hostport_errors(text: str) -> None:
    with pytest.raises(UsageError, match="invalid address"):
        parse_hostport(text)


def test_format_hostport_round_trips() -> None:
    for host, port in [("127.0.0.1", 1), ("::1", 2), ("example.org", 3)]:
        assert parse_hostport(format_hostport(host, port)) == (host, port)


@given(st.text(max_size=20))
def test_parsers_never_fail_otherwise(text: str) -> None:
    """Any input either parses or raises UsageError: never another exception."""
    for parse in (parse_probability, parse_duration, parse_rate, parse_size, parse_hostport):
        try:
            parse(text)
        except UsageError:
            pass


@pytest.mark.parametrize(
    ("parse", "text", "hint"),
    [
        (parse_probability, "1", "1% or 100%?"),
        (parse_duration, "10", "10ms or 10s?"),
        (parse_rate, "10", "10mbit for bits/s, 10mbps for bytes/s"),
    ],
)
def test_a_bare_number_is_refused_with_the_choices(parse, text: str, hint: str) -> None:
    """netem reads `loss 1` as 1%, other tools as 100%: rtcp never guesses (issue 11)."""
    with pytest.raises(UsageError) as info:
        parse(text)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    ("text", "minimum", "maximum", "expected"),
    [("4", 1, None, 4), (" 16 ", 1, 16, 16), ("0", 0, None, 0), ("+3", 1, 5, 3)],
)
def test_counts(text: str, minimum: int, maximum: int | None, expected: int) -> None:
    assert parse_count(text, minimum, maximum) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wide", "--width: invalid integer 'wide'"),
        ("1.5", "--width: invalid integer '1.5'"),
        ("", "--width: invalid integer ''"),
        ("10", "--width: '10' must be at least 72"),
    ],
)
def test_a_bad_count_names_its_flag_and_value(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        with_flag("--width", parse_count, text, 72)
    assert str(info.value) == message
    assert info.value.exit_code == ExitCode.USAGE


def test_a_count_beyond_its_range_says_the_range() -> None:
    with pytest.raises(UsageError, match=r"^--parallel: '99' must be 1\.\.16$"):
        with_flag("--parallel", parse_count, "99", 1, 16)


def test_with_flag_prefixes_any_parser_error() -> None:
    with pytest.raises(UsageError, match=r"^--size: invalid size"):
        with_flag("--size", parse_size, "12 parsecs")
    assert with_flag("--size", parse_size, "1KiB") == 1024
