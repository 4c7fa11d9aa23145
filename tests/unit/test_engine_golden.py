"""Golden cases for the forwarding core (pylvs.dataplane.engine.process).

Each step gives input packet(s), built with scapy, the expected output packet built with
scapy from scratch (every checksum computed by scapy, so the engine's incremental
rewrites are checked byte for byte), the verdict and the counter the packet lands in.
Tables are compiled from small lvs.cf texts, as the director does.

Addresses follow reference section 8: a client talks to VIP:vport on the director, which
forwards to a real server RIP:rport.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.sched import ACT, ADDR, INACT

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
WRR_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, sched="wrr",
    servers=[("a", RIP1, None, 1), ("b", RIP2, None, 2), ("c", RIP3, None, 3)],
)


def compile_cf(text: str, **kw) -> tb.Tables:
    r = check_text(text)
    assert r.ok, [str(d) for d in r.diagnostics]
    return tb.compile(r.config, **kw)


class Director:
    """Tables + connection table + counters, with a one-call ``send``."""

    def __init__(self, cf: str, capacity: int = 1024):
        self.config = check_text(cf).config
        self.tables = tb.compile(self.config)
        self.ct = en.attach(ctm.create(capacity, 1), self.tables)
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


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_one_batch_per_packet(case: Case):
    d = Director(case.cf, case.capacity)
    for k, step in enumerate(case.steps):
        [got] = d.send([step.packet], marks=[step.mark])
        _check_step(d, step, got, k)
    counts = en.reason_counts(d.counters)
    assert sum(counts.values()) == len(case.steps)
    for step in case.steps:
        assert counts[step.counter] >= 1


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_whole_case_in_one_batch(case: Case):
    """The same decisions when the steps arrive in one batch (states not checked per step)."""
    d = Director(case.cf, case.capacity)
    got = d.send([s.packet for s in case.steps], marks=[s.mark for s in case.steps])
    for k, (step, g) in enumerate(zip(case.steps, got, strict=True)):
        _check_step(d, Step(step.packet, step.expected, step.verdict, step.counter), g, k)


def test_handshake_counters_and_stats():
    d = Director(NAT_CF)
    d.send([s.packet for s in HANDSHAKE])
    row = [r for r in range(d.tables.dest.shape[0]) if d.tables.dest[r, ADDR] == ip2int(RIP1)
           and d.tables.dest_svc[r] == tb.lookup_service(d.tables, 6, VIP, VPORT)][0]
    assert (d.tables.dest[row, ACT], d.tables.dest[row, INACT]) == (0, 1)  # TIME_WAIT counts inactive
    stats = dict(zip(en.STAT_NAMES, d.counters.dest[row].tolist(), strict=True))
    n_in = sum(1 for s in HANDSHAKE if s.counter == "nat_in")
    n_out = len(HANDSHAKE) - n_in
    assert stats["conns"] == 1 and stats["inpkts"] == n_in and stats["outpkts"] == n_out
    assert stats["inbytes"] == sum(len(s.packet) for s in HANDSHAKE if s.counter == "nat_in")
    assert stats["outbytes"] == sum(len(s.packet) for s in HANDSHAKE if s.counter == "nat_out")
    svc = d.tables.dest_svc[row]
    assert (d.counters.svc[svc] == d.counters.dest[row]).all()


def test_persistence_keeps_client_and_its_24_together():
    d = Director(PERSIST_CF)
    got = d.send([
        tcp(CLIENT, VIP, 1111, VPORT), tcp(CLIENT, VIP, 2222, VPORT),    # one client, two connections
        tcp(CLIENT2, VIP, 3333, VPORT),                                  # same /24
        tcp(CLIENT3, VIP, 4444, VPORT), tcp(CLIENT3, VIP, 5555, VPORT),  # another /24: rr moves on
    ])
    rips = [d.rip(g[2]) for g in got]
    assert all(g[0] == en.V_NAT for g in got)
    assert rips[0] == rips[1] == rips[2]
    assert rips[3] == rips[4] != rips[0]
    # Two templates, each counted in PersistConn of its server; the rewrite keeps port 80.
    assert sorted(d.tables.persist[d.tables.persist > 0].tolist()) == [1, 1]
    assert IP(got[0][3])[TCP].dport == VPORT


def test_persistence_template_outlives_connections_then_expires():
    d = Director(PERSIST_CF)
    [(_, _, row1, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    [(_, _, row2, _)] = d.send([tcp(CLIENT, VIP, 1112, VPORT, "R")], now=NOW + 1)  # RST: passes (no entry)
    assert row2 == -1
    # Much later (the connection and the template expired): a new decision is made.
    [(_, _, row3, _)] = d.send([tcp(CLIENT, VIP, 1113, VPORT)], now=NOW + 200)
    assert row3 == row1  # template (300 s) still there
    for k in range(40):  # let the sweep visit every slot (twice: a busy template waits 60 s)
        d.send([], now=NOW + 2000 + 10 * k)
    assert ctm.count(d.ct) == 0 and d.tables.persist.sum() == 0


def test_fwmark_persistence_across_ports():
    d = Director(FWM_CF)
    got = d.send([tcp(CLIENT, FWM_VIP, 1111, 80), tcp(CLIENT, FWM_VIP, 1112, 443), tcp(CLIENT3, FWM_VIP, 1113, 443)],
                 marks=[FWMARK, FWMARK, FWMARK])
    assert [g[0] for g in got] == [en.V_NAT] * 3
    assert d.rip(got[0][2]) == d.rip(got[1][2]) != d.rip(got[2][2])
    out = IP(got[1][3])
    assert out.dst == d.rip(got[1][2]) and out[TCP].dport == 443  # the packet's own port
    # Without the mark the packet is not for the service.
    [g] = d.send([tcp(CLIENT, FWM_VIP, 1114, 443)])
    assert (g[0], g[1]) == (en.V_PASS, "no_service")


def test_quiesced_server_keeps_established_connection():
    d = Director(TWO_CF)
    [(_, _, row_a, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    d.send([tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001)])
    rip_a = d.rip(row_a)
    key = (("tcp", VIP, VPORT), rip_a, VPORT)
    d.reconfigure({key: tb.HealthState(up=False)})  # quiesce_server = 1: weight 0
    [(v, c, row, out)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "PA", b"more", seq=1001)])
    assert (v, c, row) == (en.V_NAT, "nat_in", row_a) and IP(out).dst == rip_a
    got = d.send([tcp(CLIENT, VIP, 2000 + k, VPORT) for k in range(5)])
    assert all(d.rip(g[2]) != rip_a for g in got)


def test_deleted_server_drops_its_connections():
    d = Director(TWO_CF.replace("quiesce_server = 1", "quiesce_server = 0"))
    [(_, _, row_a, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    key = (("tcp", VIP, VPORT), d.rip(row_a), VPORT)
    d.reconfigure({key: tb.HealthState(up=False)})
    [(v, c, row, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001)])
    assert (v, c, row) == (en.V_DROP, "nodest", row_a)
    assert ctm.count(d.ct) == 1
    b = en.batch_from_packets([bytes(tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001))])
    v = en.process(b, NOW, d.tables, d.ct, d.counters, expire_nodest_conn=True)
    assert v.verdict[0] == en.V_DROP and ctm.count(d.ct) == 0
    [(v, c, row, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "S")])  # a new SYN is scheduled afresh
    assert v == en.V_NAT and row != row_a


def test_full_table_drops_new_connections():
    d = Director(NAT_CF, capacity=2)
    got = d.send([tcp(CLIENT, VIP, 1000 + k, VPORT) for k in range(3)])
    assert [(g[0], g[1]) for g in got] == [(en.V_NAT, "nat_in")] * 2 + [(en.V_DROP, "table_full")]
    assert ctm.counters(d.ct)["full_drops"] == 1


def test_wrr_1_2_3_over_60_connections():
    d = Director(WRR_CF)
    got = d.send([tcp(CLIENT, VIP, 1000 + k, VPORT) for k in range(60)])
    assert all(g[0] == en.V_NAT for g in got)
    rips = [d.rip(g[2]) for g in got]
    assert (rips.count(RIP1), rips.count(RIP2), rips.count(RIP3)) == (10, 20, 30)


def test_wlc_sees_counts_within_one_batch():
    """Touched rows refresh the tree after every packet: wlc alternates inside a batch."""
    d = Director(TWO_CF)
    got = d.send([tcp(CLIENT, VIP, 1000 + k, VPORT) for k in range(10)])
    rips = [d.rip(g[2]) for g in got]
    assert rips.count(RIP1) == rips.count(RIP2) == 5


def test_rewrite_failure_is_a_counted_drop():
    """A packet the C rewrite refuses (here an ICMP error with a wrong ICMP checksum,
    which ip_vs_in_icmp drops too) is dropped and counted under the rewrite's reason."""
    d = Director(NAT_CF)
    d.send([udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT)])
    bad = IP(src=RIP1, dst=CLIENT) / ICMP(type=3, code=3, chksum=0x1234) / UDP_ICMP_QUOTE
    [(v, c, _, out)] = d.send([bad])
    assert (v, c) == (en.V_DROP, "rewrite_BAD_CHECKSUM")
    assert out == bytes(bad)
    assert sum(en.reason_counts(d.counters).values()) == 2


def test_no_dest_when_every_server_is_quiesced():
    d = Director(TWO_CF.replace("weight = 1", "weight = 0"))
    [(v, c, row, out)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    assert (v, c, row) == (en.V_DROP, "no_dest", -1)


def test_expire_quiescent_template():
    """By default a template to a quiesced server keeps its client there; with the
    engine flag the template is dropped and the client rescheduled (reference 7.6)."""
    d = Director(PERSIST_CF.replace("     persistent = 300", "     persistent = 300\n     quiesce_server = 1"))
    [(_, _, row_a, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    d.reconfigure({(("tcp", VIP, VPORT), d.rip(row_a), VPORT): tb.HealthState(up=False)})
    [(_, _, row, _)] = d.send([tcp(CLIENT, VIP, 1112, VPORT)])
    assert row == row_a
    b = en.batch_from_packets([bytes(tcp(CLIENT, VIP, 1113, VPORT))])
    v = en.process(b, NOW, d.tables, d.ct, d.counters, expire_quiescent_template=True)
    assert v.verdict[0] == en.V_NAT and v.dest_row[0] != row_a
    [(_, _, row, _)] = d.send([tcp(CLIENT, VIP, 1114, VPORT)])  # the new template holds
    assert row == v.dest_row[0]


def test_touched_overflow_rebuilds_the_trees():
    """More counter changes in one step than ct.touched remembers (a big sweep): the
    engine rebuilds the lc-family trees, and they match the counters again."""
    d = Director(TWO_CF, capacity=8192)
    n = ctm.TOUCHED_CAP + 200
    syn = bytearray(bytes(tcp(CLIENT, VIP, 0, VPORT)))
    syns = []
    for k in range(n):  # only the source port differs (TCP checksums are not verified)
        syn[20:22] = (1000 + k).to_bytes(2, "big")
        syns.append(bytes(syn))
    d.send(syns)
    assert ctm.count(d.ct) == n
    junk = IP(src=CLIENT, dst=VIP) / GRE()
    got = d.send([junk] * n, now=NOW + 10_000)  # sweep budget 2n + 64 > capacity: all expire
    assert ctm.count(d.ct) == 0 and all(g[1] == "parse_other_proto" for g in got)
    dest, state = d.tables.block(0)
    rebuilt = state.copy()
    from pylvs.sched._dispatch import config_kernel
    config_kernel(int(d.tables.svc[0]["alg_id"]), dest, rebuilt)
    assert (rebuilt == state).all()


@pytest.mark.parametrize("port", [0, 21])
def test_port0_and_ftp_templates_key_on_port_0(port):
    """Reference 7.6: a port-0 or port-21 persistent service keys its template on
    (proto, snet, 0, VIP, 0); a port-0 service keeps the packet's own port."""
    d = Director(HEAD.format(network="nat") + virtual(
        "any", VIP, port, sched="rr", servers=[("a", RIP1, None, 1), ("b", RIP2, None, 1)],
        extra="     persistent = 300"))
    dports = [443, 8443] if port == 0 else [21, 21]
    got = d.send([tcp(CLIENT, VIP, 1111, dports[0]), tcp(CLIENT, VIP, 1112, dports[1])])
    assert [g[0] for g in got] == [en.V_NAT, en.V_NAT] and got[0][2] == got[1][2]
    assert [IP(g[3])[TCP].dport for g in got] == dports
    [tmpl] = [e for e in ctm.live_entries(d.ct) if e.flags & ctm.F_TEMPLATE]
    assert (tmpl.proto, tmpl.caddr, tmpl.cport, tmpl.vaddr, tmpl.vport) == (6, ip2int(CLIENT), 0, ip2int(VIP), 0)


def test_passive_ftp_data_connection_follows_its_control_connection():
    """A persistent port-21 service takes the VIP's unprivileged ports too (reference
    7.8), and its port-0 template (7.6) sends the data connection to the server that
    holds the control connection, on the packet's own port."""
    d = Director(HEAD.format(network="nat") + virtual(
        "ftp", VIP, 21, sched="rr", servers=[("a", RIP1, None, 1), ("b", RIP2, None, 1)],
        extra="     persistent = 300"))
    other = d.send([tcp("198.51.100.9", VIP, 2000, 21)])  # another client moves rr on
    control = d.send([tcp(CLIENT, VIP, 1111, 21)])
    data = d.send([tcp(CLIENT, VIP, 1112, 40000)])
    assert [g[1] for g in other + control + data] == ["nat_in"] * 3
    assert data[0][2] == control[0][2] != other[0][2]
    assert IP(data[0][3])[TCP].dport == 40000 and IP(data[0][3]).dst == d.rip(control[0][2])


def test_swap_to_a_moved_block_keeps_connections():
    """Adding servers past the block's capacity moves the block (tables.row_map): the
    swap remaps the entries, so an established connection keeps its server."""
    d = Director(TWO_CF)
    [(_, _, row_a, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    d.send([tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001)])
    rip_a = d.rip(row_a)
    many = [("web1", RIP1, None, 1), ("web2", RIP2, None, 1)] + [
        (f"x{k}", f"10.0.1.{k}", None, 1) for k in range(1, 21)]
    d.reconfigure(cf=HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="wlc", servers=many))
    [(v, c, row, out)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "PA", b"x", seq=1001)])
    assert (v, c) == (en.V_NAT, "nat_in") and d.rip(row) == rip_a and IP(out).dst == rip_a
    assert row != row_a  # the block moved
    assert (d.tables.dest[row, ACT], d.tables.dest[row, INACT]) == (1, 0)
    assert d.counters.dest[row, en.S_INPKTS] == 3


def test_attach_applies_lvs_cf_timeouts():
    cf = NAT_CF.replace("nat_nmask = 255.255.255.0", "nat_nmask = 255.255.255.0\ntcp_timeout = 600\nudp_timeout = 30")
    d = Director(cf)
    assert d.ct.timeouts[ctm.STATE_NAMES.index("ESTABLISHED")] == 600
    assert d.ct.timeouts[ctm.STATE_NAMES.index("UDP")] == 30
    assert d.ct.timeouts[ctm.STATE_NAMES.index("FIN_WAIT")] == ctm.DEFAULT_TIMEOUTS["FIN_WAIT"]
