"""wrr -- weighted round-robin.  Follows net/netfilter/ipvs/ip_vs_wrr.c
(the current version with ``last_pass``/``restarted``/``stop``).

State: ``[cl, cw, mw, di]``: cursor row (-1 = list head), current weight, max
weight - (gcd - 1), gcd of the positive weights (1 if none).  Any add, delete or
edit of a dest runs ``_config_kernel`` (ip_vs_wrr_dest_changed): the cursor goes
back to the head and cw is kept when still valid, so a weight change in the middle
of a sequence continues the way the kernel does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F_OVERLOAD, FLAGS, W, _charge_kernel, _in_list

NAME = "wrr"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_wrr.c"
CL, CW, MW, DI = 0, 1, 2, 3


def new_state(dest: np.ndarray) -> np.ndarray:
    st = np.zeros(4, dtype=np.int64)
    st[CL] = -1
    _config_kernel(dest, st)  # cw == 0 -> cw = mw, as ip_vs_wrr_init_svc
    return st


@njit(cache=True, error_model="numpy", _nrt=False)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(cache=True, error_model="numpy", _nrt=False)
def _config_kernel(dest, state):
    g = 0
    mx = 0
    for i in range(dest.shape[0]):
        if not _in_list(dest, i):
            continue
        w = dest[i, W]
        if w > 0:
            g = _gcd(w, g) if g > 0 else w
        mx = max(mx, w)
    di = g if g > 0 else 1
    mw = mx - (di - 1)
    state[CL] = -1
    state[DI] = di
    state[MW] = mw
    cw = state[CW]
    if cw > mw or cw == 0:
        state[CW] = mw
    elif di > 1:
        state[CW] = (cw // di) * di + 1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass  # counters do not matter to wrr; OVERLOAD is read at decision time


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    n = dest.shape[0]
    pos = state[CL]
    if state[MW] == 0:
        return -1
    last = pos
    stop = -2  # no stop dest yet
    last_pass = False
    restarted = False
    di = state[DI]
    while True:
        i = pos + 1
        while i < n:
            if _in_list(dest, i):
                if (dest[i, FLAGS] & F_OVERLOAD) == 0 and dest[i, W] >= state[CW]:
                    state[CL] = i
                    return i
                if i == stop:
                    state[CL] = i
                    return -1
            i += 1
        pos = -1  # back at the list head
        state[CW] -= di
        if state[CW] <= 0:
            state[CW] = state[MW]
            if last_pass or last == -1:
                state[CL] = -1
                return -1
            restarted = True
        last_pass = state[CW] <= di
        if last_pass and restarted and last != -1:
            stop = last


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _schedule_kernel(dest, state, caddr[j], cport[j], daddr[j], dport[j], now)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
