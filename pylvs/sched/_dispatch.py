"""One entry point per kernel operation, switched on an algorithm id, for numba
code that holds services of different schedulers (the forwarding core):

    from pylvs.sched._dispatch import ALG_ID, schedule_kernel
    row = schedule_kernel(ALG_ID["wlc"], dest, state, caddr, cport, daddr, dport, now)

The ids are stable (the order of ``NAMES``) so they can be stored in a service array.
"""

from __future__ import annotations

from numba import njit

from . import dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, wlc, wrr
from ._loctab import _gc_kernel as _loc_gc

NAMES = ("rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf")
ALG_ID = {name: i for i, name in enumerate(NAMES)}


@njit(cache=True, error_model="numpy", _nrt=False)
def schedule_kernel(alg, dest, state, caddr, cport, daddr, dport, now):
    """``ALGORITHMS[NAMES[alg]]._schedule_kernel``; -1 for an unknown id."""
    if alg == 0:
        return rr._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 1:
        return wrr._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 2:
        return lc._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 3:
        return wlc._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 4:
        return sed._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 5:
        return nq._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 6:
        return lblc._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 7:
        return lblcr._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 8:
        return dh._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 9:
        return sh._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 10:
        return mh._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 11:
        return fo._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    if alg == 12:
        return ovf._schedule_kernel(dest, state, caddr, cport, daddr, dport, now)
    return -1


@njit(cache=True, error_model="numpy", _nrt=False)
def update_kernel(alg, dest, state, i):
    """After row i's counters, weight or flags changed (only the tree-based
    lc/wlc/sed/nq/fo/ovf keep derived per-row state; the others need nothing)."""
    if alg == 2:
        lc._update_kernel(dest, state, i)
    elif alg == 3:
        wlc._update_kernel(dest, state, i)
    elif alg == 4:
        sed._update_kernel(dest, state, i)
    elif alg == 5:
        nq._update_kernel(dest, state, i)
    elif alg == 11:
        fo._update_kernel(dest, state, i)
    elif alg == 12:
        ovf._update_kernel(dest, state, i)


@njit(cache=True, error_model="numpy")
def config_kernel(alg, dest, state):
    """After a dest was added, deleted or edited."""
    if alg == 1:
        wrr._config_kernel(dest, state)
    elif 2 <= alg <= 5 or alg == 11 or alg == 12:
        lc._config_kernel(dest, state)  # the same tree rebuild for all six
    elif alg == 8:
        dh._config_kernel(dest, state)
    elif alg == 9:
        sh._config_kernel(dest, state)
    elif alg == 10:
        mh._config_kernel(dest, state)


@njit(cache=True, error_model="numpy", _nrt=False)
def gc_kernel(alg, dest, state, now):
    """The lblc/lblcr collector (a no-op for the others)."""
    if alg == 6 or alg == 7:
        _loc_gc(dest, state, now)
