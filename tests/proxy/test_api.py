"""The control API (rtcp.proxy.api) over real HTTP: changes, state, and refusals of bad input
with a 4xx and a JSON error, after which the proxy still forwards."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from rtcp.errors import LocalIOError, UsageError
from rtcp.proxy.api import MAX_BODY_BYTES, ApiRefused, request_json
from rtcp.proxy.ctl import call
from rtcp.proxy.lab import Lab
from tests.proxy.conftest import client_socket


def request(url: str, method: str = "GET", body: object = None, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def lab(echo):
    with Lab(echo.address, control=True, delay_down="1ms") as lab:
        yield lab


def test_get_shows_impairments_link_and_stats(lab):
    status, state = request(lab.control_url + "/")
    assert status == 200
    assert state["impairments"] == {"up": {}, "down": {"delay": "1ms"}}
    assert state["link"] == {"up": "up", "down": "up"}
    assert state["up"]["datagrams_in"] == 0 and state["changes_total"] == 0


def test_patch_merges_put_replaces_per_direction(lab):
    status, answer = request(
        lab.control_url + "/impairments", "PATCH", {"loss": "30%", "up": {"rate": "1mbit"}}
    )
    assert status == 200
    assert answer["change"]["impairments"] == {
        "up": {"loss": "30%", "rate": "1mbit"},
        "down": {"loss": "30%", "delay": "1ms"},
    }
    assert answer["change"]["source"] == "api"
    status, answer = request(lab.control_url + "/impairments", "PUT", {"delay-up": "20ms"})
    assert status == 200
    assert answer["change"]["impairments"] == {"up": {"delay": "20ms"}, "down": {}}


def test_down_up_reset_over_http(lab):
    status, answer = request(lab.control_url + "/down", "POST", {"mode": "hold", "for": "1h"})
    assert status == 200 and answer["change"]["link"] == {"up": "paused", "down": "paused"}
    status, answer = request(lab.control_url + "/up", "POST", {"direction": "up"})
    assert status == 200 and answer["change"]["link"] == {"up": "up", "down": "paused"}
    status, answer = request(lab.control_url + "/reset", "POST")
    assert status == 200 and answer["change"]["mappings_forgotten"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PATCH", "/impairments", {"lost": "30%"}, 400, "unknown field 'lost'"),
        ("PATCH", "/impairments", {"loss_correlation": "3%"}, 400, "did you mean"),
        ("PATCH", "/impairments", {"delay": "20 parsecs"}, 400, "unknown unit"),
        ("PATCH", "/impairments", {"rate": "-1mbit"}, 400, "must be positive"),
        ("PATCH", "/impairments", {"loss": [1]}, 400, "got an array"),
        ("PATCH", "/impairments", {"loss": "5%", "for": 3}, 400, "with its unit"),
        ("PATCH", "/impairments", {"loss": "5%", "for": "3"}, 400, "needs a unit"),
        ("PATCH", "/impairments", {}, 400, "at least one knob"),
        ("PATCH", "/impairments", {"up": "fast"}, 400, "expected an object"),
        ("POST", "/down", {"mode": "sideways"}, 400, "mode"),
        ("POST", "/down", {"direction": "left"}, 400, "direction"),
        ("POST", "/up", {"for": "3s"}, 400, "unknown field 'for'"),
        ("POST", "/reset", {"now": True}, 400, "unknown field 'now'"),
        ("GET", "/nowhere", None, 404, "no such resource"),
        ("DELETE", "/impairments", None, 405, "not allowed"),
        ("POST", "/", None, 405, "not allowed"),
    ],
)
def test_bad_input_is_a_4xx_with_a_json_error(lab, echo, method, path, body, status, message):
    got, answer = request(lab.control_url + path, method, body)
    assert got == status and message in answer["error"]
    assert request(lab.control_url + "/")[1]["changes_total"] == 0
    sock = client_socket()  # the proxy still forwards
    try:
        sock.sendto(b"still here", lab.address)
        assert sock.recvfrom(100)[0] == b"still here"
    finally:
        sock.close()


def test_not_json_and_too_large_bodies(lab):
    url = lab.control_url + "/impairments"
    status, answer = request(url, "PATCH", raw=b"{loss: 30%}")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = request(url, "PATCH", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in answer["error"]
    status, answer = request(url, "PATCH", raw=b" " * (MAX_BODY_BYTES + 1))
    assert status == 413


def test_garbage_on_the_socket_does_not_stop_the_api(lab):
    host, port = lab._server.address
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"\x00\xff garbage \r\n\r\n")
        conn.recv(1000)  # an error answer or a close: either way, not a crash
    assert request(lab.control_url + "/")[0] == 200


def test_the_shared_client_and_rtcp_ctl_report_refusals_and_silence(lab):
    answer = request_json(lab.control_url + "/impairments", "PATCH", {"loss": "5%"}, 10)
    assert answer["change"]["impairments"]["up"] == {"loss": "5%"}
    with pytest.raises(ApiRefused, match="loss"):
        request_json(lab.control_url + "/impairments", "PATCH", {"loss": "200%"}, 10)
    with pytest.raises(UsageError, match="ctl set: the proxy refused: .*loss"):
        call(lab.control_url, "set", {"loss": "200%"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(LocalIOError, match="no answer from"):
        call(f"http://127.0.0.1:{port}", "show", {})
