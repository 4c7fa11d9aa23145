"""The forwarding core on random and malformed input (ARCHITECTURE rule 7).

Random bytes, truncated or corrupted valid packets, odd IHLs and fragments, with random
firewall marks, through ``engine.process``: nothing raises, every packet gets exactly one
verdict and one counter (the counters of a batch add up to its size), the bytes of a
batch change only where a verdict says so (rows past ``n`` are canaries), and the
connection table's per-server counters match its entries.
"""

from __future__ import annotations

import numpy as np
from engine_inputs import WEIGHTS, batches, director
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.defense import Defense
from pylvs.sched import ACT, INACT
from pylvs.sched._dispatch import NAMES, config_kernel

TREE_ALGS = ("lc", "wlc", "sed", "nq", "fo", "ovf")

STRIDE = 256
ICMP_ERROR_MAX = 576  # csrc/rewrite.h PL_ICMP_ERROR_MAX: icmp_send's bound
CANARY = 0xA5
CANARY_ROWS = 2


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
    assert int(t.dest[:, ACT].sum() + t.dest[:, INACT].sum()) == int((conns["dest_id"] >= 0).sum())
    assert int(t.persist.sum()) == int((templates["dest_id"] >= 0).sum())
    assert (t.dest[:, ACT] >= 0).all() and (t.dest[:, INACT] >= 0).all()
    # The lc-family trees were kept up to date: a rebuild changes nothing.
    for i in range(t.svc.shape[0]):
        dest, state = t.block(i)
        if NAMES[int(t.svc[i]["alg_id"])] in TREE_ALGS:
            rebuilt = state.copy()
            config_kernel(int(t.svc[i]["alg_id"]), dest, rebuilt)
            assert (rebuilt == state).all(), f"service {i}: tree out of date"


# The defences (defense.py): each mode, and a threshold that engages them at any fill.
defenses = st.builds(Defense, amemthresh=st.sampled_from([0, 2, 1024]), am_droprate=st.sampled_from([0, 1, 3]),
                     drop_entry=st.integers(0, 3), drop_packet=st.integers(0, 3), secure_tcp=st.integers(0, 3))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network=st.sampled_from(["nat", "tunnel", "direct"]), capacity=st.sampled_from([4, 64]),
       weights=st.sampled_from(WEIGHTS), batch_list=batches, start=st.floats(0, 1e6), step=st.floats(0, 400),
       defense=defenses, scan_start=st.integers(0, 63))
def test_engine_never_raises_and_accounts_for_every_packet(network, capacity, weights, batch_list, start, step,
                                                          defense, scan_start):
    t, ct, counters = director(network, capacity, weights)
    now = start
    for pkts in batch_list:
        defense.tick(ct, now, scan_start)  # the control thread's once-a-second work, between batches
        event(f"defense engaged: {sorted(k for k, v in defense.state(ct)['engaged'].items() if v)}")
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
            elif verdict == en.V_REJECT:  # became the ICMP error in front of (a cut of) itself
                assert b.off[i] == off0[i] - rw.ICMP_ERROR_HEADER and b.lens[i] <= ICMP_ERROR_MAX
                assert (b.buf[i, :o - rw.ICMP_ERROR_HEADER] == before[i, :o - rw.ICMP_ERROR_HEADER]).all()
                assert en.REASON_NAMES[v.reason[i]] == "no_dest"
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
