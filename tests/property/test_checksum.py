"""The C checksum helpers against scapy's, on hypothesis-generated IPv4/TCP/UDP packets.

scapy computes every checksum itself when the field is left as None, so it is the
oracle for the full sums; for the incremental (RFC 1624) updates the oracle is
scapy's recomputation of the rewritten packet, as the NAT code will rewrite it.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from pylvs.dataplane import checksum

IPV4_DST_OFFSET = 16  # RFC 791
TCP_DPORT_OFFSET = 2
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6

addresses = st.integers(0, 2**32 - 1).map(lambda a: ".".join(str(b) for b in a.to_bytes(4, "big")))
ports = st.integers(0, 65535)
# Odd payload lengths exercise the zero-padded final byte of RFC 1071.
payloads = st.binary(min_size=0, max_size=301)
# IP options: NOPs then an end-of-list pad, so every IHL from 5 to 15 occurs.
ip_options = st.integers(0, 10).map(lambda words: b"\x01" * (words * 4))


@st.composite
def ip_headers(draw):
    return IP(
        src=draw(addresses),
        dst=draw(addresses),
        ttl=draw(st.integers(1, 255)),
        id=draw(st.integers(0, 65535)),
        tos=draw(st.integers(0, 255)),
        options=draw(ip_options),
    )


@st.composite
def tcp_packets(draw):
    tcp = TCP(
        sport=draw(ports),
        dport=draw(ports),
        seq=draw(st.integers(0, 2**32 - 1)),
        ack=draw(st.integers(0, 2**32 - 1)),
        flags=draw(st.integers(0, 0xFF)),
        window=draw(ports),
    )
    return bytes(draw(ip_headers()) / tcp / draw(payloads))


@st.composite
def udp_packets(draw):
    return bytes(draw(ip_headers()) / UDP(sport=draw(ports), dport=draw(ports)) / draw(payloads))


packets = st.one_of(tcp_packets(), udp_packets())


def _l4_offset(raw: bytes) -> int:
    return (raw[0] & 0x0F) * 4


def _l4_csum_offset(raw: bytes) -> int:
    return _l4_offset(raw) + (TCP_CSUM_OFFSET if raw[9] == 6 else UDP_CSUM_OFFSET)


def _field16(raw: bytes, offset: int) -> int:
    return struct.unpack_from("!H", raw, offset)[0]


@settings(max_examples=300)
@given(packets)
def test_full_checksums_equal_scapy(raw):
    assert checksum.ipv4_header_checksum(raw) == IP(raw).chksum
    assert checksum.l4_checksum(raw) == _field16(raw, _l4_csum_offset(raw))


@settings(max_examples=300)
@given(packets)
def test_fix_checksums_restores_scapy_packet(raw):
    broken = bytearray(raw)
    broken[10:12] = b"\xde\xad"
    offset = _l4_csum_offset(raw)
    if _field16(raw, offset) != 0:  # a UDP zero checksum means "none" and stays zero
        broken[offset : offset + 2] = b"\xbe\xef"
    checksum.fix_checksums(broken)
    assert bytes(broken) == raw


@settings(max_examples=300)
@given(packets, addresses, ports)
def test_incremental_nat_rewrite_equals_full_recompute(raw, new_dst, new_dport):
    """Rewrite destination address and port as NAT inbound does, updating sums incrementally."""
    pkt = bytearray(raw)
    l4 = _l4_offset(raw)
    is_udp = raw[9] == 17
    csum_at = _l4_csum_offset(raw)
    old_dst = struct.unpack_from("!I", raw, IPV4_DST_OFFSET)[0]
    new_dst_int = struct.unpack("!I", bytes(int(b) for b in new_dst.split(".")))[0]
    old_dport = _field16(raw, l4 + TCP_DPORT_OFFSET)

    struct.pack_into("!I", pkt, IPV4_DST_OFFSET, new_dst_int)
    struct.pack_into("!H", pkt, l4 + TCP_DPORT_OFFSET, new_dport)
    ip_csum = checksum.update32(_field16(raw, 10), old_dst, new_dst_int)
    struct.pack_into("!H", pkt, 10, ip_csum)
    l4_csum = _field16(raw, csum_at)
    if is_udp:
        l4_csum = checksum.update_udp32(l4_csum, old_dst, new_dst_int)
        l4_csum = checksum.update_udp16(l4_csum, old_dport, new_dport)
    else:
        l4_csum = checksum.update32(l4_csum, old_dst, new_dst_int)
        l4_csum = checksum.update16(l4_csum, old_dport, new_dport)
    struct.pack_into("!H", pkt, csum_at, l4_csum)

    expected = IP(raw)
    expected.dst = new_dst
    l4_layer = expected[UDP] if is_udp else expected[TCP]
    l4_layer.dport = new_dport
    del expected.chksum
    if not (is_udp and l4_layer.chksum == 0):  # no UDP checksum stays none
        del l4_layer.chksum
    assert bytes(pkt) == bytes(expected)


def _udp_packet_summing_to_zero(payload_prefix: bytes) -> bytes:
    """A UDP packet whose checksum computes to zero, so it must be sent as 0xffff.

    The last payload word is chosen to bring the one's-complement sum to 0xffff.
    """
    if len(payload_prefix) % 2:
        payload_prefix += b"\x00"
    base = IP(src="192.0.2.1", dst="198.51.100.7") / UDP(sport=4000, dport=53)
    probe = bytes(base / (payload_prefix + b"\x00\x00"))
    needed = _field16(probe, 20 + UDP_CSUM_OFFSET)  # ~sum with the last word zero
    return bytes(base / (payload_prefix + struct.pack("!H", needed)))


@given(st.binary(max_size=64))
def test_udp_checksum_of_zero_is_sent_as_ffff(prefix):
    raw = _udp_packet_summing_to_zero(prefix)
    assert _field16(raw, 20 + UDP_CSUM_OFFSET) == 0xFFFF  # scapy agrees with RFC 768
    assert checksum.l4_checksum(raw) == 0xFFFF


def test_incremental_update_reaching_zero_is_sent_as_ffff():
    raw = _udp_packet_summing_to_zero(b"abc")
    # Change the source port and back: the update lands on the 0x0000/0xffff boundary.
    sport_at = 20
    updated = checksum.update_udp16(0xFFFF, 4000, 4001)
    restored = checksum.update_udp16(updated, 4001, 4000)
    assert restored == _field16(raw, 20 + UDP_CSUM_OFFSET) == 0xFFFF
    assert _field16(raw, sport_at) == 4000


@given(ports, ports)
def test_udp_without_checksum_stays_without(old, new):
    assert checksum.update_udp16(0, old, new) == 0
    assert checksum.update_udp32(0, old << 16, new << 16) == 0


def test_udp_zero_checksum_is_left_alone_by_fix():
    raw = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2, chksum=0) / b"x"))
    checksum.fix_checksums(raw)
    assert _field16(raw, 20 + UDP_CSUM_OFFSET) == 0


def test_rfc1624_worked_example():
    # RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
    assert checksum.update16(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_truncated_packets_are_refused_not_read_past():
    with pytest.raises(ValueError):
        checksum.ipv4_header_checksum(b"\x45" * 10)
    with pytest.raises(ValueError):
        checksum.ipv4_header_checksum(b"\x4f" + b"\x00" * 30)  # IHL 60 > 31 bytes
    with pytest.raises(ValueError):
        checksum.fix_checksums(bytearray(b"\x45\x00\x01\x00" + b"\x00" * 16))  # total > buffer
    # An L4 header cut short gives 0 instead of reading past the buffer.
    short = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=6, len=30) / (b"\x00" * 10))
    assert checksum.l4_checksum(short) == 0
