"""The lblc/lblcr cache table, as flat int64 words inside the service's state array.

Same shape as the kernel's: 1024 hash chains (CONFIG_IP_VS_LBLC_TAB_BITS = 10),
new entries pushed at the chain head (hlist_add_head), a periodic collector with a
rover, the 30-run full sweep and the max_size (= 1024 * 16) partial sweep.  Entries
and lblcr set elements come from fixed pools with free lists; an exhausted pool
behaves like the kernel's failed GFP_ATOMIC allocation (the entry or element is
simply not created, the chosen dest is still used).

Layout: header words H_*; ``TAB_SIZE`` chain heads; entry records of ``ESTRIDE``
words; set elements of ``ELSTRIDE`` words.  All links are entry/element numbers,
-1 = none.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import MS_PER_SECOND, _hash_32

TAB_BITS = 10  # CONFIG_IP_VS_LBLC_TAB_BITS / CONFIG_IP_VS_LBLCR_TAB_BITS default
TAB_SIZE = 1 << TAB_BITS
TAB_MASK = TAB_SIZE - 1
MAX_SIZE = TAB_SIZE * 16  # tbl->max_size = IP_VS_LBLC_TAB_SIZE * 16
CHECK_EXPIRE_INTERVAL_MS = 60 * MS_PER_SECOND  # CHECK_EXPIRE_INTERVAL (60*HZ): call _gc_kernel this often
ENTRY_TIMEOUT_MS = 6 * 60 * MS_PER_SECOND  # ENTRY_TIMEOUT (6*60*HZ)
DEFAULT_EXPIRATION_MS = 24 * 60 * 60 * MS_PER_SECOND  # DEFAULT_EXPIRATION, sysctl lblc(r)_expiration
COUNT_FOR_FULL_EXPIRATION = 30  # full sweep every 30th collector run
DEFAULT_ENTRY_CAPACITY = 2 * MAX_SIZE  # ours: room for twice the kernel's soft limit
DEFAULT_ELEMENT_CAPACITY = 2 * DEFAULT_ENTRY_CAPACITY  # ours: lblcr set members

# header words
H_ECAP, H_ENTRIES, H_EFREE, H_ROVER, H_COUNTER, H_EXPIRE, H_MAXSIZE, H_ELCAP, H_ELFREE = range(9)
BKT_OFF = 16
# entry record words
E_ADDR, E_DEST, E_LASTUSE, E_NEXT, E_SETHEAD, E_SETSIZE, E_LASTMOD = range(7)
ESTRIDE = 7
# set element words
EL_DEST, EL_NEXT = 0, 1
ELSTRIDE = 2


def state_size(entry_capacity: int, element_capacity: int) -> int:
    return BKT_OFF + TAB_SIZE + ESTRIDE * entry_capacity + ELSTRIDE * element_capacity


def new_table_state(entry_capacity: int, element_capacity: int, expiration_ms: int) -> np.ndarray:
    for name, v, lo in (("entry_capacity", entry_capacity, 1), ("element_capacity", element_capacity, 0)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if not isinstance(expiration_ms, (int, np.integer)) or expiration_ms < 0:
        raise ValueError(
            f"expiration_ms must be an int >= 0 (kernel default {DEFAULT_EXPIRATION_MS}), got {expiration_ms!r}"
        )
    st = np.full(state_size(entry_capacity, element_capacity), -1, dtype=np.int64)
    _table_init(st, entry_capacity, element_capacity, expiration_ms)
    return st


@njit(cache=True, error_model="numpy", _nrt=False)
def _eoff(state, en):
    return BKT_OFF + TAB_SIZE + ESTRIDE * en


@njit(cache=True, error_model="numpy", _nrt=False)
def _eloff(state, el):
    return BKT_OFF + TAB_SIZE + ESTRIDE * state[H_ECAP] + ELSTRIDE * el


@njit(cache=True, error_model="numpy", _nrt=False)
def _table_init(state, ecap, elcap, expire):
    state[H_ECAP] = ecap
    state[H_ENTRIES] = 0
    state[H_ROVER] = 0
    state[H_COUNTER] = 1
    state[H_EXPIRE] = expire
    state[H_MAXSIZE] = MAX_SIZE
    state[H_ELCAP] = elcap
    for b in range(TAB_SIZE):
        state[BKT_OFF + b] = -1
    for en in range(ecap):
        o = _eoff(state, en)
        state[o + E_NEXT] = en + 1 if en + 1 < ecap else -1
        state[o + E_SETHEAD] = -1
        state[o + E_SETSIZE] = 0
    state[H_EFREE] = 0
    for el in range(elcap):
        state[_eloff(state, el) + EL_NEXT] = el + 1 if el + 1 < elcap else -1
    state[H_ELFREE] = 0 if elcap > 0 else -1


@njit(cache=True, error_model="numpy", _nrt=False)
def _hashkey(addr):
    # mainline ip_vs_lblc(r)_hashkey: hash_32(ntohl(addr), TAB_BITS)
    return _hash_32(addr, TAB_BITS)


@njit(cache=True, error_model="numpy", _nrt=False)
def _get(state, addr):
    en = state[BKT_OFF + _hashkey(addr)]
    while en >= 0:
        o = _eoff(state, en)
        if state[o + E_ADDR] == addr:
            return en
        en = state[o + E_NEXT]
    return -1


@njit(cache=True, error_model="numpy", _nrt=False)
def _alloc_entry(state, addr, now):
    """kmalloc + hlist_add_head + entries++; -1 when the pool is exhausted."""
    en = state[H_EFREE]
    if en < 0:
        return -1
    o = _eoff(state, en)
    state[H_EFREE] = state[o + E_NEXT]
    b = BKT_OFF + _hashkey(addr)
    state[o + E_ADDR] = addr
    state[o + E_DEST] = -1
    state[o + E_LASTUSE] = now
    state[o + E_SETHEAD] = -1
    state[o + E_SETSIZE] = 0
    state[o + E_LASTMOD] = now
    state[o + E_NEXT] = state[b]
    state[b] = en
    state[H_ENTRIES] += 1
    return en


@njit(cache=True, error_model="numpy", _nrt=False)
def _unlink_free_entry(state, en):
    """hlist_del + free the entry and its set elements (no entries-- here: callers
    decide, as the kernel does)."""
    o = _eoff(state, en)
    b = BKT_OFF + _hashkey(state[o + E_ADDR])
    prev = -1
    cur = state[b]
    while cur >= 0 and cur != en:
        prev = cur
        cur = state[_eoff(state, cur) + E_NEXT]
    if prev < 0:
        state[b] = state[o + E_NEXT]
    else:
        state[_eoff(state, prev) + E_NEXT] = state[o + E_NEXT]
    el = state[o + E_SETHEAD]
    while el >= 0:
        lo = _eloff(state, el)
        nxt = state[lo + EL_NEXT]
        state[lo + EL_NEXT] = state[H_ELFREE]
        state[H_ELFREE] = el
        el = nxt
    state[o + E_SETHEAD] = -1
    state[o + E_SETSIZE] = 0
    state[o + E_NEXT] = state[H_EFREE]
    state[H_EFREE] = en


@njit(cache=True, error_model="numpy", _nrt=False)
def _sweep_bucket(state, j, now, timeout):
    """Delete the entries of chain j idle for at least `timeout`; return how many."""
    removed = 0
    en = state[BKT_OFF + j]
    while en >= 0:
        o = _eoff(state, en)
        nxt = state[o + E_NEXT]
        if not now < state[o + E_LASTUSE] + timeout:  # time_before(now, lastuse + timeout)
            _unlink_free_entry(state, en)
            state[H_ENTRIES] -= 1
            removed += 1
        en = nxt
    return removed


@njit(cache=True, error_model="numpy", _nrt=False)
def _gc_kernel(dest, state, now):
    """One run of ip_vs_lblc(r)_check_expire; call it every CHECK_EXPIRE_INTERVAL_MS."""
    if state[H_COUNTER] % COUNT_FOR_FULL_EXPIRATION == 0:
        j = state[H_ROVER]
        for _ in range(TAB_SIZE):
            j = (j + 1) & TAB_MASK
            _sweep_bucket(state, j, now, state[H_EXPIRE])
        state[H_ROVER] = j
        state[H_COUNTER] = 1
        return
    if state[H_ENTRIES] <= state[H_MAXSIZE]:
        state[H_COUNTER] += 1
        return
    goal = (state[H_ENTRIES] - state[H_MAXSIZE]) * 4 // 3
    goal = min(goal, state[H_MAXSIZE] // 2)
    j = state[H_ROVER]
    for _ in range(TAB_SIZE):
        j = (j + 1) & TAB_MASK
        goal -= _sweep_bucket(state, j, now, ENTRY_TIMEOUT_MS)
        if goal <= 0:
            break
    state[H_ROVER] = j
