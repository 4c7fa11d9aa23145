"""Fixed cases for the connection table: TCP life cycles, counters, templates, a full table."""

from __future__ import annotations

import numpy as np
import pytest

from pylvs.dataplane import conntab as ct
from pylvs.sched import F_OVERLOAD, FLAGS, LTHR, UTHR, new_dests

CLIENT, VIP, RIP = 0xCB007107, 0xC0A80164, 0x0A00000B  # 203.0.113.7, 192.168.1.100, 10.0.0.11
SYN, ACK, FIN, RST = ct.TCP_SYN, ct.TCP_ACK, ct.TCP_FIN, ct.TCP_RST


def nat_conn(t, cport=51234, now=0.0, dest=0, control=-1):
    return ct.new(t, ct.IPPROTO_TCP, CLIENT, cport, VIP, 80, RIP, 8080, flags=ct.FWD_MASQ, dest=dest,
                  control=control, now=now)  # fmt: skip


def state(t, n):
    return ct.STATE_NAMES[t.entries[n]["state"]]


def test_transition_table_matches_reference_rows():
    # Reference 7.4, INPUT syn row and OUTPUT ack row, cell by cell.
    assert [ct.TCP_STATE_NAMES[s] for s in ct.TRANSITIONS[ct.DIR_INPUT, ct.EV_SYN]] == (
        ["SYN_RECV", "ESTABLISHED", "ESTABLISHED"] + ["SYN_RECV"] * 8
    )
    assert ct.TCP_STATE_NAMES[ct.TRANSITIONS[ct.DIR_OUTPUT, ct.EV_ACK, ct.S_LISTEN]] == "ESTABLISHED"
    assert ct.TCP_STATE_NAMES[ct.TRANSITIONS[ct.DIR_INPUT_ONLY, ct.EV_FIN, ct.S_ESTABLISHED]] == "FIN_WAIT"
    assert ct.TCP_STATE_NAMES[ct.TRANSITIONS[ct.DIR_INPUT, ct.EV_FIN, ct.S_ESTABLISHED]] == "CLOSE_WAIT"


def test_nat_handshake_counts_active_then_inactive():
    t = ct.create(16, 2)
    n = nat_conn(t)
    assert ct.conns(t, 0) == (0, 1, 0)  # bound inactive (reference 7.5)
    assert ct.tcp_transition(t, n, ct.DIR_INPUT, SYN, 0.0) == ct.S_SYN_RECV
    assert t.entries[n]["expires"] == 60.0  # SYN_RECV timeout
    ct.tcp_transition(t, n, ct.DIR_OUTPUT, SYN | ACK, 0.1)
    assert state(t, n) == "SYN_RECV"
    ct.tcp_transition(t, n, ct.DIR_INPUT, ACK, 0.2)
    assert state(t, n) == "ESTABLISHED"
    assert ct.conns(t, 0) == (1, 0, 0)
    assert t.entries[n]["expires"] == pytest.approx(900.2)
    ct.tcp_transition(t, n, ct.DIR_INPUT, FIN | ACK, 5.0)
    assert state(t, n) == "CLOSE_WAIT"
    assert ct.conns(t, 0) == (0, 1, 0)
    ct.tcp_transition(t, n, ct.DIR_OUTPUT, FIN | ACK, 5.1)
    assert state(t, n) == "TIME_WAIT"
    assert ct.lookup_out(t, ct.IPPROTO_TCP, RIP, 8080, CLIENT, 51234, 5.2) == n
    assert ct.lookup_out(t, ct.IPPROTO_TCP, RIP, 8080, CLIENT, 51235, 5.2) == -1


def test_direct_routing_uses_input_only_until_a_reply_is_seen():
    t = ct.create(16, 1)
    n = ct.new(t, ct.IPPROTO_TCP, CLIENT, 1000, VIP, 80, RIP, 80, flags=ct.FWD_DROUTE | ct.F_NOOUTPUT,
               dest=0, now=0.0)  # fmt: skip
    ct.tcp_transition(t, n, ct.DIR_INPUT, SYN, 0.0)
    ct.tcp_transition(t, n, ct.DIR_INPUT, ACK, 0.0)
    assert state(t, n) == "ESTABLISHED"
    ct.tcp_transition(t, n, ct.DIR_INPUT, FIN | ACK, 1.0)
    assert state(t, n) == "FIN_WAIT"  # INPUT_ONLY; the full INPUT table would say CLOSE_WAIT
    assert ct.lookup_out(t, ct.IPPROTO_TCP, RIP, 80, CLIENT, 1000, 1.0) == -1  # DR has no out key


def test_packet_without_known_flags_closes():
    t = ct.create(16, 1)
    n = nat_conn(t)
    ct.tcp_transition(t, n, ct.DIR_INPUT, 0x08, 0.0)  # PSH alone
    assert state(t, n) == "CLOSE"
    assert t.entries[n]["expires"] == 10.0


def test_expired_entry_is_gone_on_lookup_and_counters_drop():
    t = ct.create(16, 1)
    n = nat_conn(t)
    ct.tcp_transition(t, n, ct.DIR_INPUT, SYN, 0.0)  # SYN_RECV: 60 s
    assert ct.lookup_in(t, ct.IPPROTO_TCP, CLIENT, 51234, VIP, 80, 59.9) == n
    assert ct.lookup_in(t, ct.IPPROTO_TCP, CLIENT, 51234, VIP, 80, 60.0) == -1
    assert ct.count(t) == 0 and ct.conns(t, 0) == (0, 0, 0)
    assert ct.counters(t)["expired"] == 1


def test_template_holds_while_it_controls_and_is_postponed():
    t = ct.create(16, 2)
    tpl = ct.new(t, ct.IPPROTO_TCP, CLIENT & 0xFFFFFF00, 0, VIP, 443, RIP, 443, flags=ct.F_TEMPLATE,
                 dest=1, now=0.0, timeout=300.0)  # fmt: skip
    assert ct.conns(t, 1) == (0, 0, 1)
    n = nat_conn(t, dest=1, control=tpl)
    ct.tcp_transition(t, n, ct.DIR_INPUT, SYN, 0.0)
    ct.tcp_transition(t, n, ct.DIR_INPUT, ACK, 0.0)  # ESTABLISHED: 900 s
    assert t.entries[tpl]["n_control"] == 1
    # The template's 300 s pass while the connection lives: postponed by 60 s.
    assert ct.lookup_template(t, ct.IPPROTO_TCP, CLIENT & 0xFFFFFF00, VIP, 443, 301.0) == tpl
    assert t.entries[tpl]["expires"] == 361.0
    ct.remove(t, n)
    assert t.entries[tpl]["n_control"] == 0
    assert ct.lookup_template(t, ct.IPPROTO_TCP, CLIENT & 0xFFFFFF00, VIP, 443, 361.0) == -1
    assert ct.conns(t, 1) == (0, 0, 0) and ct.count(t) == 0


def test_full_table_evicts_dead_entries_then_refuses_and_counts():
    t = ct.create(4, 1)
    numbers = [nat_conn(t, cport=1000 + i) for i in range(4)]
    assert -1 not in numbers and ct.count(t) == 4
    # All alive: the fifth is refused, counted, and nothing is lost.
    assert nat_conn(t, cport=2000, now=1.0) == -1
    assert ct.counters(t)["full_drops"] == 1 and ct.count(t) == 4
    # Once they are dead (NONE: 2 s), a new entry reclaims a slot.
    assert nat_conn(t, cport=2001, now=3.0) >= 0
    assert ct.counters(t)["evicted"] == 1
    assert ct.lookup_in(t, ct.IPPROTO_TCP, CLIENT, 2001, VIP, 80, 3.0) >= 0


def test_set_timeouts_like_ipvsadm_set():
    t = ct.create(4, 1, timeouts={"ESTABLISHED": 600, "FIN_WAIT": 30, "UDP": 60})
    assert t.timeouts[ct.S_ESTABLISHED] == 600 and t.timeouts[ct.S_UDP] == 60
    with pytest.raises(ValueError, match="unknown state"):
        ct.set_timeouts(t, ESTABLISHD=1)
    with pytest.raises(ValueError, match="power of two"):
        ct.create(1000, 1)


def test_one_million_entries_fit_in_128_bytes_each():
    t = ct.create(1 << 20, 1)
    assert ct.memory_per_entry(t) <= 128


def test_counts_follow_the_overload_rule_of_the_schedulers_dest_rows():
    """Counting goes through pylvs.sched's kernels, so thresholds act as the kernel's:
    OVERLOAD at u_threshold, cleared below 3/4 of it when no lower threshold is set."""
    t = ct.create(16, 1)
    dest, persist = new_dests(2), np.zeros(2, dtype=np.int64)
    dest[1, UTHR] = 4
    t = ct.attach(t, dest, persist)
    numbers = [nat_conn(t, cport=1000 + i, dest=1) for i in range(4)]
    assert ct.conns(t, 1) == (0, 4, 0)
    assert dest[1, FLAGS] & F_OVERLOAD  # 4 >= u_threshold
    ct.remove(t, numbers[0])
    assert dest[1, FLAGS] & F_OVERLOAD  # 3 * 4 < 4 * 3 is false: still overloaded
    ct.remove(t, numbers[1])
    assert not dest[1, FLAGS] & F_OVERLOAD  # 2 * 4 < 4 * 3
    assert dest[1, LTHR] == 0


def test_every_counter_change_is_reported_once_per_drain():
    t = ct.create(16, 3)
    n = nat_conn(t, dest=2)
    tpl = ct.new(t, ct.IPPROTO_TCP, CLIENT & 0xFFFFFF00, 0, VIP, 443, RIP, 443, flags=ct.F_TEMPLATE,
                 dest=0, now=0.0, timeout=300.0)  # fmt: skip
    assert list(ct.drain_touched(t)) == [0, 2]
    assert list(ct.drain_touched(t)) == []
    ct.tcp_transition(t, n, ct.DIR_INPUT, SYN, 0.0)  # NONE -> SYN_RECV: still inactive
    assert list(ct.drain_touched(t)) == []
    ct.tcp_transition(t, n, ct.DIR_INPUT, ACK, 0.0)  # -> ESTABLISHED: active
    assert list(ct.drain_touched(t)) == [2]
    ct.remove(t, tpl)
    assert list(ct.drain_touched(t)) == [0]


def test_more_changes_than_the_touched_buffer_ask_for_a_full_refresh():
    t = ct.create(8192, 1)
    for i in range(ct.TOUCHED_CAP + 1):
        nat_conn(t, cport=i)
    assert ct.drain_touched(t) is None
    assert list(ct.drain_touched(t)) == []


def test_attach_checks_shapes():
    t = ct.create(4, 1)
    with pytest.raises(ValueError, match="persist"):
        ct.attach(t, new_dests(3), np.zeros(2, dtype=np.int64))
