"""Golden cases for the forwarding core (pylvs.dataplane.engine.process).

The table itself (cases, configurations, packet builders) is tests/golden.py, which the
I/O adapter tests run too; here it runs through ``engine.process`` one packet per batch
and whole cases per batch, followed by the scenarios that need more than a table row.
"""

from __future__ import annotations

import dataclasses

import pytest
from golden import (
    CASES,
    CLIENT,
    CLIENT2,
    CLIENT3,
    CPORT,
    DIRECTOR,
    FWM_CF,
    FWM_VIP,
    FWMARK,
    HANDSHAKE,
    HEAD,
    NAT_CF,
    NOW,
    PERSIST_CF,
    RIP1,
    RIP2,
    RIP3,
    RPORT,
    TWO_CF,
    UDP_CPORT,
    UDP_ICMP_QUOTE,
    UDP_VPORT,
    VIP,
    VPORT,
    WRR_CF,
    Case,
    Director,
    Step,
    _check_step,
    ip2int,
    tcp,
    udp,
    virtual,
)
from scapy.layers.inet import GRE, ICMP, IP, TCP

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.sched import ACT, ADDR, INACT


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


def test_no_dest_rejects_with_an_icmp_quote_cut_to_576_bytes():
    d = Director(TWO_CF.replace("weight = 1", "weight = 0"))
    [(v, c, row, out)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "S", b"y" * 1000)])
    assert (v, c, row) == (en.V_REJECT, "no_dest", -1)
    icmp = IP(out)
    assert len(out) == 576 and icmp[ICMP].type == 3 and icmp[ICMP].code == 3
    fresh = icmp.copy()
    del fresh.chksum, fresh[ICMP].chksum  # scapy recomputes both
    assert bytes(IP(bytes(fresh))) == out


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


@pytest.mark.parametrize(("mode", "rescheduled"), [(1, True), (0, False)])
def test_conn_reuse_mode_reschedules_a_syn_on_a_time_wait_entry(mode, rescheduled):
    """ip_vs_in (5.9+): a client port reused while the old entry is in TIME_WAIT starts a
    new connection (scheduled, counted) with conn_reuse_mode 1; mode 0 reuses the entry."""
    d = Director(NAT_CF)
    d.send([s.packet for s in HANDSHAKE])
    assert d.entry(6, CLIENT, CPORT, VIP, VPORT).state == "TIME_WAIT"
    b = en.batch_from_packets([bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S", seq=9000))])
    v = en.process(b, NOW + 1, d.tables, d.ct, d.counters, conn_reuse_mode=mode)
    assert en.VERDICT_NAMES[v.verdict[0]] == "nat"
    svc = tb.lookup_service(d.tables, 6, ip2int(VIP), VPORT)
    assert d.counters.svc[svc, en.S_CONNS] == (2 if rescheduled else 1)
    assert d.entry(6, CLIENT, CPORT, VIP, VPORT).state == "SYN_RECV"  # mode 0: TIME_WAIT + SYN, same entry
    assert ctm.count(d.ct) == 1


# --- per-real-server forwarding methods (pylvsadm: ipvsadm -a -m / -g / -i) ----------------
MIXED_CF = HEAD.format(network="nat") + virtual(
    "www", VIP, VPORT, sched="rr",
    servers=[("web1", RIP1, RPORT, 1), ("web2", RIP2, None, 1), ("web3", RIP3, None, 1)],
)
MIXED = {"web2": "direct", "web3": "tunnel"}  # web1: the file's network (nat)


def with_methods(config, methods: dict[str, str]):
    """`config` with the named servers given their own forwarding method, as pylvsadm does."""
    return dataclasses.replace(config, virtuals=tuple(
        dataclasses.replace(v, servers=tuple(dataclasses.replace(s, forward=methods.get(s.name, s.forward))
                                             for s in v.servers))
        for v in config.virtuals))


def mixed_director(cf: str, methods: dict[str, str]) -> Director:
    d = Director(cf)
    d.config = with_methods(d.config, methods)
    d.tables = tb.compile(d.config)
    d.ct = en.attach(ctm.create(1024, 1), d.tables)
    d.counters = en.new_counters(d.tables)
    return d


def _conn_flags(d: Director, cport: int) -> int:
    e = d.entry(6, CLIENT, cport, VIP, VPORT)
    return e.flags & (ctm.F_FWD_MASK | ctm.F_NOOUTPUT)


def test_each_new_connection_takes_its_servers_method():
    """One service, a Masq, a Route and a Tunnel server (ip_vs_bind_dest: the connection's
    flags come from its dest): each new connection is forwarded, rewritten and keyed as
    its server's method says, and so are its later packets."""
    d = mixed_director(MIXED_CF, MIXED)
    assert d.tables.svc[0]["fwd"] == ctm.FWD_MASQ  # the file's network: not what decides
    seen = {}
    for k in range(3):  # rr: one connection per server
        cport = CPORT + k
        [(verdict, reason, row, out)] = d.send([tcp(CLIENT, VIP, cport, VPORT, "S")])
        seen[d.rip(row)] = cport
        if d.rip(row) == RIP1:
            assert (verdict, reason) == (en.V_NAT, "nat_in")
            assert out == bytes(tcp(CLIENT, RIP1, cport, RPORT, "S"))
            assert _conn_flags(d, cport) == ctm.FWD_MASQ
        elif d.rip(row) == RIP2:
            assert (verdict, reason) == (en.V_DR, "dr")
            assert out == bytes(tcp(CLIENT, VIP, cport, VPORT, "S"))
            assert _conn_flags(d, cport) == ctm.FWD_DROUTE | ctm.F_NOOUTPUT
        else:
            assert d.rip(row) == RIP3
            assert (verdict, reason) == (en.V_TUNNEL, "tunnel")
            assert out == bytes(IP(src=DIRECTOR, dst=RIP3, id=0, ttl=64) / tcp(CLIENT, VIP, cport, VPORT, "S"))
            assert _conn_flags(d, cport) == ctm.FWD_TUNNEL | ctm.F_NOOUTPUT
    assert sorted(seen) == [RIP1, RIP2, RIP3]
    # Only the NAT server's reply is ours to rewrite; later packets keep each method.
    reply = tcp(RIP1, CLIENT, RPORT, seen[RIP1], "SA", seq=5000, ack=1001)
    [(verdict, reason, _, out)] = d.send([reply])
    assert (verdict, reason) == (en.V_NAT, "nat_out")
    assert out == bytes(tcp(VIP, CLIENT, VPORT, seen[RIP1], "SA", seq=5000, ack=1001))
    got = d.send([tcp(CLIENT, VIP, seen[rip], VPORT, "A", seq=1001, ack=5001) for rip in (RIP1, RIP2, RIP3)])
    assert [g[:2] for g in got] == [(en.V_NAT, "nat_in"), (en.V_DR, "dr"), (en.V_TUNNEL, "tunnel")]
    assert [d.rip(g[2]) for g in got] == [RIP1, RIP2, RIP3]
    assert en.reason_counts(d.counters) == {"nat_in": 2, "nat_out": 1, "dr": 2, "tunnel": 2}


def test_persistence_template_takes_its_servers_method():
    cf = HEAD.format(network="direct") + virtual(
        "www", VIP, VPORT, sched="rr", servers=[("web1", RIP1, None, 1), ("web2", RIP2, None, 1)],
        extra="     persistent = 300\n     pmask = 255.255.255.0")
    d = mixed_director(cf, {"web1": "tunnel"})
    rips = {}
    for client, cport in ((CLIENT, CPORT), (CLIENT3, CPORT)):  # two /24s: rr gives each a server
        [(verdict, _, row, _)] = d.send([tcp(client, VIP, cport, VPORT, "S")])
        rips[client] = (d.rip(row), verdict)
    assert sorted(r for r, _ in rips.values()) == [RIP1, RIP2]
    want = {RIP1: (en.V_TUNNEL, ctm.FWD_TUNNEL), RIP2: (en.V_DR, ctm.FWD_DROUTE)}
    for client, (rip, verdict) in rips.items():
        assert verdict == want[rip][0]
        snet = ip2int(client) & 0xFFFFFF00
        n = ctm.lookup_template(d.ct, 6, snet, ip2int(VIP), VPORT, NOW)
        assert n >= 0 and d.ct.entries[n]["flags"] & ctm.F_FWD_MASK == want[rip][1]
    # a new connection of the first client's /24 follows its template, with that method
    [(verdict, _, row, _)] = d.send([tcp(CLIENT2, VIP, 50000, VPORT, "S")])
    assert d.rip(row) == rips[CLIENT][0] and verdict == want[rips[CLIENT][0]][0]


def test_method_change_applies_to_new_connections_only():
    """ipvsadm -e -i on a -g server: its established connection stays direct-routed (the
    kernel's connections keep their flags), the next one is tunnelled."""
    d = Director(HEAD.format(network="direct") + virtual("www", VIP, VPORT, servers=[("web1", RIP1, None, 1)]))
    assert d.send([tcp(CLIENT, VIP, CPORT, VPORT, "S")])[0][:2] == (en.V_DR, "dr")
    d.config = with_methods(d.config, {"web1": "tunnel"})
    d.reconfigure()
    assert d.send([tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001)])[0][:2] == (en.V_DR, "dr")
    assert d.send([tcp(CLIENT, VIP, CPORT + 1, VPORT, "S")])[0][:2] == (en.V_TUNNEL, "tunnel")
