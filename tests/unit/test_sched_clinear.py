"""The C linear schedulers (benchmark anchor, csrc/sched_linear.c) decide exactly
as the numba kernels on random services and key streams, counters included."""

from __future__ import annotations

import numpy as np
import pytest

from pylvs.sched import (
    ALGORITHMS,
    BIND_ACTIVE,
    BIND_NEW,
    F_AVAILABLE,
    F_OVERLOAD,
    FLAGS,
    Scheduler,
)
from pylvs.sched._clinear import CSingle, c_batch


def _service(name, n, seed, **opts):
    rng = np.random.default_rng(seed)
    s = Scheduler(name, capacity=n, **opts)
    for _ in range(n):
        s.add_dest(int(rng.integers(0, 5)), addr=int(rng.integers(0, 2**32)), port=int(rng.integers(0, 3)),
                   u_threshold=int(rng.choice([0, 0, 4, 9])), l_threshold=int(rng.choice([0, 2])))
    s.dest[rng.random(n) < 0.1, FLAGS] |= F_OVERLOAD
    s.dest[rng.random(n) < 0.1, FLAGS] &= ~F_AVAILABLE
    s.module._config_kernel(s.dest, s.state)
    return s


OPTS = {"sh": {"fallback": True}, "mh": {"fallback": True, "table_size": 251}, "lblcr": {"expiration_ms": 50}}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("bind", [BIND_NEW, BIND_ACTIVE])
def test_c_linear_equals_numba(name, n, bind):
    a = _service(name, n, n, **OPTS.get(name, {}))
    b = _service(name, n, n, **OPTS.get(name, {}))
    rng = np.random.default_rng(1)
    k = 500
    caddr = rng.integers(0, 2**32, k, dtype=np.uint32)
    cport = rng.integers(0, 65536, k).astype(np.uint16)
    daddr = rng.integers(0, 40, k).astype(np.uint32)
    o1 = np.empty(k, np.int64)
    o2 = np.empty(k, np.int64)
    for step in range(4):  # several calls, time moving on (lblcr set expiry)
        a._batch(a.dest, a.state, caddr, cport, daddr, cport, step * 100, bind, o1)
        c_batch(name, b.dest, b.state, caddr, cport, daddr, cport, step * 100, bind, o2)
        assert (o1 == o2).all()
        assert (a.dest == b.dest).all()
    # the single-decision C path agrees too (it does not bind)
    one = CSingle(name, b.dest, b.state)
    for j in range(20):
        args = (int(caddr[j]), int(cport[j]), int(daddr[j]), 0, 1000)
        assert one.pick(*args) == a.pick(*args)
