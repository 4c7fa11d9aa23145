"""dh -- destination hashing.  Follows net/netfilter/ipvs/ip_vs_dh.c (mainline).

A 256-bucket table (IP_VS_DH_TAB_BITS = 8) filled by walking the dest list
cyclically, one bucket per dest, weights ignored; an empty service leaves every
bucket empty.  Key: the packet's destination address, bucket =
``hash_32(daddr, 8)`` (include/linux/hash.h, bit for bit).  The bucket's dest is
used only if it is in the list, has weight > 0 and is not OVERLOADed; otherwise
there is no destination (dh has no fallback).

State: ``state[0]`` unused, ``state[1:257]`` = bucket -> row (-1 empty).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import _charge_kernel, _eligible, _hash_32, _listed_rows

NAME = "dh"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_dh.c"
DH_TAB_BITS = 8  # IP_VS_DH_TAB_BITS (ip_vs_dh.c)
DH_TAB_SIZE = 1 << DH_TAB_BITS
TAB_OFF = 1


def new_state(dest: np.ndarray) -> np.ndarray:
    st = np.full(TAB_OFF + DH_TAB_SIZE, -1, dtype=np.int64)
    _config_kernel(dest, st)
    return st


@njit(cache=True, error_model="numpy")  # allocates scratch arrays: needs NRT; not on the hot path
def _config_kernel(dest, state):
    """ip_vs_dh_reassign: bucket b gets the (b mod n)-th dest of the list."""
    rows, n = _listed_rows(dest)
    for b in range(DH_TAB_SIZE):
        state[TAB_OFF + b] = rows[b % n] if n > 0 else -1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    d = state[TAB_OFF + _hash_32(daddr, DH_TAB_BITS)]
    if d < 0 or not _eligible(dest, d):
        return -1
    return d


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    # One pass (unlike sh/mh): measured steadier for dh's cheap hash.
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
