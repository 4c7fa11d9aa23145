"""AF_PACKET adapter for direct routing and tunnelling: frames in, frames out, the whole
loop in C (``--io afpacket``).

    loop = AfPacketLoop("eth0", fwd, vips={vip_int})   # opens the tap
    loop.run(stop)                                      # until stop (a threading.Event) is set
    loop.stats()
    loop.close()
    q = NativeQueue(0, handle, on_dr=DrSender(resolve))  # DR for the Python NFQUEUE adapters

How the frames get here (ARCHITECTURE "Capturing traffic"): the director owns the VIP on
its public interface, so clients send VIP frames to its MAC.  A packet socket bound with
``ETH_P_ALL`` is a *tap*: the kernel hands it the frame in ``__netif_receive_skb_core``
before the netdev ingress hook, where netctl's rule drops the kernel's own copy of
service traffic.  (An ``ETH_P_IP`` socket is delivered *after* ingress, so it would see
nothing of what the rule drops: the tap protocol matters.)  With ``vips`` a classic BPF
filter (``vip_filter``) lets only IPv4 frames addressed to this host for a VIP reach the
socket; without it the C receive sorts every frame by its packet type and ethertype.

The loop (``csrc/loop.c`` over ``csrc/pkt.c``) runs with the GIL released, as for NFQUEUE
and AF_XDP: ``recvmmsg`` straight into the batch rows (the IP header at
``rewrite.HEADROOM``, which leaves the 20 bytes a tunnel header needs), the engine cfunc
under the forwarder's gate, then one ``sendmmsg`` per batch (a tunnelled packet cut
in C takes one more per 64 segments; a reject its own ``sendto``).  Per verdict (the kernel's
``ip_vs_dr_xmit`` / ``ip_vs_tunnel_xmit`` do the same with sk_buffs):

* ``V_DR``: the IP packet unchanged, in a frame to the dest row's next hop (the real
  server's MAC, compiled by the control plane: ``Forwarder.set_next_hops``).
* ``V_TUNNEL``: the engine prepended the outer IPv4 header; a frame toward the outer
  destination's next hop.
* ``V_NAT``: sent like DR.  Routing NAT is the NFQUEUE adapters' job (the director
  refuses NAT with this adapter); this path exists so a NAT verdict is never lost.
* ``V_PASS``: nothing more (``accepted``).  The kernel has its own copy of what the
  ingress rule lets through (a VIP's other ports, ping); what it drops is lost: a TCP
  segment of no connection on a service port, which the kernel would answer with RST
  (the reason counters say how many: ``not_syn``), as with AF_XDP.
* ``V_REJECT``: the engine turned the packet into the ICMP port unreachable for its
  sender (no real server), from the VIP as the kernel's ``ip_vs_leave`` answers; it goes
  back the way the frame came: to the MAC that sent it, from the one it was sent to, out
  of the device it came in by (``rejected``).
* ``V_DROP``: nothing; a dest row without a next hop: ``no_next_hop``, its row noted for
  the control thread to resolve.

Offloads (the part a veth or virtio lab makes visible).  The socket uses
``PACKET_VNET_HDR``: every frame comes with a ``struct virtio_net_hdr`` saying whether its
L4 checksum is still partial (``CHECKSUM_PARTIAL``: frames from a local stack on a veth
carry only the pseudo-header sum) and whether it is a GSO super-packet.  A partial
checksum is completed on receipt (``csum_completed``), except in a GSO super-packet
(``gso_frames``): that one leaves whole with a virtio-net header of its own, and the out
device (or the kernel, in software) cuts it and finishes its checksums, as the kernel's
forwarding would.  virtio-net has no IPIP GSO type, so a tunnelled TCP packet bigger
than the hop's MTU (a super-packet, or a full-size segment the outer header makes 20
bytes too big) is cut in C into segments that fit the tunnel (``tso_segments``); any
other too-big packet with DF gets ICMP "fragmentation needed" from the VIP
(``frag_needed``), as ``ip_vs_tunnel_xmit`` sends; the rest count ``too_big``.  Firewall
marks are 0: frames are taken before netfilter, so fwmark services need NFQUEUE.

``FrameSender`` and ``DrSender`` send frames from Python for the per-packet NFQUEUE
adapters (``nfq-native``, ``nfqueue``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable

import numpy as np

from pylvs._native import ffi, lib
from pylvs.addr import mac_bytes
from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.dataplane.io._cloop import ROWS_DEFAULT, CLoop

# --- Linux constants (include/uapi/linux/if_packet.h, if_ether.h, filter.h)
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23  # Linux 4.20
SO_ATTACH_FILTER = 26  # asm-generic/socket.h (neither is exported by the socket module)
SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_HLEN = 14
# sockaddr_ll.sll_pkttype
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
VNET_HDR_LEN = lib.PL_VNET_HLEN  # struct virtio_net_hdr
ZERO_VNET = bytes(VNET_HDR_LEN)
ETHERTYPE_IPV4 = ETH_P_IP.to_bytes(2, "big")
IPV4_MAX = 65535  # largest IPv4 total length: a GSO super-packet is at most this

# Row layout: [.. vnet hdr | Ethernet | IP packet at HEADROOM ..] (csrc/pkt.c reads it so)
IP_AT = rw.HEADROOM
VNET_AT = IP_AT - ETH_HLEN - VNET_HDR_LEN
assert VNET_AT >= 0
# Room for the biggest frame a packet socket can hand us (a GSO super-packet), rounded up
# to a cache line.
STRIDE_DEFAULT = -(-(IP_AT + IPV4_MAX) // 64) * 64
RCVBUF = 32 << 20  # bytes; bursts wait here while a batch is processed
SNAP_ALL = 0xFFFFFFFF  # BPF "accept the whole frame"
_LOOP_KEYS = ("packets", "batches", "accepted", "dropped", "sent", "no_next_hop", "too_big", "gso", "send_errors",
              "rejected", "reject_send_errors", "frag_needed", "tso_segments", "unpublished")  # fmt: skip
_PKT_KEYS = ("frames", "polls", "not_for_us", "not_ipv4", "truncated", "csum_completed", "gso_frames", "recv_errors")

# --- classic BPF (include/uapi/linux/filter.h, bpf_common.h) --------------------------
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_H = 0x00, 0x08
BPF_ABS, BPF_K = 0x20, 0x00
BPF_JEQ = 0x10
SKF_AD_OFF = -0x1000  # ancillary data "offsets"
SKF_AD_PKTTYPE = 4
MAX_FILTER_VIPS = 250  # jump offsets are 8 bits

# resolve(dest_row, dst_ip) -> (ifindex, src_mac, dst_mac) | None: the director's
# neighbour lookup (dest_row names the real server; src_mac is the out interface's own)
Resolve = Callable[[int, int], "tuple[int, bytes, bytes] | None"]


def vip_filter(vips: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """Classic BPF program (code, jt, jf, k) passing only frames addressed to this host
    (not our own transmissions, not other hosts' frames) that are IPv4 to one of ``vips``
    (host-order ints).  It runs on the frame from the Ethernet header on."""
    vips = sorted(set(int(v) for v in vips))
    if not vips:
        raise ValueError("vip_filter needs at least one VIP")
    if len(vips) > MAX_FILTER_VIPS:
        raise ValueError(f"{len(vips)} VIPs: at most {MAX_FILTER_VIPS} fit one BPF filter")
    k = len(vips)
    drop = 5 + k  # index of "ret #0"; accept is drop + 1
    prog = [
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PKTTYPE) & 0xFFFFFFFF),  # A = pkt_type
        (BPF_JMP | BPF_JEQ | BPF_K, 0, drop - 2, PACKET_HOST),  # ours only
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, 12),  # A = ethertype
        (BPF_JMP | BPF_JEQ | BPF_K, 0, drop - 4, ETH_P_IP),  # IPv4 only
        (BPF_LD | BPF_W | BPF_ABS, 0, 0, ETH_HLEN + 16),  # A = IPv4 destination
    ]
    for j, vip in enumerate(vips):  # instruction 5 + j: to accept, else the next test
        here = 5 + j
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, drop + 1 - (here + 1), drop - (here + 1) if j == k - 1 else 0, vip))
    prog.append((BPF_RET | BPF_K, 0, 0, 0))  # drop
    prog.append((BPF_RET | BPF_K, 0, 0, SNAP_ALL))  # accept the whole frame
    return prog


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER: struct sock_fprog { u16 len; struct sock_filter *filter; }."""
    insns = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(insns, len(insns))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)




def _read_sys(ifname: str, name: str) -> str:
    with open(f"/sys/class/net/{ifname}/{name}") as f:
        return f.read().strip()


class FrameSender:
    """Sends whole Ethernet frames on interfaces by index: one packet socket per out
    interface, bound to it (so ``send`` needs no address and no per-frame name lookup),
    with ``PACKET_VNET_HDR`` so a frame can carry checksum / GSO work for the kernel.

    ``send(ifindex, frame)`` sends a plain frame; ``send_vnet(ifindex, data)`` one that
    starts with a virtio_net_hdr; ``send_batch`` many.  Errors are returned, never raised
    (``errno`` or 0): a full queue or a downed link is a counted packet problem."""

    def __init__(self, *, qdisc_bypass: bool = False) -> None:
        self.qdisc_bypass = qdisc_bypass
        self._socks: dict[int, socket.socket] = {}
        self._mtu: dict[int, int] = {}
        self._mac: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def _sock(self, ifindex: int) -> socket.socket:
        s = self._socks.get(ifindex)
        if s is None:
            with self._lock:
                s = self._socks.get(ifindex)
                if s is None:
                    s = self._open(ifindex)
        return s

    def _open(self, ifindex: int) -> socket.socket:
        ifname = socket.if_indextoname(ifindex)
        # Protocol 0: a send-only socket, never queued any received frame.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            if self.qdisc_bypass:  # faster, but taps (tcpdump) on the out device miss the frames
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            s.bind((ifname, 0))
            self._mac[ifindex] = bytes(s.getsockname()[4])
            self._mtu[ifindex] = int(_read_sys(ifname, "mtu"))
        except OSError:
            s.close()
            raise
        self._socks[ifindex] = s
        return s

    def mtu(self, ifindex: int) -> int:
        self._sock(ifindex)
        return self._mtu[ifindex]

    def mac(self, ifindex: int) -> bytes:
        """The interface's own hardware address."""
        self._sock(ifindex)
        return self._mac[ifindex]

    def sender(self, ifindex: int) -> Callable:
        """The bound ``send`` of the interface's socket (data = virtio_net_hdr + frame);
        it raises OSError.  For callers that cache it per next hop."""
        return self._sock(ifindex).send

    def send_vnet(self, ifindex: int, data) -> int:
        """Send ``data`` = virtio_net_hdr + frame; 0 or the errno."""
        try:
            self._sock(ifindex).send(data)
        except OSError as exc:
            return exc.errno or errno.EIO
        return 0

    def send(self, ifindex: int, frame) -> int:
        """Send one Ethernet frame (bytes or memoryview, complete checksums); 0 or the errno."""
        try:
            self._sock(ifindex).sendmsg([ZERO_VNET, frame])
        except OSError as exc:
            return exc.errno or errno.EIO
        return 0

    def send_batch(self, frames: Iterable[tuple[int, object]]) -> tuple[int, int]:
        """Send (ifindex, frame) pairs; returns (sent, errors)."""
        sent = errors = 0
        for ifindex, frame in frames:
            if self.send(ifindex, frame):
                errors += 1
            else:
                sent += 1
        return sent, errors

    def close(self) -> None:
        with self._lock:
            for s in self._socks.values():
                s.close()
            self._socks.clear()

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DrSender:
    """``on_dr(batch, idx, dest_rows)`` for the NFQUEUE adapters: sends each V_DR packet of
    the batch as a frame to its real server's MAC (``resolve`` as ``Resolve`` above, called
    with the packet's destination, the VIP).  The Ethernet header is written into the
    row's headroom in front of the packet, so nothing is copied.  NFQUEUE packets have
    complete checksums unless the queue hands over partial ones (GSO queues: those
    packets need their checksum completed first); one bigger than the out MTU counts
    ``too_big``.  Counters in ``stats``: dr_sent, unresolved, send_errors, too_big."""

    def __init__(self, resolve: Resolve, sender: FrameSender | None = None) -> None:
        self.resolve = resolve
        self.sender = sender if sender is not None else FrameSender()
        self.stats = dict.fromkeys(("dr_sent", "unresolved", "send_errors", "too_big"), 0)

    def __call__(self, batch: en.Batch, idx: np.ndarray, dest_rows: np.ndarray) -> None:
        st = self.stats
        sender = self.sender
        for i, row in zip(idx.tolist(), dest_rows.tolist(), strict=True):
            off = int(batch.off[i])
            length = int(batch.lens[i])
            mv = memoryview(batch.buf[i])
            nh = self.resolve(row, int.from_bytes(mv[off + 16:off + 20], "big"))
            if nh is None:
                st["unresolved"] += 1
                continue
            ifindex, src_mac, dst_mac = nh
            if length > sender.mtu(ifindex):
                st["too_big"] += 1
                continue
            if off < ETH_HLEN:
                raise ValueError(f"row {i}: packet at {off}, no headroom for an Ethernet header")
            mv[off - ETH_HLEN:off] = mac_bytes(dst_mac) + mac_bytes(src_mac) + ETHERTYPE_IPV4
            if sender.send(ifindex, mv[off - ETH_HLEN:off + length]):
                st["send_errors"] += 1
            else:
                st["dr_sent"] += 1

    def close(self) -> None:
        self.sender.close()


def open_tap(ifname: str, vips: Iterable[int] | None, rcvbuf: int = RCVBUF) -> socket.socket:
    """The tap the C loop reads: an ``ETH_P_ALL`` packet socket on ``ifname`` with
    ``PACKET_VNET_HDR``, our own transmissions left out, and (with ``vips``) the BPF
    filter that lets only IPv4 frames to this host for a VIP through."""
    # Created with protocol 0 (receives nothing) so the filter is in place before
    # bind() with ETH_P_ALL starts the flow: no unfiltered frame slips in between.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        try:  # our own transmissions on this interface never reach us
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:  # older kernel: the C receive skips them by packet type
            pass
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # without CAP_NET_ADMIN: capped by rmem_max
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if vips is not None:
            attach_filter(s, vip_filter(vips))
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
    except OSError as exc:
        s.close()
        raise OSError(exc.errno, f"AF_PACKET socket on {ifname}: {exc.strerror}") from exc
    return s


class AfPacketLoop(CLoop):
    """Frames for the VIPs in on ``in_ifname``, forwarded by the C loop (see the module
    docstring).  ``vips``: the BPF filter's addresses (None: every frame is read and
    sorted in C)."""

    def __init__(self, in_ifname: str, fwd: Forwarder, *, vips: Iterable[int] | None = None,
                 rows: int = ROWS_DEFAULT, stride: int = STRIDE_DEFAULT, rcvbuf: int = RCVBUF) -> None:
        if rows < 1:
            raise ValueError(f"rows={rows}: at least 1")
        if stride < IP_AT + 20:
            raise ValueError(f"stride={stride} leaves no room for an IPv4 header after {IP_AT} bytes of headroom")
        super().__init__(f"AF_PACKET {in_ifname}", fwd)
        self.in_ifname = in_ifname
        self.arrays = BatchArrays(rows, stride)
        self._p = None
        cfwd = fwd.native()  # compiles or loads the cfunc before the socket takes frames
        self.sock = open_tap(in_ifname, vips, rcvbuf)
        try:
            err = ffi.new("int *")
            p = lib.pl_pkt_new(self.sock.fileno(), rows, err)
            if p == ffi.NULL:
                raise OSError(err[0], f"AF_PACKET {in_ifname}: {os.strerror(err[0])}")
            self._p = p
            self._started(lib.pl_pkt_loop_new(self._p, fwd.gate, cfwd, self.arrays.c, 0, err), err)
        except BaseException:
            self._free_source()
            raise

    def set_vips(self, vips: Iterable[int]) -> None:
        """The filter for these VIPs from now on (a reload; the kernel swaps it at once).
        No VIP: a filter that takes nothing."""
        vips = set(vips)
        attach_filter(self.sock, vip_filter(vips) if vips else [(BPF_RET | BPF_K, 0, 0, 0)])

    def _stats_of(self, ls) -> dict[str, object]:
        ps = ffi.new("struct pl_pkt_stats *")
        lib.pl_loop_get_pkt_stats(self._loop, ps)
        return {**{k: int(getattr(ls, k)) for k in _LOOP_KEYS}, **{k: int(getattr(ps, k)) for k in _PKT_KEYS}}

    def _free_source(self) -> None:
        if self._p is not None:
            lib.pl_pkt_free(self._p)
            self._p = None
        self.sock.close()
