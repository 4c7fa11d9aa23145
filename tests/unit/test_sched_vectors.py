"""Fixed vectors for each scheduler: the kernel's orders, tie-breaks, tables and
hashes, plus the wrappers' validation."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import naive
import numpy as np
import pytest

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
    NFIELDS,
    PORT,
    Scheduler,
    W,
    _common,
    _loctab,
    dh,
    get,
    mh,
    new_dests,
    set_dest_row,
    sh,
)


def service(name, weights, addrs=None, **opts):
    """A service created with all dests present (init_svc), list order = weights order."""
    n = len(weights)
    dest = new_dests(n)
    for i, w in enumerate(weights):
        dest[i, W] = w
        dest[i, LASTW] = w
        dest[i, FLAGS] = F_AVAILABLE
        dest[i, ADDR] = addrs[i] if addrs else 0x0A000001 + i
        dest[i, PORT] = 80
    return Scheduler(name, dest=dest, **opts)


def letters(s, k, **key):
    return "".join("ABCDEFGH"[r] if r >= 0 else "-" for r in (s.decide(**key) for _ in range(k)))


# ---------------------------------------------------------------- registry


def test_registry_has_every_ipvsadm_name():
    assert set(ALGORITHMS) == {"rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf"}
    for name, mod in ALGORITHMS.items():
        assert mod.NAME == name
        assert f"ip_vs_{name}.c" in mod.__doc__ and mod.KERNEL_FILE.endswith(f"ip_vs_{name}.c")


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="choose one of"):
        get("random")


# ---------------------------------------------------------------- rr / wrr


@pytest.mark.parametrize("weights,seq", [
    ((4, 3, 2), "AABABCABC"),
    ((2, 4, 6), "CBCABC"),
    ((1, 1, 1), "ABC"),
    ((5, 0, 1), "AAAAAC"),
])
def test_wrr_reference_vectors(weights, seq):
    s = service("wrr", weights)
    assert letters(s, 3 * len(seq)) == seq * 3


def test_wrr_weight_change_mid_sequence():
    s = service("wrr", (4, 3, 2))
    assert letters(s, 3) == "AAB"  # cw = 3, cursor on B
    s.edit_dest(2, weight=4)  # cursor to head, cw kept (3 <= mw 4, gcd 1)
    assert letters(s, 11) == "ABCABCABCAC"


def test_wrr_gcd_change_rounds_cw():
    # weights 4,2 -> gcd 2, mw 3 (4 - (2-1)); sequence A A B repeating
    s = service("wrr", (4, 2))
    assert letters(s, 6) == "AABAAB"


def test_wrr_all_overloaded_gives_none_and_recovers():
    s = service("wrr", (2, 1))
    s.dest[:, FLAGS] |= F_OVERLOAD
    assert s.decide() == -1
    s.dest[1, FLAGS] &= ~F_OVERLOAD
    assert letters(s, 3) == "BBB"


def test_rr_skips_quiesced_and_overloaded_and_wraps():
    s = service("rr", (1, 0, 1, 1))
    s.dest[2, FLAGS] |= F_OVERLOAD
    assert letters(s, 5) == "ADADA"


def test_rr_cursor_after_removing_current():
    s = service("rr", (1, 1, 1))
    assert letters(s, 2) == "AB"
    s.remove_dest(1)
    assert letters(s, 3) == "CAC"


# ---------------------------------------------------------------- lc family


def test_wlc_ties_go_to_the_first_in_list_order():
    s = service("wlc", (1, 2, 2))
    s.dest[0, INACT] = 1  # ovh 1/1
    s.dest[1, INACT] = 2  # ovh 2/2 == 1/1: tie, A keeps it
    s.dest[2, INACT] = 2
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 0


def test_wlc_overhead_counts_active_256_times():
    s = service("wlc", (1, 1))
    s.dest[0, ACT] = 1  # 256
    s.dest[1, INACT] = 255
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 1
    s.bind(1)  # 256: tie, first wins
    assert s.decide() == 0


def test_lc_ignores_weight_but_not_quiesce():
    s = service("lc", (1, 100, 0))
    s.dest[1, INACT] = 1
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 0
    s.edit_dest(0, weight=0)
    assert s.decide() == 1


def test_sed_uses_active_plus_one_over_weight():
    s = service("sed", (1, 3))
    # (0+1)/1 vs (0+1)/3 -> B; B with 2 active: 3/3 = 1/1 tie -> A (first)
    assert s.decide() == 1
    s.dest[1, ACT] = 2
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 0


def test_nq_returns_first_idle_else_sed():
    s = service("nq", (1, 5, 1))
    s.dest[0, ACT] = 1
    s.dest[1, ACT] = 3
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 2  # idle beats B's better ratio
    s.dest[2, ACT] = 1
    s.module._config_kernel(s.dest, s.state)
    assert s.decide() == 1  # 4/5 < 2/1


def test_fo_and_ovf():
    s = service("fo", (2, 5, 5, 0))
    assert s.decide() == 1
    s.dest[1, FLAGS] |= F_OVERLOAD
    s.module._update_kernel(s.dest, s.state, 1)  # direct array edits must be announced
    assert s.decide() == 2
    o = service("ovf", (2, 5, 1))
    assert o.decide() == 1
    o.dest[1, ACT] = 6  # above its weight
    o.module._update_kernel(o.dest, o.state, 1)
    assert o.decide() == 0


# ---------------------------------------------------------------- thresholds


def test_upper_threshold_and_three_quarter_rule():
    s = service("rr", (1,))
    s.edit_dest(0, u_threshold=4)
    for _ in range(4):
        s.bind(0)
    assert s.dest[0, FLAGS] & F_OVERLOAD and s.decide() == -1
    s.unbind(0, False)  # 3*4 = 12 !< 12: still overloaded
    assert s.dest[0, FLAGS] & F_OVERLOAD
    s.unbind(0, False)  # 2*4 = 8 < 12: clear
    assert not s.dest[0, FLAGS] & F_OVERLOAD and s.decide() == 0


def test_lower_threshold_rule_and_edit_clears():
    s = service("rr", (1,))
    s.edit_dest(0, u_threshold=3, l_threshold=1)
    for _ in range(3):
        s.bind(0)
    s.unbind(0, False)
    s.unbind(0, False)
    assert s.dest[0, FLAGS] & F_OVERLOAD  # total 1, not < 1
    s.edit_dest(0, u_threshold=5)  # a larger upper threshold clears OVERLOAD
    assert not s.dest[0, FLAGS] & F_OVERLOAD


# ---------------------------------------------------------------- hashes


HASH_32_8 = {0x0A000001: 39, 0x0A000002: 137, 0xC0A80001: 192, 0xC0A800FF: 197}
HSIP_K1 = {0x0A000001: 50859236, 0x0A000002: 1104141843, 0xC0A80001: 2201249422, 0xC0A800FF: 2397898141}


def test_hash_32_vectors():
    for a, b in HASH_32_8.items():
        assert (a * 0x61C88647 % 2**32) >> 24 == b
        assert _common._hash_32(a, 8) == b == naive.hash_32(a, 8)


def test_siphash_round_function_matches_reference_vector():
    # SipHash-2-4 paper vector: key 00..0f, message 00..0e
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert naive.siphash(bytes(range(15)), k0, k1) == 0xA129CA6149BE45E5


def test_siphash13_matches_cpython_hash_oracle():
    # CPython hashes bytes with SipHash-1-3; PYTHONHASHSEED=0 zeroes its key.
    msgs = [0, 1, 0x04030201, 0x0A000001, 0xFFFFFFFF]
    code = "import sys; print(sys.hash_info.algorithm); " + "; ".join(
        f"print(hash(({m}).to_bytes(4, 'little')))" for m in msgs)
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": "0"},
                         capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "siphash13":
        pytest.skip(f"this CPython hashes with {out[0]}")
    for m, h in zip(msgs, out[1:], strict=True):
        want = int(h) % 2**64
        assert int(_common._siphash13_u32(m, 0, 0)) == want
        assert naive.siphash(m.to_bytes(4, "little"), 0, 0, 1, 3) == want


def test_mh_hsiphash_vectors():
    for a, h in HSIP_K1.items():
        assert _common._hsiphash_u32(a, mh.MH_KEY1, mh.MH_KEY1) == h == naive.hsiphash_u32(a, mh.MH_KEY1)


# ---------------------------------------------------------------- dh / sh / mh


def test_dh_table_is_cyclic_and_uses_destination_address():
    s = service("dh", (1, 5, 0))
    table = s.state[dh.TAB_OFF:dh.TAB_OFF + 256]
    assert list(table[:6]) == [0, 1, 2, 0, 1, 2]
    for a, b in HASH_32_8.items():
        want = b % 3 if b % 3 != 2 else -1  # C is quiesced: no destination
        assert s.decide(caddr=0, daddr=a) == want


def test_sh_weighted_fill_and_source_hash():
    s = service("sh", (2, 1, 0))
    table = s.state[sh.TAB_OFF:sh.TAB_OFF + 256]
    assert list(table[:8]) == [0, 0, 1, 2, 0, 0, 1, 2]  # weight-0 C still takes a bucket
    for a, b in HASH_32_8.items():
        d = table[b]
        assert s.decide(caddr=a) == (d if d != 2 else -1)


def test_sh_port_and_fallback():
    s = service("sh", (1, 1), fallback=True, port=True)
    a, port = 0x0A000001, 1234
    bucket = ((a + port) * 0x61C88647 % 2**32) >> 24
    first = bucket % 2
    assert s.decide(caddr=a, cport=port) == first
    s.edit_dest(first, weight=0)
    assert s.decide(caddr=a, cport=port) == 1 - first


MH_TABLE_7 = [1, 0, 0, 2, 1, 0, 2]  # weights 1,1,1, dests 10.0.0.1-3:80
MH_TABLE_11 = [0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 2]  # weights 3,2,1


@pytest.mark.parametrize("m,weights,table", [(7, (1, 1, 1), MH_TABLE_7), (11, (3, 2, 1), MH_TABLE_11)])
def test_mh_small_prime_tables(m, weights, table):
    s = service("mh", weights, table_size=m)
    assert list(s.state[mh.TAB_OFF:mh.TAB_OFF + m]) == table
    ds = [naive.Dest(i, w, 0x0A000001 + i, 80) for i, w in enumerate(weights)]
    twin = naive.Service("mh", initial=ds, table_size=m)
    assert [d.row for d in twin.algo.table] == table


def test_mh_default_table_is_kernel_size_and_balanced():
    s = service("mh", (1, 1, 1, 1))
    assert mh.MH_TAB_SIZE == 4093 and s.state[mh.H_M] == 4093
    counts = Counter(s.state[mh.TAB_OFF:mh.TAB_OFF + 4093].tolist())
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1


def test_mh_quiesced_dest_keeps_slots_without_fallback():
    s = service("mh", (1, 1), table_size=251)
    table = s.state[mh.TAB_OFF:mh.TAB_OFF + 251].copy()
    s.edit_dest(0, weight=0)
    assert (s.state[mh.TAB_OFF:mh.TAB_OFF + 251] == table).all()  # last_weight keeps the table
    clients = np.arange(1, 400, dtype=np.int64)
    picks = [s.decide(caddr=int(c)) for c in clients]
    assert -1 in picks and 0 not in picks
    f = service("mh", (1, 1), table_size=251, fallback=True)
    f.edit_dest(0, weight=0)
    assert all(f.decide(caddr=int(c)) == 1 for c in clients)


# ---------------------------------------------------------------- lblc / lblcr


def test_lblc_sticks_to_cached_dest_until_overloaded():
    s = service("lblc", (1, 1))
    d = 0xC0A80001
    first = s.decide(daddr=d)
    s.bind(first)
    assert s.decide(daddr=d) == first  # cache hit, despite the other being emptier
    s.dest[first, ACT] = 2  # activeconns > weight and the other has 0*2 < 1
    assert s.decide(daddr=d) == 1 - first


def test_lblc_collector_full_sweep_after_expiration():
    s = service("lblc", (1,), expiration_ms=1000)
    s.decide(daddr=5, now=0)
    for k in range(1, 30):
        s.gc(now=k * 60_000)
    assert s.state[_loctab.H_ENTRIES] == 1  # only every 30th run sweeps
    s.gc(now=30 * 60_000)
    assert s.state[_loctab.H_ENTRIES] == 0


def test_lblc_partial_collection_above_max_size_matches_twin():
    n = _loctab.MAX_SIZE + 3000
    s = service("lblc", (1, 1))
    twin = naive.Service("lblc", initial=[naive.Dest(0, 1), naive.Dest(1, 1)])
    daddr = np.arange(1, n + 1, dtype=np.int64) * 2654435761 % 2**32
    now = np.arange(n) * 10  # entries of different ages
    for a, t in zip(daddr.tolist(), now.tolist(), strict=True):
        assert s.decide(daddr=a, now=t) == naive.Service.schedule(twin, daddr=a, now=t).row
    t = int(now[-1]) + 400_000
    for _ in range(3):
        s.gc(t)
        twin.gc(t)
        assert s.state[_loctab.H_ENTRIES] == twin.algo.entries
        assert s.state[_loctab.H_ROVER] == twin.algo.rover
    assert twin.algo.entries < n


def test_lblc_full_entry_pool_still_schedules():
    s = service("lblc", (1,), entry_capacity=2)
    assert [s.decide(daddr=a) for a in (1, 2, 3, 4)] == [0, 0, 0, 0]
    assert s.state[_loctab.H_ENTRIES] == 2


def test_lblcr_replicates_then_drops_most_loaded_after_expiration():
    s = service("lblcr", (1, 1), expiration_ms=1000)
    d = 7
    assert s.decide(daddr=d, now=0) == 0
    s.dest[0, ACT] = 2  # overloaded in lblc's sense -> wlc adds B to the set
    assert s.decide(daddr=d, now=10) == 1
    en = _loctab._get(s.state, d)
    assert s.state[_loctab._eoff(s.state, en) + _loctab.E_SETSIZE] == 2
    s.decide(daddr=d, now=2000)  # set > 1 and lastmod + 1 s passed: drop the most loaded (A)
    assert s.state[_loctab._eoff(s.state, en) + _loctab.E_SETSIZE] == 1


# ---------------------------------------------------------------- validation


def test_wrapper_validation():
    with pytest.raises(ValueError, match="capacity"):
        Scheduler("wlc")
    with pytest.raises(ValueError, match="shape"):
        Scheduler("wlc", dest=np.zeros((3, 2), dtype=np.int64))
    s = Scheduler("wlc", capacity=1)
    s.add_dest(1)
    with pytest.raises(ValueError, match="capacity"):
        s.add_dest(1)
    with pytest.raises(ValueError, match="weight"):
        s.edit_dest(0, weight=2**31)  # ipvsadm 1.31 and the kernel stop at INT_MAX
    s.edit_dest(0, weight=2**31 - 1)
    with pytest.raises(ValueError, match="weights must be in 0..2147483647"):
        Scheduler("wlc", dest=np.full((2, NFIELDS), 2**31, dtype=np.int64))
    with pytest.raises(ValueError, match="no inactive"):
        s.unbind(0, False)
    with pytest.raises(ValueError, match="prime"):
        Scheduler("mh", capacity=2, table_size=100)
    with pytest.raises(ValueError, match="bad options"):
        Scheduler("rr", capacity=2, fallback=True)
    with pytest.raises(ValueError, match="no cache"):
        s.gc(0)
    with pytest.raises(ValueError, match="same length"):
        s.pick_batch(np.zeros(3, np.uint32), cport=np.zeros(2, np.uint16))


def test_forwarding_method_column_is_kept_and_never_decides():
    """FWD holds a row's forwarding method (set on add and by an edit, kept otherwise);
    no scheduler reads it: every algorithm decides the same whatever it holds."""
    dest = new_dests(2)
    set_dest_row(dest, 1, 5, add=True, addr=1, port=80, fwd=3)
    assert dest[1, FWD] == 3 and dest[1, W] == 5
    set_dest_row(dest, 1, 7)
    assert dest[1, FWD] == 3 and dest[1, W] == 7
    set_dest_row(dest, 1, None, fwd=2)
    assert dest[1, FWD] == 2 and dest[1, W] == 7
    set_dest_row(dest, 0, 1, add=True, addr=2, port=80)
    assert dest[0, FWD] == 0  # Masq by default
    bad = new_dests(1)
    bad[0, FWD] = 8
    with pytest.raises(ValueError, match="forwarding methods"):
        Scheduler("rr", dest=bad)
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**32, 200, dtype=np.uint32)
    for name in sorted(ALGORITHMS):
        a, b = Scheduler(name, capacity=8), Scheduler(name, capacity=8)
        for k, w in enumerate((3, 1, 0, 2, 5)):
            for s in (a, b):
                s.add_dest(w, addr=0x0A000001 + k, port=80)
        b.dest[:, FWD] = rng.integers(0, 4, b.dest.shape[0])
        assert (a.pick_batch(keys, daddr=keys) == b.pick_batch(keys, daddr=keys)).all(), name
        assert (a.dest[:, :FWD] == b.dest[:, :FWD]).all() and a.dest.shape[1] == NFIELDS


def test_rr_deleted_head_cursor_steps_back_to_the_list_head():
    """ip_vs_rr_del_dest: deleting the cursor's dest moves the cursor to the previous
    entry, here the list head, so a dest added at the head afterwards is picked next.
    (Found by the differential test: a cursor left on the deleted row picked A.)"""
    s = Scheduler("rr", capacity=4)
    a = s.add_dest(1)
    b = s.add_dest(1)  # list: B, A
    assert s.decide() == b
    s.remove_dest(b)
    c = s.add_dest(1)  # list: C, A
    assert s.decide() == c
    assert s.decide() == a

    twin = naive.Service("rr")
    da, db = naive.Dest(a, 1), naive.Dest(b, 1)
    twin.add(da)
    twin.add(db)
    assert twin.schedule() is db
    twin.remove(db)
    dc = naive.Dest(c, 1)
    twin.add(dc)
    assert [twin.schedule(), twin.schedule()] == [dc, da]
