"""Engine inputs shared by the fuzz test and the cfunc equivalence test: a three-service
lvs.cf (TCP wlc NAT/DR/TUN, UDP persistent rr, a persistent wrr firewall-mark service),
and hypothesis strategies for coherent flows, valid and mangled packets and random bytes."""

from __future__ import annotations

from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb

CLIENTS = ["203.0.113.7", "203.0.113.8", "198.51.100.5"]
VIP, FWM_VIP = "192.0.2.10", "192.0.2.50"
RIPS = ["10.0.0.2", "10.0.0.3"]
FWMARK = 5


WEIGHTS = ((1, 2), (0, 0), (0, 3))  # (0, 0): no server left, new connections are rejected


def _cf(network: str, weights: tuple[int, int] = WEIGHTS[0]) -> str:
    def servers(port):
        return "".join(
            f"     server s{k} {{\n         address = {rip}\n{port}"
            f"         active = 1\n         weight = {w}\n     }}\n"
            for k, (rip, w) in enumerate(zip(RIPS, weights, strict=True))
        )

    rport = "         port = 8080\n" if network == "nat" else ""
    return f"""serial_no = 1
primary = 192.0.2.2
service = lvs
backup_active = 0
backup = 0.0.0.0
network = {network}
nat_router = 10.0.0.254 eth1:1
virtual www {{
     active = 1
     address = {VIP} eth0:1
     port = 80
     protocol = tcp
     scheduler = wlc
{servers(rport)}}}
virtual dns {{
     active = 1
     address = {VIP} eth0:1
     port = 53
     protocol = udp
     scheduler = rr
     persistent = 60
{servers('')}}}
virtual shop {{
     active = 1
     address = {FWM_VIP} eth0:1
     port = 80
     protocol = tcp
     fwmark = {FWMARK}
     persistent = 300
     pmask = 255.255.255.0
     scheduler = wrr
{servers('')}}}
"""


TABLES = {}


def director(network: str, capacity: int, weights: tuple[int, int] = WEIGHTS[0]):
    if (network, weights) not in TABLES:
        r = check_text(_cf(network, weights))
        assert r.ok, [str(d) for d in r.diagnostics]
        TABLES[network, weights] = r.config
    t = tb.compile(TABLES[network, weights])
    ct = en.attach(ctm.create(capacity, 1), t)
    return t, ct, en.new_counters(t)


# --- packets -----------------------------------------------------------------------------
addrs = st.sampled_from(CLIENTS + RIPS + [VIP, FWM_VIP, "192.0.2.77"])
ports = st.sampled_from([80, 443, 53, 8080, 1024, 40000, 40001, 0])
tcp_flags = st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "SR", "", "F"])


@st.composite
def valid_packet(draw):
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    src, dst = draw(addrs), draw(addrs)
    sport, dport = draw(ports), draw(ports)
    payload = draw(st.binary(max_size=24))
    if kind == "tcp":
        p = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=draw(tcp_flags)) / Raw(payload)
    elif kind == "udp":
        p = IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)
    else:
        quoted = IP(src=draw(addrs), dst=draw(addrs)) / draw(st.sampled_from([TCP, UDP]))(sport=draw(ports),
                                                                                       dport=draw(ports))
        p = IP(src=src, dst=dst) / ICMP(type=draw(st.sampled_from([3, 4, 11, 8, 0])), code=3) / quoted
    return bytes(p)


@st.composite
def flow_packet(draw):
    """Packets of a few coherent flows: client -> VIP, replies, ICMP errors about them."""
    client, rip = CLIENTS[0], draw(st.sampled_from(RIPS))
    cport = 40000
    proto = draw(st.sampled_from([TCP, UDP]))
    vport = 53 if proto is UDP else draw(st.sampled_from([80, 80, 443]))
    rport = 53 if proto is UDP else draw(st.sampled_from([8080, 8080, vport]))
    vip = draw(st.sampled_from([VIP, VIP, FWM_VIP]))
    flags = st.sampled_from(["S", "S", "SA", "A", "PA", "FA", "R"])
    l4 = (lambda sp, dp: TCP(sport=sp, dport=dp, flags=draw(flags))) if proto is TCP else (
        lambda sp, dp: UDP(sport=sp, dport=dp))
    df = draw(st.sampled_from([0, "DF"]))
    kind = draw(st.sampled_from(["in", "in", "out", "icmp_rs", "icmp_client"]))
    if kind == "in":
        p = IP(src=client, dst=vip, flags=df) / l4(cport, vport)
    elif kind == "out":
        p = IP(src=rip, dst=client, flags=df) / l4(rport, cport)
    elif kind == "icmp_rs":
        p = IP(src=rip, dst=client) / ICMP(type=3, code=3) / IP(src=client, dst=rip) / l4(cport, rport)
    else:
        p = IP(src="198.51.100.1", dst=vip) / ICMP(type=11) / IP(src=vip, dst=client) / l4(vport, cport)
    return bytes(p / Raw(draw(st.binary(max_size=16))))


@st.composite
def mangled_packet(draw):
    data = bytearray(draw(st.one_of(valid_packet(), flow_packet())))
    how = draw(st.sampled_from(["truncate", "ihl", "frag", "flip", "total"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "ihl":
        data[0] = (data[0] & 0xF0) | draw(st.integers(0, 15))
    elif how == "frag":
        field = draw(st.integers(0, 0xFFFF))
        data[6], data[7] = field >> 8, field & 0xFF
    elif how == "total":
        total = draw(st.integers(0, 0xFFFF))
        data[2], data[3] = total >> 8, total & 0xFF
    else:
        for _ in range(draw(st.integers(1, 4))):
            k = draw(st.integers(0, len(data) - 1))
            data[k] = draw(st.integers(0, 255))
    return bytes(data)


packets = st.one_of(flow_packet(), flow_packet(), valid_packet(), mangled_packet(), st.binary(max_size=80))
marks = st.sampled_from([0, 0, FWMARK, 7, 0xFFFFFFFF])
batches = st.lists(st.lists(st.tuples(packets, marks), max_size=24), min_size=1, max_size=3)
