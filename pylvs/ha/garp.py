"""Gratuitous ARP, as piranha's send_arp sends it and pulse repeats it (reference 2.5, 2.6).

On takeover pulse announces every address it brings up (the NAT router address, then each
active VIP, deduplicated) with a gratuitous ARP *reply*: broadcast destination, opcode 2,
sender and target MAC both the device's MAC, sender and target IP both the address (the
RFC 2002-style form send_arp builds), padded to the 60-byte Ethernet minimum.  Each
address gets 5 frames one second apart; pulse logs "gratuitous lvs arps finished".

garp_frame() is the pure frame builder; GarpSender is the thin AF_PACKET adapter (piranha
used the obsolete SOCK_PACKET; AF_PACKET/SOCK_RAW bound to the device sends the same
bytes); announce() is pulse's loop, with the count and interval configurable (lvs.cf
garp_count / garp_interval) and a stop event so a node that loses the role stops at once.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pylvs.addr import parse_mac  # noqa: F401 - send_arp's MAC forms; garp.parse_mac for callers

LOG = logging.getLogger("pylvs.ha.garp")

# The frame (reference 2.6 table; send_arp.c).
BROADCAST_MAC = b"\xff" * 6  # pulse passes ffffffffffff as send_arp's 4th argument
ETH_P_ARP = 0x0806  # <linux/if_ether.h>
ETH_P_IP = 0x0800  # ARP protocol type: IPv4
ARPHRD_ETHER = 1  # <linux/if_arp.h>: ARP hardware type Ethernet
ARPOP_REPLY = 2  # send_arp sends a reply (its constant is misnamed "request")
ETH_ALEN = 6  # hlen
IPV4_ALEN = 4  # plen
ETH_HEADER = struct.Struct("!6s6sH")  # destination, source, EtherType
ARP_BODY = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa
FRAME_SIZE = 60  # ETH_ZLEN: the Ethernet minimum without FCS; send_arp pads to it
PADDING = FRAME_SIZE - ETH_HEADER.size - ARP_BODY.size  # 18 zero bytes

# pulse's repetition (reference 2.5: "Each address gets 5 ARP frames, one per second").
DEFAULT_COUNT = 5
DEFAULT_INTERVAL = 1.0
DEFAULT_DEVICE = "eth0"  # send_arp's default -i

# SIOCGIFHWADDR (<linux/sockios.h>) fills a struct ifreq: 16-byte name, then a sockaddr whose
# sa_family is the ARPHRD_* type and whose sa_data starts with the hardware address.
SIOCGIFHWADDR = 0x8927
IFNAMSIZ = 16
IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit Linux
IFR_HWADDR_FAMILY = struct.Struct("=H")  # at offset IFNAMSIZ
IFR_HWADDR_DATA = IFNAMSIZ + IFR_HWADDR_FAMILY.size

FINISHED = "gratuitous lvs arps finished"  # pulse's own log line


def garp_frame(mac: bytes, ip: str, *, dst: bytes = BROADCAST_MAC) -> bytes:
    """The 60-byte gratuitous ARP reply send_arp sends for `ip` from `mac` (reference 2.6)."""
    if len(mac) != ETH_ALEN or len(dst) != ETH_ALEN:
        raise ValueError(f"MAC addresses are {ETH_ALEN} bytes (got {len(mac)} and {len(dst)})")
    addr = ipaddress.IPv4Address(ip).packed
    return (ETH_HEADER.pack(dst, mac, ETH_P_ARP)
            + ARP_BODY.pack(ARPHRD_ETHER, ETH_P_IP, ETH_ALEN, IPV4_ALEN, ARPOP_REPLY, mac, addr, mac, addr)
            + bytes(PADDING))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def base_device(device: str) -> str:
    """eth0:1 -> eth0: an alias label names no device of its own (pulse strips it too)."""
    return device.split(":", 1)[0]


def device_mac(sock: socket.socket, device: str) -> bytes:
    """The Ethernet address of `device`, asked with SIOCGIFHWADDR on `sock` (so it is the
    device of the socket's own network namespace)."""
    name = device.encode()
    if not name or len(name) >= IFNAMSIZ:
        raise OSError(f"{device!r}: not a valid interface name")
    ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, name.ljust(IFREQ_SIZE, b"\0"))
    (family,) = IFR_HWADDR_FAMILY.unpack_from(ifreq, IFNAMSIZ)
    if family != ARPHRD_ETHER:
        raise OSError(f"{device}: not an Ethernet device (hardware type {family}); no ARP on it")
    return bytes(ifreq[IFR_HWADDR_DATA:IFR_HWADDR_DATA + ETH_ALEN])


class Sender(Protocol):
    """What announce() needs of a sender (GarpSender, or a test double)."""

    def send(self, ip: str) -> None: ...

    def close(self) -> None: ...


class GarpSender:
    """An AF_PACKET socket bound to one device, sending gratuitous ARPs from its MAC.

    `sock`: an AF_PACKET SOCK_RAW socket to use (e.g. one made inside another network
    namespace); by default one is made here.  The sender owns the socket and closes it."""

    def __init__(self, device: str = DEFAULT_DEVICE, sock: socket.socket | None = None):
        self.device = base_device(device)
        try:
            # Protocol 0: this socket only sends; it never queues the frames it would receive.
            self.sock = sock if sock is not None else socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                self.sock.bind((self.device, 0))
                self.mac = device_mac(self.sock, self.device)
            except OSError:
                self.sock.close()
                raise
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"gratuitous ARP on {self.device}: {reason}") from exc

    def send(self, ip: str) -> None:
        self.send_frame(garp_frame(self.mac, ip))

    def send_frame(self, frame: bytes) -> None:
        sent = self.sock.send(frame)
        if sent != len(frame):
            raise OSError(f"gratuitous ARP on {self.device}: sent {sent} of {len(frame)} bytes")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> GarpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan(addresses: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(ip, device) pairs as announce() sends them: labels stripped, each address once (the
    first device named wins, as pulse dedupes by address)."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for ip, device in addresses:
        if ip not in seen:
            seen.add(ip)
            out.append((ip, base_device(device)))
    return out


def announce(addresses: Sequence[tuple[str, str]], count: int = DEFAULT_COUNT,
             interval: float = DEFAULT_INTERVAL, stop: threading.Event | None = None,
             sender_factory: Callable[[str], Sender] = GarpSender,
             log: logging.Logger = LOG) -> int:
    """Send `count` rounds of gratuitous ARPs, one frame per address per round, `interval`
    seconds apart (no wait after the last round); return the frames sent.

    Stops early when `stop` is set.  Never raises on a network error: a device that cannot
    be opened is logged once and its addresses skipped; each failed send is logged."""
    todo = plan(addresses)
    senders: dict[str, Sender | None] = {}
    for _ip, device in todo:
        if device in senders:
            continue
        try:
            senders[device] = sender_factory(device)
        except OSError as exc:
            log.warning("gratuitous ARP: cannot use %s, its addresses are not announced: %s", device, exc)
            senders[device] = None
    sent = 0
    try:
        for round_no in range(count):
            if stop is not None and stop.is_set():
                break
            for ip, device in todo:
                sender = senders[device]
                if sender is None:
                    continue
                try:
                    sender.send(ip)
                    sent += 1
                except OSError as exc:
                    log.warning("gratuitous ARP for %s on %s failed: %s", ip, device, exc)
            if round_no + 1 < count:
                if stop is not None:
                    if stop.wait(interval):
                        break
                else:
                    time.sleep(interval)
    finally:
        for sender in senders.values():
            if sender is not None:
                try:
                    sender.close()
                except OSError:
                    pass
    log.info(FINISHED)
    return sent
