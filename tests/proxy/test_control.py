"""Live changes inside the running proxy (rtcp.proxy.control through rtcp.proxy.Lab): each one
between two datagrams, recorded in the stats and the trace, and undone after its `for`."""

from __future__ import annotations

import pytest

from rtcp.proxy.changes import ChangeError
from rtcp.proxy.lab import Lab
from rtcp.trace.writer import read_trace
from tests.proxy.conftest import client_socket, wait_until


def _exchange(sock, lab, payload: bytes) -> bytes:
    sock.sendto(payload, lab.address)
    data, _ = sock.recvfrom(65535)
    return data


@pytest.mark.parametrize("process", [False, True], ids=["thread", "child-process"])
def test_loss_changes_between_datagrams_and_shows_in_stats_and_trace(echo, tmp_path, process):
    trace = tmp_path / "proxy.jsonl"
    with Lab(echo.address, seed=1, trace=trace, process=process) as lab:
        sock = client_socket()
        try:
            for i in range(5):
                assert _exchange(sock, lab, b"a%d" % i) == b"a%d" % i
            lossy = lab.set(loss_up="100%")
            for i in range(5):
                sock.sendto(b"b%d" % i, lab.address)
            assert wait_until(lambda: lab.stats["up"]["dropped"]["loss"] == 5)
            clean = lab.set(loss_up=None)
            for i in range(5):
                assert _exchange(sock, lab, b"c%d" % i) == b"c%d" % i
            final = lab.stats
        finally:
            sock.close()
    assert lossy["summary"] == "loss-up 100%" and clean["summary"] == "loss-up off"
    assert lossy["counters"]["up"]["datagrams_in"] == 5
    assert lossy["counters"]["up"]["dropped"]["loss"] == 0
    assert clean["counters"]["up"]["datagrams_in"] == 10
    assert clean["counters"]["up"]["dropped"]["loss"] == 5
    assert final["up"]["dropped"]["loss"] == 5 and final["up"]["datagrams_out"] == 10
    assert lossy["elapsed_ns"] < clean["elapsed_ns"]
    assert final["changes_total"] == 2 and final["impairments"] == {"up": {}, "down": {}}
    # the trace: every loss between the two changes, in the order things happened
    events = [r for r in read_trace(trace) if r["event"] in ("proxy_change", "proxy_decision")]
    kinds = [
        "change" if r["event"] == "proxy_change" else r["decision"]
        for r in events
        if r.get("dir", "up") == "up"
    ]
    assert kinds == ["forwarded"] * 5 + ["change"] + ["lost"] * 5 + ["change"] + ["forwarded"] * 5


@pytest.mark.parametrize("process", [False, True], ids=["thread", "child-process"])
def test_for_undoes_the_change_by_itself(echo, process):
    with Lab(echo.address, delay="5ms", process=process) as lab:
        record = lab.set(loss="50%", duration="50ms")
        assert record["until_ns"] - record["elapsed_ns"] == 50_000_000
        assert wait_until(lambda: lab.stats["changes_total"] == 2)
        stats = lab.stats
    undo = stats["changes"][1]
    assert undo["source"] == "timer" and undo["ends"] == record["seq"]
    assert undo["summary"] == "loss off"
    assert undo["elapsed_ns"] >= record["until_ns"]
    assert stats["impairments"]["up"] == {"delay": "5ms"}  # what was there before stays


def test_down_drops_and_hold_keeps_order(echo):
    with Lab(echo.address) as lab:
        sock = client_socket()
        try:
            assert _exchange(sock, lab, b"hello") == b"hello"
            lab.down()
            for i in range(3):
                sock.sendto(b"lost%d" % i, lab.address)
            assert wait_until(lambda: lab.stats["up"]["dropped"]["down"] == 3)
            lab.up()
            lab.pause()
            for i in range(4):
                sock.sendto(b"held%d" % i, lab.address)
            assert wait_until(lambda: lab.stats["paused_datagrams"] == 4)
            assert echo.received == 1  # nothing got through while down or paused
            assert lab.stats["link"] == {"up": "paused", "down": "paused"}
            up = lab.up()
            assert up["released"] == 4
            replies = [sock.recvfrom(100)[0] for _ in range(4)]
            stats = lab.stats
        finally:
            sock.close()
    assert replies == [b"held%d" % i for i in range(4)]
    assert stats["up"]["held"] == 4 and stats["up"]["dropped"]["down"] == 3
    assert stats["up"]["datagrams_in"] == 8 and stats["up"]["datagrams_out"] == 5


def test_pause_held_at_exit_is_accounted(echo):
    lab = Lab(echo.address).start()
    sock = client_socket()
    try:
        lab.pause(direction="up")
        sock.sendto(b"never", lab.address)
        assert wait_until(lambda: lab.stats["paused_datagrams"] == 1)
    finally:
        sock.close()
        lab.close()
    up = lab.proxy.up.stats
    assert (up.datagrams_in, up.unsent_at_exit, up.datagrams_out) == (1, 1, 0)


def test_reset_gives_the_next_datagram_a_new_upstream_port(echo):
    with Lab(echo.address) as lab:
        sock = client_socket()
        try:
            assert _exchange(sock, lab, b"one") == b"one"
            record = lab.reset()
            assert _exchange(sock, lab, b"two") == b"two"
            stats = lab.stats
        finally:
            sock.close()
    assert record["mappings_forgotten"] == 1
    assert echo.sources[0] != echo.sources[1]  # as after a NAT reboot
    assert stats["clients_total"] == 2 and stats["clients_active"] == 1


def test_reset_drops_what_was_in_flight_through_a_forgotten_mapping(echo):
    with Lab(echo.address, delay_up="10s") as lab:
        sock = client_socket()
        try:
            sock.sendto(b"slow", lab.address)
            assert wait_until(lambda: lab.stats["held_datagrams"] == 1)
            record = lab.reset()
            stats = lab.stats
        finally:
            sock.close()
    assert record["dropped"] == 1
    assert stats["up"]["dropped"]["reset"] == 1 and stats["held_datagrams"] == 0


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"los": "3%"}, "unknown field 'los'"),
        ({"delay": "5parsec"}, "unknown unit 'parsec'"),
        ({"rate": "-1mbit"}, "must be positive"),
        ({"loss": "130%"}, "between 0% and 100%"),
        ({"reorder": "5%"}, "reorder needs a delay"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(echo, knobs, message):
    with Lab(echo.address, loss="1%") as lab:
        with pytest.raises(ChangeError, match=message):
            lab.set(**knobs)
        stats = lab.stats
    assert stats["changes_total"] == 0
    assert stats["impairments"]["up"] == {"loss": "1%"}


def test_two_loss_models_refused_until_one_is_off(echo):
    with Lab(echo.address, loss="1%") as lab:
        with pytest.raises(ChangeError, match="two loss models"):
            lab.set(gemodel="1%,10%")
        record = lab.set(gemodel="1%,10%", loss=None)
    assert record["impairments"]["up"] == {"gemodel": "1%,10%,100%,0%"}



def test_a_lab_in_a_child_process_answers_as_the_thread_does_and_ends_with_it(echo):
    import os

    import psutil

    lab = Lab(echo.address, loss_down="1%", process=True).start()
    try:
        child = lab._child
        assert child is not None and child.pid != os.getpid()
        assert psutil.Process(child.pid).ppid() == os.getpid()
        assert lab.stats["impairments"] == {"up": {}, "down": {"loss": "1%"}}
        with pytest.raises(ChangeError, match="must be positive"):
            lab.set(rate="-1mbit")
        assert lab.down(duration="1h")["link"] == {"up": "down", "down": "down"}
        assert lab.up()["link"] == {"up": "up", "down": "up"}
        assert lab.reset()["summary"]
        assert lab.control_url.startswith("http://127.0.0.1:")
    finally:
        lab.close()
    assert child.returncode == 0  # stopped cleanly (SIGTERM): its trace and stats complete
    with pytest.raises(RuntimeError, match="not started"):
        _ = lab.stats
