"""sh -- source hashing.  Follows net/netfilter/ipvs/ip_vs_sh.c (mainline).

A 256-bucket table (IP_VS_SH_TAB_BITS = 8).  Fill (ip_vs_sh_reassign): walk the
dest list cyclically; each dest takes ``weight`` consecutive buckets (a weight-0
dest still takes one) before the next dest; rebuilt on every add/delete/edit.
Key: the client (source) address, plus the client port when ``sh-port``
(IP_VS_SVC_F_SCHED_SH_PORT) is set; bucket =
``(offset + hash_32(port + addr, 8)) & 255`` (bit for bit).  A bucket's dest is
unavailable when its weight is 0 or it is OVERLOADed: then no destination, unless
``sh-fallback`` (IP_VS_SVC_F_SCHED_SH_FALLBACK) probes ``roffset = (i + ihash) %
256`` -> bucket ``hashkey(addr, port, roffset)`` for i = 0..255, stopping at an
empty bucket -- literally as the kernel does.

State: ``state[0]`` = flags (1 = sh-fallback, 2 = sh-port), ``state[1:257]`` =
bucket -> row (-1 empty).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import MASK32, W, _charge_kernel, _eligible, _hash_32, _listed_rows

NAME = "sh"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_sh.c"
SH_TAB_BITS = 8  # IP_VS_SH_TAB_BITS default (CONFIG_IP_VS_SH_TAB_BITS = 8)
SH_TAB_SIZE = 1 << SH_TAB_BITS
SH_TAB_MASK = SH_TAB_SIZE - 1
FLAG_FALLBACK = 1  # ipvsadm -b sh-fallback (IP_VS_SVC_F_SCHED1)
FLAG_PORT = 2  # ipvsadm -b sh-port (IP_VS_SVC_F_SCHED2)
TAB_OFF = 1


def new_state(dest: np.ndarray, fallback: bool = False, port: bool = False) -> np.ndarray:
    st = np.full(TAB_OFF + SH_TAB_SIZE, -1, dtype=np.int64)
    st[0] = (FLAG_FALLBACK if fallback else 0) | (FLAG_PORT if port else 0)
    _config_kernel(dest, st)
    return st


@njit(cache=True, error_model="numpy")  # allocates scratch arrays: needs NRT; not on the hot path
def _config_kernel(dest, state):
    rows, n = _listed_rows(dest)
    p = 0
    d_count = 0
    for b in range(SH_TAB_SIZE):
        if n == 0:
            state[TAB_OFF + b] = -1
            continue
        d = rows[p]
        state[TAB_OFF + b] = d
        d_count += 1
        if d_count >= dest[d, W]:
            p += 1
            if p == n:
                p = 0
            d_count = 0


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False)
def _hashkey(addr, port, offset):
    return (offset + _hash_32((port + addr) & MASK32, SH_TAB_BITS)) & SH_TAB_MASK


@njit(cache=True, error_model="numpy", _nrt=False)
def _fallback(dest, state, caddr, port, ihash):
    """ip_vs_sh_get_fallback's probe loop (out of line: keeps the hot path small)."""
    for off in range(SH_TAB_SIZE):
        roffset = (off + ihash) % SH_TAB_SIZE
        d = state[TAB_OFF + _hashkey(caddr, port, roffset)]
        if d < 0:
            return -1
        if _eligible(dest, d):
            return d
    return -1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    port = cport if (state[0] & FLAG_PORT) else 0
    ihash = _hashkey(caddr, port, 0)
    d = state[TAB_OFF + ihash]
    if d < 0:
        return -1
    if _eligible(dest, d):
        return d
    if (state[0] & FLAG_FALLBACK) == 0:
        return -1
    return _fallback(dest, state, caddr, port, ihash)


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    # Two passes: every key's bucket first (pure arithmetic, `out` as scratch),
    # then lookups and accounting.  Identical to one-by-one: binding changes
    # counters and flags, never the table.  Measured 100 -> 250+ M/s at 16 dests.
    use_port = (state[0] & FLAG_PORT) != 0
    for j in range(caddr.shape[0]):
        port = np.int64(cport[j]) if use_port else np.int64(0)
        out[j] = _hashkey(np.int64(caddr[j]), port, 0)
    for j in range(caddr.shape[0]):
        ihash = out[j]
        i = state[TAB_OFF + ihash]
        if i >= 0 and not _eligible(dest, i):
            if state[0] & FLAG_FALLBACK:
                port = np.int64(cport[j]) if use_port else np.int64(0)
                i = _fallback(dest, state, caddr[j], port, ihash)
            else:
                i = -1
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
