"""Scenario files (rtcp.proxy.scenario) and their timeline run by the Controller on a virtual
clock (no sockets): which change is applied when, repeated, seeded, undone after `for`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rtcp.proxy.changes import ChangeError, describe, parse_knobs, summarize
from rtcp.proxy.control import Controller
from rtcp.proxy.impair import ImpairConfig, Impairer, make_rng
from rtcp.proxy.scenario import ScenarioError, load_scenario, parse_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


class FakeProxy:
    """What the Controller needs of rtcp.proxy.loop.Proxy, without sockets."""

    def __init__(self) -> None:
        self.up = Impairer(ImpairConfig(), make_rng(1, "up"))
        self.down = Impairer(ImpairConfig(), make_rng(1, "down"))
        self.started_s = 100.0
        self.controller = None
        self.resets = 0

    def resume(self, impairer, now):
        return 0

    def reset_clients(self):
        self.resets += 1
        return 1, 0

    def refresh_paths(self):
        pass


def run(scenario_text: str, until_s: float, step_s: float = 0.25):
    proxy = FakeProxy()
    controller = Controller(proxy, scenario=parse_scenario(tomllib.loads(scenario_text)))
    now = proxy.started_s + 1.0
    controller.on_first_datagram(now)
    while now < proxy.started_s + until_s:
        now += step_s
        if controller.next_deadline_s <= now:
            controller.run_due(now)
    return proxy, controller


def test_steps_apply_at_their_offsets_from_the_first_datagram_and_undo_after_for():
    proxy, controller = run(
        """
        [[step]]
        at = "2s"
        loss = "30%"
        for = "3s"
        [[step]]
        at = "6s"
        down = "drop"
        for = "1500ms"
        [[step]]
        at = "9s"
        rate-down = "1mbit"
        """,
        until_s=20,
    )
    records = list(controller.changes)
    assert [(r["source"], r["summary"]) for r in records] == [
        ("scenario", "loss 30%"),
        ("timer", "loss off"),
        ("scenario", "link down both directions: partition (drop)"),
        ("timer", "link up both directions"),
        ("scenario", "rate-down 1mbit"),
    ]
    origin_ns = 1_000_000_000  # the first datagram came 1 s after start
    assert [r["elapsed_ns"] - origin_ns for r in records] == [
        2_000_000_000, 5_000_000_000, 6_000_000_000, 7_500_000_000, 9_000_000_000,
    ]  # fmt: skip
    assert [r.get("scheduled_ns", r.get("until_ns")) for r in records[::2]] == [
        3_000_000_000, 7_000_000_000, 10_000_000_000,
    ]  # fmt: skip
    assert describe(proxy.down.config) == {"rate": "1mbit"}
    assert not proxy.up.link_down and controller.steps_applied == 3


def test_repeat_runs_the_timeline_every_period():
    proxy, controller = run(
        """
        repeat = 3
        every = "10s"
        [[step]]
        at = "10s"
        reset = true
        """,
        until_s=60,
    )
    assert proxy.resets == 3
    assert [r["cycle"] for r in controller.changes] == [1, 2, 3]
    assert controller.next_deadline_s == float("inf")


def test_start_counts_from_the_proxy_start():
    proxy = FakeProxy()
    scenario = parse_scenario(
        tomllib.loads('start = "start"\n[[step]]\nat = "1s"\nloss = "5%"')
    )
    controller = Controller(proxy, scenario=scenario)
    assert controller.next_deadline_s == proxy.started_s + 1.0


def test_the_shipped_examples_load():
    names = sorted(p.name for p in EXAMPLES.glob("*.toml"))
    assert names == [
        "congested-evening.toml",
        "flapping-wifi.toml",
        "nat-rebinding.toml",
        "partition-3s.toml",
    ]
    for path in EXAMPLES.glob("*.toml"):
        assert load_scenario(path).steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no steps"),
        ('colour = "red"\n[[step]]\nat = "1s"\nreset = true', "unknown key 'colour'"),
        ("[[step]]\nloss = '5%'", "no 'at'"),
        ("[[step]]\nat = 2\nloss = '5%'", "with its unit"),
        ("[[step]]\nat = '2'\nloss = '5%'", "needs a unit"),
        ("[[step]]\nat = '2s'\nlos = '5%'", "unknown field 'los'"),
        ("[[step]]\nat = '2s'\nloss = '5%'\nreset = true", "one action per step"),
        ("[[step]]\nat = '2s'\ndown = 'sideways'", "mode"),
        ("[[step]]\nat = '2s'\nup = false", "write up = true"),
        ("[[step]]\nat = '3s'\nreset = true\n[[step]]\nat = '1s'\nreset = true", "time order"),
        ("repeat = 2\n[[step]]\nat = '1s'\nreset = true", "needs 'every'"),
        ("repeat = 2\nevery = '1s'\n[[step]]\nat = '1s'\nloss = '1%'\nfor = '1s'", "shorter"),
        ("repeat = 0\n[[step]]\nat = '1s'\nreset = true", "repeat"),
        ("seed = -1\n[[step]]\nat = '1s'\nreset = true", "seed"),
    ],
)
def test_bad_scenarios_are_refused_with_the_reason(text, message):
    with pytest.raises(ChangeError, match=message):
        parse_scenario(tomllib.loads(text))


def test_a_bad_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[[step]\n")
    with pytest.raises(ScenarioError, match="bad.toml: not valid TOML"):
        load_scenario(path)


def test_knobs_use_the_flags_vocabulary_and_directions_override():
    knobs = parse_knobs({"delay-up": "5ms", "delay": "20ms", "loss": "30%", "rate": None})
    assert knobs["up"]["delay_s"] == pytest.approx(0.005)
    assert knobs["down"]["delay_s"] == pytest.approx(0.020)
    assert knobs["up"]["loss"] == pytest.approx(0.3) and knobs["down"]["rate_bytes_per_s"] == 0
    before = {"up": {}, "down": {}}
    after = {"up": {"delay": "5ms", "loss": "30%"}, "down": {"delay": "20ms", "loss": "30%"}}
    assert summarize(before, after) == "delay-up 5ms, loss 30%, delay-down 20ms"


def test_knobs_refuse_a_bare_probability_as_the_flags_do():
    """0.3 could mean 0.3% or 30%: the API and scenario files say which, as --loss must."""
    with pytest.raises(ChangeError, match="percentage"):
        parse_knobs({"loss": 0.3})
