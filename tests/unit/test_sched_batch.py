"""The batch kernels decide exactly like one decision at a time followed by the
same connection accounting, for every algorithm and option; the dispatch module
routes to the same kernels."""

from __future__ import annotations

import numpy as np
import pytest

from pylvs.sched import (
    ALGORITHMS,
    BIND_ACTIVE,
    BIND_NEW,
    BIND_NONE,
    F_OVERLOAD,
    FLAGS,
    Scheduler,
    _dispatch,
)
from pylvs.sched._common import _charge_kernel

VARIANTS = [(n, {}) for n in sorted(ALGORITHMS)] + [
    ("sh", {"fallback": True, "port": True}), ("mh", {"fallback": True, "port": True, "table_size": 251}),
    ("mh", {"port": True}), ("lblcr", {"expiration_ms": 30}),
]


def _pair(name, opts, n=9, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2):
        s = Scheduler(name, capacity=n, **opts)
        r = np.random.default_rng(seed)
        for _ in range(n):
            s.add_dest(int(r.integers(0, 4)), addr=int(r.integers(0, 2**32)), port=80,
                       u_threshold=int(r.choice([0, 3, 7])))
        out.append(s)
    return out, rng


@pytest.mark.parametrize("name,opts", VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("bind", [BIND_NONE, BIND_NEW, BIND_ACTIVE])
def test_batch_equals_one_by_one(name, opts, bind):
    (a, b), rng = _pair(name, opts)
    a.dest[3, FLAGS] |= F_OVERLOAD
    b.dest[3, FLAGS] |= F_OVERLOAD
    a.module._config_kernel(a.dest, a.state)
    b.module._config_kernel(b.dest, b.state)
    k = 400
    caddr = rng.integers(0, 2**32, k, dtype=np.uint32)
    cport = rng.integers(0, 65536, k).astype(np.uint16)
    daddr = rng.integers(0, 30, k).astype(np.uint32)
    dport = np.full(k, 80, np.uint16)
    got = a.pick_batch(caddr, cport, daddr, dport, now=5, bind=bind)
    want = []
    for j in range(k):
        i = b.pick(int(caddr[j]), int(cport[j]), int(daddr[j]), 80, 5)
        want.append(i)
        if bind and i >= 0:
            _charge_kernel(b.dest, i, bind)
            b.module._update_kernel(b.dest, b.state, i)
    assert got.tolist() == want
    assert (a.dest == b.dest).all() and (a.state == b.state).all()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_dispatch_routes_to_the_algorithm(name):
    (a, b), rng = _pair(name, {})
    alg = _dispatch.ALG_ID[name]
    for j in range(50):
        key = (int(rng.integers(0, 2**32)), int(rng.integers(0, 65536)), int(rng.integers(0, 9)), 80, j)
        i = a.pick(*key)
        assert _dispatch.schedule_kernel(alg, b.dest, b.state, *key) == i
        if i >= 0:
            a.bind(i)
            _charge_kernel(b.dest, i, BIND_NEW)
            _dispatch.update_kernel(alg, b.dest, b.state, i)
    a.edit_dest(a.dest.shape[0] - 1, weight=5)
    b.dest[b.dest.shape[0] - 1, 0] = 5
    b.dest[b.dest.shape[0] - 1, 6] = 5
    _dispatch.config_kernel(alg, b.dest, b.state)
    _dispatch.gc_kernel(alg, b.dest, b.state, 10**9)
    if name in ("lblc", "lblcr"):
        a.gc(10**9)
    assert (a.dest == b.dest).all() and (a.state == b.state).all()
