"""``pylvs send-arp [-i DEV] IP MAC BCAST TARGETMAC [--count N] [--interval S]``: piranha's
send_arp (reference 2.6), with its argv, so scripts that call it keep working.

Sends gratuitous ARP replies for IP from MAC on DEV (default eth0): Ethernet destination
TARGETMAC (pulse passes ffffffffffff), sender and target MAC both MAC, sender and target IP
both IP, padded to 60 bytes.  BCAST (the device's broadcast address) is accepted and
ignored, as send_arp ignores it.  MACs are written 001122aabbcc or 00:11:22:aa:bb:cc.
By default 5 frames 1 s apart, as pulse repeats it (send_arp alone sent one).

exit status: 0 all frames sent, 1 the device could not be used or a send failed, 2 usage.
Needs CAP_NET_RAW (root).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time

from pylvs.ha import garp

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own


def _mac(text: str) -> bytes:
    try:
        return garp.parse_mac(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad IPv4 address {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"count must be a positive integer, not {text!r}")
    return value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"interval must be a number of seconds >= 0, not {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("send-arp", help="send gratuitous ARPs (piranha's send_arp)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-i", dest="device", default=garp.DEFAULT_DEVICE, metavar="DEV",
                   help=f"device to send on (default {garp.DEFAULT_DEVICE}; an alias label eth0:1 means eth0)")
    p.add_argument("ip", type=_ipv4, metavar="IP", help="the address announced")
    p.add_argument("mac", type=_mac, metavar="MAC", help="sender MAC (the device's)")
    p.add_argument("bcast", metavar="BCAST", help="broadcast address (ignored, as send_arp ignores it)")
    p.add_argument("target_mac", type=_mac, metavar="TARGETMAC", help="Ethernet destination (ffffffffffff)")
    p.add_argument("--count", type=_count, default=garp.DEFAULT_COUNT, metavar="N",
                   help=f"frames to send (default {garp.DEFAULT_COUNT})")
    p.add_argument("--interval", type=_interval, default=garp.DEFAULT_INTERVAL, metavar="S",
                   help=f"seconds between frames (default {garp.DEFAULT_INTERVAL:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    frame = garp.garp_frame(args.mac, args.ip, dst=args.target_mac)
    try:
        sender = garp.GarpSender(args.device)
    except OSError as exc:
        print(f"pylvs send-arp: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    with sender:
        for i in range(args.count):
            try:
                sender.send_frame(frame)
            except OSError as exc:
                print(f"pylvs send-arp: sending on {sender.device} failed: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_FAILED
            if i + 1 < args.count:
                time.sleep(args.interval)
    return EXIT_OK
