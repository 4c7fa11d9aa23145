"""Random sequences of configs (servers added/removed/reweighted, services added and
removed, health flips, scheduler changes) with random connection counters between
compiles: the invariants the forwarding engine relies on at every swap."""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.config.check import check
from pylvs.config.diagnostics import has_errors
from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer
from pylvs.dataplane import tables as T
from pylvs.sched import ACT, ADDR, ALGORITHMS, F_AVAILABLE, FLAGS, INACT, PORT, W, check_dests

VIP = IPv4Address("192.0.2.10")
SORRY = IPv4Address("10.0.1.200")
# (name, port, fwmark): the services a config may hold
SERVICES = (("a", 80, 0), ("b", 81, 0), ("m", 80, 7))
RIPS = tuple(range(1, 13))
ALGS = ("rr", "wrr", "wlc", "lc", "sh", "mh", "lblc")

server_st = st.tuples(st.sampled_from(RIPS), st.sampled_from((80, 8080)), st.integers(0, 5))
service_st = st.fixed_dictionaries({
    "on": st.booleans(),
    "alg": st.sampled_from(ALGS),
    "servers": st.lists(server_st, max_size=10, unique_by=lambda s: (s[0], s[1])),
    "quiesce": st.booleans(),
    "sorry": st.booleans(),
    "down": st.sets(st.sampled_from(RIPS), max_size=6),
})
ops_st = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3), st.integers(0, 3),
                            st.integers(0, 2)), max_size=12)
# (config of each service, counter changes after the swap, counter changes on the old
# tables between the next compile and its swap)
step_st = st.tuples(st.tuples(*[service_st] * len(SERVICES)), ops_st, ops_st)


def build(step):
    virtuals, health = [], {}
    for (name, port, mark), spec in zip(SERVICES, step, strict=True):
        if not spec["on"]:
            continue
        servers = tuple(RealServer(name=f"r{rip}-{p}", address=IPv4Address(f"10.0.0.{rip}"), active=True,
                                   weight=w, port=p) for rip, p, w in spec["servers"])
        v = VirtualServer(name=name, active=True, address=BoundAddress(VIP, "eth0:1"), port=port,
                          fwmark=mark, persistent=60 if mark else 0, scheduler=spec["alg"],
                          quiesce_server=spec["quiesce"], sorry_server=SORRY if spec["sorry"] else None,
                          servers=servers)
        virtuals.append(v)
    c = Config(primary=IPv4Address("192.0.2.2"), network="nat", virtuals=tuple(virtuals))
    for v in c.virtuals:
        spec = step[[s[0] for s in SERVICES].index(v.name)]
        for s in v.servers:
            if int(s.address) & 0xFF in spec["down"]:
                health[T.health_key(c, v, s)] = T.HealthState(up=False)
    return c, health


def expected_list(c, health):
    """{service key: {(addr, port): weight}} by the rules (health, quiesce, sorry)."""
    out = {}
    for v in c.virtuals:
        want, up = {}, False
        for s in v.servers:
            h = health.get(T.health_key(c, v, s))
            ident = (int(s.address), v.server_port(s))
            if h is None or h.up:
                up = True
                want[ident] = s.weight
            elif v.quiesce_server:
                want[ident] = 0
        if not up and v.sorry_server is not None:
            want.setdefault((int(v.sorry_server), v.port), 1)
        out[T._norm_skey(T.service_key(v))] = want
    return out


def identities(t):
    """{(service key, addr, port): row} of every row that holds a server: in the list,
    counted, or removed in this generation (zeroed rows are free)."""
    out = {}
    for i in range(t.svc.shape[0]):
        k = T._row_skey(t.svc[i])
        off, cap = int(t.svc[i]["dest_off"]), int(t.svc[i]["dest_cap"])
        for r in range(off, off + cap):
            d = t.dest[r]
            if d[FLAGS] & F_AVAILABLE or d[ACT] or d[INACT] or t.persist[r] or d[ADDR] or d[PORT]:
                ident = (k, int(d[ADDR]), int(d[PORT]))
                assert ident not in out, f"two rows for {ident}"
                out[ident] = r
    return out


def set_counters(t, ops):
    """Connections come and go on the old tables: any count on a row in the list, only
    fewer on a row out of it (no new connection reaches a removed server)."""
    occupied = sorted(identities(t).values())
    if not occupied:
        return
    for pick, a, b, p in ops:
        r = occupied[pick % len(occupied)]
        if t.dest[r, FLAGS] & F_AVAILABLE:
            t.dest[r, ACT], t.dest[r, INACT], t.persist[r] = a, b, p
        else:
            t.dest[r, ACT] = min(a, t.dest[r, ACT])
            t.dest[r, INACT] = min(b, t.dest[r, INACT])
            t.persist[r] = min(p, t.persist[r])


def check_trees(t):
    """The lc-family trees agree with the counters (tree pick == the kernel's linear scan)."""
    for i, s in enumerate(t.svc):
        name = T.NAMES[int(s["alg_id"])]
        if name in ("lc", "wlc") and s["active"]:
            dest, state = t.block(i)
            mod = ALGORITHMS[name]
            assert mod._schedule_kernel(dest, state, 1, 2, 3, 4, 0) == mod._linear_kernel(dest, state, 1, 2, 3, 4, 0)


def check_invariants(prev, t, c, health):
    # blocks lie in the array, do not overlap, and own their rows
    spans = sorted((int(s["dest_off"]), int(s["dest_cap"]), i) for i, s in enumerate(t.svc))
    end = 0
    for off, cap, i in spans:
        assert off >= end and off + cap <= t.dest.shape[0]
        assert cap >= T.BLOCK_MIN and cap & (cap - 1) == 0
        assert (t.dest_svc[off:off + cap] == i).all()
        end = off + cap
        dest, state = t.block(i)
        check_dests(dest)
        assert dest.flags.c_contiguous
    check_trees(t)
    assert (t.dest_svc[[r for r in range(t.dest.shape[0]) if not any(o <= r < o + c_ for o, c_, _ in spans)]]
            == -1).all()
    # the list is what config + health say
    want = expected_list(c, health)
    active = {T._row_skey(s): i for i, s in enumerate(t.svc) if s["active"]}
    assert set(active) == set(want)
    for k, i in active.items():
        got = {(int(t.dest[r, ADDR]), int(t.dest[r, PORT])): int(t.dest[r, W]) for r in T.list_rows(t, i)}
        assert got == want[k]
    # lookups find exactly the active services
    for _name, port, mark in SERVICES:
        k = ("fwmark", mark) if mark else (6, int(VIP), port)
        found = T.find_fwmark(t.fwm_keys, t.fwm_idx, mark) if mark else T.find_service(
            t.svc_keys, t.svc_keys_idx, 6, int(VIP), port)
        assert found == active.get(k, -1)
    # identities: one per occupied row, unique, and id_row is their inverse
    ids = t.dest_id[t.dest_id >= 0]
    assert len(set(ids.tolist())) == ids.size
    assert ((t.id_row >= 0).sum()) == ids.size
    for r in np.flatnonzero(t.dest_id >= 0):
        assert t.id_row[t.dest_id[r]] == r
    if prev is None:
        assert t.generation == 1
        assert (t.dest_id[t.dest_id >= 0] == np.flatnonzero(t.dest_id >= 0)).all()  # a first compile: id == row
        return
    assert t.generation == prev.generation + 1
    # a server keeps its identity wherever its row goes (entries never need touching)
    for r in np.flatnonzero(t.row_map >= 0):
        assert t.dest_id[t.row_map[r]] == prev.dest_id[r] >= 0
    assert t.row_map.shape[0] == prev.dest.shape[0]
    old, new = identities(prev), identities(t)
    for ident, r in old.items():
        referenced = prev.dest[r, ACT] or prev.dest[r, INACT] or prev.persist[r]
        if ident in new:
            m = new[ident]
            assert t.row_map[r] == m
            assert (t.dest[m, ACT], t.dest[m, INACT], t.persist[m]) == (
                prev.dest[r, ACT], prev.dest[r, INACT], prev.persist[r])
        if referenced or prev.dest[r, FLAGS] & F_AVAILABLE:
            # still referenced, or removed just now: the row stays with its server
            assert ident in new and t.row_map[r] == new[ident]
    # a mapped row always carries the same server
    for r in np.flatnonzero(t.row_map >= 0):
        m = t.row_map[r]
        assert (t.dest[m, ADDR], t.dest[m, PORT]) == (prev.dest[r, ADDR], prev.dest[r, PORT])
        assert T._row_skey(t.svc[t.dest_svc[m]]) == T._row_skey(prev.svc[prev.dest_svc[r]])
    # list order of the servers in both lists is kept
    for s in t.svc:
        k = T._row_skey(s)
        pi = T.service_index(prev, k)
        if pi < 0:
            continue
        both = [r for r in T.list_rows(prev, pi) if t.row_map[r] >= 0 and t.dest[t.row_map[r], FLAGS] & F_AVAILABLE]
        mapped = [int(t.row_map[r]) for r in both]
        assert mapped == sorted(mapped)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_st, min_size=1, max_size=8))
def test_recompile_invariants(steps):
    prev = None
    for services, ops, late_ops in steps:
        c, health = build(services)
        assert not has_errors(check(c)) or not c.virtuals
        t = T.compile(c, health=health, previous=prev)
        check_invariants(prev, t, c, health)
        if prev is not None:
            # packets handled by the old tables between compile and swap
            set_counters(prev, late_ops)
            T.adopt_counters(t, prev)
            for r in range(prev.dest.shape[0]):
                if prev.dest[r, ACT] or prev.dest[r, INACT] or prev.persist[r]:
                    m = t.row_map[r]
                    assert m >= 0
                    assert (t.dest[m, ACT], t.dest[m, INACT], t.persist[m]) == (
                        prev.dest[r, ACT], prev.dest[r, INACT], prev.persist[r])
            check_trees(t)
        set_counters(t, ops)
        prev = t
