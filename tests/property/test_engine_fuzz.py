"""The forwarding core on random and malformed input (ARCHITECTURE rule 7).

Random bytes, truncated or corrupted valid packets, odd IHLs and fragments, with random
firewall marks, through ``engine.process``: nothing raises, every packet gets exactly one
verdict and one counter (the counters of a batch add up to its size), the bytes of a
batch change only where a verdict says so (rows past ``n`` are canaries), and the
connection table's per-server counters match its entries.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane import tables as tb
from pylvs.sched import ACT, INACT
from pylvs.sched._dispatch import NAMES, config_kernel

TREE_ALGS = ("lc", "wlc", "sed", "nq", "fo", "ovf")

CLIENTS = ["203.0.113.7", "203.0.113.8", "198.51.100.5"]
VIP, FWM_VIP = "192.0.2.10", "192.0.2.50"
RIPS = ["10.0.0.2", "10.0.0.3"]
FWMARK = 5
STRIDE = 256
CANARY = 0xA5
CANARY_ROWS = 2


def _cf(network: str) -> str:
    def servers(port):
        return "".join(
            f"     server s{k} {{\n         address = {rip}\n{port}"
            f"         active = 1\n         weight = {k + 1}\n     }}\n"
            for k, rip in enumerate(RIPS)
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


def _director(network: str, capacity: int):
    if network not in TABLES:
        r = check_text(_cf(network))
        assert r.ok, [str(d) for d in r.diagnostics]
        TABLES[network] = r.config
    t = tb.compile(TABLES[network])
    ct = ctm.attach(ctm.create(capacity, 1), t.dest, t.persist)
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


def _fill(batch_pkts):
    n = len(batch_pkts)
    rows = n + CANARY_ROWS
    buf = np.full((rows, STRIDE), CANARY, dtype=np.uint8)
    off = np.full(rows, rw.HEADROOM, dtype=np.uint32)
    lens = np.zeros(rows, dtype=np.uint32)
    mk = np.zeros(rows, dtype=np.uint32)
    for i, (p, m) in enumerate(batch_pkts):
        p = p[: STRIDE - rw.HEADROOM]
        buf[i, rw.HEADROOM:rw.HEADROOM + len(p)] = np.frombuffer(p, dtype=np.uint8)
        lens[i], mk[i] = len(p), m
    return en.Batch(buf, off, lens, mk, n)


def _check_counts(ct, t):
    live = ct.entries[ct.entries["live"] == 1]
    conns = live[(live["flags"] & ctm.F_TEMPLATE) == 0]
    templates = live[(live["flags"] & ctm.F_TEMPLATE) != 0]
    assert int(t.dest[:, ACT].sum() + t.dest[:, INACT].sum()) == int((conns["dest"] >= 0).sum())
    assert int(t.persist.sum()) == int((templates["dest"] >= 0).sum())
    assert (t.dest[:, ACT] >= 0).all() and (t.dest[:, INACT] >= 0).all()
    # The lc-family trees were kept up to date: a rebuild changes nothing.
    for i in range(t.svc.shape[0]):
        dest, state = t.block(i)
        if NAMES[int(t.svc[i]["alg_id"])] in TREE_ALGS:
            rebuilt = state.copy()
            config_kernel(int(t.svc[i]["alg_id"]), dest, rebuilt)
            assert (rebuilt == state).all(), f"service {i}: tree out of date"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network=st.sampled_from(["nat", "tunnel", "direct"]), capacity=st.sampled_from([4, 64]),
       batch_list=batches, start=st.floats(0, 1e6), step=st.floats(0, 400))
def test_engine_never_raises_and_accounts_for_every_packet(network, capacity, batch_list, start, step):
    t, ct, counters = _director(network, capacity)
    now = start
    for pkts in batch_list:
        b = _fill(pkts)
        before = b.buf.copy()
        off0, lens0 = b.off.copy(), b.lens.copy()
        total0 = int(counters.reasons.sum())
        v = en.process(b, now, t, ct, counters, tunnel_src=0x0A000001)
        n = b.n
        assert v.verdict.shape == (n,) and ((v.verdict >= 0) & (v.verdict < len(en.VERDICT_NAMES))).all()
        assert int(counters.reasons.sum()) - total0 == n
        assert ((v.reason >= 0) & (v.reason < en.N_REASONS)).all()
        assert (counters.reasons >= 0).all()
        # Canary rows and their offsets/lengths are untouched.
        assert (b.buf[n:] == before[n:]).all()
        assert (b.off[n:] == off0[n:]).all() and (b.lens[n:] == lens0[n:]).all()
        for i in range(n):
            verdict = int(v.verdict[i])
            event(f"{network}: {en.REASON_NAMES[v.reason[i]]}")
            o, ln = int(off0[i]), int(lens0[i])
            if verdict in (en.V_PASS, en.V_DROP, en.V_DR):
                assert (b.buf[i] == before[i]).all(), en.VERDICT_NAMES[verdict]
                assert (b.off[i], b.lens[i]) == (off0[i], lens0[i])
            elif verdict == en.V_NAT:
                assert b.off[i] == off0[i] and b.lens[i] <= lens0[i]
                assert (b.buf[i, :o] == before[i, :o]).all() and (b.buf[i, o + ln:] == before[i, o + ln:]).all()
            else:
                assert verdict == en.V_TUNNEL
                assert b.off[i] == off0[i] - rw.IPIP_HEADER
                assert (b.buf[i, :o - rw.IPIP_HEADER] == before[i, :o - rw.IPIP_HEADER]).all()
                assert (b.buf[i, o:o + ln] == before[i, o:o + ln]).all()  # the inner packet
            if verdict == en.V_PASS or en.C_PARSE_BASE <= v.reason[i] < en.C_REWRITE_BASE:
                assert v.dest_row[i] == -1
            if verdict in (en.V_DR, en.V_NAT, en.V_TUNNEL):
                assert 0 <= v.dest_row[i] < t.dest.shape[0]
        _check_counts(ct, t)
        now += step
