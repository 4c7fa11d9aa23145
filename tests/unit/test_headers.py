"""Golden cases for the engine's header parser, packets built with scapy."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.packet import Raw

from pylvs.dataplane import headers as h

HEADROOM = 64
STRIDE = 256


def ip(a: str) -> int:
    return int.from_bytes(bytes(int(x) for x in a.split(".")), "big")


def parse(packets: list[bytes], lens: list[int] | None = None, offs: list[int] | None = None):
    n = len(packets)
    buf = np.zeros((n, STRIDE), dtype=np.uint8)
    off = np.full(n, HEADROOM, dtype=np.uint32) if offs is None else np.array(offs, dtype=np.uint32)
    ln = np.array([len(p) for p in packets] if lens is None else lens, dtype=np.uint32)
    for i, p in enumerate(packets):
        start = int(off[i])
        chunk = p[: max(0, STRIDE - start)]
        buf[i, start : start + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    fields = h.new_fields(n)
    counts = np.zeros(len(h.REASON_NAMES), dtype=np.int64)
    h.parse_batch(buf, off, ln, fields, counts)
    return fields, counts


CLIENT, VIP, RIP = "203.0.113.7", "192.168.1.100", "10.0.0.11"

CASES = [
    # (description, packet, expected fields subset)
    ("TCP SYN with options", IP(src=CLIENT, dst=VIP) / TCP(sport=51234, dport=80, flags="S", options=[("MSS", 1460)]),
     {h.F_REASON: h.R_OK, h.F_PROTO: 6, h.F_SADDR: ip(CLIENT), h.F_DADDR: ip(VIP), h.F_SPORT: 51234,
      h.F_DPORT: 80, h.F_TCP_FLAGS: 0x02, h.F_IHL: 20, h.F_FRAG: h.FRAG_NONE, h.F_ICMP_TYPE: -1}),
    ("UDP with IP options", IP(src=CLIENT, dst=VIP, options=b"\x01" * 8) / UDP(sport=33000, dport=53) / b"q",
     {h.F_REASON: h.R_OK, h.F_PROTO: 17, h.F_SPORT: 33000, h.F_DPORT: 53, h.F_IHL: 28, h.F_TCP_FLAGS: -1}),
    ("ICMP echo", IP(src=CLIENT, dst=VIP) / ICMP(type=8, code=0),
     {h.F_REASON: h.R_OK, h.F_PROTO: 1, h.F_ICMP_TYPE: 8, h.F_ICMP_CODE: 0, h.F_IN_PROTO: -1, h.F_SPORT: 0}),
    ("ICMP port unreachable from a real server quoting the client's UDP packet",
     IP(src=RIP, dst=CLIENT) / ICMP(type=3, code=3) / IPerror(src=CLIENT, dst=RIP) / UDPerror(sport=33000, dport=53),
     {h.F_REASON: h.R_OK, h.F_ICMP_TYPE: 3, h.F_ICMP_CODE: 3, h.F_IN_PROTO: 17, h.F_IN_SADDR: ip(CLIENT),
      h.F_IN_DADDR: ip(RIP), h.F_IN_SPORT: 33000, h.F_IN_DPORT: 53}),
    ("ICMP error quoting fewer than 8 bytes after the IP header: no key",
     IP(src=RIP, dst=CLIENT) / ICMP(type=3, code=3) / Raw(bytes(IP(src=CLIENT, dst=RIP, proto=17))[:20] + b"\x00" * 4),
     {h.F_REASON: h.R_OK, h.F_ICMP_TYPE: 3, h.F_IN_PROTO: -1}),
    ("first fragment keeps its ports", IP(src=CLIENT, dst=VIP, flags="MF") / UDP(sport=1, dport=53) / (b"x" * 40),
     {h.F_REASON: h.R_OK, h.F_FRAG: h.FRAG_FIRST, h.F_DPORT: 53}),
    ("later fragment has no ports", IP(src=CLIENT, dst=VIP, frag=3, proto=17) / (b"x" * 40),
     {h.F_REASON: h.R_FRAGMENT, h.F_FRAG: h.FRAG_LATER, h.F_SPORT: -1, h.F_SADDR: ip(CLIENT)}),
    ("GRE is not for a virtual service", IP(src=CLIENT, dst=VIP, proto=47) / (b"x" * 8),
     {h.F_REASON: h.R_OTHER_PROTO, h.F_PROTO: 47}),
    ("TCP header cut short", IP(src=CLIENT, dst=VIP, proto=6) / (b"x" * 12), {h.F_REASON: h.R_L4_TRUNCATED}),
    ("UDP header cut short", IP(src=CLIENT, dst=VIP, proto=17) / (b"x" * 7), {h.F_REASON: h.R_L4_TRUNCATED}),
    ("IPv6 version nibble", b"\x60" + b"\x00" * 39, {h.F_REASON: h.R_NOT_IPV4}),
    ("IHL of 4 words", b"\x44" + bytes(IP(src=CLIENT, dst=VIP) / UDP())[1:], {h.F_REASON: h.R_BAD_IHL}),
    ("shorter than an IPv4 header", bytes(IP())[:19], {h.F_REASON: h.R_TRUNCATED}),
]


@pytest.mark.parametrize("description,packet,expected", CASES, ids=[c[0] for c in CASES])
def test_golden(description, packet, expected):
    fields, counts = parse([bytes(packet)])
    got = {k: int(fields[0, k]) for k in expected}
    assert got == expected
    assert counts[expected[h.F_REASON]] == 1 and counts.sum() == 1


def test_total_length_beyond_the_bytes_is_truncated_and_padding_is_ignored():
    pkt = bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=2) / b"abcd")
    fields, _ = parse([pkt, pkt + b"\x00" * 6], lens=[len(pkt) - 1, len(pkt) + 6])
    assert fields[0, h.F_REASON] == h.R_TRUNCATED
    assert fields[1, h.F_REASON] == h.R_OK and fields[1, h.F_TOTAL] == len(pkt)


def test_offsets_and_lengths_past_the_row_are_clipped_not_read():
    pkt = bytes(IP(src=CLIENT, dst=VIP) / TCP())
    fields, counts = parse([pkt, pkt], lens=[4000, 40], offs=[HEADROOM, STRIDE + 10])
    assert fields[0, h.F_REASON] == h.R_OK  # len says 4000, the row holds the packet
    assert fields[1, h.F_REASON] == h.R_TRUNCATED
    assert counts.sum() == 2


def test_programming_errors_raise():
    buf = np.zeros((2, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="new_fields"):
        h.parse_batch(buf, np.zeros(2, np.uint32), np.zeros(2, np.uint32), np.zeros((2, 3), np.int64),
                      np.zeros(8, np.int64))
    with pytest.raises(ValueError, match="uint8"):
        h.parse_batch(buf.astype(np.int16), np.zeros(2, np.uint32), np.zeros(2, np.uint32), h.new_fields(2),
                      np.zeros(8, np.int64))
