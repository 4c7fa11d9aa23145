"""The AF_PACKET receive of the C loop (csrc/pkt.c) without root: frames (virtio-net
header + Ethernet + IP, as a PACKET_VNET_HDR socket hands them over) written into a
datagram socketpair standing for the tap, read into batch rows by ``pl_pkt_recv``.  The
packet type a tap would report is PACKET_HOST here (a socketpair names no sender), so
what is sorted out is by ethertype and size.  The netns half is
tests/netns/test_io_afpacket.py."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
from golden import CLIENT, CPORT, VIP, VPORT, tcp, udp
from pylvs._native import ffi, lib
from scapy.layers.l2 import ARP

from pylvs.dataplane import rewrite as rw

ROWS, STRIDE = 8, 2048
VNET = struct.Struct("=BBHHHH")  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start/offset
NEEDS_CSUM, GSO_TCPV4 = lib.PL_VNET_F_NEEDS_CSUM, lib.PL_VNET_GSO_TCPV4
DST_MAC, SRC_MAC = "02:77:00:00:01:01", "02:77:00:00:01:33"


def _partial(pkt: bytes) -> bytes:
    """The packet as a local sender's CHECKSUM_PARTIAL leaves it: the pseudo-header sum
    (not complemented) in the TCP/UDP checksum field."""
    b = bytearray(pkt)
    ihl = (b[0] & 0x0F) * 4
    at = ihl + (16 if b[9] == 6 else 6)
    b[at:at + 2] = lib.pl_csum_pseudo(bytes(b), len(b) - ihl).to_bytes(2, "big")
    return bytes(b)


def _frame(ip: bytes, vnet: tuple = (0, 0, 0, 0, 0, 0), ethertype: int = 0x0800) -> bytes:
    eth = bytes.fromhex(DST_MAC.replace(":", "")) + bytes.fromhex(SRC_MAC.replace(":", ""))
    return VNET.pack(*vnet) + eth + ethertype.to_bytes(2, "big") + ip


class Tap:
    """A socketpair standing for the packet socket, and the batch rows it is read into."""

    def __init__(self, rows: int = ROWS, stride: int = STRIDE) -> None:
        self.tx, self.rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.setblocking(False)
        err = ffi.new("int *")
        self.p = lib.pl_pkt_new(self.rx.fileno(), rows, err)
        assert self.p != ffi.NULL, err[0]
        self.rows, self.stride = rows, stride
        self.buf = np.zeros((rows, stride), dtype=np.uint8)
        self.off = np.zeros(rows, dtype=np.uint32)
        self.lens = np.zeros(rows, dtype=np.uint32)
        self.marks = np.full(rows, 7, dtype=np.uint32)
        self.fr = ffi.new("struct pl_pkt_frame[]", rows)
        self.st = ffi.new("struct pl_pkt_stats *")

    def recv(self, poll_ms: int = 100) -> int:
        p = ffi.cast
        return lib.pl_pkt_recv(self.p, p("uint8_t *", self.buf.ctypes.data), self.rows, self.stride, rw.HEADROOM,
                               p("uint32_t *", self.off.ctypes.data), p("uint32_t *", self.lens.ctypes.data),
                               p("uint32_t *", self.marks.ctypes.data), self.fr, poll_ms, self.st)  # fmt: skip

    def packet(self, i: int) -> bytes:
        return self.buf[i, self.off[i]:self.off[i] + self.lens[i]].tobytes()

    def close(self) -> None:
        lib.pl_pkt_free(self.p)
        self.tx.close()
        self.rx.close()


@pytest.fixture
def tap():
    t = Tap()
    yield t
    t.close()


def test_nothing_queued_is_an_empty_batch(tap):
    assert tap.recv(poll_ms=1) == 0
    assert tap.st.polls == 1 and tap.st.frames == 0


def test_frames_land_in_rows_with_partial_checksums_completed(tap):
    full_tcp = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "PA", b"request" * 9))
    full_udp = bytes(udp(CLIENT, VIP, 5353, 53, b"q" * 13))
    tap.tx.send(_frame(_partial(full_tcp), (NEEDS_CSUM, 0, 0, 0, 34, 16)))
    tap.tx.send(_frame(_partial(full_udp), (NEEDS_CSUM, 0, 0, 0, 34, 6)))
    tap.tx.send(_frame(full_tcp))  # a complete one stays as it is
    assert tap.recv() == 3
    assert [tap.packet(i) for i in range(3)] == [full_tcp, full_udp, full_tcp]
    assert tap.off[:3].tolist() == [rw.HEADROOM] * 3 and tap.marks[:3].tolist() == [0, 0, 0]
    assert (tap.st.frames, tap.st.csum_completed, tap.st.gso_frames) == (3, 2, 0)
    f = tap.fr[0]
    assert bytes(f.dst) == bytes.fromhex(DST_MAC.replace(":", "")) and bytes(f.src) == bytes.fromhex(
        SRC_MAC.replace(":", ""))
    assert f.vnet.flags == 0  # nothing left to finish


def test_a_gso_super_packet_keeps_its_pseudo_header_sum(tap):
    big = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "A", b"x" * 1800))
    partial = _partial(big)
    tap.tx.send(_frame(partial, (NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16)))
    assert tap.recv() == 1
    assert tap.packet(0) == partial  # whoever sends it on finishes it
    assert (tap.st.gso_frames, tap.st.csum_completed) == (1, 0)
    assert (tap.fr[0].vnet.gso_type, tap.fr[0].vnet.gso_size, tap.fr[0].vnet.flags) == (GSO_TCPV4, 1448, NEEDS_CSUM)


def test_frames_not_to_forward_are_counted_and_leave_no_gap(tap):
    a = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S"))
    b = bytes(udp(CLIENT, VIP, 1, 2, b"b"))
    arp = bytes(ARP(pdst=VIP, psrc=CLIENT))
    tap.tx.send(_frame(a))
    tap.tx.send(_frame(arp, ethertype=0x0806))
    tap.tx.send(_frame(b"\x45" + b"\0" * 5))  # shorter than an IPv4 header
    tap.tx.send(_frame(b, ethertype=0x0800)[:4])  # shorter than the link headers
    tap.tx.send(_frame(bytes(udp(CLIENT, VIP, 1, 2, b"z" * STRIDE))))  # longer than a row
    tap.tx.send(_frame(b))
    assert tap.recv() == 2
    assert [tap.packet(0), tap.packet(1)] == [a, b]
    assert (tap.st.frames, tap.st.not_ipv4, tap.st.truncated) == (6, 1, 3)


def test_a_batch_is_at_most_rows_and_the_rest_waits(tap):
    pkts = [bytes(udp(CLIENT, VIP, 1000 + k, 53, b"d")) for k in range(ROWS + 3)]
    for p in pkts:
        tap.tx.send(_frame(p))
    assert tap.recv() == ROWS
    assert [tap.packet(i) for i in range(ROWS)] == pkts[:ROWS]
    assert tap.recv() == 3
    assert [tap.packet(i) for i in range(3)] == pkts[ROWS:]


def test_rows_too_small_for_the_link_headers_are_refused():
    t = Tap()
    try:
        p = ffi.cast
        rc = lib.pl_pkt_recv(t.p, p("uint8_t *", t.buf.ctypes.data), t.rows, t.stride, 10,
                             p("uint32_t *", t.off.ctypes.data), p("uint32_t *", t.lens.ctypes.data),
                             p("uint32_t *", t.marks.ctypes.data), t.fr, 0, t.st)  # fmt: skip
        assert rc == -22  # EINVAL: no room for the virtio-net and Ethernet headers
    finally:
        t.close()


@pytest.mark.parametrize("payload", [0, 1, 1448, 1449, 9000])
def test_tcp_checksum_gathered_from_a_header_and_a_payload_apart(payload: int):
    """tunnel_tso's checksum: header rebuilt in scratch, payload left in the row."""
    pkt = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "PA", bytes(range(256)) * (payload // 256) + b"e" * (payload % 256)))
    thl = (pkt[32] >> 4) * 4
    whole = lib.pl_csum_l4(pkt, len(pkt))
    gathered = lib.pl_csum_tcp_gather(pkt, pkt[20:20 + thl], thl, pkt[20 + thl:], len(pkt) - 20 - thl)
    assert gathered == whole == int.from_bytes(pkt[36:38], "big")

