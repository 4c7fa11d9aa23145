"""ovf -- weighted overflow.  Follows net/netfilter/ipvs/ip_vs_ovf.c.

Rule: the highest-weight dest among those with weight > 0, not OVERLOADed and
``activeconns <= weight``; the first in list order wins ties.

Beyond the kernel: answered from the tournament tree of ``_tree.py`` (key =
-weight, leaves with activeconns > weight ineligible), O(log n) per change; tests
prove the same answers as the scan.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import _charge_kernel
from ._tree import (
    KIND_OVF,
    _linear_scan,
    _tree_best,
    _tree_rebuild,
    _tree_update,
    new_tree_state,
)

NAME = "ovf"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_ovf.c"
KIND = KIND_OVF


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
    return _linear_scan(dest, KIND_OVF)


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
        i = _linear_scan(dest, KIND_OVF)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
