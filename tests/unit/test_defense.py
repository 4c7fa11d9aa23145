"""The IPVS defences (pylvs/dataplane/defense.py): update_defense_level against its plain
twin for every mode and fill level, drop_packet and secure_tcp through the engine, the
drop_entry scan and a full table's eviction, each counted by reason."""

from __future__ import annotations

import itertools

import pytest
from engine_inputs import RIPS, VIP, director
from naive import update_defense_level
from scapy.layers.inet import IP, TCP

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane.defense import Defense

CAPACITY = 64


def _fill(ct, n: int, now: float = 0.0) -> None:
    """``n`` half-open TCP entries from spoofed sources (what a SYN flood leaves)."""
    for k in range(n):
        e = ctm.new(ct, ctm.IPPROTO_TCP, 0xC6120000 + k, 1024, 0xC000020A, 80, 0x0A000002, 8080, dest=0, now=now)
        assert e >= 0
        ctm.tcp_transition(ct, e, ctm.DIR_INPUT, ctm.TCP_SYN, now)


@pytest.mark.parametrize("drop_entry,drop_packet,secure_tcp", list(itertools.product(range(4), repeat=3)))
def test_update_defense_level_matches_the_kernel_switches(drop_entry, drop_packet, secure_tcp):
    amemthresh, am_droprate = 16, 7
    for used in (0, CAPACITY - 16, CAPACITY - 15, CAPACITY - 3, CAPACITY, 10, CAPACITY):
        ct = ctm.create(CAPACITY, 1)
        _fill(ct, used)
        d = Defense(amemthresh=amemthresh, am_droprate=am_droprate, drop_entry=drop_entry,
                    drop_packet=drop_packet, secure_tcp=secure_tcp)  # fmt: skip
        modes = {"drop_entry": drop_entry, "drop_packet": drop_packet, "secure_tcp": secure_tcp}
        want_modes, want = update_defense_level(modes, CAPACITY - used, amemthresh, am_droprate)
        d.update(ct)
        assert {k: getattr(d, k) for k in modes} == want_modes
        assert ct.meta[ctm.M_DROPENTRY] == want["dropentry"] and ct.meta[ctm.M_SECURE] == want["secure"]
        assert ct.meta[ctm.M_DROP_RATE] == want["drop_rate"]


def test_automatic_modes_engage_and_disengage_with_the_fill():
    ct = ctm.create(CAPACITY, 1)
    d = Defense(amemthresh=8, drop_entry=1, drop_packet=1, secure_tcp=1)
    d.update(ct)
    assert (d.drop_entry, d.drop_packet, d.secure_tcp) == (1, 1, 1)
    _fill(ct, CAPACITY - 4)  # 4 free < 8: short of room
    d.update(ct)
    assert (d.drop_entry, d.drop_packet, d.secure_tcp) == (2, 2, 2)
    assert ct.meta[ctm.M_DROP_RATE] == 8 // (8 - 4)  # amemthresh / (amemthresh - free)
    assert d.state(ct)["engaged"] == {"drop_entry": True, "drop_packet": True, "secure_tcp": True}
    for n in range(CAPACITY - 4):
        ctm.remove(ct, n)
    d.update(ct)
    assert (d.drop_entry, d.drop_packet, d.secure_tcp) == (1, 1, 1)
    assert not any(d.state(ct)["engaged"].values())


@pytest.mark.parametrize("bad", [{"drop_entry": 4}, {"secure_tcp": -1}, {"amemthresh": -1}, {"am_droprate": -2}])
def test_bad_knobs_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Defense(**bad)


def test_drop_entry_scan_drops_half_open_entries_and_keeps_the_rest():
    ct = ctm.create(CAPACITY, 1)
    _fill(ct, CAPACITY // 2)
    # An established connection, busy (many packets): never a candidate.
    e = ctm.new(ct, ctm.IPPROTO_TCP, 0x0A0A0A0A, 5000, 0xC000020A, 80, 0x0A000002, 8080, dest=0, now=0.0)
    ctm.tcp_transition(ct, e, ctm.DIR_INPUT, ctm.TCP_SYN, 0.0)
    ctm.tcp_transition(ct, e, ctm.DIR_INPUT, ctm.TCP_ACK, 0.0)
    ct.entries["in_pkts"][e] = 100
    d = Defense(drop_entry=3)
    dropped = sum(d.tick(ct, 1.0, start) for start in range(0, CAPACITY, max(CAPACITY >> 5, 1)))
    assert dropped == CAPACITY // 2 and ctm.counters(ct)["drop_entry"] == dropped
    assert ctm.count(ct) == 1 and ct.entries["live"][e]


def test_idle_established_entries_with_few_packets_are_dropped_in_turn():
    """todrop_entry: idle 60 s and 1..8 packets; an entry with k packets goes every k-th
    time it is considered (the countdown per k starts at 0, so the first one goes)."""
    ct = ctm.create(32, 1)  # the scan visits 32 >> 5 = 1 slot: one entry per call
    rows = []
    for k in range(4):
        e = ctm.new(ct, ctm.IPPROTO_TCP, 0x0A0A0A00 + k, 5000, 0xC000020A, 80, 0x0A000002, 8080, dest=0, now=0.0)
        ctm.tcp_transition(ct, e, ctm.DIR_INPUT, ctm.TCP_SYN, 0.0)
        ctm.tcp_transition(ct, e, ctm.DIR_INPUT, ctm.TCP_ACK, 0.0)
        ct.entries["in_pkts"][e] = 2
        rows.append(e)
    assert ctm.random_dropentry(ct, 59.0, rows[0]) == 0  # not idle long enough
    gone = [ctm.random_dropentry(ct, 61.0, r) for r in rows]
    assert gone == [1, 0, 1, 0]  # 2 packets: every second one


def _syn(src: str, sport: int) -> bytes:
    return bytes(IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags="S"))


def test_drop_packet_refuses_every_rate_th_new_connection_and_counts_it():
    t, ct, counters = director("nat", CAPACITY)
    d = Defense(drop_packet=3, am_droprate=4)
    d.tick(ct, 0.0)
    b = en.batch_from_packets([_syn(f"203.0.113.{k + 1}", 40000 + k) for k in range(12)])
    v = en.process(b, 0.0, t, ct, counters)
    names = [en.REASON_NAMES[r] for r in v.reason]
    assert names.count("drop_packet") == 3 and names.count("nat_in") == 9
    assert [i for i, n in enumerate(names) if n == "drop_packet"] == [0, 4, 8]  # countdown from 0: the first
    assert en.reason_counts(counters)["drop_packet"] == 3


def test_a_full_table_with_drop_entry_engaged_takes_a_half_open_entrys_place():
    t, ct, counters = director("nat", CAPACITY)
    flood = [_syn(f"198.18.{k // 250}.{k % 250 + 1}", 1024 + k) for k in range(CAPACITY)]
    en.process(en.batch_from_packets(flood), 0.0, t, ct, counters)
    assert ctm.count(ct) == CAPACITY
    legit = en.batch_from_packets([_syn("203.0.113.7", 50000)])
    assert en.REASON_NAMES[en.process(legit, 1.0, t, ct, counters).reason[0]] == "table_full"
    Defense(amemthresh=16, drop_entry=1).update(ct)
    legit = en.batch_from_packets([_syn("203.0.113.7", 50001)])
    assert en.REASON_NAMES[en.process(legit, 1.0, t, ct, counters).reason[0]] == "nat_in"
    assert ctm.counters(ct)["drop_entry"] == 1 and ctm.counters(ct)["full_drops"] == 1


def test_secure_tcp_establishes_a_nat_connection_only_after_the_servers_syn_ack():
    """tcp_states_dos: the client's ACK moves nothing; the entry is established only when the
    server, having answered the SYN, sends an ACK of its own; half-open entries get 10 s."""
    t, ct, counters = director("nat", CAPACITY)
    Defense(secure_tcp=3).update(ct)
    client, sport = "203.0.113.7", 40000
    en.process(en.batch_from_packets([_syn(client, sport)]), 0.0, t, ct, counters)
    (n,) = [e.index for e in ctm.live_entries(ct)]
    assert ctm.STATE_NAMES[ct.entries["state"][n]] == "SYN_RECV"
    assert ct.entries["expires"][n] == ctm.SECURE_HALF_OPEN_TIMEOUT
    ack = bytes(IP(src=client, dst=VIP) / TCP(sport=sport, dport=80, flags="A"))
    en.process(en.batch_from_packets([ack]), 0.1, t, ct, counters)
    assert ctm.STATE_NAMES[ct.entries["state"][n]] == "SYN_RECV"
    rip, rport = RIPS[int(ct.entries["daddr"][n] == 0x0A000003)], int(ct.entries["dport"][n])
    synack = bytes(IP(src=rip, dst=client) / TCP(sport=rport, dport=sport, flags="SA"))
    en.process(en.batch_from_packets([synack]), 0.2, t, ct, counters)
    assert ctm.STATE_NAMES[ct.entries["state"][n]] == "SYNACK"
    en.process(en.batch_from_packets([ack]), 0.25, t, ct, counters)
    assert ctm.STATE_NAMES[ct.entries["state"][n]] == "SYNACK"  # the client's ACK is not enough
    data = bytes(IP(src=rip, dst=client) / TCP(sport=rport, dport=sport, flags="PA") / b"hello")
    en.process(en.batch_from_packets([data]), 0.3, t, ct, counters)
    assert ctm.STATE_NAMES[ct.entries["state"][n]] == "ESTABLISHED"  # the server talks: it is real
    assert ct.entries["expires"][n] == pytest.approx(0.3 + ctm.DEFAULT_TIMEOUTS["ESTABLISHED"])
