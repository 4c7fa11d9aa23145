"""pulse's heartbeat on the wire (reference 2.2): one 4-byte magic per UDP datagram.

Piranha wrote the magic with ``sendto(&magic, sizeof(int))``, in the sender's byte order;
it ran on x86, so the bytes on the wire are little-endian (HEARTBEAT_RUNNING is
``DA DB AD BD``).  pylvs sends little-endian and accepts either order.  A datagram is
accepted only from the peer's public or private address, only at exactly 4 bytes, and
only with a magic of this mode (LVS and FOS magics are deliberately incompatible); each
refusal has its own reason, counted by the caller and logged as pulse logs it.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import NamedTuple

# The magics of pulse.c (reference 2.2).
HEARTBEAT_RUNNING = 0xBDADDBDA  # LVS mode, the sender is active
HEARTBEAT_STOPPED = 0xADBDDABD  # LVS mode, the sender is standby
FOS_HEARTBEAT_RUNNING = 0xBEEFBABE
FOS_HEARTBEAT_STOPPED = 0xDEADBEEF
FOS_HEARTBEAT_STOPME = 0xDEADDADA
HEARTBEAT_HOLD = 0xDEAFBABE  # defined and accepted by pulse, their logic disabled
HEARTBEAT_HELD = 0xDEAFDADA
LVS_MAGICS = frozenset({HEARTBEAT_RUNNING, HEARTBEAT_STOPPED, HEARTBEAT_HOLD, HEARTBEAT_HELD})
MAGIC_NAMES = {
    HEARTBEAT_RUNNING: "RUNNING", HEARTBEAT_STOPPED: "STOPPED", FOS_HEARTBEAT_RUNNING: "FOS_RUNNING",
    FOS_HEARTBEAT_STOPPED: "FOS_STOPPED", FOS_HEARTBEAT_STOPME: "FOS_STOPME", HEARTBEAT_HOLD: "HOLD",
    HEARTBEAT_HELD: "HELD",
}  # fmt: skip

HEARTBEAT_SIZE = 4  # sizeof(int) on the x86 boxes piranha ran on
RECV_BUFFER = 64  # larger than any heartbeat, so a long datagram is seen as long

# Refusal reasons: counter names, and pulse's log lines.
UNEXPECTED_SOURCE = "unexpected_source"
BAD_LENGTH = "bad_length"
INCOMPATIBLE = "incompatible"
REASON_LOG = {
    UNEXPECTED_SOURCE: "Unexpected heartbeat from {src}",
    BAD_LENGTH: "bad heartbeat packet from {src} ({size} bytes)",
    INCOMPATIBLE: "Incompatible heartbeat received from {src} (magic {magic}) -- other system not using "
                  "identical services",
}


def encode(magic: int) -> bytes:
    """The datagram pulse sends for `magic`: 4 bytes, little-endian as on x86."""
    return struct.pack("<I", magic)


class Received(NamedTuple):
    """One datagram judged: ``magic`` when accepted, else ``reason`` (and a log line)."""

    magic: int | None
    reason: str | None = None
    message: str = ""


def decode(data: bytes, src: str, peers: Collection[str], accepted: Collection[int] = LVS_MAGICS) -> Received:
    """Judge a datagram from `src` as pulse does: source, then length, then magic."""
    if src not in peers:
        return Received(None, UNEXPECTED_SOURCE, REASON_LOG[UNEXPECTED_SOURCE].format(src=src))
    if len(data) != HEARTBEAT_SIZE:
        return Received(None, BAD_LENGTH, REASON_LOG[BAD_LENGTH].format(src=src, size=len(data)))
    little, big = struct.unpack("<I", data)[0], struct.unpack(">I", data)[0]
    for magic in (little, big):
        if magic in accepted:
            return Received(magic)
    return Received(None, INCOMPATIBLE, REASON_LOG[INCOMPATIBLE].format(src=src, magic=f"0x{little:08x}"))
