"""The C entry point (``engine_cfunc.ENGINE`` through ``pl_engine_batch``, what the C loop
calls) against its twin ``engine.process``: the same inputs on two forwarders built from
one lvs.cf give identical bytes, offsets, lengths, verdicts, reasons, dest rows, rewrite
results, counters, statistics, scheduler state and connection-table state, batch after
batch, across reconfigurations.  Inputs: the golden table (tests/golden.py), the engine
fuzz batches (tests/engine_inputs.py) and scheduler sequences for all 13 schedulers with
weight changes and servers going down and up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from engine_inputs import FWMARK, WEIGHTS, batches
from engine_inputs import _cf as fuzz_cf
from golden import (
    CASES,
    CLIENT,
    HEAD,
    NAT_CF,
    NOW,
    RIP1,
    TWO_CF,
    UDP_CPORT,
    UDP_ICMP_QUOTE,
    UDP_VPORT,
    VIP,
    VPORT,
    Case,
    tcp,
    udp,
    virtual,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylvs._native import lib
from scapy.layers.inet import ICMP, IP
from twin import ROWS, STRIDE, Twin, with_methods

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import BATCH_SLOTS, BatchArrays, _describe
from pylvs.dataplane.forwarder import Forwarder
from pylvs.sched import ACT, INACT
from pylvs.sched._dispatch import NAMES


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_table_through_both_entry_points(case: Case):
    one = Twin(case.cf, case.capacity)
    for step in case.steps:
        one.send([step.packet], marks=[step.mark])
    whole = Twin(case.cf, case.capacity)
    whole.send([s.packet for s in case.steps], marks=[s.mark for s in case.steps])


def test_a_rewrite_failure_becomes_the_same_drop():
    """An ICMP error about a NAT flow with a wrong ICMP checksum: the engine decides
    icmp_nat_out, the rewrite refuses it (ip_vs_out_icmp drops these), and both paths
    move its count to rewrite_BAD_CHECKSUM and drop it."""
    t = Twin(NAT_CF)
    t.send([udp(CLIENT, VIP, UDP_CPORT, UDP_VPORT)])
    icmp = IP(src=RIP1, dst=CLIENT) / ICMP(type=3, code=3, chksum=0x1234) / UDP_ICMP_QUOTE
    v = t.send([icmp])
    assert (v.verdict[0], en.REASON_NAMES[v.reason[0]]) == (en.V_DROP, "rewrite_BAD_CHECKSUM")
    assert en.reason_counts(t.c.counters).get("icmp_nat_out", 0) == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network=st.sampled_from(["nat", "tunnel", "direct"]), capacity=st.sampled_from([4, 64]),
       weights=st.sampled_from(WEIGHTS), batch_list=batches, start=st.floats(0, 1e6), step=st.floats(0, 400))
def test_fuzz_batches_through_both_entry_points(network, capacity, weights, batch_list, start, step):
    t = Twin(fuzz_cf(network, weights), capacity)
    now = start
    for pkts in batch_list:
        t.send([p for p, _ in pkts], marks=[m for _, m in pkts], now=now)
        now += step
    assert FWMARK  # the fwmark service is part of the configuration


_METHODS = st.sampled_from([None, "nat", "direct", "tunnel"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network=st.sampled_from(["nat", "tunnel", "direct"]), m0=_METHODS, m1=_METHODS, batch_list=batches,
       start=st.floats(0, 1e6), step=st.floats(0, 400))
def test_fuzz_batches_with_per_server_methods_through_both_entry_points(network, m0, m1, batch_list, start, step):
    """The fuzz configuration with each server's own method (pylvsadm -m/-g/-i): one
    service mixes NAT, direct routing and tunnelling, and both entry points agree."""
    methods = {name: m for name, m in (("s0", m0), ("s1", m1)) if m is not None}
    t = Twin(fuzz_cf(network), 64, methods)
    now = start
    for pkts in batch_list:
        t.send([p for p, _ in pkts], marks=[m for _, m in pkts], now=now)
        now += step


def test_mixed_methods_and_a_method_change_through_both_entry_points():
    """A Masq, a Route and a Tunnel server in one rr service, persistent and not: new
    connections, replies, later packets, then web1 turned into a tunnel server."""
    servers = [("web1", RIP1, 8080, 1), ("web2", "10.0.0.3", None, 1), ("web3", "10.0.0.4", None, 1)]
    cf = (HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="rr", servers=servers)
          + virtual("dns", VIP, UDP_VPORT, proto="udp", sched="rr", servers=servers,
                    extra="     persistent = 60\n     pmask = 255.255.255.0"))
    methods = {"web2": "direct", "web3": "tunnel"}
    t = Twin(cf, 256, methods)
    syns = [tcp(CLIENT, VIP, 40000 + k, VPORT, flags="S") for k in range(6)]
    v = t.send(syns + [udp(f"198.51.{k}.7", VIP, UDP_CPORT, UDP_VPORT) for k in range(6)])
    assert {int(x) for x in v.verdict} == {en.V_NAT, en.V_DR, en.V_TUNNEL}
    t.send([tcp(RIP1, CLIENT, 8080, 40000 + k, flags="SA", seq=5000, ack=1001) for k in range(6)]
           + [tcp(CLIENT, VIP, 40000 + k, VPORT, flags="A", seq=1001, ack=5001) for k in range(6)])
    t.reconfigure()
    t.config = with_methods(t.config, {"web1": "tunnel"})
    t.reconfigure()
    t.send([tcp(CLIENT, VIP, 40000 + k, VPORT, flags="A", seq=1001, ack=5001) for k in range(6)]
           + [tcp(CLIENT, VIP, 41000 + k, VPORT, flags="S") for k in range(6)]
           + [udp(f"198.51.{k}.8", VIP, UDP_CPORT, UDP_VPORT) for k in range(6)])


def _sched_cf(sched: str, weights: tuple[int, ...]) -> str:
    servers = [(f"rs{k}", f"10.0.0.{k + 2}", None, w) for k, w in enumerate(weights)]
    return (HEAD.format(network="nat") + virtual("www", "192.0.2.10", 80, sched=sched, servers=servers)
            + virtual("dns", "192.0.2.10", 53, proto="udp", sched=sched, servers=servers))  # fmt: skip


_events = st.lists(st.one_of(
    st.tuples(st.just("syn"), st.integers(1, 40), st.integers(1024, 1100)),
    st.tuples(st.just("udp"), st.integers(1, 40), st.integers(1024, 1100)),
    st.tuples(st.just("fin"), st.integers(1, 40), st.integers(1024, 1100)),
    st.tuples(st.just("weights"), st.tuples(*[st.integers(0, 5)] * 3), st.just(0)),
    st.tuples(st.just("down"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("time"), st.integers(1, 200), st.just(0)),
), min_size=1, max_size=40)


@pytest.mark.parametrize("sched", NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events)
def test_scheduler_sequences_through_both_entry_points(sched, events):
    """New connections (TCP and UDP), closes, weight changes incl. 0, servers going down
    and back, and time passing: every scheduler decides the same through both."""
    weights = (1, 2, 3)
    t = Twin(_sched_cf(sched, weights), 256)
    now = NOW
    batch: list[bytes] = []

    def flush():
        if batch:
            t.send(batch, now=now)
            batch.clear()

    for kind, a, b in events:
        client = f"203.0.113.{a}"
        if kind == "syn":
            batch.append(tcp(client, "192.0.2.10", b, 80, flags="S"))
        elif kind == "udp":
            batch.append(udp(client, "192.0.2.10", b, 53))
        elif kind == "fin":
            batch.append(tcp(client, "192.0.2.10", b, 80, flags="FA"))
        else:
            flush()
            if kind == "weights":
                weights = a
                t.reconfigure(_sched_cf(sched, tuple(max(w, 0) for w in weights)))
            elif kind == "down":
                health = {tb.health_key(t.config, v, s): tb.HealthState(up=(k != a))
                          for v in t.config.virtuals for k, s in enumerate(v.servers)}  # fmt: skip
                t.reconfigure(health=health)
            else:
                now += a
        if len(batch) >= ROWS:
            flush()
    flush()


def test_descriptor_refuses_a_wrong_layout():
    arrays = BatchArrays(4, STRIDE)
    good = (arrays.buf, arrays.off, arrays.lens, arrays.marks, arrays.fields, arrays.ops, arrays.verdict,
            arrays.reason, arrays.dest_row)  # fmt: skip
    _describe(BATCH_SLOTS, good)
    with pytest.raises(ValueError, match="slot off"):
        _describe(BATCH_SLOTS, (good[0], good[1].astype(np.int64), *good[2:]))
    with pytest.raises(ValueError, match="slot buf"):
        _describe(BATCH_SLOTS, (good[0][:, ::2], *good[1:]))


def test_control_thread_and_c_entry_point_take_turns_at_the_gate():
    """A dataplane thread pushes batches through the C entry point (the GIL released in
    every C call, so the two threads really run at once) while the control thread swaps
    tables (servers down and up), expires, collects sync records and snapshots, 150
    times: every packet is counted once, the per-server counts match the entries, and
    the control thread was never starved."""
    config = check_text(TWO_CF).config
    fwd = Forwarder(tb.compile(config), capacity=4096, clock=lambda: NOW)
    cfwd = fwd.native()
    arrays = BatchArrays(ROWS, STRIDE)
    sent = [0]
    stop = threading.Event()

    def dataplane():
        k = 0
        while not stop.is_set():
            pkts = [tcp(f"203.0.113.{1 + (k + i) % 200}", VIP, 1024 + (k + i) % 30000, VPORT,
                        flags="S" if i % 3 == 0 else "A") for i in range(32)]  # fmt: skip
            n = arrays.load(pkts)
            lib.pl_gate_batch_enter(fwd.gate)
            try:
                lib.pl_engine_batch(cfwd, arrays.c, n, NOW + k / 1000)
            finally:
                lib.pl_gate_batch_leave(fwd.gate)
            sent[0] += n
            k += n

    thread = threading.Thread(target=dataplane)
    thread.start()
    try:
        servers = [(v, s) for v in config.virtuals for s in v.servers]
        for i in range(150):
            health = {tb.health_key(config, v, s): tb.HealthState(up=(j != i % 3)) for j, (v, s) in
                      enumerate(servers)}  # fmt: skip
            fwd.swap(fwd.compile(config, health))
            fwd.expire(256)
            fwd.sync_collect()
            fwd.snapshot()
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and sent[0] > 0
    assert int(fwd.counters.reasons.sum()) == sent[0]
    with fwd.exclusive():
        live = fwd.ct.entries[fwd.ct.entries["live"] == 1]
        bound = live[(live["flags"] & ctm.F_TEMPLATE) == 0]
        t = fwd.tables
        assert int(t.dest[:, ACT].sum() + t.dest[:, INACT].sum()) == int((bound["dest_id"] >= 0).sum())


def test_both_entry_points_stay_in_bounds():
    """The golden and fuzz equivalence again with numba's bounds checking on (an index out
    of range raises instead of corrupting memory silently, which in the cfunc it would).
    In a child process: the flag is read when numba starts; its own cache folder, since
    bounds-checked code is other code."""
    repo = Path(__file__).resolve().parents[2]
    cache = Path(sys.prefix) / "numba-boundscheck-cache"  # beside the venv: kept between runs
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           "tests/unit/test_engine_cfunc.py", "-k", "golden or fuzz or rewrite_failure"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
