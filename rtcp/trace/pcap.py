"""Packet capture: what a process sent and received, as a classic pcap file for Wireshark.

rtcp runs in user space over UDP sockets, so there is no packet to capture below it; this writes
each datagram wrapped in a synthetic IPv4 (or IPv6) header and a UDP header carrying the real
addresses and ports, with correct IP and UDP checksums, as link type 101 (LINKTYPE_RAW: the
packet starts with the IP header, its version nibble says which). tcpdump -r and Wireshark read it
as they read a capture; with contrib/wireshark/rtcp.lua Wireshark decodes the rtcp header too.

    pcap = PcapWriter("send.pcap")
    sock = TapSocket(sock, pcap)     # records every sendto/send/recvfrom_into/recv_into,
                                     # and each datagram of a GSO sendmsg / GRO recvmsg_into
    ...
    pcap.close()

read_pcap() is a small reader for tests and tools.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from rtcp.trace.files import OwnedFile

PCAP_MAGIC = 0xA1B2C3D4  # microsecond timestamps
PCAP_MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
SNAPLEN = 65535 + 40  # the largest UDP datagram (65507 payload) in an IPv6 header fits
IP_PROTO_UDP = 17

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")

Address = tuple  # (host, port) or (host, port, flowinfo, scope_id): a socket address


def ones_complement_sum(data: bytes, start: int = 0) -> int:
    """The 16-bit one's complement sum (RFC 1071) of data, added to start, folded.

    Computed as a remainder modulo 0xFFFF (2**16 = 1 mod 0xFFFF, so the big-endian integer of
    the bytes leaves the same remainder as the sum of its 16-bit words); the end-around carry
    makes the sum 0x0000 only for all-zero input, 0xFFFF for every other multiple."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = (int.from_bytes(data, "big") + start) % 0xFFFF
    if total == 0 and (start or data.count(0) != len(data)):
        return 0xFFFF
    return total


def internet_checksum(data: bytes, start: int = 0) -> int:
    return ~ones_complement_sum(data, start) & 0xFFFF


def _ip(host: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(host, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return host
    text = str(host or "0.0.0.0")
    if text == "localhost":
        text = "127.0.0.1"
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return ipaddress.IPv4Address("0.0.0.0")


def _unmapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """a.b.c.d for ::ffff:a.b.c.d (RFC 4291 2.5.5.2), other addresses as they are."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def build_packet(data: bytes, src: Address, dst: Address, ident: int = 0) -> bytes:
    """One IP packet (IPv4 unless either address is IPv6) holding a UDP datagram of `data`."""
    # a dual-stack socket names an IPv4 peer (and itself) ::ffff:a.b.c.d, but the packets on
    # the wire were IPv4: write them so
    sip, dip = _unmapped(_ip(src[0])), _unmapped(_ip(dst[0]))
    if sip.version != dip.version:
        # cannot happen on a wire; write both as IPv6 rather than invent an address
        sip = ipaddress.IPv6Address(f"::ffff:{sip}") if sip.version == 4 else sip
        dip = ipaddress.IPv6Address(f"::ffff:{dip}") if dip.version == 4 else dip
    sport, dport = int(src[1]) & 0xFFFF, int(dst[1]) & 0xFFFF
    udp_len = _UDP.size + len(data)
    if sip.version == 4:
        pseudo = sip.packed + dip.packed + struct.pack("!BBH", 0, IP_PROTO_UDP, udp_len)
    else:
        pseudo = sip.packed + dip.packed + struct.pack("!IxxxB", udp_len, IP_PROTO_UDP)
    udp_header = _UDP.pack(sport, dport, udp_len, 0)
    csum = internet_checksum(pseudo + udp_header + data)
    udp = _UDP.pack(sport, dport, udp_len, csum or 0xFFFF) + data
    if sip.version == 4:
        total = 20 + len(udp)
        header = _IPV4.pack(
            0x45, 0, total & 0xFFFF, ident & 0xFFFF, 0x4000, 64, IP_PROTO_UDP, 0,
            sip.packed, dip.packed,
        )
        check = internet_checksum(header)
        header = header[:10] + struct.pack("!H", check) + header[12:]
        return header + udp
    header = _IPV6.pack(6 << 28, len(udp) & 0xFFFF, IP_PROTO_UDP, 64, sip.packed, dip.packed)
    return header + udp


class PcapWriter(OwnedFile):
    """A classic pcap file (magic 0xa1b2c3d4, microseconds, link type 101 raw IP)."""

    def __init__(self, path_or_file: str | os.PathLike[str] | IO[bytes], *, snaplen: int = SNAPLEN):
        if isinstance(path_or_file, (str, os.PathLike)):
            self._file: IO[bytes] = open(path_or_file, "wb", buffering=1 << 20)  # noqa: SIM115
            self._owns_file = True
        else:
            self._file = path_or_file
            self._owns_file = False
        self.snaplen = snaplen
        self.packets = 0
        self._ident = 0
        self._closed = False
        self._file.write(_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))

    def write(self, data: bytes, src: Address, dst: Address, t: float | None = None) -> None:
        """Record one UDP datagram from src to dst at Unix time t (default: now)."""
        if self._closed:
            return
        if t is None:
            t = time.time()
        self._ident = (self._ident + 1) & 0xFFFF
        packet = build_packet(bytes(data), src, dst, self._ident)
        caplen = min(len(packet), self.snaplen)
        seconds = int(t)
        micros = round((t - seconds) * 1_000_000)
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        self._file.write(_RECORD.pack(seconds, micros, caplen, len(packet)))
        self._file.write(packet[:caplen])
        self.packets += 1



class TapSocket:
    """A UDP socket that copies every datagram it sends or receives into a PcapWriter.

    It forwards everything else to the wrapped socket (fileno() included, so selectors accept
    it). The local address in the capture is the socket's own; when it is bound to the wildcard
    address, the address the kernel would use towards the peer is looked up once per peer.

    sendmsg with a UDP_SEGMENT control message (GSO) and recvmsg_into returning a UDP_GRO one
    carry several datagrams per call: each is recorded as its own packet, as the wire has it."""

    def __init__(self, sock: socket.socket, pcap: PcapWriter, clock: Callable[[], float] = time.time):
        self._sock = sock
        self._pcap = pcap
        self._clock = clock
        self._local_for: dict[Any, Address] = {}
        self._peer: Address | None = None  # of a connected socket, looked up once

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _local(self, peer: Address) -> Address:
        key = peer[0]
        local = self._local_for.get(key)
        if local is None:
            try:
                name = self._sock.getsockname()
            except OSError:
                name = ("0.0.0.0", 0)
            host = name[0]
            if _ip(host).is_unspecified:
                host = _route_source(self._sock.family, peer) or host
            local = self._local_for[key] = (host, name[1])
        return local

    def connect(self, address: Address) -> None:
        self._sock.connect(address)
        self._peer = None
        self._local_for.clear()

    def _peername(self) -> Address:
        if self._peer is None:
            self._peer = self._sock.getpeername()
        return self._peer

    def sendto(self, data, *args) -> int:
        n = self._sock.sendto(data, *args)
        addr = args[-1]
        self._pcap.write(bytes(data), self._local(addr), addr, self._clock())
        return n

    def send(self, data, *args) -> int:
        n = self._sock.send(data, *args)
        peer = self._peername()
        self._pcap.write(bytes(data[:n]), self._local(peer), peer, self._clock())
        return n

    def sendmsg(self, buffers, ancdata=(), flags: int = 0, address: Address | None = None) -> int:
        if address is None:
            n = self._sock.sendmsg(buffers, ancdata, flags)
            dst = self._peername()
        else:
            n = self._sock.sendmsg(buffers, ancdata, flags, address)
            dst = address
        data = b"".join(bytes(b) for b in buffers)
        size = 0
        for level, kind, value in ancdata:
            if level == _SOL_UDP and kind == _UDP_SEGMENT and len(value) >= 2:
                size = struct.unpack_from("=H", value)[0]
        src, t = self._local(dst), self._clock()
        for datagram in _segments(data, size):
            self._pcap.write(datagram, src, dst, t)
        return n

    def recvmsg_into(self, buffers, ancbufsize: int = 0, flags: int = 0):
        nbytes, ancdata, msg_flags, addr = self._sock.recvmsg_into(buffers, ancbufsize, flags)
        src = addr if addr else self._peername()
        size = 0
        for level, kind, value in ancdata:
            if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 2:
                size = struct.unpack_from("=i" if len(value) >= 4 else "=H", value)[0]
        if len(buffers) == 1:
            data = bytes(memoryview(buffers[0])[:nbytes])
        else:
            data = b"".join(bytes(b) for b in buffers)[:nbytes]
        dst, t = self._local(src), self._clock()
        for datagram in _segments(data, size):
            self._pcap.write(datagram, src, dst, t)
        return nbytes, ancdata, msg_flags, addr

    def recvfrom_into(self, buffer, nbytes: int = 0, *args) -> tuple[int, Address]:
        n, addr = self._sock.recvfrom_into(buffer, nbytes, *args)
        self._pcap.write(bytes(memoryview(buffer)[:n]), addr, self._local(addr), self._clock())
        return n, addr

    def recvfrom(self, bufsize: int, *args) -> tuple[bytes, Address]:
        data, addr = self._sock.recvfrom(bufsize, *args)
        self._pcap.write(data, addr, self._local(addr), self._clock())
        return data, addr

    def recv_into(self, buffer, nbytes: int = 0, *args) -> int:
        n = self._sock.recv_into(buffer, nbytes, *args)
        peer = self._peername()
        self._pcap.write(bytes(memoryview(buffer)[:n]), peer, self._local(peer), self._clock())
        return n

    def recv(self, bufsize: int, *args) -> bytes:
        data = self._sock.recv(bufsize, *args)
        peer = self._peername()
        self._pcap.write(data, peer, self._local(peer), self._clock())
        return data


_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = 103  # the numbers of rtcp.net.udp (Linux); Python does not export them
_UDP_GRO = 104


def _segments(data: bytes, size: int) -> list[bytes]:
    """The datagrams of a GSO send or a GRO read: data cut every `size` bytes (0: one)."""
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[pos : pos + size] for pos in range(0, len(data), size)]


def _route_source(family: int, peer: Address) -> str | None:
    """The local address the kernel picks towards peer (a UDP connect sends nothing)."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(peer)
            return probe.getsockname()[0]
    except OSError:
        return None


# --- reading -----------------------------------------------------------------------------


@dataclass
class PcapPacket:
    """One captured UDP datagram as read back: time, addresses, payload, checksum verdicts."""

    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    ip_version: int
    ip_checksum_ok: bool | None  # None for IPv6 (no header checksum)
    udp_checksum_ok: bool | None  # None when the sender left it 0 (IPv4 only)


def read_pcap(path: str | os.PathLike[str]) -> list[PcapPacket]:
    """The UDP datagrams of a classic pcap file (link types 1, 101, 228, 229; either byte
    order; micro- or nanosecond). Non-UDP packets are skipped. Raises ValueError if the file is
    not a pcap file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < _GLOBAL.size:
        raise ValueError("not a pcap file: too short")
    magic_le = struct.unpack_from("<I", blob)[0]
    if magic_le in (PCAP_MAGIC, PCAP_MAGIC_NS):
        order = "<"
        magic = magic_le
    else:
        magic = struct.unpack_from(">I", blob)[0]
        if magic not in (PCAP_MAGIC, PCAP_MAGIC_NS):
            raise ValueError(f"not a pcap file: magic {magic_le:#010x}")
        order = ">"
    scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    _, _, _, _, _, linktype = struct.unpack_from(order + "HHiIII", blob, 4)
    record = struct.Struct(order + "IIII")
    pos = _GLOBAL.size
    packets: list[PcapPacket] = []
    while pos + record.size <= len(blob):
        sec, frac, caplen, _orig = record.unpack_from(blob, pos)
        pos += record.size
        frame = blob[pos:pos + caplen]
        pos += caplen
        if linktype == LINKTYPE_ETHERNET:
            if len(frame) < 14 or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
                continue
            frame = frame[14:]
        elif linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            raise ValueError(f"unsupported link type {linktype}")
        pkt = _parse_ip(frame, sec + frac * scale)
        if pkt is not None:
            packets.append(pkt)
    return packets


def _parse_ip(frame: bytes, t: float) -> PcapPacket | None:
    if not frame:
        return None
    version = frame[0] >> 4
    if version == 4:
        ihl = (frame[0] & 0x0F) * 4
        if len(frame) < ihl + 8 or frame[9] != IP_PROTO_UDP:
            return None
        ip_ok = internet_checksum(frame[:ihl]) == 0
        src_ip, dst_ip = frame[12:16], frame[16:20]
        pseudo_tail = struct.pack("!BB", 0, IP_PROTO_UDP)
        udp = frame[ihl:]
        sip, dip = str(ipaddress.IPv4Address(src_ip)), str(ipaddress.IPv4Address(dst_ip))
    elif version == 6:
        if len(frame) < 48 or frame[6] != IP_PROTO_UDP:
            return None
        ip_ok = None
        src_ip, dst_ip = frame[8:24], frame[24:40]
        udp = frame[40:]
        sip, dip = str(ipaddress.IPv6Address(src_ip)), str(ipaddress.IPv6Address(dst_ip))
    else:
        return None
    sport, dport, ulen, ucsum = _UDP.unpack_from(udp)
    payload = udp[8:ulen]
    if ucsum == 0 and version == 4:
        udp_ok = None
    elif version == 4:
        pseudo = src_ip + dst_ip + pseudo_tail + struct.pack("!H", ulen)
        udp_ok = internet_checksum(pseudo + udp[:ulen]) == 0
    else:
        pseudo = src_ip + dst_ip + struct.pack("!IxxxB", ulen, IP_PROTO_UDP)
        udp_ok = internet_checksum(pseudo + udp[:ulen]) == 0
    return PcapPacket(t, (sip, sport), (dip, dport), bytes(payload), version, ip_ok, udp_ok)
