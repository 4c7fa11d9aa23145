"""Address conversions, one copy for the whole package: IPv4 addresses as the arrays keep
them (host-order integers) and MAC addresses as frames carry them (6 bytes)."""

from __future__ import annotations

from ipaddress import IPv4Address

ETH_ALEN = 6  # bytes in an Ethernet address


def ip_int(addr: str | IPv4Address | int) -> int:
    """A dotted quad, an IPv4Address or an int, as a host-order int."""
    if isinstance(addr, int):
        return addr
    return int(IPv4Address(str(addr)))


def ip_str(addr: int) -> str:
    """A host-order int as a dotted quad."""
    return str(IPv4Address(int(addr)))


def parse_mac(text: str) -> bytes:
    """A MAC as send_arp accepts it: 12 hex digits (001122aabbcc) or 00:11:22:aa:bb:cc."""
    parts = text.split(":")
    if len(parts) == ETH_ALEN and all(1 <= len(p) <= 2 for p in parts):
        digits = "".join(p.zfill(2) for p in parts)
    elif len(parts) == 1 and len(text) == 2 * ETH_ALEN:
        digits = text
    else:
        raise ValueError(f"bad MAC address {text!r}: expected 001122aabbcc or 00:11:22:aa:bb:cc")
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}: not hexadecimal") from None


def mac_bytes(mac: str | bytes) -> bytes:
    """A MAC given as text (``parse_mac``) or as its 6 bytes, as 6 bytes."""
    if isinstance(mac, str):
        return parse_mac(mac)
    if len(mac) != ETH_ALEN:
        raise ValueError(f"MAC {bytes(mac)!r} is not {ETH_ALEN} bytes")
    return bytes(mac)
