"""Golden cases for the batch packet rewrite (csrc/rewrite.c via pylvs.dataplane.rewrite).

Each case gives an input packet, an op, the expected output packet and the expected
result code.  Inputs and expectations are both built with scapy from field values,
with every checksum computed by scapy, so the C code's incremental updates are checked
byte for byte against an independent full computation.  Error cases expect the packet
(and its row, offset and length) untouched.

Addresses follow reference section 8: a client talks to VIP:vport on the director,
which forwards to a real server RIP:rport.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, fragment
from scapy.packet import Raw

from pylvs.dataplane import rewrite as rw

CLIENT = "203.0.113.7"
VIP = "192.0.2.10"
RIP = "10.0.0.2"
DIRECTOR = "10.0.0.1"  # the director's address towards the real servers (tunnel source)
ROUTER = "198.51.100.1"  # a router on the client's side that sends an ICMP error
CPORT, VPORT, RPORT = 40000, 80, 8080
UDP_CPORT, UDP_VPORT, UDP_RPORT = 40001, 53, 5353

STRIDE = 2048
CANARY = 0xA5


def ip2int(addr: str) -> int:
    return struct.unpack("!I", bytes(int(b) for b in addr.split(".")))[0]


def op(kind: int, addr: str = "0.0.0.0", port: int = 0, addr2: str = "0.0.0.0", id: int = 0, flags: int = 0):
    rec = np.zeros((), rw.OP_DTYPE)
    rec["kind"], rec["flags"], rec["port"], rec["id"] = kind, flags, port, id
    rec["addr"], rec["addr2"] = ip2int(addr), ip2int(addr2)
    return rec


def nat_in(addr: str = RIP, port: int = RPORT):
    return op(rw.OP_NAT_IN, addr, port)


def nat_out(addr: str = VIP, port: int = VPORT):
    return op(rw.OP_NAT_OUT, addr, port)


@dataclass
class Case:
    desc: str
    packet: bytes
    op: np.ndarray  # a 0-d OP_DTYPE record
    expected: bytes | None  # None: untouched
    code: int = rw.RW_OK
    offset: int = rw.HEADROOM
    length: int | None = None  # bytes handed over, when not len(packet)
    extra: bytes = b""  # bytes in the row after the packet (link padding)
    new_offset: int | None = None  # where the packet starts afterwards, when it moves
    fits: bool = True  # False: the packet is meant to overrun its row (the stride is not grown for it)


# --- packets ---------------------------------------------------------------------
PAYLOAD_ODD = b"GET / HTTP/1.0\r\nHost: example\r\n\r\n!!"  # 35 bytes
assert len(PAYLOAD_ODD) % 2 == 1
DNS_QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
RR_ROUTERS = ["192.0.2.99", "0.0.0.0"]  # one address recorded, one slot free
TCP_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (12345, 0)), ("NOP", None), ("WScale", 7)]


def client_tcp(dst: str = VIP, dport: int = VPORT, payload: bytes = b"", **ip) -> IP:
    seg = TCP(sport=CPORT, dport=dport, flags="S" if not payload else "PA", seq=1000, ack=0 if not payload else 5000,
              window=64240, options=TCP_OPTS if not payload else [])  # fmt: skip
    return IP(src=CLIENT, dst=dst, id=0x4242, ttl=61, **ip) / seg / payload


def server_tcp(src: str = RIP, sport: int = RPORT, payload: bytes = b"", **ip) -> IP:
    seg = TCP(sport=sport, dport=CPORT, flags="SA" if not payload else "PA", seq=7000, ack=1001, window=65160)
    return IP(src=src, dst=CLIENT, id=0x1111, ttl=64, **ip) / seg / payload


def client_udp(dst: str = VIP, dport: int = UDP_VPORT, chksum: int | None = None, **ip) -> IP:
    udp = UDP(sport=UDP_CPORT, dport=dport, chksum=chksum)
    return IP(src=CLIENT, dst=dst, id=0x5151, ttl=60, **ip) / udp / DNS_QUERY


def server_udp(src: str = RIP, sport: int = UDP_RPORT, **ip) -> IP:
    return IP(src=src, dst=CLIENT, id=0x6161, ttl=64, **ip) / UDP(sport=sport, dport=UDP_CPORT) / b"\x12\x34\x81\x80"


def icmp_error(src: str, dst: str, quoted: bytes, type: int = 3, code: int = 3, **icmp) -> bytes:
    return bytes(IP(src=src, dst=dst, id=0x7777, ttl=64) / ICMP(type=type, code=code, **icmp) / Raw(quoted))


def with_icmp_checksum(raw: bytes, value: int) -> bytes:
    ihl = (raw[0] & 0x0F) * 4
    return raw[: ihl + 2] + struct.pack("!H", value) + raw[ihl + 4 :]


# The client's packets as sent (to VIP:vport) and as the real server receives them.
UDP_TO_VIP = bytes(client_udp())
UDP_TO_RIP = bytes(client_udp(dst=RIP, dport=UDP_RPORT))
TCP_TO_VIP = bytes(client_tcp(payload=PAYLOAD_ODD))
TCP_TO_RIP = bytes(client_tcp(dst=RIP, dport=RPORT, payload=PAYLOAD_ODD))
# The real server's reply as it sends it and as the client receives it.
TCP_FROM_RIP = bytes(server_tcp(payload=b"HTTP/1.0 200 OK\r\n\r\n"))
TCP_FROM_VIP = bytes(server_tcp(src=VIP, sport=VPORT, payload=b"HTTP/1.0 200 OK\r\n\r\n"))
UDP_FROM_RIP = bytes(server_udp())
UDP_FROM_VIP = bytes(server_udp(src=VIP, sport=UDP_VPORT))
# One TCP datagram split into fragments by scapy (the first holds the TCP header).
FRAGS_TO_VIP = fragment(client_tcp(payload=PAYLOAD_ODD * 4), fragsize=64)
FRAGS_TO_RIP = fragment(client_tcp(dst=RIP, dport=RPORT, payload=PAYLOAD_ODD * 4), fragsize=64)
assert len(FRAGS_TO_VIP) > 2 and FRAGS_TO_VIP[0].flags.MF and FRAGS_TO_VIP[1].frag > 0


def udp_summing_to_zero_at_rip() -> tuple[bytes, bytes]:
    """A client UDP packet whose checksum, once NAT'd to RIP:rport, computes to 0 (sent as 0xffff).

    The last payload word is chosen so that the rewritten packet's sum is 0xffff.
    """

    def build(dst: str, dport: int, payload: bytes) -> bytes:
        return bytes(IP(src=CLIENT, dst=dst, id=3) / UDP(sport=UDP_CPORT, dport=dport) / Raw(payload))

    needed = struct.unpack_from("!H", build(RIP, UDP_RPORT, b"zero-sum\x00\x00"), 26)[0]  # ~sum, last word 0
    payload = b"zero-sum" + struct.pack("!H", needed)
    at_rip = build(RIP, UDP_RPORT, payload)
    assert at_rip[26:28] == b"\xff\xff"
    return build(VIP, UDP_VPORT, payload), at_rip


UDP_ZERO_SUM_TO_VIP, UDP_ZERO_SUM_TO_RIP = udp_summing_to_zero_at_rip()


def tunnel_of(inner: bytes, df: bool, id: int = 0x2345) -> bytes:
    tos, ttl = inner[1], inner[8]
    return bytes(IP(src=DIRECTOR, dst=RIP, proto=4, id=id, tos=tos, ttl=ttl, flags="DF" if df else 0) / Raw(inner))


TUNNEL_TCP_DF = bytes(client_tcp(flags="DF", tos=0x28))
TUNNEL_UDP_DF = bytes(client_udp(flags="DF", tos=0x10))
TUNNEL_OPTS = bytes(client_tcp(flags="DF", options=[IPOption_RR(routers=["192.0.2.99"])]))

TOO_BIG_INNER = bytes(IP(src=CLIENT, dst=VIP, proto=17) / UDP(sport=1, dport=2) / (b"\x00" * (65535 - 28 - 19)))


def raw_ip(first: int = 0x45, total: int | None = None, body: bytes = b"\x00" * 20, proto: int = 6) -> bytes:
    hdr = bytearray(bytes(IP(src=CLIENT, dst=VIP, proto=proto) / Raw(body)))
    hdr[0] = first
    if total is not None:
        hdr[2:4] = struct.pack("!H", total)
    return bytes(hdr)


CASES = [
    # --- NAT inbound: client -> VIP:vport becomes client -> RIP:rport -------------
    Case("NAT in TCP SYN with options", bytes(client_tcp()), nat_in(), bytes(client_tcp(dst=RIP, dport=RPORT))),
    Case("NAT in TCP with odd-length payload", TCP_TO_VIP, nat_in(), TCP_TO_RIP),
    Case("NAT in UDP", UDP_TO_VIP, op(rw.OP_NAT_IN, RIP, UDP_RPORT), UDP_TO_RIP),
    Case("NAT in UDP without checksum (0 stays 0)", bytes(client_udp(chksum=0)), op(rw.OP_NAT_IN, RIP, UDP_RPORT),
         bytes(client_udp(dst=RIP, dport=UDP_RPORT, chksum=0))),
    Case("NAT in UDP whose new checksum computes to 0: sent as 0xffff (RFC 768)", UDP_ZERO_SUM_TO_VIP,
         op(rw.OP_NAT_IN, RIP, UDP_RPORT), UDP_ZERO_SUM_TO_RIP),
    Case("NAT in TCP with a record-route IP option (IHL 7)",
         bytes(client_tcp(payload=b"abc", options=[IPOption_RR(routers=RR_ROUTERS)])), nat_in(),
         bytes(client_tcp(dst=RIP, dport=RPORT, payload=b"abc", options=[IPOption_RR(routers=RR_ROUTERS)]))),
    Case("NAT in TCP with trailing link padding (length becomes total length)", TCP_TO_VIP, nat_in(), TCP_TO_RIP,
         extra=b"\x00" * 6, length=len(TCP_TO_VIP) + 6),
    Case("NAT in TCP without a port change (rport = vport)", TCP_TO_VIP, nat_in(port=VPORT),
         bytes(client_tcp(dst=RIP, dport=VPORT, payload=PAYLOAD_ODD))),
    Case("NAT in first fragment (MF, offset 0): TCP header updated incrementally",
         bytes(FRAGS_TO_VIP[0]), nat_in(), bytes(FRAGS_TO_RIP[0])),
    Case("NAT in non-first fragment: only the IP header changes",
         bytes(FRAGS_TO_VIP[1]), nat_in(), bytes(FRAGS_TO_RIP[1])),
    Case("NAT in last fragment", bytes(FRAGS_TO_VIP[-1]), nat_in(), bytes(FRAGS_TO_RIP[-1])),
    # --- NAT outbound: RIP:rport -> client becomes VIP:vport -> client ------------
    Case("NAT out TCP SYN-ACK", bytes(server_tcp()), nat_out(), bytes(server_tcp(src=VIP, sport=VPORT))),
    Case("NAT out TCP with payload", TCP_FROM_RIP, nat_out(), TCP_FROM_VIP),
    Case("NAT out UDP", UDP_FROM_RIP, op(rw.OP_NAT_OUT, VIP, UDP_VPORT), UDP_FROM_VIP),
    Case("NAT out UDP with IHL 15 (40 bytes of NOP options)", bytes(server_udp(options=b"\x01" * 40)),
         op(rw.OP_NAT_OUT, VIP, UDP_VPORT), bytes(server_udp(src=VIP, sport=UDP_VPORT, options=b"\x01" * 40))),
    # --- ICMP errors about NAT connections -------------------------------------------
    Case("ICMP port unreachable from the RS about a UDP query, OUT: client sees its own packet to VIP:vport",
         icmp_error(RIP, CLIENT, UDP_TO_RIP), op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT),
         icmp_error(VIP, CLIENT, UDP_TO_VIP)),
    Case("ICMP OUT quoting only the first 8 bytes of UDP (RFC 792 minimum)",
         icmp_error(RIP, CLIENT, UDP_TO_RIP[:28]), op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT),
         icmp_error(VIP, CLIENT, UDP_TO_VIP[:28])),
    Case("ICMP OUT about TCP, 8 bytes quoted (checksum not quoted, ports and addresses still mapped)",
         icmp_error(RIP, CLIENT, TCP_TO_RIP[:28], type=11, code=0), op(rw.OP_ICMP_NAT_OUT, VIP, VPORT),
         icmp_error(VIP, CLIENT, TCP_TO_VIP[:28], type=11, code=0)),
    Case("ICMP OUT about TCP, whole packet quoted (quoted TCP checksum updated)",
         icmp_error(RIP, CLIENT, TCP_TO_RIP, type=4, code=0), op(rw.OP_ICMP_NAT_OUT, VIP, VPORT),
         icmp_error(VIP, CLIENT, TCP_TO_VIP, type=4, code=0)),
    Case("ICMP OUT with KEEP_QUOTED_CSUM leaves the quoted UDP checksum as ip_vs_nat_icmp does",
         icmp_error(RIP, CLIENT, UDP_TO_RIP), op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT, flags=rw.FLAG_KEEP_QUOTED_CSUM),
         icmp_error(VIP, CLIENT, bytes(client_udp(chksum=UDP(UDP_TO_RIP[20:]).chksum)))),
    Case("ICMP frag-needed from a client-side router about a reply, IN: RS sees its own reply quoted",
         icmp_error(ROUTER, VIP, TCP_FROM_VIP, code=4, nexthopmtu=1400), op(rw.OP_ICMP_NAT_IN, RIP, RPORT),
         icmp_error(ROUTER, RIP, TCP_FROM_RIP, code=4, nexthopmtu=1400)),
    Case("ICMP time exceeded IN about a UDP reply, 8 bytes quoted",
         icmp_error(ROUTER, VIP, UDP_FROM_VIP[:28], type=11), op(rw.OP_ICMP_NAT_IN, RIP, UDP_RPORT),
         icmp_error(ROUTER, RIP, UDP_FROM_RIP[:28], type=11)),
    Case("ICMP IN with IP options on both the outer and the quoted header",
         bytes(IP(src=ROUTER, dst=VIP, id=9, options=b"\x01" * 8) / ICMP(type=3, code=1)
               / Raw(bytes(server_tcp(src=VIP, sport=VPORT, options=b"\x01" * 4)))),
         op(rw.OP_ICMP_NAT_IN, RIP, RPORT),
         bytes(IP(src=ROUTER, dst=RIP, id=9, options=b"\x01" * 8) / ICMP(type=3, code=1)
               / Raw(bytes(server_tcp(options=b"\x01" * 4))))),
    # --- IPIP tunnel --------------------------------------------------------------------
    Case("tunnel TCP, DF copied (pmtu_disc)", TUNNEL_TCP_DF,
         op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345, flags=rw.FLAG_COPY_DF), tunnel_of(TUNNEL_TCP_DF, df=True),
         new_offset=rw.HEADROOM - 20),
    Case("tunnel UDP, DF not copied", TUNNEL_UDP_DF, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345),
         tunnel_of(TUNNEL_UDP_DF, df=False), new_offset=rw.HEADROOM - 20),
    Case("tunnel with the DF flag but an inner packet without DF", UDP_TO_VIP,
         op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=7, flags=rw.FLAG_COPY_DF), tunnel_of(UDP_TO_VIP, df=False, id=7),
         new_offset=rw.HEADROOM - 20),
    Case("tunnel of an inner packet with IP options", TUNNEL_OPTS,
         op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345, flags=rw.FLAG_COPY_DF), tunnel_of(TUNNEL_OPTS, df=True),
         new_offset=rw.HEADROOM - 20),
    Case("tunnel of a non-first fragment (inner untouched)", bytes(FRAGS_TO_VIP[1]),
         op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345), tunnel_of(bytes(FRAGS_TO_VIP[1]), df=False),
         new_offset=rw.HEADROOM - 20),
    Case("tunnel with exactly 20 bytes of headroom", UDP_TO_VIP, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345),
         tunnel_of(UDP_TO_VIP, df=False), offset=20, new_offset=0),
    # --- no op --------------------------------------------------------------------------
    Case("NONE leaves the packet untouched", TCP_TO_VIP, op(rw.OP_NONE), None),
    Case("NONE on garbage is fine too", b"\xff" * 7, op(rw.OP_NONE), None),
    # --- malformed packets and impossible ops: untouched, with a result code ------------
    Case("unknown op kind", TCP_TO_VIP, op(rw.OP_COUNT, RIP, RPORT), None, rw.RW_BAD_OP),
    Case("op kind 255", TCP_TO_VIP, op(255, RIP, RPORT), None, rw.RW_BAD_OP),
    Case("truncated: 10 bytes", TCP_TO_VIP[:10], nat_in(), None, rw.RW_TRUNCATED),
    Case("truncated: empty", b"", nat_in(), None, rw.RW_TRUNCATED),
    Case("truncated: total length > bytes present", TCP_TO_VIP[:-1], nat_in(), None, rw.RW_TRUNCATED),
    Case("total length 200 in a 40-byte packet", raw_ip(total=200), nat_in(), None, rw.RW_TRUNCATED),
    Case("bad version (6)", raw_ip(first=0x65), nat_in(), None, rw.RW_BAD_HEADER),
    Case("IHL 4", raw_ip(first=0x44), nat_in(), None, rw.RW_BAD_HEADER),
    Case("IHL 15 (60 bytes) in a 40-byte datagram", raw_ip(first=0x4F), nat_in(), None, rw.RW_BAD_HEADER),
    Case("total length smaller than the header", raw_ip(total=19), nat_in(), None, rw.RW_BAD_HEADER),
    Case("bad header on a tunnel op", raw_ip(first=0x65), op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR), None,
         rw.RW_BAD_HEADER),
    Case("NAT op on an ICMP echo request", bytes(IP(src=CLIENT, dst=VIP) / ICMP() / b"ping"), nat_in(), None,
         rw.RW_NOT_L4),
    Case("NAT op on a non-first fragment of an ICMP datagram",
         bytes(fragment(IP(src=CLIENT, dst=VIP) / ICMP() / (b"p" * 100), fragsize=48)[1]), nat_in(), None,
         rw.RW_NOT_L4),
    Case("TCP header cut short (10 bytes)", raw_ip(body=b"\x00" * 10), nat_in(), None, rw.RW_L4_TRUNCATED),
    Case("UDP header cut short (7 bytes)", raw_ip(body=b"\x00" * 7, proto=17), nat_out(), None, rw.RW_L4_TRUNCATED),
    Case("first fragment with a 16-byte TCP header",
         bytes(IP(src=CLIENT, dst=VIP, proto=6, flags="MF") / (b"\x00" * 16)), nat_in(), None, rw.RW_L4_TRUNCATED),
    Case("no room for encapsulation (offset 19)", UDP_TO_VIP, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR), None,
         rw.RW_NO_ROOM, offset=19),
    Case("no room for encapsulation (offset 0)", UDP_TO_VIP, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR), None,
         rw.RW_NO_ROOM, offset=0),
    Case("encapsulated length would exceed 65535", TOO_BIG_INNER, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR), None,
         rw.RW_TOO_BIG),
    Case("packet does not fit its row (offset + length > stride)", UDP_TO_VIP, nat_in(), None, rw.RW_BAD_LAYOUT,
         offset=STRIDE - 30, fits=False),
    Case("ICMP op on a TCP packet", TCP_TO_VIP, op(rw.OP_ICMP_NAT_OUT, VIP, VPORT), None, rw.RW_NOT_ICMP_ERROR),
    Case("ICMP op on an echo reply", bytes(IP(src=RIP, dst=CLIENT) / ICMP(type=0) / UDP_TO_RIP),
         op(rw.OP_ICMP_NAT_OUT, VIP, VPORT), None, rw.RW_NOT_ICMP_ERROR),
    Case("ICMP op on a redirect (not translated by IPVS)", icmp_error(RIP, CLIENT, UDP_TO_RIP, type=5, code=1),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_NOT_ICMP_ERROR),
    Case("ICMP error cut inside its 8-byte header", raw_ip(body=b"\x03\x03\x00\x00", proto=1),
         op(rw.OP_ICMP_NAT_OUT, VIP, VPORT), None, rw.RW_L4_TRUNCATED),
    Case("ICMP error that is itself a fragment",
         bytes(fragment(IP(src=RIP, dst=CLIENT) / ICMP(type=3, code=3) / Raw(UDP_TO_RIP), fragsize=40)[0]),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_FRAGMENTED),
    Case("ICMP error quoting an ICMP echo", icmp_error(RIP, CLIENT, bytes(IP(src=CLIENT, dst=RIP) / ICMP())),
         op(rw.OP_ICMP_NAT_OUT, VIP, VPORT), None, rw.RW_NOT_L4),
    Case("ICMP error quoting a non-first fragment", icmp_error(RIP, CLIENT, bytes(FRAGS_TO_RIP[1])[:28]),
         op(rw.OP_ICMP_NAT_OUT, VIP, VPORT), None, rw.RW_NOT_L4),
    Case("ICMP error quoting 12 bytes of IP header", icmp_error(RIP, CLIENT, UDP_TO_RIP[:12]),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_BAD_EMBEDDED),
    Case("ICMP error quoting a header with only 2 bytes of ports", icmp_error(RIP, CLIENT, UDP_TO_RIP[:22]),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_BAD_EMBEDDED),
    Case("ICMP error quoting an IHL-6 header with 20 bytes",
         icmp_error(RIP, CLIENT, b"\x46" + UDP_TO_RIP[1:20]), op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None,
         rw.RW_BAD_EMBEDDED),
    Case("ICMP error quoting a version-6 header", icmp_error(RIP, CLIENT, b"\x65" + UDP_TO_RIP[1:]),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_BAD_EMBEDDED),
    Case("ICMP error with a wrong ICMP checksum", with_icmp_checksum(icmp_error(RIP, CLIENT, UDP_TO_RIP), 0x1234),
         op(rw.OP_ICMP_NAT_OUT, VIP, UDP_VPORT), None, rw.RW_BAD_CHECKSUM),
]


def _load(cases: list[Case]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    stride = max([STRIDE] + [c.offset + len(c.packet) + len(c.extra) for c in cases if c.fits])
    buf = np.full((len(cases), stride), CANARY, dtype=np.uint8)
    lens = np.zeros(len(cases), dtype=np.uint32)
    offsets = np.zeros(len(cases), dtype=np.uint32)
    ops = np.zeros(len(cases), dtype=rw.OP_DTYPE)
    for i, c in enumerate(cases):
        data = c.packet + c.extra
        end = min(c.offset + len(data), stride)
        buf[i, c.offset : end] = np.frombuffer(data[: end - c.offset], dtype=np.uint8)
        lens[i] = len(data) if c.length is None else c.length
        offsets[i] = c.offset
        ops[i] = c.op
    return buf, lens, offsets, ops


def _check(c: Case, before: np.ndarray, row: np.ndarray, result: int, off: int, length: int, len_in: int) -> None:
    name = rw.RESULT_NAMES[result]
    assert result == c.code, f"{c.desc}: got {name}, expected {rw.RESULT_NAMES[c.code]}"
    if c.expected is None:
        assert (off, length) == (c.offset, len_in), c.desc
        assert np.array_equal(row, before), f"{c.desc}: row changed"
        return
    new_offset = c.offset if c.new_offset is None else c.new_offset
    assert (off, length) == (new_offset, len(c.expected)), c.desc
    got = bytes(row[off : off + length])
    assert got == c.expected, f"{c.desc}:\n got      {got.hex()}\n expected {c.expected.hex()}"
    # Everything outside the rewritten packet is as it was (padding, canary, headroom).
    outside = np.ones(row.shape[0], dtype=bool)
    outside[off : off + length] = False
    assert np.array_equal(row[outside], before[outside]), f"{c.desc}: bytes outside the packet changed"


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_case(case: Case) -> None:
    buf, lens, offsets, ops = _load([case])
    before = buf.copy()
    len_in = int(lens[0])
    results = rw.apply(buf, lens, ops, offsets)
    _check(case, before[0], buf[0], int(results[0]), int(offsets[0]), int(lens[0]), len_in)


def test_all_cases_in_one_batch() -> None:
    """The same table as one batch: one C call, rows independent of their neighbours."""
    cases = [c for c in CASES if len(c.packet) < 4096]
    buf, lens, offsets, ops = _load(cases)
    before, lens_in = buf.copy(), lens.copy()
    results = rw.apply(buf, lens, ops, offsets)
    for i, c in enumerate(cases):
        _check(c, before[i], buf[i], int(results[i]), int(offsets[i]), int(lens[i]), int(lens_in[i]))


def test_batch_call_counts_rewritten_packets() -> None:
    cases = [c for c in CASES if len(c.packet) < 4096]
    buf, lens, offsets, ops = _load(cases)
    results = np.empty(len(cases), dtype=np.uint8)
    done = rw.lib.pl_rewrite_batch(
        rw.ffi.from_buffer("uint8_t[]", buf), len(cases), buf.shape[1], rw.ffi.from_buffer("uint32_t[]", offsets),
        rw.ffi.from_buffer("uint32_t[]", lens), rw.ffi.from_buffer("struct pl_rewrite_op[]", ops),
        rw.ffi.from_buffer("uint8_t[]", results),
    )  # fmt: skip
    expected = sum(1 for c in cases if c.code == rw.RW_OK and int(c.op["kind"]) != rw.OP_NONE)
    assert done == expected == int(((results == rw.RW_OK) & (ops["kind"] != rw.OP_NONE)).sum())


def test_every_result_code_has_a_golden_case() -> None:
    assert {c.code for c in CASES} == set(range(rw.RW_COUNT))


def test_tunnel_of_max_size_inner() -> None:
    """65515 + 20 = 65535 still fits the total length field (one byte more: the TOO_BIG golden case)."""
    inner = bytes(IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=2) / (b"\x00" * (65515 - 28)))
    case = Case("max tunnel", inner, op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=3), tunnel_of(inner, df=False, id=3),
                new_offset=rw.HEADROOM - 20)  # fmt: skip
    buf, lens, offsets, ops = _load([case])
    before = buf.copy()
    results = rw.apply(buf, lens, ops, offsets)
    _check(case, before[0], buf[0], int(results[0]), int(offsets[0]), int(lens[0]), len(inner))


def test_default_offsets_and_packet_view() -> None:
    buf, lens, _, ops = _load([CASES[0], CASES[0]])  # row 1 is refilled below
    ops[1] = op(rw.OP_TUNNEL, RIP, addr2=DIRECTOR, id=0x2345)
    buf[1, rw.HEADROOM : rw.HEADROOM + len(UDP_TO_VIP)] = np.frombuffer(UDP_TO_VIP, dtype=np.uint8)
    lens[1] = len(UDP_TO_VIP)
    results = rw.apply(buf, lens, ops)
    assert list(results) == [rw.RW_OK, rw.RW_OK]
    offsets = np.array([rw.HEADROOM, rw.HEADROOM - rw.IPIP_HEADER], dtype=np.uint32)
    assert bytes(rw.packet(buf, offsets, lens, 0)) == CASES[0].expected
    assert bytes(rw.packet(buf, offsets, lens, 1)) == tunnel_of(UDP_TO_VIP, df=False)


def test_names_come_from_the_c_enums() -> None:
    assert rw.RESULT_NAMES[rw.RW_OK] == "OK" and rw.RESULT_NAMES[rw.RW_NO_ROOM] == "NO_ROOM"
    assert rw.OP_NAMES[rw.OP_TUNNEL] == "TUNNEL"
    assert rw.OP_DTYPE.itemsize == rw.ffi.sizeof("struct pl_rewrite_op")


def _arrays(n: int = 2, stride: int = 128):
    return np.zeros((n, stride), np.uint8), np.zeros(n, np.uint32), np.zeros(n, rw.OP_DTYPE)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b, l, o: (b.astype(np.int8), l, o), "buf must have dtype uint8"),
        (lambda b, l, o: (b[:, ::2], l, o), "buf must be C-contiguous"),
        (lambda b, l, o: (b[0], l, o), "buf must be 2-D"),
        (lambda b, l, o: (b.tobytes(), l, o), "buf must be a numpy array"),
        (lambda b, l, o: (b, l.astype(np.int64), o), "lens must have dtype uint32"),
        (lambda b, l, o: (b, l[:1], o), "lens has 1 entries for a batch of 2 rows"),
        (lambda b, l, o: (b, l, np.zeros(2, [("kind", "u1")])), "ops must have dtype"),
        (lambda b, l, o: (b, l, np.zeros(3, rw.OP_DTYPE)), "ops has 3 entries"),
    ],
)
def test_programming_errors_raise_value_error(mutate, message) -> None:
    buf, lens, ops = mutate(*_arrays())
    with pytest.raises(ValueError, match=message):
        rw.apply(buf, lens, ops)


def test_read_only_buffer_and_bad_offsets_raise() -> None:
    buf, lens, ops = _arrays()
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="buf must be writable"):
        rw.apply(buf, lens, ops)
    buf, lens, ops = _arrays()
    with pytest.raises(ValueError, match="offsets must have dtype uint32"):
        rw.apply(buf, lens, ops, offsets=np.zeros(2, np.uint16))
    with pytest.raises(ValueError, match="results has 3 entries"):
        rw.apply(buf, lens, ops, results=np.zeros(3, np.uint8))


def test_empty_batch() -> None:
    buf, lens, ops = _arrays(n=0)
    assert rw.apply(buf, lens, ops).shape == (0,)
