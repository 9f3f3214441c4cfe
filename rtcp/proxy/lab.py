"""`rtcp.proxy.Lab`: a bad network in front of a UDP server, from Python (a test suite).

    from rtcp.proxy import Lab

    with Lab(upstream=("127.0.0.1", 9000), loss="2%", delay="20ms", seed=1) as lab:
        client.sendto(data, lab.address)    # the proxy's listening address (a free port)
        lab.set(loss="30%")                 # from the next datagram on
        lab.down(duration="3s")             # a 3 s partition (mode="hold": a pause)
        lab.up()
        lab.reset()                         # forget the client mappings (a NAT reboot)
        lab.stats["up"]["dropped"]["loss"]  # the same counters as --stats

The proxy (rtcp.proxy.loop) runs on a thread of this process; every call is handed to it
(`Proxy.call_soon`) and applied between two datagrams, and returns the change's record (when
it took effect, the counters at that moment). With `process=True` it runs as a child process
instead (`rtcp proxy`, its own interpreter: it never competes with the test for the GIL, and
nothing the test does to its own process stops it); the Lab then talks to it through its
control API on loopback, with the same calls, answers and errors. Knobs are the flags' names with `_` for `-`
(`delay_down="5ms"`) and the flags' values ("30%", "20ms", "1mbit", or a number as the flag
reads it); a bad one raises `ChangeError` naming it. `control=True` also serves the HTTP
control API (`lab.control_url`), `trace=PATH` records the decisions and changes as
`rtcp proxy --trace` does, `scenario=PATH` runs a TOML timeline.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Self

from rtcp.proxy.api import ROUTES, ApiFailed, ApiRefused, request_json
from rtcp.proxy.changes import ChangeError, apply_knobs, change_from_request, parse_knobs
from rtcp.proxy.control import Controller
from rtcp.proxy.defaults import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_MAX_CLIENTS
from rtcp.proxy.impair import DIRECTIONS, ImpairConfig, Impairer, make_rng
from rtcp.proxy.loop import Proxy
from rtcp.proxy.scenario import Scenario, load_scenario

CALL_TIMEOUT_S = 10.0  # how long a call waits for the loop (it answers within a wakeup)
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0  # process=True: how long the child may take to print its addresses
# process=True: the child is `rtcp proxy` run by this interpreter (wherever rtcp is installed)
_CHILD_CODE = "import sys; sys.argv[0] = 'rtcp'; from rtcp.cli import main; main()"
_CHILD = [sys.executable, "-c", _CHILD_CODE, "proxy"]
_LISTENING = re.compile(r"^listening on (\S+):(\d+)$")
_CONTROL = re.compile(r"^control on (http://\S+)$")


def _knob_fields(knobs: dict[str, Any]) -> dict[str, Any]:
    return {name.replace("_", "-"): value for name, value in knobs.items()}


class Lab:
    """A proxy on a thread (or, process=True, in a child process) in front of `upstream`; see
    the module docstring."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
        control: bool = False,
        trace: str | Path | None = None,
        scenario: str | Path | Scenario | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        process: bool = False,
        **knobs: Any,
    ):
        fields = parse_knobs(_knob_fields(knobs))  # ChangeError now, not in the thread
        self.configs: dict[str, ImpairConfig] = {
            d: apply_knobs(ImpairConfig(), fields.get(d, {}), replace=True) for d in DIRECTIONS
        }
        self.upstream = upstream
        self.listen = listen
        self.seed = seed
        self.want_control = control
        self.trace_path = Path(trace) if trace is not None else None
        self.scenario = load_scenario(scenario) if isinstance(scenario, (str, Path)) else scenario
        self.process = process
        if process and self.scenario is not None and not isinstance(scenario, (str, Path)):
            raise ValueError("Lab(process=True) takes a scenario as a file path")
        self._scenario_path = Path(scenario) if isinstance(scenario, (str, Path)) else None
        self._knobs = {k: v for k, v in _knob_fields(knobs).items() if v is not None}
        self._child: subprocess.Popen | None = None
        self._child_lines: queue.Queue[str | None] = queue.Queue()
        self._child_err: list[str] = []
        self._child_address: tuple[str, int] | None = None
        self._child_url: str | None = None
        self.idle_timeout_s = idle_timeout_s
        self.max_clients = max_clients
        self.proxy: Proxy | None = None
        self.controller: Controller | None = None
        self._server: Any = None
        self._writer: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- life ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self.process:
            return self._start_child()
        impairers: dict[str, Any] = {
            d: Impairer(self.configs[d], make_rng(self.seed, d)) for d in DIRECTIONS
        }
        if self.trace_path is not None:
            from rtcp.trace.proxy_trace import TracingImpairer
            from rtcp.trace.writer import TraceWriter

            self._writer = TraceWriter(self.trace_path, role="proxy")
            impairers = {d: TracingImpairer(impairers[d], self._writer, d) for d in DIRECTIONS}
        self.proxy = Proxy(
            self.listen,
            self.upstream,
            impairers["up"],
            impairers["down"],
            idle_timeout_s=self.idle_timeout_s,
            max_clients=self.max_clients,
            periodic=self._flush if self._writer is not None else None,
        )
        self.controller = Controller(self.proxy, writer=self._writer, scenario=self.scenario)
        self._thread = threading.Thread(target=self._run, name="rtcp-proxy-lab", daemon=True)
        self._thread.start()
        if self.want_control:
            from rtcp.proxy.api import ControlServer

            self._server = ControlServer(("127.0.0.1", 0), self.proxy, self.controller)
        return self

    def _run(self) -> None:
        assert self.proxy is not None
        try:
            self.proxy.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the next call and close()
            self._error = exc

    def _flush(self, _proxy: Proxy) -> None:
        try:
            self._writer.flush()
        except OSError:
            pass

    def close(self) -> None:
        """Stop the proxy and the API; the trace is complete when this returns."""
        if self._child is not None:
            self._stop_child()
            return
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.proxy is not None and self._thread is not None:
            self.proxy.stop()
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"the proxy thread failed: {error!r}") from error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what a test reads --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where clients send (the real port)."""
        if self._child_address is not None:
            return self._child_address
        return self._running().local_address

    @property
    def control_url(self) -> str:
        if self._child_url is not None:  # the child always serves it: the Lab talks through it
            return self._child_url
        if self._server is None:
            raise RuntimeError("this Lab serves no control API: Lab(..., control=True)")
        return self._server.url

    @property
    def stats(self) -> dict[str, Any]:
        """The counters as in `rtcp proxy --stats`, read on the loop's thread."""
        if self._child is not None:
            return self._request("GET", "/", None)
        proxy = self._running()
        return self._call(proxy.snapshot)

    # --- changes ------------------------------------------------------------------------

    def set(self, duration: str | None = None, **knobs: Any) -> dict[str, Any]:
        """Change the named knobs (None turns one off), for `duration` ("3s") if given."""
        return self._change("set", _knob_fields(knobs), duration)

    def replace(self, duration: str | None = None, **knobs: Any) -> dict[str, Any]:
        """Exactly these knobs: every other one goes off."""
        return self._change("replace", _knob_fields(knobs), duration)

    def clear(self) -> dict[str, Any]:
        """No impairment at all (the link state stays)."""
        return self._change("replace", {}, None)

    def down(
        self, duration: str | None = None, *, mode: str = "drop", direction: str = "both"
    ) -> dict[str, Any]:
        """A partition (mode="drop") or a pause (mode="hold": held, sent on at up())."""
        return self._change("down", {"mode": mode, "direction": direction}, duration)

    def pause(self, duration: str | None = None, *, direction: str = "both") -> dict[str, Any]:
        return self.down(duration, mode="hold", direction=direction)

    def up(self, *, direction: str = "both") -> dict[str, Any]:
        return self._change("up", {"direction": direction}, None)

    def reset(self) -> dict[str, Any]:
        """Forget every client mapping: the next datagram of a client gets a new upstream port."""
        return self._change("reset", {}, None)

    def _change(self, action: str, body: dict[str, Any], duration: str | None) -> dict[str, Any]:
        if duration is not None:
            body = {**body, "for": duration}
        change = change_from_request(action, body)  # ChangeError here, as in the thread
        if self._child is not None:
            method, path = ROUTES[action]
            return self._request(method, path, body)["change"]
        controller = self.controller
        assert controller is not None
        return self._call(lambda: controller.apply_now(change, "lab"))

    def _running(self) -> Proxy:
        if self.proxy is None or self._thread is None:
            raise RuntimeError("the Lab is not started: use `with Lab(...) as lab` or .start()")
        return self.proxy

    def _call(self, fn: Any) -> Any:
        proxy = self._running()
        if self._error is not None or not self._thread.is_alive():
            raise RuntimeError(f"the proxy thread is not running ({self._error!r})")
        return proxy.call_soon(fn).result(timeout=CALL_TIMEOUT_S)

    # --- process=True -------------------------------------------------------------------

    def _child_argv(self) -> list[str]:
        host, port = self.listen
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        up_host, up_port = self.upstream
        upstream = f"[{up_host}]:{up_port}" if ":" in up_host else f"{up_host}:{up_port}"
        argv = [*_CHILD, "--listen", listen, "--upstream", upstream, "--seed", str(self.seed),
                "--control", "127.0.0.1:0", "--idle-timeout", f"{self.idle_timeout_s}s",
                "--max-clients", str(self.max_clients)]
        for name, value in self._knobs.items():
            argv += [f"--{name}", str(value)]
        if self.trace_path is not None:
            argv += ["--trace", str(self.trace_path)]
        if self._scenario_path is not None:
            argv += ["--scenario", str(self._scenario_path)]
        return argv

    def _start_child(self) -> Self:
        self._child = subprocess.Popen(
            self._child_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
        )
        for target, stream in ((self._pump_lines, self._child.stdout),
                               (self._pump_err, self._child.stderr)):
            threading.Thread(target=target, args=(stream,), daemon=True).start()
        try:
            while self._child_address is None:
                try:
                    line = self._child_lines.get(timeout=START_TIMEOUT_S)
                except queue.Empty:
                    raise RuntimeError(f"the proxy process printed no address within "
                                       f"{START_TIMEOUT_S:.0f} s") from None
                if line is None:
                    raise RuntimeError(f"the proxy process ended (exit {self._child.wait()}): "
                                       f"{''.join(self._child_err).strip()}")
                if m := _CONTROL.match(line):
                    self._child_url = m.group(1)
                elif m := _LISTENING.match(line):
                    self._child_address = (m.group(1).strip("[]"), int(m.group(2)))
        except BaseException:
            self._stop_child(check=False)
            raise
        return self

    def _pump_lines(self, stream: Any) -> None:
        for line in stream:
            self._child_lines.put(line.rstrip("\n"))
        self._child_lines.put(None)

    def _pump_err(self, stream: Any) -> None:
        for chunk in stream:
            self._child_err.append(chunk)

    def _stop_child(self, check: bool = True) -> None:
        """SIGTERM (the proxy stops cleanly: trace and stats complete), SIGKILL if it hangs."""
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            rc = child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            rc = child.wait(STOP_TIMEOUT_S)
        if check and rc != 0:
            raise RuntimeError(f"the proxy process failed (exit {rc}): "
                               f"{''.join(self._child_err).strip()}")

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        if self._child is None or self._child_url is None or self._child.poll() is not None:
            raise RuntimeError("the proxy process is not running")
        try:
            return request_json(self._child_url + path, method, body, CALL_TIMEOUT_S)
        except ApiRefused as exc:
            raise ChangeError(str(exc)) from None
        except ApiFailed as exc:
            raise RuntimeError(f"the proxy process answered {exc}") from None


__all__ = ["ChangeError", "Lab"]
