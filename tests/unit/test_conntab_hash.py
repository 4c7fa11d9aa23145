"""The connection table's keyed index hash (issue 16): SipHash-1-3 under a random
per-table key, as the kernel keys its connection hash at boot.

The murmur finaliser it replaced was unkeyed and invertible, so a sender could compute
tuples (its own spoofed sources and ports, the real VIP) that all land in one stretch of
an index and turn linear probing into a walk of the whole stretch.  These tests build
such a flood for the old hash and for one key, and check that another key spreads it:
by probe lengths, never by time (bench/bench_conntab_hash.py times lookups)."""

from __future__ import annotations

import os
import subprocess
import sys

import naive
import numpy as np
from floods import CAPACITY, FLOOD, RIP, TCP, VIP, VPORT, WINDOW, flood, keyed_hash, old_hash
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from pylvs.dataplane import conntab as ctm

U64 = st.integers(0, 2**64 - 1)


@njit(cache=True)
def _probe_lengths(key, entries, index):
    """For each entry in the in-index, how far past its home slot it sits."""
    mask = len(index) - 1
    out = np.empty(len(index), dtype=np.int64)
    m = 0
    for i in range(len(index)):
        if index[i] != ctm.EMPTY:
            e = entries[index[i] - 1]
            home = np.int64(ctm._in_hash(key, e) & np.uint64(mask))
            out[m] = (i - home) & mask
            m += 1
    return out[:m]


def probes_of(pairs: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Probe lengths of the in-index after inserting ``pairs`` into a table keyed ``key``."""
    t = ctm.create(CAPACITY, 1, key=key)
    for caddr, cport in pairs:
        assert ctm.new(t, TCP, int(caddr), int(cport), VIP, VPORT, RIP, VPORT, now=0.0, timeout=60.0) >= 0
    return _probe_lengths(key, t.entries, t.in_index)


# -- the hash itself ---------------------------------------------------------------------
@settings(deadline=None)  # the first example compiles the kernel
@given(U64, U64, st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 2**32 - 1),
       st.integers(0, 65535), st.sampled_from([6, 17, 0]), st.integers(0, 2))
def test_index_hash_is_siphash13_of_the_tuple(k0, k1, a1, p1, a2, p2, proto, extra):
    key = np.array([k0, k1], dtype=np.uint64)
    words = ((a1 << 32) | a2, (p1 << 32) | (p2 << 16) | (proto << 8) | extra)
    msg = b"".join(w.to_bytes(8, "little") for w in words)
    assert int(keyed_hash(key, proto, a1, p1, a2, p2, extra)) == naive.siphash(msg, k0, k1, 1, 3)


def test_the_twin_is_cpythons_own_siphash13():
    """An oracle outside this repository: CPython 3.11+ hashes bytes with SipHash-1-3, keyed
    with zeros under PYTHONHASHSEED=0."""
    msgs = [bytes(range(16)), b"\xff" * 16, os.urandom(16)]
    code = "import sys; print(sys.hash_info.algorithm, *(hash(bytes.fromhex(m)) for m in sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, *(m.hex() for m in msgs)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}, check=True).stdout.split()  # fmt: skip
    assert out[0] == "siphash13"
    for m, h in zip(msgs, out[1:], strict=True):
        want = naive.siphash(m, 0, 0, 1, 3)
        want = want - 2**64 if want >= 2**63 else want
        assert int(h) == (-2 if want == -1 else want)


def test_every_table_gets_its_own_key():
    keys = {bytes(ctm.create(4, 1).key) for _ in range(8)}
    assert len(keys) == 8 and all(len(k) == 16 for k in keys)


# -- floods ----------------------------------------------------------------------------------
def test_a_flood_built_for_the_old_hash_spreads_under_the_keyed_one():
    slots = CAPACITY * ctm.INDEX_LOAD
    pairs = flood(FLOOD, slots, WINDOW, np.zeros(2, dtype=np.uint64), True, 1)
    old_homes = {int(old_hash(TCP, int(a), int(p), VIP, VPORT, 0)) & (slots - 1) for a, p in pairs}
    assert max(old_homes) < WINDOW  # the old hash: 50,000 entries in one run of 64 homes (~25,000 probes each)
    probes = probes_of(pairs, np.array([0x1234, 0x5678], dtype=np.uint64))
    assert len(probes) == FLOOD
    # at 38 % load linear probing averages ~1.3 probes: the flood is just traffic now
    assert probes.mean() < 2 and probes.max() < 64, (probes.mean(), probes.max())


def test_tuples_colliding_under_one_key_spread_under_another():
    slots = CAPACITY * ctm.INDEX_LOAD
    k1 = np.array([0xDEADBEEF, 0xFEEDFACE], dtype=np.uint64)
    k2 = np.array([0x0BADF00D, 0xC0FFEE00], dtype=np.uint64)
    pairs = flood(2000, slots, WINDOW, k1, False, 2)
    under_k1, under_k2 = probes_of(pairs, k1), probes_of(pairs, k2)
    assert under_k1.mean() > 500  # one run of 2,000: the attack works against a known key
    assert under_k2.mean() < 1.5 and under_k2.max() < 16, (under_k2.mean(), under_k2.max())
