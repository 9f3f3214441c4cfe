"""What an `rtcp` start loads: every command's help page works, and each command imports only
what it needs (every command module is imported to register it, so what one of them imports at
the top is paid by every `rtcp send`). Modules, not milliseconds: `make bench` measures the
start-up's CPU time (docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.conftest import RTCP

COMMANDS = ("proxy", "ctl", "send", "recv", "keygen", "decrypt", "bench", "explain", "plot")

# Never needed to send, receive or proxy: the control API's HTTP server and client, the
# ladder, the pcap codec, the benchmark, matplotlib, and pydantic (typer coerces option values
# through it; rtcp.cli keeps rtcp's string options as strings). cryptography neither, without
# a key (rtcp.core.protection loads it with the first key).
NOT_FOR_A_TRANSFER = (
    "pydantic",
    "http.server",
    "urllib.request",
    "rtcp.proxy.api",
    "rtcp.trace.ladder",
    "rtcp.trace.pcap",
    "rtcp.bench.runner",
    "matplotlib",
)

_LOADED = """
import json, sys
from rtcp.cli import main
sys.argv = ["rtcp", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""


def loaded_by(*args: str) -> tuple[int, set[str]]:
    """The exit code of `rtcp ARGS` and every module it had imported when it ended."""
    res = subprocess.run(
        [sys.executable, "-c", _LOADED, json.dumps(args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(res.stdout.splitlines()[-1])
    return report["exit"], set(report["modules"])


def imported(modules: set[str], prefix: str) -> bool:
    return prefix in modules or any(m.startswith(prefix + ".") for m in modules)


@pytest.mark.parametrize("command", ["", *COMMANDS, "proxy ctl"])
def test_every_help_page_works(command):
    res = subprocess.run(
        [RTCP, *command.split(), "--help"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "Usage: rtcp" in res.stdout
    if not command:
        for name in COMMANDS:
            assert f" {name} " in res.stdout, (name, res.stdout)


def test_version_loads_no_command_machinery():
    code, modules = loaded_by("--version")
    assert code == 0
    for name in (*NOT_FOR_A_TRANSFER, "cryptography", "rtcp.core.connection", "rtcp.net.driver",
                 "rtcp.proxy.loop", "rtcp.transfer.sender", "rtcp.transfer.receiver"):
        assert not imported(modules, name), name


def test_send_without_a_key_loads_neither_the_proxy_nor_the_receiver_nor_cryptography(tmp_path):
    code, modules = loaded_by("send", str(tmp_path / "missing.bin"), "--to", "127.0.0.1:9")
    assert code == 7  # the missing file: after the options were parsed and the sender loaded
    assert "rtcp.transfer.sender" in modules
    for name in (*NOT_FOR_A_TRANSFER, "cryptography", "rtcp.proxy.loop", "rtcp.proxy.impair",
                 "rtcp.transfer.receiver", "tqdm"):
        assert not imported(modules, name), name


def test_recv_loads_neither_the_proxy_nor_cryptography(tmp_path):
    (tmp_path / "afile").write_text("x")
    code, modules = loaded_by("recv", "--listen", "127.0.0.1:0", "--out", str(tmp_path / "afile"))
    assert code == 7  # --out is a file: after the receiver was loaded
    assert "rtcp.transfer.receiver" in modules
    for name in (*NOT_FOR_A_TRANSFER, "cryptography", "rtcp.proxy.loop",
                 "rtcp.transfer.sender"):
        assert not imported(modules, name), name


def test_proxy_loads_neither_the_transfer_nor_the_control_api():
    code, modules = loaded_by(
        "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--loss", "1"
    )
    assert code == 2  # "1% or 100%?": after the impairments were loaded to parse the flags
    assert "rtcp.proxy.impair" in modules
    for name in (*NOT_FOR_A_TRANSFER, "cryptography", "rtcp.net.driver", "rtcp.transfer.sender",
                 "rtcp.transfer.receiver"):
        assert not imported(modules, name), name


def test_a_string_option_keeps_its_value_and_a_path_is_still_converted(tmp_path):
    """The options rtcp.cli keeps as strings reach rtcp.units as typed (`--width` too: one
    line, not typer's box); `rtcp explain`'s TRACE paths still go through typer's coercion."""
    res = subprocess.run(
        [RTCP, "send", str(tmp_path / "x"), "--to", "127.0.0.1:9", "--timeout", " 15"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 2 and "' 15'" in res.stderr, res.stderr
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t":0,"event":"trace_start","role":"send"}\n')
    res = subprocess.run(
        [RTCP, "explain", str(trace), "--width", "wide"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr == "rtcp: error: --width: invalid integer 'wide'\n"
    res = subprocess.run(
        [RTCP, "explain", str(tmp_path / "missing.jsonl")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )
    assert res.returncode == 7, res.stderr
    assert res.stderr.startswith(f"rtcp: error: cannot read {tmp_path / 'missing.jsonl'}: ")
