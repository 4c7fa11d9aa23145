"""Rate estimates against the kernel's fixed-point arithmetic (ip_vs_est.c, reference 7.9)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pylvs.dataplane.estimator import Estimator


def kernel_twin(deltas):
    """ip_vs_estimation_timer + ip_vs_read_estimator for one counter set, written out."""
    avg = [0] * 5
    for d in deltas:
        for k in range(5):
            rate = d[k] << (4 if k >= 3 else 9)
            avg[k] += (rate - avg[k]) >> 2
    return [(a + 0xF) >> 5 if k >= 3 else (a + 0x1FF) >> 10 for k, a in enumerate(avg)]


@given(st.lists(st.lists(st.integers(0, 10**9), min_size=5, max_size=5), min_size=1, max_size=30))
def test_matches_the_kernel_arithmetic(deltas):
    est = Estimator(1)
    total = np.zeros((1, 5), dtype=np.int64)
    est.tick(total)  # the first tick only records the starting counters
    for d in deltas:
        total += np.array(d, dtype=np.int64)
        est.tick(total)
    assert est.rates()[0].tolist() == kernel_twin(deltas)


def test_steady_rate_converges_to_the_true_rate():
    est = Estimator(1)
    total = np.zeros((1, 5), dtype=np.int64)
    est.tick(total)
    for _ in range(100):  # 100 conn/s, 1000 pkt/s in, 800 out, 1 MB/s in, 2 MB/s out, for 200 s
        total += np.array([200, 2000, 1600, 2_000_000, 4_000_000])
        est.tick(total)
    assert est.rates()[0].tolist() == [100, 1000, 800, 1_000_000, 2_000_000]


def test_remap_follows_rows_and_zero_starts_over():
    est = Estimator(3)
    c = np.array([[10, 10, 10, 10, 10], [20, 20, 20, 20, 20], [30, 30, 30, 30, 30]], dtype=np.int64)
    est.tick(np.zeros_like(c))
    est.tick(c)
    moved = est.remap(np.array([2, -1, 0]), 4)
    assert (moved.rates()[2] == est.rates()[0]).all() and (moved.rates()[0] == est.rates()[2]).all()
    assert (moved.rates()[1] == 0).all() and not moved.primed[3]
    est.zero()
    assert (est.rates() == 0).all()
