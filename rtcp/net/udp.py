"""Many datagrams per system call: UDP GSO (UDP_SEGMENT) and GRO (UDP_GRO) on Linux.

Shared by the driver (rtcp/net/driver.py) and the proxy (rtcp/proxy/loop.py).

Sending (GSO, Linux >= 4.18): one sendmsg() carries a buffer of equal-sized segments (the last
may be shorter) and a (SOL_UDP, UDP_SEGMENT, u16 size) control message; the kernel splits it
into datagrams of that size. One GSO send may hold at most UDP_MAX_SEGMENTS (64 on older
kernels, 128 on newer ones: 64 is used) segments and 65507 bytes of UDP payload in all, and its
segment size must fit the device MTU (EINVAL otherwise). On loopback a GSO send reaches a
GRO-enabled receiver as one unit: one system call on each side for up to 64 datagrams.

Receiving (GRO, Linux >= 5.0): with UDP_GRO set, one recvmsg() may return several datagrams of
one sender laid end to end, with a (SOL_UDP, UDP_GRO, int size) control message giving the
segment size; without the message the read is one datagram. Plain sendto() datagrams are not
merged on loopback, so a GRO socket reads them one by one, as before.

Fallbacks: a kernel without UDP_SEGMENT is detected once (getsockopt), one that rejects it
later (EIO, ENOPROTOOPT, EOPNOTSUPP) switches its socket's state to one sendto() per datagram
for good; a segment size the path refuses (EINVAL, EMSGSIZE) is remembered and larger runs are
sent one by one. RTCP_NO_GSO=1 in the environment turns GSO and GRO off (the pre-batching
behaviour: one system call per datagram), e.g. to compare, or on a kernel that misbehaves.

Buffers: recv_batch() returns memoryviews into the caller's buffer, valid only until its next
read: a consumer copies what it keeps (the core's wire.decode copies the payload).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Any, NamedTuple

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Python does not export these (3.11)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (6.x raised it to 128)
MAX_GSO_BYTES = 65507  # UDP payload of one GSO send: the IPv4 limit (IPv6 allows 65527)
MIN_GSO_SEGMENT = 1232  # a path refusing segments this small (IPv6 minimum) refuses GSO
RECV_BUFFER_BYTES = 65536  # holds any datagram and any GRO batch (at most 64 KB in all)
GRO_ANCBUF = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
NO_GSO_ENV = "RTCP_NO_GSO"

_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")
_SIZE_CMSGS = {}  # segment size -> [(SOL_UDP, UDP_SEGMENT, size as u16)], built once per size
# errors meaning "this kernel / socket / route cannot do GSO at all"
_GSO_UNSUPPORTED = frozenset({errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
# errors meaning "not with this segment size or this total" (e.g. size above the device MTU)
_GSO_TOO_BIG = frozenset({errno.EINVAL, errno.EMSGSIZE})


SOCKET_BUFFER_BYTES = 4 * 1024 * 1024  # absorbs bursts of a few thousand 1400-byte datagrams
# Linux option numbers that Python does not export: let root exceed net.core.rmem_max/wmem_max.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if sys.platform == "linux" else None)


def tune_buffers(sock: socket.socket, nbytes: int = SOCKET_BUFFER_BYTES) -> None:
    """Large receive and send buffers (the FORCE options where permitted, as root, else the
    plain ones, which the kernel caps at its sysctl maximum); failures are not fatal."""
    for force, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            if force is None:
                raise OSError
            sock.setsockopt(socket.SOL_SOCKET, force, nbytes)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, nbytes)
            except OSError:
                pass

# Path MTU (Linux option numbers; Python 3.11 exports none of them but IPV6_DONTFRAG).
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_PROBE = getattr(socket, "IP_PMTUDISC_PROBE", 3)  # DF set, cached PMTU ignored
IP_MTU = getattr(socket, "IP_MTU", 14)  # getsockopt on a connected socket: the route's MTU
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IPV6_PMTUDISC_PROBE = getattr(socket, "IPV6_PMTUDISC_PROBE", 3)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
IPV4_UDP_OVERHEAD_BYTES = 20 + 8  # IPv4 header without options, UDP header
IPV6_UDP_OVERHEAD_BYTES = 40 + 8  # IPv6 header without extension headers, UDP header
MAX_UDP_PAYLOAD_BYTES = 65507  # the largest UDP payload over IPv4 (and what rtcp ever sends)


def forbid_fragmentation(sock: Any) -> bool:
    """Set Don't Fragment on every datagram of sock and ignore the kernel's cached path MTU
    (IP_PMTUDISC_PROBE): rtcp's own path MTU discovery decides sizes (RFC 8899 3: probes and
    data are never fragmented), and a datagram too big for the first hop fails its send with
    EMSGSIZE instead of leaving as IP fragments. For an IPv6 socket both families' options are
    set (a dual-stack socket sends IPv4 too). True when the kernel accepted them."""
    ok = False
    family = getattr(sock, "family", socket.AF_INET)
    options = [(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)]
    if family == socket.AF_INET6:
        options = [
            (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE),
            (socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1),
            *options,
        ]
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except (OSError, AttributeError):
            continue
        ok = True
    return ok


# ICMP errors on the socket's error queue (IP_RECVERR, linux/errqueue.h): read as hints only.
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_LOCAL = 1  # the local stack (EMSGSIZE above the device MTU)
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED = 3, 4  # RFC 1191: "fragmentation needed and DF set"
ICMPV6_PACKET_TOO_BIG = 2  # RFC 8201
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
ERRQUEUE_QUOTE_BYTES = 128  # of the quoted datagram: enough for rtcp's header and ids
ERRQUEUE_ANC_BYTES = 512  # sock_extended_err + the offender's address, with room
MAX_ERRORS_PER_READ = 64  # bounds the work one wakeup spends on the error queue


class PacketTooBig(NamedTuple):
    """A "datagram too big" report from the error queue: the link MTU it names (bytes of IP
    packet, 0 when it names none), the peer the datagram was sent to, the start of the datagram
    as the report quotes it (to validate against what was sent: RFC 8899 4.6.1), and whether
    the local stack (not the network) said so."""

    mtu: int
    peer: Any
    quoted: bytes
    local: bool


def enable_recverr(sock: Any) -> bool:
    """Ask for ICMP errors on sock's error queue (IP_RECVERR; IPV6_RECVERR as well on an IPv6
    socket). The socket then reports errors as readable-and-writable (EPOLLERR) until
    read_errors() drains them: a caller that enables this must call it. True if accepted."""
    ok = False
    options = [(socket.IPPROTO_IP, IP_RECVERR)]
    if getattr(sock, "family", socket.AF_INET) == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, IPV6_RECVERR))
    for level, name in options:
        try:
            sock.setsockopt(level, name, 1)
        except (OSError, AttributeError):
            continue
        ok = True
    return ok


def read_errors(sock: Any, limit: int = MAX_ERRORS_PER_READ) -> tuple[list[PacketTooBig], int]:
    """Drain sock's error queue: (the "too big" reports, how many other errors were read:
    port unreachable and the like, which the caller only counts)."""
    too_big: list[PacketTooBig] = []
    other = 0
    for _ in range(limit):
        try:
            quoted, ancdata, _flags, peer = sock.recvmsg(
                ERRQUEUE_QUOTE_BYTES, ERRQUEUE_ANC_BYTES, MSG_ERRQUEUE
            )
        except (BlockingIOError, InterruptedError):
            break
        except (OSError, AttributeError):
            break
        report = None
        for level, kind, value in ancdata:
            if (level, kind) not in (
                (socket.IPPROTO_IP, IP_RECVERR),
                (socket.IPPROTO_IPV6, IPV6_RECVERR),
            ) or len(value) < _EXTENDED_ERR.size:
                continue
            err, origin, icmp_type, code, _pad, info, _data = _EXTENDED_ERR.unpack_from(value)
            if (
                (origin == SO_EE_ORIGIN_ICMP and icmp_type == ICMP_DEST_UNREACH
                 and code == ICMP_FRAG_NEEDED)
                or (origin == SO_EE_ORIGIN_ICMP6 and icmp_type == ICMPV6_PACKET_TOO_BIG)
            ):
                report = PacketTooBig(info, peer, bytes(quoted), False)
            elif origin == SO_EE_ORIGIN_LOCAL and err == errno.EMSGSIZE:
                report = PacketTooBig(info, peer, bytes(quoted), True)
        if report is None:
            other += 1
        else:
            too_big.append(report)
    return too_big, other


def _is_ipv4(sockaddr: tuple) -> bool:
    host = str(sockaddr[0])
    return ":" not in host or (host.lower().startswith("::ffff:") and "." in host)


def ip_udp_overhead(sockaddr: tuple) -> int:
    """IP and UDP header bytes of a datagram to sockaddr (an IPv4-mapped address is IPv4)."""
    return IPV4_UDP_OVERHEAD_BYTES if _is_ipv4(sockaddr) else IPV6_UDP_OVERHEAD_BYTES


def path_mtu_payload(sockaddr: tuple) -> int | None:
    """The largest UDP payload the first hop toward sockaddr carries unfragmented: the route's
    MTU (the outgoing link's, or a smaller one the route or an ICMP message set) minus the IP
    and UDP headers, asked of the kernel through a connected throwaway socket (IP_MTU /
    IPV6_MTU). None where the kernel cannot say. Loopback's 65,536 gives MAX_UDP_PAYLOAD_BYTES.
    An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) is asked as IPv4."""
    host = str(sockaddr[0])
    if host.lower().startswith("::ffff:") and "." in host:
        sockaddr = (host[7:], sockaddr[1])
    family = socket.AF_INET6 if ":" in str(sockaddr[0]) else socket.AF_INET
    if family == socket.AF_INET6:
        level, name, overhead = socket.IPPROTO_IPV6, IPV6_MTU, IPV6_UDP_OVERHEAD_BYTES
    else:
        level, name, overhead = socket.IPPROTO_IP, IP_MTU, IPV4_UDP_OVERHEAD_BYTES
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            mtu = probe.getsockopt(level, name)
    except OSError:
        return None
    if mtu <= overhead:
        return None
    return min(mtu - overhead, MAX_UDP_PAYLOAD_BYTES)


def disabled_by_env() -> bool:
    """True when RTCP_NO_GSO is set to anything but "", "0", "no", "false"."""
    return os.environ.get(NO_GSO_ENV, "").strip().lower() not in ("", "0", "no", "false")


def enable_gro(sock: Any) -> bool:
    """Ask for GRO on a UDP socket: True if the kernel accepted (then read with recv_batch)."""
    if disabled_by_env():
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except (OSError, AttributeError):
        return False
    return True


def gso_supported(sock: Any) -> bool:
    """True when the kernel knows UDP_SEGMENT for this socket (getsockopt answers).

    Detection matters: a kernel without GSO ignores an unknown SOL_UDP control message and
    would send the whole buffer as ONE datagram."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except (OSError, AttributeError):
        return False
    return True


class Gso:
    """The GSO state of one socket: on or off, and the largest segment size the path takes."""

    __slots__ = ("enabled", "fallbacks", "max_segment", "segments", "sends")

    def __init__(self, sock: Any = None, *, enabled: bool | None = None):
        if enabled is None:
            enabled = sock is not None and not disabled_by_env() and gso_supported(sock)
        self.enabled = bool(enabled)
        self.max_segment = MAX_GSO_BYTES  # lowered when a segment size is refused
        self.sends = 0  # GSO system calls made
        self.segments = 0  # datagrams they carried
        self.fallbacks = 0  # GSO sends refused and redone one datagram at a time

    def refused(self, size: int, exc: OSError) -> None:
        """A GSO send of segment size `size` failed with a GSO-specific error."""
        self.fallbacks += 1
        if exc.errno in _GSO_UNSUPPORTED or size <= MIN_GSO_SEGMENT:
            self.enabled = False
        else:
            self.max_segment = min(self.max_segment, size - 1)

    def __repr__(self) -> str:
        return (
            f"Gso(enabled={self.enabled}, max_segment={self.max_segment}, sends={self.sends}, "
            f"segments={self.segments}, fallbacks={self.fallbacks})"
        )


def _size_cmsg(size: int) -> list:
    cmsg = _SIZE_CMSGS.get(size)
    if cmsg is None:
        cmsg = _SIZE_CMSGS[size] = [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))]
    return cmsg


class SendResult(NamedTuple):
    """What send_batch did with datagrams[:done]: `sent` of them (`sent_bytes`) went to the
    kernel, `errors` (`error_bytes`) were lost to an error other than EAGAIN (ECONNREFUSED
    reported for an earlier send, EMSGSIZE, ...). done < len(datagrams) means the socket would
    block at datagrams[done] (EAGAIN): the caller keeps datagrams[done:] and retries later."""

    done: int
    sent: int
    sent_bytes: int
    errors: int
    error_bytes: int
    too_big: int = 0  # of the errors, EMSGSIZE: larger than the first hop's MTU


def send_batch(sock: Any, datagrams: list, addr: Any = None, gso: Gso | None = None) -> SendResult:
    """Send datagrams in order to addr (None: the connected peer), several per system call
    where gso allows: each run of consecutive datagrams of one size S (the last of a run may be
    shorter), at most MAX_SEGMENTS of them and MAX_GSO_BYTES in all, goes as one GSO sendmsg;
    everything else with sendto (send). Never raises for a send error; see SendResult."""
    n = len(datagrams)
    sent = sent_bytes = errors = error_bytes = too_big = 0
    use_gso = gso is not None and gso.enabled and n > 1
    i = 0
    while i < n:
        d = datagrams[i]
        size = len(d)
        j = i + 1
        if use_gso and 0 < size <= gso.max_segment:
            limit = i + min(MAX_SEGMENTS, MAX_GSO_BYTES // size)
            limit = min(limit, n)
            while j < limit and len(datagrams[j]) == size:
                j += 1
            if j < limit and 0 < len(datagrams[j]) < size:
                j += 1  # a shorter datagram ends a run
        if j - i > 1:
            run = datagrams[i:j]  # one buffer each: the kernel gathers them, no join here
            try:
                if addr is None:
                    nbytes = sock.sendmsg(run, _size_cmsg(size))
                else:
                    nbytes = sock.sendmsg(run, _size_cmsg(size), 0, addr)
            except (BlockingIOError, InterruptedError):
                return SendResult(i, sent, sent_bytes, errors, error_bytes, too_big)
            except OSError as exc:
                if exc.errno in _GSO_UNSUPPORTED or exc.errno in _GSO_TOO_BIG:
                    # refused: this datagram alone now; the rest of the run comes next turn,
                    # one by one when the size (or GSO itself) is now known not to work
                    gso.refused(size, exc)
                    use_gso = gso.enabled
                else:
                    # ECONNREFUSED and friends: a pending error that one send consumes; with
                    # one sendto per datagram it would have cost exactly the first of them
                    errors += 1
                    error_bytes += size
                    i += 1
                    continue
            else:
                gso.sends += 1
                gso.segments += j - i
                sent += j - i
                sent_bytes += nbytes
                i = j
                continue
        try:
            if addr is None:
                sock.send(d)
            else:
                sock.sendto(d, addr)
        except (BlockingIOError, InterruptedError):
            return SendResult(i, sent, sent_bytes, errors, error_bytes, too_big)
        except OSError as exc:
            errors += 1
            error_bytes += size
            too_big += exc.errno == errno.EMSGSIZE
        else:
            sent += 1
            sent_bytes += size
        i += 1
    return SendResult(n, sent, sent_bytes, errors, error_bytes, too_big)


def send_segments(
    sock: Any, data: Any, size: int, addr: Any = None, gso: Gso | None = None
) -> tuple[int, int]:
    """Send `data`, datagrams of `size` bytes laid end to end (the last may be shorter; as a
    GRO read returns them), with as few system calls as gso allows. Returns (sent, sent_bytes);
    every other datagram of data was lost to a send error (EAGAIN included: a forwarder drops
    what the socket cannot take, it does not queue). The proxy's forwarding path."""
    total = len(data)
    if size <= 0 or size >= total:
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:
            return 0, 0
        return 1, total
    view = memoryview(data)
    sent = sent_bytes = 0
    pos = 0
    while pos < total:
        if gso is not None and gso.enabled and size <= gso.max_segment:
            chunk = size * min(MAX_SEGMENTS, MAX_GSO_BYTES // size)
            end = min(pos + chunk, total)
            if end - pos > size:
                count = -(-(end - pos) // size)
                try:
                    if addr is None:
                        sock.sendmsg([view[pos:end]], _size_cmsg(size))
                    else:
                        sock.sendmsg([view[pos:end]], _size_cmsg(size), 0, addr)
                except OSError as exc:
                    if exc.errno in _GSO_UNSUPPORTED or exc.errno in _GSO_TOO_BIG:
                        gso.refused(size, exc)  # and send this chunk one by one, below
                    elif isinstance(exc, (BlockingIOError, InterruptedError)):
                        pos = end  # the socket buffer is full: the whole chunk is dropped
                        continue
                    else:
                        pos += size  # a pending error (ECONNREFUSED) costs the first one
                        continue
                else:
                    gso.sends += 1
                    gso.segments += count
                    sent += count
                    sent_bytes += end - pos
                    pos = end
                    continue
        else:
            end = total
        # one by one up to `end`
        while pos < end:
            piece = view[pos : pos + size]
            try:
                if addr is None:
                    sock.send(piece)
                else:
                    sock.sendto(piece, addr)
            except OSError:
                pass
            else:
                sent += 1
                sent_bytes += len(piece)
            pos += size
    return sent, sent_bytes


def gro_size(ancdata: list) -> int:
    """The segment size in a recvmsg's control messages (0 when there is none: one datagram).
    The kernel writes an int (4 bytes); a u16 is accepted too."""
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO:
            if len(value) >= 4:
                return _INT.unpack_from(value)[0]
            if len(value) >= 2:
                return _U16.unpack_from(value)[0]
    return 0


def count_segments(nbytes: int, size: int) -> int:
    """How many datagrams a GRO read of nbytes with segment size `size` (0: one) holds."""
    if size <= 0 or nbytes <= size:
        return 1
    return -(-nbytes // size)


def split(view: memoryview, nbytes: int, size: int) -> list[memoryview]:
    """The datagrams of a GRO read: view[:nbytes] cut every `size` bytes (0: one datagram)."""
    if size <= 0 or nbytes <= size:
        return [view[:nbytes]]
    return [view[pos : min(pos + size, nbytes)] for pos in range(0, nbytes, size)]


def recv_batch(
    sock: Any, buf: bytearray | memoryview, ancbufsize: int = GRO_ANCBUF
) -> tuple[list[memoryview], Any]:
    """Read once from a (GRO-enabled or not) UDP socket into buf: (datagrams, source address),
    the datagrams as memoryviews into buf, valid until buf is read into again.
    Raises what recvmsg_into raises (BlockingIOError when nothing is ready)."""
    nbytes, ancdata, _flags, addr = sock.recvmsg_into([buf], ancbufsize)
    size = gro_size(ancdata) if ancdata else 0
    return split(memoryview(buf), nbytes, size), addr
