"""AF_XDP with the whole forwarding loop in C (``--io afxdp``): NAT, DR and TUN.

    loop = AfXdpLoop(["eth0", "eth1"], fwd, keys)   # attaches the program, opens the sockets
    AfXdpLoop(devs, fwd, keys, workers=2)            # two loops, each on half of the queues
    loop.run(stop)                                 # until stop (a threading.Event) is set
    loop.set_keys(new_keys)                        # a reload: what the program redirects
    loop.close()                                   # sockets closed, program detached

On each device an XDP program (``csrc/bpf/xdp_pylvs.c``, built by ``make deps`` with
clang into ``xdp_pylvs.o`` beside this file) redirects to AF_XDP sockets only what the
director forwards: TCP/UDP to a virtual service, ICMP errors to a VIP, and (NAT) the real
servers' replies that the kernel would forward, with the route's next hop in front of
each frame.  Everything else (ARP, ping, SSH to the box, health-check replies, fragments)
goes to the kernel untouched.  Which services and servers: ``XdpKeys`` from the plan
(``netctl.plan.plan_for(capture="afxdp")``).

One socket per receive queue of each device, in copy mode (veth and most drivers; zero
copy needs driver support and buys little at these rates), served by one C loop, or by
``workers`` loops on threads of their own, each taking its share of the queues
(``csrc/loop.c`` over ``csrc/xsk.c``): frames are copied into the batch rows, the engine
cfunc decides, and packets leave as Ethernet frames by AF_PACKET (sendmmsg, virtio-net
header), to the next hop compiled per dest row (NAT to a server, DR, TUN) or the one the
program found (NAT replies).  What the program found the kernel would forward (a real
server's packet) the loop forwards, TTL lowered: rewritten if it is a reply of ours, as
it came if not (the server's own traffic).  Nothing can go back up the kernel's receive
path from an AF_XDP socket: the program passes what the engine would pass (``unpassed``
counts what still arrives: a TCP packet without SYN of no connection, which NFQUEUE
hands to the kernel for its RST).  A frame from a local sender on a veth has only the pseudo-header
sum as its TCP/UDP checksum (CHECKSUM_PARTIAL does not survive the copy): the loop
completes it (``csum_completed``).

The program is attached in native (driver) mode where the driver has it, else in skb
(generic) mode; ``mode`` forces one.  A device that already has an XDP program is
refused.  ``fail_open=False`` makes the program drop, rather than pass to the kernel, a
frame for a queue whose socket is gone (the director killed): NFQUEUE's
``--queue-bypass`` choice.  ``busy_poll_us`` makes the loop look at its rings again,
without sleeping, for that long before each ``poll``: no wake-up latency while traffic
flows, at the price of a core spinning that long after every batch.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

from pylvs._native import ffi, lib
from pylvs.addr import ip_int
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.dataplane.io._cloop import ROWS_DEFAULT, CLoop, LoopGroup
from pylvs.netctl.plan import XdpKeys

XDP_OBJECT = Path(__file__).with_name("xdp_pylvs.o")
MODES = {"auto": lib.PL_XDP_MODE_AUTO, "native": lib.PL_XDP_MODE_NATIVE, "skb": lib.PL_XDP_MODE_SKB}
MODE_NAMES = {lib.PL_XDP_MODE_NATIVE: "native", lib.PL_XDP_MODE_SKB: "skb"}
FRAMES = 4096  # per socket, 4 KiB each: 16 MiB of UMEM, a few ms of line rate
# A row holds what a copy-mode frame can (4 KiB less the kernel's 256-byte XDP headroom),
# so a device MTU up to ~3.8 KB is forwarded whole, not dropped as oversize.
STRIDE = lib.PL_XSK_FRAME
# the program's counter slots (csrc/bpf/xdp_pylvs.h PL_XDP_*)
XDP_COUNTERS = ("to_service", "from_server", "from_server_routed", "server_to_local", "passed",
                "server_fragments")
assert len(XDP_COUNTERS) == lib.PL_XSK_COUNTERS
_LOOP_KEYS = ("packets", "batches", "sent", "no_next_hop", "too_big", "gso", "send_errors", "rejected",
              "reject_send_errors", "routed", "route_errors", "frag_needed", "unpassed", "ttl_expired", "gro_frames",
              "gro_merged", "unpublished")  # fmt: skip
_XSK_KEYS = ("frames", "polls", "short_frames", "oversize", "bad_meta", "csum_completed", "fill_short")


def route_devices(addrs: Iterable[str]) -> list[str]:
    """The devices the routes to ``addrs`` leave by (a NAT real server's replies come in
    there).  An address without a route is skipped: nothing of it can arrive."""
    from pyroute2 import IPRoute

    out: list[str] = []
    with IPRoute() as ipr:
        for a in dict.fromkeys(addrs):
            try:
                oif = ipr.route("get", dst=a)[0].get_attr("RTA_OIF")
                out.append(ipr.get_links(oif)[0].get_attr("IFLA_IFNAME"))
            except Exception:  # noqa: BLE001, S112 - no route: nothing to capture
                continue
    return list(dict.fromkeys(out))


def clean_stale() -> list[str]:
    """Detach the programs a killed director left attached (an XDP program outlives the
    process that attached it) from every device of this namespace; the devices cleaned.
    Without this, a director killed with --fail-closed would leave its VIP traffic
    dropped, and the next start could not attach."""
    cleaned = []
    for ifindex, name in socket.if_nameindex():
        rc = lib.pl_xdp_clean_stale(ifindex)
        if rc < 0:
            raise OSError(-rc, f"AF_XDP: cannot detach the stale XDP program on {name}: {os.strerror(-rc)}")
        if rc:
            cleaned.append(name)
    return cleaned


def rx_queues(dev: str) -> int:
    """The device's receive queues (one socket each: the driver spreads flows over them)."""
    try:
        return max(1, sum(1 for q in os.listdir(f"/sys/class/net/{dev}/queues") if q.startswith("rx-")))
    except OSError:
        return 1


class XdpProgram:
    """The program on one device, its maps and counters."""

    def __init__(self, dev: str, *, mode: str = "auto", fail_open: bool = True, obj: Path = XDP_OBJECT) -> None:
        if mode not in MODES:
            raise ValueError(f"XDP mode {mode!r}: choose one of {', '.join(MODES)}")
        if not obj.is_file():
            raise OSError(f"the XDP program {obj} is missing: `make deps` builds it (clang, libbpf-dev)")
        self.dev = dev
        try:
            ifindex = socket.if_nametoindex(dev)
        except OSError as exc:
            raise OSError(f"AF_XDP: no device {dev!r} ({exc})") from None
        err = ffi.new("int *")
        opts = 0 if fail_open else lib.PL_XSK_OPT_FAIL_CLOSED
        self._x = lib.pl_xdp_attach(str(obj).encode(), ifindex, MODES[mode], opts, err)
        if self._x == ffi.NULL:
            self._x = None
            why = "it already has an XDP program" if err[0] in (17, 16) else os.strerror(err[0])  # EEXIST, EBUSY
            raise OSError(err[0], f"AF_XDP: cannot attach the XDP program to {dev} ({mode} mode): {why}")
        self.mode = MODE_NAMES[lib.pl_xdp_mode(self._x)]

    def set_keys(self, keys: XdpKeys) -> None:
        for which, rows in ((lib.PL_XDP_MAP_SERVICES, keys.services), (lib.PL_XDP_MAP_SERVERS, keys.servers)):
            n = len(rows)
            addr = ffi.new("uint32_t[]", [ip_int(a) for a, _, _ in rows] or [0])
            port = ffi.new("uint16_t[]", [p for _, p, _ in rows] or [0])
            proto = ffi.new("uint8_t[]", [k for _, _, k in rows] or [0])
            rc = lib.pl_xdp_set_keys(self._x, which, addr, port, proto, n)
            if rc < 0:
                raise OSError(-rc, f"AF_XDP on {self.dev}: cannot fill the program's map: {os.strerror(-rc)}")

    def counters(self) -> dict[str, int]:
        out = ffi.new("uint64_t[]", lib.PL_XSK_COUNTERS)
        if self._x is None or lib.pl_xdp_counters(self._x, out) < 0:
            return dict.fromkeys(XDP_COUNTERS, 0)
        return {k: int(out[i]) for i, k in enumerate(XDP_COUNTERS)}

    def close(self) -> None:
        if self._x is not None:
            lib.pl_xdp_detach(self._x)
            self._x = None


class XskWorker(CLoop):
    """One C loop over some of the sockets (``xs``, a cffi array of ``struct pl_xsk *``
    that the group owns, as it owns the sockets)."""

    def __init__(self, name: str, fwd: Forwarder, cfwd, xs, n: int, rows: int, busy_poll_us: int) -> None:
        super().__init__(name, fwd)
        self.arrays = BatchArrays(rows, STRIDE)
        self._xs = xs
        err = ffi.new("int *")
        self._started(lib.pl_xsk_loop_new(xs, n, fwd.gate, cfwd, self.arrays.c, 0, err), err)
        lib.pl_loop_set_spin(self._loop, busy_poll_us)

    def _stats_of(self, ls) -> dict[str, object]:
        xs = ffi.new("struct pl_xsk_stats *")
        lib.pl_loop_get_xsk_stats(self._loop, xs)
        return {**{k: int(getattr(ls, k)) for k in _LOOP_KEYS}, **{k: int(getattr(xs, k)) for k in _XSK_KEYS}}

    def _free_source(self) -> None:
        self._xs = None  # the group closes the sockets once every loop is freed


class AfXdpLoop(LoopGroup):
    """The program on ``devices``, a socket on each of their receive queues, served by
    ``workers`` C loops (see the module docstring).  Worker k takes receive queue q of
    every device where q % workers == k, so each queue's socket has one reader; all of
    them decide on one connection table behind the forwarder's gate, so it does not
    matter which queue the driver's hash puts either direction of a connection on.
    ``keys`` are set last: only then is anything redirected."""

    def __init__(self, devices: Iterable[str], fwd: Forwarder, keys: XdpKeys, *, mode: str = "auto",
                 fail_open: bool = True, rows: int = ROWS_DEFAULT, frames: int = FRAMES,
                 busy_poll_us: int = 0, workers: int = 1) -> None:  # fmt: skip
        super().__init__()
        devices = list(dict.fromkeys(devices))
        self.name = f"AF_XDP {','.join(devices)}"
        if not devices:
            raise ValueError("AF_XDP needs at least one device")
        self.programs: list[XdpProgram] = []
        self._socks: list = []
        self._final: dict[str, object] = {}
        cfwd = fwd.native()  # compiles or loads the cfunc before anything is attached
        try:
            queues = {dev: rx_queues(dev) for dev in devices}
            if workers < 1 or workers > max(queues.values()):
                raise OSError(f"AF_XDP with {workers} workers needs as many receive queues on some device; "
                              + ", ".join(f"{d} has {q}" for d, q in queues.items())
                              + f" (ethtool -L DEV combined {workers})")  # fmt: skip
            mine: list[list] = [[] for _ in range(workers)]
            for dev in devices:
                prog = XdpProgram(dev, mode=mode, fail_open=fail_open)
                self.programs.append(prog)
                if queues[dev] > lib.PL_XSK_QUEUES_MAX:
                    raise OSError(f"AF_XDP: {dev} has {queues[dev]} receive queues; pylvs serves at most "
                                  f"{lib.PL_XSK_QUEUES_MAX} (ethtool -L {dev} combined N)")
                for q in range(queues[dev]):
                    err = ffi.new("int *")
                    sock = lib.pl_xsk_open(prog._x, q, frames, err)
                    if sock == ffi.NULL:
                        raise OSError(err[0], f"AF_XDP: no socket on {dev} queue {q}: {os.strerror(err[0])}")
                    self._socks.append(sock)
                    mine[q % workers].append(sock)
            self._xs = [ffi.new("struct pl_xsk *[]", socks) for socks in mine]
            for k, xs in enumerate(self._xs):
                name = self.name if workers == 1 else f"{self.name} worker {k}"
                self.loops.append(XskWorker(name, fwd, cfwd, xs, len(mine[k]), rows, busy_poll_us))
            self.set_keys(keys)
        except BaseException:
            self.close()
            raise

    @property
    def devices(self) -> set[str]:
        return {p.dev for p in self.programs}

    @property
    def modes(self) -> dict[str, str]:
        return {p.dev: p.mode for p in self.programs}

    def set_keys(self, keys: XdpKeys) -> None:
        """What every device's program redirects from now on (a reload)."""
        for p in self.programs:
            p.set_keys(keys)

    def stats(self) -> dict[str, object]:
        if not self.programs:
            return dict(self._final)
        per = [loop.stats() for loop in self.loops]
        s = self.sum_stats(per)
        if len(per) > 1:
            s["workers"] = [{"packets": w["packets"], "batches": w["batches"]} for w in per]
        s["xdp"] = {p.dev: {"mode": p.mode, **p.counters()} for p in self.programs}
        return s

    def close(self) -> None:
        """Every loop, then the sockets (while their program still exists: the kernel
        takes a closed socket out of the program's map; until the program goes too,
        frames for it get the fail-open/closed fallback), then the programs."""
        if not self.programs and not self._socks:
            return
        final = self.stats() if self.loops else {}
        super().close()  # a loop that did not stop raises: its sockets are leaked, never freed under it
        for sock in self._socks:
            lib.pl_xsk_close(sock)
        self._socks = []
        for p in self.programs:
            p.close()
        self.programs = []
        self._final = final
