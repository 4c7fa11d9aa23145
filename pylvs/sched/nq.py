"""nq -- never queue.  Follows net/netfilter/ipvs/ip_vs_nq.c.

Rule: among dests in the list with weight > 0 and not OVERLOADed, the first dest with activeconns == 0 at once, else the sed minimum (activeconns + 1)/weight;
the first dest in list order wins ties.

Beyond the kernel: the pick is read from a tournament tree (see ``_tree.py``) kept
up to date in O(log n) per counter/weight/flag change, instead of a linear scan.
The tree's answer is the scan's answer, ties included (tests prove it against the
scan and the plain-Python twin).  State: the tree (``state[0]`` = leaf count).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import _charge_kernel
from ._tree import (
    KIND_NQ,
    _linear_scan,
    _tree_best,
    _tree_rebuild,
    _tree_update,
    new_tree_state,
)

NAME = "nq"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_nq.c"
KIND = KIND_NQ


def new_state(dest: np.ndarray) -> np.ndarray:
    st = new_tree_state(dest.shape[0], KIND)
    _tree_rebuild(dest, st)
    return st


@njit(cache=True, _nrt=False)
def _config_kernel(dest, state):
    _tree_rebuild(dest, state)


@njit(cache=True, _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    _tree_update(dest, state, i)


@njit(cache=True, _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    return _tree_best(state)


@njit(cache=True, _nrt=False)
def _linear_kernel(dest, state, caddr, cport, daddr, dport, now):
    """The kernel's linear scan, kept for tests and benchmarks."""
    return _linear_scan(dest, KIND_NQ)


@njit(cache=True, _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _tree_best(state)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
            _tree_update(dest, state, i)


@njit(cache=True, _nrt=False)
def _linear_batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _linear_scan(dest, KIND_NQ)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
