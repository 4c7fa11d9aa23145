"""The classify pass (docs/netctl.md): which of a NAT real server's packets belong to one
of our connections.  Its kernel (``engine._classify_kernel``), from Python and as the C
loop's cfunc (``engine_cfunc.CLASSIFY``), must agree with the engine itself: a packet is
ours exactly when ``engine.process`` translates it as a reply (``nat_out``,
``icmp_nat_out``).  Then the C loop over a socketpair standing for the kernel: ours get
NF_REPEAT with the owned bit added to their mark, the rest NF_ACCEPT, nothing dropped.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from golden import CLIENT, CLIENT2, CPORT, DIRECTOR, NAT_CF, NOW, RIP1, RPORT, VIP, VPORT, ip2int, tcp, udp
from hypothesis import given, settings
from hypothesis import strategies as st
from pylvs._native import ffi, lib
from scapy.layers.inet import ICMP, IP, TCP
from scapy.packet import Raw
from test_io_nfq import NFQA_MARK, QUEUE, packet_msg, parse_verdicts

from pylvs.config import check_text
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import CLASSIFY, BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.netctl.plan import OWNED_MARK

OUTSIDE = "198.51.100.80"  # a host the real server reaches on its own (updates, DNS, active FTP)
NF_ACCEPT, NF_REPEAT = 1, 4  # linux/netfilter.h
ROWS, STRIDE = 16, 2048
OURS = ("nat_out", "icmp_nat_out")


def forwarder() -> Forwarder:
    r = check_text(NAT_CF)
    assert r.ok
    return Forwarder(tb.compile(r.config), capacity=256, tunnel_src=ip2int(DIRECTOR), clock=lambda: NOW)


def classify_c(fwd: Forwarder, arrays: BatchArrays, packets: list[bytes], now: float = NOW) -> list[bool]:
    n = arrays.load(packets)
    fn = ffi.cast("pl_engine_fn", CLASSIFY.address)
    assert fn(fwd.native().state, arrays.c.desc, n, now, 0, 0, 0, 0) == 0
    return [bool(v == en.V_NAT) for v in arrays.verdict[:n]]


def classify_py(fwd: Forwarder, packets: list[bytes], now: float = NOW) -> list[bool]:
    return en.classify(en.batch_from_packets(packets), now, fwd.ct).tolist()


def engine_says(fwd: Forwarder, packet: bytes, now: float = NOW) -> str:
    b = en.batch_from_packets([packet])
    v = en.process(b, now, fwd.tables, fwd.ct, fwd.counters, tunnel_src=ip2int(DIRECTOR))
    return en.REASON_NAMES[v.reason[0]]


def quote_error(src: str, inner) -> bytes:
    """An ICMP port unreachable from `src` quoting `inner` (its header and 8 bytes)."""
    return bytes(IP(src=src, dst=str(inner[IP].src)) / ICMP(type=3, code=3) / bytes(inner)[:28])


CLIENT_PORTS = st.sampled_from([CPORT, CPORT + 1, CPORT + 2])
RIP_SIDE = st.one_of(
    st.builds(lambda cp, fl: ("reply", tcp(RIP1, CLIENT, RPORT, cp, fl)), CLIENT_PORTS,
              st.sampled_from(["SA", "A", "R"])),
    st.builds(lambda sp: ("own", tcp(RIP1, OUTSIDE, sp, 80, "S")), st.sampled_from([20, RPORT, 40000])),
    st.builds(lambda cp: ("own_to_client", tcp(RIP1, CLIENT2, RPORT, cp, "SA")), CLIENT_PORTS),
    st.builds(lambda cp: ("udp", udp(RIP1, CLIENT, RPORT, cp)), CLIENT_PORTS),
    st.builds(lambda cp: ("icmp_error", quote_error(RIP1, tcp(CLIENT, RIP1, cp, RPORT, "A"))), CLIENT_PORTS),
    st.just(("echo", IP(src=RIP1, dst=OUTSIDE) / ICMP(type=8))),
    st.just(("fragment", IP(src=RIP1, dst=CLIENT, flags="MF") / TCP(sport=RPORT, dport=CPORT) / Raw(b"x" * 16))),
    st.binary(min_size=0, max_size=40).map(lambda b: ("garbage", b)),
)
OPEN = st.builds(lambda cp: ("open", tcp(CLIENT, VIP, cp, VPORT, "S")), CLIENT_PORTS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(OPEN, RIP_SIDE), min_size=1, max_size=12))
def test_classify_agrees_with_the_engine(steps) -> None:
    """Packet by packet: the client opens connections, the real server sends replies and
    its own traffic; classify (both entry points) says "ours" exactly when the engine then
    translates the packet as a reply."""
    fwd = forwarder()
    arrays = BatchArrays(ROWS, STRIDE)
    for kind, p in steps:
        p = bytes(p)
        if kind == "open":
            assert engine_says(fwd, p) == "nat_in"
            continue
        py, c = classify_py(fwd, [p]), classify_c(fwd, arrays, [p])
        assert py == c, kind
        assert py[0] == (engine_says(fwd, p) in OURS), kind


def test_a_batch_sorted_in_one_call() -> None:
    fwd = forwarder()
    assert engine_says(fwd, bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S"))) == "nat_in"
    packets = [bytes(p) for p in (
        tcp(RIP1, CLIENT, RPORT, CPORT, "SA"),  # the reply: ours
        tcp(RIP1, OUTSIDE, 20, 5000, "S"),  # active FTP data from port 20: the server's own
        udp(RIP1, "198.51.100.53", 33000, 53),  # its DNS query
        quote_error(RIP1, tcp(CLIENT, RIP1, CPORT, RPORT, "A")),  # about our connection: ours
        quote_error(RIP1, tcp(OUTSIDE, RIP1, 80, 20, "A")),  # about its own: not
    )]  # fmt: skip
    want = [True, False, False, True, False]
    assert classify_py(fwd, packets) == want
    assert classify_c(fwd, BatchArrays(ROWS, STRIDE), packets) == want


@pytest.mark.skipif(os.geteuid() != 0, reason="the C loop opens its send sockets (AF_PACKET, raw IP): root")
def test_the_c_loop_repeats_ours_with_the_owned_mark() -> None:
    fwd = forwarder()
    # the loop reads CLOCK_MONOTONIC: the connection is made on that clock
    assert engine_says(fwd, bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S")), time.monotonic()) == "nat_in"
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    err = ffi.new("int *")
    q = lib.pl_nfq_wrap_fd(ours.fileno(), QUEUE, ROWS, err)
    assert q != ffi.NULL
    arrays = BatchArrays(ROWS, STRIDE)
    loop = lib.pl_nfq_loop_new(q, fwd.gate, fwd.native(), arrays.c, lib.PL_LOOP_F_CLASSIFY, err)
    assert loop != ffi.NULL, os.strerror(err[0])
    try:
        kernel.send(packet_msg(21, bytes(tcp(RIP1, CLIENT, RPORT, CPORT, "SA")), mark=21))
        kernel.send(packet_msg(22, bytes(tcp(RIP1, OUTSIDE, 20, 5000, "S")), mark=21))
        kernel.send(packet_msg(23, bytes(tcp(RIP1, CLIENT, RPORT, CPORT, "A"))))
        assert lib.pl_loop_run(loop, 50, 5) == 0
        kernel.setblocking(False)
        got = []
        while True:
            try:
                got += parse_verdicts(kernel.recv(1 << 16), NFQA_MARK)
            except BlockingIOError:
                break
        # The mark the packet had survives beside the owned bit; its own traffic is accepted.
        assert got == [(21, NF_REPEAT, 21 | OWNED_MARK), (22, NF_ACCEPT, None), (23, NF_REPEAT, OWNED_MARK)]
        st_ = ffi.new("struct pl_loop_stats *")
        lib.pl_loop_get_stats(loop, st_)
        assert (st_.packets, st_.owned, st_.accepted, st_.dropped) == (3, 2, 1, 0)
        assert fwd.counters.reasons.sum() == 1  # the pass counts nothing: only the opening SYN
    finally:
        lib.pl_loop_free(loop)
        lib.pl_nfq_close(q)
        kernel.close()
        ours.close()
