"""End to end: the network changes while an rtcp transfer runs through `rtcp proxy`, driven by
the control API (`rtcp ctl`), by a scenario file, and by the `rtcp_proxy` pytest fixture."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from rtcp.trace.writer import read_trace
from tests.e2e.conftest import RTCP, Proc, make_file, needs_proxy, send, wait_for
from tests.e2e.test_transfer import sha256

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
_CONTROL = r"^control on (http://\S+)$"


def state(url: str) -> dict:
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        return json.loads(response.read())


def api(url: str, method: str, path: str, body: dict) -> dict:
    """One control request from this process (quicker than starting `rtcp ctl`)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def ctl(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RTCP, "ctl", url, *args], capture_output=True, text=True, timeout=30, check=False
    )


def stop(proc: Proc) -> None:
    proc.popen.terminate()
    assert proc.wait(15) == 0, proc.stderr


@needs_proxy
def test_loss_0_30_0_mid_transfer_through_the_control_api(receiver, spawn, tmp_path):
    _recv, port, out = receiver()
    trace, stats = tmp_path / "proxy.jsonl", tmp_path / "stats.json"
    # --mtu keeps the segments small (many datagrams); the rate makes the transfer last at least 3 s whatever the machine's speed: the
    # changes below wait on the proxy's counters, not on the clock.
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        "--rate", "8mbit", "--mtu", "1400", "--seed", "5", "--control", "127.0.0.1:0",
        "--trace", trace, "--stats", stats,
    ])  # fmt: skip
    url = proxy.wait_line(_CONTROL).group(1)
    pport = proxy.wait_port()
    src = make_file(tmp_path / "changing.bin", 3_000_000, seed=3)
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}", "--timeout", "30s"])
    wait_for(lambda: state(url)["up"]["datagrams_in"] >= 100, 30, "the transfer to run")
    lossy = api(url, "PATCH", "/impairments", {"loss": "30%"})
    assert lossy["change"]["summary"] == "loss 30%"

    def lost() -> int:
        dropped = state(url)
        return dropped["up"]["dropped"]["loss"] + dropped["down"]["dropped"]["loss"]

    wait_for(lambda: lost() >= 20, 30, "datagrams lost to the new loss")
    clean = ctl(url, "set", "--loss", "0%")
    assert clean.returncode == 0 and "loss off" in clean.stdout, clean.stderr
    assert sender.wait(90) == 0, sender.stderr
    stop(proxy)
    assert sha256(out / "changing.bin") == sha256(src)

    final = json.loads(stats.read_text())
    first, second = final["changes"]
    assert first["elapsed_ns"] < second["elapsed_ns"]
    for direction in ("up", "down"):  # no loss before the first change, none after the second
        assert first["counters"][direction]["dropped"]["loss"] == 0
        assert final[direction]["dropped"]["loss"] == second["counters"][direction]["dropped"]["loss"]
    assert sum(second["counters"][d]["dropped"]["loss"] for d in ("up", "down")) >= 20
    assert final["impairments"]["up"] == {"rate": "8mbit", "mtu": 1400}

    records = read_trace(trace)
    changes = [i for i, r in enumerate(records) if r["event"] == "proxy_change"]
    assert [records[i]["summary"] for i in changes] == ["loss 30%", "loss off"]
    lost_at = [
        i for i, r in enumerate(records)
        if r["event"] == "proxy_decision" and r.get("cause") == "loss"
    ]  # fmt: skip
    assert lost_at and changes[0] < min(lost_at) and max(lost_at) < changes[1]
    assert records[changes[0]]["t"] <= records[lost_at[0]]["t"]


@needs_proxy
def test_ctl_refusals_are_one_line(receiver, spawn):
    _recv, port, _out = receiver()
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        "--control", "127.0.0.1:0",
    ])  # fmt: skip
    url = proxy.wait_line(_CONTROL).group(1)
    proxy.wait_port()
    for args, message in (
        (["set", "--los", "3%"], "unknown field 'los'"),
        (["set", "--rate", "-1mbit"], "must be positive"),
        (["down", "--for", "3"], "needs a unit"),
        (["down", "--sideways"], "unknown option"),
    ):
        result = ctl(url, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rtcp: error: ") and message in lines[0]
    shown = ctl(url, "show")
    assert shown.returncode == 0 and "changes 0" in shown.stdout
    stop(proxy)
    result = ctl(url, "show")
    assert result.returncode == 7 and "no answer" in result.stderr


@needs_proxy
def test_rtcp_proxy_ctl_is_rtcp_ctl(receiver, spawn):
    _recv, port, _out = receiver()
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        "--control", "127.0.0.1:0",
    ])  # fmt: skip
    url = proxy.wait_line(_CONTROL).group(1)
    proxy.wait_port()
    changed = subprocess.run([RTCP, "proxy", "ctl", url, "set", "--loss", "30%"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert changed.returncode == 0, changed.stderr
    assert state(url)["impairments"]["up"]["loss"] == "30%"
    shown = subprocess.run([RTCP, "proxy", "ctl", url, "show"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert shown.returncode == 0 and shown.stdout == ctl(url, "show").stdout
    stop(proxy)


@needs_proxy
def test_control_refuses_a_public_address_unless_asked(spawn):
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
        "--control", "0.0.0.0:0",
    ])  # fmt: skip
    assert proxy.wait(15) == 2
    assert "not a loopback address" in proxy.stderr and "--control-remote" in proxy.stderr


@needs_proxy
def test_scenario_with_a_3s_partition_completes_a_transfer(receiver, spawn, tmp_path):
    _recv, port, out = receiver()
    stats, trace = tmp_path / "stats.json", tmp_path / "proxy.jsonl"
    # 2 MB at 4 mbit/s take at least 4 s: the partition (at 2 s, for 3 s) hits the transfer.
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        "--rate", "4mbit", "--mtu", "1400", "--scenario", EXAMPLES / "partition-3s.toml",
        "--stats", stats, "--trace", trace,
    ])  # fmt: skip
    pport = proxy.wait_port()
    src = make_file(tmp_path / "partitioned.bin", 2_000_000, seed=4)
    result = send(src, pport, "--timeout", "30s", timeout=120)
    assert result.returncode == 0, result.stderr
    stop(proxy)
    assert sha256(out / "partitioned.bin") == sha256(src)
    final = json.loads(stats.read_text())
    assert final["seed"] == 1  # the scenario's, as no --seed was given
    assert final["scenario"]["steps_applied"] == 1
    down, up = final["changes"]
    assert (down["source"], down["step"], down["action"]) == ("scenario", 1, "down")
    assert (up["source"], up["ends"], up["action"]) == ("timer", down["seq"], "up")
    assert up["elapsed_ns"] - down["elapsed_ns"] >= 3_000_000_000
    assert down["elapsed_ns"] - final["scenario"]["origin_ns"] >= 2_000_000_000
    assert final["up"]["dropped"]["down"] > 0
    events = [r for r in read_trace(trace) if r["event"] == "proxy_change"]
    assert [e["action"] for e in events] == ["start", "down", "up"]


@needs_proxy
def test_reset_mid_transfer_survives_by_path_validation(receiver, spawn, tmp_path):
    _recv, port, out = receiver()
    proxy = spawn([
        "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}",
        "--rate", "8mbit", "--mtu", "1400", "--control", "127.0.0.1:0",
    ])  # fmt: skip
    url = proxy.wait_line(_CONTROL).group(1)
    pport = proxy.wait_port()
    src = make_file(tmp_path / "rebound.bin", 4_000_000, seed=5)  # 4 s at least: reset midway
    sender = spawn(["send", src, "--to", f"127.0.0.1:{pport}", "--timeout", "5s"])
    wait_for(lambda: state(url)["up"]["datagrams_in"] >= 100, 30, "the transfer to run")
    reset = api(url, "POST", "/reset", {})
    assert reset["change"]["mappings_forgotten"] == 1
    assert sender.wait(60) == 0, sender.stderr
    assert state(url)["clients_total"] == 2
    assert sha256(out / "rebound.bin") == sha256(src)


def test_rtcp_proxy_fixture_in_front_of_rtcp(rtcp_proxy, receiver, tmp_path):
    """The pytest plugin's fixture (registered by rtcp's entry point) with rtcp itself."""
    _recv, port, out = receiver()
    # --mtu keeps about 370 data segments: 5% loss misses all of them once in 10**8 runs
    lab = rtcp_proxy(("127.0.0.1", port), loss="5%", delay="1ms", mtu="1400", seed=9)
    src = make_file(tmp_path / "fixture.bin", 500_000, seed=6)
    result = send(src, lab.address[1], "--timeout", "30s", timeout=120)
    assert result.returncode == 0, result.stderr
    assert sha256(out / "fixture.bin") == sha256(src)
    stats = lab.stats
    assert stats["up"]["datagrams_in"] > 0
    assert stats["up"]["dropped"]["loss"] + stats["down"]["dropped"]["loss"] > 0


def test_the_lab_example_with_a_udp_echo_server():
    example = EXAMPLES.parent / "lab_udp_echo.py"
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "after a pause: ['held 0', 'held 1', 'held 2']" in result.stdout
    ports = re.search(r"the server saw port (\d+), now port (\d+)", result.stdout)
    assert ports and ports.group(1) != ports.group(2)
