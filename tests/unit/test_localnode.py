"""LOCALNODE: a real server at one of the director's own addresses is the director itself
(the kernel's __ip_vs_update_dest marks it so, ipvsadm shows it as ``Local``): its
connections are scheduled and counted like any other, and their packets go on, unchanged,
to the director's own stack (ip_vs_null_xmit)."""

from __future__ import annotations

import pytest
from feed_director import feed_directors
from golden import CLIENT, CPORT, HEAD, RIP1, RIP2, VIP, VPORT, Director, ip2int, tcp, virtual
from scapy.layers.inet import ICMP, IP, TCP

import pylvs.netctl as NETCTL
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.sched import ADDR, FWD

CF = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="rr", servers=[("me", RIP1, None, 1)])


def _local_director() -> Director:
    d = Director(CF)
    d.tables = tb.compile(d.config, local=frozenset({RIP1}))
    d.ct = en.attach(ctm.create(1024, 1, key=d.ct.key), d.tables)
    d.counters = en.new_counters(d.tables)
    return d


def test_a_server_at_a_local_address_compiles_to_localnode_whatever_its_method():
    for network in ("nat", "direct", "tunnel"):
        cf = CF.replace("network = nat", f"network = {network}")
        d = Director(cf)
        t = tb.compile(d.config, local=frozenset({RIP1}))
        rows = [r for r in range(t.dest.shape[0]) if t.dest[r, ADDR] == ip2int(RIP1)]
        assert [int(t.dest[r, FWD]) for r in rows] == [ctm.FWD_LOCALNODE], network
        assert int(tb.compile(d.config).dest[rows[0], FWD]) != ctm.FWD_LOCALNODE  # not local: its method


def test_localnode_connections_pass_unchanged_to_the_local_stack_and_are_counted():
    d = _local_director()
    syn = tcp(CLIENT, VIP, CPORT, VPORT)
    [(verdict, reason, row, out)] = d.send([syn])
    assert (verdict, reason) == (en.V_PASS, "local") and out == bytes(syn)
    assert row >= 0 and d.rip(row) == RIP1
    e = d.entry(6, CLIENT, CPORT, VIP, VPORT)
    assert e.state == "SYN_RECV" and e.flags & ctm.F_NOOUTPUT and e.flags & ctm.F_FWD_MASK == ctm.FWD_LOCALNODE
    ack = tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001)
    [(verdict, reason, _, out)] = d.send([ack])
    assert (verdict, reason, out) == (en.V_PASS, "local", bytes(ack))
    assert d.entry(6, CLIENT, CPORT, VIP, VPORT).state == "ESTABLISHED"  # INPUT_ONLY, as DR
    assert d.counters.dest[row, en.S_CONNS] == 1 and d.counters.dest[row, en.S_INPKTS] == 2
    # An ICMP error from the client's side about the local server's reply: to the stack too.
    err = IP(src=CLIENT, dst=VIP) / ICMP(type=3, code=4) / bytes(IP(src=VIP, dst=CLIENT) / TCP(
        sport=VPORT, dport=CPORT))[:28]
    [(verdict, reason, _, out)] = d.send([err])
    assert (verdict, reason, out) == (en.V_PASS, "icmp_local", bytes(err))


@pytest.fixture
def director(tmp_path):
    yield from feed_directors(tmp_path)


def test_the_director_finds_its_own_addresses_and_lists_the_server_as_local(director):
    two = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="rr",
                                               servers=[("me", RIP1, None, 1), ("other", RIP2, None, 1)])
    ctl = NETCTL.DryRun(addresses=[NETCTL.Address(RIP1, 24, "eth1", "eth1")])
    d, _ = director(two, ctl=ctl)
    [svc] = d.status()["services"]
    assert {x["addr"]: x["forward"] for x in svc["dests"]} == {RIP1: "Local", RIP2: "Masq"}
