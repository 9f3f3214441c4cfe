"""A small internet inside the machine: sender -- router -- receiver network namespaces.

    sender  eth0 ==veth== eth0  router  eth1 ==veth== eth0  receiver
    198.18.1.1/24       198.18.1.2/24   198.18.2.2/24       198.18.2.1/24
    fd00:1::1/64        fd00:1::2/64    fd00:2::2/64        fd00:2::1/64

Addresses come from the benchmarking range (198.18.0.0/15, RFC 2544) and a ULA prefix
(fd00::/8, RFC 4193); they exist only inside the namespaces, so test beds of parallel runs never
meet. The router forwards with the kernel (ip_forward, IPv6 forwarding) and answers a datagram
too big for its next link with ICMP, as a real router does. Each link's MTU is chosen per test
(both ends, or only the router's end of the second link: a bottleneck that neither host sees).

Every namespace is named `rtcpt-<pid>-<n>-<role>`: unique per test run and per test bed. The
fixture kills every process it started in them and deletes them (which destroys their veth
links) and their /etc/netns/<name> folders (host names) when the test ends, failed or not; at start it also removes the namespaces of earlier
runs whose process is gone (a run killed before its teardown). Needs root and iproute2 (`ip`):
without them every test here is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import RTCP, Proc, make_file, wait_for  # noqa: F401 (used by tests here)

NAME_PREFIX = "rtcpt-"
RUN_PREFIX = f"{NAME_PREFIX}{os.getpid()}-"
COMMAND_TIMEOUT_S = 30.0
NETNS_ETC = Path("/etc/netns")  # per-namespace /etc files (hosts) that `ip netns exec` mounts
_counter = itertools.count(1)

SENDER_V4, ROUTER_V4_S, ROUTER_V4_R, RECEIVER_V4 = (
    "198.18.1.1", "198.18.1.2", "198.18.2.2", "198.18.2.1",
)
SENDER_V6, ROUTER_V6_S, ROUTER_V6_R, RECEIVER_V6 = (
    "fd00:1::1", "fd00:1::2", "fd00:2::2", "fd00:2::1",
)


def skip_reason() -> str | None:
    """Why the namespace tests cannot run here (None: they can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root: sudo make test)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=check
    )


def _remove_stale() -> None:
    """Delete rtcpt-<pid>-* namespaces whose test run (process <pid>) is gone."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NAME_PREFIX}(\d+)-.*", name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        except PermissionError:
            pass


class NsProc(Proc):
    """A process in a namespace: `ip netns exec` execs the command, so popen.pid is it."""

    def __init__(self, ns: str, argv: list[str]):
        super().__init__(argv, prefix=("ip", "netns", "exec", ns))

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match:
        return super().wait_line(pattern, timeout)

    def wait_port(self, timeout: float = 30.0) -> int:
        return super().wait_port(timeout)


@dataclass
class Testbed:
    """Three namespaces joined by two veth links; see the module docstring."""

    sender: str
    router: str
    receiver: str
    procs: list[NsProc] = field(default_factory=list)

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in namespace ns to completion."""
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=check,
        )

    def spawn(self, ns: str, *argv: str) -> NsProc:
        """Start a command in ns; the fixture stops it at the end of the test."""
        proc = NsProc(ns, [str(a) for a in argv])
        self.procs.append(proc)
        return proc

    def rtcp(self, ns: str, *args: object) -> NsProc:
        return self.spawn(ns, RTCP, *(str(a) for a in args))

    def set_mtu(self, ns: str, dev: str, mtu: int) -> None:
        _ip("-n", ns, "link", "set", "dev", dev, "mtu", str(mtu))

    def hosts(self, ns: str, text: str) -> None:
        """/etc/hosts as processes in ns see it (`ip netns exec` mounts /etc/netns/NS/hosts)."""
        folder = NETNS_ETC / ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(text)

    def silence_icmp(self, ns: str) -> None:
        """ns's own IPv4 ICMP goes nowhere (a policy rule sends it to a blackhole route): a router
        that drops what is too big without saying so. (Its rate limit cannot do it: Linux never
        rate-limits "fragmentation needed".) IPv6 is left alone: its neighbour discovery is
        ICMPv6."""
        _ip("-n", ns, "route", "add", "blackhole", "default", "table", "100")
        _ip("-n", ns, "rule", "add", "ipproto", "icmp", "table", "100", "priority", "100")

    def limit_rate(self, ns: str, dev: str, mbit: int) -> None:
        """A token bucket on dev's egress: a transfer lasts long enough for a slow search,
        whatever the machine's speed. Its queue holds 4 MB, so that it delays, not drops."""
        _ip_tc = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
                  "burst", "64kb", "limit", "4mb"]
        self.run(ns, *_ip_tc)

    def frag_creates(self, ns: str) -> int:
        """IP fragments the namespace created, IPv4 and IPv6 (/proc/net/snmp, snmp6)."""
        v4 = self.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
        heads = [line.split() for line in v4 if line.startswith("Ip:")]
        count = int(dict(zip(heads[0], heads[1], strict=True))["FragCreates"])
        for line in self.run(ns, "cat", "/proc/net/snmp6").stdout.splitlines():
            name, _, value = line.partition(" ")
            if name == "Ip6FragCreates":
                count += int(value)
        return count

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _build(names: list[str], mtu: int, receiver_mtu: int) -> None:
    sender, router, receiver = names
    for ns in names:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", sender, "link", "add", "eth0", "mtu", str(mtu), "type", "veth",
        "peer", "name", "eth0", "netns", router)
    _ip("-n", receiver, "link", "add", "eth0", "mtu", str(receiver_mtu), "type", "veth",
        "peer", "name", "eth1", "netns", router)
    _ip("-n", router, "link", "set", "dev", "eth0", "mtu", str(mtu))
    _ip("-n", router, "link", "set", "dev", "eth1", "mtu", str(receiver_mtu))
    plan = [
        (sender, "eth0", SENDER_V4, SENDER_V6),
        (router, "eth0", ROUTER_V4_S, ROUTER_V6_S),
        (router, "eth1", ROUTER_V4_R, ROUTER_V6_R),
        (receiver, "eth0", RECEIVER_V4, RECEIVER_V6),
    ]
    for ns, dev, v4, v6 in plan:
        _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
        _ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        _ip("-n", ns, "link", "set", "dev", dev, "up")
    for ns, via4, via6 in ((sender, ROUTER_V4_S, ROUTER_V6_S),
                           (receiver, ROUTER_V4_R, ROUTER_V6_R)):
        _ip("-n", ns, "route", "add", "default", "via", via4)
        _ip("-n", ns, "-6", "route", "add", "default", "via", via6)
    subprocess.run(
        ["ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
         "net.ipv6.conf.all.forwarding=1"],
        check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S,
    )


@contextlib.contextmanager
def build_testbeds():
    """Yields make(mtu=1500, receiver_mtu=None, router_out_mtu=None) -> Testbed; on exit,
    failed or not, stops every process started in the test beds and deletes their namespaces.

    mtu: both ends of the sender's link; receiver_mtu: both ends of the receiver's link (default:
    mtu); router_out_mtu: the router's end of the receiver's link only, a bottleneck behind the
    router that only probing finds."""
    _remove_stale()
    made: list[list[str]] = []
    beds: list[Testbed] = []

    def _make(mtu: int = 1500, receiver_mtu: int | None = None,
              router_out_mtu: int | None = None) -> Testbed:
        names = [f"{RUN_PREFIX}{next(_counter)}-{role}" for role in ("snd", "rtr", "rcv")]
        made.append(names)
        try:
            _build(names, mtu, receiver_mtu or mtu)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot build the namespace test bed: {' '.join(exc.cmd)}: "
                        f"{(exc.stderr or '').strip()}")
        bed = Testbed(*names)
        if router_out_mtu is not None:
            bed.set_mtu(bed.router, "eth1", router_out_mtu)
        beds.append(bed)
        return bed

    try:
        yield _make
    finally:
        for bed in beds:
            bed.stop_all()
        for names in made:
            for ns in names:
                _ip("netns", "del", ns, check=False)
                shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


@pytest.fixture
def netbed():
    """netbed(...) -> Testbed (see build_testbeds); skips with the reason where it cannot run."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with build_testbeds() as make:
        yield make


def namespaces() -> set[str]:
    """The names of the namespaces that exist now."""
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.split()}
