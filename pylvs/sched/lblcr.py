"""lblcr -- locality-based least-connection with replication.
Follows net/netfilter/ipvs/ip_vs_lblcr.c.

Key: the destination address; an entry holds a *set* of dests (newest first, as
list_add puts them) and lastmod.  On a hit: refresh lastuse; d = the set's
weighted least-loaded member (ip_vs_dest_set_min: in the list, weight > 0, not
OVERLOADed); if the set has more than one member and ``now > lastmod +
lblcr_expiration`` the most-loaded member (ip_vs_dest_set_max) is dropped.  If d
exists and is not overloaded in lblc's sense it is used; otherwise wlc over the
service picks one and adds it to the set.  No entry: wlc, and a new one-member
entry.  Collector and timeouts as lblc (see ``_loctab``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _loctab as lt
from ._common import F_OVERLOAD, FLAGS, W, _charge_kernel, _in_list, _overhead
from ._loctab import _gc_kernel  # noqa: F401  (part of the module's kernel API)
from ._tree import KIND_WLC, _linear_scan
from .lblc import _is_overloaded

NAME = "lblcr"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_lblcr.c"


def new_state(
    dest: np.ndarray,
    expiration_ms: int = lt.DEFAULT_EXPIRATION_MS,
    entry_capacity: int = lt.DEFAULT_ENTRY_CAPACITY,
    element_capacity: int | None = None,
) -> np.ndarray:
    if element_capacity is None:
        element_capacity = 2 * entry_capacity
    return lt.new_table_state(entry_capacity, element_capacity, expiration_ms)


@njit(cache=True, error_model="numpy", _nrt=False)
def _config_kernel(dest, state):
    pass


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False)
def _set_insert(state, en, d, check, now):
    o = lt._eoff(state, en)
    if check:
        el = state[o + lt.E_SETHEAD]
        while el >= 0:
            lo = lt._eloff(state, el)
            if state[lo + lt.EL_DEST] == d:
                return
            el = state[lo + lt.EL_NEXT]
    el = state[lt.H_ELFREE]
    if el < 0:
        return  # kmalloc failed: not inserted
    lo = lt._eloff(state, el)
    state[lt.H_ELFREE] = state[lo + lt.EL_NEXT]
    state[lo + lt.EL_DEST] = d
    state[lo + lt.EL_NEXT] = state[o + lt.E_SETHEAD]
    state[o + lt.E_SETHEAD] = el
    state[o + lt.E_SETSIZE] += 1
    state[o + lt.E_LASTMOD] = now


@njit(cache=True, error_model="numpy", _nrt=False)
def _set_erase(state, en, d, now):
    o = lt._eoff(state, en)
    prev = -1
    el = state[o + lt.E_SETHEAD]
    while el >= 0:
        lo = lt._eloff(state, el)
        if state[lo + lt.EL_DEST] == d:
            state[o + lt.E_SETSIZE] -= 1
            state[o + lt.E_LASTMOD] = now
            if prev < 0:
                state[o + lt.E_SETHEAD] = state[lo + lt.EL_NEXT]
            else:
                state[lt._eloff(state, prev) + lt.EL_NEXT] = state[lo + lt.EL_NEXT]
            state[lo + lt.EL_NEXT] = state[lt.H_ELFREE]
            state[lt.H_ELFREE] = el
            return
        prev = el
        el = state[lo + lt.EL_NEXT]


@njit(cache=True, error_model="numpy", _nrt=False)
def _set_min(dest, state, en):
    """ip_vs_dest_set_min."""
    el = state[lt._eoff(state, en) + lt.E_SETHEAD]
    least = -1
    while el >= 0:
        lo = lt._eloff(state, el)
        d = state[lo + lt.EL_DEST]
        el = state[lo + lt.EL_NEXT]
        if dest[d, FLAGS] & F_OVERLOAD:
            continue
        if least < 0:
            if dest[d, W] > 0 and _in_list(dest, d):
                least = d
            continue
        if _overhead(dest, least) * dest[d, W] > _overhead(dest, d) * dest[least, W] and _in_list(dest, d):
            least = d
    return least


@njit(cache=True, error_model="numpy", _nrt=False)
def _set_max(dest, state, en):
    """ip_vs_dest_set_max (looks at weights only, not availability)."""
    el = state[lt._eoff(state, en) + lt.E_SETHEAD]
    most = -1
    while el >= 0:
        lo = lt._eloff(state, el)
        d = state[lo + lt.EL_DEST]
        el = state[lo + lt.EL_NEXT]
        if most < 0:
            if dest[d, W] > 0:
                most = d
            continue
        if _overhead(dest, most) * dest[d, W] < _overhead(dest, d) * dest[most, W] and dest[d, W] > 0:
            most = d
    return most


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    en = lt._get(state, daddr)
    if en >= 0:
        o = lt._eoff(state, en)
        state[o + lt.E_LASTUSE] = now
        d = _set_min(dest, state, en)
        if state[o + lt.E_SETSIZE] > 1 and now > state[o + lt.E_LASTMOD] + state[lt.H_EXPIRE]:
            m = _set_max(dest, state, en)
            if m >= 0:
                _set_erase(state, en, m, now)
        if d >= 0 and not _is_overloaded(dest, d):
            return d
        d = _linear_scan(dest, KIND_WLC)
        if d < 0:
            return -1
        _set_insert(state, en, d, True, now)
        return d
    d = _linear_scan(dest, KIND_WLC)
    if d < 0:
        return -1
    en = lt._alloc_entry(state, daddr, now)
    if en >= 0:
        _set_insert(state, en, d, False, now)
    return d


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
