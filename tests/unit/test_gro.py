"""csrc/gro.c: which frames of a batch leave together as one TCP super-packet.

The batches are built with scapy; each case states what the kernel's GRO
(tcp_gro_receive) would do with the same segments.
"""

from __future__ import annotations

import numpy as np
import pytest
from pylvs._native import ffi, lib
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from pylvs.dataplane import rewrite as rw

STRIDE = 2048
MSS = 1448
HOP_A, HOP_B = 1, 2
C1, C2, RS = "10.77.1.51", "10.77.1.52", "10.77.2.11"


def seg(src=C1, sport=40000, seq=1000, n=MSS, flags="A", ack=7, opts=(("Timestamp", (5, 9)),), ttl=64,
        bad_sum=False):  # fmt: skip
    p = IP(src=src, dst=RS, ttl=ttl, flags="DF") / TCP(sport=sport, dport=80, flags=flags, seq=seq, ack=ack,
                                                      options=list(opts)) / Raw(bytes([seq % 251]) * n)  # fmt: skip
    b = bytearray(bytes(p))
    if bad_sum:
        b[-1] ^= 0xFF
    return bytes(b)


def plan(packets, keys=None, want=None, mtu=1500):
    n = len(packets)
    buf = np.zeros(n * STRIDE, dtype=np.uint8)
    off = np.full(n, rw.HEADROOM, dtype=np.uint32)
    lens = np.array([len(p) for p in packets], dtype=np.uint32)
    for i, p in enumerate(packets):
        buf[i * STRIDE + rw.HEADROOM: i * STRIDE + rw.HEADROOM + len(p)] = np.frombuffer(p, dtype=np.uint8)
    want_a = np.array(want if want is not None else [1] * n, dtype=np.uint8)
    key_a = np.array(keys if keys is not None else [HOP_A] * n, dtype=np.uint64)
    mtu_a = np.full(n, mtu, dtype=np.uint16)
    group = np.zeros(n, dtype=np.int32)
    total = np.zeros(n, dtype=np.uint32)

    def p_(a, t):
        return ffi.cast(t, a.ctypes.data)

    merged = lib.pl_gro_plan(p_(buf, "uint8_t *"), STRIDE, p_(off, "uint32_t *"), p_(lens, "uint32_t *"),
                             p_(want_a, "uint8_t *"), p_(key_a, "uint64_t *"), p_(mtu_a, "uint16_t *"), n,
                             p_(group, "int32_t *"), p_(total, "uint32_t *"))  # fmt: skip
    return merged, group.tolist(), total.tolist()


def run(k, start=1000, **kw):
    return [seg(seq=start + i * MSS, **kw) for i in range(k)]


def test_consecutive_segments_ride_in_the_first_ones_frame():
    merged, group, total = plan(run(5))
    assert merged == 4 and group == [0] * 5 and total == [5 * MSS, 0, 0, 0, 0]


def test_two_flows_interleaved_each_keep_their_order():
    a, b = run(3), run(3, sport=40001)
    merged, group, total = plan([a[0], b[0], a[1], b[1], a[2], b[2]])
    assert merged == 4 and group == [0, 1, 0, 1, 0, 1] and total[:2] == [3 * MSS, 3 * MSS]


@pytest.mark.parametrize(("name", "third", "expect"), [
    ("a gap in the sequence", seg(seq=1000 + 3 * MSS), [0, 0, 2, 2]),
    ("another ACK number", seg(seq=1000 + 2 * MSS, ack=8), [0, 0, 2, 2]),
    ("another timestamp", seg(seq=1000 + 2 * MSS, opts=(("Timestamp", (6, 9)),)), [0, 0, 2, 2]),
    ("another TTL", seg(seq=1000 + 2 * MSS, ttl=63), [0, 0, 2, 2]),
    ("a damaged segment", seg(seq=1000 + 2 * MSS, bad_sum=True), [0, 0, 2, 3]),
    ("a FIN of the flow", seg(seq=1000 + 2 * MSS, flags="FA"), [0, 0, 2, 3]),
])  # fmt: skip
def test_what_ends_a_frame(name, third, expect):
    fourth = seg(seq=1000 + 3 * MSS) if "gap" not in name else seg(seq=1000 + 4 * MSS)
    if "ACK number" in name:
        fourth = seg(seq=1000 + 3 * MSS, ack=8)
    if "timestamp" in name:
        fourth = seg(seq=1000 + 3 * MSS, opts=(("Timestamp", (6, 9)),))
    if "TTL" in name:
        fourth = seg(seq=1000 + 3 * MSS, ttl=63)
    _, group, _ = plan(run(2) + [third, fourth])
    assert group == expect, name


def test_psh_and_a_short_segment_are_the_last_of_their_frame():
    pkts = run(2) + [seg(seq=1000 + 2 * MSS, flags="PA"), seg(seq=1000 + 3 * MSS)]
    assert plan(pkts)[1] == [0, 0, 0, 3]
    short = run(2) + [seg(seq=1000 + 2 * MSS, n=100), seg(seq=1000 + 2 * MSS + 100)]
    merged, group, total = plan(short)
    assert group == [0, 0, 0, 3] and total[0] == 2 * MSS + 100


def test_only_frames_to_the_same_next_hop_and_wanted_ones_merge():
    assert plan(run(3), keys=[HOP_A, HOP_B, HOP_A])[1] == [0, 1, 2]  # B ends A's frame: bytes stay in order
    assert plan(run(4), keys=[HOP_A, HOP_A, HOP_B, HOP_B])[1] == [0, 0, 2, 2]
    assert plan(run(3), want=[1, 0, 1])[1] == [0, 1, 2]
    assert plan(run(3), mtu=1400)[1] == [0, 1, 2]  # a segment over the out MTU is not a GSO segment


def test_never_more_than_64_kib_or_the_segment_limit():
    merged, group, total = plan(run(60))
    assert max(total) <= 65535 - 20 - 32 and group.count(0) == lib.PL_GRO_MAX_SEGS
    assert merged == 60 - len(set(group))
