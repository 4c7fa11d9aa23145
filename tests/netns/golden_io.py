"""A small namespace topology for running the golden packet table (tests/golden.py) through
an I/O adapter on a real kernel.  Not the lab: its own namespaces ``plio<hex>-m`` and
``plio<hex>-p``, removed by ``destroy()`` (fixtures call it; pylvs.lab.cleanup also runs
it at exit and on SIGTERM/SIGINT/SIGHUP).

    M (director)                                   P (peer, no IP addresses)
      eth0 "public"  192.0.2.1/24 + VIPs  ------- pub0   injects client-side frames,
                     192.0.2.10, 192.0.2.50              captures what M sends out
      eth1 "private" 10.0.0.1/24          ------- priv0  injects real-server-side frames,
                                                         captures what M sends out
    M: ip_forward=1, rp_filter=0, accept_local=1 on eth0 (an IPIP packet made in
    PREROUTING has M's own 10.0.0.1 as source: without it the kernel drops it as a
    martian); routes to 203.0.113.0/24 and 198.51.100.0/24 via 192.0.2.254, whose MAC
    (permanent neighbour) is P's pub0; the RIPs 10.0.0.2-4 are permanent neighbours on
    P's priv0 MAC.  P's kernel drops what M sends it (no address, no forwarding); the
    AF_PACKET sockets see it first.

M's rules (iptables-nft, ``iptables-restore`` inside M, as pylvs.netctl builds them):
raw PREROUTING notrack for the golden destinations and the private subnet; mangle
PREROUTING MARK for the fwmark VIP (as the guide's operator rule), then NFQUEUE for the
golden destinations; mangle FORWARD NFQUEUE for replies ``-i eth1 -s 10.0.0.0/24``
(rewritten after routing: no martian, see docs/lab.md).  The golden table also sends to
OTHER_VIP (192.0.2.77, no service): it is queued too so the engine can count it.

``BulkNet`` is the same director with a TCP client namespace on the public side
(192.0.2.100) and a real server namespace on the private side (10.0.0.2), for bulk
transfers through NAT.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import golden

from pylvs.lab import cleanup, netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # linux/if_packet.h: a frame this host sent
ETH_HEADER = 14

PUBLIC, PRIVATE = "public", "private"
M_PUB, M_PRIV = "eth0", "eth1"
P_PUB, P_PRIV = "pub0", "priv0"
M_PUB_ADDR, M_PRIV_ADDR = "192.0.2.1", golden.DIRECTOR
GATEWAY = "192.0.2.254"  # M's next hop to the client networks: P's pub0 MAC
CLIENT_NETS = ("203.0.113.0/24", "198.51.100.0/24")
PRIVATE_NET = "10.0.0.0/24"
RIPS = (golden.RIP1, golden.RIP2, golden.RIP3)
VIPS = (golden.VIP, golden.FWM_VIP)
OTHER_VIP = golden.OTHER_VIP  # no service: the "unknown VIP" case
QUEUED_DESTS = (*VIPS, OTHER_VIP)  # golden VIPs + OTHER_VIP (the "unknown VIP" case)
FWM_VIP, FWMARK = golden.FWM_VIP, golden.FWMARK
QUEUE_NUM = 7

BULK_CLIENT = "192.0.2.100"
BULK_SERVER = RIPS[0]

M_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}
QUIET_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}


def in_netns(ns: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh thread that joined ``ns`` and return its result: sockets it
    opens (an NFQUEUE consumer's netlink socket) live in ``ns`` for good."""
    out: dict[str, Any] = {}

    def worker() -> None:
        try:
            netns._setns_current_thread(ns)
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller
            out["error"] = exc

    t = threading.Thread(target=worker, name=f"setns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def rules(queue_num: int = QUEUE_NUM, *, bypass: bool = False) -> str:
    """iptables-restore text for M (see the module docstring)."""
    nfq = f"-j NFQUEUE --queue-num {queue_num}" + (" --queue-bypass" if bypass else "")
    lines = ["*raw", ":PREROUTING ACCEPT [0:0]"]
    lines += [f"-A PREROUTING -i {M_PUB} -d {d} -j CT --notrack" for d in QUEUED_DESTS]
    lines += [f"-A PREROUTING -i {M_PRIV} -s {PRIVATE_NET} -j CT --notrack", "COMMIT"]
    lines += ["*mangle", ":PREROUTING ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]"]
    lines += [f"-A PREROUTING -d {FWM_VIP} -j MARK --set-mark {FWMARK}"]
    lines += [f"-A PREROUTING -i {M_PUB} -d {d} {nfq}" for d in QUEUED_DESTS]
    lines += [f"-A FORWARD -i {M_PRIV} -s {PRIVATE_NET} {nfq}", "COMMIT"]
    return "\n".join(lines) + "\n"


def ttl_minus_one(ip: bytes) -> bytes:
    """The packet as the kernel forwards it: TTL - 1, IP header checksum recomputed."""
    return ttl_plus(ip, -1)


def ttl_plus(ip: bytes, delta: int) -> bytes:
    """``ip`` with its TTL changed by ``delta`` and the IP header checksum recomputed."""
    b = bytearray(ip)
    ihl = (b[0] & 0x0F) * 4
    b[8] = (b[8] + delta) & 0xFF
    b[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{ihl // 2}H", bytes(b[:ihl])))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(b)


def ip_total(ip: bytes) -> bytes:
    """The IP datagram without link padding (short frames are padded to 60 bytes)."""
    if len(ip) >= 4:
        return ip[: struct.unpack("!H", ip[2:4])[0]]
    return ip


class GoldenNet:
    """M and P (module docstring).  ``inject(side, ip)``, ``captured()``, ``iptables()``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"plio{secrets.token_hex(2)}"
        self.owner_pid = os.getpid()
        self.m, self.p = f"{self.name}-m", f"{self.name}-p"
        self._made: list[str] = []
        self._socks: dict[str, socket.socket] = {}
        self._frames: list[tuple[str, bytes]] = []
        cleanup.register(self)
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    # -- topology -----------------------------------------------------------------------
    def _namespace(self, ns: str) -> None:
        netns.add_netns(ns)
        self._made.append(ns)

    def _build(self) -> None:
        for ns in (self.m, self.p):
            self._namespace(ns)
        netns.veth(self.m, M_PUB, self.p, P_PUB)
        netns.veth(self.m, M_PRIV, self.p, P_PRIV)
        netns.sysctl(self.p, QUIET_SYSCTLS)
        netns.sysctl(self.m, M_SYSCTLS)
        netns.ip_batch(self.p, [f"link set {P_PUB} up", f"link set {P_PRIV} up", "link set lo up"])
        links = netns.link_info(self.p)
        self.p_mac = {PUBLIC: links[P_PUB]["address"], PRIVATE: links[P_PRIV]["address"]}
        lines = [f"addr add {M_PUB_ADDR}/24 dev {M_PUB}", f"addr add {M_PRIV_ADDR}/24 dev {M_PRIV}"]
        lines += [f"addr add {v}/32 dev {M_PUB}" for v in VIPS]
        lines += [f"link set {M_PUB} up", f"link set {M_PRIV} up", "link set lo up"]
        lines += [f"neigh replace {GATEWAY} lladdr {self.p_mac[PUBLIC]} nud permanent dev {M_PUB}"]
        lines += [f"neigh replace {r} lladdr {self.p_mac[PRIVATE]} nud permanent dev {M_PRIV}" for r in RIPS]
        # OTHER_VIP is on-link and not M's: a passed packet to it is forwarded to P, not
        # left waiting for ARP (whose failure sends a late ICMP into later captures)
        lines += [f"neigh replace {OTHER_VIP} lladdr {self.p_mac[PUBLIC]} nud permanent dev {M_PUB}"]
        lines += [f"route add {net} via {GATEWAY} dev {M_PUB}" for net in CLIENT_NETS]
        netns.ip_batch(self.m, lines)
        netns.sysctl(self.m, {f"net.ipv4.conf.{d}.rp_filter": 0 for d in (M_PUB, M_PRIV)}
                     | {f"net.ipv4.conf.{M_PUB}.accept_local": 1})
        links = netns.link_info(self.m)
        self.m_mac = {PUBLIC: links[M_PUB]["address"], PRIVATE: links[M_PRIV]["address"]}
        for side, ifname in ((PUBLIC, P_PUB), (PRIVATE, P_PRIV)):
            s = netns.socket_in(self.p, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((ifname, 0))
            s.setblocking(False)
            self._socks[side] = s

    def iptables(self, text: str) -> None:
        """Replace M's raw and mangle tables with ``text`` (iptables-restore, atomic)."""
        netns._run(netns.exec_argv(self.m, ["iptables-restore"]), input=text)

    def queue_counters(self, queue_num: int = QUEUE_NUM) -> dict[str, int] | None:
        """M's /proc/net/netfilter/nfnetlink_queue line for the queue (None: not bound)."""
        out = netns._run(netns.exec_argv(self.m, ["cat", "/proc/net/netfilter/nfnetlink_queue"]),
                         check=False).stdout
        keys = ("queue", "portid", "waiting", "copy_mode", "copy_range", "queue_dropped", "user_dropped",
                "id_sequence")
        for line in out.splitlines():
            f = line.split()
            if f and int(f[0]) == queue_num:
                return dict(zip(keys, (int(x) for x in f[:8]), strict=True))
        return None

    # -- frames -------------------------------------------------------------------------
    def inject(self, side: str, ip: bytes) -> None:
        """Send the IPv4 packet ``ip`` from P to M on ``side``."""
        frame = bytes.fromhex(self.m_mac[side].replace(":", "")) + bytes.fromhex(
            self.p_mac[side].replace(":", "")) + struct.pack("!H", ETH_P_IP) + ip
        self._socks[side].send(frame)

    def _drain(self) -> None:
        for side, s in self._socks.items():
            while True:
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING or len(frame) < ETH_HEADER:
                    continue
                if struct.unpack("!H", frame[12:14])[0] == ETH_P_IP:
                    self._frames.append((side, ip_total(frame[ETH_HEADER:])))

    def captured(self) -> list[tuple[str, bytes]]:
        """IPv4 packets M sent to P so far, as (side, bytes)."""
        self._drain()
        return list(self._frames)

    def clear(self) -> None:
        self._drain()
        self._frames.clear()

    def wait_for(self, side: str, ip: bytes, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if (side, ip) in self.captured():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    # -- teardown -----------------------------------------------------------------------
    def destroy(self) -> None:
        for s in self._socks.values():
            with contextlib.suppress(OSError):
                s.close()
        self._socks.clear()
        for ns in reversed(self._made):
            with contextlib.suppress(*_SETUP_ERRORS):
                netns.del_netns(ns)
        self._made.clear()
        cleanup.unregister(self)


class BulkNet(GoldenNet):
    """M with a client namespace C (192.0.2.100, public) and a real server namespace R
    (10.0.0.2, private) instead of P: the kernel's TCP stacks at both ends."""

    def _build(self) -> None:
        self.c, self.r = f"{self.name}-c", f"{self.name}-r"
        for ns in (self.m, self.c, self.r):
            self._namespace(ns)
        netns.veth(self.m, M_PUB, self.c, "eth0")
        netns.veth(self.m, M_PRIV, self.r, "eth0")
        for ns in (self.c, self.r):
            netns.sysctl(ns, QUIET_SYSCTLS)
        netns.sysctl(self.m, M_SYSCTLS)
        lines = [f"addr add {M_PUB_ADDR}/24 dev {M_PUB}", f"addr add {M_PRIV_ADDR}/24 dev {M_PRIV}"]
        lines += [f"addr add {v}/32 dev {M_PUB}" for v in VIPS]
        lines += [f"link set {M_PUB} up", f"link set {M_PRIV} up", "link set lo up"]
        netns.ip_batch(self.m, lines)
        netns.ip_batch(self.c, [f"addr add {BULK_CLIENT}/24 dev eth0", "link set eth0 up", "link set lo up",
                                f"route add default via {M_PUB_ADDR}"])
        netns.ip_batch(self.r, [f"addr add {BULK_SERVER}/24 dev eth0", "link set eth0 up", "link set lo up",
                                f"route add default via {M_PRIV_ADDR}"])


_SETUP_ERRORS = (OSError, RuntimeError)


class Consumer:
    """An adapter bound inside M, running ``run(stop)`` in a thread; re-raises its error."""

    def __init__(self, net: GoldenNet, factory: Callable[[], Any]) -> None:
        self.queue = in_netns(net.m, factory)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="nfq-consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.queue.run(self.stop, poll=0.05)
        except BaseException as exc:  # noqa: BLE001 -- reported by close()
            self.error = exc

    def answered(self) -> int:
        """Packets that got their verdict (counted after the verdict is sent)."""
        s = self.queue.stats()
        return s["accepted"] + s["dropped"] + s["mangled"]

    def wait_packets(self, count: int, timeout: float = 3.0) -> bool:
        """Wait until ``count`` packets have had their verdicts."""
        deadline = time.monotonic() + timeout
        while self.answered() < count:
            if self.error is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.queue.close()
        if self.error is not None:
            raise self.error
