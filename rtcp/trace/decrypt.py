"""`rtcp decrypt CAPTURE --keylog FILE -o PLAIN.pcap`: a capture of protected transfers turned
back into plaintext rtcp datagrams (valid CRC-32s), which the dissector, `rtcp explain`-style
tools and tcpdump read in full. The keys come from --keylog (like SSLKEYLOGFILE for TLS):
only someone who had them at the time of the transfer can decrypt its capture.

Every `rtcp` start imports this module to register the command: packet protection (and its
cryptography) and the pcap codec are imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtcp.errors import LocalIOError, UsageError


def decrypt_command(
    capture: Annotated[
        Path,
        typer.Argument(metavar="CAPTURE", help="A pcap file (--pcap, tcpdump).", show_default=False),
    ],
    keylog: Annotated[
        Path,
        typer.Option(
            "--keylog", metavar="FILE", help="The keys that send/recv --keylog wrote.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", metavar="PLAIN.pcap", help="Where to write the decrypted capture.",
            show_default=False,
        ),
    ],
) -> None:
    """Decrypt a capture of transfers made with --psk-file or --code, using their --keylog.

    Example: rtcp decrypt send.pcap --keylog keys.log -o plain.pcap

    Every datagram is copied; the protected ones whose keys are in FILE come out as plaintext
    rtcp segments. Prints how many were decrypted and how many were not.
    """
    from rtcp.core import protection as prot
    from rtcp.trace.pcap import PcapWriter, read_pcap

    try:
        keys = prot.parse_keylog(keylog.read_text(encoding="ascii", errors="replace"))
    except OSError as exc:
        raise LocalIOError(f"cannot read {keylog}: {exc.strerror or exc}") from None
    if not keys:
        raise UsageError(f"{keylog} holds no rtcp keys (RTCP_TRAFFIC lines from --keylog)")
    try:
        packets = read_pcap(capture)
    except OSError as exc:
        raise LocalIOError(f"cannot read {capture}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{capture}: {exc}") from None
    decryptor = prot.CaptureDecryptor(keys)
    try:
        with PcapWriter(output) as writer:
            for packet in packets:
                writer.write(decryptor.datagram(packet.payload), packet.src, packet.dst, packet.t)
    except OSError as exc:
        raise LocalIOError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(
        f"{output}: {len(packets)} datagrams, {decryptor.decrypted} decrypted, "
        f"{decryptor.undecryptable} without their keys"
    )
