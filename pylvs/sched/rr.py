"""rr -- round-robin.  Follows net/netfilter/ipvs/ip_vs_rr.c.

State: ``state[0]`` = cursor, the row of the last chosen dest, -1 = list head.
A decision scans forward from the entry after the cursor, wrapping once, for the
first dest with weight > 0 that is not OVERLOADed, and moves the cursor there.
When the cursor's dest is deleted the kernel moves the cursor to the entry before
it, or to the list head (ip_vs_rr_del_dest); ``_config_kernel``, which runs after
every delete, does the same.  (Leaving the cursor on the deleted row is not the
same: if that row was the head, a dest added at the head afterwards must be the
next pick, and a scan from the deleted row would reach it last.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import _charge_kernel, _eligible, _in_list

NAME = "rr"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_rr.c"


def new_state(dest: np.ndarray) -> np.ndarray:
    return np.full(1, -1, dtype=np.int64)


@njit(cache=True, error_model="numpy", _nrt=False)
def _config_kernel(dest, state):
    # The cursor survives weight edits and adds; a deleted cursor steps back to the
    # previous entry in the list, or to the head (ip_vs_rr_del_dest).
    i = state[0]
    if i >= 0 and not _in_list(dest, i):
        i -= 1
        while i >= 0 and not _in_list(dest, i):
            i -= 1
        state[0] = i


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
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


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
