"""The golden packet table of the forwarding core, shared by every test that runs it.

Each step gives input packet(s), built with scapy, the expected output packet built with
scapy from scratch (every checksum computed by scapy, so the engine's incremental
rewrites are checked byte for byte), the verdict and the counter the packet lands in.
Tables are compiled from small lvs.cf texts, as the director does.  The engine tests
(tests/unit/test_engine_golden.py) run it through ``engine.process``; the I/O adapter
tests run the same table through each adapter.

Addresses follow reference section 8: a client talks to VIP:vport on the director, which
forwards to a real server RIP:rport.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.sched import ADDR

CLIENT = "203.0.113.7"
CLIENT2 = "203.0.113.99"  # same /24 as CLIENT
CLIENT3 = "198.51.100.5"  # another /24
VIP = "192.0.2.10"
FWM_VIP = "192.0.2.50"
RIP1, RIP2, RIP3 = "10.0.0.2", "10.0.0.3", "10.0.0.4"
DIRECTOR = "10.0.0.1"
OTHER_VIP = "192.0.2.77"
CPORT, VPORT, RPORT = 40000, 80, 8080
UDP_CPORT, UDP_VPORT, UDP_RPORT = 40001, 53, 5353
FWMARK = 5
NOW = 1000.0


def ip2int(addr: str) -> int:
    return struct.unpack("!I", bytes(int(b) for b in addr.split(".")))[0]


def int2ip(x: int) -> str:
    return ".".join(str(b) for b in struct.pack("!I", x))


# --- configurations ------------------------------------------------------------------
HEAD = """serial_no = 1
primary = 192.0.2.2
service = lvs
backup_active = 0
backup = 0.0.0.0
heartbeat_port = 539
keepalive = 2
deadtime = 6
network = {network}
nat_router = 10.0.0.254 eth1:1
nat_nmask = 255.255.255.0
"""


def virtual(name, vip, port, proto="tcp", sched="rr", servers=(), extra=""):
    body = "".join(
        f"""     server {sname} {{
         address = {addr}
{f'         port = {sport}' if sport else ''}
         active = 1
         weight = {w}
     }}
"""
        for sname, addr, sport, w in servers
    )
    return f"""virtual {name} {{
     active = 1
     address = {vip} eth0:1
     vip_nmask = 255.255.255.0
     port = {port}
     protocol = {proto}
     scheduler = {sched}
{extra}
{body}}}
"""


NAT_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, servers=[("web1", RIP1, RPORT, 1)]
) + virtual("dns", VIP, UDP_VPORT, proto="udp", servers=[("dns1", RIP1, UDP_RPORT, 1)])

DR_CF = HEAD.format(network="direct") + virtual("www", VIP, VPORT, servers=[("web1", RIP1, None, 1)])
TUN_CF = HEAD.format(network="tunnel") + virtual("www", VIP, VPORT, servers=[("web1", RIP1, None, 1)])
PERSIST_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, sched="rr", servers=[("web1", RIP1, None, 1), ("web2", RIP2, None, 1)],
    extra="     persistent = 300\n     pmask = 255.255.255.0",
)
FWM_CF = HEAD.format(network="nat") + virtual(
    "shop", FWM_VIP, 80, sched="rr", servers=[("s1", RIP1, None, 1), ("s2", RIP2, None, 1)],
    extra=f"     fwmark = {FWMARK}\n     persistent = 300",
)
TWO_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, sched="wlc", servers=[("web1", RIP1, None, 1), ("web2", RIP2, None, 1)],
    extra="     quiesce_server = 1",
)
QUIESCED_CF = TWO_CF.replace("weight = 1", "weight = 0")
WRR_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, sched="wrr",
    servers=[("a", RIP1, None, 1), ("b", RIP2, None, 2), ("c", RIP3, None, 3)],
)


def compile_cf(text: str, **kw) -> tb.Tables:
    r = check_text(text)
    assert r.ok, [str(d) for d in r.diagnostics]
    return tb.compile(r.config, **kw)


# One index key for every test director: two of them fed the same packets (the engine's
# two entry points, say) lay out their indexes byte for byte alike.
INDEX_KEY = (0x0706050403020100, 0x0F0E0D0C0B0A0908)


class Director:
    """Tables + connection table + counters, with a one-call ``send``."""

    def __init__(self, cf: str, capacity: int = 1024):
        self.config = check_text(cf).config
        self.tables = tb.compile(self.config)
        self.ct = en.attach(ctm.create(capacity, 1, key=INDEX_KEY), self.tables)
        self.counters = en.new_counters(self.tables)

    def send(self, packets, now=NOW, marks=None):
        b = en.batch_from_packets([bytes(p) for p in packets], marks=marks)
        v = en.process(b, now, self.tables, self.ct, self.counters, tunnel_src=ip2int(DIRECTOR))
        return [
            (int(v.verdict[i]), en.REASON_NAMES[v.reason[i]], int(v.dest_row[i]), en.packet_bytes(b, i))
            for i in range(b.n)
        ]

    def rip(self, row: int) -> str:
        return int2ip(int(self.tables.dest[row, ADDR]))

    def reconfigure(self, health=None, cf=None):
        if cf is not None:
            self.config = check_text(cf).config
        new = tb.compile(self.config, health=health, previous=self.tables)
        self.ct = en.swap(self.ct, new, self.tables)
        kept = new.row_map >= 0
        stats = self.counters.dest.copy()
        self.counters = en.adopt_counters(new, self.counters)
        assert (self.counters.dest[new.row_map[kept]] == stats[kept]).all()
        self.tables = new

    def entry(self, proto, caddr, cport, vaddr, vport):
        n = ctm.lookup_in(self.ct, proto, ip2int(caddr), cport, ip2int(vaddr), vport, NOW)
        return None if n < 0 else next(e for e in ctm.live_entries(self.ct) if e.index == n)


# --- packet builders: the same defaults in and out, so only rewritten fields differ ---


def tcp(src, dst, sport, dport, flags="S", payload=b"", seq=1000, ack=0, df=False, ttl=64):
    p = IP(src=src, dst=dst, id=7, ttl=ttl, flags="DF" if df else 0)
    p = p / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
    return p / Raw(payload) if payload else p


def udp(src, dst, sport, dport, payload=b"q" * 12):
    return IP(src=src, dst=dst, id=9, ttl=64) / UDP(sport=sport, dport=dport) / Raw(payload)


@dataclass
class Step:
    packet: object  # scapy packet
    expected: object | None  # scapy packet; None: the packet unchanged
    verdict: int
    counter: str
    mark: int = 0
    state: str | None = None  # TCP state of the entry afterwards (keyed by the client side)


@dataclass
class Case:
    desc: str
    cf: str
    steps: list[Step] = field(default_factory=list)
    capacity: int = 1024


HANDSHAKE = [
    Step(tcp(CLIENT, VIP, CPORT, VPORT, "S"), tcp(CLIENT, RIP1, CPORT, RPORT, "S"), en.V_NAT, "nat_in",
         state="SYN_RECV"),
    Step(tcp(RIP1, CLIENT, RPORT, CPORT, "SA", seq=5000, ack=1001),
         tcp(VIP, CLIENT, VPORT, CPORT, "SA", seq=5000, ack=1001),
         en.V_NAT, "nat_out", state="SYN_RECV"),
    Step(tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001),
         tcp(CLIENT, RIP1, CPORT, RPORT, "A", seq=1001, ack=5001),
         en.V_NAT, "nat_in", state="ESTABLISHED"),
    Step(tcp(CLIENT, VIP, CPORT, VPORT, "PA", b"GET / HTTP/1.0\r\n\r\n", 1001, 5001),
         tcp(CLIENT, RIP1, CPORT, RPORT, "PA", b"GET / HTTP/1.0\r\n\r\n", 1001, 5001), en.V_NAT, "nat_in",
         state="ESTABLISHED"),
    Step(tcp(RIP1, CLIENT, RPORT, CPORT, "PA", b"HTTP/1.0 200 OK\r\n\r\n!", 5001, 1019),
         tcp(VIP, CLIENT, VPORT, CPORT, "PA", b"HTTP/1.0 200 OK\r\n\r\n!", 5001, 1019), en.V_NAT, "nat_out",
         state="ESTABLISHED"),
    Step(tcp(CLIENT, VIP, CPORT, VPORT, "FA", seq=1019, ack=5022),
         tcp(CLIENT, RIP1, CPORT, RPORT, "FA", seq=1019, ack=5022),
         en.V_NAT, "nat_in", state="CLOSE_WAIT"),
    Step(tcp(RIP1, CLIENT, RPORT, CPORT, "FA", seq=5022, ack=1020),
         tcp(VIP, CLIENT, VPORT, CPORT, "FA", seq=5022, ack=1020),
         en.V_NAT, "nat_out", state="TIME_WAIT"),
    Step(tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1020, ack=5023),
         tcp(CLIENT, RIP1, CPORT, RPORT, "A", seq=1020, ack=5023),
         en.V_NAT, "nat_in", state="TIME_WAIT"),
]

UDP_ICMP_QUOTE = udp(CLIENT, RIP1, UDP_CPORT, UDP_RPORT)

CASES = [
    Case("NAT in: SYN to VIP:80 goes to RIP:8080", NAT_CF, [HANDSHAKE[0]]),
    Case("NAT out: the reply comes back from VIP:80", NAT_CF, HANDSHAKE[:2]),
    Case("NAT: handshake, data and FIN both ways, TCP states", NAT_CF, HANDSHAKE),
    Case("NAT UDP both ways", NAT_CF, [
        Step(udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT), udp(CLIENT, RIP1, UDP_CPORT, UDP_RPORT), en.V_NAT, "nat_in",
             state="UDP"),
        Step(udp(RIP1, CLIENT, UDP_RPORT, UDP_CPORT, b"answer"), udp(VIP, CLIENT, UDP_VPORT, UDP_CPORT, b"answer"),
             en.V_NAT, "nat_out", state="UDP"),
    ]),
    Case("ICMP port unreachable from a real server about a NAT UDP flow reaches the client", NAT_CF, [
        Step(udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT), udp(CLIENT, RIP1, UDP_CPORT, UDP_RPORT), en.V_NAT, "nat_in"),
        Step(IP(src=RIP1, dst=CLIENT, id=3) / ICMP(type=3, code=3) / UDP_ICMP_QUOTE,
             IP(src=VIP, dst=CLIENT, id=3) / ICMP(type=3, code=3) / udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT),
             en.V_NAT, "icmp_nat_out"),
    ]),
    Case("ICMP from the client side about a NAT reply goes to the real server", NAT_CF, [
        Step(udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT), udp(CLIENT, RIP1, UDP_CPORT, UDP_RPORT), en.V_NAT, "nat_in"),
        Step(IP(src="198.51.100.1", dst=VIP, id=4) / ICMP(type=11, code=0) / udp(VIP, CLIENT, UDP_VPORT, UDP_CPORT),
             IP(src="198.51.100.1", dst=RIP1, id=4) / ICMP(type=11, code=0) / udp(RIP1, CLIENT, UDP_RPORT, UDP_CPORT),
             en.V_NAT, "icmp_nat_in"),
    ]),
    Case("ICMP error about no connection passes", NAT_CF, [
        Step(IP(src=RIP1, dst=CLIENT) / ICMP(type=3, code=3) / UDP_ICMP_QUOTE, None, en.V_PASS, "icmp_unmatched"),
    ]),
    Case("ICMP echo to the VIP passes", NAT_CF, [
        Step(IP(src=CLIENT, dst=VIP) / ICMP(type=8) / Raw(b"ping"), None, en.V_PASS, "icmp_other"),
    ]),
    Case("DR: unchanged, DR verdict", DR_CF, [
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "S"), None, en.V_DR, "dr", state="SYN_RECV"),
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001), None, en.V_DR, "dr", state="ESTABLISHED"),
    ]),
    Case("TUNNEL: IPIP outer header to the RIP, DF and TTL copied", TUN_CF, [
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "S", df=True),
             IP(src=DIRECTOR, dst=RIP1, id=0, ttl=64, flags="DF") / tcp(CLIENT, VIP, CPORT, VPORT, "S", df=True),
             en.V_TUNNEL, "tunnel", state="SYN_RECV"),
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001, ttl=30),
             IP(src=DIRECTOR, dst=RIP1, id=1, ttl=30) / tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001, ttl=30),
             en.V_TUNNEL, "tunnel", state="ESTABLISHED"),
    ]),
    Case("DR: an ICMP error about a reply is forwarded unchanged to the real server", DR_CF, [
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "S"), None, en.V_DR, "dr"),
        Step(IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4) / tcp(VIP, CLIENT, VPORT, CPORT, "SA"), None,
             en.V_DR, "icmp_dr"),
    ]),
    Case("no real server available: ICMP port unreachable to the client, TCP too", QUIESCED_CF, [
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "S"),
             IP(src=VIP, dst=CLIENT, id=0, ttl=64, tos=0xC0) / ICMP(type=3, code=3)
             / tcp(CLIENT, VIP, CPORT, VPORT, "S"),
             en.V_REJECT, "no_dest"),
    ]),
    Case("unknown VIP passes", NAT_CF, [
        Step(tcp(CLIENT, OTHER_VIP, CPORT, VPORT, "S"), None, en.V_PASS, "no_service"),
        Step(tcp(CLIENT, VIP, CPORT, 81, "S"), None, en.V_PASS, "no_service"),
    ]),
    Case("a first packet without SYN passes", NAT_CF, [
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "A"), None, en.V_PASS, "not_syn"),
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "SR"), None, en.V_PASS, "not_syn"),
    ]),
    Case("RST closes the connection", NAT_CF, [
        *HANDSHAKE[:3],
        Step(tcp(CLIENT, VIP, CPORT, VPORT, "R", seq=1001), tcp(CLIENT, RIP1, CPORT, RPORT, "R", seq=1001), en.V_NAT,
             "nat_in", state="CLOSE"),
    ]),
    Case("malformed packets drop with their reason", NAT_CF, [
        Step(Raw(bytes(tcp(CLIENT, VIP, CPORT, VPORT))[:30]), None, en.V_DROP, "parse_truncated"),
        Step(Raw(b"\x60" + bytes(tcp(CLIENT, VIP, CPORT, VPORT))[1:]), None, en.V_DROP, "parse_not_ipv4"),
        Step(IP(src=CLIENT, dst=VIP, ihl=4) / TCP(dport=VPORT), None, en.V_DROP, "parse_bad_ihl"),
        Step(IP(src=CLIENT, dst=VIP, proto=6) / Raw(b"\x00" * 10), None, en.V_DROP, "parse_l4_truncated"),
        Step(IP(src=CLIENT, dst=VIP, frag=10) / Raw(b"\x00" * 24), None, en.V_DROP, "fragment"),
        Step(IP(src=CLIENT, dst=VIP, flags="MF") / TCP(dport=VPORT, flags="S") / Raw(b"x" * 8), None, en.V_DROP,
             "fragment"),
        Step(IP(src=CLIENT, dst=VIP) / GRE() / Raw(b"x" * 8), None, en.V_PASS, "parse_other_proto"),
    ]),
]


def _key(step: Step):
    p = step.packet
    if p.haslayer(TCP):
        return 6, p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport
    return 17, p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport


def _client_key(d: Director, step: Step):
    """The in-key of the step's connection, whichever side sent the packet."""
    proto, src, sport, dst, dport = _key(step)
    if d.entry(proto, src, sport, dst, dport) is not None:
        return proto, src, sport, dst, dport
    n = ctm.lookup_out(d.ct, proto, ip2int(src), sport, ip2int(dst), dport, NOW)
    assert n >= 0, "no entry for the step's packet"
    e = d.ct.entries[n]
    return proto, int2ip(int(e["caddr"])), int(e["cport"]), int2ip(int(e["vaddr"])), int(e["vport"])


def _check_step(d: Director, step: Step, got, k: int):
    verdict, counter, row, out = got
    assert (en.VERDICT_NAMES[verdict], counter) == (en.VERDICT_NAMES[step.verdict], step.counter), f"step {k}"
    expected = bytes(step.packet) if step.expected is None else bytes(step.expected)
    assert out.hex() == expected.hex(), f"step {k}: bytes differ"
    if step.verdict in (en.V_NAT, en.V_DR, en.V_TUNNEL):
        assert row >= 0
    if step.verdict == en.V_DR:
        assert d.rip(row) == RIP1
    if step.state is not None:
        e = d.entry(*_client_key(d, step))
        assert e is not None and e.state == step.state, f"step {k}: state {e and e.state}"
