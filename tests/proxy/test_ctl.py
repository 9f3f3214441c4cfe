"""`rtcp ctl`'s own parsing (rtcp.proxy.ctl): URLs and arguments, before any request."""

from __future__ import annotations

import pytest

from rtcp.errors import UsageError
from rtcp.proxy.ctl import control_url, describe_change, parse_args


@pytest.mark.parametrize(
    ("text", "url"),
    [
        (":8474", "http://127.0.0.1:8474"),
        ("8474", "http://127.0.0.1:8474"),
        ("localhost:8474", "http://localhost:8474"),
        ("[::1]:8474", "http://[::1]:8474"),
        ("http://10.0.0.1:8474/", "http://10.0.0.1:8474"),
    ],
)
def test_control_urls(text, url):
    assert control_url(text) == url


def test_a_bad_url_is_a_usage_error():
    with pytest.raises(UsageError, match="invalid URL"):
        control_url("not a url")


@pytest.mark.parametrize(
    ("command", "args", "body"),
    [
        ("set", ["--loss", "30%", "--for", "3s"], {"loss": "30%", "for": "3s"}),
        ("set", ["--delay-down=5ms", "--loss", "off"], {"delay-down": "5ms", "loss": None}),
        ("replace", [], {}),
        ("down", ["--hold", "--direction", "up"], {"mode": "hold", "direction": "up"}),
        ("pause", ["--for", "1s"], {"mode": "hold", "for": "1s"}),
        ("up", [], {}),
        ("reset", [], {}),
    ],
)
def test_arguments_become_the_request_body(command, args, body):
    assert parse_args(command, args) == (body, False)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("sett", [], "unknown command"),
        ("set", [], "at least one knob"),
        ("set", ["--loss"], "needs a value"),
        ("set", ["loss", "3%"], "unexpected argument"),
        ("down", ["--sideways"], "unknown option"),
        ("reset", ["--for", "3s"], "unknown option"),
        ("down", ["--hold=yes"], "takes no value"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(command, args, message):
    with pytest.raises(UsageError, match=message):
        parse_args(command, args)


def test_a_change_in_one_line():
    record = {"seq": 2, "source": "api", "summary": "loss 30%", "elapsed_ns": 2_500_000_000,
              "until_ns": 5_500_000_000}
    assert describe_change(record) == "change 2 at 2.500 s (api): loss 30% until 5.500 s"


def test_rtcp_proxy_ctl_is_an_alias_of_rtcp_ctl():
    from rtcp.cli import expand_aliases

    assert expand_aliases(["proxy", "ctl", ":8474", "set", "--loss", "30%"]) == [
        "ctl", ":8474", "set", "--loss", "30%"]
    assert expand_aliases(["proxy", "--listen", ":0", "--upstream", ":9"]) == [
        "proxy", "--listen", ":0", "--upstream", ":9"]
    assert expand_aliases(["send", "proxy", "ctl"]) == ["send", "proxy", "ctl"]
    assert expand_aliases([]) == []
