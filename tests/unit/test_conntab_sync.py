"""Connection sync on the connection table: connsync.collect_sync (the master's due rule)
and connsync.apply_sync (the backup), then whole failovers: node A forwards, its records
go through the wire format to node B, and B forwards the same connection the same way."""

from __future__ import annotations

import dataclasses

import naive
import numpy as np
from golden import (
    CLIENT,
    CLIENT2,
    CLIENT3,
    CPORT,
    DR_CF,
    NAT_CF,
    NOW,
    PERSIST_CF,
    RIP1,
    RIP2,
    RPORT,
    VIP,
    VPORT,
    Director,
    ip2int,
    tcp,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.dataplane import connsync as cs
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.ha import sync
from pylvs.sched import ADDR


def collect(d: Director, now: float = NOW, rows: int = 64) -> np.ndarray:
    out = np.zeros(rows, dtype=cs.SYNC_DTYPE)
    n = cs.collect_sync(d.ct, now, out, d.tables.dest_svc, d.tables.svc["fwmark"])
    return out[:n].copy()


def data(k: int, cport: int = CPORT, client: str = CLIENT):
    return tcp(client, VIP, cport, VPORT, "PA", b"x", seq=1001 + k, ack=5001)


SYN = tcp(CLIENT, VIP, CPORT, VPORT, "S")
ACK = tcp(CLIENT, VIP, CPORT, VPORT, "A", seq=1001, ack=5001)


# --- the due rule -------------------------------------------------------------------


def test_below_threshold_nothing_then_at_threshold_once():
    d = Director(NAT_CF)
    d.send([SYN, ACK])  # 2 packets in, ESTABLISHED
    assert collect(d).shape[0] == 0
    d.send([data(0)])  # the third
    r = collect(d)
    assert r.shape[0] == 1
    assert (r[0]["caddr"], r[0]["cport"], r[0]["vaddr"], r[0]["vport"], r[0]["daddr"], r[0]["dport"]) == (
        ip2int(CLIENT), CPORT, ip2int(VIP), VPORT, ip2int(RIP1), RPORT)
    assert r[0]["state"] == ctm.S_ESTABLISHED and r[0]["timeout"] == 900 and r[0]["proto"] == 6
    assert r[0]["flags"] == ctm.FWD_MASQ  # active: no INACTIVE bit
    assert collect(d).shape[0] == 0  # sent: not again
    d.send([data(1)])
    assert collect(d).shape[0] == 0


def test_state_change_is_sent_and_closing_below_threshold_too():
    d = Director(NAT_CF)
    d.send([SYN, ACK, data(0)])
    assert collect(d).shape[0] == 1
    d.send([tcp(CLIENT, VIP, CPORT, VPORT, "FA", seq=1002, ack=5001)])  # ES -> CLOSE_WAIT
    r = collect(d)
    assert r["state"].tolist() == [ctm.S_CLOSE_WAIT] and r[0]["flags"] & ctm.F_INACTIVE
    # SYN then FIN: TIME_WAIT after two packets, still sent (the kernel's "force")
    d.send([tcp(CLIENT, VIP, CPORT + 1, VPORT, "S"), tcp(CLIENT, VIP, CPORT + 1, VPORT, "F", seq=1001)])
    assert collect(d)["state"].tolist() == [ctm.S_TIME_WAIT]


def test_half_open_connections_are_not_sent():
    d = Director(NAT_CF)
    d.send([SYN, SYN, SYN, SYN])  # retransmitted SYNs: SYN_RECV, 4 packets
    assert collect(d).shape[0] == 0


def test_refresh_after_sync_period_packets():
    d = Director(NAT_CF)
    d.send([SYN, ACK, data(0)])
    assert collect(d).shape[0] == 1
    d.send([data(k) for k in range(1, 50)])  # 49 more
    assert collect(d).shape[0] == 0
    d.send([data(50)])  # 50 since the last send
    assert collect(d).shape[0] == 1


def test_one_packet_entries_and_templates_alone_are_not_sent():
    d = Director(NAT_CF)
    n = ctm.new(d.ct, 17, ip2int(CLIENT), 5000, ip2int(VIP), 53, ip2int(RIP1), 5353, flags=ctm.F_ONE_PACKET,
                dest=-1, now=NOW)
    d.ct.entries[n]["in_pkts"] = 10
    ctm.new(d.ct, 6, ip2int(CLIENT), 0, ip2int(VIP), 80, ip2int(RIP1), 80, flags=ctm.F_TEMPLATE, dest=-1,
            now=NOW, timeout=300)
    assert collect(d).shape[0] == 0


def test_template_sent_before_its_connection_once_per_call():
    d = Director(PERSIST_CF)
    d.send([SYN, ACK, data(0)])
    d.send([tcp(CLIENT, VIP, CPORT + 1, VPORT, "S"), tcp(CLIENT, VIP, CPORT + 1, VPORT, "A", seq=1001, ack=5001),
            data(0, CPORT + 1)])
    r = collect(d)
    assert [bool(f & ctm.F_TEMPLATE) for f in r["flags"]] == [True, False, False]
    t = r[0]
    assert (t["caddr"], t["cport"], t["vport"], t["timeout"], t["state"]) == (ip2int("203.0.113.0"), 0, VPORT,
                                                                              300, 0)
    d.send([tcp(CLIENT, VIP, CPORT, VPORT, "FA", seq=1002, ack=5001)])
    r = collect(d)  # a later call: the template comes along again
    assert [bool(f & ctm.F_TEMPLATE) for f in r["flags"]] == [True, False]


def test_full_output_leaves_the_rest_for_the_next_call():
    d = Director(NAT_CF)
    for c in range(5):
        cport = 41000 + c
        d.send([tcp(CLIENT, VIP, cport, VPORT, "S"), tcp(CLIENT, VIP, cport, VPORT, "A", seq=1001, ack=5001),
                data(0, cport)])
    first = collect(d, rows=2)
    second = collect(d, rows=2)
    third = collect(d, rows=2)
    got = sorted(np.concatenate([first, second, third])["cport"].tolist())
    assert [len(first), len(second), len(third)] == [2, 2, 1] and got == [41000 + c for c in range(5)]


entry_st = st.fixed_dictionaries({
    "live": st.booleans(), "expired": st.booleans(),
    "flags": st.sampled_from([0, ctm.F_TEMPLATE, ctm.F_ONE_PACKET, ctm.F_INACTIVE]),
    "proto": st.sampled_from([6, 17]), "state": st.integers(0, 10), "in_pkts": st.integers(0, 200),
    "sync_state": st.one_of(st.none(), st.integers(0, 11)), "sync_pkts": st.integers(0, 200),
})  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(entry_st, min_size=1, max_size=12))
def test_due_rule_matches_the_plain_twin(specs):
    t = ctm.create(32, 1)
    want = []
    for k, s in enumerate(specs):
        if s["proto"] == 17:
            s["state"] = ctm.S_UDP
        n = ctm.new(t, s["proto"], 1000 + k, 1, 2, 80, 3, 80, flags=s["flags"], now=NOW,
                    timeout=60.0 if s["flags"] & ctm.F_TEMPLATE else 0.0)
        e = t.entries[n]
        e["state"], e["in_pkts"] = s["state"], s["in_pkts"]
        e["sync_state"] = ctm.SYNC_NEVER if s["sync_state"] is None else s["sync_state"]
        e["sync_pkts"] = s["sync_pkts"]
        e["expires"] = NOW - 1 if s["expired"] else NOW + 100
        flags = int(e["flags"])
        if not s["live"]:
            e["live"] = 0  # as after a removal (only the flag matters to the scan)
        if naive.sync_due(live=s["live"], expired=s["expired"], flags=flags, proto=s["proto"], state=s["state"],
                          in_pkts=s["in_pkts"], sync_state=s["sync_state"], sync_pkts=s["sync_pkts"]):
            want.append(1000 + k)
    out = np.zeros(32, dtype=cs.SYNC_DTYPE)
    n = cs.collect_sync(t, NOW, out, np.zeros(1, np.int32), np.zeros(1, np.uint32))
    assert sorted(out[:n]["caddr"].tolist()) == want


# --- apply --------------------------------------------------------------------------


def rec(**kw):
    base = dict(proto=6, caddr=ip2int(CLIENT), cport=CPORT, vaddr=ip2int(VIP), vport=VPORT, daddr=ip2int(RIP1),
                dport=RPORT, flags=0, state=ctm.S_ESTABLISHED, fwmark=0, timeout=900)
    base.update(kw)
    return sync.conns_from([base])


def row_of(d: Director, rip: str) -> int:
    return next(r for r in range(d.tables.dest.shape[0]) if d.tables.dest[r, ADDR] == ip2int(rip))


def test_apply_creates_updates_and_moves_the_counts():
    b = Director(NAT_CF)
    r1 = row_of(b, RIP1)
    c = cs.apply_sync(b.ct, rec(), NOW, b.tables)
    assert c["created"] == 1
    e = b.entry(6, CLIENT, CPORT, VIP, VPORT)
    assert e.state == "ESTABLISHED" and e.flags & ctm.F_SYNC and e.dest == r1 and e.expires == NOW + 900
    assert ctm.conns(b.ct, r1) == (1, 0, 0)
    c = cs.apply_sync(b.ct, rec(state=ctm.S_CLOSE_WAIT, flags=ctm.F_INACTIVE, timeout=60), NOW + 5, b.tables)
    assert c["updated"] == 1
    e = b.entry(6, CLIENT, CPORT, VIP, VPORT)
    assert e.state == "CLOSE_WAIT" and e.expires == NOW + 65 and ctm.conns(b.ct, r1) == (0, 1, 0)
    c = cs.apply_sync(b.ct, rec(flags=0), NOW + 6, b.tables)
    assert ctm.conns(b.ct, r1) == (1, 0, 0)
    assert ctm.count(b.ct) == 1


def test_apply_skips_what_this_director_does_not_have():
    b = Director(NAT_CF)
    c = cs.apply_sync(b.ct, np.concatenate([rec(vport=81), rec(daddr=ip2int(RIP2)), rec(dport=9999),
                                             rec(state=40)]), NOW, b.tables)
    assert c == {"created": 0, "updated": 0, "no_service": 1, "no_dest": 2, "table_full": 0, "bad_state": 1}
    assert ctm.count(b.ct) == 0


def test_apply_takes_the_forwarding_method_of_this_director():
    b = Director(DR_CF)
    cs.apply_sync(b.ct, rec(dport=VPORT, flags=ctm.FWD_MASQ), NOW, b.tables)
    e = b.entry(6, CLIENT, CPORT, VIP, VPORT)
    assert e.flags & ctm.F_FWD_MASK == ctm.FWD_DROUTE and e.flags & ctm.F_NOOUTPUT


def test_applied_templates_are_found_by_the_persistence_lookup():
    b = Director(PERSIST_CF)
    r2 = row_of(b, RIP2)
    tpl = rec(caddr=ip2int("203.0.113.0"), cport=0, daddr=ip2int(RIP2), dport=VPORT, flags=ctm.F_TEMPLATE,
              state=0, timeout=300)
    assert cs.apply_sync(b.ct, tpl, NOW, b.tables)["created"] == 1
    n = ctm.lookup_template(b.ct, 6, ip2int("203.0.113.0"), ip2int(VIP), VPORT, NOW)
    assert n >= 0 and ctm.dest_row(b.ct, n) == r2 and ctm.conns(b.ct, r2) == (0, 0, 1)
    assert cs.apply_sync(b.ct, tpl, NOW + 10, b.tables)["updated"] == 1
    assert b.ct.entries[n]["expires"] == NOW + 310


# --- failover scenarios ---------------------------------------------------------------


def through_the_wire(a: Director, b: Director, now: float = NOW) -> dict:
    records = collect(a, now)
    totals: dict = {}
    for msg in sync.encode_v1(1, records):
        d = sync.decode(msg)
        assert d.problems == {}
        for k, v in cs.apply_sync(b.ct, d.conns, now, b.tables).items():
            totals[k] = totals.get(k, 0) + v
    return totals


def test_nat_failover_keeps_the_server_and_the_rewrite():
    a, b = Director(NAT_CF), Director(NAT_CF)
    a.send([SYN])
    a.send([tcp(RIP1, CLIENT, RPORT, CPORT, "SA", seq=5000, ack=1001)])
    a.send([ACK, data(0)])
    assert through_the_wire(a, b)["created"] == 1
    later = data(1)
    (va, _, rowa, outa), = a.send([later], now=NOW + 1)
    (vb, reason, rowb, outb), = b.send([later], now=NOW + 1)
    assert (vb, reason) == (en.V_NAT, "nat_in") and outb == outa and b.rip(rowb) == a.rip(rowa) == RIP1
    reply = tcp(RIP1, CLIENT, RPORT, CPORT, "A", seq=5001, ack=1003)
    assert b.send([reply], now=NOW + 1)[0][:2] == (en.V_NAT, "nat_out")
    assert b.send([reply], now=NOW + 1)[0][3] == a.send([reply], now=NOW + 1)[0][3]


def test_dr_failover_keeps_the_server():
    two = DR_CF.replace("     server web1 {", "     server web2 {\n         address = %s\n         active = 1\n"
                        "         weight = 1\n     }\n     server web1 {" % RIP2)
    a, b = Director(two), Director(two)
    # Move A's rr cursor so the connection lands on the server B would not pick first.
    a.send([tcp(CLIENT3, VIP, 1234, VPORT, "S")])
    a.send([SYN, ACK, data(0)])
    rip_a = a.rip(a.send([data(1)])[0][2])
    assert through_the_wire(a, b)["created"] == 1
    (v, reason, row, out), = b.send([data(2)], now=NOW + 1)
    assert (v, reason) == (en.V_DR, "dr") and b.rip(row) == rip_a and out == bytes(data(2))
    fresh = b.send([tcp(CLIENT3, VIP, 999, VPORT, "S")])[0]
    assert b.rip(fresh[2]) != rip_a  # B's own scheduler would have chosen the other server


def test_persistent_client_keeps_its_server_for_a_new_connection():
    a, b = Director(PERSIST_CF), Director(PERSIST_CF)
    a.send([tcp(CLIENT3, VIP, 1234, VPORT, "S")])  # another /24 takes rr's first pick on A
    a.send([SYN, ACK, data(0)])
    rip_a = a.rip(a.send([data(1)])[0][2])
    totals = through_the_wire(a, b)
    assert totals["created"] == 2  # the template and the connection
    v, _, row, _ = b.send([tcp(CLIENT2, VIP, 50000, VPORT, "S")], now=NOW + 2)[0]  # same /24, new connection
    assert v == en.V_NAT and b.rip(row) == rip_a
    other = b.send([tcp(CLIENT3, VIP, 50001, VPORT, "S")], now=NOW + 2)[0]
    assert b.rip(other[2]) != rip_a


def test_apply_takes_the_method_of_each_real_server():
    """pylvsadm can give servers of one service different methods: a synced connection
    (and template) takes the method of the server it is bound to here."""
    b = Director(PERSIST_CF)  # network nat; web1 RIP1, web2 RIP2, both on port 80
    v = b.config.virtuals[0]
    servers = tuple(dataclasses.replace(s, forward={"web1": "tunnel", "web2": "direct"}[s.name]) for s in v.servers)
    b.config = dataclasses.replace(b.config, virtuals=(dataclasses.replace(v, servers=servers),))
    b.reconfigure()
    got = cs.apply_sync(b.ct, np.concatenate([
        rec(daddr=ip2int(RIP1), dport=VPORT, flags=ctm.FWD_MASQ),
        rec(caddr=ip2int(CLIENT3), daddr=ip2int(RIP2), dport=VPORT, flags=ctm.FWD_MASQ | ctm.F_NOOUTPUT),
        rec(caddr=ip2int("203.0.113.0"), cport=0, daddr=ip2int(RIP2), dport=VPORT, flags=ctm.F_TEMPLATE,
            state=0, timeout=300),
    ]), NOW, b.tables)
    assert got["created"] == 3
    e1, e2 = b.entry(6, CLIENT, CPORT, VIP, VPORT), b.entry(6, CLIENT3, CPORT, VIP, VPORT)
    assert e1.flags & (ctm.F_FWD_MASK | ctm.F_NOOUTPUT) == ctm.FWD_TUNNEL | ctm.F_NOOUTPUT
    assert e2.flags & (ctm.F_FWD_MASK | ctm.F_NOOUTPUT) == ctm.FWD_DROUTE | ctm.F_NOOUTPUT
    n = ctm.lookup_template(b.ct, 6, ip2int("203.0.113.0"), ip2int(VIP), VPORT, NOW)
    assert b.ct.entries[n]["flags"] & ctm.F_FWD_MASK == ctm.FWD_DROUTE
    # and they forward that way here
    (verdict, reason, row, _), = b.send([data(1)], now=NOW + 1)
    assert (verdict, reason, b.rip(row)) == (en.V_TUNNEL, "tunnel", RIP1)


def test_ftp_failover_keeps_the_helpers_sequence_adjustment_and_the_data_connection():
    """The control connection's F_OUT_SEQ and seq_* reach the backup (SEQ_DATA) right after
    the 227 was rewritten, with the helper bound there too; the passive data connection,
    once established, is filed under the FTP service by its server's address.  After the
    takeover the backup moves the server's next reply as the master would have."""
    from ftp_session import FTP_CF, seg

    a, b = Director(FTP_CF), Director(FTP_CF)
    steps = [seg(CLIENT, VIP, 40021, 21, "S", seq=1000), seg(RIP1, CLIENT, 21, 40021, "SA", seq=5000, ack=1001),
             seg(CLIENT, VIP, 40021, 21, "A", seq=1001, ack=5001),
             seg(CLIENT, VIP, 40021, 21, payload=b"PASV\r\n", seq=1001, ack=5001)]  # fmt: skip
    for p in steps:
        a.send([p])
    reply = b"227 Entering Passive Mode (10,0,0,2,39,16).\r\n"
    a.send([seg(RIP1, CLIENT, 21, 40021, payload=reply, seq=5001, ack=1007)])
    assert through_the_wire(a, b)["created"] == 1  # the control connection, due again at once
    n = ctm.lookup_in(b.ct, 6, ip2int(CLIENT), 40021, ip2int(VIP), 21, NOW)
    e = b.ct.entries[n]
    assert e["flags"] & ctm.F_OUT_SEQ and e["flags"] & ctm.F_APP_FTP and int(e["seq_delta"]) == 2
    data = [seg(CLIENT, VIP, 45000, 10000, "S", seq=1), seg(RIP1, CLIENT, 10000, 45000, "SA", seq=9, ack=2),
            seg(CLIENT, VIP, 45000, 10000, "A", seq=2, ack=10), seg(CLIENT, VIP, 45000, 10000, "A", seq=2, ack=10)]
    for p in data:
        a.send([p])
    assert through_the_wire(a, b)["created"] == 1  # the data connection, by address
    # the takeover: the next reply and the client's acknowledgement, on the backup
    nxt = seg(RIP1, CLIENT, 21, 40021, payload=b"226 Transfer complete.\r\n", seq=5001 + len(reply), ack=1007)
    (vb, reason, _, outb), = b.send([nxt], now=NOW + 1)
    (va, _, _, outa), = a.send([nxt], now=NOW + 1)
    assert reason == "nat_out" and outb == outa
    assert b.send([seg(RIP1, CLIENT, 10000, 45000, "PA", b"x" * 100, seq=10, ack=2)])[0][1] == "nat_out"
