"""pylvs.dataplane.tables: compile lvs.cf + health (+ previous tables) into Tables."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np
import pytest

from pylvs.config import load
from pylvs.config.check import check
from pylvs.config.diagnostics import has_errors
from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer
from pylvs.dataplane import conntab
from pylvs.dataplane import tables as T
from pylvs.sched import (
    ACT,
    ADDR,
    ALGORITHMS,
    F_AVAILABLE,
    F_OVERLOAD,
    FLAGS,
    FWD,
    INACT,
    LASTW,
    LTHR,
    NFIELDS,
    PORT,
    UTHR,
    WEIGHT_MAX,
    Scheduler,
    W,
    check_dests,
)
from pylvs.sched._dispatch import ALG_ID

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("lvs.cf.*"))
VIP = IPv4Address("192.0.2.10")


# ----------------------------------------------------------------- helpers


def rs(n: int, weight: int = 1, port: int | None = None, active: bool = True) -> RealServer:
    return RealServer(name=f"r{n}", address=IPv4Address(f"10.0.0.{n}"), active=active, weight=weight, port=port)


def vs(servers, name="www", port=80, protocol="tcp", scheduler="wlc", vip=VIP, **kw) -> VirtualServer:
    return VirtualServer(name=name, active=True, address=BoundAddress(vip, "eth0:1"), port=port,
                         protocol=protocol, scheduler=scheduler, servers=tuple(servers), **kw)


def conf(*virtuals, network="nat", **kw) -> Config:
    c = Config(primary=IPv4Address("192.0.2.2"), network=network, virtuals=tuple(virtuals), **kw)
    diags = check(c)
    assert not has_errors(diags), [str(d) for d in diags]
    return c


def key(v: VirtualServer):
    return T.service_key(v)


def svc_of(t, v):
    i = T.service_index(t, key(v))
    assert i >= 0
    return i


def in_list(t, i):
    """[(row, addr, port, weight)] of service i, list order (head first)."""
    return [(r, int(t.dest[r, ADDR]), int(t.dest[r, PORT]), int(t.dest[r, W])) for r in T.list_rows(t, i)]


def row_of(t, i, n, port=80):
    s = t.svc[i]
    off, cap = int(s["dest_off"]), int(s["dest_cap"])
    for r in range(off, off + cap):
        if t.dest[r, ADDR] == int(IPv4Address(f"10.0.0.{n}")) and t.dest[r, PORT] == port:
            return r
    return -1


def down(c, v, s):
    return {T.health_key(c, v, s): T.HealthState(up=False)}


# ----------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_compile_to_their_services(path):
    c = load(str(path))
    t = T.compile(c)
    assert t.generation == 1
    actives = [v for v in c.virtuals if v.active]
    assert t.svc.shape[0] == len(actives)
    fwd = {"nat": conntab.FWD_MASQ, "direct": conntab.FWD_DROUTE, "tunnel": conntab.FWD_TUNNEL}[c.network]
    for v in actives:
        i = svc_of(t, v)
        s = t.svc[i]
        assert s["active"] == 1
        assert s["alg_id"] == ALG_ID[v.scheduler]
        assert s["fwd"] == fwd
        assert s["fwmark"] == v.fwmark
        assert s["proto"] == (0 if v.fwmark else {"tcp": 6, "udp": 17}[v.protocol])
        assert s["vaddr"] == int(v.vip) and s["vport"] == v.port
        assert bool(s["flags"] & T.SVC_F_PERSISTENT) == (v.persistent > 0)
        assert s["timeout"] == v.persistent
        assert s["pmask"] == (0xFFFFFFFF if v.pmask == IPv4Address("0.0.0.0") else int(v.pmask))
        # servers in the list, list head = last in the file (each add goes to the head)
        want = [(int(r.address), T.dest_port(c, v, r), r.weight) for r in v.servers if r.active]
        got = [(a, p, w) for _, a, p, w in in_list(t, i)]
        assert got == want[::-1]
        dest, state = t.block(i)
        check_dests(dest)
        assert dest.base is t.dest or dest.base is t.dest.base
        # lookup finds it by fwmark, or by (proto, VIP, port)
        if v.fwmark:
            assert T.lookup_service(t, 6, int(v.vip), v.port, v.fwmark) == i
        else:
            assert T.lookup_service(t, s["proto"], int(v.vip), v.port) == i
            assert T.lookup_service(t, s["proto"], int(v.vip), v.port + 1) == -1
    assert list(t.timeouts) == [c.tcp_timeout, c.tcpfin_timeout, c.udp_timeout]


def test_pmask_and_persistence_fields():
    v = vs([rs(1)], persistent=300, pmask=IPv4Address("255.255.255.0"))
    t = T.compile(conf(v))
    s = t.svc[0]
    assert s["flags"] == T.SVC_F_PERSISTENT and s["timeout"] == 300 and s["pmask"] == 0xFFFFFF00


def test_timeouts_and_generation():
    c = conf(vs([rs(1)]), tcp_timeout=900, tcpfin_timeout=120, udp_timeout=300)
    t1 = T.compile(c)
    t2 = T.compile(c, previous=t1)
    assert list(t2.timeouts) == [900, 120, 300]
    assert (t1.generation, t2.generation) == (1, 2)


def test_broken_invariants_raise():
    v = vs([rs(1)])
    c = conf(v)
    bad = dataclasses.replace(c, virtuals=(dataclasses.replace(v, scheduler="nope"),))
    with pytest.raises(ValueError, match="scheduler"):
        T.compile(bad)
    with pytest.raises(ValueError, match="twice"):
        T.compile(dataclasses.replace(c, virtuals=(v, v)))
    with pytest.raises(ValueError, match="port 0"):
        T.compile(dataclasses.replace(c, virtuals=(dataclasses.replace(v, port=0),)))


def test_inactive_virtuals_and_servers_are_left_out():
    a = vs([rs(1), rs(2, active=False)])
    b = dataclasses.replace(vs([rs(3)], name="b", port=81), active=False)
    t = T.compile(conf(a, b))
    assert t.svc.shape[0] == 1
    assert [x[1] for x in in_list(t, 0)] == [int(IPv4Address("10.0.0.1"))]


# ----------------------------------------------------------------- lookup


def test_lookup_order_fwmark_exact_port0():
    fw = vs([rs(1)], name="fw", fwmark=5, persistent=60)
    exact = vs([rs(2)], name="exact", port=80)
    any_port = vs([rs(3)], name="any", port=0, persistent=60)
    udp = vs([rs(4)], name="dns", port=53, protocol="udp")
    t = T.compile(conf(fw, exact, any_port, udp))
    ifw, iex, iany, iudp = (svc_of(t, v) for v in (fw, exact, any_port, udp))
    vip = int(VIP)
    assert T.lookup_service(t, 6, vip, 80, 5) == ifw  # marked: the fwmark service first
    assert T.lookup_service(t, 6, vip, 80, 0) == iex  # unmarked: exact
    assert T.lookup_service(t, 6, vip, 80, 7) == iex  # unknown mark: exact
    assert T.lookup_service(t, 6, vip, 443, 0) == iany  # port-0 persistent service
    assert T.lookup_service(t, 17, vip, 53, 0) == iudp
    assert T.lookup_service(t, 17, vip, 54, 0) == -1  # no udp port-0 service
    assert T.lookup_service(t, 6, vip + 1, 80, 0) == -1
    # the numba functions directly
    assert T.find_fwmark(t.fwm_keys, t.fwm_idx, 5) == ifw
    assert T.find_fwmark(t.fwm_keys, t.fwm_idx, 6) == -1
    assert T.find_service(t.svc_keys, t.svc_keys_idx, 6, vip, 0) == iany


def test_lookup_sends_ftp_data_ports_to_the_port_21_service():
    """ip_vs_service_find: TCP to port 20 or an unprivileged port of a VIP that has a
    port-21 service may be an FTP data connection, so it is that service's, before the
    port-0 service; privileged ports and UDP are not."""
    ftp = vs([rs(1)], name="ftp", port=21, persistent=300)
    any_port = vs([rs(2)], name="any", port=0, persistent=60)
    udp21 = vs([rs(3)], name="udp21", port=21, protocol="udp", send="x")
    t = T.compile(conf(ftp, any_port, udp21))
    iftp, iany, iudp = svc_of(t, ftp), svc_of(t, any_port), svc_of(t, udp21)
    vip = int(VIP)
    assert T.lookup_service(t, 6, vip, 21) == iftp
    assert T.lookup_service(t, 6, vip, 20) == iftp  # active-mode data port
    assert T.lookup_service(t, 6, vip, 1024) == iftp  # first unprivileged port
    assert T.lookup_service(t, 6, vip, 40000) == iftp  # a passive data port
    assert T.lookup_service(t, 6, vip, 1023) == iany  # privileged: not FTP data
    assert T.lookup_service(t, 17, vip, 21) == iudp
    assert T.lookup_service(t, 17, vip, 40000) == -1  # UDP is never FTP data
    only_ftp = T.compile(conf(ftp))
    assert T.lookup_service(only_ftp, 6, vip, 443) == -1


def test_lookup_empty_tables():
    t = T.compile(Config())  # no active virtual (check refuses it; compile does not care)
    assert t.svc.shape[0] == 0 and t.dest.shape == (0, NFIELDS)
    assert T.lookup_service(t, 6, int(VIP), 80, 3) == -1


# ----------------------------------------------------------------- health


def test_health_down_removes_and_up_returns():
    servers = [rs(1), rs(2), rs(3)]
    v = vs(servers)
    c = conf(v)
    t1 = T.compile(c)
    r2 = row_of(t1, 0, 2)
    t2 = T.compile(c, health=down(c, v, servers[1]), previous=t1)
    assert r2 not in T.list_rows(t2, 0)
    assert row_of(t2, 0, 2) == r2 and not t2.dest[r2, FLAGS] & F_AVAILABLE  # trash: row kept
    assert t2.row_map[r2] == r2
    t3 = T.compile(c, previous=t2)  # up again, its identity is still in the row: taken back
    assert T.list_rows(t3, 0) == T.list_rows(t1, 0)


def test_health_down_with_quiesce_gives_weight_zero():
    servers = [rs(1, weight=5), rs(2, weight=3)]
    v = vs(servers, quiesce_server=True)
    c = conf(v)
    t1 = T.compile(c)
    t2 = T.compile(c, health=down(c, v, servers[0]), previous=t1)
    r1 = row_of(t2, 0, 1)
    assert r1 == row_of(t1, 0, 1) and r1 in T.list_rows(t2, 0)
    assert t2.dest[r1, W] == 0 and t2.dest[r1, LASTW] == 5  # LASTW keeps the last non-zero weight
    # a quiesced server gets no new connection
    dest, state = t2.block(0)
    sch = ALGORITHMS["wlc"]
    assert sch._schedule_kernel(dest, state, 1, 1, 1, 1, 0) + int(t2.svc[0]["dest_off"]) == row_of(t2, 0, 2)


def test_health_weight_override():
    servers = [rs(1, weight=100)]
    v = vs(servers)
    c = conf(v)
    t = T.compile(c, health={T.health_key(c, v, servers[0]): T.HealthState(True, 3)})
    assert in_list(t, 0)[0][3] == 3
    # keys may be spelled with strings and protocol numbers too
    t = T.compile(c, health={((6, "192.0.2.10", 80), "10.0.0.1", 80): T.HealthState(True, 7)})
    assert in_list(t, 0)[0][3] == 7


def test_sorry_server_in_and_out():
    servers = [rs(1), rs(2)]
    v = vs(servers, sorry_server=IPv4Address("10.0.0.200"))
    c = conf(v)
    t1 = T.compile(c)
    assert len(in_list(t1, 0)) == 2
    h = {**down(c, v, servers[0]), **down(c, v, servers[1])}
    t2 = T.compile(c, health=h, previous=t1)
    lst = in_list(t2, 0)
    assert [(a, p, w) for _, a, p, w in lst] == [(int(IPv4Address("10.0.0.200")), 80, 1)]
    sorry_row = lst[0][0]
    t2.dest[sorry_row, ACT] = 2  # connections on the sorry server
    t3 = T.compile(c, health=down(c, v, servers[1]), previous=t2)  # r1 is back
    assert [a for _, a, _, _ in in_list(t3, 0)] == [int(IPv4Address("10.0.0.1"))]
    assert t3.dest[sorry_row, ACT] == 2 and not t3.dest[sorry_row, FLAGS] & F_AVAILABLE


def test_no_sorry_server_no_up_server_means_empty_list():
    servers = [rs(1)]
    v = vs(servers)
    c = conf(v)
    t = T.compile(c, health=down(c, v, servers[0]))
    assert in_list(t, 0) == [] and t.svc[0]["active"] == 1
    assert T.lookup_service(t, 6, int(VIP), 80) == 0  # the service exists (ICMP unreachable, not pass)


# ----------------------------------------------------------------- row stability


def test_weight_change_keeps_row_and_edits_it():
    v = vs([rs(1, weight=2), rs(2, weight=3)])
    t1 = T.compile(conf(v))
    r1 = row_of(t1, 0, 1)
    t1.dest[r1, ACT], t1.dest[r1, INACT], t1.persist[r1] = 4, 5, 6
    v2 = vs([rs(1, weight=9), rs(2, weight=3)])
    t2 = T.compile(conf(v2), previous=t1)
    assert row_of(t2, 0, 1) == r1 and t2.row_map[r1] == r1
    assert t2.dest[r1, W] == 9 and t2.dest[r1, LASTW] == 9
    assert (t2.dest[r1, ACT], t2.dest[r1, INACT], t2.persist[r1]) == (4, 5, 6)
    v3 = vs([rs(1, weight=0), rs(2, weight=3)])
    t3 = T.compile(conf(v3), previous=t2)
    assert t3.dest[r1, W] == 0 and t3.dest[r1, LASTW] == 9
    assert T.list_rows(t3, 0) == T.list_rows(t1, 0)


def test_removed_server_keeps_row_until_counters_drain():
    v = vs([rs(1), rs(2)])
    t1 = T.compile(conf(v))
    r1 = row_of(t1, 0, 1)
    t1.dest[r1, ACT] = 1
    t2 = T.compile(conf(vs([rs(2)])), previous=t1)  # r1 removed: trash
    assert t2.row_map[r1] == r1 and t2.dest[r1, ACT] == 1 and not t2.dest[r1, FLAGS] & F_AVAILABLE
    t3 = T.compile(conf(vs([rs(2), rs(3)])), previous=t2)  # r3 is new: must not take r1's row
    r3 = row_of(t3, 0, 3)
    assert r3 != r1 and row_of(t3, 0, 1) == r1 and t3.dest[r1, ACT] == 1
    t3.dest[r1, ACT] = 0  # its last connection ended
    t4 = T.compile(conf(vs([rs(2), rs(3)])), previous=t3)  # the row is freed now
    assert row_of(t4, 0, 1) == -1 and t4.row_map[r1] == -1 and not t4.dest[r1].any()


def test_freed_head_row_is_reused_only_after_counters_drain():
    t1 = T.compile(conf(vs([rs(1), rs(2)])))
    r2 = row_of(t1, 0, 2)
    assert T.list_rows(t1, 0)[0] == r2  # the last added is the list head
    t1.dest[r2, INACT] = 1
    t2 = T.compile(conf(vs([rs(1)])), previous=t1)  # r2 removed while counted
    busy = T.compile(conf(vs([rs(1), rs(3)])), previous=t2)
    assert row_of(busy, 0, 3) == r2 - 1 and row_of(busy, 0, 2) == r2  # not given away
    t2.dest[r2, INACT] = 0  # drained
    t3 = T.compile(conf(vs([rs(1)])), previous=t2)  # the row is freed
    t4 = T.compile(conf(vs([rs(1), rs(3)])), previous=t3)
    assert row_of(t4, 0, 3) == r2 and t4.row_map[r2] == -1  # a new server, on the old head row


def test_churn_does_not_grow_blocks_forever():
    servers = list(range(1, 9))  # 8 servers -> a 16-row block
    t = T.compile(conf(vs([rs(n) for n in servers])))
    caps = set()
    nxt = 9
    for _ in range(60):  # each round the oldest server leaves and a new one comes
        servers = servers[1:] + [nxt]
        nxt += 1
        t = T.compile(conf(vs([rs(n) for n in servers])), previous=t)
        caps.add(int(t.svc[0]["dest_cap"]))
        assert [int(t.dest[r, ADDR]) & 0xFF for r in T.list_rows(t, 0)] == servers[::-1]
    assert max(caps) <= 32  # relocations pack the block: the size follows the servers


def test_new_server_takes_a_head_row():
    t1 = T.compile(conf(vs([rs(1), rs(2)])))
    head = T.list_rows(t1, 0)[0]
    t2 = T.compile(conf(vs([rs(1), rs(2), rs(3)])), previous=t1)
    assert T.list_rows(t2, 0)[0] == head - 1 == row_of(t2, 0, 3)
    assert T.list_rows(t2, 0)[1:] == T.list_rows(t1, 0)
    # same list as a Scheduler built by adding r1, r2, r3 in order
    sch = Scheduler("wlc", capacity=16)
    for n in (1, 2, 3):
        sch.add_dest(1, int(IPv4Address(f"10.0.0.{n}")), 80)
    dest, _ = t2.block(0)
    np.testing.assert_array_equal(dest, sch.dest)


def test_block_growth_remaps_rows_keeping_list_order():
    v = vs([rs(n) for n in range(1, 9)])  # 8 in a 16-row block, head at 8
    c = conf(v)
    t1 = T.compile(c)
    other = vs([rs(100)], name="other", port=81)
    t1 = T.compile(conf(v, other), previous=t1)  # another block right after ours
    old_rows = T.list_rows(t1, 0)
    for r in old_rows:
        t1.dest[r, ACT] = r
    t2 = T.compile(conf(vs([rs(n) for n in range(1, 20)]), other), previous=t1)  # 11 new: no room
    i = svc_of(t2, v)
    cap = int(t2.svc[i]["dest_cap"])
    assert cap == 64  # 19 servers -> power of two >= 2 * 19
    new_rows = T.list_rows(t2, i)
    assert len(new_rows) == 19
    mapped = [int(t2.row_map[r]) for r in old_rows]
    assert mapped == new_rows[-8:]  # the old servers keep their order at the list tail
    for r, m in zip(old_rows, mapped, strict=True):
        assert t2.dest[m, ACT] == r and t2.dest[m, ADDR] == t1.dest[r, ADDR]
    # new servers at the head, in add order (the last added is the head)
    assert [int(t2.dest[r, ADDR]) & 0xFF for r in new_rows[:11]] == list(range(19, 8, -1))
    # the other service did not move
    j = svc_of(t2, other)
    assert t2.svc[j]["dest_off"] == t1.svc[svc_of(t1, other)]["dest_off"]
    check_dests(t2.block(i)[0])


def test_removed_service_drains_then_goes():
    a = vs([rs(1)], name="a")
    b = vs([rs(2)], name="b", port=81)
    t1 = T.compile(conf(a, b))
    rb = row_of(t1, svc_of(t1, b), 2, port=81)
    t1.persist[rb] = 1
    t2 = T.compile(conf(a), previous=t1)
    ib = svc_of(t2, b)
    assert t2.svc[ib]["active"] == 0 and T.lookup_service(t2, 6, int(VIP), 81) == -1
    assert t2.row_map[rb] == rb and t2.persist[rb] == 1 and not t2.dest[rb, FLAGS] & F_AVAILABLE
    t3 = T.compile(conf(a), previous=t2)  # still counted: still there
    assert T.service_index(t3, key(b)) >= 0
    t3.persist[rb] = 0
    t4 = T.compile(conf(a), previous=t3)
    assert T.service_index(t4, key(b)) == -1 and t4.row_map[rb] == -1
    assert t4.svc_map[svc_of(t3, a)] == svc_of(t4, a)


def test_removed_service_without_counters_is_kept_one_generation():
    a = vs([rs(1)], name="a")
    b = vs([rs(2)], name="b", port=81)
    t1 = T.compile(conf(a, b))
    t2 = T.compile(conf(a), previous=t1)
    assert T.service_index(t2, key(b)) >= 0  # a connection may be made before the swap
    t3 = T.compile(conf(a), previous=t2)
    assert T.service_index(t3, key(b)) == -1


def test_service_comes_back_while_draining():
    a = vs([rs(1)], name="a")
    b = vs([rs(2)], name="b", port=81)
    t1 = T.compile(conf(a, b))
    rb = row_of(t1, svc_of(t1, b), 2, port=81)
    t1.dest[rb, INACT] = 3
    t2 = T.compile(conf(a), previous=t1)
    t3 = T.compile(conf(a, b), previous=t2)
    ib = svc_of(t3, b)
    assert t3.svc[ib]["active"] == 1 and T.list_rows(t3, ib) == [rb] and t3.dest[rb, INACT] == 3


# ----------------------------------------------------------------- counters


def test_adopt_counters_copies_via_row_map_and_updates_trees():
    v = vs([rs(1), rs(2)], scheduler="lc")
    t1 = T.compile(conf(v))
    t2 = T.compile(conf(vs([rs(1), rs(2)], scheduler="lc")), previous=t1)
    r1, r2 = row_of(t1, 0, 1), row_of(t1, 0, 2)
    t1.dest[r2, ACT] = 5  # traffic on the old tables between compile and swap
    t1.persist[r1] = 2
    T.adopt_counters(t2, t1)
    assert t2.dest[r2, ACT] == 5 and t2.persist[r1] == 2
    dest, state = t2.block(0)
    off = int(t2.svc[0]["dest_off"])
    assert ALGORITHMS["lc"]._schedule_kernel(dest, state, 0, 0, 0, 0, 0) + off == r1


# ----------------------------------------------------------------- scheduler state


def _decide(t, i, n, key=(0, 0, 0, 0)):
    dest, state = t.block(i)
    mod = ALGORITHMS[T.NAMES[int(t.svc[i]["alg_id"])]]
    off = int(t.svc[i]["dest_off"])
    return [int(mod._schedule_kernel(dest, state, *key, 0)) + off for _ in range(n)]


def test_wrr_continues_across_unchanged_recompile():
    v = vs([rs(1, weight=3), rs(2, weight=2), rs(3, weight=1)], scheduler="wrr")
    c = conf(v)
    ref = T.compile(c)
    whole = _decide(ref, 0, 12)
    t1 = T.compile(c)
    first = _decide(t1, 0, 5)
    t2 = T.compile(c, previous=t1)
    second = _decide(t2, 0, 7)
    assert first + second == whole


def test_rr_continues_and_algorithm_change_resets():
    v = vs([rs(1), rs(2), rs(3)], scheduler="rr")
    c = conf(v)
    whole = _decide(T.compile(c), 0, 5)
    t1 = T.compile(c)
    first = _decide(t1, 0, 2)
    t2 = T.compile(c, previous=t1)
    assert first + _decide(t2, 0, 3) == whole
    c2 = conf(dataclasses.replace(v, scheduler="wrr"))
    t3 = T.compile(c2, previous=t2)
    assert t3.svc[0]["alg_id"] == ALG_ID["wrr"]
    assert _decide(t3, 0, 3) == _decide(T.compile(c2), 0, 3)  # fresh state: starts at the head


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_same_decisions_as_a_hand_built_scheduler(name):
    weights = [3, 1, 0, 2, 5]
    v = vs([rs(n, weight=w) for n, w in enumerate(weights, 1)], scheduler=name)
    t = T.compile(conf(v))
    sch = Scheduler(name, capacity=16)
    for n, w in enumerate(weights, 1):
        sch.add_dest(w, int(IPv4Address(f"10.0.0.{n}")), 80)
    dest, state = t.block(0)
    np.testing.assert_array_equal(dest, sch.dest)
    np.testing.assert_array_equal(state, sch.state)
    mod = ALGORITHMS[name]
    off = int(t.svc[0]["dest_off"])
    rng = np.random.default_rng(1)
    for _ in range(40):
        k = (int(rng.integers(1, 2**32)), int(rng.integers(1, 65536)), int(VIP), 80)
        a = int(mod._schedule_kernel(dest, state, *k, 0))
        b = sch.pick(*k, 0)
        assert a == b
        if a >= 0:
            sch.bind(b)
            from pylvs.sched._common import _bind_kernel
            _bind_kernel(dest, a)
            mod._update_kernel(dest, state, a)
            assert t.dest[off + a, INACT] == sch.dest[b, INACT]


# ----------------------------------------------------------------- pylvsadm's fields


def test_forwarding_method_is_per_real_server():
    """network = direct, one server added with -m (NAT: keeps its own port), one with -i
    (tunnel: the virtual port, as -g): each row holds its own method; the service's fwd
    stays the file's network and so does the sorry server's method."""
    servers = [rs(1, port=8080, weight=1), rs(2, port=8080), rs(3, port=8080)]
    servers[0] = dataclasses.replace(servers[0], forward="nat")
    servers[2] = dataclasses.replace(servers[2], forward="tunnel")
    v = vs(servers, sorry_server=IPv4Address("10.0.0.200"))
    c = conf(v, network="direct")
    t = T.compile(c)
    assert t.svc[0]["fwd"] == conntab.FWD_DROUTE
    got = {int(t.dest[r, ADDR]) & 0xFF: (int(t.dest[r, PORT]), int(t.dest[r, FWD])) for r in T.list_rows(t, 0)}
    assert got == {1: (8080, conntab.FWD_MASQ), 2: (80, conntab.FWD_DROUTE), 3: (80, conntab.FWD_TUNNEL)}
    assert [T.health_key(c, v, s)[2] for s in servers] == [8080, 80, 80]
    everyone_down = {k: h for s in servers for k, h in down(c, v, s).items()}
    t2 = T.compile(c, health=everyone_down, previous=t)
    [sorry] = T.list_rows(t2, 0)
    assert (int(t2.dest[sorry, PORT]), int(t2.dest[sorry, FWD])) == (80, conntab.FWD_DROUTE)
    check_dests(t2.block(0)[0])


def test_forwarding_method_change_edits_the_row_in_place():
    """ipvsadm -e -i on a -g server: same row, counters kept, new method for new connections."""
    v = vs([rs(1), rs(2)], scheduler="wrr")
    c = conf(v, network="direct")
    t1 = T.compile(c)
    r1 = row_of(t1, 0, 1)
    t1.dest[r1, ACT] = 3
    v2 = dataclasses.replace(v, servers=(dataclasses.replace(v.servers[0], forward="tunnel"), v.servers[1]))
    t2 = T.compile(conf(v2, network="direct"), previous=t1)
    assert row_of(t2, 0, 1) == r1 and t2.dest[r1, ACT] == 3 and t2.dest[r1, FWD] == conntab.FWD_TUNNEL
    assert T.list_rows(t2, 0) == T.list_rows(t1, 0)


def test_thresholds_are_compiled_and_edited():
    v = vs([dataclasses.replace(rs(1), u_threshold=10, l_threshold=5), rs(2)])
    c = conf(v)
    t1 = T.compile(c)
    r1 = row_of(t1, 0, 1)
    assert (t1.dest[r1, UTHR], t1.dest[r1, LTHR]) == (10, 5)
    assert (t1.dest[row_of(t1, 0, 2), UTHR], t1.dest[row_of(t1, 0, 2), LTHR]) == (0, 0)
    t1.dest[r1, FLAGS] |= F_OVERLOAD  # 10 connections reached
    t2 = T.compile(c, previous=t1)  # unchanged: no edit, still overloaded
    assert (t2.dest[r1, UTHR], t2.dest[r1, LTHR]) == (10, 5) and t2.dest[r1, FLAGS] & F_OVERLOAD
    v3 = dataclasses.replace(v, servers=(dataclasses.replace(v.servers[0], u_threshold=20, l_threshold=0),
                                         v.servers[1]))
    t3 = T.compile(conf(v3), previous=t2)  # a higher upper threshold lifts OVERLOAD (__ip_vs_update_dest)
    assert (t3.dest[r1, UTHR], t3.dest[r1, LTHR]) == (20, 0) and not t3.dest[r1, FLAGS] & F_OVERLOAD
    check_dests(t3.block(0)[0])


def test_unchanged_thresholds_are_no_edit():
    """A recompile of the same servers with thresholds edits nothing: wrr goes on where it
    was (an edit would run ip_vs_wrr_dest_changed and restart at the head)."""
    v = vs([dataclasses.replace(rs(1, weight=3), u_threshold=100), rs(2, weight=2), rs(3, weight=1)],
           scheduler="wrr")
    c = conf(v)
    whole = _decide(T.compile(c), 0, 12)
    t1 = T.compile(c)
    first = _decide(t1, 0, 5)
    t2 = T.compile(c, previous=t1)
    assert first + _decide(t2, 0, 7) == whole


def test_weights_up_to_int_max():
    """ipvsadm 1.31 and the kernel take weights up to 2**31 - 1; the schedulers too."""
    assert WEIGHT_MAX == 2**31 - 1
    v = vs([rs(1, weight=WEIGHT_MAX), rs(2, weight=1)], scheduler="wlc")
    c = conf(v)
    t = T.compile(c)
    r1, r2 = row_of(t, 0, 1), row_of(t, 0, 2)
    assert t.dest[r1, W] == t.dest[r1, LASTW] == WEIGHT_MAX
    check_dests(t.block(0)[0])
    t.dest[r1, ACT] = 1000  # wlc: overhead 256000 / (2**31 - 1) against an idle server's 0 / 1
    t = T.compile(c, previous=t)  # (rebuilds the tree over the counters)
    assert _decide(t, 0, 1) == [r2]
    t.dest[r2, ACT] = 1  # 256 / 1 against 256000 / (2**31 - 1): the heavy server wins
    assert _decide(T.compile(c, previous=t), 0, 1) == [r1]
    for name in ("wrr", "sh", "mh", "sed", "fo", "lblcr"):
        tn = T.compile(conf(vs([rs(1, weight=WEIGHT_MAX), rs(2, weight=1)], scheduler=name)))
        assert _decide(tn, 0, 1)[0] in T.list_rows(tn, 0)
    health = {T.health_key(c, v, v.servers[1]): T.HealthState(True, WEIGHT_MAX)}
    assert T.compile(c, health=health).dest[r2, W] == WEIGHT_MAX
    with pytest.raises(ValueError, match="weight"):
        T.compile(c, health={T.health_key(c, v, v.servers[1]): T.HealthState(True, WEIGHT_MAX + 1)})


@pytest.mark.parametrize("name", ["sh", "mh"])
def test_sched_flags_reach_sh_and_mh(name):
    """ipvsadm -b sh-fallback,sh-port (1 | 2): the state is built with them, a change of
    flags rebuilds it, and the decisions are those of a Scheduler built with them."""
    v = vs([rs(1, weight=2), rs(2, weight=1), rs(3, weight=0)], scheduler=name)
    t0 = T.compile(conf(v))
    assert t0.svc[0]["sched_flags"] == 0 and t0.block(0)[1][0] == 0
    t1 = T.compile(conf(dataclasses.replace(v, sched_flags=3)), previous=t0)
    dest, state = t1.block(0)
    assert t1.svc[0]["sched_flags"] == 3 and state[0] == 3  # sh state[0], mh H_FLAGS: fallback | port
    sch = Scheduler(name, capacity=16, fallback=True, port=True)
    for n, w in ((1, 2), (2, 1), (3, 0)):
        sch.add_dest(w, int(IPv4Address(f"10.0.0.{n}")), 80)
    np.testing.assert_array_equal(dest, sch.dest)
    np.testing.assert_array_equal(state, sch.state)
    t2 = T.compile(conf(dataclasses.replace(v, sched_flags=1)), previous=t1)
    assert t2.block(0)[1][0] == 1
    t3 = T.compile(conf(v), previous=t2)
    np.testing.assert_array_equal(t3.block(0)[1], t0.block(0)[1])


def test_sched_flags_are_kept_for_other_schedulers():
    v = vs([rs(1), rs(2)], scheduler="rr", sched_flags=4)
    t = T.compile(conf(v))
    assert t.svc[0]["sched_flags"] == 4
    np.testing.assert_array_equal(t.block(0)[1], T.compile(conf(dataclasses.replace(v, sched_flags=0))).block(0)[1])
    t2 = T.compile(conf(vs([rs(1), rs(2)], scheduler="rr")), previous=t)
    assert t2.svc[0]["sched_flags"] == 0
    with pytest.raises(ValueError, match="scheduler flags"):
        T.compile(dataclasses.replace(conf(v), virtuals=(dataclasses.replace(v, sched_flags=8),)))


def test_method_helpers_for_the_director():
    nat_only = conf(vs([rs(1)]))
    assert (T.needs_next_hops(nat_only), T.uses_tunnel(nat_only), T.uses_nat(nat_only)) == (False, False, True)
    direct = conf(vs([rs(1)]), network="direct")
    assert (T.needs_next_hops(direct), T.uses_tunnel(direct), T.uses_nat(direct)) == (True, False, False)
    mixed = conf(vs([rs(1), dataclasses.replace(rs(2), forward="tunnel")]))
    assert (T.needs_next_hops(mixed), T.uses_tunnel(mixed), T.uses_nat(mixed)) == (True, True, True)
    all_dr = conf(vs([dataclasses.replace(rs(1), forward="direct")]))  # network nat, no NAT server
    assert (T.needs_next_hops(all_dr), T.uses_nat(all_dr)) == (True, False)
    no_server = conf(vs([]), network="tunnel")  # the file's network when there is no server
    assert T.forward_methods(no_server) == {"tunnel"} and T.uses_tunnel(no_server)
