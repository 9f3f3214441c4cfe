"""`rtcp ctl URL COMMAND ...` (or `rtcp proxy ctl URL COMMAND ...`, the same: rtcp.cli.ALIASES):
the shell's client for `rtcp proxy --control` (rtcp.proxy.api).

    rtcp ctl :8474 show                      # GET /: impairments, link, stats, recent changes
    rtcp ctl :8474 set --loss 30% [--for 3s] # PATCH /impairments (the proxy's flags, any of them)
    rtcp ctl :8474 replace --delay 20ms      # PUT /impairments: every other knob goes off
    rtcp ctl :8474 clear                     # PUT /impairments {}: no impairment
    rtcp ctl :8474 down [--hold] [--direction up|down] [--for 3s]
    rtcp ctl :8474 up [--direction up|down]
    rtcp ctl :8474 reset

The knobs go to the proxy as typed: it parses them with the flags' own parsers, so its answer
(one line: what changed, and when) or its refusal is the same as for the flag.

Every `rtcp` start imports this module to register the command: the HTTP client (rtcp.proxy.api,
urllib) is imported when a request is made.
"""

from __future__ import annotations

import json
import re
from typing import Any

import typer

from rtcp.errors import LocalIOError, UsageError

REQUEST_TIMEOUT_S = 15.0
COMMANDS = ("show", "set", "replace", "clear", "down", "pause", "up", "reset")
_OPTIONS = {  # per command: the options it takes besides knobs (None: no value)
    "show": {"--json": None},
    "set": {"--for": "for"},
    "replace": {"--for": "for"},
    "clear": {},
    "down": {"--hold": None, "--mode": "mode", "--direction": "direction", "--for": "for"},
    "pause": {"--direction": "direction", "--for": "for"},
    "up": {"--direction": "direction"},
    "reset": {},
}


def control_url(text: str) -> str:
    """":8474", "8474", "host:8474" or a full http:// URL -> the API's base URL."""
    text = text.strip().rstrip("/")
    if re.match(r"^https?://", text):
        return text
    if re.fullmatch(r"[0-9]{1,5}", text):
        return f"http://127.0.0.1:{text}"
    if text.startswith(":"):
        return f"http://127.0.0.1{text}"
    if re.fullmatch(r"(\[[0-9a-fA-F:.%a-zA-Z]+\]|[^:/\s]+):[0-9]{1,5}", text):
        return f"http://{text}"
    raise UsageError(f"ctl: invalid URL {text!r}: use :PORT, HOST:PORT or http://HOST:PORT")


def parse_args(command: str, args: list[str]) -> tuple[dict[str, Any], bool]:
    """The request body for `command` from its `--name value` arguments, and --json."""
    if command not in COMMANDS:
        raise UsageError(f"ctl: unknown command {command!r}: one of {', '.join(COMMANDS)}")
    options = _OPTIONS[command]
    takes_knobs = command in ("set", "replace")
    body: dict[str, Any] = {}
    as_json = False
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"ctl {command}: unexpected argument {arg!r}")
        name, eq, value = arg.partition("=")
        if name in options and options[name] is None:
            if eq:
                raise UsageError(f"ctl {command}: {name} takes no value")
            if name == "--hold":
                body["mode"] = "hold"
            else:
                as_json = True
            i += 1
            continue
        if name not in options and not takes_knobs:
            takes = ", ".join(options) or "no options"
            raise UsageError(f"ctl {command}: unknown option {name!r} (takes {takes})")
        if not eq:
            if i + 1 >= len(args):
                raise UsageError(f"ctl {command}: {name} needs a value")
            value = args[i + 1]
            i += 1
        i += 1
        key = options.get(name) or name[2:]
        body[key] = None if takes_knobs and value in ("off", "none") else value
    if command == "pause":
        body["mode"] = "hold"
    if command == "set" and not [k for k in body if k != "for"]:
        raise UsageError("ctl set: name at least one knob, e.g. `set --loss 30%`")
    return body, as_json


def _route(command: str) -> tuple[str, str]:
    """The method and path of a command: the API's own routes, and the ones ctl adds."""
    from rtcp.proxy.api import ROUTES

    extra = {"show": ("GET", "/"), "clear": ROUTES["replace"], "pause": ROUTES["down"]}
    return {**ROUTES, **extra}[command]


def call(base: str, command: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send one request; the answer's JSON, or UsageError (the proxy refused, 4xx: exit 2)
    or LocalIOError (no answer: exit 7)."""
    import urllib.error

    from rtcp.proxy.api import ApiFailed, ApiRefused, request_json

    method, path = _route(command)
    data = body if method != "GET" else None
    try:
        return request_json(base + path, method, data, REQUEST_TIMEOUT_S)
    except ApiRefused as exc:
        raise UsageError(f"ctl {command}: the proxy refused: {exc}") from None
    except ApiFailed as exc:
        raise LocalIOError(f"ctl {command}: the proxy answered {exc}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LocalIOError(f"ctl: no answer from {base}: {reason}") from None


def describe_state(state: dict[str, Any]) -> str:
    """`show` for a person: settings and link per direction, counters, the last changes."""
    lines = []
    for direction in ("up", "down"):
        knobs = state["impairments"][direction]
        setting = " ".join(f"{k} {v}" for k, v in knobs.items()) or "no impairment"
        d = state[direction]
        dropped = ", ".join(f"{c} {n}" for c, n in d["dropped"].items() if n) or "none"
        lines.append(
            f"{direction:<4} link {state['link'][direction]:<6} {setting}; "
            f"in {d['datagrams_in']} out {d['datagrams_out']} dropped: {dropped}"
        )
    lines.append(
        f"clients {state['clients_active']} (total {state['clients_total']}), "
        f"changes {state['changes_total']}"
    )
    for record in state["changes"][-5:]:
        lines.append("  " + describe_change(record))
    return "\n".join(lines)


def describe_change(record: dict[str, Any]) -> str:
    at = record.get("elapsed_ns", 0) / 1e9
    if "error" in record:
        return f"at {at:.3f} s: {record['source']} {record['action']} refused: {record['error']}"
    until = f" until {record['until_ns'] / 1e9:.3f} s" if "until_ns" in record else ""
    return f"change {record['seq']} at {at:.3f} s ({record['source']}): {record['summary']}{until}"


def ctl_command(
    ctx: typer.Context,
    url: str = typer.Argument(..., metavar="URL", help=":PORT, HOST:PORT or http://HOST:PORT"),
    command: str = typer.Argument(
        "show", metavar="COMMAND", help="show, set, replace, clear, down, pause, up, reset"
    ),
) -> None:
    """Change a running `rtcp proxy --control` (docs/proxy.md). Also `rtcp proxy ctl ...`.

    set/replace take the proxy's impairment flags (--loss 30% --delay-down 5ms; "off" turns
    one off) and --for D; down takes --hold (a pause instead of a partition), --direction and
    --for; up takes --direction. Exit 2 if the proxy refused, 7 if it did not answer.

    Example: rtcp ctl :8474 set --loss 30% --for 3s
    """
    body, as_json = parse_args(command, list(ctx.args))
    answer = call(control_url(url), command, body)
    if as_json:
        print(json.dumps(answer, indent=2))
    elif command == "show":
        print(describe_state(answer))
    else:
        print(describe_change(answer["change"]))
