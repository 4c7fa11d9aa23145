"""The tournament tree of lc/wlc/sed/nq/fo/ovf gives exactly the kernel's linear-scan
decision, ties included, through long generated sequences of counter, weight,
flag and membership changes, at sizes up to a few hundred dests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.sched import (
    ACT,
    F_AVAILABLE,
    F_OVERLOAD,
    FLAGS,
    INACT,
    W,
    fo,
    lc,
    nq,
    ovf,
    sed,
    wlc,
)
from pylvs.sched._common import _bind_kernel, _unbind_kernel
from pylvs.sched._tree import _linear_scan, _tree_best, _tree_rebuild

TREE_MODULES = [lc, wlc, sed, nq, fo, ovf]


def _random_dests(rng, n, wmax, cmax):
    dest = np.zeros((n, 9), dtype=np.int64)
    dest[:, W] = rng.integers(0, wmax + 1, n)
    dest[:, ACT] = rng.integers(0, cmax + 1, n)
    dest[:, INACT] = rng.integers(0, cmax + 1, n)
    dest[:, FLAGS] = F_AVAILABLE | np.where(rng.random(n) < 0.1, F_OVERLOAD, 0)
    dest[rng.random(n) < 0.05, FLAGS] = 0  # not in the list
    return dest


@pytest.mark.parametrize("mod", TREE_MODULES, ids=lambda m: m.NAME)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([1, 2, 3, 5, 16, 33, 100, 300]),
       wmax=st.sampled_from([1, 2, 4, 100]), cmax=st.sampled_from([0, 1, 3, 50]))
def test_tree_equals_linear_scan_through_updates(mod, seed, n, wmax, cmax):
    rng = np.random.default_rng(seed)
    dest = _random_dests(rng, n, wmax, cmax)
    state = mod.new_state(dest)
    kind = mod.KIND
    for _ in range(200):
        best = _tree_best(state)
        assert best == _linear_scan(dest, kind)
        op = rng.integers(0, 6)
        i = best if (op == 0 and best >= 0) else int(rng.integers(0, n))
        if op <= 1:
            _bind_kernel(dest, i)
        elif op == 2 and dest[i, INACT] > 0:
            _unbind_kernel(dest, i, False)
        elif op == 3:
            if dest[i, INACT] > 0:  # a connection becomes established
                dest[i, INACT] -= 1
                dest[i, ACT] += 1
        elif op == 4:
            dest[i, W] = rng.integers(0, wmax + 1)
        else:
            dest[i, FLAGS] ^= F_OVERLOAD if rng.random() < 0.7 else F_AVAILABLE
        mod._update_kernel(dest, state, i)
    # a full rebuild agrees with the incrementally maintained tree
    st2 = state.copy()
    _tree_rebuild(dest, st2)
    assert (st2 == state).all()


@pytest.mark.parametrize("mod", TREE_MODULES, ids=lambda m: m.NAME)
@pytest.mark.parametrize("n", [2, 16, 257, 4096])
def test_tree_batch_equals_linear_batch(mod, n):
    rng = np.random.default_rng(n)
    d1 = _random_dests(rng, n, 3, 2)
    d2 = d1.copy()
    s1 = mod.new_state(d1)
    s2 = mod.new_state(d2)
    k = 3000 if n < 4096 else 600
    keys = np.zeros(k, dtype=np.uint32)
    ports = np.zeros(k, dtype=np.uint16)
    o1 = np.empty(k, dtype=np.int64)
    o2 = np.empty(k, dtype=np.int64)
    mod._batch_kernel(d1, s1, keys, ports, keys, ports, 0, True, o1)
    mod._linear_batch_kernel(d2, s2, keys, ports, keys, ports, 0, True, o2)
    assert (o1 == o2).all() and (d1 == d2).all()
    assert (o1 >= 0).any()
