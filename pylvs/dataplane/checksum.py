"""Internet checksums through the C helpers in ``csrc/checksum.c``.

Thin wrappers for Python callers and tests; the rewrite code calls the C
functions directly.  Values are 16-bit integers as they appear big-endian in
the header.
"""

from __future__ import annotations

from pylvs._native import ffi, lib

IPV4_MIN_HEADER = 20  # RFC 791


def _ptr(buf: bytes | bytearray | memoryview):
    return ffi.from_buffer("uint8_t[]", buf)


def ipv4_header_checksum(packet: bytes | bytearray | memoryview) -> int:
    """Checksum of the IPv4 header at the start of ``packet`` (its checksum field ignored)."""
    if len(packet) < IPV4_MIN_HEADER:
        raise ValueError(f"IPv4 header needs {IPV4_MIN_HEADER} bytes, got {len(packet)}")
    ihl = (packet[0] & 0x0F) * 4
    if ihl < IPV4_MIN_HEADER or ihl > len(packet):
        raise ValueError(f"IHL of {ihl} bytes does not fit a {len(packet)}-byte packet")
    return lib.pl_csum_ipv4_header(_ptr(packet), ihl)


def l4_checksum(packet: bytes | bytearray | memoryview) -> int:
    """Full TCP or UDP checksum (pseudo-header included) of the IPv4 ``packet``.

    Returns 0 for other protocols or when the L4 header is cut short.  A UDP
    checksum that computes to zero is returned as 0xffff (RFC 768).
    """
    if len(packet) < IPV4_MIN_HEADER:
        raise ValueError(f"IPv4 header needs {IPV4_MIN_HEADER} bytes, got {len(packet)}")
    return lib.pl_csum_l4(_ptr(packet), len(packet))


def update16(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one changed 16-bit word."""
    return lib.pl_csum_update16(check, old, new)


def update32(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one changed 32-bit field (an address)."""
    return lib.pl_csum_update32(check, old, new)


def update_udp16(check: int, old: int, new: int) -> int:
    """Incremental update of a UDP checksum: zero ("none") stays zero, a result of zero is sent as 0xffff."""
    if check == 0:
        return 0
    return update16(check, old, new) or 0xFFFF


def update_udp32(check: int, old: int, new: int) -> int:
    """:func:`update_udp16` for a 32-bit field."""
    if check == 0:
        return 0
    return update32(check, old, new) or 0xFFFF


def fix_checksums(packet: bytearray) -> None:
    """Recompute the IPv4 header checksum and the TCP/UDP checksum of ``packet`` in place."""
    if lib.pl_ipv4_fix_checksums(_ptr(packet), len(packet)) != 0:
        raise ValueError("not a complete IPv4 packet")
