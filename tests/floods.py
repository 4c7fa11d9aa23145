"""Hash floods for the connection table's indexes (issue 16), shared by
tests/unit/test_conntab_hash.py and bench/bench_conntab_hash.py: (client address, client
port) pairs towards one VIP whose home slots all fall in a few neighbouring index slots,
under the unkeyed hash the table used before or under a given key, as an attacker who
knows the hash would send them."""

from __future__ import annotations

import numpy as np
from numba import njit

from pylvs.dataplane import conntab as ctm

VIP, VPORT, TCP = 0x0A4D0164, 80, 6  # 10.77.1.100:80
RIP = 0x0A4D020B  # 10.77.2.11
CAPACITY = 1 << 16  # in_index: 2^17 slots
WINDOW = 64  # a flood aims every home slot into this many neighbouring slots
FLOOD = 50_000


@njit(cache=True)
def keyed_hash(key, proto, a1, p1, a2, p2, extra):
    return ctm._hash5(key, proto, a1, p1, a2, p2, extra)


@njit(cache=True)
def _old_fmix(h):  # the unkeyed hash of before, the attacker's model
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True)
def old_hash(proto, a1, p1, a2, p2, extra):
    a = (np.uint64(a1) << np.uint64(32)) | np.uint64(a2)
    b = (np.uint64(p1) << np.uint64(32)) | (np.uint64(p2) << np.uint64(16)) | (np.uint64(proto) << np.uint64(8)) \
        | np.uint64(extra)
    return _old_fmix(a ^ _old_fmix(b))


@njit(cache=True)
def flood(n, slots, window, key, use_old, seed):
    """``n`` (client address, client port) pairs towards VIP:VPORT whose home slots in an
    index of ``slots`` fall in [0, window): what an attacker who knows the hash sends."""
    np.random.seed(seed)
    out = np.empty((n, 2), dtype=np.int64)
    mask = np.uint64(slots - 1)
    k = 0
    while k < n:
        caddr = np.random.randint(1, 2**32 - 1)
        cport = np.random.randint(1024, 65535)
        h = old_hash(TCP, caddr, cport, VIP, VPORT, 0) if use_old else keyed_hash(key, TCP, caddr, cport, VIP, VPORT, 0)
        if (h & mask) < np.uint64(window):
            out[k, 0], out[k, 1] = caddr, cport
            k += 1
    return out
