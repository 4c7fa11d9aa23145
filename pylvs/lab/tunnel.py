"""IP-in-IP (LVS-TUN) on the real servers: the kernel's ipip device, or a userspace
decapsulator when the kernel has none.

A TUN real server must accept packets that arrive as IPv4-in-IPv4 (protocol 4) addressed
to its RIP, whose inner destination is the VIP, and answer the client directly.  The
guide does that with a ``tunl0`` ipip device carrying the VIP.

Kernel path (``ipip`` in the kernel): the lab brings up ``tunl0`` in the real server's
namespace and puts the VIP on it.

Userspace path (no ipip, as on kernels built without CONFIG_NET_IPIP): the lab creates a
persistent TUN device (``tunu0``) carrying the VIP, and starts this module's decapsulator
in the real server's namespace.  It reads protocol-4 packets from a raw socket (the
kernel hands raw sockets every locally delivered packet of their protocol, outer IPv4
header included), strips the outer header and writes the inner packet into the TUN
device.  The kernel then receives the inner packet as if it had arrived on ``tunu0``:
its destination (VIP) is local, so it goes to the local TCP/UDP socket, and the reply is
routed by the normal table, straight to the client.  rp_filter is off on the TUN device
(the client is not reachable through it) and arp_ignore/arp_announce keep the VIP silent
on the LAN, exactly as for the ipip device.

Run: ``ip netns exec NS python -m pylvs.lab.tunnel decap --dev tunu0`` (the lab does it,
and ends it by PID).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from pylvs.lab import netns

IPPROTO_IPIP = 4  # IPv4-in-IPv4, what LVS-TUN sends
KERNEL_DEV = "tunl0"  # the ipip fallback device name (created by the ipip module)
USERSPACE_DEV = "tunu0"  # our TUN device in the fallback path
TUNSETIFF = 0x400454CA  # ioctl: attach this fd to a TUN/TAP device by name
IFF_TUN = 0x0001  # layer 3: we write bare IP packets
IFF_NO_PI = 0x1000  # no 4-byte packet-info prefix
RCVBUF = 4 << 20  # bytes; absorbs bursts while Python is busy
MAX_PACKET = 65535
READY = "ready"

MODE_KERNEL = "kernel"
MODE_USERSPACE = "userspace"
MODE_AUTO = "auto"
MODES = (MODE_AUTO, MODE_KERNEL, MODE_USERSPACE)


def ipip_loaded() -> bool:
    """ipip is built in or already loaded (it then has /sys/module/ipip)."""
    return Path("/sys/module/ipip").is_dir()


def ipip_module_on_disk() -> bool:
    """Loading ipip.ko would add a tunl0 device to *every* namespace, the root one
    included, so the lab never triggers that load by itself."""
    base = Path("/lib/modules") / os.uname().release
    return base.is_dir() and any(base.rglob("ipip.ko*"))


def choose_mode(probe_netns: str, requested: str = MODE_AUTO) -> tuple[str, str]:
    """Decide kernel ipip or the userspace decapsulator, trying the kernel in a lab
    namespace.  Returns (mode, reason).

    auto: use the kernel's ipip when creating it in `probe_netns` works, except when it
    would make the kernel load ipip.ko (see ipip_module_on_disk).  kernel: require it.
    userspace: always the decapsulator."""
    if requested == MODE_USERSPACE:
        return MODE_USERSPACE, "userspace decapsulator requested"
    if requested == MODE_AUTO and not ipip_loaded() and ipip_module_on_disk():
        return MODE_USERSPACE, ("ipip is a module that is not loaded; loading it would add "
                                "tunl0 to the root namespace (tunnel_mode='kernel' allows it)")
    err = ensure_kernel_device(probe_netns)
    if err is None:
        return MODE_KERNEL, "kernel ipip device"
    if requested == MODE_KERNEL:
        raise netns.NetnsError(f"kernel ipip requested but unavailable: {err}")
    return MODE_USERSPACE, f"no kernel ipip ({err})"


def ensure_kernel_device(ns: str) -> str | None:
    """Make sure `tunl0` (ipip) exists in `ns`.  None on success, else the error."""
    if KERNEL_DEV in netns.link_info(ns):
        return None  # the ipip module creates tunl0 in every new namespace
    proc = netns.ip(ns, "link", "add", KERNEL_DEV, "type", "ipip", check=False)
    if proc.returncode == 0 or KERNEL_DEV in netns.link_info(ns):
        return None
    return (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"


def open_tun(name: str) -> int:
    """Attach to the (persistent) TUN device `name`; returns the fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def decap_loop(raw: socket.socket, tun_fd: int, max_packets: int | None = None) -> int:
    """Strip the outer IPv4 header of each IPIP packet and write the inner one into the
    TUN device.  Returns how many packets were written."""
    buf = bytearray(MAX_PACKET)
    view = memoryview(buf)
    written = 0
    while max_packets is None or written < max_packets:
        n = raw.recv_into(buf)
        if n < 20:
            continue
        outer = (buf[0] & 0x0F) * 4
        # Only well-formed IPv4-in-IPv4: an inner IPv4 header after the outer header.
        if buf[0] >> 4 != 4 or buf[9] != IPPROTO_IPIP or n < outer + 20 or buf[outer] >> 4 != 4:
            continue
        try:
            os.write(tun_fd, view[outer:n])
            written += 1
        except OSError:
            pass  # e.g. the inner packet is malformed: the kernel refuses it, we go on
    return written


def decap_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pylvs.lab.tunnel decap")
    parser.add_argument("--dev", default=USERSPACE_DEV, help="persistent TUN device to feed")
    args = parser.parse_args(argv)

    tun_fd = open_tun(args.dev)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to flush

    print(READY, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the lab's owner may exit: no SIGPIPE later
    decap_loop(raw, tun_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "decap":
        print("usage: python -m pylvs.lab.tunnel decap [--dev tunu0]", file=sys.stderr)
        return 2
    return decap_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
