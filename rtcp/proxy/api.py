"""`rtcp proxy --control HOST:PORT`: a small HTTP/JSON API to change the network while it runs
(toxiproxy's model), served by the standard library's http.server on its own thread.

    GET   /             the impairments, link state, stats and recent changes (JSON)
    PATCH /impairments  merge knobs: {"loss": "30%", "delay-down": "5ms", "for": "3s"}
    PUT   /impairments  replace every knob (those not named go off), same body
    POST  /down         {"mode": "drop" | "hold", "direction": "both" | "up" | "down", "for": ...}
    POST  /up           {"direction": ...}
    POST  /reset        forget the client mappings (a NAT reboot)

The request is parsed on this thread (rtcp.proxy.changes: the flags' vocabulary and units) and
applied on the proxy loop's thread (`Proxy.call_soon`), between two datagrams; the answer says
when. Bad input is a 4xx with {"error": "..."}; nothing a client sends can stop the proxy.
One request at a time, each with a socket timeout and a body limit, so a slow or hostile
client costs one thread and a bounded buffer.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from rtcp.proxy.changes import ChangeError, change_from_request

# (method, path) of each change a client asks for, as this module serves it
ROUTES = {
    "set": ("PATCH", "/impairments"),
    "replace": ("PUT", "/impairments"),
    "down": ("POST", "/down"),
    "up": ("POST", "/up"),
    "reset": ("POST", "/reset"),
}

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 5.0  # a client that sends nothing for this long is dropped
LOOP_ANSWER_TIMEOUT_S = 10.0  # the loop runs a change within a wakeup; beyond this: 503
SERVER_POLL_INTERVAL_S = 0.05  # how late close() returns: serve_forever looks between polls

_ACTIONS = {
    ("PATCH", "/impairments"): "set",
    ("PUT", "/impairments"): "replace",
    ("POST", "/down"): "down",
    ("POST", "/up"): "up",
    ("POST", "/reset"): "reset",
}


class _RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"
    server_version = "rtcp-proxy"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the proxy's stderr is its summary; every change is in the stats and trace."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        try:
            status, body = self._dispatch(method)
        except _RequestError as exc:
            status, body = exc.status, {"error": str(exc)}
        except ChangeError as exc:
            status, body = 400, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug answers 500, never stops the proxy
            status, body = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        self._reply(status, body)

    def _dispatch(self, method: str) -> tuple[int, dict[str, Any]]:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        body = self._body()
        if path == "/":
            if method != "GET":
                raise _RequestError(405, f"{method} / is not allowed: GET it")
            if body:
                raise _RequestError(400, "GET / takes no body")
            return 200, self.server.call(lambda: self.server.state())
        action = _ACTIONS.get((method, path))
        if action is None:
            allowed = [m for (m, p) in _ACTIONS if p == path]
            if allowed:
                raise _RequestError(405, f"{method} {path} is not allowed: {', '.join(allowed)}")
            raise _RequestError(
                404, f"no such resource {path!r}: /, /impairments, /down, /up, /reset"
            )
        change = change_from_request(action, body)
        controller = self.server.controller
        record = self.server.call(lambda: controller.apply_now(change, self.server.source))
        return 200, {"change": record}

    def _body(self) -> dict[str, Any]:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise _RequestError(411, "send the body with a Content-Length")
        if not length_text:
            return {}
        try:
            length = int(length_text)
        except ValueError:
            raise _RequestError(400, f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise _RequestError(400, f"bad Content-Length {length_text!r}")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _RequestError(413, f"body of {length} bytes: at most {MAX_BODY_BYTES}")
        raw = self.rfile.read(length)
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RequestError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _RequestError(400, "the body must be a JSON object")
        return data

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body, indent=2) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")  # one request per connection: a kept-alive
            self.end_headers()  # client would hold the single-threaded server for its timeout
            self.close_connection = True
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away: nothing to tell it


class _Server(HTTPServer):
    """One request at a time on one thread; the proxy's objects it acts on."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self, address: tuple[Any, ...], proxy: Any, controller: Any, source: str, family: int
    ):
        self.address_family = family  # read by the base class when it makes the socket
        self.proxy = proxy
        self.controller = controller
        self.source = source
        super().__init__(address, _Handler)

    def call(self, fn: Any) -> Any:
        future = self.proxy.call_soon(fn)
        try:
            return future.result(timeout=LOOP_ANSWER_TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            raise _RequestError(503, "the proxy loop did not answer (stopping?)") from None

    def state(self) -> dict[str, Any]:
        return self.proxy.snapshot()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection: dropped quietly (the default prints a traceback)."""


class ControlServer:
    """The API on `address` for `proxy` (already running or about to: requests wait for the
    loop). `close()` stops the thread and the socket."""

    def __init__(
        self, address: tuple[str, int], proxy: Any, controller: Any, *, source: str = "api"
    ):
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, port), proxy, controller, source, family)
        self.address: tuple[str, int] = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SERVER_POLL_INTERVAL_S},
            name="rtcp-proxy-control",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=REQUEST_TIMEOUT_S * 2)


class ApiRefused(Exception):
    """The proxy answered 4xx: the request was wrong (its message says why)."""


class ApiFailed(Exception):
    """The proxy answered another error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def request_json(url: str, method: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
    """One request to a control API, as `rtcp ctl` and `Lab(process=True)` make it: the
    answer's JSON, ApiRefused (4xx), ApiFailed (other statuses); no answer raises what urllib
    raises (URLError, OSError) and a body that is not JSON ValueError."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError, OSError):
            message = exc.reason
        if 400 <= exc.code < 500:
            raise ApiRefused(message) from None
        raise ApiFailed(exc.code, message) from None
