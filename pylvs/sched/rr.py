"""rr -- round-robin.  Follows net/netfilter/ipvs/ip_vs_rr.c.

State: ``state[0]`` = cursor, the row of the last chosen dest, -1 = list head.
A decision scans forward from the entry after the cursor, wrapping once, for the
first dest with weight > 0 that is not OVERLOADed, and moves the cursor there.
When the cursor's dest is deleted the kernel moves the cursor to the entry before
it (ip_vs_rr_del_dest); scanning on from the deleted row gives the same next pick.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import _charge_kernel, _eligible

NAME = "rr"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_rr.c"


def new_state(dest: np.ndarray) -> np.ndarray:
    return np.full(1, -1, dtype=np.int64)


@njit(cache=True, _nrt=False)
def _config_kernel(dest, state):
    pass  # the cursor survives weight edits, adds and deletes


@njit(cache=True, _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    n = dest.shape[0]
    i = state[0]
    for _ in range(n):
        i += 1
        if i >= n:
            i = 0
        if _eligible(dest, i):
            state[0] = i
            return i
    return -1


@njit(cache=True, _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
