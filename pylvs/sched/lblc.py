"""lblc -- locality-based least-connection.  Follows net/netfilter/ipvs/ip_vs_lblc.c.

Key: the packet's *destination* address.  A cache entry maps it to one dest.  On a
hit the entry's lastuse is refreshed and its dest is used if it is still in the
list, has weight > 0 and is not "overloaded" in lblc's sense (activeconns > weight
while some dest of the service has activeconns * 2 < weight) -- note the kernel
does not look at the OVERLOAD flag here.  Otherwise wlc over the whole service
(linear, as the kernel) picks a dest and the entry is created or replaced.

Kernel quirk kept: replacing an entry's dest frees the old entry without
decrementing the entry counter (ip_vs_lblc_new/ip_vs_lblc_del), so the counter the
collector compares with max_size can run ahead of the real number of entries.

Timeouts (`now` in ms): collector every 60 s (``_gc_kernel``, the caller's timer),
full sweep every 30th run deleting entries idle > lblc_expiration (24 h default),
partial sweep of entries idle >= 6 min only above max_size.  Table layout: see
``_loctab``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _loctab as lt
from ._common import ACT, W, _charge_kernel, _in_list
from ._loctab import _gc_kernel  # noqa: F401  (part of the module's kernel API)
from ._tree import KIND_WLC, _linear_scan

NAME = "lblc"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_lblc.c"


def new_state(
    dest: np.ndarray,
    expiration_ms: int = lt.DEFAULT_EXPIRATION_MS,
    entry_capacity: int = lt.DEFAULT_ENTRY_CAPACITY,
) -> np.ndarray:
    return lt.new_table_state(entry_capacity, 0, expiration_ms)


@njit(cache=True, error_model="numpy", _nrt=False)
def _config_kernel(dest, state):
    pass  # entries keep pointing at rows; a deleted row fails the hit test


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False)
def _is_overloaded(dest, d):
    """lblc's is_overloaded(): busy beyond its weight while someone is half idle."""
    if dest[d, ACT] > dest[d, W]:
        for i in range(dest.shape[0]):
            if _in_list(dest, i) and dest[i, ACT] * 2 < dest[i, W]:
                return True
    return False


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    en = lt._get(state, daddr)
    if en >= 0:
        o = lt._eoff(state, en)
        state[o + lt.E_LASTUSE] = now
        d = state[o + lt.E_DEST]
        if _in_list(dest, d) and dest[d, W] > 0 and not _is_overloaded(dest, d):
            return d
    d = _linear_scan(dest, KIND_WLC)  # __ip_vs_lblc_schedule is wlc
    if d < 0:
        return -1
    # ip_vs_lblc_new
    if en >= 0:
        o = lt._eoff(state, en)
        if state[o + lt.E_DEST] == d:
            return d
        lt._unlink_free_entry(state, en)  # no entries-- (kernel quirk)
    en = lt._alloc_entry(state, daddr, now)
    if en >= 0:
        state[lt._eoff(state, en) + lt.E_DEST] = d
    return d


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
