"""The Forwarder: handle, swap under the lock, snapshot, estimators and the lblc collector."""

from __future__ import annotations

import dataclasses

from golden import CLIENT, HEAD, RIP1, RIP2, VIP, VPORT, tcp, virtual

from pylvs.addr import ip_int
from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.estimator import EST_INTERVAL
from pylvs.dataplane.forwarder import Forwarder
from pylvs.sched import ADDR
from pylvs.sched._loctab import COUNT_FOR_FULL_EXPIRATION, DEFAULT_EXPIRATION_MS, H_ENTRIES


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(sched="wlc", w=(1, 1)):
    cf = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched=sched,
                                              servers=[("a", RIP1, None, w[0]), ("b", RIP2, None, w[1])])
    config = check_text(cf).config
    clock = Clock()
    return Forwarder(tb.compile(config), capacity=1024, clock=clock), config, clock


def send(f, packets):
    b = en.batch_from_packets([bytes(p) for p in packets])
    return f.handle(b)


def test_snapshot_counts_and_rates():
    f, _, clock = make()
    f.warm_up()
    f.tick_estimators()
    v = send(f, [tcp(CLIENT, VIP, 40000 + k, VPORT, "S") for k in range(10)])
    assert (v.verdict == en.V_NAT).all()
    clock.t += EST_INTERVAL
    f.tick_estimators()
    snap = f.snapshot()
    [svc] = snap["services"]
    assert svc["stats"]["conns"] == 10 and snap["connections"] == 10
    assert svc["rates"]["cps"] == 1  # 10 in 2 s = 5/s, EWMA weight 1/4 after one tick: 5 * 1/4 -> 1
    assert sum(d["inactive"] for d in svc["dests"]) == 10  # SYN_RECV counts inactive


def test_swap_keeps_connections_and_remaps_estimators():
    f, config, clock = make(w=(1, 1))
    send(f, [tcp(CLIENT, VIP, 40000, VPORT, "S")])
    f.tick_estimators()
    new_cf = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="wlc",
                                                  servers=[("a", RIP1, None, 0), ("b", RIP2, None, 1)])
    f.swap(f.compile(check_text(new_cf).config))
    assert f.tables.generation == 2 and f.snapshot()["connections"] == 1
    assert f.svc_est.avg.shape[0] == f.tables.svc.shape[0]
    assert f.dest_est.avg.shape[0] == f.tables.dest.shape[0]


def test_lblc_collector_runs_from_the_forwarder():
    f, _, clock = make(sched="lblc")
    send(f, [tcp(f"203.0.113.{k}", VIP, 40000, VPORT, "S") for k in range(1, 6)])
    _, state = f.tables.block(0)
    assert state[H_ENTRIES] == 1  # lblc keys on the destination address: one VIP, one entry
    clock.t += DEFAULT_EXPIRATION_MS / 1000 + 1  # idle longer than lblc_expiration
    for _ in range(COUNT_FOR_FULL_EXPIRATION):  # a full sweep every 30th run
        f.collect_garbage()
    assert state[H_ENTRIES] == 0


def test_quiesce_reset_zeroes_counts_and_old_connections_stop_moving_them():
    """lvs.cf quiesce_server: when a server comes back, the service's least-connection
    counts restart at 0; connections made before keep being forwarded but never move
    the counters again (so they cannot go negative), new ones count as usual."""
    f, _, clock = make()
    send(f, [tcp(CLIENT, VIP, 40000 + k, VPORT, "S") for k in range(4)])
    send(f, [tcp(CLIENT, VIP, 40000 + k, VPORT, "A", seq=1001, ack=1) for k in range(2)])  # 2 ESTABLISHED
    [svc] = f.snapshot()["services"]
    assert sum(d["active"] for d in svc["dests"]) == 2 and sum(d["inactive"] for d in svc["dests"]) == 2
    assert f.reset_counts(0) == 4
    [svc] = f.snapshot()["services"]
    assert all(d["active"] == d["inactive"] == 0 for d in svc["dests"])
    v = send(f, [tcp(CLIENT, VIP, 40000, VPORT, "F", seq=1001, ack=1)])  # an old one closes
    assert v.verdict[0] == en.V_NAT
    [svc] = f.snapshot()["services"]
    assert all(d["active"] == d["inactive"] == 0 for d in svc["dests"])
    send(f, [tcp(CLIENT, VIP, 50000, VPORT, "S")])  # a new one counts
    [svc] = f.snapshot()["services"]
    assert sum(d["inactive"] for d in svc["dests"]) == 1


def _close(f, k, server_port=None):
    """A whole NAT connection from client port 40000+k: handshake, FINs both ways (TIME_WAIT)."""
    cport = 40000 + k
    [syn] = send(f, [tcp(CLIENT, VIP, cport, VPORT, "S")]).dest_row
    rip = RIP1 if f.tables.dest[syn, ADDR] == ip_int(RIP1) else RIP2
    send(f, [tcp(rip, CLIENT, VPORT, cport, "SA")])
    send(f, [tcp(CLIENT, VIP, cport, VPORT, "A"), tcp(CLIENT, VIP, cport, VPORT, "FA")])
    send(f, [tcp(rip, CLIENT, VPORT, cport, "FA")])
    send(f, [tcp(CLIENT, VIP, cport, VPORT, "A")])


def test_expiry_on_a_clock_ends_idle_connections():
    """20 closed connections, then no packet for the TIME_WAIT timeout plus 2 s: without
    the clock-driven sweep their InActConn stay; expire() (what the director's control
    loop calls) brings them to 0 and the wlc tree sees the new counts."""
    f, _, clock = make(sched="wlc")
    for k in range(20):
        _close(f, k)
    snap = f.snapshot()
    assert sum(d["inactive"] for d in snap["services"][0]["dests"]) == 20
    assert {e.state for e in ctm.live_entries(f.ct)} == {"TIME_WAIT"}
    clock.t += ctm.DEFAULT_TIMEOUTS["TIME_WAIT"] + 2
    assert sum(d["inactive"] for d in f.snapshot()["services"][0]["dests"]) == 20  # nothing moved them yet
    removed = sum(f.expire(256) for _ in range(1024 // 256))
    assert removed == 20
    snap = f.snapshot()
    assert snap["connections"] == 0
    assert [(d["active"], d["inactive"]) for d in snap["services"][0]["dests"]] == [(0, 0), (0, 0)]
    en._refresh_trees(f.tables)  # the tree the sweep left is the one a rebuild gives
    before = f.tables.state.copy()
    en._refresh_trees(f.tables)
    assert (f.tables.state == before).all()


def test_snapshot_fields_for_ipvsadm():
    """Each dest's forward comes from its own row; the fields ipvsadm 1.31 lists that
    pylvs has one answer for are there; services in table order, dests head first."""
    cf = (HEAD.format(network="nat")
          + virtual("www", VIP, VPORT, sched="sh",
                    servers=[("a", RIP1, 8080, 1), ("b", RIP2, None, 2), ("c", "10.0.0.4", None, 3)])
          + virtual("dns", VIP, 53, proto="udp", sched="rr", servers=[("a", RIP1, None, 1)]))
    config = check_text(cf).config
    www, dns = config.virtuals
    methods = {"b": "direct", "c": "tunnel"}
    www = dataclasses.replace(www, sched_flags=3, servers=tuple(
        dataclasses.replace(s, forward=methods.get(s.name), u_threshold=9 if s.name == "a" else 0,
                            l_threshold=4 if s.name == "a" else 0) for s in www.servers))
    config = dataclasses.replace(config, virtuals=(www, dataclasses.replace(dns, sched_flags=4)))
    f = Forwarder(tb.compile(config), capacity=64, clock=Clock())
    snap = f.snapshot()
    assert [(s["proto"], s["port"]) for s in snap["services"]] == [("TCP", VPORT), ("UDP", 53)]
    svc, udp_svc = snap["services"]
    assert (svc["sched_flags"], svc["ops"], svc["pe"], svc["af"]) == (3, False, None, 4)
    assert udp_svc["sched_flags"] == 4  # kept for display though rr ignores it
    got = [(d["addr"], d["port"], d["forward"], d["weight"], d["uthreshold"], d["lthreshold"], d["tun_type"],
            d["tun_port"], d["tun_flags"]) for d in svc["dests"]]
    assert got == [  # the list head is the last added
        ("10.0.0.4", VPORT, "Tunnel", 3, 0, 0, "ipip", None, None),
        (RIP2, VPORT, "Route", 2, 0, 0, None, None, None),
        (RIP1, 8080, "Masq", 1, 9, 4, None, None, None),
    ]
    assert [d["forward"] for d in udp_svc["dests"]] == ["Masq"]


def test_set_tunnel_src_reaches_both_entry_points():
    """A first tunnel server after the start: the outer source changes for engine.process
    and for the C loop's struct alike."""
    f, _, _ = make()
    assert f.tunnel_src == 0
    c = f.native()
    f.set_tunnel_src(ip_int("10.0.0.1"))
    assert f.tunnel_src == c.tunnel_src == ip_int("10.0.0.1")
